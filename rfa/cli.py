"""Command line: ``rfa demo``, the teaching demo of private and robust aggregation.

A short federated run on the handwritten digits: a quarter of the clients
(by weight) send the omniscient corruption, and FedAvg, RFA and one-step RFA
each aggregate through real secure aggregation (every average is a secagg
session).  The same three methods also run without corruption, so the table
shows how much of its clean accuracy each keeps.  Plots and a CSV go to
``--out`` (created and checked before training starts); ``--json`` prints the
table as JSON on stdout.  ``--epsilon E`` adds differential privacy inside
secure aggregation (``rfa.dp``): each method's noise is calibrated so that its
whole run spends at most E at ``--delta``, and the table (key ``epsilon``)
reports what it spent.  Exit codes as for ``secagg`` (``secagg.cli_support``):
0 done, 2 a flag's value refused (also a privacy bound nothing can certify),
130 Ctrl-C, 141 closed pipe.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from secagg import SecAggError, SecureAverageOracle, __version__
from secagg.cli_support import OK, USAGE, Console, HelpFormatter, float_in, int_at_least, run_main, writable_dir

from . import plot_style
from .aggregators import Aggregator, GeometricMedianRule, Mean, OneStepRule
from .data import FederatedDataset, digits
from .errors import RFAError
from .models import LogisticRegression
from .privacy import weight_floor
from .training import TrainingConfig, TrainingResult, train

METHODS = {"fedavg": ("FedAvg", Mean()), "rfa": ("RFA", GeometricMedianRule(rounds=3)), "one_step_rfa": ("one-step RFA", OneStepRule())}


class _Recorded:
    """A rule that remembers the public privacy parameters of every secure call it made."""

    def __init__(self, rule: Aggregator):
        self.rule = rule
        self.nus: set[float] = set()
        self.floors: set[float] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.rule, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.rule(*args, **kwargs)

    def secure(self, *args: Any, **kwargs: Any) -> Any:
        result = self.rule.secure(*args, **kwargs)
        policy = result.policy
        if policy.nu is not None:
            self.nus.add(float(policy.nu))
        self.floors.add(float(weight_floor(policy.alpha_min, policy.alpha_max, result.threshold)))
        return result


def _dataset(args: argparse.Namespace) -> FederatedDataset:
    return digits(args.clients, split="dirichlet", alpha=0.5, rng=np.random.default_rng(args.seed))


def _check_max_weight(args: argparse.Namespace, dataset: FederatedDataset) -> None:
    """Refuse a bound no aggregation of --per-round clients can certify, before any progress bar starts."""
    if args.max_weight is None:
        return
    counts = dataset.sample_counts
    t = SecureAverageOracle(TrainingConfig.threshold).threshold_for(args.per_round)
    floor = weight_floor(float(counts.min()), float(counts.max()), t)
    if not args.max_weight > floor:
        args.parser.error(f"argument --max-weight: must exceed {floor:.3g}, the weight floor of {args.per_round} "
                          f"clients per round (no nu certifies less), got {args.max_weight:g}")


def _run_all(args: argparse.Namespace, dataset: FederatedDataset, progress
             ) -> tuple[dict[tuple[str, float], TrainingResult], dict[str, _Recorded]]:
    model = LogisticRegression(dataset.client_X[0].shape[1], dataset.n_classes)
    results = {}
    recorded = {key: _Recorded(rule) for key, (_, rule) in METHODS.items()}
    args.spent = {}  # (method, rho) -> (epsilon spent, noise multiplier), with --epsilon
    for rho in (0.0, args.rho):
        for key, rule in recorded.items():
            config = TrainingConfig(
                rounds=args.rounds,
                clients_per_round=args.per_round,
                local_steps=10,
                lr=0.5,
                update_corruption=args.attack if rho > 0 else None,
                rho=rho,
                secure=True,
                transport=args.transport,
                norm_bound=args.norm_bound,
                max_weight=args.max_weight,
                nu="auto" if args.max_weight is not None and key != "fedavg" else None,
                seed=args.seed,
            )
            dp = None
            if args.epsilon is not None:
                from .dp import RobustDP  # dp-accounting takes seconds to import: only when asked for

                dp = RobustDP(epsilon=args.epsilon, delta=args.delta)
            results[key, rho] = train(model, dataset, rule, config, progress=progress(f"{key} rho={rho:g}"), dp=dp)  # type: ignore[arg-type]
            if dp is not None:
                args.spent[key, rho] = (dp.spent(), dp.noise_multiplier)
    return results, recorded


def _rows(results: dict[tuple[str, float], TrainingResult], recorded: dict[str, _Recorded], rho: float,
          args: argparse.Namespace) -> list[dict]:
    rows = []
    for key in METHODS:
        run, clean = results[key, rho], results[key, 0.0]
        history = run.history
        nus = recorded[key].nus
        rows.append(
            {
                "method": key,
                "accuracy": float(run.final.accuracy),
                "clean_accuracy": float(clean.final.accuracy),
                "oracle_calls": int(run.final.oracle_calls),
                "bytes_per_client": float(np.mean([r.bytes_per_client for r in history])),
                "max_effective_weight": float(max(r.max_effective_weight for r in history)),
                "max_certified_weight": float(max(r.certified_weight for r in history)),
                # The smoothing the secure steps used (None for the mean), and the certificate no nu can beat.
                "nu": (max(nus) if len(nus) == 1 else sorted(nus)) if nus else None,
                "weight_floor": float(max(recorded[key].floors)),
                # --epsilon: what the run under corruption spent at --delta (the clean run spends the same).
                "epsilon": args.spent[key, rho][0] if (key, rho) in args.spent else None,
                "noise_multiplier": args.spent[key, rho][1] if (key, rho) in args.spent else None,
            }
        )
    return rows


def _plots(results: dict[tuple[str, float], TrainingResult], args: argparse.Namespace) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for x_field, name, label in (("round", "accuracy_vs_rounds.png", "outer rounds"),
                                 ("oracle_calls", "accuracy_vs_oracle_calls.png", "calls to the secure average oracle")):
        fig, ax = plt.subplots(figsize=(8.0, 4.2))
        for key, (title, _) in METHODS.items():
            for r, style in ((0.0, ":"), (args.rho, "-")):
                history = results[key, r].history
                what = "no corruption" if r == 0 else f"rho = {r:g}"
                ax.plot([getattr(h, x_field) for h in history], [h.accuracy for h in history], style,
                        label=f"{title}, {what}", color=plot_style.color(title))
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy")
        plot_style.percent_axis(ax)
        ax.set_title(f"Digits, secure aggregation: solid {args.rho:.0%} {args.attack} (by weight), dotted clean")
        plot_style.legend(ax)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = args.out / name
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def _table(rows: list[dict], args: argparse.Namespace):
    from rich.table import Table

    table = Table(title=f"{args.rho:.0%} {args.attack} by weight; {args.rounds} rounds, {args.per_round} of "
                        f"{args.clients} clients each, all through secure aggregation")
    dp = args.epsilon is not None
    for col in ("method", "acc.", "clean", "calls", "KiB/cl.", "max w", "cert. w", "nu") + (("eps", "z") if dp else ()):
        table.add_column(col, justify="left" if col == "method" else "right", no_wrap=True)
    for row in rows:
        nu = row["nu"]
        table.add_row(METHODS[row["method"]][0], f"{row['accuracy']:.1%}", f"{row['clean_accuracy']:.1%}",
                      str(row["oracle_calls"]), f"{row['bytes_per_client'] / 1024:,.1f}",
                      f"{row['max_effective_weight']:.3f}", f"{row['max_certified_weight']:.3g}",
                      "-" if nu is None else (f"{nu:.3g}" if isinstance(nu, float) else "varies"),
                      *((f"{row['epsilon']:.3g}", f"{row['noise_multiplier']:.3g}") if dp else ()))
    return table


def cmd_demo(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=args.json)
    start = time.perf_counter()
    dataset = _dataset(args)
    _check_max_weight(args, dataset)
    try:
        # Progress on stderr: stdout carries only the results.
        with Progress(TextColumn("{task.description:>22}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=Console(stderr=True), disable=args.json or args.quiet) as bars:

            def progress(label: str):
                task = bars.add_task(label, total=args.rounds)
                return lambda _round: bars.advance(task)

            results, recorded = _run_all(args, dataset, progress)
    except (SecAggError, RFAError) as exc:
        print(f"rfa demo: {exc}", file=sys.stderr)
        return USAGE
    rows = _rows(results, recorded, args.rho, args)
    with (args.out / "demo.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plots = _plots(results, args)
    if args.json:
        print(json.dumps(rows, indent=2))
        return OK
    console.print(_table(rows, args))
    if not args.quiet:
        console.print(
            "acc.: the global model on held-out digits, under corruption; clean: the same run without it. "
            "calls: to the secure average oracle. KiB/cl.: bytes a participating client sent and received per "
            "round. max w: the largest beta_i / sum beta_j any call revealed; cert. w: the bound checked before "
            "each call (1 means none: try --max-weight; no bound below "
            f"{max(r['weight_floor'] for r in rows):.3g}, the weight floor, can be certified); "
            "nu: the smoothing RFA used."
            + (f" eps: the run's epsilon at delta = {args.delta:g} (distributed discrete Gaussian inside secure "
               "aggregation, every client counted once); z: its noise multiplier." if args.epsilon is not None else "")
        )
        console.print(f"plots and CSV in {args.out}/: " + ", ".join(p.name for p in plots)
                      + f"  ({time.perf_counter() - start:.0f} s)")
    return OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rfa", description="Robust Federated Aggregation", formatter_class=HelpFormatter,
                                     epilog="exit codes: 0 done, 2 bad flag value, 130 interrupted, 141 stdout closed")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    helptext = "FedAvg vs RFA vs one-step RFA under corruption, through secure aggregation"
    demo = sub.add_parser("demo", help=helptext, description=helptext, formatter_class=HelpFormatter)
    demo.add_argument("--clients", type=int_at_least(2), default=40, help="clients holding the digits (Dirichlet split)")
    demo.add_argument("--per-round", type=int_at_least(2), default=10, help="clients sampled per round, at most --clients")
    demo.add_argument("--rounds", type=int_at_least(1), default=30, help="outer rounds of federated training")
    demo.add_argument("--rho", type=float_in(0, 1, low_open=True, high_open=True), default=0.25,
                      help="corrupted fraction of the clients, by weight, in (0, 1)")
    demo.add_argument("--attack", default="omniscient", choices=["omniscient", "gaussian", "sign_flip", "ipm", "alie"],
                      help="what the corrupted clients send")
    demo.add_argument("--norm-bound", type=float_in(0, low_open=True), default=100.0,
                      help="public bound C on update norms")
    demo.add_argument("--max-weight", type=float_in(0, 1, low_open=True), default=None,
                      help="enforce this privacy-weight bound s in (0, 1] (RFA's nu is then chosen to certify it; "
                           "default: none)")
    demo.add_argument("--epsilon", type=float_in(0, low_open=True), default=None,
                      help="differential privacy: the whole run's target epsilon (at --delta) per method; noise is "
                           "added inside secure aggregation (default: no DP)")
    demo.add_argument("--delta", type=float_in(0, 1, low_open=True, high_open=True), default=1e-5,
                      help="the delta of --epsilon")
    demo.add_argument("--transport", choices=["memory", "tcp"], default="memory", help="secure aggregation transport")
    demo.add_argument("--seed", type=int, default=0, help="seed of the data split, sampling and corruption")
    demo.add_argument("--out", type=Path, default=Path("out") / "demo", help="folder for the CSV and the plots")
    demo.add_argument("--json", action="store_true", help="print the table as JSON on stdout")
    demo.add_argument("--quiet", action="store_true", help="no progress bars or notes, only the table")
    demo.set_defaults(func=cmd_demo, parser=demo)
    return parser


def _main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.per_round > args.clients:
        args.parser.error(f"argument --per-round: must be at most --clients={args.clients}, got {args.per_round}")
    writable_dir(args.parser, "--out", args.out)  # before training, not after it
    return args.func(args)


def main(argv: list[str] | None = None) -> int:
    """The ``rfa`` command; see ``--help``."""
    return run_main("rfa", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
