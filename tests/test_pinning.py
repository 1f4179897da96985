"""The survivor pin in the state machines: one aggregation reveals sums over one set only.

``Client(pinned=U)`` signs and unmasks only a survivor list equal to U;
``Server(pinned=U)`` aborts before anything is unmasked when U3 differs from U
(protocol_spec.md 7.1, 7.2 and the RFA section "Across calls").
"""

from __future__ import annotations

import numpy as np
import pytest

from secagg import AbortError, Client, ProtocolViolation, Server, SeededRandom
from secagg.messages import SurvivorList, UnmaskRequest
from secagg.server import ServerState
from secagg.simulation import identity_keys, setup_session

N, T, DIM, M = 6, 4, 5, 2**32


def inputs():
    rng = np.random.default_rng(3)
    return {u: rng.integers(0, M, DIM, dtype=np.uint64) for u in range(1, N + 1)}


def session(pinned=None, server_pinned=None, malicious=False, seed=1, **graph):
    xs = inputs()
    params, clients = setup_session(xs, threshold=T, modulus=M, malicious=malicious, seed=seed, **graph)
    ids = identity_keys(params.client_ids, SeededRandom(seed)) if malicious else {}
    clients = {u: Client(params, u, xs[u], rng=SeededRandom(seed).fork(f"client-{u}"), identity_key=ids.get(u),
                         pinned=pinned) for u in params.client_ids}
    return params, clients, Server(params, pinned=server_pinned), xs


def run_until_unmask(params, clients, server, drop_at_masked=()):
    """Advertise, share and mask through the server; ``drop_at_masked`` never send their masked input.
    Returns what the server sends when masked_input closes (survivor lists or unmask requests)."""
    msgs = [m for c in clients.values() for m in c.start()]
    for stage in ("advertise_keys", "share_keys", "masked_input"):
        out = []
        for m in msgs:
            out += server.receive(m)
        if not out:
            out = server.close_round()  # the deadline: the dropped never answered
        if stage == "masked_input":
            return out
        msgs = [r for m in out if not (stage == "share_keys" and m.recipient in drop_at_masked)
                for r in clients[m.recipient].receive(m)]
    raise AssertionError("unreachable")


def test_a_client_unmasks_only_the_pinned_survivor_list():
    pinned = (1, 2, 3, 4, 5)
    params, clients, server, xs = session(pinned=pinned)
    requests = run_until_unmask(params, clients, server, drop_at_masked=(6,))
    assert {m.recipient for m in requests} == set(pinned)
    for m in requests:
        (reply,) = clients[m.recipient].receive(m)  # U3 = the pin: unmasked as usual
        assert clients[m.recipient].unmasked_over == frozenset(pinned)
        server.receive(reply)
    assert [int(v) for v in server.result.total] == [sum(int(xs[u][i]) for u in pinned) % M for i in range(DIM)]


def test_a_survivor_list_one_client_off_the_pin_is_refused_and_nothing_leaves():
    """A server that skips its own pin sends U3 = {1..5} to clients pinned to {1..6}."""
    params, clients, server, _ = session(pinned=range(1, N + 1))
    requests = run_until_unmask(params, clients, server, drop_at_masked=(6,))
    for m in requests:
        before = clients[m.recipient].state
        with pytest.raises(ProtocolViolation) as info:
            clients[m.recipient].receive(m)
        assert info.value.rule == "survivors-pinned" and info.value.party == 0
        assert clients[m.recipient].state is before and clients[m.recipient].unmasked_over is None


def test_the_server_with_a_pin_aborts_at_masked_input_before_any_unmask_request():
    params, clients, server, _ = session(server_pinned=range(1, N + 1))
    with pytest.raises(AbortError) as info:
        run_until_unmask(params, clients, server, drop_at_masked=(6,))
    assert info.value.round == "masked_input" and "pinned" in str(info.value)
    assert server.state is ServerState.ABORTED and server.result is None


def test_a_malicious_mode_client_does_not_sign_a_list_off_its_pin():
    params, clients, server, _ = session(pinned=range(1, N + 1), malicious=True)
    lists = run_until_unmask(params, clients, server, drop_at_masked=(6,))  # survivor lists of U3 = {1..5}
    for m in lists:
        assert isinstance(m, SurvivorList)
        with pytest.raises(ProtocolViolation) as info:
            clients[m.recipient].receive(m)
        assert info.value.rule == "survivors-pinned"
