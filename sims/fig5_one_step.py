"""Fig. 5 of the RFA paper: one-step RFA keeps most of RFA's robustness at FedAvg's communication.

    python3 -m sims.fig5_one_step            # 3 seeds, 7 corruption levels, 40 rounds (about 40 s of CPU)
    python3 -m sims.fig5_one_step --quick    # 1 seed, rho in {0, 0.25}, 15 rounds

Final test accuracy against the corrupted fraction rho (by weight) for FedAvg,
RFA (R = 3 Weiszfeld steps from the weighted mean: 4 oracle calls per round)
and one-step RFA (Algorithm 3: one Weiszfeld step from v = 0, 1 call per
round), under data corruption (negated images) and omniscient update
corruption.  The federation is the one of ``sims.federation``: sklearn's
8x8 digits over 40 clients (Dirichlet alpha = 0.5), logistic regression,
m = 10, tau = 10.

How to read the output (``out/fig5_one_step/``):

* ``fig5_one_step.png``: left data corruption, right omniscient; line = mean
  over seeds, band = min and max; the legend gives each method's oracle
  calls per outer round.
* ``summary.md``: the accuracy table, one-step RFA as a fraction of RFA,
  and the paper's EMNIST numbers beside ours.
* ``fig5_one_step.csv``: one row per (corruption, rho, method, seed).
"""

from __future__ import annotations

import time
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from rfa import plot_style
from rfa.training import train
from sims.common import console, entry_point, parser, progress_bar, save_figure, seeds, write_csv, write_summary
from sims.federation import (
    CLIENTS_PER_ROUND,
    COLORS,
    LOCAL_STEPS,
    METHODS,
    MODEL,
    N_CLIENTS,
    config,
    federation,
)

NAME = "fig5_one_step"
CORRUPTIONS = {"data": {"data_corruption": "negate"}, "omniscient": {"update_corruption": "omniscient"}}


def main(argv: list[str] | None = None) -> int:
    args = parser(NAME, __doc__.splitlines()[0]).parse_args(argv)
    rounds = 15 if args.quick else 40
    rhos = (0.0, 0.25) if args.quick else (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
    run_seeds = seeds(args)
    start = time.perf_counter()

    rows: list[dict[str, Any]] = []
    runs = [(c, rho, m, seed) for c in CORRUPTIONS for rho in rhos for m in METHODS for seed in run_seeds]
    with progress_bar(f"{NAME}: {len(runs)} runs", len(runs)) as advance:
        for corruption, rho, method, seed in runs:
            # rho = 0 leaves the corruption switched off, so both panels share their clean point.
            setting = CORRUPTIONS[corruption] if rho > 0 else {}
            result = train(MODEL, federation(seed), METHODS[method], config(rounds, seed, rho=rho, **setting))
            rows.append(
                dict(corruption=corruption, rho=rho, method=method, seed=seed,
                     calls_per_round=result.final.oracle_calls / rounds, accuracy=result.final.accuracy)
            )
            advance()
    write_csv(args.out / f"{NAME}.csv", rows)

    def stats(corruption: str, rho: float, method: str) -> np.ndarray:
        return np.array([r["accuracy"] for r in rows if (r["corruption"], r["rho"], r["method"]) == (corruption, rho, method)])

    fig, axes = plt.subplots(1, len(CORRUPTIONS), figsize=(11, 4), sharey=True)
    for ax, corruption in zip(axes, CORRUPTIONS):
        for method, rule in METHODS.items():
            acc = [stats(corruption, rho, method) for rho in rhos]
            label = f"{method} ({rule.oracle_calls} call{'s' if rule.oracle_calls > 1 else ''}/round)"
            ax.plot(rhos, [a.mean() for a in acc], "o-", color=COLORS[method], label=label)
            ax.fill_between(rhos, [a.min() for a in acc], [a.max() for a in acc], color=COLORS[method], alpha=0.2, linewidth=0)
        ax.set_title(f"{corruption} corruption")
        ax.set_xlabel("corrupted fraction rho (by weight)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"test accuracy after {rounds} rounds")
    plot_style.percent_axis(axes[0])
    plot_style.legend(axes[-1])
    save_figure(fig, args.out / f"{NAME}.png")

    per_round = {r["method"]: r["calls_per_round"] for r in rows}
    lines = [
        f"Digits (8x8, 10 classes), {N_CLIENTS} synthetic clients (Dirichlet alpha = 0.5), logistic regression, "
        f"m = {CLIENTS_PER_ROUND}, tau = {LOCAL_STEPS}, T = {rounds} outer rounds, seeds {run_seeds}. "
        "Final test accuracy, mean (min-max) over seeds. Oracle calls per outer round: "
        + ", ".join(f"{m} {c:g}" for m, c in per_round.items())
        + ".",
        "",
        "| corruption | rho | " + " | ".join(METHODS) + " | one-step / RFA |",
        "|---|---|" + "---|" * (len(METHODS) + 1),
    ]
    for corruption in CORRUPTIONS:
        for rho in rhos:
            acc = {m: stats(corruption, rho, m) for m in METHODS}
            cells = [f"{a.mean():.3f} ({a.min():.3f}-{a.max():.3f})" for a in acc.values()]
            share = acc["one-step RFA"].mean() / acc["RFA"].mean()
            lines.append(f"| {corruption} | {rho:g} | " + " | ".join(cells) + f" | {share:.2f} |")
    at = {(c, m): stats(c, 0.25, m).mean() for c in CORRUPTIONS for m in METHODS}
    lines += [
        "",
        "The paper (Sec. V-C, Fig. 5) beside ours at rho = 0.25:",
        "",
        "| setting | FedAvg | RFA | one-step RFA |",
        "|---|---|---|---|",
        "| paper: EMNIST linear, data corruption | 41.2% | 52.8% | 51.4% |",
        f"| ours: digits linear, data corruption | {at['data', 'FedAvg']:.1%} | {at['data', 'RFA']:.1%} "
        f"| {at['data', 'one-step RFA']:.1%} |",
        "| paper: EMNIST ConvNet, omniscient | ~0% (diverges) | 63.0% | 67.9% |",
        f"| ours: digits linear, omniscient | {at['omniscient', 'FedAvg']:.1%} | {at['omniscient', 'RFA']:.1%} "
        f"| {at['omniscient', 'one-step RFA']:.1%} |",
        "",
        "The datasets differ: the paper's EMNIST has 62 classes, 28x28 images and 1000 real writers as "
        "devices (clean linear accuracy 64%); ours is scikit-learn's 8x8 digits (1797 images, 10 classes) "
        "split across 40 synthetic clients, where a linear model reaches about 95%, so absolute numbers are not "
        "comparable. Compare the shape: how close one-step RFA stays to RFA, and how far both stay above "
        "FedAvg, at a quarter of RFA's calls.",
        "",
        f"Runtime: {time.perf_counter() - start:.1f} s.",
    ]
    write_summary(args.out / "summary.md", "Fig. 5: robustness of one-step RFA", lines)
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    entry_point(NAME, main)
