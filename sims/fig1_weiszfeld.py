"""Fig. 1 of the RFA paper: how fast the smoothed Weiszfeld algorithm converges, and whom it down-weights.

    python3 -m sims.fig1_weiszfeld            # 3 seeds
    python3 -m sims.fig1_weiszfeld --quick    # 1 seed (used by the tests)

Inputs.  Four point clouds, each the input of one geometric median:

- ``clean``: the model updates w_i - w of one federated round on the digits data
  (40 clients, Dirichlet(0.5) label skew, logistic regression), every client
  participating, after a few FedAvg rounds so that w is a partly trained model
  and the updates are neither the first, large, nor the late, tiny ones;
- ``omniscient``: the same round with a quarter of the weight corrupted by the
  omniscient attack (Sec. V-A c)): the corrupted clients all send the vector
  that turns the weighted mean into minus the uncorrupted mean;
- ``negate``: the same round with a quarter of the weight holding negated
  images (Sec. V-A a)), so their honest local SGD produces the outliers;
- ``synthetic``: a contaminated Gaussian cloud, a quarter of the weight in a
  second cluster far from the first.

Weights are alpha_i = N_i (sample counts) for the digits inputs and random for
the synthetic one.  Corrupted sets are chosen by weight (``choose_corrupted``),
as in training.

Output (in ``--out``, default ``out/fig1_weiszfeld``):

- ``fig1_convergence.png``: top, the relative suboptimality (g(v_r) - g*) / g*
  against the Weiszfeld step r, log scale, one panel per input and one line
  per nu (median over seeds, min-max shaded); bottom, the distance
  ||v_r - v*|| relative to the median distance of the points to v*, a
  stricter measure since g is flat near v*.  g* and v* come from a 1000-step
  run with the smallest nu (g* lowered to any plotted objective below it).
  Values below the precision of g* and v* are drawn at a floor (grey band);
  a flat tail above it is the smoothing bias of a large nu (Prop. 2).
- ``fig1_reweighting.png``: top, the re-weighting of each point,
  (beta_i / sum beta) / (alpha_i / sum alpha), against the step (1 means the
  point weighs what it weighs in the mean; below 1, down-weighted); bottom,
  the outliers' total effective weight sum_C beta / sum beta against their
  alpha share (dashed).  Step r shows the betas that produced v_r, so step 1's
  are computed at the starting point, the weighted mean.  nu = 1e-6 (RFA's).
- ``fig1_weiszfeld.csv``: input, seed, nu, step, objective, g_star, rel_suboptimality, rel_distance.
- ``fig1_reweighting.csv``: input, seed, step, client, outlier, alpha_share,
  effective_weight, ratio.
- ``summary.md``: steps needed to reach 1e-3 relative suboptimality and 1e-2
  relative distance, and the outliers' weight share after 1, 3 and 10 steps,
  against the paper's "high quality solution in 3 iterations".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from rfa import Mean, geometric_median
from rfa.corruption import choose_corrupted, corrupt_updates, poison_clients
from rfa.data import FederatedDataset, digits
from rfa.models import local_sgd
from rfa.training import train
from sims.common import console, entry_point, parser, plt, progress_bar, save_figure, seeds, write_csv, write_summary
# The federation the training figures share, so these are the updates RFA aggregates there.
from sims.federation import BATCH_SIZE, DIRICHLET, LOCAL_STEPS, LR, MODEL, N_CLIENTS, config

NAME = "fig1_weiszfeld"
# nu enters only through max(nu, ||v - w_i||): below every distance (about 1 for these updates) it changes
# nothing, so the first three curves coincide (Prop. 2 then drops its nu/2 term); nu = 1, the scale of the
# distances, shows the smoothing bias.
NUS = (1e-6, 1e-3, 1e-1, 1.0)
REWEIGHT_NU = 1e-6  # RFA's nu (Sec. V-A): the re-weighting the training actually uses
STEPS = 25  # plotted Weiszfeld steps; the curves are flat or at machine precision well before
REFERENCE_STEPS = 1000
TARGET = 1e-3  # relative suboptimality quoted in the summary
DISTANCE_TARGET = 1e-2  # ||v_r - v*||, relative to the spread of the points, quoted in the summary
# How precisely the reference run knows g* and v*: g to a few ulps, and v* only to about sqrt(ulp)
# since g is flat (quadratic) near its minimiser. Plots draw smaller values at these floors.
OBJECTIVE_FLOOR, DISTANCE_FLOOR = 1e-15, 1e-8
RHO = 0.25
WARMUP_ROUNDS = 5  # FedAvg rounds before the recorded round


@dataclass(frozen=True)
class Cloud:
    """The input of one geometric median: points, weights alpha, and which points are outliers."""

    name: str
    points: np.ndarray
    alpha: np.ndarray
    outlier: np.ndarray


def digits_round(seed: int) -> list[Cloud]:
    """One round's updates of every client, clean, under the omniscient attack and with negated data."""
    rng = np.random.default_rng(seed)
    data = digits(N_CLIENTS, split="dirichlet", alpha=DIRICHLET, rng=rng)
    w = train(MODEL, data, Mean(), config(WARMUP_ROUNDS, seed)).params
    counts = data.sample_counts
    alpha = counts.astype(np.float64)
    corrupted = choose_corrupted(counts, RHO, rng)

    def updates(dataset: FederatedDataset) -> np.ndarray:
        # The same SGD randomness for the clean and the negated round: only the poisoned data differ.
        sgd_rng = np.random.default_rng([seed, 1])
        return np.stack(
            [
                local_sgd(MODEL, w, *dataset.client(i), steps=LOCAL_STEPS, lr=LR, batch_size=BATCH_SIZE, rng=sgd_rng) - w
                for i in range(dataset.n_clients)
            ]
        )

    clean = updates(data)
    # target="all": minus the mean of the round as it would have been, as in training (Sec. V-A c)).
    attacked = corrupt_updates("omniscient", clean, alpha, corrupted, rng, target="all")
    negated = updates(poison_clients(data, corrupted, "negate"))
    return [
        Cloud("clean", clean, alpha, np.zeros(data.n_clients, dtype=bool)),
        Cloud("omniscient", attacked, alpha, corrupted),
        Cloud("negate", negated, alpha, corrupted),
    ]


def synthetic_cloud(seed: int, n: int = 50, dim: int = 100, shift: float = 5.0) -> Cloud:
    """Inliers N(0, I/dim) (norm about 1); outliers, a quarter of the weight, around a point at distance ``shift``."""
    rng = np.random.default_rng([seed, 2])
    alpha = rng.uniform(1.0, 3.0, n)
    # The outliers: the longest prefix of a random order whose weight is at most RHO of the total.
    order = rng.permutation(n)
    outlier = np.zeros(n, dtype=bool)
    outlier[order] = np.cumsum(alpha[order]) <= RHO * alpha.sum()
    points = rng.normal(0.0, 1.0 / np.sqrt(dim), (n, dim))
    direction = rng.normal(size=dim)
    points[outlier] += shift * direction / np.linalg.norm(direction)
    return Cloud("synthetic", points, alpha, outlier)


def iterates(cloud: Cloud, nu: float) -> np.ndarray:
    """(STEPS + 1, d): v_0 (the weighted mean) .. v_STEPS.

    ``geometric_median`` returns only its last iterate; the runs are deterministic, so the run of r
    steps ends at the r-th iterate of the longest one.
    """
    start = cloud.alpha @ cloud.points / cloud.alpha.sum()
    later = [
        geometric_median(cloud.points, cloud.alpha, nu=nu, max_iter=r, tol=None).median for r in range(1, STEPS + 1)
    ]
    return np.stack([start, *later])


def convergence_rows(cloud: Cloud, seed: int) -> list[dict]:
    """g(v_r) and ||v_r - v*|| for r = 0..STEPS and every nu, against a long run."""
    runs = {nu: geometric_median(cloud.points, cloud.alpha, nu=nu, max_iter=STEPS, tol=None).objective for nu in NUS}
    # tol=0: run until the objective stops changing at all, or REFERENCE_STEPS.
    reference = geometric_median(cloud.points, cloud.alpha, nu=min(NUS), max_iter=REFERENCE_STEPS, tol=0.0)
    g_star = min(float(reference.objective.min()), *(float(o.min()) for o in runs.values()))
    v_star = reference.median
    # A distance is small or large relative to the spread of the points around the median.
    spread = float(np.median(np.linalg.norm(cloud.points - v_star, axis=1)))
    rows = []
    for nu, objective in runs.items():
        gaps = np.linalg.norm(iterates(cloud, nu) - v_star, axis=1) / spread
        rows += [
            dict(
                input=cloud.name,
                seed=seed,
                nu=nu,
                step=r,
                objective=float(g),
                g_star=g_star,
                rel_suboptimality=(float(g) - g_star) / g_star,
                rel_distance=float(gap),
            )
            for r, (g, gap) in enumerate(zip(objective, gaps))
        ]
    return rows


def reweighting_rows(cloud: Cloud, seed: int) -> list[dict]:
    """Each point's effective weight beta_i / sum beta at steps 1..STEPS (nu = REWEIGHT_NU)."""
    alpha_share = cloud.alpha / cloud.alpha.sum()
    rows = []
    for r in range(1, STEPS + 1):
        # .weights are the betas of the last step taken: those that produced v_r.
        beta = geometric_median(cloud.points, cloud.alpha, nu=REWEIGHT_NU, max_iter=r, tol=None).weights
        share = beta / beta.sum()
        rows += [
            dict(
                input=cloud.name,
                seed=seed,
                step=r,
                client=i,
                outlier=bool(cloud.outlier[i]),
                alpha_share=float(alpha_share[i]),
                effective_weight=float(share[i]),
                ratio=float(share[i] / alpha_share[i]),
            )
            for i in range(len(share))
        ]
    return rows


def _series(rows: Sequence[dict], key: str, **match) -> np.ndarray:
    """(seeds, steps) array of ``key`` for the rows matching ``match``, ordered by seed then step."""
    chosen = [r for r in rows if all(r[k] == v for k, v in match.items())]
    by_seed: dict[int, list] = {}
    for r in sorted(chosen, key=lambda r: (r["seed"], r["step"])):
        by_seed.setdefault(r["seed"], []).append(r[key])
    return np.array(list(by_seed.values()), dtype=np.float64)


def steps_to(target: float, values: np.ndarray) -> int | None:
    """First step whose value is at most ``target`` (None if never within STEPS)."""
    hits = np.flatnonzero(values <= target)
    return int(hits[0]) if hits.size else None


def plot_convergence(rows: Sequence[dict], inputs: Sequence[str], out) -> None:
    metrics = (
        ("rel_suboptimality", "(g(v_r) - g*) / g*", TARGET, OBJECTIVE_FLOOR),
        ("rel_distance", "||v_r - v*|| / median_i ||w_i - v*||", DISTANCE_TARGET, DISTANCE_FLOOR),
    )
    fig, axes = plt.subplots(2, len(inputs), figsize=(4.2 * len(inputs), 6.8), sharex=True, sharey="row")
    colours = dict(zip(NUS, ("tab:blue", "tab:orange", "tab:green", "tab:red")))
    styles = dict(zip(NUS, ("-", "--", ":", "-")))  # the first three overlap: dashes keep them visible
    for row, (key, label, target, floor) in enumerate(metrics):
        top = 0.0
        for ax, name in zip(axes[row], inputs):
            for nu in NUS:
                # Below the floor the values are rounding noise of the reference: draw them at the floor.
                values = np.maximum(_series(rows, key, input=name, nu=nu), floor)
                top = max(top, float(values.max()))
                steps = np.arange(values.shape[1])
                ax.plot(steps, np.median(values, 0), color=colours[nu], linestyle=styles[nu], label=f"nu = {nu:g}")
                ax.fill_between(steps, values.min(0), values.max(0), color=colours[nu], alpha=0.2, linewidth=0)
            ax.axhspan(floor / 10, floor, color="lightgrey", alpha=0.6, linewidth=0)
            ax.axhline(target, color="grey", linestyle=":", linewidth=1)
            ax.axvline(3, color="grey", linestyle="--", linewidth=0.8)
            ax.set_yscale("log")
            if row == 0:
                ax.set_title(name)
            else:
                ax.set_xlabel("Weiszfeld step r")
        axes[row, 0].set_ylabel(label)
        axes[row, 0].set_ylim(floor / 10, 3 * top)  # shared by the row: set once all of it is drawn
    axes[0, 0].legend(loc="lower left", fontsize=8)
    fig.suptitle(
        f"Smoothed Weiszfeld convergence (dotted: {TARGET:g} and {DISTANCE_TARGET:g}; dashed: R = 3, RFA's budget; "
        "grey: below the precision of g* and v*)",
        fontsize=10,
    )
    save_figure(fig, out)


def plot_reweighting(rows: Sequence[dict], inputs: Sequence[str], out) -> None:
    fig, axes = plt.subplots(2, len(inputs), figsize=(4.2 * len(inputs), 6.4), sharex=True)
    first = min(r["seed"] for r in rows)
    for col, name in enumerate(inputs):
        top, bottom = axes[0, col], axes[1, col]
        # Top: every point of the first seed, one thin line each.
        mine = [r for r in rows if r["input"] == name and r["seed"] == first]
        for client in sorted({r["client"] for r in mine}):
            line = sorted((r for r in mine if r["client"] == client), key=lambda r: r["step"])
            colour = "tab:red" if line[0]["outlier"] else "tab:blue"
            top.plot([r["step"] for r in line], [r["ratio"] for r in line], color=colour, alpha=0.5, linewidth=0.8)
        top.axhline(1.0, color="black", linestyle="--", linewidth=0.8)
        top.set_yscale("log")
        top.set_title(f"{name} (seed {first})")
        # Bottom: outliers' total effective weight, all seeds, against their alpha share.
        out_rows = [r for r in rows if r["input"] == name and r["outlier"]]
        shares: dict[tuple[int, int], float] = {}
        alpha_shares: dict[int, float] = {}
        for r in out_rows:
            shares[(r["seed"], r["step"])] = shares.get((r["seed"], r["step"]), 0.0) + r["effective_weight"]
            if r["step"] == 1:
                alpha_shares[r["seed"]] = alpha_shares.get(r["seed"], 0.0) + r["alpha_share"]
        for seed in sorted(alpha_shares):
            steps = sorted(s for (sd, s) in shares if sd == seed)
            line = bottom.plot(steps, [shares[(seed, s)] for s in steps], marker=".", label=f"seed {seed}")
            bottom.axhline(alpha_shares[seed], color=line[0].get_color(), linestyle="--", linewidth=0.8)
        bottom.set_ylim(bottom=0)
        bottom.set_xlabel("Weiszfeld step r")
    axes[0, 0].set_ylabel("(beta_i/sum beta) / (alpha_i/sum alpha)")
    axes[1, 0].set_ylabel("outliers' effective weight\n(dashed: their alpha share)")
    axes[0, 0].plot([], [], color="tab:red", label="outlier")
    axes[0, 0].plot([], [], color="tab:blue", label="inlier")
    axes[0, 0].legend(fontsize=8)
    axes[1, 0].legend(fontsize=8)
    fig.suptitle(f"Re-weighting by the smoothed Weiszfeld algorithm (nu = {REWEIGHT_NU:g})", fontsize=10)
    save_figure(fig, out)


def summary_lines(
    conv: Sequence[dict], weights: Sequence[dict], inputs: Sequence[str], run_seeds: list[int]
) -> list[str]:
    lines = [
        f"Seeds {run_seeds}. Inputs: one round's updates of all {N_CLIENTS} digits clients (Dirichlet 0.5, "
        f"logistic regression, after {WARMUP_ROUNDS} FedAvg rounds), clean, under the omniscient attack and "
        f"with negated images (rho = {RHO} by weight), and a synthetic cloud with a quarter of the weight "
        f"in a far cluster. g* from {REFERENCE_STEPS} steps at nu = {min(NUS):g}.",
        "",
        f"## Steps to reach relative suboptimality {TARGET:g} and relative distance {DISTANCE_TARGET:g}",
        "",
        "Worst seed; after 3 steps, the worst seed's value. Relative distance: ||v_r - v*|| divided by the "
        "median distance of the points to v*.",
        "",
        "| input | nu | steps to obj. gap " + f"{TARGET:g}" + " | obj. gap after 3 | steps to distance "
        + f"{DISTANCE_TARGET:g}" + " | distance after 3 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in inputs:
        for nu in NUS:
            cells = []
            for key, target in (("rel_suboptimality", TARGET), ("rel_distance", DISTANCE_TARGET)):
                values = _series(conv, key, input=name, nu=nu)
                needed = [steps_to(target, seed_values) for seed_values in values]
                cells += [f"> {STEPS}" if None in needed else str(max(needed)), f"{values[:, 3].max():.1e}"]
            lines.append(f"| {name} | {nu:g} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "The paper (Sec. IV, Fig. 1): the smoothed Weiszfeld algorithm gives a \"high quality solution in "
        "3 iterations\", hence RFA's budget R = 3. Prop. 2 bounds the suboptimality by "
        "2||v0 - v*||^2 / (nu_bar R) + nu/2 (weights summing to 1): a nu above some of the distances "
        "||v - w_i|| stops the curve at a bias, here far below nu/2.",
        "",
        f"## Outliers' effective weight (nu = {REWEIGHT_NU:g}), mean over seeds",
        "",
        "| input | alpha share | after 1 step | after 3 steps | after 10 steps |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in sorted({r["input"] for r in weights}, key=list(inputs).index):
        out_rows = [r for r in weights if r["input"] == name and r["outlier"]]
        n_seeds = len({r["seed"] for r in out_rows})
        alpha_share = sum(r["alpha_share"] for r in out_rows if r["step"] == 1) / n_seeds
        share = {s: sum(r["effective_weight"] for r in out_rows if r["step"] == s) / n_seeds for s in (1, 3, 10)}
        lines.append(f"| {name} | {alpha_share:.3f} | {share[1]:.3f} | {share[3]:.3f} | {share[10]:.3f} |")
    lines += [
        "",
        "Below the alpha share means the geometric median down-weights the outliers relative to the mean, "
        "which gives them exactly their alpha share.",
    ]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(NAME, "Fig. 1: smoothed Weiszfeld convergence and re-weighting on federated updates.")
    args = p.parse_args(argv)
    run_seeds = seeds(args)
    conv: list[dict] = []
    weights: list[dict] = []
    inputs: list[str] = []
    with progress_bar("Fig. 1: inputs x seeds", total=4 * len(run_seeds)) as advance:
        for seed in run_seeds:
            for cloud in [*digits_round(seed), synthetic_cloud(seed)]:
                if cloud.name not in inputs:
                    inputs.append(cloud.name)
                conv += convergence_rows(cloud, seed)
                if cloud.outlier.any():
                    weights += reweighting_rows(cloud, seed)
                advance()
    out = args.out
    write_csv(out / f"{NAME}.csv", conv)
    write_csv(out / "fig1_reweighting.csv", weights)
    plot_convergence(conv, inputs, out / "fig1_convergence.png")
    contaminated = [n for n in inputs if any(r["input"] == n for r in weights)]
    plot_reweighting(weights, contaminated, out / "fig1_reweighting.png")
    write_summary(out / "summary.md", "Fig. 1: smoothed Weiszfeld convergence and re-weighting",
                  summary_lines(conv, weights, inputs, run_seeds))
    console.print((out / "summary.md").read_text(), markup=False, highlight=False, soft_wrap=True)
    return 0


if __name__ == "__main__":
    entry_point(NAME, main)
