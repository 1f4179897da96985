"""Shared test helper: a round-by-round in-memory session whose messages tests can intercept."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from secagg import Client, Server, SeededRandom
from secagg.server import ServerState
from secagg.simulation import identity_keys, setup_session


def plaintext_sum(inputs, included, modulus):
    """The expected output: the sum mod M of the inputs of ``included``, in Python integers."""
    dim = len(next(iter(inputs.values())))
    return [sum(int(inputs[u][i]) for u in included) % modulus for i in range(dim)]


class Session:
    """Clients and a server wired together by hand, one round at a time.

    ``outbox`` holds the server messages not yet delivered (recipient -> Message);
    ``server.round`` is the round whose client messages the server collects next.
    """

    def __init__(self, n=5, t=3, dim=4, modulus=2**16, malicious=False, seed=0, inputs=None, session_id=None, **graph):
        if inputs is None:
            rng = np.random.default_rng(seed)
            inputs = {u: rng.integers(0, modulus, dim, dtype=np.uint64) for u in range(1, n + 1)}
        self.inputs = inputs
        self.modulus = modulus
        self.params, self.clients = setup_session(
            inputs, threshold=t, modulus=modulus, malicious=malicious, seed=seed, **graph
        )  # graph: graph="sparse", tolerated_dropout=..., tolerated_corrupt=... (t=None: the sized threshold)
        if session_id is not None:
            # Same client keys (same seeded forks), another session id.
            self.params = dataclasses.replace(self.params, session_id=session_id)
            ids = identity_keys(self.params.client_ids, SeededRandom(seed)) if malicious else {}
            self.clients = {
                u: Client(self.params, u, inputs[u], rng=SeededRandom(seed).fork(f"client-{u}"), identity_key=ids.get(u))
                for u in self.params.client_ids
            }
        self.server = Server(self.params)
        self.gone: set[int] = set()
        self.outbox: dict[int, object] | None = None

    def client_replies(self, drop=()):
        """Deliver the outbox (or start every client); return {client: its reply messages}."""
        replies = {}
        for u, client in self.clients.items():
            if u in self.gone:
                continue
            if self.outbox is None:
                replies[u] = client.start()
            elif u in self.outbox:
                replies[u] = client.receive(self.outbox[u])
        for u in drop:
            self.gone.add(u)
            replies.pop(u, None)
        return replies

    def server_collect(self, replies):
        """Feed the replies to the server, play the deadline, keep what the server sends."""
        round_ = self.server.round
        out = []
        for msgs in replies.values():
            for m in msgs:
                out += self.server.receive(m.encode())
        if self.server.state is ServerState.COLLECTING and self.server.round is round_:
            out = self.server.close_round()
        self.outbox = {m.recipient: m for m in out}
        return self.outbox

    def step(self, drop=()):
        return self.server_collect(self.client_replies(drop))

    def run_until(self, round_name):
        """Advance until the server collects ``round_name``; the outbox then holds what clients answer."""
        while self.server.round.value != round_name:
            self.step()
        return self.outbox

    def finish(self, drops=None):
        """Run to the end with ``{round name: ids}`` dropouts; return the server result."""
        drops = drops or {}
        while self.server.result is None:
            self.step(drops.get(self.server.round.value, ()))
        return self.server.result

    def expected(self, included):
        return plaintext_sum(self.inputs, included, self.modulus)

    def server_view(self):
        s = self.server
        return (s.state, s.round, s.waiting_for, dict(s.counts), s.result)

    def client_view(self, u):
        c = self.clients[u]
        return (c.state, c.completed_share_keys, c.abort_reason)


@pytest.fixture
def make_session():
    return Session
