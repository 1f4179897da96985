"""Table 1 of Yi et al. (AAAI 2024) on digits: one-phase rules against the two-phase rules Cent2P / Mean2P.

    python3 -m sims.table1_two_phase            # MLP, 5 seeds, rates 0.1/0.2/0.4, uniform split, 2 workers
    python3 -m sims.table1_two_phase --quick    # MLP, rate 0.4, 1 seed, 100 rounds (used by the tests)
    python3 -m sims.table1_two_phase --model logreg   # the earlier convex setting (lr 0.5, beta 0.9, votes on 32 rows)
    python3 -m sims.table1_two_phase --splits uniform,dirichlet   # add Dirichlet(0.1) label skew
    python3 -m sims.table1_two_phase --json     # print the run's report (every CSV row) as JSON on stdout

Setup.  scikit-learn's 8x8 digits (20% held out for testing) over n = 35
clients, split uniformly ("uniform", i.i.d., the paper's Table 1) or with
Dirichlet(0.1) label skew ("dirichlet").  Every round all 35 clients take part
(as in the paper).  Training is RASHB (Algorithm 1): each client computes one
stochastic gradient on a batch of 3 rows (the paper's batch size), keeps the
momentum m <- beta m + (1 - beta) g and sends it; the server steps
theta <- theta - lr R with R the rule's aggregate.  Cent2P and Mean2P run
2PRASHB (Algorithm 3): the server proposes the Inner and the Outer model,
every client votes on a fresh mini-batch of its own rows, the corrupted ones
for the candidate with the larger loss on their unpoisoned rows.  Both
algorithms return the average of the iterates theta_0 .. theta_{T-1} (line 11
of Algorithm 1, line 12 of Algorithm 3): that is the reported accuracy; the
last iterate's is reported beside it, labelled.

Models (``--model``): ``mlp`` (default; non-convex: one tanh hidden layer of 32
units, 2410 parameters) with the paper's optimizer, lr 0.1, momentum 0.99,
vote mini-batch 3; ``logreg``, multinomial logistic regression (convex) with
the earlier lr 0.5, momentum 0.9, votes on 32 rows.  The paper trains a
two-layer CNN on FEMNIST (62 classes) for 1500 rounds; we run 300 (the full
grid has to fit in 15 minutes on 2 cores).

Adversarial rates 0.1, 0.2, 0.4: exactly 3, 7, 14 of the 35 clients are
corrupted (by count, as in the paper), and every rule that takes f is told that
number.  Attacks, each as the paper's cited source defines it: LF (label flip
y -> 9 - y, static data poisoning), SF (minus the own momentum), Gauss (own
momentum plus Gaussian noise of its own variance, as in RFA, on which the
paper's code is based), Omn (Blanchard et al.: all corrupted clients send the
vector that makes the mean minus the mean without corruption), Empire (Xie et
al.: minus epsilon = 0.1 times the honest mean), SV (Baruch et al.: honest mean
minus z_max honest standard deviations per coordinate, z_max for 35 clients of
which f corrupted).  PGA is not included.

Rules: Avg (mean), GM (one Weiszfeld step from the mean, as the paper), CClip
(centred clipping from v = 0, tau = 0.215771 as the paper, 3 iterations), CWM
(coordinate median), CWTM (trimmed mean, f/n per side), Krum (f), Cent1P /
Mean1P (CenterwO / MeanwO with f outliers, Algorithm 2), Cent2P / Mean2P.

The vote's gain: per seed, a rule's worst case is its minimum accuracy over
the six attacks; the gain of Cent2P over Cent1P (Mean2P over Mean1P: the same
clustering without the vote) and over every baseline is the difference of
worst cases, reported as mean, standard deviation, minimum and maximum over
seeds; per attack too.

Output (in ``--out``, default ``out/table1_two_phase``): ``table1_two_phase.csv``
(one row per model x split x rate x attack x rule x seed: averaged- and
last-iterate test accuracy, and for the two-phase rules how often Outer won),
``table1_heatmap.png`` and ``summary.md`` (the settings beside the paper's,
every table, the gains, and the paper's Table 1).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import sys
import time
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
from rfa.models import MLP, ClassificationModel, LogisticRegression
from rfa.training import TrainingConfig, train
from sims.common import entry_point, parser, plt, pooled, save_figure, seeds, write_csv, write_summary

NAME = "table1_two_phase"
N_CLIENTS = 35
RATES = (0.1, 0.2, 0.4)
QUICK_RATES = (0.4,)
SPLITS = {"uniform": dict(split="iid"), "dirichlet": dict(split="dirichlet", alpha=0.1)}
DEFAULT_SPLITS = ("uniform",)  # the paper's Table 1
SEED_COUNTS = (5, 1)  # the paper's 5 seeds; quick 1
BATCH_SIZE = 3  # the paper's
CCLIP_TAU = 0.215771  # the paper's
EMPIRE_EPSILON = 0.1
HIDDEN = 32


@dataclass(frozen=True)
class Setting:
    """A model and the optimizer it trains with."""

    model: ClassificationModel
    lr: float
    momentum: float
    vote_batch_size: int
    rounds: int
    quick_rounds: int
    describe: str


MODELS = {
    # The paper's optimizer (lr 0.1, momentum 0.99, vote mini-batch = batch size 3) on a non-convex model.
    "mlp": Setting(MLP(64, HIDDEN, 10), 0.1, 0.99, 3, 300, 100, f"MLP 64-{HIDDEN}-10 (tanh), non-convex"),
    "logreg": Setting(LogisticRegression(64, 10), 0.5, 0.9, 32, 200, 30, "multinomial logistic regression, convex"),
}
PAPER_SETTING = {
    "data": "FEMNIST (62 classes, 5% sample)", "model": "CNN, two convolutional layers", "rounds": "1500",
    "lr": "0.1", "momentum": "0.99", "batch": "3", "vote batch": "3 (\"a new mini-batch\")", "seeds": "5",
    "rates": "0.1, 0.2, 0.4 (3, 7, 14 of 35)", "returned model": "average of the iterates",
}


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
WITHOUT_VOTE = {"Cent2P": "Cent1P", "Mean2P": "Mean1P"}  # the same Inner rule, no vote
PAPER_BASELINES = ("Avg", "GM", "CClip", "CWM", "CWTM", "Krum")  # the one-phase rows of the paper's Table 1
METRICS = {"accuracy": "averaged iterate (Algorithms 1 and 3)", "accuracy_last": "last iterate"}

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
    model_name: str, split: str, rate: float, attack: str, rule_label: str, seed: int, rounds: int, epsilon: float
) -> dict[str, Any]:
    """One training run; the row of the CSV.  Single-threaded BLAS: the runs themselves go in parallel."""
    with threadpool_limits(1):
        start = time.perf_counter()
        setting = MODELS[model_name]
        model = setting.model
        data = federation(split, seed)
        f = corrupted_count(rate)
        rule = RULES[rule_label](f, model.n_params)
        spec = ATTACKS[attack]
        params = {"epsilon": epsilon} if attack == "Empire" else spec.params
        config = TrainingConfig(
            rounds=rounds,
            clients_per_round=N_CLIENTS,
            local_steps=1,
            lr=setting.lr,
            batch_size=BATCH_SIZE,
            momentum=setting.momentum,
            rho=rate,
            corrupted_by="count",
            vote_batch_size=setting.vote_batch_size,
            eval_every=rounds,
            seed=seed,
            corruption_params=params,
            **{f"{spec.kind}_corruption": spec.corruption},
        )
        result = train(model, data, rule, config)
        assert result.average is not None
        row: dict[str, Any] = dict(
            model=model_name, split=split, rate=rate, attack=attack, rule=rule_label, seed=seed, f=f,
            corrupted=int(result.corrupted.sum()), rounds=rounds,
            accuracy=model.accuracy(result.average, data.X_test, data.y_test),
            accuracy_last=result.final.accuracy, test_loss_last=result.final.test_loss,
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


def grid(args) -> tuple[list[dict], float]:
    rates = args.rates or (QUICK_RATES if args.quick else RATES)
    splits = args.splits or DEFAULT_SPLITS
    setting = MODELS[args.model]
    rounds = args.rounds or (setting.quick_rounds if args.quick else setting.rounds)
    jobs = [(args.model, s, r, a, rule, seed, rounds, args.empire_epsilon) for seed in seeds(args) for s in splits
            for r in rates for a in args.attacks or ATTACKS for rule in args.rules or RULES]
    # The slow two-phase runs first, so the pool does not end on one of them.
    jobs.sort(key=lambda job: job[4] not in TWO_PHASE)
    start = time.perf_counter()
    workers = min(args.workers, len(jobs))
    rows: list[dict] = pooled(run_one, jobs, workers, f"Table 1 ({len(jobs)} runs, {workers} workers)", chunksize=4)
    order = {k: i for i, k in enumerate(RULES)}
    rows.sort(key=lambda r: (r["seed"], r["split"], r["rate"], list(ATTACKS).index(r["attack"]), order[r["rule"]]))
    return rows, time.perf_counter() - start


def _cells(rows: Sequence[dict], split: str, rate: float, metric: str) -> dict[tuple[str, str, int], float]:
    return {(r["rule"], r["attack"], r["seed"]): r[metric] for r in rows if (r["split"], r["rate"]) == (split, rate)}


def table(rows: Sequence[dict], split: str, rate: float, metric: str = "accuracy") -> dict[str, dict[str, float]]:
    """rule -> attack -> mean accuracy over seeds, plus "Worst" (the mean over seeds of the minimum over attacks)."""
    cells = _cells(rows, split, rate, metric)
    run_seeds = sorted({k[2] for k in cells})
    out: dict[str, dict[str, float]] = {}
    for rule in RULES:
        attacks = [a for a in ATTACKS if (rule, a, run_seeds[0]) in cells] if run_seeds else []
        if attacks:
            per = {a: float(np.mean([cells[rule, a, s] for s in run_seeds])) for a in attacks}
            worst = float(np.mean([min(cells[rule, a, s] for a in attacks) for s in run_seeds]))
            out[rule] = {**per, "Worst": worst}
    return out


@dataclass(frozen=True)
class Gain:
    """A difference of accuracies over seeds."""

    mean: float
    sd: float
    low: float
    high: float
    seeds: int

    def __str__(self) -> str:
        sd = f" ± {self.sd:.2f}" if self.seeds > 1 else ""
        return f"{self.mean:+.2f}{sd} [{self.low:+.2f}, {self.high:+.2f}]"


def _gain(values: Sequence[float]) -> Gain:
    v = np.asarray(values, dtype=float)
    return Gain(float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, float(v.min()), float(v.max()), v.size)


def gains(rows: Sequence[dict], split: str, rate: float, metric: str = "accuracy") -> dict[str, dict[str, Gain]]:
    """two-phase rule -> column -> its gain over seeds.

    Columns: each attack and "Worst" against the same rule without the vote
    (Cent1P / Mean1P), then "vs X" for every one-phase rule X: the
    difference of the per-seed worst cases (so "vs Cent1P" of Cent2P is its "Worst").
    """
    cells = _cells(rows, split, rate, metric)
    run_seeds = sorted({k[2] for k in cells})
    attacks = [a for a in ATTACKS if any(k[1] == a for k in cells)]

    def worst(rule: str, seed: int) -> float:
        return min(cells[rule, a, seed] for a in attacks)

    out: dict[str, dict[str, Gain]] = {}
    for two in TWO_PHASE:
        base = WITHOUT_VOTE[two]
        if not all((r, attacks[0], run_seeds[0]) in cells for r in (two, base)):
            continue
        row = {a: _gain([cells[two, a, s] - cells[base, a, s] for s in run_seeds]) for a in attacks}
        row["Worst"] = _gain([worst(two, s) - worst(base, s) for s in run_seeds])
        for other in RULES:
            if other not in TWO_PHASE and (other, attacks[0], run_seeds[0]) in cells:
                row[f"vs {other}"] = _gain([worst(two, s) - worst(other, s) for s in run_seeds])
        out[two] = row
    return out


def worst_gap(t: dict[str, dict[str, float]], others: Sequence[str]) -> float:
    """min over the two-phase rules of their worst case, minus the max over ``others`` of theirs (nan: none ran)."""
    two, rest = [t[r]["Worst"] for r in TWO_PHASE if r in t], [t[r]["Worst"] for r in others if r in t]
    return min(two) - max(rest) if two and rest else float("nan")


def empire_mechanism(model_name: str, epsilon: float, seed: int = 0, rate: float = 0.4) -> dict[str, float]:
    """What Empire does to one round's aggregates, measured on honest full-batch gradients at the initial model.

    Uniform split of ``seed``; the corrupted set as in training.  Each value is the
    aggregate's component along the honest mean, as a multiple of it: 1 is the
    honest mean, 0 no progress, below 0 a step uphill.
    """
    model = MODELS[model_name].model
    data = federation("uniform", seed)
    rng = np.random.default_rng(seed)
    w = model.init_params(rng)
    grads = np.stack([model.grad(w, *data.client(i)) for i in range(N_CLIENTS)])
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
        fig.colorbar(image, ax=ax, fraction=0.05, pad=0.03, label="test accuracy, averaged iterate")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"Table 1 on digits ({rows[0]['model']}): RASHB one-phase rules vs 2PRASHB (Cent2P, Mean2P)",
                 fontsize=10)
    save_figure(fig, out)


def _markdown(t: dict[str, dict[str, float]]) -> list[str]:
    columns = [c for c in list(ATTACKS) + ["Worst"] if c in next(iter(t.values()))]
    lines = ["| rule | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for rule, cells in t.items():
        lines.append(f"| {rule} | " + " | ".join(f"{cells[c]:.2f}" for c in columns) + " |")
    return lines


def _gain_markdown(g: dict[str, dict[str, Gain]]) -> list[str]:
    columns = list(next(iter(g.values())))
    lines = ["| gain of | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for two, row in g.items():
        lines.append(f"| {two} | " + " | ".join(str(row[c]) for c in columns) + " |")
    return lines


def settings_lines(args, rows: Sequence[dict]) -> list[str]:
    setting = MODELS[args.model]
    ours = {
        "data": f"sklearn digits 8x8 (10 classes), 35 clients, split {', '.join(dict.fromkeys(r['split'] for r in rows))}",
        "model": setting.describe, "rounds": str(rows[0]["rounds"]), "lr": f"{setting.lr:g}",
        "momentum": f"{setting.momentum:g}", "batch": str(BATCH_SIZE), "vote batch": str(setting.vote_batch_size),
        "seeds": str(len({r["seed"] for r in rows})),
        "rates": ", ".join(f"{r:g} ({corrupted_count(r)} of 35)" for r in sorted({r["rate"] for r in rows})),
        "returned model": "average of the iterates (last iterate also reported)",
    }
    lines = ["| setting | paper (Yi et al.) | this run |", "|---|---|---|"]
    lines += [f"| {k} | {PAPER_SETTING[k]} | {ours[k]} |" for k in PAPER_SETTING]
    return lines


def summary_lines(args, rows: Sequence[dict], panels: Sequence[tuple[str, float]], seconds: float) -> list[str]:
    run_seeds = sorted({r["seed"] for r in rows})
    attacks = list(dict.fromkeys(r["attack"] for r in rows))
    lines = [
        f"{len(rows)} runs (seeds {run_seeds}) in {seconds:.0f} s wall, {sum(r['seconds'] for r in rows):.0f} s of "
        f"run time. Test accuracy, mean over seeds; Worst is the mean over seeds of the minimum over the attacks run "
        f"({', '.join(attacks)}). Empire epsilon = {args.empire_epsilon:g}. PGA is not run.",
        "",
        *settings_lines(args, rows),
        "",
    ]
    for split, rate in panels:
        head = f"{split}, adversarial rate {rate:g} (f = {corrupted_count(rate)})"
        for metric, label in METRICS.items():
            lines += [f"## {head}: {label}", ""] + _markdown(table(rows, split, rate, metric)) + [""]
        t = table(rows, split, rate)
        g = gains(rows, split, rate)
        lines.append(
            f"Worst-case gap, averaged iterate (the lower two-phase worst minus the best other worst): against every "
            f"one-phase rule {worst_gap(t, [r for r in RULES if r not in TWO_PHASE]):+.2f}; against the paper's "
            f"baselines (Avg, GM, CClip, CWM, CWTM, Krum) {worst_gap(t, PAPER_BASELINES):+.2f}."
        )
        if g:
            lines += ["", f"The vote's gain ({head}, averaged iterate), mean ± sd [min, max] over {len(run_seeds)} "
                      "seed(s): per attack and Worst against the same rule without the vote (Cent2P - Cent1P, "
                      "Mean2P - Mean1P); 'vs X' is the two-phase worst case minus X's.", ""]
            lines += _gain_markdown(g)
        two = [r for r in rows if (r["split"], r["rate"]) == (split, rate) and r["rule"] in TWO_PHASE]
        if two:
            share = {a: np.mean([r["outer_win_share"] for r in two if r["attack"] == a]) for a in attacks}
            lines += ["", "Share of rounds Outer won (two-phase rules, mean): "
                      + ", ".join(f"{a} {share[a]:.2f}" for a in attacks) + "."]
        lines.append("")
    lines += [
        "## What Empire does to Inner and Outer (one round, measured)",
        "",
        f"Honest full-batch gradients of the 35 clients at the initial {args.model} model (uniform split, seed 0, "
        "rate 0.4: 14 send minus epsilon times the honest mean). The aggregate's component along the honest mean, "
        "as a multiple of it (1: the honest mean; below 0: a step uphill):",
        "",
        "| epsilon | Avg | Inner (CenterwO) | Outer |",
        "|---:|---:|---:|---:|",
    ]
    for eps in sorted({EMPIRE_EPSILON, args.empire_epsilon, 0.5, 1.0}):
        m = empire_mechanism(args.model, eps)
        lines.append(f"| {eps:g} | {m['Avg']:.2f} | {m['Inner (CenterwO)']:.2f} | {m['Outer']:.2f} |")
    paper = {r: dict(zip(list(ATTACKS) + ["Worst"], v)) for r, v in PAPER_TABLE1.items()}
    lines += [
        "",
        "## The paper's Table 1 (FEMNIST, CNN, 1500 rounds; uniform sampling, rate 0.4)",
        "",
        *_markdown(paper),
        "",
        f"Paper: Cent2P worst {paper['Cent2P']['Worst']:.2f}, Mean2P {paper['Mean2P']['Worst']:.2f}, every other "
        f"rule at most {max(paper[r]['Worst'] for r in PAPER_BASELINES):.2f}; gap "
        f"{worst_gap(paper, PAPER_BASELINES):+.2f}. The paper's table has no Cent1P / Mean1P rows, so it does not "
        "measure the vote's gain over the same clustering without it. Dataset, model and length differ (settings "
        "table above): the numbers are not comparable one to one; which attacks break which rules, and the "
        "worst-case gaps, are.",
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
    p = parser(NAME, "Table 1 of Yi et al. on digits: RASHB one-phase rules against the two-phase Cent2P / Mean2P.",
               seed_counts=SEED_COUNTS)
    p.add_argument("--model", choices=tuple(MODELS), default="mlp",
                   help="mlp: non-convex, lr 0.1, momentum 0.99, vote batch 3 (the paper's optimizer); "
                        "logreg: convex, lr 0.5, momentum 0.9, vote batch 32")
    p.add_argument("--workers", type=int, default=2, help="parallel training processes over seeds x configurations")
    p.add_argument("--rounds", type=int, default=None,
                   help="training rounds (default: mlp 300, logreg 200; with --quick 100 and 30)")
    p.add_argument("--empire-epsilon", type=float, default=EMPIRE_EPSILON, help="Empire's epsilon")
    p.add_argument("--splits", type=_choices(SPLITS), default=None,
                   help="comma-separated subset of: " + ",".join(SPLITS) + " (default: uniform, the paper's Table 1)")
    p.add_argument("--rates", type=_rates, default=None, help="comma-separated adversarial rates in (0, 0.5) "
                   "(default: 0.1,0.2,0.4; with --quick 0.4)")
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
                  summary_lines(args, rows, panels, seconds))
    if not args.json:  # with --json, stdout carries the common JSON report (every CSV row) alone
        print((out / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    entry_point(NAME, main)
