"""Command line: in-memory simulation, and the protocol over loopback TCP.

``simulate`` runs one in-memory session; ``demo`` runs the server and N
clients in one process over real loopback sockets; ``serve`` and ``client``
are the separate processes; ``keygen`` writes the identity-key directory that
plays the PKI in malicious-server mode; ``inspect`` reads a server transcript
back, decodes every frame and replays the session.  The reports are what a
teacher or an auditor wants at a glance: clients per round, time and bytes
per party, and whether the output equals the plaintext sum of the included
inputs.

Every flag is checked while the command line is parsed, and every command
ends with one of the exit codes of ``cli_support`` (0 done, 1 failed,
2 bad flag value, 3 session aborted, 130 Ctrl-C, 141 closed pipe) and at
most one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import warnings
from pathlib import Path

import numpy as np
import trio
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from . import __version__
from .cli_support import ABORTED, FAILED, OK, USAGE, Console, HelpFormatter, describe_os_error, float_in, int_at_least, run_main
from .errors import AbortError, ParameterError, SecAggError
from .estimate import available_memory, human_bytes, human_seconds, session_cost
from .framing import loopback_host, parse_address
from .keydir import generate_keys, load_private_key, load_public_keys
from .ledger import FileLedger
from .messages import decode, rounds_for
from .params import MAX_DIM, PublicParams, max_colluding, sparse_choice
from .policy import ClientPolicy
from .rng import SeededRandom, SystemRandom
from .simulation import setup_session, simulate
from .tcp import TcpServer, TcpServerResult, leave_at, run_client, run_local_session
from .transcript import read_transcript, replay_calls


def _random_inputs(n: int, dim: int, modulus_bits: int, rng) -> dict[int, np.ndarray]:
    width = 8
    mask = np.uint64((1 << modulus_bits) - 1) if modulus_bits < 64 else np.uint64(2**64 - 1)
    return {u: np.frombuffer(rng.bytes(dim * width), dtype="<u8") & mask for u in range(1, n + 1)}


DEFAULT_DROPOUT = 0.15


def _dropout_count(args: argparse.Namespace) -> int:
    """round(rate * n) clients drop; the default rate never drops more than a session survives:
    n - t on the complete graph, the tolerated fraction on a sparse one."""
    rate = DEFAULT_DROPOUT if args.dropout is None else args.dropout
    count = round(rate * args.clients)
    if args.dropout is None:
        room = int(args.tolerated_dropout * args.clients) if args.graph == "sparse" else args.clients - args.threshold
        count = min(count, room)
    return count


def _graph_kwargs(args: argparse.Namespace) -> dict:
    """The graph arguments of ``setup_session`` / ``simulate`` ({} for the complete graph)."""
    if args.graph == "complete":
        return {}
    return dict(graph="sparse", tolerated_dropout=args.tolerated_dropout, tolerated_corrupt=args.tolerated_corrupt)


def _dropout_plan(n: int, count: int, rounds: list[str], rng) -> dict[str, list[int]]:
    """``count`` distinct clients drop, each at a round chosen uniformly (a demo plan, not a secret)."""
    remaining = list(range(1, n + 1))
    plan: dict[str, list[int]] = {}
    for _ in range(count):
        u = remaining.pop(int.from_bytes(rng.bytes(4), "big") % len(remaining))
        r = rounds[int.from_bytes(rng.bytes(4), "big") % len(rounds)]
        plan.setdefault(r, []).append(u)
    return {r: sorted(ids) for r, ids in plan.items()}


def _demo_session(args: argparse.Namespace) -> tuple[dict[int, np.ndarray], dict[str, list[int]], list[str]]:
    """Random inputs, a dropout plan and the round names, as ``simulate`` and ``demo`` take them."""
    rng = SeededRandom(args.seed) if args.seed is not None else SystemRandom()
    rounds = [r.value for r in rounds_for(args.malicious)]
    inputs = _random_inputs(args.clients, args.dim, args.modulus_bits, rng.fork("inputs"))
    plan = _dropout_plan(args.clients, _dropout_count(args), rounds, rng.fork("dropouts"))
    if args.dropout_round:
        plan = {args.dropout_round: sorted(u for ids in plan.values() for u in ids)} if plan else {}
    return inputs, plan, rounds


def _session_line(args: argparse.Namespace, plan: dict[str, list[int]], what: str) -> str:
    mode = "malicious-server" if args.malicious else "honest-but-curious"
    dropped = sum(map(len, plan.values()))
    graph = "" if args.graph == "complete" else f", sparse graph (k={args.degree})"
    return (
        f"{what}, {mode} mode{graph}: n={args.clients}, t={args.threshold}, d={args.dim}, "
        f"M=2^{args.modulus_bits}, {dropped} of {args.clients} clients drop"
    )


def _step_bar(args: argparse.Namespace, rounds: list[str]) -> Progress:
    """One bar over every client step of the session, on stderr, drawn only on a terminal and without --quiet."""
    err = Console(stderr=True)
    about = human_seconds(args.estimate.seconds)
    return Progress(
        TextColumn(f"{{task.description:>18}} (estimate {about})"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=True, disable=args.quiet or not err.is_terminal,
    )


def cmd_simulate(args: argparse.Namespace) -> int:
    console = Console()
    inputs, plan, rounds = _demo_session(args)
    try:
        with _step_bar(args, rounds) as bar:
            task = bar.add_task(rounds[0], total=args.clients * len(rounds))
            result = simulate(
                inputs,
                threshold=args.threshold,
                modulus=2**args.modulus_bits,
                dropouts=plan,
                malicious=args.malicious,
                seed=args.seed,
                workers=args.workers,
                progress=lambda round_: bar.update(task, advance=1, description=round_),
                **_graph_kwargs(args),
            )
    except SecAggError as exc:
        if args.json:
            print(json.dumps({"aborted": str(exc), "dropouts": plan}))
        # One line on stderr: the console would wrap it, and stdout is for results.
        print(f"secagg simulate: session {'aborted' if isinstance(exc, AbortError) else 'refused'}: {exc}",
              file=sys.stderr)
        return ABORTED if isinstance(exc, AbortError) else USAGE
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
                    "clients": args.clients,
                    "threshold": args.threshold,
                    "dim": args.dim,
                    "modulus_bits": args.modulus_bits,
                    "malicious": args.malicious,
                    "graph": args.graph,
                    "degree": args.degree,
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
        return OK if correct else FAILED
    verdict = "[green]EQUAL[/green]" if correct else "[red]DIFFERENT[/red]"
    if args.quiet:
        console.print(f"included: {len(result.included)} of {args.clients} clients; output vs plaintext sum: {verdict}")
        return OK if correct else FAILED
    console.print(_session_line(args, plan, "Secure aggregation"))
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
    console.print(f"server output vs plaintext sum of the included inputs: {verdict}")
    return OK if correct else FAILED


# ---- over loopback TCP --------------------------------------------------------


# The transport's logs of how a session or a client ended: the command prints that itself, in one line.
_OUTCOME_LOGS = {"client %d: %s", "client %d: %s: %s", "session aborted: %s"}


def _not_an_outcome(record: logging.LogRecord) -> bool:
    return not (record.name == "secagg.tcp" and record.msg in _OUTCOME_LOGS)


def _setup_logging(level: int) -> None:
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_not_an_outcome)


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
        "graph": "sparse" if p.sparse else "complete",
        "degree": p.graph.degree if p.sparse else p.n - 1,  # type: ignore[union-attr]
        "counts": res.counts,
        "round_seconds": res.round_seconds,
        "dropouts": res.dropouts,
        "bytes_sent": res.bytes_sent,
        "bytes_received": res.bytes_received,
        "violations": [vars(v) for v in res.violations],
    }
    if p.calls > 1:  # a multi-call session: every completed call (the last one also below)
        out["calls"] = [{"call": r.call, "included": list(r.included), "total": [int(v) for v in r.total]}
                        for r in res.results]
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
            calls=args.calls,
            **({} if args.graph == "complete" else
               dict(graph="sparse", dropout=args.tolerated_dropout, corrupt=args.tolerated_corrupt)),
        )
    except SecAggError as exc:
        print(f"secagg serve: {exc}", file=sys.stderr)
        return USAGE

    def announce(port: int) -> None:
        print(f"listening on {_address(args.host, port)}", file=sys.stderr, flush=True)

    try:
        with contextlib.ExitStack() as stack:
            # Opened before the server starts: an unwritable path fails now, not after the session.
            transcript = stack.enter_context(open(args.transcript, "wb")) if args.transcript else None
            server = TcpServer(
                params,
                host=args.host,
                port=args.port,
                round_timeout=args.round_timeout,
                join_timeout=args.join_timeout,
                transcript_file=transcript,
                keep_transcript=False,  # the file, if any, is the record; memory stays O(d)
            )
            res = trio.run(_run_server, server, announce)
    except SecAggError as exc:
        print(f"secagg serve: {exc}", file=sys.stderr)
        return FAILED
    if args.json:
        print(json.dumps(_server_summary(res)))
    else:
        _print_rounds(console, res)
        _print_violations(console, res)
        for r in res.results:
            head = ", ".join(str(int(v)) for v in r.total[:8])
            call = f"call {r.call}: " if params.calls > 1 else ""
            console.print(f"{call}included: {len(r.included)} of {params.n} clients: {list(r.included)}")
            console.print(f"{call}total (first {min(8, params.dim)} of {params.dim}): "
                          f"[{head}{', ...' if params.dim > 8 else ''}]")
    if res.abort is not None:
        print(f"secagg serve: session aborted: {res.abort}", file=sys.stderr)
        return ABORTED
    return OK


def _load_input(path: str) -> np.ndarray:
    """A 1-D input, or a 2-D one with one row per call of a multi-call session."""
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:  # EOFError: an empty or truncated file
        raise ParameterError(f"cannot load {path}: {exc}") from None
    if not isinstance(x, np.ndarray) or x.ndim not in (1, 2) or x.size == 0 or x.dtype.kind not in "ui" or int(x.min()) < 0:
        what = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else "an .npz archive"
        raise ParameterError(
            f"{path} must hold a non-empty 1-D array of non-negative integers (2-D: one row per call), got {what}"
        )
    return x.astype(np.uint64)


def _rows(value: np.ndarray):
    """The inputs callback of ``secagg client --input`` with a 2-D file: row ``call`` for each call."""

    def inputs(call: int, opened: object) -> np.ndarray:
        if call >= value.shape[0]:
            raise ParameterError(f"--input has {value.shape[0]} rows, none for call {call}")
        return value[call]

    return inputs


def cmd_client(args: argparse.Namespace) -> int:
    _setup_logging(logging.WARNING if args.quiet or args.json else logging.INFO)
    host, port = args.server
    try:
        value = _load_input(args.input) if args.input else None
        identity = trusted = ledger = None
        if args.identity_dir:
            trusted = load_public_keys(args.identity_dir)
            identity = load_private_key(args.identity_dir, args.id)
            ledger = FileLedger.beside_key(args.identity_dir, args.id)  # session ids signed in, beside the key
        policy = ClientPolicy(
            min_group=args.min_group, corrupt=args.tolerated_corrupt, dropout=args.tolerated_dropout,
            min_threshold=args.min_threshold, max_clients=args.max_clients, max_calls=args.max_calls,
        )
    except SecAggError as exc:
        print(f"secagg client: {exc}", file=sys.stderr)
        return USAGE
    inputs = None
    if value is not None and value.ndim == 2:
        value, inputs = None, _rows(value)
    outcome = trio.run(
        lambda: run_client(
            host, port, args.id, value, identity_key=identity, trusted_keys=trusted, timeout=args.timeout,
            policy=policy, ledger=ledger, inputs=inputs,
        )
    )
    if args.json:
        print(json.dumps({
            "id": args.id, "status": outcome.status, "detail": outcome.detail, "sent_rounds": outcome.sent_rounds,
            "bytes_sent": outcome.bytes_sent, "bytes_received": outcome.bytes_received,
        }))
    if outcome.status != "done":
        print(f"secagg client {args.id}: {outcome.status}: {outcome.detail}", file=sys.stderr)
    return {"done": OK, "aborted": ABORTED}.get(outcome.status, FAILED)


def _key_files(directory: Path, clients: int) -> list[Path]:
    return [directory / f"client-{u}.{ext}" for u in range(1, clients + 1) for ext in ("key", "pub")]


def cmd_keygen(args: argparse.Namespace) -> int:
    existing = [p for p in _key_files(args.dir, args.clients) if p.exists()]
    if existing and not args.force:
        print(
            f"secagg keygen: {args.dir} already holds {len(existing)} key files ({existing[0].name}, ...); "
            "new keys would change the public keys every party trusts. Pass --force to replace them.",
            file=sys.stderr,
        )
        return USAGE
    public = generate_keys(args.dir, range(1, args.clients + 1))
    if args.json:
        print(json.dumps({"dir": str(args.dir), "public_keys": {u: k.hex() for u, k in public.items()}}))
    elif not args.quiet:
        print(f"wrote client-1..{args.clients}.key/.pub to {args.dir} (private keys mode 0600)")
    return OK


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
            inputs, threshold=args.threshold, modulus=2**args.modulus_bits, malicious=args.malicious, seed=args.seed,
            **_graph_kwargs(args),
        )
    except SecAggError as exc:
        print(f"secagg demo: {exc}", file=sys.stderr)
        return USAGE
    hooks = {u: leave_at(r) for r, ids in plan.items() for u in ids}
    # The demo generated every identity key itself, so it is the PKI: the
    # clients trust these keys, not whatever the server would send.
    trusted = dict(params.identity_keys) if args.malicious else None

    async def go(on_event=None):
        return await run_local_session(
            params, machines, before_send=hooks, round_timeout=args.round_timeout, trusted_keys=trusted,
            on_event=on_event,
        )

    if args.json or args.quiet:
        run = trio.run(go)
    else:
        console.print(_session_line(args, plan, "Secure aggregation over loopback TCP"))
        with Progress(
            TextColumn("{task.description:>18}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=Console(stderr=True),  # stdout carries the report alone
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
    elif args.quiet:
        if res.abort is None:
            console.print(f"included: {len(res.included)} of {args.clients} clients; output vs plaintext sum: "
                          + ("[green]EQUAL[/green]" if correct else "[red]DIFFERENT[/red]"))
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
        if res.abort is None:
            console.print(f"included: {len(res.included)} of {args.clients} clients")
            verdict = "[green]EQUAL[/green]" if correct else "[red]DIFFERENT[/red]"
            console.print(f"server output vs plaintext sum of the included inputs: {verdict}")
    if res.abort is not None:
        print(f"secagg demo: session aborted: {res.abort}", file=sys.stderr)
        return ABORTED
    return OK if correct else FAILED


def cmd_inspect(args: argparse.Namespace) -> int:
    try:
        tr = read_transcript(args.file)
    except (SecAggError, OSError) as exc:
        print(f"secagg inspect: {describe_os_error(exc) if isinstance(exc, OSError) else exc}", file=sys.stderr)
        return FAILED
    rows = []
    for r in tr.records:
        row = {"seconds": round(r.seconds, 6), "client": r.client, "channel": r.channel, "verdict": r.verdict}
        if r.channel == "close":
            row["round"] = r.payload
        else:
            row["bytes"] = len(r.payload)
        if r.channel == "call":
            calls_opened = sum(1 for x in rows if x["channel"] == "call") + 1
            row.update(call=calls_opened, kind="call_open")
        if r.channel == "message" and r.payload:
            try:
                msg = decode(r.payload, tr.params)  # type: ignore[arg-type]
                row.update(round=msg.round.value, kind=msg.KIND, sender=msg.sender, call=msg.call)
            except SecAggError as exc:
                row["error"] = str(exc)
        rows.append(row)
    try:
        results = replay_calls(tr)
        outcome = {"included": list(results[-1].included), "total": [int(v) for v in results[-1].total]}
        if tr.params.calls > 1:
            outcome["calls"] = [{"call": r.call, "included": list(r.included), "total": [int(v) for v in r.total]}
                                for r in results]
    except SecAggError as exc:
        outcome = {"replay_error": str(exc)}
    p = tr.params
    failed = FAILED if "replay_error" in outcome else OK
    if args.json:
        print(json.dumps({"session_id": p.session_id.hex(), "records": rows, **outcome}))
        return failed
    console = Console()
    mode = "malicious-server" if p.malicious else "honest-but-curious"
    console.print(
        f"session {p.session_id.hex()[:16]}..., {mode}: n={p.n}, t={p.threshold}, d={p.dim}, M=2^{p.modulus_bits}"
        + (f", {p.calls} calls planned" if p.calls > 1 else "")
    )
    table = Table(title=f"{len(rows)} records")
    columns = ("seconds", "client", "channel", "call", "round", "kind", "bytes", "verdict")
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*(str(row.get(c, "")) for c in columns))
    if not args.quiet:
        console.print(table)
    if "replay_error" in outcome:
        console.print(f"replay: {outcome['replay_error']}")
    else:
        for call in outcome.get("calls", [dict(outcome, call=None)]):
            label = "" if call["call"] is None else f" call {call['call']}:"
            console.print(f"replay:{label} {len(call['included'])} clients included, total starts {call['total'][:8]}")
    return failed


def _host(text: str) -> str:
    try:
        return loopback_host(text)
    except SecAggError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _server_address(text: str) -> tuple[str, int]:
    try:
        return parse_address(text)
    except SecAggError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_CLIENTS = int_at_least(2)
_POSITIVE = int_at_least(1)
_SECONDS = float_in(0, low_open=True)
_ROUNDS = [r.value for r in rounds_for(True)]


def _session_flags(p: argparse.ArgumentParser, *, clients: int | None, dim: int | None) -> None:
    """The flags that define one session, shared by simulate, demo and serve."""
    if clients is None:
        p.add_argument("--clients", type=_CLIENTS, required=True, help="number of clients n; their ids are 1..n")
    else:
        p.add_argument("--clients", type=_CLIENTS, default=clients, help="number of clients n; their ids are 1..n")
    p.add_argument("--threshold", type=_POSITIVE, default=None,
                   help="t: every revealed sum holds at least t inputs, in [2, n] (default: 2n/3 + 1)")
    if dim is None:
        p.add_argument("--dim", type=int_at_least(1), required=True, help="vector length d")
    else:
        p.add_argument("--dim", type=int_at_least(1), default=dim, help="vector length d")
    p.add_argument("--modulus-bits", type=int_at_least(1), default=32, help="k: inputs and sums live in Z_M, M = 2^k, k <= 64")
    p.add_argument("--graph", choices=("complete", "sparse"), default="complete",
                   help="who masks with whom: every pair (default) or a SecAgg+ Harary graph of degree k ~ log n, "
                        "k and t sized for the two fractions below (protocol_spec.md section 14)")
    p.add_argument("--tolerated-dropout", type=float_in(0, 1), default=0.1,
                   help="sparse: fraction of dropouts the graph must survive")
    p.add_argument("--tolerated-corrupt", type=float_in(0, 1), default=0.05,
                   help="sparse: fraction of corrupted clients the graph must tolerate")


def _dropout_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dropout", type=float_in(0, 1), default=None,
                   help=f"fraction of the clients that drop, each at a random round (default: {DEFAULT_DROPOUT}, "
                        "but never more clients than the n - t a session survives)")
    p.add_argument("--dropout-round", choices=_ROUNDS, default=None, help="make every dropout happen at this round")
    p.add_argument("--malicious", action="store_true", help="malicious-server mode (signatures, consistency check)")
    p.add_argument("--seed", type=int, default=None, help="reproducible inputs, keys and masks (testing only; default: OS randomness)")


def _memory_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-memory-check", dest="memory_check", action="store_false",
                   help="run even when the session's estimated memory exceeds what the machine has free")


def _output_flags(p: argparse.ArgumentParser, json_help: str, quiet_help: str) -> None:
    p.add_argument("--json", action="store_true", help=json_help)
    p.add_argument("--quiet", action="store_true", help=quiet_help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="secagg", description="Bonawitz-style secure aggregation", formatter_class=HelpFormatter,
        epilog="exit codes: 0 done, 1 failed, 2 bad flag value, 3 session aborted (fewer than t clients), "
               "130 interrupted, 141 stdout closed",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, func) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, formatter_class=HelpFormatter)
        p.set_defaults(func=func, parser=p)
        return p

    sim = command("simulate", "run one session in memory with random inputs and dropouts", cmd_simulate)
    _session_flags(sim, clients=20, dim=1000)
    _dropout_flags(sim)
    _output_flags(sim, "print a machine-readable summary on stdout", "print only the verdict")
    sim.add_argument("--json-total", type=int_at_least(0), default=16, help="how many coordinates of the total --json prints")
    _memory_flag(sim)
    sim.add_argument("--workers", type=_POSITIVE, default=None,
                     help="processes that run the clients (default: one per core from 1,000 clients up; 1: all here)")

    srv = command("serve", "run the server of one session on loopback TCP", cmd_serve)
    srv.add_argument("--host", type=_host, default="127.0.0.1", help="127.0.0.1 or ::1 only")
    srv.add_argument("--port", type=int_at_least(0, 65535), default=0, help="0: any free port (printed on stderr)")
    _session_flags(srv, clients=None, dim=None)
    srv.add_argument("--malicious", action="store_true", help="malicious-server mode (needs --identity-dir)")
    srv.add_argument("--identity-dir", default=None, help="client-<id>.pub files (`secagg keygen`)")
    srv.add_argument("--round-timeout", type=_SECONDS, default=10.0, help="seconds per round")
    srv.add_argument("--join-timeout", type=_SECONDS, default=60.0, help="seconds for clients to connect and advertise keys")
    srv.add_argument("--transcript", default=None, help="write every frame received to this file (msgpack)")
    srv.add_argument("--calls", type=_POSITIVE, default=1,
                     help="oracle calls in the session: key rounds once, then a masked input and an unmasking "
                          "per call (protocol_spec.md 16)")
    _output_flags(srv, "print a machine-readable summary on stdout", "log warnings only")

    cli = command("client", "run one client against `secagg serve`", cmd_client)
    cli.add_argument("--server", type=_server_address, required=True, help="127.0.0.1:PORT or [::1]:PORT")
    cli.add_argument("--id", type=_POSITIVE, required=True, help="this client's id, one of the server's 1..n")
    cli.add_argument("--input", default=None,
                     help=".npy file with a 1-D non-negative integer vector, or a 2-D one with a row per call of a "
                          "multi-call session (default: random, fresh for every call)")
    cli.add_argument("--identity-dir", default=None, help="malicious-server mode: the trusted key directory")
    cli.add_argument("--timeout", type=_SECONDS, default=None,
                     help="seconds to wait for each server frame (default: the server's deadlines plus 30 s)")
    defaults = ClientPolicy()
    policy = cli.add_argument_group(
        "this client's policy", "the session's parameters must meet these, or the client declines before it "
        "sends anything but its refusal (exit code 1; protocol_spec.md 13.3)")
    policy.add_argument("--min-group", type=_POSITIVE, default=defaults.min_group,
                        help="fewest honest inputs in any sum the server can learn (default: 10 on a sparse graph "
                             "in malicious-server mode, the library's own sizing, else 2)")
    policy.add_argument("--tolerated-corrupt", type=float_in(0, 1, high_open=True), default=defaults.corrupt,
                        help="fraction of clients assumed to collude with the server; the threshold, or a sparse "
                             "graph's sizing, must cover it")
    policy.add_argument("--tolerated-dropout", type=float_in(0, 1, high_open=True), default=defaults.dropout,
                        help="a sparse graph must be sized for at least this dropout fraction")
    policy.add_argument("--min-threshold", type=float_in(0, 1, low_open=True), default=defaults.min_threshold,
                        help="complete graph: t at least this fraction of n")
    policy.add_argument("--max-clients", type=_CLIENTS, default=defaults.max_clients,
                        help="largest session to join")
    policy.add_argument("--max-calls", type=_POSITIVE, default=defaults.max_calls,
                        help="most oracle calls of one session to take part in: each publishes one more sum over "
                             "the same survivors (protocol_spec.md 16)")
    _output_flags(cli, "print this client's outcome as JSON on stdout", "log warnings only")

    demo = command("demo", "server and N clients in one process over loopback TCP", cmd_demo)
    _session_flags(demo, clients=20, dim=1000)
    _dropout_flags(demo)
    demo.add_argument("--round-timeout", type=_SECONDS, default=5.0, help="seconds per round")
    _memory_flag(demo)
    _output_flags(demo, "print a machine-readable summary on stdout", "no progress bars or tables, only the verdict")

    kg = command("keygen", "write identity keys for clients 1..N (the local PKI)", cmd_keygen)
    kg.add_argument("--dir", type=Path, required=True, help="directory for client-<id>.key (mode 0600) and client-<id>.pub")
    kg.add_argument("--clients", type=_CLIENTS, required=True, help="write keys for clients 1..N")
    kg.add_argument("--force", action="store_true", help="replace existing key files (their public keys change)")
    _output_flags(kg, "print the public keys as JSON on stdout", "print nothing")

    ins = command("inspect", "decode and replay a server transcript", cmd_inspect)
    ins.add_argument("file", help="a transcript written by `secagg serve --transcript`")
    _output_flags(ins, "print every record and the replayed result as JSON on stdout", "skip the table of records")
    return parser


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The checks that involve more than one flag, named by their flags."""
    if not hasattr(args, "threshold"):
        return
    args.degree = args.clients - 1  # neighbours per client, reported by simulate
    if args.graph == "sparse":
        try:  # the graph PublicParams.create will build; its t unless one is given
            choice = sparse_choice(args.clients, dropout=args.tolerated_dropout, corrupt=args.tolerated_corrupt,
                                   malicious=args.malicious)
        except SecAggError as exc:
            parser.error(f"argument --graph: {exc}")
        args.degree = choice.degree
        if args.threshold is None:
            args.threshold = choice.threshold
    elif args.threshold is None:
        args.threshold = 2 * args.clients // 3 + 1
    elif args.malicious and max_colluding(args.clients, args.threshold, True) < 0:
        parser.error(f"argument --threshold: malicious-server mode with n={args.clients}, t={args.threshold} gives "
                     f"no guarantee (a malicious server can split the honest clients and unmask one of them); "
                     f"use t >= {args.clients // 2 + 1}")
    if not 2 <= args.threshold <= args.clients:
        why = " (with t = 1 a revealed sum can be one client's input)" if args.threshold == 1 else ""
        parser.error(f"argument --threshold: must be in [2, --clients={args.clients}], got {args.threshold}{why}")
    if args.modulus_bits > 64:
        parser.error(f"argument --modulus-bits: must be at most 64, got {args.modulus_bits}")
    if args.dim > MAX_DIM:
        parser.error(f"argument --dim: must be at most {MAX_DIM}, got {args.dim}")
    if hasattr(args, "memory_check"):
        _check_fits(parser, args)


def _check_fits(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse, before anything runs, a session whose estimated peak memory exceeds what the machine has free."""
    args.estimate = session_cost(args.clients, args.dim, args.degree)
    available = available_memory()
    if not args.memory_check or available is None or args.estimate.bytes <= available:
        return
    hint = "use fewer --clients or a smaller --dim"
    if args.graph == "complete":
        try:
            degree = sparse_choice(args.clients, dropout=args.tolerated_dropout, corrupt=args.tolerated_corrupt,
                                   malicious=args.malicious).degree
            sparse = session_cost(args.clients, args.dim, degree)
            hint = f"use --graph sparse (k={degree} neighbours: about {human_bytes(sparse.bytes)}, " \
                   f"{human_seconds(sparse.seconds)})"
        except SecAggError:
            pass
    graph = "complete graph" if args.graph == "complete" else f"sparse graph (k={args.degree})"
    parser.error(f"argument --clients: n={args.clients}, d={args.dim} on the {graph} needs about "
                 f"{human_bytes(args.estimate.bytes)} of memory ({human_seconds(args.estimate.seconds)}), "
                 f"{human_bytes(available)} are free; {hint}, or pass --no-memory-check")


def _one_line_warnings(prog: str):
    """Warnings (e.g. an insecure threshold sent by a server) as one stderr line each, once."""
    seen: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if str(message) not in seen:
            seen.add(str(message))
            print(f"{prog}: warning: {message}", file=sys.stderr)

    return show


def _main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _check(args.parser, args)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = _one_line_warnings(f"secagg {args.command}")
        return args.func(args)


def main(argv: list[str] | None = None) -> int:
    """The ``secagg`` command; see ``--help``."""
    return run_main("secagg", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
