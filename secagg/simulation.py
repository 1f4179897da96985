"""In-memory transport: the server in this process, the clients here or in worker processes.

A thin layer over the state machines: it moves encoded messages, injects the
requested dropouts (a dropped client goes silent instead of sending its
message for that round and never returns), plays the deadline by calling
``close_round()`` once every live client has had its turn, records the
server's transcript and measures bytes and seconds per party.  Large
one-call sessions step their clients in a pool of forked worker processes
(pool.py); the server receives the very messages of the serial run, in its order.

``simulate`` runs a one-call session.  ``MultiCallSimulation`` runs the L
calls of a multi-call session (protocol_spec.md 16) one at a time, so that
the caller can compute each call's broadcast from the previous results.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Mapping

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from . import reprs
from .client import Client, Inputs
from .keys import raw_public
from .errors import ParameterError
from .messages import Message, Round, rounds_for
from .params import SESSION_ID_BYTES, PublicParams
from .pool import ClientPool, LocalClients, resolve_workers
from .rng import RandomSource, SeededRandom, SystemRandom
from .server import Server


@dataclass
class SimulationResult:
    total: np.ndarray  # uint64: sum mod M of the included inputs
    included: tuple[int, ...]  # ids whose masked input the server received (U3)
    transcript: list[bytes]  # every message the server received, in order
    params: PublicParams
    counts: dict[str, int]  # clients that completed each round
    bytes_sent: dict[int, int]  # per client, to the server
    bytes_received: dict[int, int]  # per client, from the server
    client_seconds: dict[str, float] = field(default_factory=dict)  # all clients, per round
    server_seconds: dict[str, float] = field(default_factory=dict)  # server, per round
    call: int = 0  # the oracle call of a multi-call session (bytes and seconds: this call's, key rounds in call 0)
    setup_seconds: float = 0.0  # parameters and client state machines, before the first message
    workers: int = 1  # processes that ran the clients (pool.py)

    def __repr__(self) -> str:
        return reprs.fields(
            "SimulationResult",
            n=self.params.n,
            threshold=self.params.threshold,
            included=reprs.ids(self.included),
            total=reprs.vector(self.total),
            transcript=f"<{len(self.transcript)} messages, {sum(map(len, self.transcript)):,} bytes>",
        )


def check_dropouts(
    dropouts: Mapping[str, Iterable[int]] | None, client_ids: Iterable[int], malicious: bool
) -> dict[Round, frozenset[int]]:
    """Validate a ``{round name: ids}`` dropout plan against the session."""
    valid = {r.value: r for r in rounds_for(malicious)}
    ids = set(client_ids)
    plan: dict[Round, frozenset[int]] = {}
    for name, who in (dropouts or {}).items():
        if str(name) not in valid:
            mode = "malicious-server" if malicious else "honest-but-curious"
            raise ParameterError(f"unknown round {name!r} for {mode} mode; rounds are {sorted(valid)}")
        who = frozenset(who)
        if not who <= ids:
            raise ParameterError(f"dropouts in {name} name unknown clients {sorted(who - ids)[:5]}")
        plan[valid[str(name)]] = who
    return plan


def check_inputs(inputs: Mapping[int, np.ndarray], modulus: int) -> int:
    """Validate the client inputs; return their common length."""
    if not inputs:
        raise ParameterError("no inputs")
    dims = set()
    for cid, x in inputs.items():
        x = np.asarray(x)
        if x.ndim != 1 or x.dtype.kind not in "ui":
            raise ParameterError(f"input of client {cid} must be a 1-D integer array, got {x.dtype} {x.shape}")
        if x.size and (int(x.min()) < 0 or int(x.max()) >= modulus):
            raise ParameterError(f"input of client {cid} has values outside [0, {modulus})")
        dims.add(x.shape[0])
    if len(dims) != 1:
        raise ParameterError(f"inputs have different lengths {sorted(dims)}")
    return dims.pop()


def identity_keys(client_ids: Iterable[int], rng: RandomSource) -> dict[int, Ed25519PrivateKey]:
    """Long-term Ed25519 identity keys (the PKI of malicious-server mode)."""
    return {u: Ed25519PrivateKey.from_private_bytes(rng.fork(f"identity-{u}").bytes(32)) for u in client_ids}


def session_builder(
    inputs: Mapping[int, np.ndarray],
    *,
    threshold: int | None = None,
    modulus: int,
    malicious: bool = False,
    seed: int | bytes | None = None,
    colluding: int | None = None,
    allow_insecure: bool = False,
    graph: str = "complete",
    tolerated_dropout: float | None = None,
    tolerated_corrupt: float | None = None,
    min_group: int | None = None,
    calls: int = 1,
    client_inputs: Callable[[int], Inputs] | None = None,
) -> tuple[PublicParams, Callable[[int], Client]]:
    """Public parameters, and a function that builds client u's state machine.

    Each client draws from its own fork of the session's randomness, so a
    client built anywhere (here, or in a worker process of pool.py) is the
    same client.  Arguments as ``setup_session``.
    """
    rng: RandomSource = SeededRandom(seed) if seed is not None else SystemRandom()
    dim = check_inputs(inputs, modulus)
    ids = sorted(inputs)
    identities = identity_keys(ids, rng) if malicious else {}
    params = PublicParams.create(
        ids,
        threshold=threshold,
        modulus=modulus,
        dim=dim,
        malicious=malicious,
        identity_keys={u: raw_public(k) for u, k in identities.items()},
        rng=rng.fork("session"),
        colluding=colluding,
        allow_insecure=allow_insecure,
        graph=graph,
        dropout=tolerated_dropout,
        corrupt=tolerated_corrupt,
        min_group=min_group,
        calls=calls,
    )

    def build(u: int) -> Client:
        return Client(
            params, u, np.asarray(inputs[u]), rng=rng.fork(f"client-{u}"), identity_key=identities.get(u),
            inputs=None if client_inputs is None else client_inputs(u),
        )

    return params, build


def setup_session(
    inputs: Mapping[int, np.ndarray],
    *,
    threshold: int | None = None,
    modulus: int,
    malicious: bool = False,
    seed: int | bytes | None = None,
    colluding: int | None = None,
    allow_insecure: bool = False,
    graph: str = "complete",
    tolerated_dropout: float | None = None,
    tolerated_corrupt: float | None = None,
    min_group: int | None = None,
    calls: int = 1,
    client_inputs: Callable[[int], Inputs] | None = None,
) -> tuple[PublicParams, dict[int, Client]]:
    """Public parameters and one client state machine per input.

    With a ``seed`` every key, mask and nonce is reproducible, so any
    transport that starts from here runs the very same session.
    ``graph="sparse"`` sizes a SecAgg+ graph for the tolerated dropout and
    corrupted fractions (``PublicParams.create``, which also takes
    ``min_group`` in malicious mode); ``threshold`` may then be left to that choice.
    ``calls`` > 1 plans a multi-call session; ``client_inputs(u)`` is then client u's
    inputs callback (``inputs`` gives call 0's vectors, which fix d).
    """
    params, build = session_builder(
        inputs,
        threshold=threshold,
        modulus=modulus,
        malicious=malicious,
        seed=seed,
        colluding=colluding,
        allow_insecure=allow_insecure,
        graph=graph,
        tolerated_dropout=tolerated_dropout,
        tolerated_corrupt=tolerated_corrupt,
        min_group=min_group,
        calls=calls,
        client_inputs=client_inputs,
    )
    return params, {u: build(u) for u in params.client_ids}


def simulate(
    inputs: Mapping[int, np.ndarray],
    *,
    threshold: int | None = None,
    modulus: int,
    dropouts: Mapping[str, Iterable[int]] | None = None,
    malicious: bool = False,
    seed: int | bytes | None = None,
    colluding: int | None = None,
    allow_insecure: bool = False,
    graph: str = "complete",
    tolerated_dropout: float | None = None,
    tolerated_corrupt: float | None = None,
    min_group: int | None = None,
    workers: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> SimulationResult:
    """Run one secure aggregation session in memory and return what the server learns.

    ``seed`` makes every key, mask and nonce reproducible (tests only); by
    default randomness comes from the OS.  Raises ``AbortError`` when fewer
    than ``threshold`` clients remain at some round, or, on a sparse graph,
    in some client's neighbourhood.  ``progress(round)`` is called after each
    client step (a command line draws its progress bar with it).

    ``workers``: processes that run the clients (pool.py); the server stays in
    this one.  ``None`` (default) uses one per available core from
    ``pool.POOL_MIN_CLIENTS`` clients up and 1 below; 1 runs every client here.
    The result does not depend on it: the server receives the same messages in
    the same order.  A worker that dies raises ``SimulationError``.
    """
    start = time.perf_counter()
    params, build = session_builder(
        inputs,
        threshold=threshold,
        modulus=modulus,
        malicious=malicious,
        seed=seed,
        colluding=colluding,
        allow_insecure=allow_insecure,
        graph=graph,
        tolerated_dropout=tolerated_dropout,
        tolerated_corrupt=tolerated_corrupt,
        min_group=min_group,
    )
    ids = list(params.client_ids)
    check_dropouts(dropouts, ids, malicious)  # before any worker starts
    count = resolve_workers(workers, len(ids))
    with ClientPool(build, ids, count) if count > 1 else LocalClients({u: build(u) for u in ids}) as clients:
        simulation = MultiCallSimulation(params, clients, progress=progress, setup_seconds=time.perf_counter() - start)
        return simulation.run_call(dropouts)


class MultiCallSimulation:
    """The server and the clients of one session, run call by call (a one-call session is one ``run_call``).

    A client dropped in any round of any call stays silent for the rest of the
    session.  ``run_call`` raises ``AbortError`` like ``simulate`` does; a later
    call that loses a survivor of call 0 aborts (pinning, protocol_spec.md 16.3).
    ``clients``: the state machines (all in this process), or a ``ClientPool`` /
    ``LocalClients`` that steps them; ``progress(round)`` is called after each
    client step.
    """

    def __init__(self, params: PublicParams, clients: Mapping[int, Client] | LocalClients | ClientPool, *,
                 progress: Callable[[str], None] | None = None, setup_seconds: float = 0.0):
        self.params = params
        # ``clients``: the state machines by id when they run here (none of them when a pool runs them)
        self.stepper = clients if isinstance(clients, (LocalClients, ClientPool)) else LocalClients(dict(clients))
        self.clients: Mapping[int, Client] = getattr(self.stepper, "clients", {})
        self.progress = progress
        self.setup_seconds = setup_seconds
        self.server = Server(params)
        self.transcript: list[bytes] = []  # every message the server received, all calls
        self.gone: set[int] = set()
        self.results: list[SimulationResult] = []

    def run_call(self, dropouts: Mapping[str, Iterable[int]] | None = None, broadcast: bytes = b"") -> SimulationResult:
        """Run the next call: the whole session's key rounds first if it is call 0."""
        params, server, clients, gone = self.params, self.server, self.stepper, self.gone
        ids = list(params.client_ids)
        plan = check_dropouts(dropouts, ids, params.malicious)
        transcript: list[bytes] = []
        sent: dict[int, int] = defaultdict(int)
        received: dict[int, int] = defaultdict(int)
        client_seconds: dict[str, float] = defaultdict(float)
        server_seconds: dict[str, float] = defaultdict(float)

        def live(u: int, round_: Round) -> bool:
            """Whether u answers in ``round_``; a client that goes silent never returns."""
            if u in gone or u in plan.get(round_, ()):
                gone.add(u)
                return False
            return True

        def replies(round_: Round, work: list[tuple[int, bytes | None]]) -> Iterator[bytes]:
            """Every live client's replies to its server message (None: start()), in ``work``'s order."""
            for u, encoded in clients.step([(u, data) for u, data in work if live(u, round_)]):
                sent[u] += sum(map(len, encoded))
                if self.progress is not None:
                    self.progress(round_.value)
                yield from encoded
            client_seconds[round_.value] += clients.seconds

        def deliver(outgoing: list[Message], round_: Round) -> Iterator[bytes]:
            work = []
            for msg in outgoing:
                if msg.recipient in gone:
                    continue
                data = msg.encode()
                received[msg.recipient] += len(data)
                # A server message opens the round of the client's reply (msg.round).
                work.append((msg.recipient, msg.round, data))
            # Every server message of one close opens the same round.
            next_round = work[0][1] if work else round_
            return replies(next_round, [(u, data) for u, _, data in work])

        if not self.results:
            inbox = replies(Round.ADVERTISE_KEYS, [(u, None) for u in ids])
        else:
            # The key rounds are over: a client planned to drop in one is silent from this call's start.
            gone |= plan.get(Round.ADVERTISE_KEYS, frozenset()) | plan.get(Round.SHARE_KEYS, frozenset())
            inbox = deliver(server.open_call(broadcast), server.round)
        while server.result is None:
            round_ = server.round
            outgoing: list[Message] = []
            for data in inbox:
                start = time.perf_counter()
                transcript.append(data)
                outgoing += server.receive(data)
                server_seconds[round_.value] += time.perf_counter() - start
            start = time.perf_counter()
            if server.round is round_ and server.result is None:
                outgoing = server.close_round()  # the deadline: whoever did not answer has dropped
            server_seconds[round_.value] += time.perf_counter() - start
            inbox = deliver(outgoing, round_)

        result = server.result
        self.transcript += transcript
        simulated = SimulationResult(
            total=result.total,
            included=result.included,
            transcript=transcript,
            params=params,
            counts=result.counts,
            bytes_sent={u: sent[u] for u in ids},
            bytes_received={u: received[u] for u in ids},
            client_seconds=dict(client_seconds),
            server_seconds=dict(server_seconds),
            call=result.call,
            setup_seconds=self.setup_seconds if not self.results else 0.0,
            workers=clients.workers,
        )
        self.results.append(simulated)
        return simulated

def revealed_sum(
    inputs: Mapping[int, np.ndarray], *, threshold: int | None = None, modulus: int,
    dropouts: Mapping[str, Iterable[int]] | None = None, **_: object,
) -> SimulationResult:
    """What a session without dropouts reveals, the sum mod M of the inputs, without running it.

    For simulations too large to run every session (``sims.dp_tradeoff``):
    ``simulate`` reveals exactly this sum (tests/test_simulation.py), so results
    that depend only on the revealed sum are the same.  No keys, masks or bytes.
    """
    if dropouts:
        raise ParameterError("revealed_sum plays no dropouts: use simulate")
    ids = tuple(sorted(inputs))
    bits = modulus.bit_length() - 1
    total = np.zeros(len(inputs[ids[0]]), dtype=np.uint64)
    for u in ids:
        total += np.asarray(inputs[u], dtype=np.uint64)  # uint64 wraps mod 2**64, a multiple of M
    if bits < 64:
        total &= np.uint64(modulus - 1)
    params = PublicParams(bytes(SESSION_ID_BYTES), ids, threshold or len(ids), bits, total.size)
    zero = {u: 0 for u in ids}
    return SimulationResult(total, ids, [], params, {}, zero, dict(zero))
