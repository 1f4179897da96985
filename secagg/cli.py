"""Command line: ``secagg simulate`` runs one in-memory session and reports it.

The report is what a teacher or an auditor wants to see at a glance: how many
clients completed each round, time and bytes per party, and whether the
server's output equals the plaintext sum of the included inputs.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
from rich.console import Console
from rich.table import Table

from .errors import SecAggError
from .messages import rounds_for
from .rng import SeededRandom, SystemRandom
from .simulation import simulate


def _random_inputs(n: int, dim: int, modulus_bits: int, rng) -> dict[int, np.ndarray]:
    width = 8
    mask = np.uint64((1 << modulus_bits) - 1) if modulus_bits < 64 else np.uint64(2**64 - 1)
    return {u: np.frombuffer(rng.bytes(dim * width), dtype="<u8") & mask for u in range(1, n + 1)}


def _dropout_plan(n: int, rate: float, rounds: list[str], rng) -> dict[str, list[int]]:
    """Each client drops with probability ``rate``, at a round chosen uniformly."""
    plan: dict[str, list[int]] = {}
    for u in range(1, n + 1):
        if int.from_bytes(rng.bytes(4), "big") < rate * 2**32:
            r = rounds[int.from_bytes(rng.bytes(4), "big") % len(rounds)]
            plan.setdefault(r, []).append(u)
    return plan


def cmd_simulate(args: argparse.Namespace) -> int:
    console = Console()
    rng = SeededRandom(args.seed) if args.seed is not None else SystemRandom()
    rounds = [r.value for r in rounds_for(args.malicious)]
    inputs = _random_inputs(args.clients, args.dim, args.modulus_bits, rng.fork("inputs"))
    plan = _dropout_plan(args.clients, args.dropout, rounds, rng.fork("dropouts"))
    if args.dropout_round:
        plan = {args.dropout_round: sorted(u for ids in plan.values() for u in ids)}
    try:
        result = simulate(
            inputs,
            threshold=args.threshold,
            modulus=2**args.modulus_bits,
            dropouts=plan,
            malicious=args.malicious,
            seed=args.seed,
        )
    except SecAggError as exc:
        if args.json:
            print(json.dumps({"aborted": str(exc), "dropouts": plan}))
        else:
            console.print(f"[red]session failed:[/red] {exc}")
        return 2
    expected = np.zeros(args.dim, dtype=np.uint64)
    for u in result.included:
        expected += inputs[u]
    if args.modulus_bits < 64:
        expected &= np.uint64(2**args.modulus_bits - 1)
    correct = bool(np.array_equal(expected, result.total))
    if args.json:
        print(
            json.dumps(
                {
                    "included": list(result.included),
                    "dropouts": plan,
                    "counts": result.counts,
                    "client_seconds": result.client_seconds,
                    "server_seconds": result.server_seconds,
                    "bytes_sent": result.bytes_sent,
                    "bytes_received": result.bytes_received,
                    "correct": correct,
                    "total": [int(v) for v in result.total[: args.json_total]],
                }
            )
        )
        return 0 if correct else 1
    mode = "malicious-server" if args.malicious else "honest-but-curious"
    console.print(
        f"Secure aggregation, {mode} mode: n={args.clients}, t={args.threshold}, d={args.dim}, "
        f"M=2^{args.modulus_bits}, dropout rate {args.dropout:.0%}"
    )
    table = Table(title="Rounds")
    for col in ("round", "clients completed", "dropped here", "client s (all)", "server s"):
        table.add_column(col, justify="right" if col != "round" else "left")
    for r in rounds:
        table.add_row(
            r,
            str(result.counts.get(r, 0)),
            str(len(plan.get(r, []))),
            f"{result.client_seconds.get(r, 0.0):.3f}",
            f"{result.server_seconds.get(r, 0.0):.3f}",
        )
    console.print(table)
    sent = np.array(list(result.bytes_sent.values()))
    recv = np.array(list(result.bytes_received.values()))
    raw = args.dim * result.params.element_bytes
    console.print(
        f"bytes per client: sent mean {sent.mean():,.0f} (max {sent.max():,}), received mean {recv.mean():,.0f}; "
        f"raw input {raw:,} bytes"
    )
    console.print(f"included: {len(result.included)} of {args.clients} clients")
    verdict = "[green]EQUAL[/green]" if correct else "[red]DIFFERENT[/red]"
    console.print(f"server output vs plaintext sum of the included inputs: {verdict}")
    return 0 if correct else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="secagg", description="Bonawitz-style secure aggregation")
    sub = parser.add_subparsers(dest="command", required=True)
    sim = sub.add_parser("simulate", help="run one session in memory with random inputs and dropouts")
    sim.add_argument("--clients", type=int, default=20)
    sim.add_argument("--threshold", type=int, default=None, help="default: 2n/3 + 1")
    sim.add_argument("--dim", type=int, default=1000)
    sim.add_argument("--modulus-bits", type=int, default=32)
    sim.add_argument("--dropout", type=float, default=0.15, help="fraction of clients that drop")
    sim.add_argument("--dropout-round", choices=[r.value for r in rounds_for(True)], default=None)
    sim.add_argument("--malicious", action="store_true", help="malicious-server mode (signatures, consistency check)")
    sim.add_argument("--seed", type=int, default=None, help="reproducible keys and masks (testing only)")
    sim.add_argument("--json", action="store_true", help="print a machine-readable summary")
    sim.add_argument("--json-total", type=int, default=16, help="how many coordinates of the total --json prints")
    sim.set_defaults(func=cmd_simulate)
    args = parser.parse_args(argv)
    if getattr(args, "threshold", 0) is None:
        args.threshold = 2 * args.clients // 3 + 1
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
