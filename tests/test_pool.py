"""The simulator's client pool (secagg.pool): the serial session exactly, and typed failures."""

from __future__ import annotations

import multiprocessing
import os
import signal

import numpy as np
import pytest

from secagg import AbortError, ParameterError, ProtocolViolation, SimulationError, decode, simulate
from secagg import pool
from secagg.client import Client
from secagg.simulation import setup_session

pytestmark = pytest.mark.skipif(not pool.can_fork(), reason="the client pool needs the fork start method")

SPARSE = dict(graph="sparse", tolerated_dropout=0.2, tolerated_corrupt=0.05)


def inputs_for(n: int, d: int = 6, seed: int = 0) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {u: rng.integers(0, 2**16, d, dtype=np.uint64) for u in range(1, n + 1)}


@pytest.fixture(autouse=True)
def deadline():
    """A hang fails the test after 60 s instead of stalling the suite."""
    def expire(*_):
        raise TimeoutError("the client pool hung")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)
    assert not multiprocessing.active_children(), "a worker outlived its session"


@pytest.mark.parametrize("malicious", [False, True], ids=["hbc", "malicious"])
@pytest.mark.parametrize("workers", [2, 3])
def test_pool_runs_the_serial_session_message_for_message(malicious, workers):
    inputs = inputs_for(40)
    plan = {"share_keys": [4], "masked_input": [9, 22], "unmasking": [31]}
    if malicious:
        plan["consistency_check"] = [13]
    run = lambda w: simulate(inputs, modulus=2**16, dropouts=plan, malicious=malicious, seed=5, workers=w, **SPARSE)
    serial, pooled = run(1), run(workers)
    assert (serial.workers, pooled.workers) == (1, workers)
    assert pooled.transcript == serial.transcript  # the same messages, in the same order
    assert np.array_equal(pooled.total, serial.total)
    assert pooled.included == serial.included
    assert (pooled.bytes_sent, pooled.bytes_received, pooled.counts) == (
        serial.bytes_sent, serial.bytes_received, serial.counts
    )


def test_pool_on_the_complete_graph_gives_the_exact_sum():
    inputs = inputs_for(12, seed=1)
    res = simulate(inputs, threshold=8, modulus=2**16, dropouts={"masked_input": [2, 5]}, workers=2)
    assert res.workers == 2 and res.included == tuple(u for u in range(1, 13) if u not in (2, 5))
    expected = sum(inputs[u].astype(np.uint64) for u in res.included) % 2**16
    assert np.array_equal(res.total, expected)


def test_a_client_abort_inside_a_worker_is_raised_as_the_serial_run_raises_it():
    inputs = inputs_for(40, seed=4)
    params, _ = setup_session(inputs, modulus=2**16, seed=4, **SPARSE)
    victim = 1
    # The victim's neighbourhood loses too many members at masked_input: its own survivor list is short.
    gone = sorted(params.neighbours(victim))[: params.graph.degree + 2 - params.threshold]
    errors = []
    for w in (1, 2):
        with pytest.raises(AbortError) as info:
            simulate(inputs, modulus=2**16, seed=4, dropouts={"masked_input": gone}, workers=w, **SPARSE)
        errors.append(info.value)
    serial, pooled = errors
    assert type(pooled) is type(serial) and str(pooled) == str(serial)
    assert (pooled.round, pooled.count, pooled.threshold) == (serial.round, serial.count, serial.threshold)


def test_a_protocol_violation_inside_a_worker_keeps_its_party_and_rule(monkeypatch):
    original = Client._on_forwarded

    def refuse(self, msg):
        if self.id == 7:
            raise ProtocolViolation(0, "test-rule", "refused by the test")
        return original(self, msg)

    monkeypatch.setattr(Client, "_on_forwarded", refuse)  # inherited by the forked workers
    with pytest.raises(ProtocolViolation) as info:
        simulate(inputs_for(20), modulus=2**16, seed=1, workers=2, **SPARSE)
    assert (info.value.party, info.value.rule) == (0, "test-rule")


def test_a_worker_that_dies_raises_simulation_error_instead_of_hanging(monkeypatch):
    def die(self, msg):
        os._exit(3)

    monkeypatch.setattr(Client, "_on_forwarded", die)
    with pytest.raises(SimulationError, match=r"died .*exit code 3"):
        simulate(inputs_for(20), modulus=2**16, seed=1, workers=2, **SPARSE)


def test_an_unexpected_error_in_a_worker_raises_simulation_error_naming_it(monkeypatch):
    def bug(self, msg):
        raise RuntimeError("a bug in the client")

    monkeypatch.setattr(Client, "_on_forwarded", bug)
    with pytest.raises(SimulationError, match="RuntimeError: a bug in the client"):
        simulate(inputs_for(20), modulus=2**16, seed=1, workers=2, **SPARSE)


def test_workers_default_to_one_per_core_only_for_large_sessions():
    cores = pool.available_cores()
    assert pool.resolve_workers(None, pool.POOL_MIN_CLIENTS - 1) == 1
    assert pool.resolve_workers(None, pool.POOL_MIN_CLIENTS) == cores
    assert pool.resolve_workers(8, 3) == 3  # never more workers than clients
    assert pool.resolve_workers(1, 10_000) == 1


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_invalid_worker_counts_are_refused(bad):
    with pytest.raises(ParameterError, match="workers"):
        pool.resolve_workers(bad, 100)


def _workers_in_a_daemon(conn) -> None:
    res = simulate(inputs_for(12), threshold=8, modulus=2**16, seed=1, workers=2)
    conn.send_bytes(bytes([res.workers]))


def test_a_daemonic_process_runs_the_session_serially():
    """multiprocessing forbids a daemon to have children: simulate falls back to one process."""
    ctx = multiprocessing.get_context("fork")
    here, there = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_workers_in_a_daemon, args=(there,), daemon=True)
    proc.start()
    there.close()
    assert here.recv_bytes() == bytes([1])
    proc.join()
    assert proc.exitcode == 0


def test_a_worker_whose_clients_all_dropped_stays_idle_and_the_session_is_exact():
    inputs = inputs_for(12, seed=2)
    plan = {"masked_input": [6, 12]}  # every client of worker 5 of 6 (ids[5::6])
    serial = simulate(inputs, threshold=8, modulus=2**16, dropouts=plan, malicious=True, seed=2, workers=1)
    pooled = simulate(inputs, threshold=8, modulus=2**16, dropouts=plan, malicious=True, seed=2, workers=6)
    assert pooled.workers == 6 and pooled.transcript == serial.transcript
    assert np.array_equal(pooled.total, serial.total) and 6 not in pooled.included


def test_a_client_refusing_its_construction_in_a_worker_raises_its_own_error(monkeypatch):
    original = Client.__init__

    def refuse(self, params, client_id, value, **kw):
        if client_id == 9:
            raise ParameterError("client 9 refuses its input (test)")
        original(self, params, client_id, value, **kw)

    monkeypatch.setattr(Client, "__init__", refuse)
    for w in (1, 2):
        with pytest.raises(ParameterError, match="client 9 refuses its input"):
            simulate(inputs_for(20), modulus=2**16, seed=1, workers=w, **SPARSE)


def test_unseeded_workers_draw_their_own_keys_from_the_os():
    """Forked workers must not share a random stream: every advertised key is fresh (the server
    refuses a repeated one), and two runs differ."""
    inputs = inputs_for(20, seed=3)
    first, second = (simulate(inputs, modulus=2**16, workers=2, **SPARSE) for _ in range(2))
    assert np.array_equal(first.total, second.total)
    adverts = [decode(m, first.params) for m in first.transcript[:20]]
    assert {type(m).__name__ for m in adverts} == {"AdvertiseKeys"}
    assert len({k for m in adverts for k in (m.c_pk, m.s_pk)}) == 40
    assert first.transcript[:20] != second.transcript[:20]
