"""Table 1 of Yi et al. (AAAI 2024) on digits: one-phase rules against the two-phase rules Cent2P / Mean2P.

    python3 -m sims.table1_two_phase            # rates 0.1, 0.2, 0.4; uniform and Dirichlet(0.1); 1 seed
    python3 -m sims.table1_two_phase --quick    # rate 0.4, uniform split, 30 rounds (used by the tests)
    python3 -m sims.table1_two_phase --json     # print the run's report (every CSV row) as JSON on stdout
    python3 -m sims.table1_two_phase --splits uniform --rates 0.4 --attacks Empire --empire-epsilon 1
                                                # a slice of the grid, a stronger Empire
    python3 -m sims.table1_two_phase --workers 2  # a pool of 2 processes (one BLAS thread each)

Setup.  scikit-learn's 8x8 digits (20% held out for testing) over n = 35
clients, split uniformly ("uniform", i.i.d.) or with Dirichlet(0.1) label skew
("dirichlet", the paper's extreme heterogeneity).  Every round all 35 clients
take part (as in the paper).  Training is RASHB (Algorithm 1): each client
computes one stochastic gradient on a batch of 3 rows (the paper's batch size),
keeps the momentum m <- beta m + (1 - beta) g with beta = 0.9 and sends it; the
server steps w <- w - 0.5 R with R the rule's aggregate; 200 rounds of
multinomial logistic regression.  Cent2P and Mean2P run 2PRASHB (Algorithm 3):
the server proposes the Inner and the Outer model, every client votes on a
fresh batch of 32 of its own rows, the corrupted ones for the candidate with
the larger loss on their unpoisoned rows.  Updates are weighted by alpha_i = N_i
where a rule uses weights (the uniform split's N_i differ by at most one row).

Adversarial rates 0.1, 0.2, 0.4: exactly 3, 7, 14 of the 35 clients are
corrupted (by count, as in the paper), and every rule that takes f is told that
number.  Attacks: LF (label flip y -> 9 - y, static data poisoning), SF
(minus the own momentum), Gauss (own momentum plus Gaussian noise of its own
variance), Omn (all corrupted clients send the vector that makes the mean minus
the mean without corruption), Empire (minus 0.1 times the honest mean, Xie et
al.), SV (honest mean minus z_max honest standard deviations per coordinate,
Baruch et al.'s z_max for 35 clients of which f corrupted).  PGA is not
included.

Rules: Avg (mean), GM (one Weiszfeld step from the mean, as the paper), CClip
(centred clipping from v = 0, tau = 0.215771 as the paper, 3 iterations), CWM
(coordinate median), CWTM (trimmed mean, f/n per side), Krum (f), Cent1P /
Mean1P (CenterwO / MeanwO with f outliers, Algorithm 2), Cent2P / Mean2P.

Output (in ``--out``, default ``out/table1_two_phase``): ``table1_two_phase.csv``
(one row per split x rate x attack x rule x seed: final test accuracy, and for
the two-phase rules how often Outer won and the mean vote counts),
``table1_heatmap.png`` (accuracy, rules x attacks and the worst column, one
panel per split and rate) and ``summary.md`` (every table, the paper's Table 1
beside ours, the worst-case gaps, and a measurement of what Empire does to
Inner and Outer on the honest gradients of the initial model).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
from threadpoolctl import threadpool_limits

from rfa import (
    Aggregator,
    Cent2P,
    CenteredClipping,
    CenterWithOutliers,
    CoordinateMedian,
    GeometricMedianRule,
    Krum,
    Mean,
    Mean2P,
    MeanWithOutliers,
    TrimmedMean,
    TwoPhaseRule,
)
from rfa.corruption import choose_corrupted, corrupt_updates
from rfa.data import FederatedDataset, digits
from rfa.models import LogisticRegression
from rfa.training import TrainingConfig, train
from sims.common import entry_point, parser, plt, progress_bar, save_figure, seeds, write_csv, write_summary

NAME = "table1_two_phase"
N_CLIENTS = 35
RATES = (0.1, 0.2, 0.4)
QUICK_RATES = (0.4,)
SPLITS = {"uniform": dict(split="iid"), "dirichlet": dict(split="dirichlet", alpha=0.1)}
QUICK_SPLITS = ("uniform",)
ROUNDS = 200
QUICK_ROUNDS = 30
MOMENTUM = 0.9
LR = 0.5
BATCH_SIZE = 3  # the paper's
VOTE_BATCH_SIZE = 32
CCLIP_TAU = 0.215771  # the paper's
EMPIRE_EPSILON = 0.1
MODEL = LogisticRegression(64, 10)


@dataclass(frozen=True)
class Attack:
    kind: str  # "data" or "update"
    corruption: str  # the name in rfa.corruption
    params: dict


ATTACKS = {
    "LF": Attack("data", "label_flip", {}),
    "SF": Attack("update", "sign_flip", {}),
    "Gauss": Attack("update", "gaussian", {}),
    "Omn": Attack("update", "omniscient", {}),
    "Empire": Attack("update", "empire", {"epsilon": EMPIRE_EPSILON}),  # --empire-epsilon replaces it
    "SV": Attack("update", "sv", {}),
}

RULES: dict[str, Callable[[int, int], Aggregator]] = {  # label -> (f, d) -> rule
    "Avg": lambda f, d: Mean(),
    "GM": lambda f, d: GeometricMedianRule(rounds=1),
    "CClip": lambda f, d: CenteredClipping(tau=CCLIP_TAU, iterations=3, init=np.zeros(d)),
    "CWM": lambda f, d: CoordinateMedian(),
    "CWTM": lambda f, d: TrimmedMean(beta=f / N_CLIENTS),
    "Krum": lambda f, d: Krum(f=f),
    "Cent1P": lambda f, d: CenterWithOutliers(f=f),
    "Mean1P": lambda f, d: MeanWithOutliers(f=f),
    "Cent2P": lambda f, d: Cent2P(f=f),
    "Mean2P": lambda f, d: Mean2P(f=f),
}
TWO_PHASE = ("Cent2P", "Mean2P")
PAPER_BASELINES = ("Avg", "GM", "CClip", "CWM", "CWTM", "Krum")  # the one-phase rows of the paper's Table 1

# Yi et al., Table 1: FEMNIST, uniform sampling, adversarial rate 0.4 (LF, SF, Gauss, Omn, Empire, SV, worst).
PAPER_TABLE1 = {
    "Avg": (0.56, 0.04, 0.79, 0.00, 0.79, 0.32, 0.00),
    "GM": (0.64, 0.46, 0.79, 0.00, 0.74, 0.07, 0.00),
    "CClip": (0.58, 0.45, 0.64, 0.20, 0.26, 0.26, 0.20),
    "CWM": (0.50, 0.45, 0.54, 0.02, 0.07, 0.05, 0.02),
    "CWTM": (0.51, 0.39, 0.55, 0.02, 0.05, 0.05, 0.02),
    "Krum": (0.53, 0.36, 0.47, 0.10, 0.01, 0.05, 0.01),
    "Cent2P": (0.74, 0.62, 0.76, 0.79, 0.74, 0.76, 0.62),
    "Mean2P": (0.73, 0.61, 0.76, 0.79, 0.73, 0.75, 0.61),
}


def corrupted_count(rate: float) -> int:
    """floor(rate n), guarded against 0.4 * 35 = 14.000000000000002 rounding either way."""
    return math.floor(rate * N_CLIENTS + 1e-9)


@functools.lru_cache(maxsize=None)
def federation(split: str, seed: int) -> FederatedDataset:
    """The seed's digits federation, built once per process (loading digits dominates a short run)."""
    return digits(N_CLIENTS, rng=np.random.default_rng(seed), **SPLITS[split])


def run_one(
    split: str, rate: float, attack: str, rule_label: str, seed: int, rounds: int, epsilon: float
) -> dict[str, Any]:
    """One training run; the row of the CSV.  Single-threaded BLAS: the runs themselves go in parallel."""
    with threadpool_limits(1):
        start = time.perf_counter()
        data = federation(split, seed)
        f = corrupted_count(rate)
        rule = RULES[rule_label](f, MODEL.n_params)
        spec = ATTACKS[attack]
        params = {"epsilon": epsilon} if attack == "Empire" else spec.params
        config = TrainingConfig(
            rounds=rounds,
            clients_per_round=N_CLIENTS,
            local_steps=1,
            lr=LR,
            batch_size=BATCH_SIZE,
            momentum=MOMENTUM,
            rho=rate,
            corrupted_by="count",
            vote_batch_size=VOTE_BATCH_SIZE,
            eval_every=rounds,
            seed=seed,
            corruption_params=params,
            **{f"{spec.kind}_corruption": spec.corruption},
        )
        result = train(MODEL, data, rule, config)
        row: dict[str, Any] = dict(
            split=split, rate=rate, attack=attack, rule=rule_label, seed=seed, f=f,
            corrupted=int(result.corrupted.sum()), rounds=rounds, accuracy=result.final.accuracy,
            test_loss=result.final.test_loss,
        )
        if isinstance(rule, TwoPhaseRule):
            outer = [e.winner == 1 for e in result.elections]
            row.update(
                outer_win_share=float(np.mean(outer)),
                mean_inner_votes=float(np.mean([e.inner_votes for e in result.elections])),
                mean_outer_votes=float(np.mean([e.outer_votes for e in result.elections])),
            )
        row["seconds"] = time.perf_counter() - start
        return row


def _one_blas_thread() -> None:
    threadpool_limits(1)


def grid(args) -> tuple[list[dict], float]:
    rates = args.rates or (QUICK_RATES if args.quick else RATES)
    splits = args.splits or (QUICK_SPLITS if args.quick else tuple(SPLITS))
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else ROUNDS)
    jobs = [(s, r, a, rule, seed, rounds, args.empire_epsilon) for seed in seeds_of(args) for s in splits
            for r in rates for a in args.attacks or ATTACKS for rule in args.rules or RULES]
    # The slow two-phase runs first, so the pool does not end on one of them.
    jobs.sort(key=lambda job: job[3] not in TWO_PHASE)
    rows: list[dict] = []
    start = time.perf_counter()
    with progress_bar(f"Table 1 ({len(jobs)} runs, {args.workers} workers)", total=len(jobs)) as advance:
        if args.workers == 1:
            for job in jobs:
                rows.append(run_one(*job))
                advance()
        else:
            # Fresh interpreters (spawn) with one BLAS thread each: a forked OpenBLAS pool oversubscribes the cores.
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=args.workers, mp_context=context, initializer=_one_blas_thread) as pool:
                for row in pool.map(run_one, *zip(*jobs)):
                    rows.append(row)
                    advance()
    order = {k: i for i, k in enumerate(RULES)}
    rows.sort(key=lambda r: (r["seed"], r["split"], r["rate"], list(ATTACKS).index(r["attack"]), order[r["rule"]]))
    return rows, time.perf_counter() - start


def seeds_of(args) -> list[int]:
    """One seed by default: the grid is 360 runs; ``--seeds`` adds more."""
    return seeds(args) if args.seeds is not None else [0]


def table(rows: Sequence[dict], split: str, rate: float) -> dict[str, dict[str, float]]:
    """rule -> attack -> mean accuracy over seeds, plus "Worst" (the minimum over the attacks)."""
    out: dict[str, dict[str, float]] = {}
    for rule in RULES:
        cells = {}
        for attack in ATTACKS:
            acc = [r["accuracy"] for r in rows if (r["split"], r["rate"], r["attack"], r["rule"]) == (split, rate, attack, rule)]
            if acc:
                cells[attack] = float(np.mean(acc))
        if cells:
            out[rule] = {**cells, "Worst": min(cells.values())}
    return out


def worst_gap(t: dict[str, dict[str, float]], others: Sequence[str]) -> float:
    """min over the two-phase rules of their worst case, minus the max over ``others`` of theirs (nan: none ran)."""
    two, rest = [t[r]["Worst"] for r in TWO_PHASE if r in t], [t[r]["Worst"] for r in others if r in t]
    return min(two) - max(rest) if two and rest else float("nan")


def empire_mechanism(epsilon: float, seed: int = 0, rate: float = 0.4) -> dict[str, float]:
    """What Empire does to one round's aggregates, measured on honest full-batch gradients at the initial model.

    Uniform split of ``seed``; the corrupted set as in training.  Each value is the
    aggregate's component along the honest mean, as a multiple of it: 1 is the
    honest mean, 0 no progress, below 0 a step uphill.
    """
    data = federation("uniform", seed)
    rng = np.random.default_rng(seed)
    w = MODEL.init_params(rng)
    grads = np.stack([MODEL.grad(w, *data.client(i)) for i in range(N_CLIENTS)])
    bad = choose_corrupted(np.ones(N_CLIENTS, dtype=np.int64), rate, rng)
    sent = corrupt_updates("empire", grads, None, bad, rng, epsilon=epsilon)
    honest = grads[~bad].mean(axis=0)
    f = corrupted_count(rate)
    rules = {"Avg": Mean(), "Inner (CenterwO)": CenterWithOutliers(f=f), "Outer": Cent2P(f=f)}
    aggregates = {k: (r.candidates(sent)[1] if isinstance(r, TwoPhaseRule) else r(sent)) for k, r in rules.items()}
    return {k: float(a @ honest / (honest @ honest)) for k, a in aggregates.items()}


def heatmap(rows: Sequence[dict], panels: Sequence[tuple[str, float]], out) -> None:
    columns = list(dict.fromkeys(r["attack"] for r in rows)) + ["Worst"]
    cols = min(3, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5.2 * cols, 4.6 * nrows), squeeze=False)
    for ax, (split, rate) in zip(axes.flat, panels):
        t = table(rows, split, rate)
        labels = list(t)
        values = np.array([[t[r][c] for c in columns] for r in labels])
        image = ax.imshow(values, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        for i in range(len(labels)):
            for j in range(len(columns)):
                ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="black" if values[i, j] > 0.55 else "white")
        ax.set_xticks(range(len(columns)), columns, fontsize=8)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.axvline(len(columns) - 1.5, color="white", linewidth=2)
        ax.set_title(f"{split}, adversarial rate {rate:g} (f = {corrupted_count(rate)} of {N_CLIENTS})", fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.05, pad=0.03, label="final test accuracy")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle("Table 1 on digits: RASHB one-phase rules vs 2PRASHB (Cent2P, Mean2P)", fontsize=10)
    save_figure(fig, out)


def _markdown(t: dict[str, dict[str, float]]) -> list[str]:
    columns = [c for c in list(ATTACKS) + ["Worst"] if c in next(iter(t.values()))]
    lines = ["| rule | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for rule, cells in t.items():
        lines.append(f"| {rule} | " + " | ".join(f"{cells[c]:.2f}" for c in columns) + " |")
    return lines


def summary_lines(rows: Sequence[dict], panels: Sequence[tuple[str, float]], seconds: float, epsilon: float) -> list[str]:
    run_seeds = sorted({r["seed"] for r in rows})
    rounds = rows[0]["rounds"]
    attacks = list(dict.fromkeys(r["attack"] for r in rows))
    lines = [
        f"Digits (sklearn 8x8, 10 classes) over {N_CLIENTS} clients, all of them in every round; RASHB with "
        f"beta = {MOMENTUM}, lr = {LR}, batch {BATCH_SIZE}, {rounds} rounds, multinomial logistic regression; "
        f"two-phase votes on fresh batches of {VOTE_BATCH_SIZE} rows, corrupted clients vote for the worse "
        f"candidate. Empire epsilon = {epsilon:g}. Seeds {run_seeds}; {len(rows)} runs in {seconds:.0f} s. Final "
        f"test accuracy, mean over seeds; the worst column is over the attacks run ({', '.join(attacks)}). "
        "PGA is not run.",
        "",
    ]
    for split, rate in panels:
        t = table(rows, split, rate)
        lines += [f"## {split}, adversarial rate {rate:g} (f = {corrupted_count(rate)})", ""] + _markdown(t) + [""]
        lines.append(
            f"Worst-case gap (the lower two-phase worst minus the best other worst): against every one-phase rule "
            f"{worst_gap(t, [r for r in RULES if r not in TWO_PHASE]):+.2f}; against the paper's baselines "
            f"(Avg, GM, CClip, CWM, CWTM, Krum) {worst_gap(t, PAPER_BASELINES):+.2f}."
        )
        two = [r for r in rows if (r["split"], r["rate"]) == (split, rate) and r["rule"] in TWO_PHASE]
        if two:
            share = {a: np.mean([r["outer_win_share"] for r in two if r["attack"] == a]) for a in attacks}
            lines.append(
                "Share of rounds Outer won (two-phase rules, mean): "
                + ", ".join(f"{a} {share[a]:.2f}" for a in attacks) + "."
            )
        lines.append("")
    lines += [
        "## What Empire does to Inner and Outer (one round, measured)",
        "",
        "Honest full-batch gradients of the 35 clients at the initial model (uniform split, seed 0, rate 0.4: "
        "14 send minus epsilon times the honest mean). The aggregate's component along the honest mean, as a "
        "multiple of it (1: the honest mean; below 0: a step uphill):",
        "",
        "| epsilon | Avg | Inner (CenterwO) | Outer |",
        "|---:|---:|---:|---:|",
    ]
    for eps in sorted({EMPIRE_EPSILON, epsilon, 0.5, 1.0}):
        m = empire_mechanism(eps)
        lines.append(f"| {eps:g} | {m['Avg']:.2f} | {m['Inner (CenterwO)']:.2f} | {m['Outer']:.2f} |")
    lines += [
        "",
        "Outer returns the honest mean exactly at every epsilon: the 14 identical Empire vectors are the "
        "tightest 14-point cluster. Inner's step, where it is below 1, has taken Empire vectors in (at a small "
        "epsilon they sit inside the honest spread, near 0) but stays downhill, so Cent1P / Mean1P train more "
        "slowly instead of diverging; at a large epsilon the Empire vectors lie outside the honest cluster and "
        "Inner drops them. On this convex task no attack here turns Inner's step uphill, which bounds what the "
        "vote can add over Cent1P / Mean1P.",
        "",
    ]
    paper = {r: dict(zip(list(ATTACKS) + ["Worst"], v)) for r, v in PAPER_TABLE1.items()}
    lines += [
        "## The paper's Table 1 (FEMNIST, CNN, 1500 rounds; uniform sampling, rate 0.4)",
        "",
        *_markdown(paper),
        "",
        f"Paper: Cent2P worst {paper['Cent2P']['Worst']:.2f}, Mean2P {paper['Mean2P']['Worst']:.2f}, every other "
        f"rule at most {max(paper[r]['Worst'] for r in PAPER_BASELINES):.2f}; gap "
        f"{worst_gap(paper, PAPER_BASELINES):+.2f}. The paper's table has no Cent1P / Mean1P rows. Its dataset "
        "(FEMNIST, 62 classes), model (a CNN) and length (1500 rounds, momentum 0.99, lr 0.1) differ from ours, so "
        "the numbers are not comparable; the pattern (which attacks break which rules, and the worst-case gap) is.",
    ]
    return lines


def _choices(known: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = [x for x in text.split(",") if x]
        unknown = [x for x in names if x not in known]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"unknown {unknown}; known: {', '.join(known)}")
        return names

    return parse


def _rates(text: str) -> list[float]:
    rates = [float(x) for x in text.split(",") if x]
    if not rates or not all(0 < r < 0.5 for r in rates):
        raise argparse.ArgumentTypeError("rates must lie in (0, 0.5)")
    return rates


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(NAME, "Table 1 of Yi et al. on digits: RASHB one-phase rules against the two-phase Cent2P / Mean2P.")
    p.add_argument("--workers", type=int, default=1, help="parallel training processes")
    p.add_argument("--rounds", type=int, default=None, help=f"training rounds (default: {ROUNDS}; quick: {QUICK_ROUNDS})")
    p.add_argument("--empire-epsilon", type=float, default=EMPIRE_EPSILON, help="Empire's epsilon")
    p.add_argument("--splits", type=_choices(SPLITS), default=None, help="comma-separated subset of: " + ",".join(SPLITS))
    p.add_argument("--rates", type=_rates, default=None, help="comma-separated adversarial rates in (0, 0.5)")
    p.add_argument("--attacks", type=_choices(ATTACKS), default=None, help="subset of: " + ",".join(ATTACKS))
    p.add_argument("--rules", type=_choices(RULES), default=None, help="subset of: " + ",".join(RULES))
    args = p.parse_args(argv)
    if args.workers < 1:
        p.error("--workers must be at least 1")
    if args.rounds is not None and args.rounds < 1:
        p.error("--rounds must be at least 1")
    # With --json, stdout carries the JSON alone: the progress bar goes to stderr.
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        rows, seconds = grid(args)
    out = args.out
    write_csv(out / f"{NAME}.csv", rows)
    panels = [(s, r) for s in dict.fromkeys(r["split"] for r in rows) for r in sorted({r["rate"] for r in rows})]
    heatmap(rows, panels, out / "table1_heatmap.png")
    write_summary(out / "summary.md", "Table 1: two-phase voting against one-phase rules",
                  summary_lines(rows, panels, seconds, args.empire_epsilon))
    if not args.json:  # with --json, stdout carries the common JSON report (every CSV row) alone
        print((out / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    entry_point(NAME, main)
