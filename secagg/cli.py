"""Command line: in-memory simulation, and the protocol over loopback TCP.

``simulate`` runs one in-memory session; ``demo`` runs the server and N
clients in one process over real loopback sockets; ``serve`` and ``client``
are the separate processes; ``keygen`` writes the identity-key directory that
plays the PKI in malicious-server mode; ``inspect`` reads a server transcript
back, decodes every frame and replays the session.  The reports are what a
teacher or an auditor wants at a glance: clients per round, time and bytes
per party, and whether the output equals the plaintext sum of the included
inputs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys

import numpy as np
import trio
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .errors import ParameterError, SecAggError
from .framing import loopback_host, parse_address
from .keydir import generate_keys, load_private_key, load_public_keys
from .messages import decode, rounds_for
from .params import PublicParams
from .rng import SeededRandom, SystemRandom
from .simulation import setup_session, simulate
from .tcp import TcpServer, TcpServerResult, leave_at, run_client, run_local_session
from .transcript import read_transcript, replay


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


def _demo_session(args: argparse.Namespace) -> tuple[dict[int, np.ndarray], dict[str, list[int]], list[str]]:
    """Random inputs, a dropout plan and the round names, as ``simulate`` and ``demo`` take them."""
    rng = SeededRandom(args.seed) if args.seed is not None else SystemRandom()
    rounds = [r.value for r in rounds_for(args.malicious)]
    inputs = _random_inputs(args.clients, args.dim, args.modulus_bits, rng.fork("inputs"))
    plan = _dropout_plan(args.clients, args.dropout, rounds, rng.fork("dropouts"))
    if args.dropout_round:
        plan = {args.dropout_round: sorted(u for ids in plan.values() for u in ids)}
    return inputs, plan, rounds


def cmd_simulate(args: argparse.Namespace) -> int:
    console = Console()
    inputs, plan, rounds = _demo_session(args)
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


# ---- over loopback TCP --------------------------------------------------------


def _setup_logging(level: int) -> None:
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _server_summary(res: TcpServerResult) -> dict:
    """The machine-readable part shared by ``serve --json`` and ``demo --json``."""
    p = res.params
    out = {
        "session_id": p.session_id.hex(),
        "clients": p.n,
        "threshold": p.threshold,
        "dim": p.dim,
        "modulus_bits": p.modulus_bits,
        "malicious": p.malicious,
        "counts": res.counts,
        "round_seconds": res.round_seconds,
        "dropouts": res.dropouts,
        "bytes_sent": res.bytes_sent,
        "bytes_received": res.bytes_received,
        "violations": [vars(v) for v in res.violations],
    }
    if res.result is not None:
        out["included"] = list(res.result.included)
        out["total"] = [int(v) for v in res.result.total]
        out["cheaters"] = res.result.cheaters
    else:
        assert res.abort is not None
        a = res.abort
        out["aborted"] = {"round": a.round, "count": a.count, "threshold": a.threshold, "reason": str(a)}
    return out


def _print_rounds(console: Console, res: TcpServerResult, extra: dict[str, int] | None = None) -> None:
    table = Table(title="Rounds over loopback TCP")
    columns = ["round", "clients completed", "dropped here", "seconds"]
    if extra is not None:
        columns.insert(3, "dropouts injected")
    for col in columns:
        table.add_column(col, justify="left" if col == "round" else "right")
    for r in rounds_for(res.params.malicious):
        row = [r.value, str(res.counts.get(r.value, "-")), str(len(res.dropouts.get(r.value, [])))]
        if extra is not None:
            row.append(str(extra.get(r.value, 0)))
        row.append(f"{res.round_seconds[r.value]:.3f}" if r.value in res.round_seconds else "-")
        table.add_row(*row)
    console.print(table)


def _print_violations(console: Console, res: TcpServerResult) -> None:
    if res.violations:
        table = Table(title="Rule violations (the offender became a dropout or was refused)")
        for col in ("client", "round", "rule", "detail"):
            table.add_column(col)
        for v in res.violations:
            table.add_row("-" if v.client is None else str(v.client), v.round, v.rule, v.detail[:80])
        console.print(table)


async def _run_server(server: TcpServer, announce) -> TcpServerResult:
    box: list[TcpServerResult] = []

    async def runner(task_status=trio.TASK_STATUS_IGNORED) -> None:
        box.append(await server.run(task_status=task_status))

    async with trio.open_nursery() as nursery:
        port = await nursery.start(runner)
        announce(port)
    return box[0]


def cmd_serve(args: argparse.Namespace) -> int:
    _setup_logging(logging.WARNING if args.quiet or args.json else logging.INFO)
    console = Console(stderr=args.json)
    try:
        ids = list(range(1, args.clients + 1))
        keys = {}
        if args.malicious:
            if not args.identity_dir:
                raise ParameterError("--malicious needs --identity-dir (see `secagg keygen`)")
            keys = load_public_keys(args.identity_dir)
            missing = [u for u in ids if u not in keys]
            if missing:
                raise ParameterError(f"{args.identity_dir} has no public key for clients {missing[:5]}")
            keys = {u: keys[u] for u in ids}
        params = PublicParams.create(
            ids,
            threshold=args.threshold,
            modulus=2**args.modulus_bits,
            dim=args.dim,
            malicious=args.malicious,
            identity_keys=keys,
        )
        host = loopback_host(args.host)
    except SecAggError as exc:
        print(f"secagg serve: {exc}", file=sys.stderr)
        return 1

    def announce(port: int) -> None:
        print(f"listening on {_address(host, port)}", file=sys.stderr, flush=True)

    try:
        with contextlib.ExitStack() as stack:
            transcript = stack.enter_context(open(args.transcript, "wb")) if args.transcript else None
            server = TcpServer(
                params,
                host=host,
                port=args.port,
                round_timeout=args.round_timeout,
                join_timeout=args.join_timeout,
                transcript_file=transcript,
                keep_transcript=False,  # the file, if any, is the record; memory stays O(d)
            )
            res = trio.run(_run_server, server, announce)
    except (SecAggError, OSError) as exc:
        print(f"secagg serve: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(_server_summary(res)))
    else:
        _print_rounds(console, res)
        _print_violations(console, res)
        if res.result is not None:
            head = ", ".join(str(int(v)) for v in res.result.total[:8])
            console.print(f"included: {len(res.included)} of {params.n} clients: {list(res.included)}")
            console.print(f"total (first {min(8, params.dim)} of {params.dim}): [{head}{', ...' if params.dim > 8 else ''}]")
    if res.abort is not None:
        print(f"secagg serve: session aborted: {res.abort}", file=sys.stderr)
        return 2
    return 0


def _load_input(path: str) -> np.ndarray:
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ParameterError(f"cannot load {path}: {exc}") from None
    if x.ndim != 1 or x.dtype.kind not in "ui" or (x.size and int(x.min()) < 0):
        raise ParameterError(f"{path} must hold a 1-D array of non-negative integers, got {x.dtype} {x.shape}")
    return x.astype(np.uint64)


def cmd_client(args: argparse.Namespace) -> int:
    _setup_logging(logging.WARNING if args.quiet else logging.INFO)
    try:
        host, port = parse_address(args.server)
        value = _load_input(args.input) if args.input else None
        identity = trusted = None
        if args.identity_dir:
            trusted = load_public_keys(args.identity_dir)
            identity = load_private_key(args.identity_dir, args.id)
    except SecAggError as exc:
        print(f"secagg client: {exc}", file=sys.stderr)
        return 1
    outcome = trio.run(
        lambda: run_client(
            host, port, args.id, value, identity_key=identity, trusted_keys=trusted, timeout=args.timeout
        )
    )
    if outcome.status != "done":
        print(f"secagg client {args.id}: {outcome.status}: {outcome.detail}", file=sys.stderr)
    return {"done": 0, "aborted": 2}.get(outcome.status, 1)


def cmd_keygen(args: argparse.Namespace) -> int:
    generate_keys(args.dir, range(1, args.clients + 1))
    print(f"wrote client-1..{args.clients}.key/.pub to {args.dir} (private keys mode 0600)")
    return 0


class _RoundBars:
    """A rich progress bar per round, fed by the server's events."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.tasks: dict[str, int] = {}

    def __call__(self, kind: str, info) -> None:
        if kind == "round_start":
            self.tasks[info["round"]] = self.progress.add_task(info["round"], total=info["expected"])
        elif kind == "answer" and info["round"] in self.tasks:
            self.progress.advance(self.tasks[info["round"]])
        elif kind == "round_end" and info["round"] in self.tasks:
            self.progress.update(self.tasks[info["round"]], completed=info["count"])


def cmd_demo(args: argparse.Namespace) -> int:
    _setup_logging(logging.ERROR)
    console = Console()
    inputs, plan, rounds = _demo_session(args)
    try:
        params, machines = setup_session(
            inputs, threshold=args.threshold, modulus=2**args.modulus_bits, malicious=args.malicious, seed=args.seed
        )
    except SecAggError as exc:
        print(f"secagg demo: {exc}", file=sys.stderr)
        return 1
    hooks = {u: leave_at(r) for r, ids in plan.items() for u in ids}
    # The demo generated every identity key itself, so it is the PKI: the
    # clients trust these keys, not whatever the server would send.
    trusted = dict(params.identity_keys) if args.malicious else None

    async def go(on_event=None):
        return await run_local_session(
            params, machines, before_send=hooks, round_timeout=args.round_timeout, trusted_keys=trusted,
            on_event=on_event,
        )

    if args.json:
        run = trio.run(go)
    else:
        mode = "malicious-server" if args.malicious else "honest-but-curious"
        console.print(
            f"Secure aggregation over loopback TCP, {mode} mode: n={args.clients}, t={args.threshold}, "
            f"d={args.dim}, M=2^{args.modulus_bits}, dropout rate {args.dropout:.0%}"
        )
        with Progress(
            TextColumn("{task.description:>18}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console,
        ) as progress:
            run = trio.run(go, _RoundBars(progress))
    res = run.server
    correct = None
    if res.result is not None:
        expected = np.zeros(args.dim, dtype=np.uint64)
        for u in res.result.included:
            expected += inputs[u]
        if args.modulus_bits < 64:
            expected &= np.uint64(2**args.modulus_bits - 1)
        correct = bool(np.array_equal(expected, res.result.total))
    if args.json:
        summary = _server_summary(res)
        summary["injected_dropouts"] = plan
        summary["client_status"] = {u: o.status for u, o in run.clients.items()}
        summary["correct"] = correct
        print(json.dumps(summary))
    else:
        _print_rounds(console, res, {r: len(ids) for r, ids in plan.items()})
        table = Table(title="Per client (bytes include the 4-byte frame headers)")
        for col in ("client", "sent", "received", "status"):
            table.add_column(col, justify="right" if col != "status" else "left")
        for u, o in run.clients.items():
            status = o.status if o.status != "left" else f"dropped before {o.detail.rsplit(' ', 1)[-1]}"
            table.add_row(str(u), f"{o.bytes_sent:,}", f"{o.bytes_received:,}", status)
        console.print(table)
        _print_violations(console, res)
        if res.abort is not None:
            console.print(f"[red]session aborted:[/red] {res.abort}")
        else:
            console.print(f"included: {len(res.included)} of {args.clients} clients")
            verdict = "[green]EQUAL[/green]" if correct else "[red]DIFFERENT[/red]"
            console.print(f"server output vs plaintext sum of the included inputs: {verdict}")
    if res.abort is not None:
        return 2
    return 0 if correct else 1


def cmd_inspect(args: argparse.Namespace) -> int:
    try:
        tr = read_transcript(args.file)
    except (SecAggError, OSError) as exc:
        print(f"secagg inspect: {exc}", file=sys.stderr)
        return 1
    rows = []
    for r in tr.records:
        row = {"seconds": round(r.seconds, 6), "client": r.client, "channel": r.channel, "verdict": r.verdict}
        if r.channel == "close":
            row["round"] = r.payload
        else:
            row["bytes"] = len(r.payload)
        if r.channel == "message" and r.payload:
            try:
                msg = decode(r.payload, tr.params)  # type: ignore[arg-type]
                row.update(round=msg.round.value, kind=msg.KIND, sender=msg.sender)
            except SecAggError as exc:
                row["error"] = str(exc)
        rows.append(row)
    try:
        result = replay(tr)
        outcome = {"included": list(result.included), "total": [int(v) for v in result.total]}
    except SecAggError as exc:
        outcome = {"replay_error": str(exc)}
    p = tr.params
    failed = int("replay_error" in outcome)
    if args.json:
        print(json.dumps({"session_id": p.session_id.hex(), "records": rows, **outcome}))
        return failed
    console = Console()
    mode = "malicious-server" if p.malicious else "honest-but-curious"
    console.print(
        f"session {p.session_id.hex()[:16]}..., {mode}: n={p.n}, t={p.threshold}, d={p.dim}, M=2^{p.modulus_bits}"
    )
    table = Table(title=f"{len(rows)} records")
    for col in ("seconds", "client", "channel", "round", "kind", "bytes", "verdict"):
        table.add_column(col)
    for row in rows:
        table.add_row(*(str(row.get(c, "")) for c in ("seconds", "client", "channel", "round", "kind", "bytes", "verdict")))
    console.print(table)
    if "replay_error" in outcome:
        console.print(f"replay: {outcome['replay_error']}")
    else:
        head = outcome["total"][:8]
        console.print(f"replay: {len(outcome['included'])} clients included, total starts {head}")
    return failed


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

    srv = sub.add_parser("serve", help="run the server of one session on loopback TCP")
    srv.add_argument("--host", default="127.0.0.1", help="127.0.0.1 or ::1 only")
    srv.add_argument("--port", type=int, default=0, help="0: any free port (printed on stderr)")
    srv.add_argument("--clients", type=int, required=True, help="client ids are 1..N")
    srv.add_argument("--threshold", type=int, default=None, help="default: 2n/3 + 1")
    srv.add_argument("--dim", type=int, required=True)
    srv.add_argument("--modulus-bits", type=int, default=32)
    srv.add_argument("--malicious", action="store_true", help="malicious-server mode (needs --identity-dir)")
    srv.add_argument("--identity-dir", default=None, help="client-<id>.pub files (`secagg keygen`)")
    srv.add_argument("--round-timeout", type=float, default=10.0, help="seconds per round")
    srv.add_argument("--join-timeout", type=float, default=60.0, help="seconds for clients to connect and advertise keys")
    srv.add_argument("--transcript", default=None, help="write every frame received to this file (msgpack)")
    srv.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")
    srv.add_argument("--quiet", action="store_true", help="log warnings only")
    srv.set_defaults(func=cmd_serve)

    cli = sub.add_parser("client", help="run one client against `secagg serve`")
    cli.add_argument("--server", required=True, help="127.0.0.1:PORT or [::1]:PORT")
    cli.add_argument("--id", type=int, required=True)
    cli.add_argument("--input", default=None, help=".npy file with a 1-D integer vector (default: random)")
    cli.add_argument("--identity-dir", default=None, help="malicious-server mode: the trusted key directory")
    cli.add_argument("--timeout", type=float, default=None, help="seconds to wait for each server frame")
    cli.add_argument("--quiet", action="store_true", help="log warnings only")
    cli.set_defaults(func=cmd_client)

    demo = sub.add_parser("demo", help="server and N clients in one process over loopback TCP")
    demo.add_argument("--clients", type=int, default=20)
    demo.add_argument("--threshold", type=int, default=None, help="default: 2n/3 + 1")
    demo.add_argument("--dim", type=int, default=1000)
    demo.add_argument("--modulus-bits", type=int, default=32)
    demo.add_argument("--dropout", type=float, default=0.15, help="fraction of clients that drop")
    demo.add_argument("--dropout-round", choices=[r.value for r in rounds_for(True)], default=None)
    demo.add_argument("--malicious", action="store_true")
    demo.add_argument("--round-timeout", type=float, default=5.0)
    demo.add_argument("--seed", type=int, default=None, help="reproducible keys and masks (testing only)")
    demo.add_argument("--json", action="store_true", help="print a machine-readable summary")
    demo.set_defaults(func=cmd_demo)

    kg = sub.add_parser("keygen", help="write identity keys for clients 1..N (the local PKI)")
    kg.add_argument("--dir", required=True)
    kg.add_argument("--clients", type=int, required=True)
    kg.set_defaults(func=cmd_keygen)

    ins = sub.add_parser("inspect", help="decode and replay a server transcript")
    ins.add_argument("file")
    ins.add_argument("--json", action="store_true")
    ins.set_defaults(func=cmd_inspect)

    args = parser.parse_args(argv)
    if getattr(args, "threshold", 0) is None:
        args.threshold = 2 * args.clients // 3 + 1
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
