"""One configuration, run: in memory, over loopback TCP, both (the same seeded session), repeated and
combined; and the client pool against the serial run, each in a fresh process."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import multiprocessing
import os
import resource
import statistics
import time
from typing import Callable

import numpy as np
import trio

import secagg
from secagg.bootstrap import encode_hello, params_from_wire, params_to_wire
from secagg.framing import HEADER_BYTES, encode_frame
from secagg.pool import available_cores
from secagg.simulation import setup_session
from secagg.tcp import TcpServer, leave_at, run_client
from sims.bench_secagg.config import (
    DROP_ROUND, MALICIOUS_ROUNDS, ROUND_TIMEOUT, ROUNDS, STARTUP_TIMEOUT, Config,
)
from sims.bench_secagg.floor import measure_floor


def random_inputs(cfg: Config, seed: int) -> dict[int, np.ndarray]:
    gen = np.random.default_rng(seed)
    high = 1 << cfg.modulus_bits
    return {u: gen.integers(0, high, size=cfg.d, dtype=np.uint64) for u in range(1, cfg.n + 1)}


def expected_total(inputs: dict[int, np.ndarray], included, modulus_bits: int) -> np.ndarray:
    total = np.zeros_like(next(iter(inputs.values())))
    for u in included:
        total += inputs[u]  # uint64 wraps mod 2^64, which 2^k divides
    if modulus_bits < 64:
        total &= np.uint64((1 << modulus_bits) - 1)
    return total


def fingerprint(frames) -> str:
    """Order-independent digest of the messages the server accepted (the transports order them differently)."""
    digests = sorted(hashlib.sha256(f).digest() for f in frames)
    return hashlib.sha256(b"".join(digests)).hexdigest()[:16]


def digest(x: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x, dtype=np.uint64).tobytes()).hexdigest()[:16]


def run_memory(cfg: Config, seed: int, progress: Callable[[str], None] | None = None) -> dict:
    """One session with the in-memory transport; returns one row of the table.

    Another transport only has to return the same keys from a function with
    this signature and be registered in ``TRANSPORTS``.  ``progress(round)``
    is called after each client step (simulate's callback).
    """
    inputs = random_inputs(cfg, seed)
    dropped = cfg.dropped
    key_seed = seed if cfg.seeded else None
    modulus = 1 << cfg.modulus_bits
    # U2 and U3 are known in advance (nobody drops before masked_input); checked below.
    u2 = frozenset(range(1, cfg.n + 1))
    u3 = u2 - frozenset(dropped)
    cpu = _cpu_seconds() + _children_cpu_seconds()
    start = time.perf_counter()
    result = secagg.simulate(
        inputs, threshold=cfg.threshold, modulus=modulus, dropouts={DROP_ROUND: dropped}, seed=key_seed,
        workers=cfg.workers, progress=progress, **cfg.session_kwargs(),
    )
    total_wall = time.perf_counter() - start
    cpu = _cpu_seconds() + _children_cpu_seconds() - cpu  # this process and its joined workers
    setup = result.setup_seconds  # parameters and client state machines (in the workers, if any)
    wall = total_wall - setup
    # The floor needs the session's graph (drawn from its session id): measured twice, after it.
    before = measure_floor(cfg, result.params, u2, u3)
    after = measure_floor(cfg, result.params, u2, u3)
    if result.counts.get("share_keys") != len(u2) or frozenset(result.included) != u3:
        raise RuntimeError(f"{cfg}: expected |U2|={len(u2)}, |U3|={len(u3)}, got {result.counts}, {len(result.included)}")
    correct = bool(np.array_equal(result.total, expected_total(inputs, result.included, cfg.modulus_bits)))
    row = make_row(cfg, result, min(before[0], after[0]), min(before[1], after[1]), correct, "memory")
    row.update(
        wall_s=wall,
        setup_s=setup,
        total_wall_s=total_wall,
        cpu_s=cpu,
        workers=result.workers,
        round_wall_s={r: result.client_seconds.get(r, 0.0) + result.server_seconds.get(r, 0.0)
                      for r in (MALICIOUS_ROUNDS if cfg.malicious else ROUNDS)},
        message_bytes_per_client=row["bytes_sent_per_client"],
        session=fingerprint(result.transcript),
        total_digest=digest(result.total),
        included_ids=list(result.included),
    )
    return row


def make_row(cfg: Config, result, floor_client: float, floor_server: float, correct: bool, transport: str) -> dict:
    # Per-client bytes: the mean over clients that took part in every round.
    full = result.included
    sent = statistics.fmean(result.bytes_sent[u] for u in full)
    received = statistics.fmean(result.bytes_received[u] for u in full)
    row = {
        "transport": transport,
        "n": cfg.n,
        "d": cfg.d,
        "dropout": cfg.dropout,
        "dropped": len(cfg.dropped),
        "drop_round": DROP_ROUND,
        "modulus_bits": cfg.modulus_bits,
        "t": cfg.threshold,
        "graph": cfg.graph,
        "malicious": cfg.malicious,
        "k": cfg.degree,
        "included": len(result.included),
        "client_s": sum(result.client_seconds.values()),
        "server_s": sum(result.server_seconds.values()),
        "masking_s": result.client_seconds.get("masked_input", 0.0),
        "unmasking_s": result.server_seconds.get("unmasking", 0.0),
        "floor_client_s": floor_client,
        "floor_server_s": floor_server,
        "bytes_sent_per_client": sent,
        "bytes_received_per_client": received,
        "expansion": sent / (cfg.d * cfg.element_bytes),
        "client_rounds_s": dict(result.client_seconds),
        "server_rounds_s": dict(result.server_seconds),
        "correct": correct,
    }
    return finish_row(row)


def finish_row(row: dict) -> dict:
    """Derived columns; recomputed after rows of repeated runs are combined."""
    if "floor_client_s" in row:
        row["floor_s"] = row["floor_client_s"] + row["floor_server_s"]
        row["ratio"] = (row["masking_s"] + row["unmasking_s"]) / row["floor_s"]
        # The whole session, share_keys and the key rounds included, against the same floor.
        row["session_ratio"] = (row["client_s"] + row["server_s"]) / row["floor_s"]
    return row


# ---- over loopback TCP ------------------------------------------------------------


def _status_kb(name: str) -> int:
    """A ``Vm*`` line of /proc/self/status, in kB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {name} in /proc/self/status")


def _reset_peak() -> bool:
    """Reset VmHWM to the current resident set (Linux >= 4.0); False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _children_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _server_process(conn, wire_params: dict, round_timeout: float) -> None:
    """The server process: one TcpServer on 127.0.0.1; reports its port, then its outcome."""
    params = params_from_wire(wire_params)
    marks: dict = {"rounds": []}

    def on_event(kind: str, info) -> None:
        if kind == "round_end":
            marks["rounds"].append((info["round"], time.monotonic()))
        elif kind in ("done", "aborted"):
            marks["end"] = time.monotonic()

    server = TcpServer(
        params, host="127.0.0.1", port=0, round_timeout=round_timeout, join_timeout=round_timeout, on_event=on_event
    )
    box: list = []

    async def serve(task_status=trio.TASK_STATUS_IGNORED) -> None:
        box.append(await server.run(task_status=task_status))

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve)
            conn.send(("listening", port))

    # Everything is imported and built: this is the baseline the session's memory is counted from.
    baseline = _status_kb("VmRSS")
    reset = _reset_peak()
    cpu = _cpu_seconds()
    trio.run(main)
    cpu = _cpu_seconds() - cpu
    peak = _status_kb("VmHWM")
    res = box[0]
    a = res.abort
    conn.send(
        (
            "done",
            {
                "baseline_kb": baseline,
                "peak_kb": peak,
                "peak_reset": reset,
                "cpu_s": cpu,
                "rounds": marks["rounds"],
                "end": marks.get("end"),
                "abort": None if a is None else (a.round, a.count, a.threshold, str(a)),
                "counts": res.counts,
                "dropouts": res.dropouts,
                "violations": [(v.client, v.rule, v.round, v.detail) for v in res.violations],
                "included": list(res.included),
                "total": None if res.result is None else res.result.total,
                "bytes_sent": res.bytes_sent,
                "bytes_received": res.bytes_received,
                "session": fingerprint(frame for _, frame in res.transcript.accepted_messages()),
            },
        )
    )
    conn.close()


def _expect(conn, kind: str, timeout: float, proc) -> object:
    if not conn.poll(timeout):
        raise RuntimeError(f"the server process sent no {kind!r} within {timeout:g} s")
    try:
        got, value = conn.recv()
    except EOFError:
        proc.join(5)
        raise RuntimeError(f"the server process died (exit code {proc.exitcode}) before {kind!r}") from None
    if got != kind:
        raise RuntimeError(f"the server process sent {got!r}, expected {kind!r}")
    return value


async def _run_clients(port: int, machines, hooks) -> dict:
    outcomes = {}

    async def one(u: int) -> None:
        outcomes[u] = await run_client("127.0.0.1", port, u, client=machines[u], before_send=hooks.get(u))

    async with trio.open_nursery() as nursery:
        for u in sorted(machines):
            nursery.start_soon(one, u)
    return outcomes


def run_tcp(cfg: Config, seed: int) -> dict:
    """One session over loopback TCP: the server in a fresh process, the clients here."""
    inputs = random_inputs(cfg, seed)
    dropped = set(cfg.dropped)
    params, machines = setup_session(
        inputs, threshold=cfg.threshold, modulus=1 << cfg.modulus_bits, seed=seed if cfg.seeded else None,
        **cfg.session_kwargs(),
    )
    hooks = {u: leave_at(DROP_ROUND) for u in dropped}
    ctx = multiprocessing.get_context("spawn")  # fork would hand the server this process's memory
    here, there = ctx.Pipe()
    proc = ctx.Process(target=_server_process, args=(there, params_to_wire(params), ROUND_TIMEOUT), daemon=True)
    proc.start()
    there.close()
    try:
        port = _expect(here, "listening", STARTUP_TIMEOUT, proc)
        start = time.monotonic()
        outcomes = trio.run(_run_clients, port, machines, hooks)
        clients_done = time.monotonic()
        srv = _expect(here, "done", 4 * ROUND_TIMEOUT, proc)
        proc.join(30)
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()
        here.close()
    if srv["abort"] is not None:
        raise secagg.AbortError(*srv["abort"][:3], f"over TCP: {srv['abort'][3]}")

    # The session must be exactly the planned one: nobody dropped but the planned dropouts.
    ids = set(params.client_ids)
    problems = []
    if set(srv["included"]) != ids - dropped:
        missing = sorted(ids - set(srv["included"]))
        problems.append(f"not included: {missing[:10]}, planned dropouts: {sorted(dropped)[:10]}")
    if srv["counts"].get("share_keys") != cfg.n:
        problems.append(f"counts {srv['counts']}")
    if srv["violations"]:
        problems.append(f"transport rules broken: {srv['violations'][:3]}")
    status = {u: o.status for u, o in outcomes.items()}
    bad = {u: s for u, s in status.items() if s != ("left" if u in dropped else "done")}
    if bad:
        problems.append(f"client statuses {dict(list(bad.items())[:5])}")
    # Both ends count the same bytes (framing and hello/params included).
    mismatch = [
        u for u, o in outcomes.items()
        if (o.bytes_sent, o.bytes_received) != (srv["bytes_sent"].get(u), srv["bytes_received"].get(u))
    ]
    if mismatch:
        problems.append(f"client and server byte counts differ for {mismatch[:5]}")
    if problems:
        raise RuntimeError(f"{cfg}: " + "; ".join(problems))

    included = srv["included"]
    correct = bool(np.array_equal(srv["total"], expected_total(inputs, included, cfg.modulus_bits)))
    # Wire bytes = message bytes + the hello frame + one length prefix per frame.
    overhead = {u: len(encode_frame(encode_hello(u))) + HEADER_BYTES * len(outcomes[u].sent_rounds) for u in included}
    sent = statistics.fmean(srv["bytes_sent"][u] for u in included)
    # A mean of the same integers as the in-memory count, so the two compare exactly.
    message_bytes = statistics.fmean(srv["bytes_sent"][u] - overhead[u] for u in included)
    rounds, previous = {}, start
    for name, at in srv["rounds"]:
        rounds[name], previous = at - previous, at
    row = {
        "transport": "tcp",
        "n": cfg.n,
        "d": cfg.d,
        "dropout": cfg.dropout,
        "dropped": len(dropped),
        "drop_round": DROP_ROUND,
        "modulus_bits": cfg.modulus_bits,
        "t": cfg.threshold,
        "included": len(included),
        "wall_s": srv["end"] - start,
        "clients_wall_s": clients_done - start,
        "round_wall_s": rounds,
        "server_cpu_s": srv["cpu_s"],
        "server_baseline_kb": srv["baseline_kb"],
        "server_peak_kb": srv["peak_kb"],
        "server_session_kb": srv["peak_kb"] - srv["baseline_kb"],
        "peak_reset": srv["peak_reset"],
        "bytes_sent_per_client": sent,
        "bytes_received_per_client": statistics.fmean(srv["bytes_received"][u] for u in included),
        "framing_bytes_per_client": statistics.fmean(overhead.values()),
        "message_bytes_per_client": message_bytes,
        "expansion": sent / cfg.raw_bytes,
        "session": srv["session"],
        "total_digest": digest(srv["total"]),
        "included_ids": included,
        "correct": correct,
    }
    return row


TRANSPORTS: dict[str, Callable[[Config, int], dict]] = {"memory": run_memory, "tcp": run_tcp}

MEASURED = (
    "client_s", "server_s", "masking_s", "unmasking_s", "floor_client_s", "floor_server_s",
    "wall_s", "setup_s", "total_wall_s", "hbc_wall_s", "cpu_s", "hbc_cpu_s", "clients_wall_s", "server_cpu_s", "server_baseline_kb", "server_peak_kb", "server_session_kb",
)
PER_ROUND = ("client_rounds_s", "server_rounds_s", "round_wall_s")


def combine(rows: list[dict], stat: str) -> dict:
    """One row from repeated runs: each measured number is the best (min) or the median."""
    pick = min if stat == "best" else statistics.median
    out = dict(rows[0])
    for key in MEASURED:
        if key in out:
            out[key] = pick(r[key] for r in rows)
    for key in PER_ROUND:
        if key in out:
            out[key] = {k: pick(r[key].get(k, 0.0) for r in rows) for k in rows[0][key]}
    for key in ("correct", "same_session"):
        if key in out:
            out[key] = all(r[key] for r in rows)
    if "differences" in out:
        out["differences"] = sorted({x for r in rows for x in r["differences"]})
    out["runs"] = len(rows)
    return finish_row(out)


def run_config(cfg: Config, transport: str, repeat: int, stat: str, seed: int,
               progress: Callable[[str], None] | None = None) -> dict:
    """``repeat`` runs of one configuration, combined; ``progress`` sees the client steps of in-memory sessions."""
    if cfg.malicious:
        return run_against_hbc(cfg, repeat, stat, seed, progress)
    run = functools.partial(run_memory, progress=progress) if transport == "memory" else TRANSPORTS[transport]
    return combine([run(cfg, seed + i) for i in range(repeat)], stat)


def run_against_hbc(cfg: Config, repeat: int, stat: str, seed: int,
                    progress: Callable[[str], None] | None = None) -> dict:
    """Malicious-server rows, each beside the honest-but-curious session of the same n, d and
    dropouts (run right after it, same inputs): ``hbc_wall_s`` and ``hbc_cpu_s`` are that session's wall
    time and CPU seconds (setup included; less sensitive to other work on the machine than the wall)."""
    rows = []
    for i in range(repeat):
        row = run_memory(cfg, seed + i, progress)
        hbc = run_memory(dataclasses.replace(cfg, malicious=False), seed + i, progress)
        row["hbc_wall_s"], row["hbc_cpu_s"] = hbc["wall_s"], hbc["cpu_s"]
        rows.append(row)
    return combine(rows, stat)


# ---- the client pool against the serial run ------------------------------------------


def _one_pool_run(conn, cfg: Config, workers: int | None, seed: int) -> None:
    """In a fresh process: one seeded session; its figures go back as JSON (peaks from this process's start)."""
    inputs = random_inputs(cfg, seed)
    cpu = _cpu_seconds()
    start = time.perf_counter()
    result = secagg.simulate(
        inputs, threshold=cfg.threshold, modulus=1 << cfg.modulus_bits, dropouts={DROP_ROUND: cfg.dropped},
        seed=seed, workers=workers, **cfg.session_kwargs(),
    )
    wall = time.perf_counter() - start
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # the workers, joined when simulate returned
    conn.send_bytes(json.dumps({
        "workers": result.workers, "total_wall_s": wall, "wall_s": wall - result.setup_seconds,
        "cpu_s": _cpu_seconds() - cpu, "workers_cpu_s": children.ru_utime + children.ru_stime,
        "peak_kb": _status_kb("VmHWM"), "worker_peak_kb": children.ru_maxrss if result.workers > 1 else None,
        "transcript": hashlib.sha256(b"".join(len(f).to_bytes(4, "big") + f for f in result.transcript)).hexdigest(),
        "total_digest": digest(result.total), "included_ids": list(result.included),
        "correct": bool(np.array_equal(result.total, expected_total(inputs, result.included, cfg.modulus_bits))),
    }).encode())
    conn.close()


def run_pool_pair(cfg: Config, workers: int | None, seed: int) -> tuple[dict, dict]:
    """The same seeded session run serially (workers=1) and in the client pool, each in a fresh process
    (so each peak is its own): wall and CPU times, peak memory, and what the server saw and summed."""
    ctx = multiprocessing.get_context("spawn")
    out = []
    for w in (1, workers):
        here, there = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_one_pool_run, args=(there, cfg, w, seed))  # not a daemon: it forks workers
        proc.start()
        there.close()
        try:
            out.append(json.loads(here.recv_bytes()))
        except EOFError:
            raise RuntimeError(f"the benchmark process died (exit code {proc.exitcode})") from None
        finally:
            proc.join()
            here.close()
    return out[0], out[1]


def run_speedup(cfg: Config, workers: int | None, repeat: int, stat: str, seed: int) -> dict:
    """``repeat`` alternating serial/pool pairs of one configuration, combined into one row."""
    pick = min if stat == "best" else statistics.median
    pairs = [run_pool_pair(cfg, workers, seed + i) for i in range(repeat)]
    serial, pool = [a for a, _ in pairs], [b for _, b in pairs]
    same = all(a[k] == b[k] for a, b in pairs for k in ("transcript", "total_digest", "included_ids"))
    return {
        "n": cfg.n, "d": cfg.d, "dropout": cfg.dropout, "dropped": len(cfg.dropped), "k": cfg.degree,
        "workers": pool[0]["workers"], "cores": available_cores(), "runs": repeat,
        "serial_s": pick(r["total_wall_s"] for r in serial), "pool_s": pick(r["total_wall_s"] for r in pool),
        "serial_wall_s": pick(r["wall_s"] for r in serial), "pool_wall_s": pick(r["wall_s"] for r in pool),
        "speedups": [a["total_wall_s"] / b["total_wall_s"] for a, b in pairs],
        "serial_cpu_s": pick(r["cpu_s"] for r in serial),
        "pool_parent_cpu_s": pick(r["cpu_s"] for r in pool), "pool_workers_cpu_s": pick(r["workers_cpu_s"] for r in pool),
        "load_average": os.getloadavg()[0],
        "serial_peak_kb": max(r["peak_kb"] for r in serial),
        "pool_peak_kb": max(r["peak_kb"] for r in pool),
        # ru_maxrss of the largest worker, with the pages it shares with the server's process.
        "worker_peak_kb": max(r["worker_peak_kb"] or 0 for r in pool),
        "same_session": same,
        "correct": all(r["correct"] for r in serial + pool),
    }


def session_differences(mem: dict, tcp: dict) -> list[str]:
    """What differs between the two transports' runs of one session (empty: the same, correct session)."""
    checks = {
        "messages at the server": mem["session"] == tcp["session"],
        "totals": mem["total_digest"] == tcp["total_digest"],
        "included sets": mem["included_ids"] == tcp["included_ids"],
        "message bytes per client": mem["message_bytes_per_client"] == tcp["message_bytes_per_client"],
        "in-memory total = plaintext sum": mem["correct"],
        "TCP total = plaintext sum": tcp["correct"],
    }
    return [name for name, ok in checks.items() if not ok]


def run_both(cfg: Config, repeat: int, stat: str, seed: int,
             progress: Callable[[str], None] | None = None) -> tuple[dict, dict]:
    """Each repeat: in memory, then over TCP, same seed; returns the combined (memory, tcp) rows."""
    mems, tcps = [], []
    for i in range(repeat):
        mem, tcp = run_memory(cfg, seed + i, progress), run_tcp(cfg, seed + i)
        differences = session_differences(mem, tcp)
        mem["same_session"] = tcp["same_session"] = not differences
        mem["differences"] = tcp["differences"] = differences
        mems.append(mem)
        tcps.append(tcp)
    return combine(mems, stat), combine(tcps, stat)
