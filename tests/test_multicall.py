"""Multi-call sessions (protocol_spec.md 16): key rounds once, masked_input and unmasking per call."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from secagg import AbortError, ParameterError, ProtocolViolation
from secagg.client import ClientState
from secagg.errors import WeakParameters
from secagg.messages import CallOpen, ConsistencySignature, EncryptedShares, MaskedInput, Round, UnmaskRequest, decode
from secagg.params import MAX_CALLS, PublicParams
from secagg.policy import ClientPolicy
from secagg.server import Server, ServerState
from secagg.sharecrypt import ciphertext_bytes
from secagg.simulation import MultiCallSimulation, setup_session, simulate

MOD = 2**16
D = 5


def call_inputs(ids, calls, seed=0):
    """The input of every client in every call: independent vectors (data, not secrets)."""
    gen = np.random.default_rng(seed)
    return {u: gen.integers(0, MOD, size=(calls, D), dtype=np.uint64) for u in ids}


def session(n=7, calls=3, t=4, malicious=False, seed=1, **kw):
    ids = list(range(1, n + 1))
    table = call_inputs(ids, calls, seed)
    opened: dict[int, list] = {u: [] for u in ids}

    def inputs_of(u):
        def inputs(call, msg):
            opened[u].append((call, None if msg is None else msg.broadcast))
            return table[u][call]
        return inputs

    params, clients = setup_session(
        {u: table[u][0] for u in ids}, threshold=t, modulus=MOD, malicious=malicious, seed=seed, calls=calls,
        client_inputs=inputs_of, **kw,
    )
    return MultiCallSimulation(params, clients), table, opened


def expected(table, included, call):
    return sum((table[u][call] for u in included), np.zeros(D, np.uint64)) % MOD


MODES = [
    pytest.param(dict(malicious=False), id="hbc"),
    pytest.param(dict(malicious=True, t=5), id="malicious"),
]


@pytest.mark.parametrize(
    "mode, round_",
    [pytest.param(m.values[0], r, id=f"{m.id}-{r}") for m in MODES
     for r in ["none", "share_keys", "masked_input", "consistency_check", "unmasking"]
     if r != "consistency_check" or m.values[0]["malicious"]],
)
def test_every_call_sum_is_exact_with_a_dropout_in_any_round_of_call_0(mode, round_):
    sim, table, opened = session(**mode)
    plan = {} if round_ == "none" else {round_: [3]}
    first = sim.run_call(plan)
    assert np.array_equal(first.total, expected(table, first.included, 0))
    if round_ in ("share_keys", "masked_input"):
        assert 3 not in first.included
    for call in (1, 2):
        if round_ in ("consistency_check", "unmasking"):
            # Client 3's input is in call 0's sum but it went silent: the next call loses a pinned survivor.
            with pytest.raises(AbortError, match="pinned"):
                sim.run_call(broadcast=b"v%d" % call)
            assert sim.server.result is None and len(sim.server.results) == 1  # nothing of call 1 revealed
            return
        result = sim.run_call(broadcast=b"v%d" % call)
        assert result.call == call and result.included == first.included
        assert np.array_equal(result.total, expected(table, result.included, call))
    assert sim.server.state is ServerState.DONE
    u = first.included[0]
    assert opened[u] == [(0, None), (1, b"v1"), (2, b"v2")]  # the callback saw each call's broadcast


@pytest.mark.parametrize(
    "mode, round_",
    [pytest.param(MODES[0].values[0], "unmasking", id="hbc-unmasking"),
     pytest.param(MODES[1].values[0], "unmasking", id="malicious-unmasking"),
     pytest.param(MODES[1].values[0], "consistency_check", id="malicious-consistency_check")],
)
def test_a_dropout_after_a_later_calls_masked_input_keeps_its_sum_and_ends_the_aggregation(mode, round_):
    sim, table, _ = session(**mode)
    sim.run_call()
    second = sim.run_call({round_: [2]})
    assert second.included == tuple(range(1, 8))  # 2's masked input is in, only its shares are missing
    assert np.array_equal(second.total, expected(table, second.included, 1))
    with pytest.raises(AbortError, match="pinned"):
        sim.run_call()


@pytest.mark.parametrize("mode", MODES)
def test_a_masked_input_dropout_in_a_later_call_aborts_before_anything_is_unmasked(mode):
    sim, _, _ = session(**mode)
    sim.run_call()
    with pytest.raises(AbortError, match="pinned"):
        sim.run_call({"masked_input": [4]})
    assert sim.server.state is ServerState.ABORTED and len(sim.server.results) == 1
    # No honest client was asked for a share of call 1; the abort notices of call 1 end their session.
    assert all(c.call == 1 and c.state is ClientState.MASKED for u, c in sim.clients.items() if u != 4)
    for notice in sim.server.abort_notices("pinned"):
        assert notice.call == 1 and sim.clients[notice.recipient].receive(notice.encode()) == []
    assert all(c.state is ClientState.ABORTED for u, c in sim.clients.items() if u != 4)


def test_results_equal_separate_sessions_sums():
    sim, table, _ = session(malicious=False, n=6, calls=3)
    totals = [sim.run_call().total for _ in range(3)]
    for call, total in enumerate(totals):
        alone = simulate({u: table[u][call] for u in table}, threshold=4, modulus=MOD, seed=9)
        assert np.array_equal(total, alone.total)


def test_sparse_graph_malicious_calls_are_exact():
    n = 40
    sim, table, _ = session(
        n=n, calls=2, t=None, malicious=True, graph="sparse", tolerated_dropout=0.05, tolerated_corrupt=0.05,
        min_group=2,
    )
    first = sim.run_call({"masked_input": [5]})
    second = sim.run_call(broadcast=b"x")
    assert first.included == second.included and 5 not in first.included
    for call, r in enumerate((first, second)):
        assert np.array_equal(r.total, expected(table, r.included, call))


def test_key_rounds_run_once_and_later_calls_carry_only_masked_input_and_unmasking():
    sim, _, _ = session(malicious=False, calls=2)
    first, second = sim.run_call(), sim.run_call()
    kinds = lambda r: {decode(m, sim.params).KIND for m in r.transcript}
    assert kinds(first) == {"advertise_keys", "encrypted_shares", "masked_input", "unmasking_shares"}
    assert kinds(second) == {"masked_input", "unmasking_shares"}
    assert {decode(m, sim.params).call for m in second.transcript} == {1}


@settings(max_examples=8, deadline=None)
@given(calls=st.integers(1, 4), n=st.integers(3, 6), data=st.data())
def test_property_every_call_sums_the_survivors_of_call_0(calls, n, data):
    t = data.draw(st.integers(2, n - 1))
    dropped = data.draw(st.sets(st.integers(1, n), max_size=n - t))
    round_ = data.draw(st.sampled_from(["share_keys", "masked_input"]))
    sim, table, _ = session(n=n, calls=calls, t=t, seed=data.draw(st.integers(0, 2**16)))
    results = [sim.run_call({round_: sorted(dropped)})] + [sim.run_call() for _ in range(calls - 1)]
    for call, r in enumerate(results):
        assert r.included == tuple(u for u in range(1, n + 1) if u not in dropped)
        assert np.array_equal(r.total, expected(table, r.included, call))


# ---- the client's rules ---------------------------------------------------------


def test_a_client_whose_mask_key_was_reconstructed_refuses_the_next_call():
    """Client 3's masked input arrives after the deadline: the server reconstructs its s_sk,
    which exposes every pairwise mask it would use later, so it refuses to mask call 1."""
    sim, _, _ = session(malicious=False, calls=2)
    params, clients = sim.params, sim.clients
    server = Server(params)
    inbox = [m for u in clients for m in clients[u].start()]
    for _ in range(2):  # advertise_keys, share_keys
        out = [r for m in inbox for r in server.receive(m)]
        inbox = [r for m in out for r in clients[m.recipient].receive(m.encode())]
    late = next(m for m in inbox if m.sender == 3)
    out = [r for m in inbox if m.sender != 3 for r in server.receive(m)]
    out += server.close_round()
    assert isinstance(late, MaskedInput)
    replies = [r for m in out for r in clients[m.recipient].receive(m.encode())]
    for m in replies:
        server.receive(m)
    assert server.state is ServerState.CALL_DONE and 3 not in server.results[0].included
    opens = server.open_call(b"")
    assert 3 not in {m.recipient for m in opens}  # an honest server does not ask
    forged = CallOpen(params.session_id, 0, 3, call=1)
    before = (clients[3].state, clients[3].call)
    with pytest.raises(ProtocolViolation, match="out-of-order"):
        clients[3].receive(forged.encode())
    assert (clients[3].state, clients[3].call) == before == (ClientState.MASKED, 0)


def test_a_client_refuses_a_call_it_skipped_and_one_opened_twice():
    sim, _, _ = session(malicious=False, calls=3)
    sim.run_call()
    client = sim.clients[1]
    with pytest.raises(ProtocolViolation, match="out-of-order"):
        client.receive(CallOpen(sim.params.session_id, 0, 1, call=2).encode())
    sim.run_call()
    with pytest.raises(ProtocolViolation, match="out-of-order"):
        client.receive(CallOpen(sim.params.session_id, 0, 1, call=1).encode())
    assert client.call == 1 and client.state is ClientState.DONE


def test_a_client_unmasks_a_later_call_only_over_the_pinned_survivors():
    sim, _, _ = session(malicious=False, calls=2)
    first = sim.run_call({"masked_input": [6]})
    client = sim.clients[1]
    client.receive(CallOpen(sim.params.session_id, 0, 1, call=1).encode())
    wider = UnmaskRequest(sim.params.session_id, 0, 1, call=1, survivors=tuple(sorted(first.included + (6,))))
    with pytest.raises(ProtocolViolation):
        client.receive(wider.encode())
    narrower = UnmaskRequest(sim.params.session_id, 0, 1, call=1, survivors=first.included[:-1])
    with pytest.raises(ProtocolViolation, match="pinned"):
        client.receive(narrower.encode())
    assert client.state is ClientState.MASKED


def test_a_message_of_one_call_is_refused_in_another():
    sim, _, _ = session(malicious=False, calls=3)
    first = sim.run_call()
    sim.run_call()
    server = sim.server
    server.open_call()
    stale = next(m for m in first.transcript if decode(m, sim.params).KIND == "masked_input")
    with pytest.raises(ProtocolViolation, match="wrong-call"):
        server.receive(stale)  # call 0's masked input never counts for call 2
    old = decode(stale, sim.params)
    request = UnmaskRequest(sim.params.session_id, 0, old.sender, call=0, survivors=first.included)
    with pytest.raises(ProtocolViolation, match="wrong-call"):
        sim.clients[old.sender].receive(request.encode())


def test_consistency_signatures_of_one_call_do_not_verify_for_the_next():
    sim, _, _ = session(malicious=True, t=5, calls=2)
    first = sim.run_call()
    signatures = {
        m.sender: m.signature for m in map(lambda b: decode(b, sim.params), first.transcript)
        if isinstance(m, ConsistencySignature)
    }
    assert len(signatures) == 7
    server = sim.server
    lists = [out for m in server.open_call() for reply in sim.clients[m.recipient].receive(m.encode())
             for out in server.receive(reply)]
    assert server.round is Round.CONSISTENCY_CHECK and len(lists) == 7
    # Call 0's signature offered as an answer in call 1: refused.
    replayed = ConsistencySignature(sim.params.session_id, 1, 0, call=1, signature=signatures[1])
    with pytest.raises(ProtocolViolation, match="consistency-signature"):
        server.receive(replayed.encode())
    # A client shown call 0's signatures in call 1's unmask request refuses to reveal.
    client = sim.clients[2]
    client.receive(next(m for m in lists if m.recipient == 2).encode())
    forged = UnmaskRequest(sim.params.session_id, 0, 2, call=1, survivors=first.included, signatures=signatures)
    with pytest.raises(ProtocolViolation, match="consistency-signature"):
        client.receive(forged.encode())
    assert client.state is ClientState.SIGNED


# ---- parameters, policy, wire -----------------------------------------------------


def test_calls_are_public_parameters_bounded_by_the_client_policy():
    sim, _, _ = session(calls=3)
    assert ClientPolicy(max_calls=3).check(sim.params) >= 2
    with pytest.raises(WeakParameters, match="max-calls"):
        ClientPolicy(max_calls=2).check(sim.params)
    with pytest.raises(WeakParameters, match="max-calls"):
        ClientPolicy(max_calls=2).screen_wire({"client_ids": [1, 2, 3], "threshold": 2, "calls": 3})
    with pytest.raises(ParameterError, match="max_calls"):
        ClientPolicy(max_calls=0)
    with pytest.raises(ParameterError, match="calls"):
        dataclasses.replace(sim.params, calls=MAX_CALLS + 1)


def test_a_multi_call_client_needs_an_inputs_callback():
    params = PublicParams.create([1, 2, 3], threshold=2, modulus=MOD, dim=D, calls=2)
    with pytest.raises(ParameterError, match="inputs callback"):
        from secagg.client import Client

        Client(params, 1, np.zeros(D, np.uint64))


def test_share_keys_carries_one_seed_share_and_commitment_per_call():
    sim, _, _ = session(calls=4)
    first = sim.run_call()
    shares = [decode(m, sim.params) for m in first.transcript]
    shares = [m for m in shares if isinstance(m, EncryptedShares)]
    assert shares and all(len(m.commitment) == 32 * 4 for m in shares)
    assert all(len(c) == ciphertext_bytes(4) for m in shares for c in m.ciphertexts.values())


def test_open_call_is_refused_outside_call_done():
    sim, _, _ = session(calls=2)
    with pytest.raises(ProtocolViolation, match="out-of-order"):
        sim.server.open_call()
    sim.run_call()
    sim.run_call()
    assert sim.server.state is ServerState.DONE
    with pytest.raises(ProtocolViolation, match="out-of-order"):
        sim.server.open_call()


# ---- over TCP -----------------------------------------------------------------------


def test_tcp_server_drives_every_call_and_the_transcript_replays_each():
    import trio

    from secagg.tcp import run_local_session
    from secagg.transcript import replay_calls

    sim, table, opened = session(n=5, calls=3, t=3, seed=4)
    broadcasts = []

    def next_call(result):
        broadcasts.append(result.total.tobytes()[:8])  # the next call's public input depends on this call's sum
        return broadcasts[-1]

    run = trio.run(lambda: run_local_session(sim.params, sim.clients, round_timeout=10.0, next_call=next_call))
    server = run.server
    assert server.abort is None and [r.call for r in server.results] == [0, 1, 2]
    for call, result in enumerate(server.results):
        assert np.array_equal(result.total, expected(table, result.included, call))
    assert opened[1] == [(0, None), (1, broadcasts[0]), (2, broadcasts[1])]
    assert all(o.status == "done" and o.calls == 3 for o in run.clients.values())
    replayed = replay_calls(server.transcript)
    assert [np.array_equal(a.total, b.total) for a, b in zip(replayed, server.results)] == [True] * 3
    assert sum(r.channel == "call" for r in server.transcript.records) == 2


def test_inspect_shows_every_call_of_a_transcript(tmp_path, capsys):
    import json

    import trio

    from secagg.cli import main
    from secagg.tcp import run_local_session

    sim, table, _ = session(n=4, calls=2, t=3, seed=6)
    path = tmp_path / "session.transcript"
    with open(path, "wb") as file:
        run = trio.run(lambda: run_local_session(sim.params, sim.clients, round_timeout=10.0, transcript_file=file))
    assert main(["inspect", str(path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [c["total"] for c in shown["calls"]] == [[int(v) for v in r.total] for r in run.server.results]
    assert {r["call"] for r in shown["records"] if r["channel"] == "message"} == {0, 1}
    assert [r["kind"] for r in shown["records"] if r["channel"] == "call"] == ["call_open"]


def test_tcp_server_may_end_a_session_before_its_last_planned_call():
    import trio

    from secagg.tcp import run_local_session

    sim, table, _ = session(n=4, calls=3, t=3, seed=5)
    run = trio.run(lambda: run_local_session(sim.params, sim.clients, round_timeout=10.0, next_call=lambda r: None))
    assert len(run.server.results) == 1 and run.server.result is not None
    assert all(o.status == "done" and o.calls == 1 for o in run.clients.values())


def test_tcp_client_declines_a_multi_call_session_without_an_inputs_callback():
    import trio

    from secagg.tcp import TcpServer, run_client

    params = PublicParams.create([1, 2, 3], threshold=2, modulus=MOD, dim=D, calls=2)
    outcomes = {}

    async def main():
        server = TcpServer(params, round_timeout=1.0, join_timeout=1.0)
        async with trio.open_nursery() as nursery:
            port = await nursery.start(server.run)
            outcomes["without"] = await run_client("127.0.0.1", port, 1, np.zeros(D, np.uint64), policy=None)
            outcomes["too-many"] = await run_client(
                "127.0.0.1", port, 2, inputs=lambda call, msg: np.zeros(D, np.uint64), policy=ClientPolicy(max_calls=1),
                allow_insecure=False,
            )

    trio.run(main)
    assert outcomes["without"].status == "error" and "inputs callback" in outcomes["without"].detail
    assert outcomes["too-many"].status == "declined" and "max-calls" in outcomes["too-many"].detail


# ---- Flower: a node's later steps ---------------------------------------------------------


def _deliver(server, messages, clients):
    """Move messages between an auto-closing server and the clients until nothing is left to send."""
    while messages:
        replies = [r for m in messages for r in clients[m.recipient].receive(m.encode())]
        messages = [out for r in replies for out in server.receive(r.encode())]


def test_a_flower_node_checks_each_later_steps_certificate_as_it_checks_the_first():
    from flwr.app import ConfigRecord

    from rfa.errors import CertificateViolation
    from rfa.weiszfeld import weiszfeld_weights
    from rfa_flower.client_mod import SecureRFAMod
    from rfa_flower.protocol import SecurePolicy, Setup, encode_step

    policy = SecurePolicy(norm_bound=10.0, alpha_min=1.0, alpha_max=2.0, nu=1e-2, max_clients=8)
    n, d = 4, 3
    updates = np.random.default_rng(3).normal(size=(n, d))
    alphas = np.array([1.0, 1.5, 2.0, 1.0])
    params = PublicParams.create(range(1, n + 1), threshold=3, modulus=policy.encoding.modulus, dim=d + 1, calls=2)
    nodes = {u: 100 + u for u in params.client_ids}
    clients = {
        u: SecureRFAMod._client(policy, Setup(params, u, "mean", np.zeros(d), nodes),
                                ConfigRecord({"alpha": float(alphas[u - 1])}), updates[u - 1], bytes([u]) * 32, None)
        for u in params.client_ids
    }
    server = Server(params)
    _deliver(server, [out for c in clients.values() for m in c.start() for out in server.receive(m.encode())], clients)
    mean, _, _ = policy.encoding.decode_average(server.results[0].total, n)
    np.testing.assert_allclose(mean, alphas @ updates / alphas.sum(), atol=1e-9)
    # A later step whose v lies outside the public ball: every node refuses it before masking anything.
    for m in server.open_call(encode_step("weiszfeld", np.full(d, 100.0))):
        with pytest.raises(CertificateViolation, match="norm"):
            clients[m.recipient].receive(m.encode())
        assert clients[m.recipient].call == 0 and clients[m.recipient].state is ClientState.DONE
    v = np.array([0.5, -0.2, 0.1])
    good = [CallOpen(params.session_id, 0, u, call=1, broadcast=encode_step("weiszfeld", v)) for u in clients]
    _deliver(server, good, clients)
    step, _, error = policy.encoding.decode_average(server.results[1].total, n)
    beta = weiszfeld_weights(updates, v, alphas, policy.nu)
    np.testing.assert_allclose(step, beta @ updates / beta.sum(), atol=10 * error + 1e-9)


def test_a_flower_step_broadcast_decodes_only_as_a_known_kind_of_the_sessions_dimension():
    from rfa_flower.protocol import SetupError, decode_step, encode_step

    params = PublicParams.create([1, 2, 3], threshold=2, modulus=MOD, dim=4, calls=2)
    kind, v = decode_step(encode_step("weiszfeld", np.arange(3.0)), params)
    assert kind == "weiszfeld" and np.array_equal(v, np.arange(3.0))
    assert decode_step(encode_step("mean", np.arange(3.0)), params)[0] == "mean"  # a mean carries no v
    import msgpack

    for bad in (b"\xc1", msgpack.packb([1, 2]), encode_step("weiszfeld", np.arange(4.0)),
                msgpack.packb({"kind": "mean", "v": b"x"}), msgpack.packb({"kind": "other", "v": b""}),
                encode_step("weiszfeld", np.array([0.0, np.nan, 0.0]))):
        with pytest.raises(SetupError):
            decode_step(bad, params)


# ---- malformed later-call messages: typed errors, no state change ---------------------------


def test_malformed_call_open_frames_are_refused_by_the_client_without_a_state_change():
    import msgpack

    from secagg import MalformedMessage
    from secagg.messages import PROTOCOL_VERSION, max_broadcast_bytes

    sim, _, _ = session(malicious=False, calls=3)
    sim.run_call()
    client, sid = sim.clients[1], sim.params.session_id
    env = lambda call, body, kind="call_open", rnd="masked_input": msgpack.packb(  # noqa: E731
        [PROTOCOL_VERSION, sid, rnd, kind, 0, 1, call, body], use_bin_type=True)
    bad = {
        "call-0": (env(0, [b""]), MalformedMessage),
        "call-beyond-L": (env(3, [b""]), MalformedMessage),
        "broadcast-too-long": (env(1, [bytes(max_broadcast_bytes(sim.params) + 1)]), MalformedMessage),
        "broadcast-not-bytes": (env(1, ["v"]), MalformedMessage),
        "body-long": (env(1, [b"", b""]), MalformedMessage),
        "wrong-round": (env(1, [b""], rnd="unmasking"), MalformedMessage),
        "forwarded-shares-in-call-1": (env(1, [{}], kind="forwarded_shares"), MalformedMessage),
        "skips-a-call": (env(2, [b""]), ProtocolViolation),
    }
    for name, (frame, error) in bad.items():
        with pytest.raises(error):
            client.receive(frame)
        assert (client.call, client.state) == (0, ClientState.DONE), name
    assert client.receive(env(1, [b"ok"]))[0].call == 1  # the genuine frame still works


def test_a_later_call_refuses_mask_key_shares_and_messages_of_other_calls_without_a_state_change():
    from secagg.messages import UnmaskingShares

    sim, table, _ = session(malicious=False, calls=2)
    first = sim.run_call({"masked_input": [7]})
    server, params = sim.server, sim.params
    masked = [r for m in server.open_call() for r in sim.clients[m.recipient].receive(m.encode())]
    requests = [out for r in masked for out in server.receive(r.encode())]
    assert server.round is Round.UNMASKING and len(requests) == len(first.included)
    genuine = sim.clients[1].receive(requests[0].encode())[0]
    forged = [
        dataclasses.replace(genuine, s_shares={7: 5}),  # a mask key share in a later call: never asked for
        dataclasses.replace(genuine, call=0),
        dataclasses.replace(genuine, b_shares={}),
    ]
    for msg in forged:
        before = set(server.waiting_for)
        with pytest.raises(ProtocolViolation):
            server.receive(msg.encode())
        assert set(server.waiting_for) == before
    assert isinstance(genuine, UnmaskingShares)
    server.receive(genuine.encode())
    for m in requests[1:]:
        for r in sim.clients[m.recipient].receive(m.encode()):
            server.receive(r.encode())
    assert np.array_equal(server.results[1].total, expected(table, first.included, 1))


def test_a_client_rebuilt_by_replay_answers_the_next_message_as_the_live_one_did():
    """rfa_flower keeps no client in memory: it replays the messages received so far with
    replay=True (no replies, no mask expansion) and then answers the new one."""
    live_sim, _, _ = session(calls=3, seed=8)
    live = live_sim.clients[2]
    frames, replies = [], []
    receive = live.receive

    def recording(data, **kw):
        frames.append(data)
        answers = receive(data, **kw)
        replies.append([m.encode() for m in answers])
        return answers

    live.receive = recording
    for _ in range(3):
        live_sim.run_call()
    kinds = [decode(d, live_sim.params).KIND for d in frames]
    assert kinds.count("call_open") == 2
    # For every message: a client of the same seed, rebuilt from the earlier ones, answers it identically.
    for k in range(len(frames)):
        twin, _, _ = session(calls=3, seed=8)
        rebuilt = twin.clients[2]
        rebuilt.start()
        assert all(rebuilt.receive(data, replay=True) == [] for data in frames[:k])  # nothing sent again
        assert [m.encode() for m in rebuilt.receive(frames[k])] == replies[k], kinds[k]
