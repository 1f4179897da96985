"""Privacy, robustness, accuracy: test accuracy under corruption against epsilon, distributed vs central DP.

    python3 -m sims.dp_tradeoff            # epsilon in {1, 4, 16, 64, no DP}, 140 clients, 20 rounds, 3 seeds
    python3 -m sims.dp_tradeoff --quick    # epsilon in {4, no DP}, 20 clients, 2 rounds (a smoke run)

FedAvg, RFA and one-step RFA train a logistic regression on scikit-learn's
digits, split i.i.d. over N clients (every client takes part in every round,
so no amplification by sampling is claimed or needed), with every client
counted once (user-level DP, equal alpha_i) and updates clipped to C, the
median update norm at the start.  A quarter of the clients (rho = 0.25) send
the omniscient corruption; the clean runs show what DP alone costs.

Each method runs at each epsilon (the whole run's, at delta = 1e-5) twice:

* distributed: the distributed discrete Gaussian inside secure aggregation
  (``secagg.dp``): nobody, the server included, sees an un-noised sum;
* central: the baseline of Flower's server-side fixed-clipping DP, the same
  clipping and noise multiplier but continuous Gaussian noise added by the
  server to the exact sum (``secagg.dp.CentralGaussian``): the server must be
  trusted.  At equal epsilon it adds slightly less noise (no rounding, no
  slack for the t-survivor guarantee).

RFA here is R = 2 Weiszfeld steps warm-started from the previous round's
aggregate (public, so it costs no call): 2 noisy calls per round instead of
the 4 of R = 3 from the mean, which matters when every call spends privacy.
Under DP the smoothing is nu = C / 2 (``rfa.dp``).  The noise multiplier is
calibrated per method to its calls: T rounds x calls per round.

Secure aggregation is not run session by session here: the runs use the
"sum" transport, the modular sum a session reveals (``secagg.simulation.
revealed_sum``), which is what the accuracy depends on; the demo
(``rfa demo --epsilon``) and the benchmark (``sims.bench_dp``) run the real
sessions.

Outputs in ``out/dp_tradeoff/``: ``dp_tradeoff.png`` (accuracy under
corruption, and clean, against epsilon; solid distributed, dashed central),
``dp_tradeoff.csv`` (one row per run), ``summary.md`` (the table).
"""

from __future__ import annotations

import math
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from rfa import plot_style
from rfa.aggregators import GeometricMedianRule, Mean, OneStepRule
from rfa.data import digits
from rfa.dp import RobustDP
from rfa.models import LogisticRegression, local_sgd
from rfa.training import TrainingConfig, train
from sims.common import console, entry_point, parser, progress_bar, save_figure, seeds, write_csv, write_summary

NAME = "dp_tradeoff"
METHODS = {
    "FedAvg": Mean(),
    "RFA": GeometricMedianRule(rounds=2, init="previous"),
    "one-step RFA": OneStepRule(),
}
MODEL = LogisticRegression(64, 10)
DELTA = 1e-5
RHO = 0.25


def norm_bound(dataset, seed: int) -> float:
    """C: the median norm of the clients' first local updates (public in a deployment: agreed in advance)."""
    w0 = MODEL.init_params(np.random.default_rng(seed))
    rng = np.random.default_rng(seed + 1)
    norms = [np.linalg.norm(local_sgd(MODEL, w0, *dataset.client(i), steps=10, lr=0.5, batch_size=16, rng=rng) - w0)
             for i in range(dataset.n_clients)]
    return float(np.median(norms))


def main(argv: list[str] | None = None) -> int:
    args = parser(NAME, __doc__.splitlines()[0]).parse_args(argv)
    n, rounds = (20, 2) if args.quick else (140, 20)
    epsilons: tuple[float | None, ...] = (4.0, None) if args.quick else (1.0, 4.0, 16.0, 64.0, None)
    run_seeds = seeds(args)
    runs = []
    for seed in run_seeds:
        for method in METHODS:
            for eps in epsilons:
                for mode in (("distributed", "central") if eps is not None else ("none",)):
                    for rho in (0.0, RHO):
                        if rho == 0.0 and mode == "central":
                            continue  # the clean runs show the cost of distributed DP alone
                        runs.append((seed, method, eps, mode, rho))
    rows: list[dict[str, Any]] = []
    datasets = {s: digits(n, split="iid", min_samples=8, rng=np.random.default_rng(s)) for s in run_seeds}
    bounds = {s: norm_bound(datasets[s], s) for s in run_seeds}
    with progress_bar(f"{NAME}: {len(runs)} runs", len(runs)) as advance:
        for seed, method, eps, mode, rho in runs:
            config = TrainingConfig(
                rounds=rounds, clients_per_round=n, local_steps=10, lr=0.5, batch_size=16, secure=True,
                transport="sum", norm_bound=bounds[seed], seed=seed, eval_every=rounds,
                update_corruption="omniscient" if rho > 0 else None, rho=rho,
            )
            # Seeded noise: the figures reproduce (a simulation's noise protects nothing anyway).
            dp = None if eps is None else RobustDP(epsilon=eps, delta=DELTA, central=mode == "central", seed=seed)
            result = train(MODEL, datasets[seed], METHODS[method], config, dp=dp)
            rows.append(dict(
                seed=seed, method=method, epsilon_target=eps, mode=mode, rho=rho,
                epsilon=result.final.epsilon if dp is not None else math.inf,
                noise_multiplier=dp.noise_multiplier if dp is not None else 0.0,
                calls=result.final.oracle_calls, accuracy=result.final.accuracy, norm_bound=bounds[seed],
            ))
            advance()
    write_csv(args.out / f"{NAME}.csv", rows)

    def acc(method: str, eps: float | None, mode: str, rho: float) -> float:
        hits = [r["accuracy"] for r in rows if (r["method"], r["epsilon_target"], r["mode"], r["rho"]) == (method, eps, mode, rho)]
        return float(np.mean(hits)) if hits else math.nan

    dp_eps = [e for e in epsilons if e is not None]
    xs = list(range(len(dp_eps))) + [len(dp_eps)]
    labels = [f"{e:g}" for e in dp_eps] + ["no DP"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, rho, title in ((axes[0], RHO, f"{RHO:.0%} omniscient corruption"), (axes[1], 0.0, "no corruption")):
        for method in METHODS:
            color = plot_style.color(method)
            none = acc(method, None, "none", rho)
            ax.plot(xs, [acc(method, e, "distributed", rho) for e in dp_eps] + [none], "o-", color=color,
                    label=f"{method}, distributed DP")
            if rho > 0:
                ax.plot(xs, [acc(method, e, "central", rho) for e in dp_eps] + [none], "s--", color=color,
                        alpha=0.7, label=f"{method}, central DP (trusted server)")
        ax.set_xticks(xs, labels)
        ax.set_xlabel(f"epsilon of the whole run (delta = {DELTA:g})")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"test accuracy after {rounds} rounds")
    plot_style.percent_axis(axes[0])
    plot_style.legend(axes[1], handles=axes[0].get_legend_handles_labels()[0])  # the left panel has every line
    save_figure(fig, args.out / f"{NAME}.png")

    head = "| method | DP | " + " | ".join(labels) + " |"
    lines = [
        f"Digits, {n} i.i.d. clients all in every round, logistic regression, T = {rounds} rounds, tau = 10, "
        f"C = {np.mean(list(bounds.values())):.3g} (median first update norm), equal client weights, seeds "
        f"{run_seeds}. Test accuracy (mean over seeds) at each whole-run epsilon (delta = {DELTA:g}).",
        "",
        f"Under {RHO:.0%} omniscient corruption:",
        "",
        head,
        "|---|---|" + "---|" * len(labels),
    ]
    for method in METHODS:
        for mode in ("distributed", "central"):
            cells = [acc(method, e, mode, RHO) for e in dp_eps] + [acc(method, None, "none", RHO)]
            lines.append(f"| {method} | {mode} | " + " | ".join(f"{c:.1%}" for c in cells) + " |")
    lines += ["", "Without corruption (distributed DP):", "", head, "|---|---|" + "---|" * len(labels)]
    for method in METHODS:
        cells = [acc(method, e, "distributed", 0.0) for e in dp_eps] + [acc(method, None, "none", 0.0)]
        lines.append(f"| {method} | distributed | " + " | ".join(f"{c:.1%}" for c in cells) + " |")
    zs = {(r["method"], r["epsilon_target"]): r["noise_multiplier"] for r in rows if r["mode"] == "distributed"}
    lines += ["", "Noise multipliers z (calls per run = T x calls per round):", "",
              "| method | " + " | ".join(f"eps {e:g}" for e in dp_eps) + " |", "|---|" + "---|" * len(dp_eps)]
    lines += [f"| {m} | " + " | ".join(f"{zs[m, e]:.3g}" for e in dp_eps) + " |" for m in METHODS]
    write_summary(args.out / "summary.md", "Accuracy against epsilon: distributed vs central DP, FedAvg vs RFA", lines)
    for line in lines:
        console.print(line)
    return 0


if __name__ == "__main__":
    entry_point(NAME, main)
