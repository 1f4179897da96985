"""The command line: arguments, the grid of configurations, and the runs that print the tables."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from typing import Callable

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

import secagg
import sims.bench_secagg as package
from sims.bench_secagg.breakdown import breakdown_table, masked_input_breakdown, reconstruction_table, unmasking_rows
from sims.bench_secagg.config import (
    BUDGET_SECONDS, DROP_ROUND, DROPOUTS, FULL_D, FULL_N, GOAL_D, GOAL_N, POOL_GOAL_D, POOL_GOAL_N, POOL_GOAL_S,
    QUICK_D, QUICK_N, QUICK_TCP_D, QUICK_TCP_N, TCP_D, TCP_DROPOUTS, TCP_N, Config, estimated_seconds,
)
from sims.bench_secagg.paper import paper_table
from sims.bench_secagg.runs import TRANSPORTS, run_both, run_config, run_speedup
from sims.bench_secagg.tables import (
    WIDTH, loopback_rounds_table, loopback_summary, loopback_table, main_tables, malicious_verdict, rounds_table,
    fmt_d, speedup_table, verdict,
)
from sims.common import Console, HelpFormatter, client_count, positive_int


class ConfigurationBar:
    """The run's progress on stderr: configurations done, moved on within one by each client step of its
    in-memory sessions (simulate's ``progress``, which a client pool still calls here, once per client reply).
    Lines printed on ``err`` meanwhile go above the bar."""

    def __init__(self, err: Console, total: int):
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=err)
        self.task = self.progress.add_task("configurations", total=total)

    def __enter__(self) -> ConfigurationBar:
        self.progress.start()
        return self

    def __exit__(self, kind, *_) -> None:
        if kind is None:
            self.progress.update(self.task, completed=self.progress.tasks[0].total, description="configurations done")
        self.progress.stop()

    def start(self, done: int, cfg: Config, steps: int) -> Callable[[str], None]:
        """Configuration ``done + 1`` begins; the callback for its ``steps`` client steps (0: none reported)."""
        label = f"n={cfg.n} d={fmt_d(cfg.d)} dropout={cfg.dropout:g}"
        self.progress.update(self.task, completed=done, description=label)
        seen = 0

        def step(round_: str) -> None:
            nonlocal seen
            seen += 1
            # Never a whole configuration: only its end moves the count on.
            self.progress.update(self.task, completed=done + min(seen / max(steps, 1), 0.99),
                                 description=f"{label} {round_}")

        return step


def session_steps(cfg: Config, args) -> int:
    """Client steps of one configuration's in-memory sessions: ``repeat`` sessions, each malicious one
    followed by its honest-but-curious twin; none over TCP alone."""
    if args.transport == "tcp":
        return 0
    hbc = dataclasses.replace(cfg, malicious=False).client_steps if cfg.malicious else 0
    return args.repeat * (cfg.client_steps + hbc)


def speedup_main(configs: list[Config], args, out, err) -> int:
    rows = []
    with ConfigurationBar(err, len(configs)) as bar:
        for i, cfg in enumerate(configs, 1):
            head = f"[{i}/{len(configs)}] n={cfg.n} d={cfg.d} dropout={cfg.dropout:g} k={cfg.degree}: serial, then pool"
            bar.start(i - 1, cfg, 0)  # both runs are in fresh processes: the bar moves per configuration
            start = time.perf_counter()
            try:
                row = run_speedup(cfg, args.workers, args.repeat, args.stat, args.seed)
            except secagg.AbortError as exc:
                err.print(f"{head}  [red]aborted: {exc}[/]", soft_wrap=True)
                continue
            rows.append(row)
            err.print(f"{head}  {row['serial_s']:.2f} s vs {row['pool_s']:.2f} s with {row['workers']} workers "
                      f"({time.perf_counter() - start:.1f} s)", soft_wrap=True)
    if not rows:
        out.print("[red]no configuration completed[/]")
        return 2
    for table in speedup_table(rows):
        out.print(table)
    goal = [r for r in rows if (r["n"], r["d"]) == (POOL_GOAL_N, POOL_GOAL_D) and r["dropout"] == 0.1]
    if goal:
        r = goal[0]
        status = "[green]met[/]" if r["pool_s"] < POOL_GOAL_S else "[red]not met[/]"
        out.print(f"goal (sparse n = 10,000, d = 10^4, 10% dropouts under {POOL_GOAL_S:g} s on 2 cores): {status}, "
                  f"{r['pool_s']:.2f} s with {r['workers']} workers on {r['cores']} cores "
                  f"(serial {r['serial_s']:.2f} s)")
    if args.json:
        print(json.dumps(rows, indent=1))
    ok = all(r["correct"] and r["same_session"] for r in rows)
    return 0 if ok else 1


# ---- command line ---------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python3 -m sims.bench_secagg", description=package.__doc__.split("\n")[0], formatter_class=HelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="n in {10, 50}, d in {10^3, 10^4}")
    ap.add_argument("--n", type=client_count, nargs="+", help="client counts (default: 10 50 100; tcp/both: 50 100 200)")
    ap.add_argument(
        "--d", type=_length, nargs="+", help="vector lengths, e.g. 1e5 (tcp/both default: 1e4 1e5)"
    )
    ap.add_argument("--dropout", type=float, nargs="+", help="dropout rates (default: 0 0.1 0.3; tcp/both: 0 0.1)")
    ap.add_argument("--modulus-bits", type=positive_int, default=32, help="M = 2^bits")
    ap.add_argument("--repeat", type=positive_int, default=1, help="runs per configuration")
    ap.add_argument("--stat", choices=("best", "median"), default="median", help="how repeated runs combine")
    ap.add_argument(
        "--transport", choices=sorted(TRANSPORTS) + ["both"], default="memory",
        help="memory (default), tcp (loopback, server in its own process), or both (same sessions, TCP/memory ratio)",
    )
    ap.add_argument(
        "--seed", type=int, default=0,
        help="seed of the random inputs; with tcp/both also of keys, masks and nonces (memory alone: keys from the OS)",
    )
    ap.add_argument(
        "--graph", choices=("complete", "sparse"), default="complete",
        help="complete (Bonawitz et al., default) or sparse (SecAgg+ Harary graph, k and t sized from n)",
    )
    ap.add_argument("--tolerated-dropout", type=float, default=0.1, help="sparse: dropout fraction the graph is sized for")
    ap.add_argument("--tolerated-corrupt", type=float, default=0.05, help="sparse: corrupted fraction the graph is sized for")
    ap.add_argument(
        "--malicious", action="store_true",
        help="malicious-server mode (memory transport): signed keys and the consistency round; on a sparse graph "
        "k is sized for MIN_GROUP honest inputs per sum and every client checks a quorum of n/2 + signatures",
    )
    ap.add_argument(
        "--breakdown", action="store_true",
        help="instead: where all clients' masked_input round goes, per component, against the floor (--n, --d, --graph)",
    )
    ap.add_argument(
        "--liar", action="store_true",
        help="instead: time the server's unmasking round honest vs with one lying responder (--n, one --d)",
    )
    ap.add_argument(
        "--workers", type=positive_int, default=None,
        help="in-memory runs: processes for the clients (default: simulate's choice, one per core from "
        "1,000 clients up; 1: serial)",
    )
    ap.add_argument(
        "--speedup", action="store_true",
        help="instead: each configuration serially and in the client pool (--workers), alternating; prints the "
        "speedup, peak memory and whether both runs were the same session",
    )
    ap.add_argument("--json", action="store_true", help="print the rows as JSON on stdout (the tables go to stderr)")
    args = ap.parse_args(argv)
    if any(not 0 <= p < 1 for p in args.dropout or ()):
        ap.error("argument --dropout: rates must be in [0, 1)")
    if (args.workers is not None or args.speedup) and args.transport != "memory":
        ap.error("arguments --workers and --speedup: only with the memory transport")
    if args.malicious and (args.transport != "memory" or args.liar):
        ap.error("argument --malicious: only with the memory transport and without --liar")
    if args.modulus_bits > 64:
        ap.error(f"argument --modulus-bits: must be at most 64, got {args.modulus_bits}")
    if args.graph == "sparse" and any(p > args.tolerated_dropout for p in args.dropout or ()):
        ap.error("argument --dropout: on a sparse graph every rate must be at most --tolerated-dropout")
    return args


def _length(text: str) -> int:
    """A vector length written as an integer or in e-notation (1e5)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not (value >= 1 and value == int(value)):
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text}")
    return int(value)


def grid(args) -> tuple[list[Config], list[Config]]:
    """The configurations to run, and those skipped as too long (over TCP)."""
    loopback = args.transport != "memory"
    if loopback:
        ns = args.n or (QUICK_TCP_N if args.quick else TCP_N)
        ds = args.d or (QUICK_TCP_D if args.quick else TCP_D)
        ps = args.dropout if args.dropout is not None else TCP_DROPOUTS
    else:
        ns = args.n or (QUICK_N if args.quick else FULL_N)
        ds = args.d or (QUICK_D if args.quick else FULL_D)
        ps = args.dropout if args.dropout is not None else DROPOUTS
    if args.graph == "sparse" and args.dropout is None:
        ps = [p for p in ps if p <= args.tolerated_dropout]
    configs = [
        Config(n, d, p, args.modulus_bits, seeded=loopback, graph=args.graph,
               tolerated_dropout=args.tolerated_dropout, tolerated_corrupt=args.tolerated_corrupt,
               malicious=args.malicious, workers=args.workers)
        for n in ns for d in ds for p in ps
    ]
    # A grid point estimated above the budget is skipped; named explicitly with --n and --d it runs.
    explicit = args.n is not None and args.d is not None
    keep = [c for c in configs if explicit or estimated_seconds(c) <= BUDGET_SECONDS]
    return keep, [c for c in configs if c not in keep]


def console_for(stream) -> Console:
    """The console of the tables: a terminal's own width; a file or pipe (what the docs capture) WIDTH
    columns, which every table fits, rather than rich's 80."""
    return Console(file=stream) if stream.isatty() else Console(file=stream, width=WIDTH)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.breakdown:
        console = console_for(sys.stdout)
        for n in args.n or [GOAL_N]:
            for d in args.d or [GOAL_D]:
                cfg = Config(n, d, 0.0, args.modulus_bits, graph=args.graph, tolerated_dropout=args.tolerated_dropout,
                             tolerated_corrupt=args.tolerated_corrupt)
                console.print(breakdown_table(cfg, *masked_input_breakdown(cfg, args.seed)))
        return 0
    if args.liar:
        d = (args.d or [1000])[0]
        table, ok = reconstruction_table(d, unmasking_rows(args.n or [50, 100, 200], d, args.seed))
        console_for(sys.stdout).print(table)
        return 0 if ok else 1
    configs, skipped = grid(args)
    stream = sys.stderr if args.json else sys.stdout  # with --json, stdout carries the rows alone
    out = console_for(stream)
    err = Console(stderr=True)
    for c in skipped:
        err.print(
            f"[yellow]skipped n={c.n} d={c.d}: estimated {estimated_seconds(c):.0f} s per transport "
            f"(> {BUDGET_SECONDS:g} s); name it with --n and --d to run it[/]"
        )
    for c in configs:
        if estimated_seconds(c) > BUDGET_SECONDS:
            err.print(f"[yellow]n={c.n} d={c.d}: estimated {estimated_seconds(c):.0f} s per transport[/]")
    if args.speedup:
        return speedup_main(configs, args, out, err)
    rows, pairs = [], []
    with ConfigurationBar(err, len(configs)) as bar:
        for i, cfg in enumerate(configs, 1):
            head = f"[{i}/{len(configs)}] n={cfg.n} d={cfg.d} dropout={cfg.dropout:g} k={cfg.degree} t={cfg.threshold}"
            step = bar.start(i - 1, cfg, session_steps(cfg, args))
            start = time.perf_counter()
            try:
                if args.transport == "both":
                    mem, tcp = run_both(cfg, args.repeat, args.stat, args.seed, step)
                    rows += [mem, tcp]
                    pairs.append((mem, tcp))
                    ratio = tcp["wall_s"] / mem["wall_s"]
                    note = f"mem {mem['wall_s']:.2f} s, tcp {tcp['wall_s']:.2f} s, tcp/mem {ratio:.2f}"
                else:
                    row = run_config(cfg, args.transport, args.repeat, args.stat, args.seed, step)
                    rows.append(row)
                    if args.transport == "tcp":
                        pairs.append((None, row))
                        note = f"tcp {row['wall_s']:.2f} s"
                    else:
                        note = f"ratio {row['ratio']:.2f}, session {row['session_ratio']:.2f}, wall {row['wall_s']:.2f} s"
                        if cfg.malicious:
                            note += (f", mal/HbC {row['wall_s'] / row['hbc_wall_s']:.2f} (wall), "
                                     f"{row['cpu_s'] / row['hbc_cpu_s']:.2f} (CPU)")
            except secagg.AbortError as exc:
                err.print(f"{head}  [red]aborted: {exc}[/]", soft_wrap=True)
                continue
            err.print(f"{head}  {note}  ({time.perf_counter() - start:.1f} s)", soft_wrap=True)
    if not rows:
        out.print("[red]no configuration completed[/]")
        return 2
    memory_rows = [r for r in rows if r["transport"] == "memory"]
    if memory_rows:
        for table in main_tables(memory_rows, args):
            out.print(table)
        if args.transport == "memory":
            out.print(rounds_table(memory_rows))
    if pairs:
        for table in loopback_table(pairs, args):
            out.print(table)
        out.print(loopback_rounds_table(pairs))
    out.print(
        f"Dropped clients shared keys, then never sent a masked input (they leave at {DROP_ROUND}); "
        "the server recomputes their pairwise masks with every survivor."
    )
    if memory_rows:
        out.print(verdict(memory_rows))
        if args.malicious:
            out.print(malicious_verdict(memory_rows))
    if pairs:
        table, notes = paper_table(rows)
        out.print(table)
        for line in notes + loopback_summary(pairs):
            out.print(line)
    if args.json:
        print(json.dumps(rows, indent=1))
    ok = all(r["correct"] for r in rows) and all(t.get("same_session", True) for _, t in pairs)
    return 0 if ok else 1
