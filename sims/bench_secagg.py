"""Benchmark of one Bonawitz secure aggregation session, against the PRG floor and over loopback TCP.

    python3 -m sims.bench_secagg            # n in {10, 50, 100}, d in {1e3, 1e5}, dropout in {0, .1, .3}
    python3 -m sims.bench_secagg --quick    # n in {10, 50}, d in {1e3, 1e4}: a smoke run
    python3 -m sims.bench_secagg --transport both           # n in {50, 100, 200}, d in {1e4, 1e5}, dropout in {0, .1}
    python3 -m sims.bench_secagg --transport both --quick   # n in {10, 50}, d in {1e3, 1e4}, dropout in {0, .1}
    python3 -m sims.bench_secagg --transport tcp --n 200 --d 1e5 --dropout 0.1
    python3 -m sims.bench_secagg --graph sparse --n 100 1000 10000 --d 1e3 --dropout 0.1   # SecAgg+
    python3 -m sims.bench_secagg --graph sparse --malicious --n 100 1000 --d 1e4 --dropout 0.1   # malicious server
    python3 -m sims.bench_secagg --liar --n 50 100 200     # unmasking: honest vs one lying responder
    python3 -m sims.bench_secagg --breakdown [--graph sparse]   # the masked_input round, per component
    python3 -m sims.bench_secagg --graph sparse --n 10000 --d 1e4 --dropout 0.1 --speedup   # serial vs client pool

``--malicious`` (memory transport) runs malicious-server mode: signed keys and
the consistency round, and on a sparse graph the global quorum and signed
partner sets of protocol_spec.md 14.5, with k sized for MIN_GROUP honest
inputs per learnable sum.  Each malicious session is followed by the
honest-but-curious session of the same n, d and dropouts, and the table
gives their ratio on wall time and on CPU seconds (mal/HbC; goal at most 2
at n = 1,000).

In-memory sessions run their clients in ``simulate``'s client pool
(``secagg.pool``: one worker process per core from 1,000 clients up;
``--workers`` to choose).  ``--speedup`` instead runs each configuration
serially and in the pool (seeded, so both are the same session; each run in
a fresh process), and prints the speedup, the CPU seconds, the peak memory
of the server's process and of the largest worker, and whether the server
received the same messages in the same order and got the same sum.  ``--breakdown`` profiles every client's real
masked_input step (cProfile) at n = 100, d = 10^5 (or --n, --d) and groups
its internal time by component (keystream, X25519, HKDF, cipher setup, share
decryption, numpy additions, message coding, other) as fractions of the
client floor: the explanation of the ratio, measured.

``--graph sparse`` runs SecAgg+ sessions on the Harary graph sized by
``secagg.graph.sparse_parameters`` for ``--tolerated-dropout`` (default 0.1)
and ``--tolerated-corrupt`` (default 0.05); the table then shows k and that
t, and "per client s" (all clients' seconds / n) shows the per-client cost
growing with k ~ log n rather than with n.

For each configuration it runs one in-memory session (``secagg.simulate``)
with threshold t = floor(2n/3) + 1 (complete graph) and reports the seconds spent by all
clients together and by the server, per round; the bytes each client sends
and receives; and how far masking + unmasking is from the PRG floor.

Dropouts: the dropping clients (the first k ids, k = round(rate * n)) leave at
the masked_input round.  They completed share_keys, so every survivor has
already masked with their pairwise keys, but their masked input never
arrives: the server must reconstruct their X25519 keys and expand every
pairwise mask they share with a survivor.  That is the most expensive place
to drop.

The PRG floor is the time AES-256-CTR takes on this machine to expand exactly
the mask material the protocol must expand on the session's graph, one fresh
key per stream, each stream d * element_bytes bytes:

    clients: each of the |U3| senders expands 1 self mask + |N(u) ∩ U2| pairwise masks
    server:  |U3| self masks + one pairwise mask per (dropped, surviving neighbour) pair

(on the complete graph: |U3| (1 + |U2| - 1) and |U3| + |U2 \\ U3| * |U3|).  It is
measured twice right after each session (the lower of the two is used; the
graph is drawn from the session id), so it tracks the machine's state.

    ratio   = (masking + unmasking) / floor
    session = (all clients' seconds + the server's seconds, every round) / floor
    masking   = all clients' masked_input round (decrypt shares, X25519, HKDF, PRG, adds, encoding)
    unmasking = the server's unmasking round (Shamir reconstruction, X25519, HKDF, PRG, subtractions)

A ratio of 1 means the protocol costs no more than its unavoidable keystream;
everything above 1 is overhead (key agreement, key derivation, numpy
arithmetic, message encoding, Python).  The goal is ratio <= 2 for n=100,
d=10^5.  ``session`` puts the whole session over the same floor: the key
rounds and share_keys (key agreements, Shamir sharing, share encryption)
that the masked-input ratio leaves out.

Loopback mode (``--transport tcp`` or ``both``)
-----------------------------------------------

The same session over real sockets on 127.0.0.1 (``secagg.tcp``).  The
server (``TcpServer``) runs in its own process, started with the
multiprocessing "spawn" method so that it inherits none of this process's
memory; every client runs in this process, all in one trio event loop, each
on its own connection, with the dropping clients disconnecting instead of
sending their masked input (``secagg.tcp.leave_at``).  Rounds time out after
ROUND_TIMEOUT seconds, far more than any round takes, so nobody drops by
accident; the run checks that the included set is exactly the non-dropped
clients and that no transport rule was broken.

In these modes keys, masks and nonces are derived from ``--seed``
(``setup_session(seed=...)``, reproducible, for benchmarking only), so with
``both`` the in-memory and the TCP run of a configuration are the same
session: the run checks that the server received byte-identical messages
(an order-independent fingerprint of its transcript), that both totals are
equal, and that they equal the plaintext sum of the included inputs.

What is reported per configuration:

* wall time, end to end: TCP from the moment the clients start connecting to
  the server's result (its "done" event; both clocks are CLOCK_MONOTONIC);
  in memory the wall time of ``simulate`` minus its setup (parameters and
  client state machines, ``SimulationResult.setup_seconds``), i.e. from the
  first message to the result.  ``tcp/mem`` is their ratio.  Per round: TCP from
  the previous round's close to this one's (the first round includes
  connecting and the hello/params bootstrap); in memory clients + server
  seconds of that round.  The server process computes while the clients
  wait (and the reverse), so TCP can overlap work the in-memory run does
  serially;
* peak server memory: the server process's VmHWM (peak resident set) from
  /proc/self/status, after resetting it (/proc/self/clear_refs) once the
  process has imported everything and is about to listen, minus its
  resident set at that moment (the baseline, also printed).  So the number
  is what the session itself added to the server at its peak.  It includes
  the in-memory transcript the benchmark keeps to check that both transports
  ran the same session (about n * d * element bytes); ``secagg serve`` keeps
  none (its masked inputs are summed as they arrive);
* bytes on the wire per client (mean over the included clients), counted by
  the server on each connection and checked against the client's own count:
  every frame the client sent, 4-byte length prefixes and the hello frame
  included (TCP/IP headers are not counted); received bytes include the
  params frame.  expansion = bytes sent per client / (d * element_bytes),
  the raw input.  In ``both`` mode the message bytes (wire bytes minus hello
  and prefixes) must equal the in-memory count exactly.

Finally the expansion in the setting of Bonawitz et al. (2^10 users,
d = 2^20, 16-bit inputs, M = 2^16), for which they report 1.73x, is
*extrapolated* (not measured) two ways: from a message-size model that
encodes our real message classes with placeholder fields of the true sizes
(checked against every measured row, where it must be exact), and from a
least-squares fit bytes/client = a + b*n + c*d to this run's measured rows.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import multiprocessing
import os
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import trio
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from rich.table import Table

import secagg
from secagg.bootstrap import encode_hello, params_from_wire, params_to_wire
from secagg.framing import HEADER_BYTES, encode_frame
from secagg.graph import SparseChoice
from secagg import shamir
from secagg.messages import AdvertiseKeys, EncryptedShares, MaskedInput, Round, UnmaskingShares, max_message_bytes
from secagg.params import SESSION_ID_BYTES, PublicParams, element_bytes, sparse_choice
from secagg.sharecrypt import CIPHERTEXT_BYTES
from secagg.server import Server
from secagg.pool import available_cores
from secagg.simulation import setup_session
from secagg.tcp import TcpServer, leave_at, run_client
from sims.common import Console, HelpFormatter, client_count, entry_point, positive_int

FULL_N = (10, 50, 100)
FULL_D = (10**3, 10**5)
QUICK_N = (10, 50)
QUICK_D = (10**3, 10**4)
DROPOUTS = (0.0, 0.1, 0.3)
# The loopback grid (--transport tcp / both).
TCP_N = (50, 100, 200)
TCP_D = (10**4, 10**5)
TCP_DROPOUTS = (0.0, 0.1)
QUICK_TCP_N = (10, 50)
QUICK_TCP_D = (10**3, 10**4)
DROP_ROUND = "masked_input"
GOAL_N, GOAL_D, GOAL_RATIO = 100, 10**5, 2.0
ROUNDS = ("advertise_keys", "share_keys", "masked_input", "unmasking")
MALICIOUS_ROUNDS = ("advertise_keys", "share_keys", "masked_input", "consistency_check", "unmasking")
ROUND_TIMEOUT = 600.0  # per TCP round: far above any round here, so no client drops by accident
STARTUP_TIMEOUT = 120.0  # for the server process to import and listen
BUDGET_SECONDS = 120.0  # grid configurations estimated above this are skipped (select them with --n/--d)
# The setting of Bonawitz et al. for which they report a 1.73x expansion.
PAPER_N, PAPER_D, PAPER_BITS, PAPER_EXPANSION = 2**10, 2**20, 16, 1.73


@dataclass(frozen=True)
class Config:
    n: int
    d: int
    dropout: float
    modulus_bits: int
    seeded: bool = False  # keys, masks and nonces from the seed too: both transports run the same session
    graph: str = "complete"  # or "sparse": SecAgg+ Harary graph sized for the tolerated fractions below
    tolerated_dropout: float = 0.1
    tolerated_corrupt: float = 0.05
    malicious: bool = False  # malicious-server mode: signed keys, the consistency round
    workers: int | None = None  # in-memory runs: processes for the clients (None: simulate's choice)

    @property
    def threshold(self) -> int:
        if self.graph == "sparse":
            return sized(self.n, self.tolerated_dropout, self.tolerated_corrupt, self.malicious).threshold
        return 2 * self.n // 3 + 1

    @property
    def degree(self) -> int:
        """Neighbours per client: k on the sparse graph, n - 1 on the complete one."""
        if self.graph == "sparse":
            return sized(self.n, self.tolerated_dropout, self.tolerated_corrupt, self.malicious).degree
        return self.n - 1

    def session_kwargs(self) -> dict:
        """The mode and graph arguments of setup_session / simulate."""
        mode = {"malicious": True} if self.malicious else {}
        if self.graph == "complete":
            return mode
        return dict(graph="sparse", tolerated_dropout=self.tolerated_dropout, tolerated_corrupt=self.tolerated_corrupt,
                    **mode)

    @property
    def dropped(self) -> list[int]:
        # Which clients drop does not change the cost, so take the first ids.
        return list(range(1, round(self.dropout * self.n) + 1))

    @property
    def element_bytes(self) -> int:
        return element_bytes(self.modulus_bits)

    @property
    def raw_bytes(self) -> int:
        return self.d * self.element_bytes


@functools.lru_cache(maxsize=None)
def sized(n: int, dropout: float, corrupt: float, malicious: bool = False) -> SparseChoice:
    """The graph PublicParams.create builds (malicious mode also asks for MIN_GROUP honest inputs per sum)."""
    return sparse_choice(n, dropout=dropout, corrupt=corrupt, malicious=malicious)


# ---- the PRG floor ------------------------------------------------------------


def floor_streams(params: PublicParams, u2: frozenset[int], u3: frozenset[int]) -> tuple[int, int]:
    """Number of d-element streams (clients, server) the protocol expands on this session's graph.

    Each sender in U3 expands its self mask and one pairwise mask per neighbour in U2; the
    server expands every self mask of U3 and, per dropped client, one pairwise mask per
    surviving neighbour (on the complete graph: |U3| (1 + |U2| - 1) and |U3| + |U2 \\ U3| |U3|).
    """
    clients = sum(1 + len(params.neighbours(u) & u2) for u in u3)
    server = len(u3) + sum(len(params.neighbours(v) & u3) for v in u2 - u3)
    return clients, server


def prg_seconds(streams: int, nbytes: int) -> float:
    """Seconds for AES-256-CTR to expand ``streams`` streams of ``nbytes``, one fresh key each."""
    # Keys are drawn before the clock starts: the floor is the keystream, not the key source.
    keys = [os.urandom(32) for _ in range(streams)]
    zeros = bytes(nbytes)
    buffer = bytearray(nbytes + 15)  # update_into needs one spare block
    start = time.perf_counter()
    for key in keys:
        Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update_into(zeros, buffer)
    return time.perf_counter() - start


def measure_floor(cfg: Config, params: PublicParams, u2: frozenset[int], u3: frozenset[int]) -> tuple[float, float]:
    clients, server = floor_streams(params, u2, u3)
    nbytes = cfg.d * cfg.element_bytes
    return prg_seconds(clients, nbytes), prg_seconds(server, nbytes)


# ---- one configuration ----------------------------------------------------------


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


def run_memory(cfg: Config, seed: int) -> dict:
    """One session with the in-memory transport; returns one row of the table.

    Another transport only has to return the same keys from a function with
    this signature and be registered in ``TRANSPORTS``.
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
        workers=cfg.workers, **cfg.session_kwargs(),
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


def run_config(cfg: Config, transport: str, repeat: int, stat: str, seed: int) -> dict:
    if cfg.malicious:
        return run_against_hbc(cfg, repeat, stat, seed)
    return combine([TRANSPORTS[transport](cfg, seed + i) for i in range(repeat)], stat)


def run_against_hbc(cfg: Config, repeat: int, stat: str, seed: int) -> dict:
    """Malicious-server rows, each beside the honest-but-curious session of the same n, d and
    dropouts (run right after it, same inputs): ``hbc_wall_s`` and ``hbc_cpu_s`` are that session's wall
    time and CPU seconds (setup included; less sensitive to other work on the machine than the wall)."""
    rows = []
    for i in range(repeat):
        row = run_memory(cfg, seed + i)
        hbc = run_memory(dataclasses.replace(cfg, malicious=False), seed + i)
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


def run_both(cfg: Config, repeat: int, stat: str, seed: int) -> tuple[dict, dict]:
    """Each repeat: in memory, then over TCP, same seed; returns the combined (memory, tcp) rows."""
    mems, tcps = [], []
    for i in range(repeat):
        mem, tcp = run_memory(cfg, seed + i), run_tcp(cfg, seed + i)
        differences = session_differences(mem, tcp)
        mem["same_session"] = tcp["same_session"] = not differences
        mem["differences"] = tcp["differences"] = differences
        mems.append(mem)
        tcps.append(tcp)
    return combine(mems, stat), combine(tcps, stat)


def estimated_seconds(cfg: Config) -> float:
    """Rough seconds for one transport (fit by eye on a 2-core machine: n=200, d=1e5 takes ~10 s)."""
    return cfg.n * cfg.degree * (8e-5 + 3.5e-10 * cfg.raw_bytes)


# ---- reconstruction with a lying responder (audit 14.2) ----------------------------


def _lie(y: int) -> int:
    """The share y with 1 added to every word (mod p): wrong in every chunk."""
    words = (shamir.share_array([y])[0] + np.uint64(1)) % np.uint64(shamir.PRIME)
    return int.from_bytes(words.astype(">u4").tobytes(), "big")


def unmasking_seconds(n: int, d: int, liar: bool, seed: int) -> tuple[float, list[int], bool]:
    """Seconds of the server's unmasking close (complete graph, t = floor(2n/3)+1, client n dropped at
    masked_input), the responders it named, and whether the sum is exact.  With ``liar``, client 1
    (the lowest id, so on every fast path) adds 1 to every word of every share it reveals."""
    cfg = Config(n, d, 0.0, 32)
    inputs = random_inputs(cfg, seed)
    params, clients = setup_session(inputs, threshold=cfg.threshold, modulus=1 << 32, seed=seed)
    server = Server(params, auto_close=False)
    inbox = {u: c.start() for u, c in clients.items()}
    while True:
        round_ = server.round
        for u, msgs in inbox.items():
            if round_ is Round.MASKED_INPUT and u == n:
                continue  # the dropout
            for m in msgs:
                if liar and u == 1 and isinstance(m, UnmaskingShares):
                    m = dataclasses.replace(m, b_shares={v: _lie(y) for v, y in m.b_shares.items()},
                                            s_shares={v: _lie(y) for v, y in m.s_shares.items()})
                server.receive(m.encode())
        if round_ is Round.UNMASKING:
            start = time.perf_counter()
            server.close_round()
            seconds = time.perf_counter() - start
            result = server.result
            exact = bool(np.array_equal(result.total, expected_total(inputs, result.included, 32)))
            return seconds, sorted(result.cheaters), exact
        inbox = {m.recipient: clients[m.recipient].receive(m.encode()) for m in server.close_round()}


def reconstruction_table(ns: list[int], d: int, seed: int) -> tuple[Table, bool]:
    table = Table(
        title=f"server unmasking round, complete graph, t = floor(2n/3)+1, d = {d}, one dropout: honest vs one lying responder",
        caption="the liar (client 1) is on every fast path; it is named only when the shares prove it "
        "(protocol_spec.md 4.9: with t - 1 assumed colluders they rarely can)",
    )
    for name in ("n", "t", "honest s", "one liar s", "liar / honest", "named", "exact"):
        table.add_column(name, justify="right")
    ok = True
    for n in ns:
        honest, _, exact_h = unmasking_seconds(n, d, False, seed)
        lying, named, exact_l = unmasking_seconds(n, d, True, seed)
        ok &= exact_h and exact_l
        table.add_row(str(n), str(2 * n // 3 + 1), f"{honest:.3f}", f"{lying:.3f}", f"{lying / honest:.2f}",
                      str(named), str(exact_h and exact_l))
    return table, ok


# ---- where the clients' masked_input round goes ------------------------------------------

# (component, predicate on a cProfile entry's (file, line, function)): the first match wins.
_COMPONENTS: tuple[tuple[str, Callable[[tuple[str, int, str]], bool]], ...] = (
    ("AES-CTR keystream (the floor's work)", lambda f: "update_into" in f[2]),
    ("X25519 agreements", lambda f: "exchange" in f[2] and "x25519" in f[2].lower()),
    ("HKDF key derivation", lambda f: "hkdf" in f[0].lower() or "HKDF" in f[2]),
    ("AES cipher setup", lambda f: "ciphers" in f[0] or "create_encryption_ctx" in f[2]),
    ("share decryption and decoding", lambda f: f[0].endswith(("sharecrypt.py", "shamir.py")) or "ChaCha20" in f[2]),
    ("numpy additions (add_masks)", lambda f: f[0].endswith("masking.py") and f[2] == "add_masks"),
    ("message decoding and encoding", lambda f: f[0].endswith("messages.py") or "msgpack" in f[0] or "Packer" in f[2]),
)


def masked_input_breakdown(cfg: Config, seed: int) -> tuple[dict[str, float], float, float]:
    """cProfile of every client's real masked_input step (decode, shares, masks, encode): its
    internal time grouped by component, their sum, and the AES-CTR client floor."""
    import cProfile
    import pstats

    inputs = random_inputs(cfg, seed)
    params, clients = setup_session(inputs, threshold=cfg.threshold, modulus=1 << cfg.modulus_bits, seed=seed,
                                    **cfg.session_kwargs())
    server = Server(params)
    adverts = [m.encode() for c in clients.values() for m in c.start()]
    rosters = [m for data in adverts for m in server.receive(data)]
    shares = [r.encode() for m in rosters for r in clients[m.recipient].receive(m.encode())]
    forwarded = [(m.recipient, m.encode()) for data in shares for m in server.receive(data)]
    assert server.round is Round.MASKED_INPUT and len(forwarded) == cfg.n
    profile = cProfile.Profile()
    profile.enable()
    for u, data in forwarded:
        [m.encode() for m in clients[u].receive(data)]
    profile.disable()
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    parts = {name: 0.0 for name, _ in _COMPONENTS} | {"other (Python)": 0.0}
    for func, (_, _, internal, _, _) in stats.items():
        name = next((n for n, match in _COMPONENTS if match(func)), "other (Python)")
        parts[name] += internal
    u2 = frozenset(params.client_ids)
    floor = min(measure_floor(cfg, params, u2, u2)[0] for _ in range(2))
    return parts, sum(parts.values()), floor


def breakdown_table(cfg: Config, seed: int) -> Table:
    parts, total, floor = masked_input_breakdown(cfg, seed)
    table = Table(
        title=f"all clients' masked_input round, {cfg.graph} graph, n = {cfg.n}, d = {fmt_d(cfg.d)}, k = {cfg.degree}, "
        "no dropouts: internal time per component (cProfile)",
        caption=f"client floor (AES-256-CTR, fresh key per stream) {floor:.3f} s; the profiler adds a little "
        "to every Python-level call, so 'other' is an upper bound",
    )
    for name in ("component", "seconds", "of the floor"):
        table.add_column(name, justify="right" if name != "component" else "left")
    for name, seconds in parts.items():
        table.add_row(name, f"{seconds:.3f}", f"{seconds / floor:.2f}")
    table.add_row("total", f"{total:.3f}", f"{total / floor:.2f}")
    return table


# ---- bytes per client in the paper's setting: an extrapolation ----------------------


def model_sent_bytes(n: int, d: int, modulus_bits: int, dropped: int = 0, tcp: bool = False) -> float:
    """Mean bytes a surviving client sends, from our message classes with placeholder fields.

    Every field that varies (keys, ciphertexts, shares, the masked vector) has
    a fixed size, so encoding placeholders of that size gives the exact
    length; only the msgpack widths of the client ids depend on who sends.
    ``tcp`` adds the hello frame and the 4-byte length prefixes.
    """
    sid = bytes(SESSION_ID_BYTES)
    ids = range(1, n + 1)
    gone = set(range(1, dropped + 1))
    survivors = [u for u in ids if u not in gone]
    zeros = np.zeros(d, dtype=np.dtype(f"<u{element_bytes(modulus_bits)}"))
    masked_1 = len(MaskedInput(sid, 1, 0, masked=zeros).encode())  # client 1's masked input
    empty_1 = len(MaskedInput(sid, 1, 0, masked=zeros[:0]).encode())
    total = 0
    for u in survivors:
        msgs = [
            AdvertiseKeys(sid, u, 0, c_pk=bytes(32), s_pk=bytes(32)),
            EncryptedShares(
                sid, u, 0, commitment=bytes(32), ciphertexts={v: bytes(CIPHERTEXT_BYTES) for v in ids if v != u}
            ),
            UnmaskingShares(sid, u, 0, b_shares={v: 1 for v in survivors}, s_shares={v: 1 for v in gone}),
        ]
        sizes = [len(m.encode()) for m in msgs]
        # The masked input differs from client 1's only in the width of the sender id.
        sizes.append(masked_1 + len(MaskedInput(sid, u, 0, masked=zeros[:0]).encode()) - empty_1)
        total += sum(sizes)
        if tcp:
            total += len(encode_frame(encode_hello(u))) + HEADER_BYTES * len(sizes)
    return total / len(survivors)


def linear_fit(rows: list[dict]) -> tuple[float, float, float] | None:
    """Least squares bytes/client = a + b*n + c*d over the rows; None if n or d never varies."""
    if len({r["n"] for r in rows}) < 2 or len({r["d"] for r in rows}) < 2:
        return None
    x = np.array([[1.0, r["n"], r["d"]] for r in rows])
    y = np.array([r["bytes_sent_per_client"] for r in rows])
    (a, b, c), *_ = np.linalg.lstsq(x, y, rcond=None)
    return float(a), float(b), float(c)


def paper_table(rows: list[dict]) -> tuple[Table, list[str]]:
    """The paper's setting, extrapolated from our message sizes and from this run's rows."""
    notes = []
    # The model must reproduce every measurement of this run exactly.
    worst = 0.0
    for r in rows:
        model = model_sent_bytes(r["n"], r["d"], r["modulus_bits"], r["dropped"], tcp=r["transport"] == "tcp")
        worst = max(worst, abs(model - r["bytes_sent_per_client"]))
    notes.append(
        f"message-size model vs the {len(rows)} measured rows of this run: "
        f"largest difference {worst:.3g} bytes per client"
        + (" (exact)" if worst < 1e-6 else " [red](the model is off)[/]")
    )
    n, d = PAPER_N, PAPER_D
    raw = d * PAPER_BITS // 8
    params = PublicParams.create(
        range(1, n + 1), threshold=2 * n // 3 + 1, modulus=2**PAPER_BITS, dim=d, session_id=bytes(SESSION_ID_BYTES)
    )
    table = Table(
        title="Expansion in the paper's setting: n = 2^10 users, d = 2^20, 16-bit inputs, no dropouts "
        "- EXTRAPOLATED, not measured",
        caption=f"expansion = bytes sent per client / raw 16-bit input ({raw:,} B); "
        f"max_message_bytes (our frame limit) at M = 2^16: {max_message_bytes(params):,} B",
    )
    for col in ("source", "M", "sent per client", "expansion"):
        table.add_column(col, justify="left" if col == "source" else "right")
    table.add_row("Bonawitz et al., as reported", "-", "-", f"{PAPER_EXPANSION:.2f}")
    for label, bits in (("our messages, size model", 16), ("our messages, size model", 32)):
        msgs = model_sent_bytes(n, d, bits)
        wire = model_sent_bytes(n, d, bits, tcp=True)
        table.add_row(label, f"2^{bits}", f"{msgs:,.0f} B", f"{msgs / raw:.3f}")
        table.add_row(label + " + TCP framing, hello", f"2^{bits}", f"{wire:,.0f} B", f"{wire / raw:.3f}")
    wire_rows = [r for r in rows if r["transport"] == "tcp"] or rows
    fit = linear_fit(wire_rows)
    if fit is None:
        notes.append("linear fit: needs at least two values of n and of d in the run; skipped")
    else:
        a, b, c = fit
        eb = element_bytes(wire_rows[0]["modulus_bits"])
        # The fit's c is the element width of this run's modulus; the paper's 16-bit elements take 2 bytes.
        fitted = a + b * n + c * (PAPER_BITS // 8) / eb * d
        table.add_row(
            f"linear fit to this run's {wire_rows[0]['transport']} rows, c scaled to 2-byte elements",
            "2^16", f"{fitted:,.0f} B", f"{fitted / raw:.3f}",
        )
        notes.append(
            f"fit to {len(wire_rows)} {wire_rows[0]['transport']} rows: bytes/client = {a:.0f} + {b:.1f} n + {c:.4f} d "
            f"(c = element bytes {eb} of M = 2^{wire_rows[0]['modulus_bits']}); the fit cannot see that ids > 255 "
            "take 3 bytes in msgpack, the size model can"
        )
    notes.append(
        "M = 2^16 wraps the sum of 2^10 16-bit inputs; M = 2^32 (the smallest of our 1/2/4/8-byte widths holding "
        "2^26) does not. We do not reproduce how the paper accounts for its 1.73x."
    )
    return table, notes


# ---- output ---------------------------------------------------------------------


def fmt_bytes(x: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if x < 1000 or unit == "GB":
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1000
    raise AssertionError


def fmt_d(d: int) -> str:
    return f"{d:.0e}".replace("e+0", "e")


def main_table(rows: list[dict], args) -> Table:
    table = Table(
        title=f"secagg, {rows[0]['transport']} transport, {args.graph} graph, "
        + ("malicious-server mode, " if args.malicious else "")
        + f"M = 2^{args.modulus_bits}, "
        + ("t = floor(2n/3)+1" if args.graph == "complete" else
           f"k, t sized for dropout {args.tolerated_dropout:g}, corrupt {args.tolerated_corrupt:g}")
        + f", dropouts leave at {DROP_ROUND}",
        caption="client s: all clients, all rounds (summed over the worker processes); per client = client s / n; "
        "masking = clients' masked_input round; unmasking = server's unmasking round;\n"
        "ratio = (masking + unmasking) / AES-CTR floor; session = (client s + server s) / the same floor "
        "(every round, share_keys included); "
        "bytes per client: mean over the included clients; expansion = bytes sent / (d * element bytes)"
        + ("; mal/HbC = this session's wall s (CPU s: user + system of this process and its workers, setup "
           "included) / the honest-but-curious session's (same n, d, dropouts, each graph sized for its mode)"
           if args.malicious else ""),
    )
    columns = ["n", "d", "dropout", "k", "t", "included", "workers", "wall s", "client s (all)", "per client s",
               "server s", "masking s", "unmasking s", "floor s", "ratio", "session", "sent/client", "recv/client",
               "expansion"]
    if args.malicious:
        columns += ["HbC wall s", "mal/HbC wall", "mal/HbC CPU"]
    for name in columns:
        table.add_column(name, justify="right")
    for r in rows:
        ratio = f"{r['ratio']:.2f}"
        if r["n"] == GOAL_N and r["d"] == GOAL_D:
            ratio = f"[{'green' if r['ratio'] <= GOAL_RATIO else 'red'}]{ratio}[/]"
        table.add_row(
            str(r["n"]),
            fmt_d(r["d"]),
            f"{r['dropout']:.1f} ({r['dropped']})",
            str(r["k"]),
            str(r["t"]),
            str(r["included"]) + ("" if r["correct"] else " [red]WRONG SUM[/]"),
            str(r["workers"]),
            f"{r['wall_s']:.2f}",
            f"{r['client_s']:.3f}",
            f"{r['client_s'] / r['n']:.4f}",
            f"{r['server_s']:.3f}",
            f"{r['masking_s']:.3f}",
            f"{r['unmasking_s']:.3f}",
            f"{r['floor_s']:.3f}",
            ratio,
            f"{r['session_ratio']:.2f}",
            fmt_bytes(r["bytes_sent_per_client"]),
            fmt_bytes(r["bytes_received_per_client"]),
            f"{r['expansion']:.2f}",
            *([f"{r['hbc_wall_s']:.2f}", f"{r['wall_s'] / r['hbc_wall_s']:.2f}", f"{r['cpu_s'] / r['hbc_cpu_s']:.2f}"]
              if args.malicious else []),
        )
    return table


def speedup_table(rows: list[dict]) -> Table:
    table = Table(
        title=f"the client pool against the serial run (same seeded session; {rows[0]['cores']} cores available)",
        caption="s: wall time of simulate(), setup (parameters, client state machines) included; "
        "speedup = serial s / pool s, one per alternating pair;\n"
        "each run in a fresh process; peak: its VmHWM (the server's process; imports included); worker peak: "
        "ru_maxrss of the largest worker, which counts the pages it shares with the server's process (the inputs);\n"
        "same: byte-identical messages at the server in the same order, equal sums and survivors;\n"
        "CPU: user + system seconds, serial run | pool: the server's process + all workers; "
        "load: the 1-minute load average at the end (other work on the machine slows both runs)",
    )
    for name in ("n", "d", "dropout", "k", "workers", "serial s", "pool s", "speedup", "serial CPU s",
                 "pool CPU s", "serial peak", "pool peak", "worker peak", "load", "same"):
        table.add_column(name, justify="right")
    for r in rows:
        peak = lambda kb: "-" if kb is None else fmt_bytes(kb * 1024)
        table.add_row(
            str(r["n"]), fmt_d(r["d"]), f"{r['dropout']:.1f} ({r['dropped']})", str(r["k"]), str(r["workers"]),
            f"{r['serial_s']:.2f}", f"{r['pool_s']:.2f}",
            ", ".join(f"{x:.2f}" for x in r["speedups"]),
            f"{r['serial_cpu_s']:.1f}", f"{r['pool_parent_cpu_s']:.1f} + {r['pool_workers_cpu_s']:.1f}",
            peak(r["serial_peak_kb"]), peak(r["pool_peak_kb"]), peak(r["worker_peak_kb"]), f"{r['load_average']:.1f}",
            ("[green]yes[/]" if r["same_session"] else "[red]NO[/]") + ("" if r["correct"] else " [red]WRONG SUM[/]"),
        )
    return table


def rounds_table(rows: list[dict]) -> Table:
    table = Table(title="seconds per round (clients: summed over all clients), and the floor split")
    rounds = MALICIOUS_ROUNDS if any(r["malicious"] for r in rows) else ROUNDS
    for name in ("n", "d", "dropout"):
        table.add_column(name, justify="right")
    for who in ("client", "server"):
        for r in rounds:
            table.add_column(f"{who}\n{r}", justify="right")
    table.add_column("floor\nclients", justify="right")
    table.add_column("floor\nserver", justify="right")
    for r in rows:
        table.add_row(
            str(r["n"]),
            fmt_d(r["d"]),
            f"{r['dropout']:.1f}",
            *(f"{r['client_rounds_s'].get(x, 0.0):.3f}" for x in rounds),
            *(f"{r['server_rounds_s'].get(x, 0.0):.3f}" for x in rounds),
            f"{r['floor_client_s']:.3f}",
            f"{r['floor_server_s']:.3f}",
        )
    return table


def loopback_table(pairs: list[tuple[dict | None, dict]], args) -> Table:
    reset = all(t["peak_reset"] for _, t in pairs)
    table = Table(
        title=f"secagg over loopback TCP (server in its own process, the n clients in this one), "
        f"M = 2^{args.modulus_bits}, t = floor(2n/3)+1, dropouts leave at {DROP_ROUND}",
        caption="wall s: first message to the server's result; tcp/mem = TCP wall / in-memory wall (same session);\n"
        "server peak: VmHWM of the server process "
        + (
            "reset after its imports, minus its RSS then (baseline)"
            if reset
            else "[red](could not be reset: includes imports)[/] minus its RSS after imports"
        )
        + "; server CPU: user + system s of that process;\n"
        "sent/client: bytes the server read per included client, all frames incl. 4-byte prefixes and the hello "
        "(framing = those two); expansion = sent / (d * element bytes);\n"
        "same: byte-identical messages at the server, equal totals, equal message bytes, both = plaintext sum",
    )
    cols = ["n", "d", "dropout", "t", "included", "mem wall s", "tcp wall s", "tcp/mem", "server CPU s",
            "server peak", "baseline", "sent/client", "framing", "raw/client", "expansion", "recv/client", "same"]
    for name in cols:
        table.add_column(name, justify="right")
    for m, t in pairs:
        if m is None:
            same = "-"
        else:
            same = "[green]yes[/]" if t["same_session"] else f"[red]NO: {', '.join(t['differences'])}[/]"
        table.add_row(
            str(t["n"]),
            fmt_d(t["d"]),
            f"{t['dropout']:.1f} ({t['dropped']})",
            str(t["t"]),
            str(t["included"]) + ("" if t["correct"] else " [red]WRONG SUM[/]"),
            "-" if m is None else f"{m['wall_s']:.3f}",
            f"{t['wall_s']:.3f}",
            "-" if m is None else f"{t['wall_s'] / m['wall_s']:.2f}",
            f"{t['server_cpu_s']:.2f}",
            fmt_bytes(t["server_session_kb"] * 1024),
            fmt_bytes(t["server_baseline_kb"] * 1024),
            fmt_bytes(t["bytes_sent_per_client"]),
            f"{t['framing_bytes_per_client']:.0f} B",
            fmt_bytes(t["d"] * element_bytes(t["modulus_bits"])),
            f"{t['expansion']:.3f}",
            fmt_bytes(t["bytes_received_per_client"]),
            same,
        )
    return table


def loopback_rounds_table(pairs: list[tuple[dict | None, dict]]) -> Table:
    table = Table(
        title="wall seconds per round: in memory (clients + server) | TCP (previous round's close to this one's)",
        caption="TCP advertise_keys includes connecting and the hello/params bootstrap",
    )
    for name in ("n", "d", "dropout"):
        table.add_column(name, justify="right")
    for r in ROUNDS:
        table.add_column(f"{r}\nmem", justify="right")
        table.add_column(f"{r}\ntcp", justify="right")
    for m, t in pairs:
        cells = []
        for r in ROUNDS:
            cells.append("-" if m is None else f"{m['round_wall_s'].get(r, 0.0):.3f}")
            cells.append(f"{t['round_wall_s'].get(r, 0.0):.3f}")
        table.add_row(str(t["n"]), fmt_d(t["d"]), f"{t['dropout']:.1f}", *cells)
    return table


def loopback_summary(pairs: list[tuple[dict | None, dict]]) -> list[str]:
    lines = []
    both = [(m, t) for m, t in pairs if m is not None]
    if both:
        ratios = [t["wall_s"] / m["wall_s"] for m, t in both]
        by_size: dict[tuple[int, int], list[str]] = {}
        for (m, t), x in zip(both, ratios):
            by_size.setdefault((t["n"], t["d"]), []).append(f"{x:.2f}")
        each = "; ".join(f"n={n} d={fmt_d(d)}: {', '.join(xs)}" for (n, d), xs in by_size.items())
        lines.append(
            f"TCP / in-memory wall time: min {min(ratios):.2f}, median {statistics.median(ratios):.2f}, "
            f"max {max(ratios):.2f} over {len(ratios)} configurations (by n, d, one per dropout rate: {each})"
        )
        same = sum(t["same_session"] for _, t in both)
        colour = "green" if same == len(both) else "red"
        lines.append(
            f"same session on both transports (identical messages, equal totals = plaintext sum of the included "
            f"inputs): [{colour}]{same} of {len(both)}[/]"
        )
    exp = [t["expansion"] for _, t in pairs]
    lines.append(
        f"measured expansion over TCP (wire bytes sent per client / raw input): {min(exp):.3f} .. {max(exp):.3f}"
    )
    worst = max(pairs, key=lambda p: p[1]["server_session_kb"])[1]
    lines.append(
        f"largest server peak: {fmt_bytes(worst['server_session_kb'] * 1024)} above a "
        f"{fmt_bytes(worst['server_baseline_kb'] * 1024)} baseline at n={worst['n']}, d={fmt_d(worst['d'])} "
        f"(the n masked inputs alone are {fmt_bytes(worst['n'] * worst['d'] * element_bytes(worst['modulus_bits']))})"
    )
    return lines


def verdict(rows: list[dict]) -> str:
    goal = [r for r in rows if r["n"] == GOAL_N and r["d"] == GOAL_D]
    if not goal:
        return f"goal (n={GOAL_N}, d=10^5, ratio <= {GOAL_RATIO:g}): not measured in this run"
    worst = max(r["ratio"] for r in goal)
    each = ", ".join(f"dropout {r['dropout']:g}: {r['ratio']:.2f}" for r in goal)
    status = "[green]met[/]" if worst <= GOAL_RATIO else "[red]not met[/]"
    return f"goal (n={GOAL_N}, d=10^5, ratio <= {GOAL_RATIO:g}): {status}, worst ratio {worst:.2f} ({each})"


MALICIOUS_GOAL_N, MALICIOUS_GOAL_RATIO = 1000, 2.0


def malicious_verdict(rows: list[dict]) -> str:
    """Malicious-server cost against the honest-but-curious session's, at every n measured."""
    each = ", ".join(f"n={r['n']} d={fmt_d(r['d'])}: {r['wall_s'] / r['hbc_wall_s']:.2f} wall, "
                     f"{r['cpu_s'] / r['hbc_cpu_s']:.2f} CPU" for r in rows)
    goal = [max(r["wall_s"] / r["hbc_wall_s"], r["cpu_s"] / r["hbc_cpu_s"]) for r in rows if r["n"] == MALICIOUS_GOAL_N]
    if not goal:
        status = "not measured in this run"
    else:
        status = "[green]met[/]" if max(goal) <= MALICIOUS_GOAL_RATIO else "[red]not met[/]"
    return (f"malicious / honest-but-curious session ({each}); goal at n = {MALICIOUS_GOAL_N}: "
            f"<= {MALICIOUS_GOAL_RATIO:g}: {status}")


POOL_GOAL_N, POOL_GOAL_D, POOL_GOAL_S = 10_000, 10**4, 25.0


def speedup_main(configs: list[Config], args, out, err) -> int:
    rows = []
    for i, cfg in enumerate(configs, 1):
        err.print(f"[{i}/{len(configs)}] n={cfg.n} d={cfg.d} dropout={cfg.dropout:g} k={cfg.degree}: serial, then pool",
                  end="")
        start = time.perf_counter()
        try:
            row = run_speedup(cfg, args.workers, args.repeat, args.stat, args.seed)
        except secagg.AbortError as exc:
            err.print(f"  [red]aborted: {exc}[/]")
            continue
        rows.append(row)
        err.print(f"  {row['serial_s']:.2f} s vs {row['pool_s']:.2f} s with {row['workers']} workers "
                  f"({time.perf_counter() - start:.1f} s)")
    if not rows:
        out.print("[red]no configuration completed[/]")
        return 2
    out.print(speedup_table(rows))
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
        prog="python3 -m sims.bench_secagg", description=__doc__.split("\n")[0], formatter_class=HelpFormatter
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.breakdown:
        console = Console() if sys.stdout.isatty() else Console(width=240)
        for n in args.n or [GOAL_N]:
            for d in args.d or [GOAL_D]:
                cfg = Config(n, d, 0.0, args.modulus_bits, graph=args.graph, tolerated_dropout=args.tolerated_dropout,
                             tolerated_corrupt=args.tolerated_corrupt)
                console.print(breakdown_table(cfg, args.seed))
        return 0
    if args.liar:
        table, ok = reconstruction_table(args.n or [50, 100, 200], (args.d or [1000])[0], args.seed)
        (Console() if sys.stdout.isatty() else Console(width=240)).print(table)
        return 0 if ok else 1
    configs, skipped = grid(args)
    # A file or pipe gets a fixed width so the table is not folded to 80 columns.
    stream = sys.stderr if args.json else sys.stdout  # with --json, stdout carries the rows alone
    out = Console(file=stream) if stream.isatty() else Console(file=stream, width=240)
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
    for i, cfg in enumerate(configs, 1):
        err.print(f"[{i}/{len(configs)}] n={cfg.n} d={cfg.d} dropout={cfg.dropout:g} k={cfg.degree} t={cfg.threshold}", end="")
        start = time.perf_counter()
        try:
            if args.transport == "both":
                mem, tcp = run_both(cfg, args.repeat, args.stat, args.seed)
                rows += [mem, tcp]
                pairs.append((mem, tcp))
                ratio = tcp["wall_s"] / mem["wall_s"]
                note = f"mem {mem['wall_s']:.2f} s, tcp {tcp['wall_s']:.2f} s, tcp/mem {ratio:.2f}"
            else:
                row = run_config(cfg, args.transport, args.repeat, args.stat, args.seed)
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
            err.print(f"  [red]aborted: {exc}[/]")
            continue
        err.print(f"  {note}  ({time.perf_counter() - start:.1f} s)")
    if not rows:
        out.print("[red]no configuration completed[/]")
        return 2
    memory_rows = [r for r in rows if r["transport"] == "memory"]
    if memory_rows:
        out.print(main_table(memory_rows, args))
        if args.transport == "memory":
            out.print(rounds_table(memory_rows))
    if pairs:
        out.print(loopback_table(pairs, args))
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


if __name__ == "__main__":
    entry_point("bench_secagg", main)
