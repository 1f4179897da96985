"""In-memory transport: the server in this process, the clients here or in worker processes.

A thin layer over the state machines: it moves encoded messages, injects the
requested dropouts (a dropped client goes silent instead of sending its
message for that round and never returns), plays the deadline by calling
``close_round()`` once every live client has had its turn, records the
server's transcript and measures bytes and seconds per party.  Large
sessions step their clients in a pool of forked worker processes (pool.py);
the server receives the very messages of the serial run, in its order.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Mapping

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from . import reprs
from .client import Client
from .keys import raw_public
from .errors import ParameterError
from .messages import Message, Round, rounds_for
from .params import PublicParams
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
    )

    def build(u: int) -> Client:
        return Client(params, u, np.asarray(inputs[u]), rng=rng.fork(f"client-{u}"), identity_key=identities.get(u))

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
) -> tuple[PublicParams, dict[int, Client]]:
    """Public parameters and one client state machine per input.

    With a ``seed`` every key, mask and nonce is reproducible, so any
    transport that starts from here runs the very same session.
    ``graph="sparse"`` sizes a SecAgg+ graph for the tolerated dropout and
    corrupted fractions (``PublicParams.create``, which also takes
    ``min_group`` in malicious mode); ``threshold`` may then be left to that choice.
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
) -> SimulationResult:
    """Run one secure aggregation session in memory and return what the server learns.

    ``seed`` makes every key, mask and nonce reproducible (tests only); by
    default randomness comes from the OS.  Raises ``AbortError`` when fewer
    than ``threshold`` clients remain at some round, or, on a sparse graph,
    in some client's neighbourhood.

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
    plan = check_dropouts(dropouts, ids, malicious)
    count = resolve_workers(workers, len(ids))
    with ClientPool(build, ids, count) if count > 1 else LocalClients({u: build(u) for u in ids}) as clients:
        return _run(params, plan, clients, time.perf_counter() - start)


def _run(params: PublicParams, plan: dict[Round, frozenset[int]], clients: LocalClients | ClientPool,
         setup: float) -> SimulationResult:
    """The session's message loop: the server here, the clients wherever ``clients`` runs them."""
    ids = list(params.client_ids)
    server = Server(params)
    transcript: list[bytes] = []
    sent: dict[int, int] = defaultdict(int)
    received: dict[int, int] = defaultdict(int)
    client_seconds: dict[str, float] = defaultdict(float)
    server_seconds: dict[str, float] = defaultdict(float)
    gone: set[int] = set()

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
            yield from encoded
        client_seconds[round_.value] += clients.seconds

    inbox = replies(Round.ADVERTISE_KEYS, [(u, None) for u in ids])
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
        inbox = replies(next_round, [(u, data) for u, _, data in work])

    result = server.result
    return SimulationResult(
        total=result.total,
        included=result.included,
        transcript=transcript,
        params=params,
        counts=result.counts,
        bytes_sent={u: sent[u] for u in ids},
        bytes_received={u: received[u] for u in ids},
        client_seconds=dict(client_seconds),
        server_seconds=dict(server_seconds),
        setup_seconds=setup,
        workers=clients.workers,
    )
