"""The server state machine: its rules on client messages, aborts and cheating responders."""

from __future__ import annotations

import dataclasses

import pytest

from secagg import AbortError, ClientState, MalformedMessage, ProtocolViolation
from secagg.messages import EncryptedShares, Round, UnmaskingShares
from secagg.server import ServerState
from secagg import shamir
from secagg.shamir import PRIME


def assert_exact(session, result):
    assert [int(v) for v in result.total] == session.expected(result.included)


def refuse(session, data, error, rule=None, party=None):
    before = session.server_view()
    with pytest.raises(error) as info:
        session.server.receive(data)
    if rule is not None:
        assert info.value.rule == rule
    if party is not None:
        assert info.value.party == party
    assert session.server_view() == before
    return info.value


def test_fresh_server_waits_for_every_client_in_advertise_keys(make_session):
    s = make_session(n=4, t=3)
    assert s.server.round is Round.ADVERTISE_KEYS
    assert s.server.waiting_for == frozenset({1, 2, 3, 4})
    assert s.server.state is ServerState.COLLECTING and s.server.result is None


def test_waiting_for_shrinks_and_the_last_message_closes_the_round(make_session):
    s = make_session(n=4, t=3)
    replies = s.client_replies()
    for u in (1, 2, 3):
        assert s.server.receive(replies[u][0].encode()) == []
        assert u not in s.server.waiting_for
    out = s.server.receive(replies[4][0].encode())
    assert sorted(m.recipient for m in out) == [1, 2, 3, 4]
    assert s.server.round is Round.SHARE_KEYS and s.server.counts == {"advertise_keys": 4}


def test_duplicate_message_from_one_client_is_refused(make_session):
    s = make_session(n=4, t=3)
    replies = s.client_replies()
    s.server.receive(replies[1][0].encode())
    refuse(s, replies[1][0].encode(), ProtocolViolation, "duplicate", party=1)
    del replies[1]
    s.server_collect(replies)
    assert_exact(s, s.finish())


def test_message_from_a_client_that_is_no_longer_live_is_refused(make_session):
    s = make_session(n=5, t=3)
    s.step(drop=[5])  # 5 never advertised keys
    assert 5 not in s.server.waiting_for
    forged = EncryptedShares(s.params.session_id, 5, 0, commitment=bytes(32), ciphertexts={})
    refuse(s, forged.encode(), ProtocolViolation, "not-expected", party=5)
    assert_exact(s, s.finish())


def test_unmasking_shares_from_a_client_that_dropped_before_masking_are_refused(make_session):
    s = make_session(n=5, t=3)
    drops = {"masked_input": [5]}
    while s.server.round is not Round.UNMASKING:
        s.step(drops.get(s.server.round.value, ()))
    replies = s.client_replies()
    late = UnmaskingShares(s.params.session_id, 5, 0, b_shares=dict(replies[1][0].b_shares), s_shares={})
    refuse(s, late.encode(), ProtocolViolation, "not-expected", party=5)
    s.server_collect(replies)
    assert_exact(s, s.server.result)
    assert 5 not in s.server.result.included


def test_message_for_the_wrong_round_is_refused(make_session):
    s = make_session(n=4, t=3)
    advertise = s.client_replies()
    s.server_collect(advertise)  # now in share_keys
    refuse(s, advertise[2][0].encode(), ProtocolViolation, "wrong-round", party=2)
    shares = s.client_replies()
    s.server_collect(shares)  # now in masked_input
    refuse(s, shares[3][0].encode(), ProtocolViolation, "wrong-round", party=3)
    assert_exact(s, s.finish())


@pytest.mark.parametrize("round_name", ["share_keys", "masked_input", "unmasking"])
def test_server_kind_message_sent_to_the_server_is_malformed(make_session, round_name):
    s = make_session(n=4, t=3)
    out = s.run_until(round_name)
    error = refuse(s, out[1].encode(), MalformedMessage)
    assert error.field == "kind"
    assert_exact(s, s.finish())


def test_consistency_messages_in_malicious_mode_server_kind_is_malformed(make_session):
    s = make_session(n=5, t=4, malicious=True)
    out = s.run_until("consistency_check")
    refuse(s, out[1].encode(), MalformedMessage)
    assert_exact(s, s.finish())


def test_reused_or_equal_public_keys_are_refused(make_session):
    s = make_session(n=4, t=3)
    replies = s.client_replies()
    s.server.receive(replies[1][0].encode())
    mine = replies[2][0]
    theirs = replies[1][0]
    for forged in (
        dataclasses.replace(mine, c_pk=theirs.c_pk),
        dataclasses.replace(mine, s_pk=theirs.s_pk),
        dataclasses.replace(mine, s_pk=theirs.c_pk),
        dataclasses.replace(mine, s_pk=mine.c_pk),
        # Non-canonical encodings of the same points (top bit set): other bytes, the same keys.
        dataclasses.replace(mine, c_pk=theirs.c_pk[:31] + bytes([theirs.c_pk[31] | 0x80])),
        dataclasses.replace(mine, s_pk=mine.c_pk[:31] + bytes([mine.c_pk[31] | 0x80])),
    ):
        refuse(s, forged.encode(), ProtocolViolation, "duplicate-key", party=2)
    del replies[1]
    s.server_collect(replies)
    assert_exact(s, s.finish())


@pytest.mark.parametrize("field", ["c_pk", "s_pk"])
def test_small_order_public_key_is_refused(make_session, field):
    s = make_session(n=4, t=3)
    replies = s.client_replies()
    forged = dataclasses.replace(replies[2][0], **{field: bytes(32)})
    refuse(s, forged.encode(), ProtocolViolation, "small-order-key", party=2)
    s.server_collect(replies)
    assert_exact(s, s.finish())


def test_unsigned_keys_are_refused_in_malicious_mode(make_session):
    s = make_session(n=5, t=4, malicious=True)
    replies = s.client_replies()
    other = replies[3][0]
    forged = dataclasses.replace(replies[2][0], signature=other.signature)
    refuse(s, forged.encode(), ProtocolViolation, "key-signature", party=2)
    s.server_collect(replies)
    assert_exact(s, s.finish())


def test_consistency_signature_over_another_list_is_refused(make_session):
    s = make_session(n=5, t=4, malicious=True)
    s.run_until("consistency_check")
    replies = s.client_replies()
    forged = dataclasses.replace(replies[1][0], signature=replies[2][0].signature)
    refuse(s, forged.encode(), ProtocolViolation, "consistency-signature", party=1)
    s.server_collect(replies)
    assert_exact(s, s.finish())


def test_finished_server_refuses_further_messages(make_session):
    s = make_session(n=4, t=3)
    advertise = s.client_replies()
    s.server_collect(advertise)
    result = s.finish()
    assert s.server.state is ServerState.DONE and s.server.result is result
    with pytest.raises(ProtocolViolation) as info:
        s.server.close_round()
    assert info.value.rule == "session-over"
    with pytest.raises(ProtocolViolation) as info:
        s.server.receive(advertise[1][0].encode())
    assert info.value.rule == "session-over"
    assert s.server.waiting_for == frozenset()


def test_abort_below_threshold_names_round_and_count_and_notifies_live_clients(make_session):
    s = make_session(n=5, t=4)
    s.step()  # advertise_keys
    replies = s.client_replies()
    for u in (1, 2, 3):
        s.server.receive(replies[u][0].encode())
    with pytest.raises(ProtocolViolation) as info:
        s.server.abort_notices()
    assert info.value.rule == "not-aborted"
    with pytest.raises(AbortError) as info:
        s.server.close_round()
    assert (info.value.round, info.value.count, info.value.threshold) == ("share_keys", 3, 4)
    assert s.server.state is ServerState.ABORTED and s.server.result is None
    notices = s.server.abort_notices("too few")
    assert sorted(n.recipient for n in notices) == [1, 2, 3, 4, 5]
    assert all(n.round is Round.SHARE_KEYS and n.count == 3 for n in notices)
    for n in notices:
        assert s.clients[n.recipient].receive(n.encode()) == []
        assert s.clients[n.recipient].state is ClientState.ABORTED
        assert "share_keys" in s.clients[n.recipient].abort_reason
    with pytest.raises(ProtocolViolation) as info:
        s.server.receive(replies[4][0].encode())
    assert info.value.rule == "session-over"


def test_counts_record_clients_per_round(make_session):
    s = make_session(n=6, t=3)
    result = s.finish({"share_keys": [6], "masked_input": [5], "unmasking": [4]})
    assert result.counts == {"advertise_keys": 6, "share_keys": 5, "masked_input": 4, "unmasking": 3}
    assert result.included == (1, 2, 3, 4)
    assert_exact(s, result)


# ---- responders sending wrong shares --------------------------------------------


def cheat(session, cheater, which="b_shares", delta=1):
    """Collect the unmasking replies, with ``cheater`` lying in every share of ``which``."""
    replies = session.client_replies()
    (msg,) = replies[cheater]
    wrong = {v: shift(y, delta) for v, y in getattr(msg, which).items()}
    replies[cheater] = [dataclasses.replace(msg, **{which: wrong})]
    return replies


def at_unmasking(make_session, n, t, drops=None, malicious=False):
    s = make_session(n=n, t=t, malicious=malicious, seed=7)
    drops = drops or {}
    while s.server.round is not Round.UNMASKING:
        s.step(drops.get(s.server.round.value, ()))
    return s


@pytest.mark.parametrize("malicious", [False, True])
def test_wrong_b_shares_are_corrected_and_the_cheater_named(make_session, malicious):
    s = at_unmasking(make_session, n=7, t=4 if not malicious else 5, malicious=malicious)
    s.server_collect(cheat(s, cheater=1))
    result = s.server.result
    assert_exact(s, result)
    assert set(result.cheaters) == {1}
    assert result.included == tuple(range(1, 8))


def test_wrong_s_share_of_a_dropped_client_is_corrected_and_the_cheater_named(make_session):
    s = at_unmasking(make_session, n=8, t=4, drops={"masked_input": [8]})
    s.server_collect(cheat(s, cheater=2, which="s_shares"))
    result = s.server.result
    assert_exact(s, result)
    assert set(result.cheaters) == {2}
    assert "s share" in result.cheaters[2]


def test_two_cheaters_are_corrected_with_four_extra_responders(make_session):
    s = at_unmasking(make_session, n=8, t=4)
    replies = cheat(s, cheater=1)
    for u in (3,):
        (msg,) = replies[u]
        replies[u] = [dataclasses.replace(msg, b_shares={v: shift(y, 77) for v, y in msg.b_shares.items()})]
    s.server_collect(replies)
    assert_exact(s, s.server.result)
    assert set(s.server.result.cheaters) == {1, 3}


def test_a_cheater_without_extra_responders_aborts_instead_of_a_wrong_sum(make_session):
    s = at_unmasking(make_session, n=5, t=4, drops={"unmasking": [5]})
    replies = cheat(s, cheater=1)
    del replies[5]
    with pytest.raises(AbortError) as info:
        s.server_collect(replies)
    assert info.value.round == "unmasking"
    assert s.server.result is None and s.server.state is ServerState.ABORTED


def test_cheater_with_the_highest_id_is_named(make_session):
    s = at_unmasking(make_session, n=7, t=4)
    s.server_collect(cheat(s, cheater=7))
    result = s.server.result
    assert_exact(s, result)
    assert set(result.cheaters) == {7}


def test_server_rejects_messages_of_a_session_with_other_parameters(make_session):
    a = make_session(n=4, t=3, seed=1)
    b = make_session(n=4, t=3, seed=2)
    replies = b.client_replies()
    refuse(a, replies[1][0].encode(), ProtocolViolation, "session-id", party=1)
    assert_exact(a, a.finish())


# ---- audit 14.1 / 14.2: naming only proven liars, and a liar costs one decoding -----------


def shift(y, delta):
    """Share y with ``delta`` added (mod p) to every chunk."""
    words = [int(w) for w in shamir.share_array([y])[0]]
    return int.from_bytes(b"".join(((w + delta) % PRIME).to_bytes(4, "big") for w in words), "big")


def lagrange_at_zero(xs):
    out = []
    for j, xj in enumerate(xs):
        num = den = 1
        for m, xm in enumerate(xs):
            if m != j:
                num, den = num * (-xm) % PRIME, den * (xj - xm) % PRIME
        out.append(num * pow(den, -1, PRIME) % PRIME)
    return out


def test_colluding_low_id_responders_who_keep_the_secret_right_are_named_and_nobody_else(make_session):
    """Audit 14.1: ids 1 and 2 shift every b share by d1, d2 with l1 d1 + l2 d2 = 0 (Lagrange weights of
    ids 1..t), so the fast path still rebuilds each seed; the honest ids 5..10 used to be named."""
    s = at_unmasking(make_session, n=10, t=4)
    l = lagrange_at_zero([1, 2, 3, 4])
    d1 = 987654
    d2 = (-l[0] * d1 * pow(l[1], -1, PRIME)) % PRIME
    replies = s.client_replies()
    for u, d in ((1, d1), (2, d2)):
        (msg,) = replies[u]
        replies[u] = [dataclasses.replace(msg, b_shares={v: shift(y, d) for v, y in msg.b_shares.items()})]
    s.server_collect(replies)
    assert_exact(s, s.server.result)
    assert set(s.server.result.cheaters) == {1, 2} and not s.server.result.unattributed


def test_one_liar_with_the_lowest_id_costs_one_decoding_in_the_whole_session(make_session, monkeypatch):
    """Audit 14.2: the liar is remembered across every secret, b and s alike."""
    calls = []
    real = shamir.berlekamp_welch
    monkeypatch.setattr(shamir, "berlekamp_welch", lambda *a: calls.append(1) or real(*a))
    s = at_unmasking(make_session, n=12, t=5, drops={"masked_input": [11, 12]})
    replies = s.client_replies()
    (msg,) = replies[1]
    replies[1] = [dataclasses.replace(
        msg, b_shares={v: shift(y, 5) for v, y in msg.b_shares.items()}, s_shares={v: shift(y, 5) for v, y in msg.s_shares.items()}
    )]
    s.server_collect(replies)
    assert_exact(s, s.server.result)
    assert set(s.server.result.cheaters) == {1}
    assert len(calls) == 1  # 10 seeds and 2 keys, one decoding (it was one per secret)


def test_tcp_server_closes_the_unmasking_round_off_the_event_loop():
    """Audit 14.2: reconstruction runs in a worker thread (trio.to_thread), so the loop keeps serving."""
    import threading

    import trio

    from secagg.simulation import setup_session
    from secagg.tcp import run_local_session

    seen = {}
    real = shamir.recover_groups

    def spy(*a, **k):
        seen["thread"] = threading.current_thread() is threading.main_thread()
        return real(*a, **k)

    inputs = {u: __import__("numpy").arange(3, dtype="uint64") + u for u in range(1, 5)}
    params, machines = setup_session(inputs, threshold=3, modulus=2**16, seed=1)
    try:
        shamir.recover_groups = spy
        run = trio.run(lambda: run_local_session(params, machines, round_timeout=5.0))
    finally:
        shamir.recover_groups = real
    assert run.server.abort is None and seen == {"thread": False}


def test_sparse_graph_liar_is_corrected_but_not_named_without_proof(make_session):
    """A neighbourhood of k + 1 = 15 holders with t = 10 can correct two wrong shares, but t - 1 assumed
    colluders leave no proof of who lied: the sum is exact and nobody is named."""
    s = make_session(n=40, t=None, seed=3, graph="sparse", tolerated_dropout=0.1, tolerated_corrupt=0.05)
    s.run_until("unmasking")
    replies = s.client_replies()
    liar = 1
    (msg,) = replies[liar]
    replies[liar] = [dataclasses.replace(msg, b_shares={v: shift(y, 1) for v, y in msg.b_shares.items()})]
    s.server_collect(replies)
    assert_exact(s, s.server.result)
    assert s.server.result.cheaters == {} and s.server.result.unattributed
