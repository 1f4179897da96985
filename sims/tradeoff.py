"""The privacy/robustness trade-off of RFA's privacy-weight bound s (not plotted in the paper).

    python3 -m sims.tradeoff            # 3 seeds, 7 values of s, 3 values of C (about 6 min)
    python3 -m sims.tradeoff --quick    # 1 seed, 3 values of s, 2 values of C, 12 rounds (about 30 s of CPU)

Definition 1 (iv) asks every revealed weighted average to give each client an
effective weight of at most s.  ``rfa.privacy`` certifies that from public
numbers only (the norm bound C, the weight range [min N_i, max N_i], the
secure aggregation threshold t) and ``nu="auto"`` picks the smallest
smoothing nu* that certifies s:

    nu* = D (1/s - 1) / ((t - 1) alpha_min / alpha_max),

with D the public bound on ||v - w_i||: 2C for RFA's broadcasts, C for
one-step RFA's v = 0 (so its nu* is half RFA's).  nu* grows as s tightens,
up to D at the floor s = 1 / (1 + (t - 1) alpha_min / alpha_max).  The smoothing caps every Weiszfeld weight at
alpha_i / nu, so once nu* exceeds the distance from the median to the
corrupted updates the "median" is the weighted mean again.  nu* is
proportional to C: a C far above the real update norms costs robustness
without buying anything.

Every run goes through real secure aggregation (secagg, in memory):
RFA (R = 3, 4 oracle calls per round) and one-step RFA, with max_weight = s
and nu = "auto", on scikit-learn's digits split i.i.d. over 40 clients
(equal N_i, so the floor is near 1/t; m = 10, t = 7), logistic regression,
under omniscient update corruption and data corruption (negated images),
both with rho = 0.25.  C is set from a clean plaintext FedAvg pilot: the
95th percentile of the honest update norms along its trajectory, and
multiples of it.  Reference lines: secure FedAvg (updates clipped to the same
C) and unconstrained RFA (nu = 1e-6, no s).

How to read the output (``out/tradeoff/``):

* ``tradeoff.png``: final accuracy against s (log axis; left = tighter
  privacy), one panel per (corruption, C); band = min and max over seeds.
* ``tradeoff_nu.png``: left, nu* against s for each C, with 2C (where the
  median becomes the mean) and the median honest update norm; right, the
  certificate checked before every step and the realised largest
  effective weight (simulation only), against s.
* ``summary.md``: the tables.  ``tradeoff.csv``: one row per run.
"""

from __future__ import annotations

import time
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from rfa import plot_style
from rfa.aggregators import GeometricMedianRule, Mean, OneStepRule
from rfa.models import local_sgd
from rfa.privacy import smallest_nu, weight_floor
from rfa.training import TrainingConfig, train
from secagg import SecureAverageOracle
from sims.common import console, entry_point, parser, progress_bar, save_figure, seeds, write_csv, write_summary
from sims.federation import BATCH_SIZE, CLIENTS_PER_ROUND, COLORS, LOCAL_STEPS, LR, MODEL, N_CLIENTS, config, federation

NAME = "tradeoff"
CORRUPTIONS = {
    "omniscient": {"update_corruption": "omniscient", "rho": 0.25},
    "data": {"data_corruption": "negate", "rho": 0.25},
}
BOUNDED = {"RFA": GeometricMedianRule(rounds=3), "one-step RFA": OneStepRule()}
# The threshold every run uses (TrainingConfig's default fraction of m), as the certificate needs it.
THRESHOLD = SecureAverageOracle(TrainingConfig().threshold).threshold_for(CLIENTS_PER_ROUND)


def pilot_norms(rounds: int, every: int) -> np.ndarray:
    """Norms of all clients' honest updates at checkpoints of a clean plaintext FedAvg run (seed 0).

    A deployment would fix C the same way, from a pilot on public or proxy data, before training.
    """
    data = federation(0, "iid")
    rng = np.random.default_rng([0, 2])
    norms = []
    for k in range(0, rounds, every):
        w = train(MODEL, data, Mean(), config(k, 0)).params if k else MODEL.init_params(rng)
        for i in range(data.n_clients):
            X, y = data.client(i)
            local = local_sgd(MODEL, w, X, y, steps=LOCAL_STEPS, lr=LR, batch_size=BATCH_SIZE, rng=rng)
            norms.append(np.linalg.norm(local - w))
    return np.array(norms)


def skewed_floor(threshold: int) -> tuple[float, int, int]:
    """The weight floor of fig4's label-skewed federation (seed 0), with its smallest and largest N_i."""
    counts = federation(0).sample_counts
    return weight_floor(counts.min(), counts.max(), threshold), int(counts.min()), int(counts.max())


def run(data, rule, corruption: dict[str, Any], rounds: int, seed: int, **secure: Any) -> dict[str, Any]:
    result = train(MODEL, data, rule, config(rounds, seed, secure=True, **corruption, **secure))
    h = result.history
    return dict(
        accuracy=result.final.accuracy,
        max_realised_weight=max(r.max_effective_weight for r in h),
        max_certified_weight=max(r.certified_weight for r in h),
        # Every step's realised weight must be within the certificate checked before it.
        rounds_over_certificate=sum(r.max_effective_weight > r.certified_weight for r in h),
        calls_per_round=result.final.oracle_calls / rounds,
    )


def main(argv: list[str] | None = None) -> int:
    p = parser(NAME, __doc__.splitlines()[0])
    p.add_argument("--threshold", type=int, default=THRESHOLD,
                   help=f"secure aggregation threshold t of every session (default: {THRESHOLD} of m = "
                        f"{CLIENTS_PER_ROUND}; t = m means nu is chosen for all m inputs and any dropout aborts)")
    args = p.parse_args(argv)
    t = args.threshold
    rounds = 12 if args.quick else 30
    n_s = 3 if args.quick else 7
    multiples = (1, 10) if args.quick else (1, 3, 10)
    run_seeds = seeds(args)
    start = time.perf_counter()

    norms = pilot_norms(rounds, every=max(1, rounds // 6))
    p95 = float(np.percentile(norms, 95))
    bounds = {("p95" if k == 1 else f"{k}x p95"): k * p95 for k in multiples}

    datasets = {seed: federation(seed, "iid") for seed in run_seeds}
    alpha_range = {seed: (d.sample_counts.min(), d.sample_counts.max()) for seed, d in datasets.items()}
    floor = max(weight_floor(lo, hi, t) for lo, hi in alpha_range.values())
    # Geometric grid from just above the floor (where nu* -> 2C) to a loose bound.
    grid = np.geomspace(1.05 * floor, 0.95, n_s)

    jobs: list[tuple[str, str, str, float | None, int]] = []
    for corruption in CORRUPTIONS:
        for c_label in bounds:
            for seed in run_seeds:
                jobs += [(corruption, c_label, "FedAvg", None, seed), (corruption, c_label, "RFA (nu=1e-6, no s)", None, seed)]
                jobs += [(corruption, c_label, m, float(s), seed) for s in grid for m in BOUNDED]
    rows: list[dict[str, Any]] = []
    with progress_bar(f"{NAME}: {len(jobs)} secure runs", len(jobs)) as advance:
        for corruption, c_label, method, s, seed in jobs:
            C = bounds[c_label]
            data = datasets[seed]
            if method == "FedAvg":
                nu, out = np.nan, run(data, Mean(), CORRUPTIONS[corruption], rounds, seed, norm_bound=C, threshold=t)
            elif s is None:
                nu = 1e-6
                out = run(data, GeometricMedianRule(rounds=3, nu=nu), CORRUPTIONS[corruption], rounds, seed,
                          norm_bound=C, threshold=t)
            else:
                nu = BOUNDED[method].auto_nu(s, C, *alpha_range[seed], t)  # what nu="auto" picks in train()
                out = run(data, BOUNDED[method], CORRUPTIONS[corruption], rounds, seed, norm_bound=C, max_weight=s,
                          nu="auto", threshold=t)
            rows.append(dict(corruption=corruption, C_label=c_label, C=C, method=method,
                             s=np.nan if s is None else s, nu=nu, seed=seed, **out))
            advance()
    write_csv(args.out / f"{NAME}.csv", rows)

    def acc(corruption: str, c_label: str, method: str, s: float | None = None) -> np.ndarray:
        return np.array([
            r["accuracy"] for r in rows
            if (r["corruption"], r["C_label"], r["method"]) == (corruption, c_label, method)
            and (s is None or r["s"] == s)
        ])

    plot_accuracy(args.out, acc, bounds, grid, floor, rounds)
    median_norm = float(np.median(norms))
    plot_nu(args.out, rows, bounds, grid, floor, median_norm, alpha_range[run_seeds[0]], t)

    skew_floor, skew_lo, skew_hi = skewed_floor(t)
    lines = [
        f"Digits (8x8, 10 classes), {N_CLIENTS} clients (i.i.d. split, N_i in "
        f"[{alpha_range[run_seeds[0]][0]}, {alpha_range[run_seeds[0]][1]}]), logistic regression, "
        f"m = {CLIENTS_PER_ROUND}, t = {t}, tau = {LOCAL_STEPS}, T = {rounds} rounds, rho = 0.25, "
        f"seeds {run_seeds}; every run through in-memory secure aggregation. Final test accuracy, mean over seeds.",
        "",
        f"Pilot update norms (clean FedAvg, {norms.size} honest updates): median {median_norm:.2f}, "
        f"95th percentile {p95:.2f}. C values: " + ", ".join(f"{k} = {v:.2f}" for k, v in bounds.items())
        + f" (TrainingConfig's default C = {TrainingConfig().norm_bound:g} is {TrainingConfig().norm_bound / p95:.0f}x p95).",
        "",
        f"Weight floor (no s at or below it is certifiable): {floor:.3f} here (about 1/t = {1 / t:.3f} "
        f"for equal weights); {skew_floor:.3f} for the label-skewed federation of fig4 (Dirichlet 0.5, N_i from "
        f"{skew_lo} to {skew_hi}). The mean step's effective weights are alpha_i / sum alpha_j, and the certificate "
        "assumes the other t - 1 included clients all hold the smallest weight, so a tight s needs a narrow public "
        "weight range [alpha_min, alpha_max] (clients clip their weight into it).",
        "",
        "nu* required by each s (nu = \"auto\") for RFA (D = 2C); one-step RFA's is half of it (D = C):",
        "",
        "| C | " + " | ".join(f"s = {s:.3f}" for s in grid) + " | 2C (= mean) |",
        "|---|" + "---|" * (len(grid) + 1),
    ]
    for c_label, C in bounds.items():
        nus = [smallest_nu(s, C, *alpha_range[run_seeds[0]], t) for s in grid]
        lines.append(f"| {c_label} ({C:.2f}) | " + " | ".join(f"{nu:.3g}" for nu in nus) + f" | {2 * C:.3g} |")
    for corruption in CORRUPTIONS:
        lines += [
            "",
            f"Accuracy under {corruption} corruption (rho = 0.25), RFA / one-step RFA for each s:",
            "",
            "| C | FedAvg | RFA (nu=1e-6, no s) | " + " | ".join(f"s = {s:.3f}" for s in grid) + " |",
            "|---|---|---|" + "---|" * len(grid),
        ]
        for c_label in bounds:
            cells = [f"{acc(corruption, c_label, 'RFA', s).mean():.3f} / {acc(corruption, c_label, 'one-step RFA', s).mean():.3f}" for s in grid]
            lines.append(
                f"| {c_label} | {acc(corruption, c_label, 'FedAvg').mean():.3f} | "
                f"{acc(corruption, c_label, 'RFA (nu=1e-6, no s)').mean():.3f} | " + " | ".join(cells) + " |"
            )
    lines += [
        "",
        "Smallest s in the grid at which RFA keeps at least 90% of its unconstrained advantage over FedAvg "
        "(omniscient corruption), and the nu* it needs:",
        "",
    ]
    for c_label, C in bounds.items():
        fedavg = acc("omniscient", c_label, "FedAvg").mean()
        free = acc("omniscient", c_label, "RFA (nu=1e-6, no s)").mean()
        kept = [s for s in grid if acc("omniscient", c_label, "RFA", s).mean() - fedavg >= 0.9 * (free - fedavg)]
        if kept:
            nu = smallest_nu(kept[0], C, *alpha_range[run_seeds[0]], t)
            lines.append(f"* C = {c_label} ({C:.2f}): s = {kept[0]:.3f}, nu* = {nu:.3g} "
                         f"({nu / median_norm:.1f}x the median honest update norm)")
        else:
            lines.append(f"* C = {c_label} ({C:.2f}): no s in the grid")
    bounded_rows = [r for r in rows if not np.isnan(r["s"])]
    lines += [
        "",
        "Certificate against realised weights: "
        f"{sum(r['rounds_over_certificate'] for r in rows)} rounds (of {len(rows) * rounds}) had a realised "
        "effective weight above the certificate checked before its step; "
        f"{sum(r['max_certified_weight'] > r['s'] for r in bounded_rows)} bounded runs had a certificate above s. "
        f"Largest realised effective weight over all runs: {max(r['max_realised_weight'] for r in rows):.3f} "
        f"(1/m = {1 / CLIENTS_PER_ROUND:.3f}); the certificate is a worst case (every other client at distance D = ||v|| + C, "
        "the one client at distance <= nu), so it sits far above what a step actually reveals.",
        "",
        f"Runtime: {time.perf_counter() - start:.1f} s.",
    ]
    write_summary(args.out / "summary.md", "Privacy/robustness trade-off of the weight bound s", lines)
    console.print(f"wrote {args.out}")
    return 0


def s_axis(ax, grid) -> None:
    """A log x axis labelled with the grid of s values."""
    ax.set_xscale("log")
    ax.set_xticks(grid, [f"{s:.2f}" for s in grid], rotation=45)
    ax.minorticks_off()


def plot_accuracy(out, acc, bounds, grid, floor, rounds) -> None:
    fig, axes = plt.subplots(len(CORRUPTIONS), len(bounds), figsize=(4.2 * len(bounds), 3.6 * len(CORRUPTIONS)),
                             sharex=True, sharey=True, squeeze=False)
    for row, corruption in enumerate(CORRUPTIONS):
        for col, (c_label, C) in enumerate(bounds.items()):
            ax = axes[row, col]
            for method in BOUNDED:
                a = [acc(corruption, c_label, method, s) for s in grid]
                ax.plot(grid, [x.mean() for x in a], "o-", color=COLORS[method], label=f"{method}, nu = nu*(s)")
                ax.fill_between(grid, [x.min() for x in a], [x.max() for x in a], color=COLORS[method], alpha=0.2, linewidth=0)
            ax.axhline(acc(corruption, c_label, "FedAvg").mean(), color=COLORS["FedAvg"], ls="--", label="FedAvg (clipped to C)")
            ax.axhline(acc(corruption, c_label, "RFA (nu=1e-6, no s)").mean(), color=COLORS["RFA"], ls=":",
                       label="RFA, nu = 1e-6, no s")
            ax.axvline(floor, color="gray", lw=0.8)
            s_axis(ax, grid)
            ax.set_title(f"{corruption}, C = {c_label} ({C:.2f})", fontsize=10)
            ax.grid(alpha=0.3)
            if row == len(CORRUPTIONS) - 1:
                ax.set_xlabel("privacy bound s (left: tighter; gray: floor)")
        axes[row, 0].set_ylabel(f"test accuracy after {rounds} rounds")
    plot_style.percent_axis(axes[0, 0], -0.02, 1.0)
    plot_style.legend(axes[0, -1])
    save_figure(fig, out / f"{NAME}.png")


def plot_nu(out, rows, bounds, grid, floor, median_norm, alpha_range, threshold: int) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    dense = np.geomspace(1.001 * floor, grid[-1], 200)
    for k, (c_label, C) in enumerate(bounds.items()):
        color = plt.cm.viridis(k / max(1, len(bounds) - 1) * 0.8)
        left.plot(dense, [smallest_nu(s, C, *alpha_range, threshold) for s in dense], color=color, label=f"nu*, C = {c_label}")
        left.axhline(2 * C, color=color, ls=":", lw=1)
    left.axhline(median_norm, color="gray", ls="--", label="median honest update norm")
    left.plot([], [], "k:", lw=1, label="2C: the median is the mean")
    s_axis(left, grid)
    left.set_xlabel("privacy bound s")
    left.set_yscale("log")
    left.set_ylabel("smallest certifying nu")
    left.legend(fontsize=8)
    left.grid(alpha=0.3)

    bounded = [r for r in rows if not np.isnan(r["s"])]
    s = np.array([r["s"] for r in bounded])
    jitter = np.exp(np.random.default_rng(0).uniform(-0.03, 0.03, s.size))  # separate overlapping runs
    right.plot(grid, grid, "k-", lw=0.8, label="y = s")
    right.scatter(s * jitter, [r["max_certified_weight"] for r in bounded], s=12, marker="s", label="certificate (max over steps)")
    right.scatter(s * jitter, [r["max_realised_weight"] for r in bounded], s=12, label="realised max effective weight")
    right.axhline(1 / CLIENTS_PER_ROUND, color="gray", ls="--", lw=0.8, label="1/m")
    s_axis(right, grid)
    right.set_xlabel("privacy bound s")
    right.set_ylabel("effective weight")
    right.legend(fontsize=8)
    right.grid(alpha=0.3)
    save_figure(fig, out / f"{NAME}_nu.png")


if __name__ == "__main__":
    entry_point(NAME, main)
