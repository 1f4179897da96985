"""The TCP transport on loopback: real sockets, one trio run per session.

Every session checks the one thing that matters: the server returns exactly
the sum (mod M) of the inputs of the clients it says it included, or aborts
cleanly with the right reason.  Deadlines are short; nothing asserts timing.
"""

from __future__ import annotations

import logging
import os

import msgpack
import numpy as np
import pytest
import trio
import trio.testing

from secagg import AbortError, ParameterError, simulate
from secagg.bootstrap import Refused, decode_bootstrap_reply, encode_hello
from secagg.client import ClientState
from secagg.framing import FrameReader, FrameTooLarge, encode_frame, parse_address
from secagg.messages import PROTOCOL_VERSION, AdvertiseKeys, MaskedInput, Round, decode
from secagg.simulation import setup_session
from secagg.tcp import TcpServer, delay_at, leave_at, run_client, run_local_session
from secagg.transcript import read_transcript, replay

N, T, DIM, BITS = 20, 14, 8, 32
M = 2**BITS


def make_session(seed: int = 1, n: int = N, t: int = T, malicious: bool = False):
    rng = np.random.default_rng(seed)
    inputs = {u: rng.integers(0, M, DIM, dtype=np.uint64) for u in range(1, n + 1)}
    params, machines = setup_session(inputs, threshold=t, modulus=M, malicious=malicious, seed=seed)
    return inputs, params, machines


def plain_sum(inputs, ids) -> np.ndarray:
    total = np.zeros(DIM, dtype=np.uint64)
    for u in ids:
        total += inputs[u]
    return total % np.uint64(M)


def assert_exact(inputs, res, included) -> None:
    assert res.abort is None, res.abort
    assert res.included == tuple(sorted(included))
    assert np.array_equal(res.result.total, plain_sum(inputs, res.included))
    # The transcript alone recomputes the same result (what an auditor would do).
    assert np.array_equal(replay(res.transcript).total, res.result.total)


def run_session(params, machines, **kwargs):
    kwargs.setdefault("round_timeout", 2.0)
    trusted = dict(params.identity_keys) if params.malicious else None
    return trio.run(lambda: run_local_session(params, machines, trusted_keys=trusted, **kwargs))


# ---- sessions with honest clients -------------------------------------------------


def test_no_dropout():
    inputs, params, machines = make_session()
    run = run_session(params, machines)
    assert_exact(inputs, run.server, range(1, N + 1))
    assert all(o.status == "done" for o in run.clients.values())
    assert run.server.dropouts == {} and run.server.violations == []
    assert run.server.counts == {r.value: N for r in (Round.ADVERTISE_KEYS, Round.SHARE_KEYS, Round.MASKED_INPUT, Round.UNMASKING)}
    # Byte counts seen by the server and by each client agree.
    assert all(run.server.bytes_sent[u] == o.bytes_sent for u, o in run.clients.items())
    assert all(run.server.bytes_received[u] == o.bytes_received for u, o in run.clients.items())


@pytest.mark.parametrize("malicious", [False, True], ids=["honest-but-curious", "malicious-server"])
def test_a_client_disconnects_at_each_round(malicious):
    inputs, params, machines = make_session(seed=2, malicious=malicious)
    rounds = [r for r in Round if malicious or r is not Round.CONSISTENCY_CHECK]
    leavers = {2 + i: r for i, r in enumerate(rounds)}  # one client leaves at each round
    run = run_session(params, machines, before_send={u: leave_at(r) for u, r in leavers.items()})
    # Whoever left after sending its masked input is still in the sum.
    after_masking = {u for u, r in leavers.items() if rounds.index(r) > rounds.index(Round.MASKED_INPUT)}
    expected = set(range(1, N + 1)) - set(leavers) | after_masking
    assert_exact(inputs, run.server, expected)
    assert run.server.dropouts == {r.value: [u] for u, r in leavers.items()}
    assert {u for u, o in run.clients.items() if o.status == "left"} == set(leavers)


def test_a_client_slower_than_the_deadline():
    inputs, params, machines = make_session(seed=3)
    run = run_session(params, machines, round_timeout=0.5, before_send={7: delay_at(Round.MASKED_INPUT, 1.5)})
    assert_exact(inputs, run.server, set(range(1, N + 1)) - {7})
    assert run.server.dropouts == {"masked_input": [7]}
    assert run.clients[7].status == "dropped"


def test_too_few_clients_abort_cleanly():
    inputs, params, machines = make_session(seed=4)
    leavers = range(1, N - T + 2)  # 7 leave: 13 < t remain
    run = run_session(params, machines, before_send={u: leave_at(Round.MASKED_INPUT) for u in leavers})
    res = run.server
    assert res.result is None and isinstance(res.abort, AbortError)
    assert (res.abort.round, res.abort.count, res.abort.threshold) == ("masked_input", N - len(leavers), T)
    # Every client still connected was told, and aborted its own state machine.
    remaining = set(range(1, N + 1)) - set(leavers)
    assert {u for u, o in run.clients.items() if o.status == "aborted"} == remaining
    assert all(machines[u].state is ClientState.ABORTED for u in remaining)
    with pytest.raises(AbortError):
        replay(res.transcript)


def test_same_session_in_memory_and_over_tcp(tmp_path):
    """Same seed, same dropouts: same total and byte-identical masked inputs."""
    plan = {"share_keys": [3], "masked_input": [11], "unmasking": [9]}
    inputs, params, machines = make_session(seed=5)
    memory = simulate(inputs, threshold=T, modulus=M, dropouts=plan, seed=5)
    path = tmp_path / "transcript.msgpack"
    with open(path, "wb") as f:
        run = run_session(
            params,
            machines,
            before_send={u: leave_at(r) for r, ids in plan.items() for u in ids},
            transcript_file=f,
        )
    assert_exact(inputs, run.server, memory.included)
    assert np.array_equal(memory.total, run.server.result.total)

    def masked(frames, p):
        return {m.sender: m.masked.tobytes() for m in map(lambda b: decode(b, p), frames) if isinstance(m, MaskedInput)}

    over_tcp = masked([frame for _, frame in run.server.transcript.accepted_messages()], params)
    in_memory = masked(memory.transcript, memory.params)
    assert set(over_tcp) == set(memory.included)
    assert over_tcp == in_memory
    # The file holds the same frames, and replays to the same total.
    on_disk = read_transcript(path)
    assert on_disk.accepted_messages() == run.server.transcript.accepted_messages()
    assert np.array_equal(replay(on_disk).total, memory.total)


# ---- hostile input ----------------------------------------------------------------


async def raw(port: int) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", port)


async def join(port: int, cid: int):
    """A raw connection bound to ``cid``: (stream, reader, session info)."""
    stream = await raw(port)
    await stream.send_all(encode_frame(encode_hello(cid)))
    reader = FrameReader(stream)
    info = decode_bootstrap_reply(await reader.receive(1 << 20))
    return stream, reader, info


async def wait_closed(stream: trio.SocketStream) -> None:
    """The server must close a connection it dropped (we never close it first)."""
    with trio.fail_after(10):
        try:
            while await stream.receive_some(1 << 16):
                pass
        except trio.BrokenResourceError:
            pass


async def send_then_wait(port: int, cid: int, payload: bytes) -> None:
    stream, _, _ = await join(port, cid)
    await stream.send_all(encode_frame(payload))
    await wait_closed(stream)


async def garbage_frame(ctx):
    await send_then_wait(ctx.port, 20, os.urandom(64))


async def http_request(ctx):
    stream = await raw(ctx.port)
    await stream.send_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    await wait_closed(stream)


async def truncated_frame(ctx):
    stream, _, _ = await join(ctx.port, 20)
    await stream.send_all((100).to_bytes(4, "big") + b"0123456789")
    await stream.aclose()


async def oversized_prefix(ctx):
    stream, _, _ = await join(ctx.port, 20)
    await stream.send_all((2**31).to_bytes(4, "big"))  # and never the payload
    await wait_closed(stream)


async def wrong_types(ctx):
    p = ctx.params
    await send_then_wait(ctx.port, 20, msgpack.packb([PROTOCOL_VERSION, p.session_id, "advertise_keys", "advertise_keys", 20, 0, 0, ["k", 2, None]]))


async def wrong_session(ctx):
    msg = ctx.machines[20].start()[0]
    forged = AdvertiseKeys(bytes(32), 20, 0, c_pk=msg.c_pk, s_pk=msg.s_pk)
    await send_then_wait(ctx.port, 20, forged.encode())


async def wrong_round(ctx):
    stream, reader, _ = await join(ctx.port, 20)
    advertise = ctx.machines[20].start()[0].encode()
    await stream.send_all(encode_frame(advertise))
    await reader.receive(1 << 20)  # the roster: now in share_keys
    await stream.send_all(encode_frame(advertise))  # an advertise_keys message again
    await wait_closed(stream)


async def sender_mismatch(ctx):
    forged = AdvertiseKeys(ctx.params.session_id, 19, 0, c_pk=os.urandom(32), s_pk=os.urandom(32))
    await send_then_wait(ctx.port, 20, forged.encode())


async def impostor_then_real_client(ctx):
    """Malicious mode: an impostor claims id 20 but cannot sign as 20; then the real 20 joins."""
    forged = AdvertiseKeys(ctx.params.session_id, 20, 0, c_pk=os.urandom(32), s_pk=os.urandom(32), signature=os.urandom(64))
    await send_then_wait(ctx.port, 20, forged.encode())
    bound = trio.Event()

    async def bound_now(msg):
        bound.set()
        return True

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ctx.honest, 20, bound_now)
        await bound.wait()
        await ctx.honest(19)  # keeps advertise_keys open until the real 20 is in


async def duplicate_id(ctx):
    await ctx.joined[5].wait()
    with pytest.raises(Refused) as refused:
        await join(ctx.port, 5)
    assert refused.value.rule == "duplicate-id"
    await ctx.honest(20)  # only now does the last honest client join


async def unknown_id(ctx):
    with pytest.raises(Refused):
        await join(ctx.port, 999)


async def garbage_hello(ctx):
    stream = await raw(ctx.port)
    await stream.send_all(encode_frame(b"\xc1\xc1 not msgpack"))
    await wait_closed(stream)


async def silent_connection(ctx):
    stream = await raw(ctx.port)
    await wait_closed(stream)
    await ctx.honest(20)  # the session is still waiting for client 20 until then


async def silent_after_hello(ctx):
    stream, _, _ = await join(ctx.port, 20)
    await wait_closed(stream)


ALL = set(range(1, N + 1))
HOSTILE = [
    # (behaviour, rule logged, included, does the honest client 20 join from the start)
    (garbage_frame, "malformed:encoding", ALL - {20}, False),
    (http_request, "frame-too-large", ALL, True),
    (truncated_frame, "truncated-frame", ALL - {20}, False),
    (oversized_prefix, "frame-too-large", ALL - {20}, False),
    (wrong_types, "malformed:c_pk", ALL - {20}, False),
    (wrong_session, "session-id", ALL - {20}, False),
    (wrong_round, "wrong-round", ALL - {20}, False),
    (sender_mismatch, "sender-binding", ALL - {20}, False),
    (duplicate_id, "duplicate-id", ALL, False),
    (unknown_id, "unknown-id", ALL, True),
    (garbage_hello, "bad-hello", ALL, True),
    (silent_connection, "hello-timeout", ALL, False),
    (silent_after_hello, None, ALL - {20}, False),
]


class Context:
    def __init__(self, port, params, machines, trusted):
        self.port, self.params, self.machines = port, params, machines
        self.joined = {u: trio.Event() for u in params.client_ids}
        self.outcomes = {}
        self._trusted = trusted

    async def honest(self, u: int, before_send=None) -> None:
        self.outcomes[u] = await run_client(
            "127.0.0.1", self.port, u, client=self.machines[u], trusted_keys=self._trusted, before_send=before_send
        )


def run_hostile(behaviour, *, honest, malicious: bool = False):
    inputs, params, machines = make_session(seed=6, malicious=malicious)
    trusted = dict(params.identity_keys) if malicious else None
    box = {}

    async def main():
        ctx_box = []

        def on_event(kind, info):
            if kind == "joined" and ctx_box:
                ctx_box[0].joined[info["client"]].set()

        server = TcpServer(params, round_timeout=1.0, join_timeout=2.0, hello_timeout=0.5, on_event=on_event)

        async def serve(task_status=trio.TASK_STATUS_IGNORED):
            box["res"] = await server.run(task_status=task_status)

        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve)
            ctx = Context(port, params, machines, trusted)
            ctx_box.append(ctx)
            for u in sorted(honest):
                nursery.start_soon(ctx.honest, u)
            nursery.start_soon(behaviour, ctx)
        box["ctx"] = ctx

    trio.run(main)
    return inputs, box["res"], box["ctx"]


@pytest.mark.parametrize("behaviour, rule, included, also_20", HOSTILE, ids=[h[0].__name__ for h in HOSTILE])
def test_hostile_input(behaviour, rule, included, also_20, caplog):
    caplog.set_level(logging.INFO, logger="secagg.tcp")
    inputs, res, ctx = run_hostile(behaviour, honest=ALL if also_20 else ALL - {20})
    assert_exact(inputs, res, included)
    assert all(ctx.outcomes[u].status == "done" for u in included)
    assert not [r for r in caplog.records if "internal error" in r.getMessage()]
    if rule is None:  # plain silence is a dropout, not a violation
        assert res.dropouts == {"advertise_keys": [20]} and res.violations == []
        return
    assert [v.rule for v in res.violations] == [rule]
    offender = res.violations[0].client
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and f"[{rule}]" in r.getMessage()]
    assert logged, f"no warning names rule {rule}"
    if offender is not None:
        assert f"client {offender}" in logged[0]
        assert offender == (5 if behaviour is duplicate_id else 999 if behaviour is unknown_id else 20)


def test_bad_signature_in_malicious_mode(caplog):
    caplog.set_level(logging.WARNING, logger="secagg.tcp")
    inputs, res, ctx = run_hostile(impostor_then_real_client, honest=ALL - {19, 20}, malicious=True)
    assert_exact(inputs, res, ALL)  # the impostor was dropped, the real client 20 is in the sum
    assert [(v.client, v.rule) for v in res.violations] == [(20, "key-signature")]
    assert res.dropouts == {}
    assert any("client 20" in r.getMessage() and "[key-signature]" in r.getMessage() for r in caplog.records)


def test_client_refuses_identity_keys_it_does_not_trust():
    inputs, params, machines = make_session(seed=7, n=4, t=3, malicious=True)
    trusted = dict(params.identity_keys)
    trusted[2] = bytes(32)  # the local PKI disagrees with the server about client 2

    async def main():
        async with trio.open_nursery() as nursery:
            server = TcpServer(params, round_timeout=0.5, join_timeout=0.5)
            port = await nursery.start(server.run)
            outcome = await run_client("127.0.0.1", port, 1, client=machines[1], trusted_keys=trusted)
        return outcome

    outcome = trio.run(main)
    assert outcome.status == "error" and "identity-keys" in outcome.detail
    assert machines[1].state is ClientState.START  # it never advertised keys


def test_client_with_a_key_directory_refuses_a_downgrade_to_honest_but_curious_mode():
    # A server that announces honest-but-curious mode would skip every signature check
    # and could substitute keys; a client holding a PKI must refuse to take part.
    _, honest_params, _ = make_session(seed=8, n=4, t=3, malicious=False)
    _, malicious_params, _ = make_session(seed=8, n=4, t=3, malicious=True)

    async def main():
        async with trio.open_nursery() as nursery:
            server = TcpServer(honest_params, round_timeout=0.5, join_timeout=0.5)
            port = await nursery.start(server.run)
            return await run_client(
                "127.0.0.1", port, 1, np.zeros(DIM, dtype=np.uint64),
                identity_key=None, trusted_keys=dict(malicious_params.identity_keys),
            )

    outcome = trio.run(main)
    assert outcome.status == "error" and "mode-downgrade" in outcome.detail
    assert outcome.sent_rounds == []


def test_allow_insecure_is_the_clients_own_choice_and_lets_it_join():
    rng = np.random.default_rng(3)
    inputs = {u: rng.integers(0, M, DIM, dtype=np.uint64) for u in range(1, 5)}
    with pytest.warns(Warning):
        params, machines = setup_session(inputs, threshold=2, modulus=M, malicious=True, seed=3, allow_insecure=True)
    trusted = dict(params.identity_keys)

    async def main(allow: bool):
        async with trio.open_nursery() as nursery:
            server = TcpServer(params, round_timeout=0.5, join_timeout=0.5)
            port = await nursery.start(server.run)
            outcome = await run_client(
                "127.0.0.1", port, 1, client=machines[1], trusted_keys=trusted, allow_insecure=allow
            )
            nursery.cancel_scope.cancel()
        return outcome

    refused = trio.run(main, False)
    assert refused.status == "error" and "no guarantee" in refused.detail
    with pytest.warns(Warning):
        joined = trio.run(main, True)
    assert "advertise_keys" in joined.sent_rounds


# ---- framing and addresses ----------------------------------------------------------


def test_oversized_prefix_is_refused_before_the_payload_is_read():
    async def main():
        left, right = trio.testing.memory_stream_pair()
        await left.send_all((10_000).to_bytes(4, "big"))  # header only: reading on would block
        with trio.fail_after(5):
            with pytest.raises(FrameTooLarge):
                await FrameReader(right).receive(limit=1000)
        await left.send_all(encode_frame(b"x" * 1000))
        left2, right2 = trio.testing.memory_stream_pair()
        await left2.send_all(encode_frame(b"x" * 1000))
        assert await FrameReader(right2).receive(limit=1000) == b"x" * 1000

    trio.run(main)


def test_only_loopback():
    _, params, _ = make_session(seed=8, n=3, t=2)
    for host in ("0.0.0.0", "192.168.1.10", "example.com"):
        with pytest.raises(ParameterError, match="127.0.0.1 or ::1"):
            TcpServer(params, host=host)
        with pytest.raises(ParameterError):
            trio.run(run_client, host, 9, 1)
    with pytest.raises(ParameterError):
        parse_address("10.0.0.1:80")
    assert parse_address("[::1]:8080") == ("::1", 8080)
    assert parse_address("127.0.0.1:8080") == ("127.0.0.1", 8080)


def _ipv6_loopback() -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")
def test_ipv6_loopback():
    inputs, params, machines = make_session(seed=9, n=4, t=3)
    run = run_session(params, machines, host="::1")
    assert_exact(inputs, run.server, range(1, 5))


def test_simulate_tcp_matches_simulate_and_serves_as_an_oracle_runner():
    from secagg import SecureAverageOracle, simulate
    from secagg.tcp import simulate_tcp

    rng = np.random.default_rng(5)
    inputs = {u: rng.integers(0, 2**32, 16, dtype=np.uint64) for u in range(1, 9)}
    plan = {"masked_input": [2], "unmasking": [5]}
    over_tcp = simulate_tcp(inputs, threshold=5, modulus=2**32, dropouts=plan, seed=9, round_timeout=10)
    in_memory = simulate(inputs, threshold=5, modulus=2**32, dropouts=plan, seed=9)
    assert over_tcp.included == in_memory.included == (1, 3, 4, 5, 6, 7, 8)
    assert np.array_equal(over_tcp.total, in_memory.total)
    expected = sum(inputs[u] for u in over_tcp.included) % np.uint64(2**32)
    assert np.array_equal(over_tcp.total, expected)

    oracle = SecureAverageOracle(5, runner=simulate_tcp)
    vectors = {u: rng.normal(size=4) for u in range(1, 7)}
    weights = {u: u / 10 for u in vectors}  # within the default weight bound 1
    result = oracle.average(vectors, weights)
    exact = sum(weights[u] * vectors[u] for u in vectors) / sum(weights.values())
    assert np.max(np.abs(result.value - exact)) <= result.error_bound
    assert oracle.calls == 1 and result.bytes_per_client > 0


@pytest.mark.parametrize("malicious", [False, True], ids=["honest-but-curious", "malicious-server"])
def test_bare_hellos_for_every_id_then_disconnects_do_not_end_advertise_keys(malicious):
    # Regression (audit 14.3): each id's connection dies before any accepted message, so no id
    # counts as gone; the join window stays open and the real clients claim their ids again.
    n, t = 6, 5
    inputs, params, machines = make_session(seed=12, n=n, t=t, malicious=malicious)
    trusted = dict(params.identity_keys) if malicious else None
    gone = trio.Event()
    dropouts = []

    def on_event(kind, info):
        if kind == "dropout":
            dropouts.append(info["client"])
            if len(dropouts) == n:
                gone.set()

    box = {}

    async def main():
        server = TcpServer(params, round_timeout=1.0, join_timeout=3.0, on_event=on_event)

        async def serve(task_status=trio.TASK_STATUS_IGNORED):
            box["res"] = await server.run(task_status=task_status)

        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve)
            for u in params.client_ids:  # an impostor says hello as everyone, then leaves
                stream, _, _ = await join(port, u)
                await stream.aclose()
            with trio.fail_after(5):
                await gone.wait()  # the server has seen every disconnect
            for u in params.client_ids:
                nursery.start_soon(lambda u=u: run_client("127.0.0.1", port, u, client=machines[u], trusted_keys=trusted))

    trio.run(main)
    res = box["res"]
    assert sorted(dropouts) == list(params.client_ids)
    assert_exact(inputs, res, params.client_ids)
    assert res.dropouts == {} and res.violations == []


@pytest.mark.parametrize("malicious", [False, True], ids=["honest-but-curious", "malicious-server"])
def test_sparse_graph_session_over_tcp_with_dropouts(malicious):
    """A SecAgg+ Harary graph travels in the bootstrap parameters; sums stay exact over TCP."""
    n = 40
    rng = np.random.default_rng(5)
    inputs = {u: rng.integers(0, M, DIM, dtype=np.uint64) for u in range(1, n + 1)}
    params, machines = setup_session(
        inputs, modulus=M, seed=5, graph="sparse", tolerated_dropout=0.1, tolerated_corrupt=0.05, malicious=malicious
    )
    assert params.sparse and params.graph.degree < n - 1 and params.malicious is malicious
    leavers = {7: Round.SHARE_KEYS, 21: Round.MASKED_INPUT, 33: Round.UNMASKING}
    if malicious:
        leavers[14] = Round.CONSISTENCY_CHECK
    run = run_session(params, machines, before_send={u: leave_at(r) for u, r in leavers.items()})
    assert_exact(inputs, run.server, set(range(1, n + 1)) - {7, 21})
    assert all(run.clients[u].status == "done" for u in set(range(1, n + 1)) - set(leavers))
