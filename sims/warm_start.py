"""Where RFA's Weiszfeld iterations start: the weighted mean, zero, or the previous round's aggregate.

    python3 -m sims.warm_start            # 3 seeds, 10 settings, 7 rules, 30 rounds (about 5 min wall on 2 busy cores)
    python3 -m sims.warm_start --quick    # 1 seed, 2 settings, 4 rules, 12 rounds

The secure median of ``rfa.secure`` starts from the secure weighted mean (one
oracle call) and then takes R smoothed Weiszfeld steps.  A public start point
costs no call: zero (from which R = 1 is one-step RFA, Algorithm 3) or the
previous round's aggregate, which the server broadcast anyway (a warm start).
This simulation compares the start points at equal and at lower call budgets
under every update corruption of ``rfa.corruption``, the data corruptions,
and two attacks aimed at a public start point: "replay" (corrupted clients
send the previous aggregate) and "zero" (they send the zero update, ``ipm``
with epsilon = 0).  On the start point a corrupted client's
beta = alpha / nu (nu = 1e-6) swamps every honest one, so the step stays there.

The federation is the one of ``sims.federation`` (digits, 40 clients,
Dirichlet 0.5, m = 10, tau = 10), rho = 0.25 by weight, 30 rounds, aggregates
computed in plaintext (through the oracle they agree up to its quantization
error, tests/test_training.py checks warm-started runs).  FedAvg is the
reference.

How to read the output (``out/warm_start/``):

* ``warm_start.png``: final accuracy per setting (x) and rule (marker), mean
  over seeds with the min-max range as a bar.
* ``summary.md``: the final-accuracy table with each rule's worst setting, and
  the oracle calls each rule needs to reach 90% of FedAvg's clean final
  accuracy under the omniscient attack.
* ``warm_start.csv``: one row per (setting, rule, seed).
"""

from __future__ import annotations

import time
from typing import Any, Mapping

import matplotlib.pyplot as plt
import numpy as np

from rfa import plot_style
from rfa.aggregators import Aggregator, GeometricMedianRule, Mean
from rfa.corruption import alie_z
from rfa.training import train
from sims.common import console, entry_point, parser, progress_bar, save_figure, seeds, write_csv, write_summary
from sims.federation import CLIENTS_PER_ROUND, MODEL, N_CLIENTS, config, federation

NAME = "warm_start"
RHO = 0.25
ROUNDS = 30
TARGET = 0.9  # of FedAvg's clean final accuracy
F = 3  # ceil(rho m): the corrupted clients ALIE's z assumes per round (as in fig2)

SETTINGS: Mapping[str, dict[str, Any]] = {
    "clean": {},
    "negate": {"data_corruption": "negate"},
    "label_flip": {"data_corruption": "label_flip"},
    "omniscient": {"update_corruption": "omniscient"},
    "gaussian": {"update_corruption": "gaussian"},
    "sign_flip": {"update_corruption": "sign_flip"},
    "ipm": {"update_corruption": "ipm"},
    "alie": {"update_corruption": "alie", "corruption_params": {"z": alie_z(CLIENTS_PER_ROUND, F)}},
    "replay": {"update_corruption": "replay"},
    "zero": {"update_corruption": "ipm", "corruption_params": {"epsilon": 0.0}},
}
QUICK_SETTINGS = ("clean", "replay")

RULES: Mapping[str, Aggregator] = {
    "FedAvg": Mean(),
    "mean + 3": GeometricMedianRule(rounds=3, init="mean"),
    "mean + 2": GeometricMedianRule(rounds=2, init="mean"),
    "zero + 3": GeometricMedianRule(rounds=3, init="zero"),
    "previous + 3": GeometricMedianRule(rounds=3, init="previous"),
    "zero + 1 (one-step)": GeometricMedianRule(rounds=1, init="zero"),
    "previous + 1": GeometricMedianRule(rounds=1, init="previous"),
}
QUICK_RULES = ("FedAvg", "mean + 3", "previous + 3", "previous + 1")


def calls_to(calls: np.ndarray, accuracy: np.ndarray, target: float) -> float:
    """The oracle calls at the first round whose accuracy reaches ``target``; nan if none does."""
    hit = np.flatnonzero(accuracy >= target)
    return float(calls[hit[0]]) if hit.size else np.nan


def main(argv: list[str] | None = None) -> int:
    args = parser(NAME, __doc__.splitlines()[0]).parse_args(argv)
    rounds = 12 if args.quick else ROUNDS
    settings = QUICK_SETTINGS if args.quick else tuple(SETTINGS)
    rules = {r: RULES[r] for r in (QUICK_RULES if args.quick else RULES)}
    run_seeds = seeds(args)
    start = time.perf_counter()

    rows: list[dict[str, Any]] = []
    curves: dict[tuple[str, str, int], tuple[np.ndarray, np.ndarray]] = {}
    runs = [(s, r, seed) for s in settings for r in rules for seed in run_seeds]
    with progress_bar(f"{NAME}: {len(runs)} runs", len(runs)) as advance:
        for setting, rule, seed in runs:
            corruption = {"rho": RHO, **SETTINGS[setting]} if setting != "clean" else {}
            result = train(MODEL, federation(seed), rules[rule], config(rounds, seed, **corruption))
            curves[setting, rule, seed] = (
                np.array([h.oracle_calls for h in result.history]), np.array([h.accuracy for h in result.history])
            )
            rows.append(dict(setting=setting, rule=rule, seed=seed, calls_per_round=rules[rule].oracle_calls,
                             accuracy=result.final.accuracy))
            advance()
    target = TARGET * np.mean([curves["clean", "FedAvg", s][1][-1] for s in run_seeds])
    for row in rows:
        row["calls_to_target"] = calls_to(*curves[row["setting"], row["rule"], row["seed"]], target)
    write_csv(args.out / f"{NAME}.csv", rows)

    def acc(setting: str, rule: str) -> np.ndarray:
        return np.array([r["accuracy"] for r in rows if (r["setting"], r["rule"]) == (setting, rule)])

    fig, ax = plt.subplots(figsize=(12, 4.5))
    markers = "osD^vP*X"
    x = np.arange(len(settings))
    for k, rule in enumerate(rules):
        stats = np.array([[a.mean(), a.min(), a.max()] for a in (acc(s, rule) for s in settings)])
        offset = (k - (len(rules) - 1) / 2) * 0.1
        ax.errorbar(x + offset, stats[:, 0], yerr=[stats[:, 0] - stats[:, 1], stats[:, 2] - stats[:, 0]],
                    fmt=markers[k], color=plot_style.color(rule), capsize=2, label=f"{rule} ({rules[rule].oracle_calls}/round)")
    ax.set_xticks(x, settings)
    ax.set_ylabel(f"test accuracy after {rounds} rounds")
    plot_style.percent_axis(ax)
    ax.grid(alpha=0.3)
    plot_style.legend(ax)
    ax.set_title(f"Weiszfeld start point and steps (rho = {RHO} where corrupted)")
    save_figure(fig, args.out / f"{NAME}.png")

    lines = [
        f"Digits (8x8), {N_CLIENTS} clients (Dirichlet 0.5), logistic regression, m = {CLIENTS_PER_ROUND}, "
        f"T = {rounds} rounds, rho = {RHO} by weight under corruption, nu = 1e-6, seeds {run_seeds}. "
        "Rule 'start + R': R Weiszfeld steps from that start ('mean' costs one more oracle call). "
        "Final test accuracy, mean (min-max) over seeds.",
        "",
        "| setting | " + " | ".join(f"{r} ({rules[r].oracle_calls})" for r in rules) + " |",
        "|---|" + "---|" * len(rules),
    ]
    for setting in settings:
        cells = [f"{a.mean():.3f} ({a.min():.2f}-{a.max():.2f})" for a in (acc(setting, r) for r in rules)]
        lines.append(f"| {setting} | " + " | ".join(cells) + " |")
    attacked = [s for s in settings if s != "clean"]
    worst = {r: min(attacked, key=lambda s: acc(s, r).mean()) for r in rules}
    lines.append("| worst attack | " + " | ".join(f"{acc(worst[r], r).mean():.3f} ({worst[r]})" for r in rules) + " |")
    lines += [
        "",
        f"Oracle calls to reach {TARGET:.0%} of FedAvg's clean final accuracy ({target:.3f}), mean over seeds of "
        "the first call count at which a run reaches it (never: a seed that does not):",
        "",
        "| setting | " + " | ".join(rules) + " |",
        "|---|" + "---|" * len(rules),
    ]
    for setting in settings:
        cells = []
        for rule in rules:
            hits = np.array([r["calls_to_target"] for r in rows if (r["setting"], r["rule"]) == (setting, rule)])
            cells.append("never" if np.isnan(hits).any() else f"{hits.mean():.0f}")
        lines.append(f"| {setting} | " + " | ".join(cells) + " |")
    lines += ["", f"Runtime: {time.perf_counter() - start:.1f} s."]
    write_summary(args.out / "summary.md", "Warm start: the Weiszfeld start point", lines)
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    entry_point(NAME, main)
