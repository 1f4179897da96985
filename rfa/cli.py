"""Command line: ``rfa demo``, the teaching demo of private and robust aggregation.

A short federated run on the handwritten digits: a quarter of the clients
(by weight) send the omniscient corruption, and FedAvg, RFA and one-step RFA
each aggregate through real secure aggregation (every average is a secagg
session).  The same three methods also run without corruption, so the table
shows how much of its clean accuracy each keeps.  Plots and a CSV go to
``--out``; ``--json`` prints the table as JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

from secagg import SecAggError

from .aggregators import GeometricMedianRule, Mean, OneStepRule
from .data import digits
from .errors import RFAError
from .models import LogisticRegression
from .training import TrainingConfig, TrainingResult, train

METHODS = {"fedavg": ("FedAvg", Mean()), "rfa": ("RFA", GeometricMedianRule(rounds=3)), "one_step_rfa": ("one-step RFA", OneStepRule())}


def _run_all(args: argparse.Namespace, progress) -> dict[tuple[str, float], TrainingResult]:
    dataset = digits(args.clients, split="dirichlet", alpha=0.5, rng=np.random.default_rng(args.seed))
    model = LogisticRegression(dataset.client_X[0].shape[1], dataset.n_classes)
    results = {}
    for rho in (0.0, args.rho):
        for key, (_, rule) in METHODS.items():
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
            results[key, rho] = train(model, dataset, rule, config, progress=progress(f"{key} rho={rho:g}"))
    return results


def _rows(results: dict[tuple[str, float], TrainingResult], rho: float) -> list[dict]:
    rows = []
    for key in METHODS:
        run, clean = results[key, rho], results[key, 0.0]
        history = run.history
        rows.append(
            {
                "method": key,
                "accuracy": run.final.accuracy,
                "clean_accuracy": clean.final.accuracy,
                "oracle_calls": run.final.oracle_calls,
                "bytes_per_client": float(np.mean([r.bytes_per_client for r in history])),
                "max_effective_weight": float(max(r.max_effective_weight for r in history)),
                "max_certified_weight": float(max(r.certified_weight for r in history)),
            }
        )
    return rows


def _plots(results: dict[tuple[str, float], TrainingResult], rho: float, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for x_field, name, label in (("round", "accuracy_vs_rounds.png", "outer rounds"),
                                 ("oracle_calls", "accuracy_vs_oracle_calls.png", "calls to the secure average oracle")):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for key, (title, _) in METHODS.items():
            for r, style in ((0.0, ":"), (rho, "-")):
                history = results[key, r].history
                ax.plot([getattr(h, x_field) for h in history], [h.accuracy for h in history], style,
                        label=f"{title}, rho={r:g}", color={"fedavg": "C3", "rfa": "C0", "one_step_rfa": "C2"}[key])
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy")
        ax.set_ylim(0, 1)
        ax.set_title(f"Digits, {rho:.0%} of clients omniscient, secure aggregation")
        ax.legend(fontsize=8, loc="lower right")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out / name
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def cmd_demo(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    console = Console(stderr=args.json)
    start = time.perf_counter()
    try:
        with Progress(TextColumn("{task.description:>22}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, disable=args.json) as bars:

            def progress(label: str):
                task = bars.add_task(label, total=args.rounds)
                return lambda _round: bars.advance(task)

            results = _run_all(args, progress)
    except (SecAggError, RFAError, ValueError) as exc:
        console.print(f"[red]rfa demo failed:[/red] {exc}")
        return 2
    rows = _rows(results, args.rho)
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "demo.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plots = _plots(results, args.rho, args.out)
    if args.json:
        keys = ("method", "accuracy", "oracle_calls", "bytes_per_client", "max_effective_weight")
        print(json.dumps([{k: row[k] for k in keys} for row in rows], indent=2))
        return 0
    table = Table(title=f"{args.rho:.0%} of clients send the {args.attack} corruption; {args.rounds} rounds, "
                        f"{args.per_round} of {args.clients} clients per round, all through secure aggregation")
    for col in ("method", "accuracy", "clean", "oracle calls", "KiB/client", "max eff. weight", "certified"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for row in rows:
        table.add_row(METHODS[row["method"]][0], f"{row['accuracy']:.1%}", f"{row['clean_accuracy']:.1%}",
                      str(row["oracle_calls"]), f"{row['bytes_per_client'] / 1024:,.1f}",
                      f"{row['max_effective_weight']:.3f}", f"{row['max_certified_weight']:.3g}")
    console.print(table)
    console.print(
        "accuracy: the global model on held-out digits, under corruption; clean: the same run without it. "
        "max eff. weight: the largest beta_i / sum beta_j any oracle call revealed; certified: the bound "
        "checked before each call (1 means none: try --max-weight)."
    )
    console.print("KiB/client: bytes a participating client sent and received per round.")
    console.print(f"plots and CSV in {args.out}/: " + ", ".join(p.name for p in plots) + f"  ({time.perf_counter() - start:.0f} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rfa", description="Robust Federated Aggregation")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="FedAvg vs RFA vs one-step RFA under corruption, through secure aggregation")
    demo.add_argument("--clients", type=int, default=40, help="clients holding the digits (Dirichlet split)")
    demo.add_argument("--per-round", type=int, default=10, help="clients sampled per round")
    demo.add_argument("--rounds", type=int, default=30)
    demo.add_argument("--rho", type=float, default=0.25, help="corrupted fraction, by weight")
    demo.add_argument("--attack", default="omniscient", choices=["omniscient", "gaussian", "sign_flip", "ipm", "alie"])
    demo.add_argument("--norm-bound", type=float, default=100.0, help="public bound C on update norms")
    demo.add_argument("--max-weight", type=float, default=None,
                      help="enforce this privacy-weight bound s (RFA's nu is then chosen to certify it)")
    demo.add_argument("--transport", choices=["memory", "tcp"], default="memory", help="secure aggregation transport")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", type=Path, default=Path("out") / "demo")
    demo.add_argument("--json", action="store_true", help="print the table as JSON")
    demo.set_defaults(func=cmd_demo)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
