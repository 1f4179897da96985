"""The client's checks on the server, driven with hand-built server messages.

Every refused message must raise a typed error, produce no reply (no share
leaves the client) and leave the client able to finish the session correctly.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from secagg import (
    AbortError,
    Client,
    ClientState,
    MalformedMessage,
    ParameterError,
    ProtocolViolation,
    SeededRandom,
)
from secagg.keys import consistency_payload, keys_payload, partners_payload, raw_public
from secagg.messages import Abort, ForwardedShares, KeyRoster, Round, SurvivorList, UnmaskRequest
from secagg.simulation import identity_keys

SEED = 11
# n=7, t=4: client 7 drops in share_keys (in U1, not U2), client 6 in masked_input (in U2, not U3).
DROPS = {"share_keys": [7], "masked_input": [6]}
U3 = (1, 2, 3, 4, 5)


def advance_to(session, round_name):
    while session.server.round.value != round_name:
        session.step(DROPS.get(session.server.round.value, ()))
    return session


def assert_exact(session, result):
    assert [int(v) for v in result.total] == session.expected(result.included)


def identities(session):
    keys = identity_keys(session.params.client_ids, SeededRandom(SEED))
    assert all(raw_public(k) == session.params.identity_keys[u] for u, k in keys.items())
    return keys


def unmask_request(session, survivors, signatures=None, to=1):
    return UnmaskRequest(session.params.session_id, 0, to, survivors=tuple(survivors), signatures=signatures)


def refuse(session, message, error, rule=None, to=1):
    """Deliver ``message``; it must raise ``error`` (with ``rule``) and change nothing visible."""
    before = session.client_view(to)
    with pytest.raises(error) as info:
        session.clients[to].receive(message)
    if rule is not None:
        assert info.value.rule == rule
    assert session.client_view(to) == before
    return info.value


# ---- honest-but-curious unmasking --------------------------------------------


@pytest.fixture
def hbc(make_session):
    return advance_to(make_session(n=7, t=4, seed=SEED), "unmasking")


def test_valid_unmask_request_reveals_b_of_survivors_and_s_of_the_dropped(hbc):
    (reply,) = hbc.clients[1].receive(hbc.outbox[1])
    assert set(reply.b_shares) == set(U3)
    assert set(reply.s_shares) == {6}
    assert hbc.clients[1].state is ClientState.DONE


@pytest.mark.parametrize(
    "survivors,error,rule",
    [
        pytest.param((1, 2, 3, 4, 5, 7), ProtocolViolation, "survivors-unknown", id="id-not-in-U2"),
        pytest.param((1, 2, 3, 4, 5, 1), ProtocolViolation, "survivors-duplicate", id="duplicate-id"),
        pytest.param((1, 2, 3, 3, 4), ProtocolViolation, "survivors-duplicate", id="duplicate-short"),
        pytest.param((2, 3, 4, 5), ProtocolViolation, "survivors-omit-self", id="omits-self"),
        pytest.param((1, 2, 3), AbortError, None, id="fewer-than-t"),
        pytest.param((), ProtocolViolation, "survivors-omit-self", id="empty"),
    ],
)
def test_bad_survivor_list_is_refused_without_revealing_a_share(hbc, survivors, error, rule):
    exc = refuse(hbc, unmask_request(hbc, survivors), error, rule)
    if error is AbortError:
        assert exc.round == "unmasking" and exc.count == len(set(survivors))
    assert hbc.clients[1].state is ClientState.MASKED
    assert_exact(hbc, hbc.finish())


def test_survivor_id_outside_the_session_is_malformed(hbc):
    refuse(hbc, unmask_request(hbc, (1, 2, 3, 4, 99)), MalformedMessage)
    refuse(hbc, unmask_request(hbc, (1, 2, 3, 4, 0)), MalformedMessage)
    assert_exact(hbc, hbc.finish())


def test_signatures_in_honest_mode_are_refused(hbc):
    refuse(hbc, unmask_request(hbc, U3, signatures={}), ProtocolViolation, "unexpected-signatures")
    assert_exact(hbc, hbc.finish())


@pytest.mark.parametrize(
    "second",
    [
        pytest.param((1, 2, 3, 4, 5, 6), id="adds-a-dropped-peer"),  # b share of 6 after its s share
        pytest.param((1, 2, 3, 4), id="removes-a-survivor"),  # s share of 5 after its b share
    ],
)
def test_second_request_asking_for_the_other_share_of_a_peer_is_refused(hbc, second):
    replies = hbc.client_replies()
    (first,) = replies[1]
    refuse(hbc, unmask_request(hbc, second), ProtocolViolation, "both-shares")
    assert hbc.clients[1].state is ClientState.DONE
    # The original request is still answered, with the very same shares.
    (again,) = hbc.clients[1].receive(hbc.outbox[1])
    assert again.b_shares == first.b_shares and again.s_shares == first.s_shares
    hbc.server_collect(replies)
    assert_exact(hbc, hbc.server.result)


def test_request_addressed_to_another_client_is_refused(hbc):
    refuse(hbc, unmask_request(hbc, U3, to=2), ProtocolViolation, "recipient", to=1)
    assert_exact(hbc, hbc.finish())


def test_message_for_another_state_is_out_of_order(hbc):
    stale = ForwardedShares(hbc.params.session_id, 0, 1, ciphertexts={})
    refuse(hbc, stale, ProtocolViolation, "out-of-order")
    with pytest.raises(ProtocolViolation) as info:
        hbc.clients[1].start()
    assert info.value.rule == "out-of-order"
    assert_exact(hbc, hbc.finish())


def test_survivor_list_in_honest_mode_is_refused(hbc):
    # consistency_check does not exist in honest-but-curious mode: the message cannot even be decoded.
    refuse(hbc, SurvivorList(hbc.params.session_id, 0, 1, survivors=U3), MalformedMessage)
    assert_exact(hbc, hbc.finish())


def test_abort_notice_stops_the_client(hbc):
    abort = Abort(hbc.params.session_id, 0, 1, at_round=Round.UNMASKING, count=3, reason="deadline")
    assert hbc.clients[1].receive(abort) == []
    assert hbc.clients[1].state is ClientState.ABORTED
    assert "unmasking" in hbc.clients[1].abort_reason and "deadline" in hbc.clients[1].abort_reason
    refuse(hbc, hbc.outbox[1], ProtocolViolation, "out-of-order")


# ---- malicious-server mode ---------------------------------------------------


@pytest.fixture
def mal_consistency(make_session):
    return advance_to(make_session(n=7, t=4, malicious=True, seed=SEED), "consistency_check")


@pytest.fixture
def mal_unmasking(make_session):
    return advance_to(make_session(n=7, t=4, malicious=True, seed=SEED), "unmasking")


@pytest.mark.parametrize(
    "survivors,error,rule",
    [
        pytest.param((1, 2, 3, 4, 5, 7), ProtocolViolation, "survivors-unknown", id="id-not-in-U2"),
        pytest.param((1, 2, 2, 3, 4), ProtocolViolation, "survivors-duplicate", id="duplicate-id"),
        pytest.param((2, 3, 4, 5), ProtocolViolation, "survivors-omit-self", id="omits-self"),
        pytest.param((1, 2, 3), AbortError, None, id="fewer-than-t"),
    ],
)
def test_bad_survivor_list_gets_no_consistency_signature(mal_consistency, survivors, error, rule):
    s = mal_consistency
    refuse(s, SurvivorList(s.params.session_id, 0, 1, survivors=survivors), error, rule)
    assert s.clients[1].state is ClientState.MASKED
    assert_exact(s, s.finish())


def test_valid_malicious_unmask_request_is_answered(mal_unmasking):
    s = mal_unmasking
    assert s.clients[1].state is ClientState.SIGNED
    assert set(s.outbox[1].signatures) == set(U3)
    (reply,) = s.clients[1].receive(s.outbox[1])
    assert set(reply.b_shares) == set(U3) and set(reply.s_shares) == {6}


def test_survivor_list_changed_after_signing_is_refused(mal_unmasking):
    s = mal_unmasking
    sigs = dict(s.outbox[1].signatures)
    refuse(s, unmask_request(s, (1, 2, 3, 4), sigs), ProtocolViolation, "survivors-changed")
    # Even with t valid signatures over the new list, the client only answers the list it signed.
    keys = identities(s)
    other = {u: keys[u].sign(consistency_payload(s.params.session_id, s.server.roster_digest, (1, 2, 3, 4))) for u in (1, 2, 3, 4)}
    refuse(s, unmask_request(s, (1, 2, 3, 4), other), ProtocolViolation, "survivors-changed")
    assert_exact(s, s.finish())


def test_missing_consistency_signatures_abort(mal_unmasking):
    s = mal_unmasking
    sigs = dict(s.outbox[1].signatures)
    exc = refuse(s, unmask_request(s, U3, None), AbortError)
    assert exc.round == "unmasking" and exc.count == 0
    three = {u: sigs[u] for u in (1, 2, 3)}
    exc = refuse(s, unmask_request(s, U3, three), AbortError)
    assert exc.count == 3 and exc.threshold == 4
    assert_exact(s, s.finish())


def test_wrong_consistency_signature_is_refused(mal_unmasking):
    s = mal_unmasking
    sigs = dict(s.outbox[1].signatures)
    flipped = {**sigs, 3: bytes([sigs[3][0] ^ 1]) + sigs[3][1:]}
    refuse(s, unmask_request(s, U3, flipped), ProtocolViolation, "consistency-signature")
    swapped = {**sigs, 2: sigs[3], 3: sigs[2]}
    refuse(s, unmask_request(s, U3, swapped), ProtocolViolation, "consistency-signature")
    # A genuine signature of client 2, but over another survivor list.
    keys = identities(s)
    forged = {**sigs, 2: keys[2].sign(consistency_payload(s.params.session_id, s.server.roster_digest, (1, 2, 3, 4)))}
    refuse(s, unmask_request(s, U3, forged), ProtocolViolation, "consistency-signature")
    assert_exact(s, s.finish())


def test_consistency_signature_from_a_non_survivor_is_refused(mal_unmasking):
    s = mal_unmasking
    sigs = dict(s.outbox[1].signatures)
    keys = identities(s)
    extra = {**sigs, 6: keys[6].sign(consistency_payload(s.params.session_id, s.server.roster_digest, U3))}
    refuse(s, unmask_request(s, U3, extra), ProtocolViolation, "consistency-signer")
    assert_exact(s, s.finish())


@pytest.fixture
def mal_roster(make_session):
    s = make_session(n=5, t=4, malicious=True, seed=SEED)
    s.run_until("share_keys")
    return s


def roster_with(session, entry_for_2):
    keys = dict(session.outbox[1].keys)
    keys[2] = entry_for_2
    return KeyRoster(session.params.session_id, 0, 1, keys=keys)


def test_bad_roster_signature_is_refused(mal_roster):
    s = mal_roster
    c_pk, s_pk, sig = s.outbox[1].keys[2]
    fresh_c = raw_public(Ed25519PrivateKey.from_private_bytes(b"\x05" * 32))  # any other 32-byte key
    impostor = identity_keys([3], SeededRandom(SEED))[3]
    variants = [
        (c_pk, s_pk, bytes([sig[0] ^ 0x80]) + sig[1:]),  # flipped bit
        (c_pk, s_pk, None),  # no signature
        (fresh_c, s_pk, sig),  # keys replaced by the server, old signature kept
        (fresh_c, s_pk, impostor.sign(keys_payload(s.params.session_id, 2, fresh_c, s_pk))),  # signed by client 3
    ]
    for entry in variants:
        refuse(s, roster_with(s, entry), ProtocolViolation, "roster-signature")
        assert s.clients[1].state is ClientState.ADVERTISED
    assert_exact(s, s.finish())


# ---- forwarded share ciphertexts -----------------------------------------------


@pytest.fixture
def forwarded(make_session):
    s = make_session(n=5, t=3, seed=SEED)
    s.run_until("masked_input")
    return s


def forward(session, ciphertexts, to=1):
    return ForwardedShares(session.params.session_id, 0, to, ciphertexts=ciphertexts)


def test_flipped_bit_in_a_forwarded_ciphertext_is_rejected(forwarded):
    s = forwarded
    cts = dict(s.outbox[1].ciphertexts)
    for position in (0, 20, len(cts[2]) - 1):  # nonce, body, tag
        ct = bytearray(cts[2])
        ct[position] ^= 0x01
        refuse(s, forward(s, {**cts, 2: bytes(ct)}), ProtocolViolation, "share-authentication")
        assert s.clients[1].state is ClientState.SHARED
    assert_exact(s, s.finish())


def test_ciphertext_for_another_receiver_is_rejected(forwarded):
    s = forwarded
    cts = dict(s.outbox[1].ciphertexts)
    for_3 = s.outbox[3].ciphertexts[2]  # 2 -> 3, delivered to 1 as if it were 2 -> 1
    refuse(s, forward(s, {**cts, 2: for_3}), ProtocolViolation, "share-authentication")
    assert_exact(s, s.finish())


def test_swapped_sender_labels_are_rejected(forwarded):
    s = forwarded
    cts = dict(s.outbox[1].ciphertexts)
    refuse(s, forward(s, {**cts, 2: cts[3], 3: cts[2]}), ProtocolViolation, "share-authentication")
    assert_exact(s, s.finish())


def test_ciphertext_replayed_from_another_session_is_rejected(make_session):
    a = make_session(n=5, t=3, seed=SEED)
    b = make_session(n=5, t=3, seed=SEED, session_id=b"\x07" * 32)
    assert a.params.session_id != b.params.session_id
    # Same client keys in both sessions: only the session binding can tell the ciphertexts apart.
    assert a.run_until("share_keys")[1].keys == b.run_until("share_keys")[1].keys
    a.run_until("masked_input")
    b.run_until("masked_input")
    cts = dict(a.outbox[1].ciphertexts)
    replay = b.outbox[1].ciphertexts[2]
    assert replay != cts[2]
    refuse(a, forward(a, {**cts, 2: replay}), ProtocolViolation, "share-authentication")
    assert_exact(a, a.finish())


def test_forwarded_shares_from_an_unknown_sender_or_too_few_are_refused(forwarded):
    s = forwarded
    cts = dict(s.outbox[1].ciphertexts)
    refuse(s, forward(s, {**cts, 1: cts[2]}), ProtocolViolation, "forwarded-sender")
    exc = refuse(s, forward(s, {2: cts[2]}), AbortError)
    assert exc.round == "masked_input" and exc.count == 2
    assert_exact(s, s.finish())


def small_order_roster(session, field):
    keys = dict(session.outbox[1].keys)
    entry = list(keys[4])
    entry[field] = bytes(32)  # the all-zero point has small order
    keys[4] = tuple(entry)
    return KeyRoster(session.params.session_id, 0, 1, keys=keys)


def test_roster_with_a_small_order_encryption_key_gives_a_typed_error(make_session):
    s = make_session(n=4, t=3, seed=SEED)
    s.run_until("share_keys")
    exc = refuse(s, small_order_roster(s, 0), ProtocolViolation, "small-order-key")
    assert exc.party == 4
    # Refused before any randomness was drawn: the client answers the genuine roster exactly as a
    # twin that never saw the bad one (found by sims/fuzz_secagg.py: the RNG had moved).
    twin = make_session(n=4, t=3, seed=SEED)
    twin.run_until("share_keys")
    (mine,) = s.clients[1].receive(s.outbox[1])
    (theirs,) = twin.clients[1].receive(twin.outbox[1])
    assert mine.encode() == theirs.encode()
    s.outbox.pop(1)
    s.server_collect({1: [mine], **{u: c.receive(s.outbox[u]) for u, c in s.clients.items() if u != 1}})
    assert_exact(s, s.finish())


def test_small_order_mask_key_gives_a_typed_error_before_any_masked_input(make_session):
    s = make_session(n=4, t=3, seed=SEED)
    s.run_until("share_keys")
    replies = {u: s.clients[u].receive(s.outbox[u]) for u in (2, 3, 4)}
    try:
        replies[1] = s.clients[1].receive(small_order_roster(s, 1))
    except ProtocolViolation as exc:  # refused at once: fine as well
        assert exc.party == 4 and s.clients[1].state is ClientState.ADVERTISED
        return
    s.server_collect(replies)
    exc = refuse(s, s.outbox[1], ProtocolViolation, "small-order-key")
    assert exc.party == 4 and s.clients[1].state is ClientState.SHARED


# ---- construction -----------------------------------------------------------


def test_client_construction_checks_its_inputs(make_session):
    s = make_session(n=4, t=3, seed=SEED, modulus=2**16)
    p = s.params
    good = np.zeros(p.dim, dtype=np.uint64)
    with pytest.raises(ParameterError):
        Client(p, 99, good)
    for bad in (np.zeros(p.dim + 1, dtype=np.uint64), np.zeros(p.dim), np.full(p.dim, 2**16, dtype=np.uint64),
                np.full(p.dim, -1, dtype=np.int64)):
        with pytest.raises(ParameterError):
            Client(p, 1, bad)


def test_malicious_client_needs_its_own_identity_key(make_session):
    s = make_session(n=5, t=4, malicious=True, seed=SEED)
    keys = identities(s)
    good = np.zeros(s.params.dim, dtype=np.uint64)
    with pytest.raises(ParameterError):
        Client(s.params, 1, good)
    with pytest.raises(ParameterError):
        Client(s.params, 1, good, identity_key=keys[2])
    Client(s.params, 1, good, identity_key=keys[1])


def test_replayed_roster_is_out_of_order(make_session):
    s = make_session(n=4, t=3, seed=SEED)
    roster = s.run_until("share_keys")[1]
    replies = s.client_replies()
    assert s.clients[1].state is ClientState.SHARED
    refuse(s, roster, ProtocolViolation, "out-of-order")
    s.server_collect(replies)
    assert_exact(s, s.finish())


def test_roster_with_a_non_canonical_copy_of_another_key_is_refused(make_session):
    # Client 4's s_pk replaced by client 3's c_pk with the top bit set: other bytes, the same point.
    s = make_session(n=4, t=3, seed=SEED)
    s.run_until("share_keys")
    keys = dict(s.outbox[1].keys)
    c_pk3 = keys[3][0]
    alias = c_pk3[:31] + bytes([c_pk3[31] | 0x80])
    assert alias != c_pk3
    keys[4] = (keys[4][0], alias, keys[4][2])
    refuse(s, KeyRoster(s.params.session_id, 0, 1, keys=keys), ProtocolViolation, "roster-duplicate-key")
    assert_exact(s, s.finish())


# ---- sparse (SecAgg+) graphs: the same guards, per neighbourhood ---------------------

SPARSE = dict(graph="sparse", tolerated_dropout=0.1, tolerated_corrupt=0.05)  # n=40: k=14, t=10


@pytest.fixture
def sparse(make_session):
    s = make_session(n=40, t=None, seed=SEED, **SPARSE)
    victim_peer = min(s.params.neighbours(1))
    s.dropped_peer = victim_peer
    while s.server.round.value != "unmasking":
        s.step([victim_peer] if s.server.round.value == "masked_input" else ())
    return s


def local(session, u=1):
    return tuple(sorted((session.params.neighbours(u) | {u}) - {session.dropped_peer}))


def test_sparse_request_lists_only_the_neighbourhood_and_reveals_only_neighbours_shares(sparse):
    assert sparse.outbox[1].survivors == local(sparse)
    (reply,) = sparse.clients[1].receive(sparse.outbox[1])
    assert set(reply.b_shares) == set(local(sparse)) and set(reply.s_shares) == {sparse.dropped_peer}


def test_sparse_survivor_list_naming_a_non_neighbour_is_refused(sparse):
    stranger = min(set(range(2, 41)) - sparse.params.neighbours(1))
    listed = tuple(sorted(local(sparse) + (stranger,)))
    refuse(sparse, unmask_request(sparse, listed), ProtocolViolation, "survivors-unknown")
    assert_exact(sparse, sparse.finish())


def test_sparse_local_survivor_list_below_threshold_aborts_the_client(sparse):
    short = local(sparse)[: sparse.params.threshold - 1]
    short = short if 1 in short else (1,) + short[1:]
    exc = refuse(sparse, unmask_request(sparse, short), AbortError)
    assert exc.round == "unmasking"
    assert_exact(sparse, sparse.finish())


def test_sparse_hostile_server_cannot_get_both_shares_of_a_neighbour(sparse):
    """The server declares neighbour v dropped (gets its s share), then alive (wants its b share)."""
    replies = sparse.client_replies()
    (first,) = replies[1]
    v = sparse.dropped_peer
    refuse(sparse, unmask_request(sparse, tuple(sorted(local(sparse) + (v,)))), ProtocolViolation, "both-shares")
    other = max(set(local(sparse)) - {1})
    refuse(sparse, unmask_request(sparse, tuple(u for u in local(sparse) if u != other)), ProtocolViolation, "both-shares")
    sparse.server_collect(replies)
    assert_exact(sparse, sparse.server.result)
    assert first.s_shares.keys() == {v}


# ---- malicious-server mode on sparse graphs: one global list, a global quorum (14.5) ----------


@pytest.fixture
def mal_sparse(make_session):
    """n = 40 (k = 16, t = 12, quorum 22); neighbours of client 1 drop in share_keys and in masked_input."""
    s = make_session(n=40, t=None, seed=SEED, malicious=True, **SPARSE)
    s.early_peer, s.dropped_peer = max(s.params.neighbours(1)), min(s.params.neighbours(1))
    drops = {"share_keys": [s.early_peer], "masked_input": [s.dropped_peer]}
    while s.server.round.value != "consistency_check":
        s.step(drops.get(s.server.round.value, ()))
    s.u3 = tuple(u for u in s.params.client_ids if u not in (s.early_peer, s.dropped_peer))
    return s


def survivor_list(session, survivors, to=1):
    return SurvivorList(session.params.session_id, 0, to, survivors=tuple(survivors))


def signed(session, survivors, signers):
    keys = identities(session)
    return {u: keys[u].sign(consistency_payload(session.params.session_id, session.server.roster_digest, tuple(survivors))) for u in signers}


def test_malicious_sparse_list_is_global_and_a_request_needs_the_quorum_not_t(mal_sparse):
    s, p = mal_sparse, mal_sparse.params
    assert p.threshold < p.consistency_quorum == 22
    assert s.outbox[1].survivors == s.u3  # everyone signs the same list, not its neighbourhood part
    s.step()
    request = s.outbox[1]
    # the server forwards a quorum (lowest ids), not all n, and the signed partner sets of 1's listed neighbours
    assert set(request.signatures) == set(s.u3[: p.consistency_quorum])
    assert set(request.partners) == p.neighbours(1) & set(s.u3)
    few = dict(list(request.signatures.items())[: p.consistency_quorum - 1])
    assert len(few) >= p.threshold  # enough for the complete-graph rule, not for this one
    exc = refuse(s, with_partners(unmask_request(s, s.u3, few), request.partners), AbortError)
    assert exc.count == p.consistency_quorum - 1 and exc.threshold == p.consistency_quorum
    (reply,) = s.clients[1].receive(request)
    mine = p.neighbours(1) | {1}
    assert set(reply.b_shares) == mine - {s.early_peer, s.dropped_peer} and set(reply.s_shares) == {s.dropped_peer}
    s.server_collect(s.client_replies())
    assert_exact(s, s.server.result)


def test_malicious_sparse_list_guards_apply_to_the_neighbourhood_part(mal_sparse):
    s, p = mal_sparse, mal_sparse.params
    # a neighbour that never completed share_keys listed as a survivor: client 1 holds no shares for it
    refuse(s, survivor_list(s, sorted(s.u3 + (s.early_peer,))), ProtocolViolation, "survivors-unknown")
    # too few of client 1's neighbours listed, though the list is long: abort, no signature
    strangers = [u for u in s.u3 if u not in p.neighbours(1)]
    short = sorted(strangers + sorted(p.neighbours(1) & set(s.u3))[: p.threshold - 3])
    assert len(short) >= p.consistency_quorum
    exc = refuse(s, survivor_list(s, short), AbortError)
    assert exc.count == p.threshold - 2 and exc.threshold == p.threshold
    # every neighbour listed but the list below the quorum: no signature either
    local = sorted((p.neighbours(1) | {1}) & set(s.u3))
    exc = refuse(s, survivor_list(s, local), AbortError)
    assert exc.threshold == p.consistency_quorum
    assert s.clients[1].state is ClientState.MASKED
    assert_exact(s, s.finish())


def with_partners(request, partners):
    return dataclasses.replace(request, partners=dict(partners))


def test_malicious_sparse_holder_checks_each_listed_neighbours_signed_partner_set(mal_sparse):
    s, p = mal_sparse, mal_sparse.params
    s.step()
    request = s.outbox[1]
    v = max(p.neighbours(1) & set(s.u3))
    ids, sig = request.partners[v]
    missing = {w: e for w, e in request.partners.items() if w != v}
    exc = refuse(s, with_partners(request, missing), AbortError)
    assert f"client {v}" in str(exc)
    forged = {**request.partners, v: (ids[1:], sig)}  # the server edits v's set: v's signature breaks
    refuse(s, with_partners(request, forged), ProtocolViolation, "partner-signature")
    keys = identities(s)
    stranger = min(set(s.u3) - p.neighbours(v) - {v})
    foreign = tuple(sorted(ids + (stranger,)))
    bad = {**request.partners, v: (foreign, keys[v].sign(partners_payload(p.session_id, s.server.roster_digest, v, foreign)))}
    exc = refuse(s, with_partners(request, bad), ProtocolViolation, "partner-set")
    assert exc.party == v
    (reply,) = s.clients[1].receive(request)
    assert v in reply.b_shares


def test_malicious_sparse_isolation_attack_is_refused_by_every_holder(make_session):
    """The attack the partner sets stop: v is forwarded the shares of only t - 1 neighbours, the
    server lists v but none of them, and would unmask x_v alone with b_v and their s-keys.

    It needs t holders of b_v among v's other neighbours: 2t <= k + 1 + c with c corrupted partners.
    Here t is set low enough (2t <= k + 1) to need no corrupted client; with the sized parameters
    the corrupted ones make up the difference (14.5)."""
    s = make_session(n=60, t=10, seed=SEED, malicious=True, min_group=5, **SPARSE)  # k = 20, quorum 32
    p = s.params
    assert 2 * p.threshold <= p.graph.degree + 1
    v = 60
    partners = tuple(sorted(p.neighbours(v))[: p.threshold - 1])
    s.run_until("masked_input")
    s.outbox[v] = ForwardedShares(
        p.session_id, 0, v, ciphertexts={w: c for w, c in s.outbox[v].ciphertexts.items() if w in partners}
    )
    masked = {u: reply for u, (reply,) in s.client_replies().items()}  # the hostile server keeps them
    signed_sets = {u: (partners if u == v else tuple(sorted(p.neighbours(u))), m.signature) for u, m in masked.items()}
    listed = tuple(u for u in p.client_ids if u not in partners)
    signatures: dict[int, bytes] = {}
    for u in listed:
        try:
            (reply,) = s.clients[u].receive(survivor_list(s, listed, to=u))
        except (AbortError, ProtocolViolation):
            continue  # v itself refuses (its listed neighbours are not its partners), and so may others
        signatures[u] = reply.signature
    # v never signs, but the list gets its quorum without v: signing alone cannot protect v
    assert v not in signatures and len(signatures) >= p.consistency_quorum
    holders = [w for w in sorted(p.neighbours(v)) if w in signatures]
    assert len(holders) >= p.threshold  # enough holders of b_v are asked
    for w in holders:
        entries = {x: signed_sets[x] for x in p.neighbours(w) & set(listed)}
        request = with_partners(unmask_request(s, listed, signatures, to=w), entries)
        exc = refuse(s, request, AbortError, to=w)
        assert f"too few partners of client {v}" in str(exc)


def test_malicious_sparse_split_view_attack_gets_no_share(mal_sparse):
    """The attack that defeats neighbourhood-local signatures (closing note of issue 12).

    The server wants x_v: b-shares of v from holders shown a list with v, s-shares
    of v's neighbours from holders shown lists without them.  It splits the honest
    clients into two groups with different lists.  Each group has more than t
    members, but neither reaches the quorum, so nobody reveals anything.
    """
    s, p = mal_sparse, mal_sparse.params
    victim = max(s.u3)
    with_v = s.u3
    without = tuple(u for u in s.u3 if u not in p.neighbours(victim))  # v's neighbours "dropped"
    group_a = [u for u in s.u3 if u in without][: len(s.u3) // 2]
    group_b = [u for u in s.u3 if u not in group_a]
    lists = {**{u: with_v for u in group_b}, **{u: without for u in group_a}}
    sigs: dict[tuple[int, ...], dict[int, bytes]] = {with_v: {}, without: {}}
    for u, listed in lists.items():
        try:
            (reply,) = s.clients[u].receive(survivor_list(s, listed, to=u))
        except AbortError:
            continue  # a client whose neighbourhood part is too short signs nothing
        sigs[listed][u] = reply.signature
    assert max(len(g) for g in sigs.values()) < p.consistency_quorum
    assert min(len(g) for g in sigs.values()) >= p.threshold  # t signatures each: the old rule would accept
    for u, listed in lists.items():
        if s.clients[u].state is ClientState.SIGNED:
            before = s.client_view(u)
            with pytest.raises(AbortError):
                s.clients[u].receive(with_partners(unmask_request(s, listed, sigs[listed], to=u), {}))
            assert s.client_view(u) == before
    # Borrowing signatures of the other list does not help: they do not verify on this one.
    u = group_a[0]
    if s.clients[u].state is ClientState.SIGNED:
        mixed = {**sigs[without], **{w: sg for w, sg in sigs[with_v].items() if w in without}}
        request = with_partners(unmask_request(s, without, mixed, to=u), {})
        refuse(s, request, ProtocolViolation, "consistency-signature", to=u)


# ---- boundaries of every counted guard (issue 24, item 6) ------------------------------------
#
# Each counted guard is tested on both sides of its boundary: one below, the message is refused
# with the right error, no reply and no visible change; exactly at it, the message is accepted
# and the session completes with the exact sum.  The sessions are built so that the honest
# server's own message sits exactly at the boundary (drops chosen for it), and the message one
# below is the honest one minus one entry.


def play(session, drops, until):
    """Step with ``{round: ids}`` dropouts until the server collects ``until``."""
    while session.server.round.value != until:
        session.step(drops.get(session.server.round.value, ()))
    return session


def ring_offset(params, v, offset):
    ring = params.graph.ring
    return ring[(ring.index(v) + offset) % len(ring)]


def far_neighbours(params, v, m):
    """m neighbours of v at the largest ring distances, alternating sides (-h, +h, -(h-1), ...).

    Nobody but v has both ends (-h and +h) as neighbours, so dropping these costs v exactly m
    neighbours and every other client at most m - 1."""
    h = params.graph.degree // 2
    offsets = [o for d in range(h, 0, -1) for o in (-d, d)][:m]
    return tuple(ring_offset(params, v, o) for o in offsets)


def finishes_exactly(session, included, drops=None):
    result = session.finish(drops)
    assert result.included == tuple(sorted(included))
    assert_exact(session, result)
    return result


def test_boundary_roster_of_t_minus_1_entries_aborts_and_of_exactly_t_is_accepted(make_session):
    s = make_session(n=7, t=4, seed=SEED)
    t = s.params.threshold
    play(s, {"advertise_keys": (5, 6, 7)}, until="share_keys")  # U1 = {1, 2, 3, 4}: exactly t
    roster = s.outbox[1]
    assert len(roster.keys) == t
    short = KeyRoster(s.params.session_id, 0, 1, keys={u: e for u, e in roster.keys.items() if u != 4})
    exc = refuse(s, short, AbortError)
    assert (exc.round, exc.count, exc.threshold) == ("share_keys", t - 1, t)
    assert s.clients[1].state is ClientState.ADVERTISED
    finishes_exactly(s, (1, 2, 3, 4))  # the roster of exactly t is accepted by every client
    assert s.clients[1].state is ClientState.DONE


def test_boundary_shares_forwarded_from_t_minus_2_peers_abort_and_from_t_minus_1_are_accepted(make_session):
    s = make_session(n=7, t=4, seed=SEED)
    t = s.params.threshold
    play(s, {"share_keys": (5, 6, 7)}, until="masked_input")  # U2 = {1, 2, 3, 4}
    cts = dict(s.outbox[1].ciphertexts)
    assert set(cts) == {2, 3, 4}  # t - 1 senders
    exc = refuse(s, forward(s, {v: c for v, c in cts.items() if v != 4}), AbortError)
    assert (exc.round, exc.count, exc.threshold) == ("masked_input", t - 1, t)
    assert s.clients[1].state is ClientState.SHARED
    finishes_exactly(s, (1, 2, 3, 4))


def test_boundary_honest_survivor_list_of_t_minus_1_aborts_and_of_exactly_t_is_answered(make_session):
    s = make_session(n=7, t=4, seed=SEED)
    t = s.params.threshold
    play(s, {"masked_input": (5, 6, 7)}, until="unmasking")  # U3 = {1, 2, 3, 4}
    assert s.outbox[1].survivors == (1, 2, 3, 4)
    exc = refuse(s, unmask_request(s, (1, 2, 3)), AbortError)
    assert (exc.round, exc.count, exc.threshold) == ("unmasking", t - 1, t)
    assert s.clients[1].state is ClientState.MASKED
    replies = s.client_replies()
    (reply,) = replies[1]
    assert set(reply.b_shares) == {1, 2, 3, 4} and set(reply.s_shares) == {5, 6, 7}
    s.server_collect(replies)
    assert s.server.result.included == (1, 2, 3, 4)
    assert_exact(s, s.server.result)


@pytest.fixture
def mal_at_t(make_session):
    """Complete graph, malicious: n = 7, t = q = 4, and U3 = {1, 2, 3, 4} has exactly t members."""
    s = make_session(n=7, t=4, malicious=True, seed=SEED)
    assert s.params.consistency_quorum == s.params.threshold == 4
    return play(s, {"masked_input": (5, 6, 7)}, until="consistency_check")


def test_boundary_malicious_survivor_list_of_t_minus_1_gets_no_signature_and_of_exactly_t_is_signed(mal_at_t):
    s, t = mal_at_t, mal_at_t.params.threshold
    assert s.outbox[1].survivors == (1, 2, 3, 4)
    exc = refuse(s, survivor_list(s, (1, 2, 3)), AbortError)
    assert (exc.round, exc.count, exc.threshold) == ("consistency_check", t - 1, t)
    assert s.clients[1].state is ClientState.MASKED
    s.step()
    assert s.clients[1].state is ClientState.SIGNED
    finishes_exactly(s, (1, 2, 3, 4))


def test_boundary_malicious_request_with_q_minus_1_signatures_aborts_and_with_exactly_q_is_answered(mal_at_t):
    s, q = mal_at_t, mal_at_t.params.consistency_quorum
    s.step()
    request = s.outbox[1]
    assert len(request.signatures) == q
    few = dict(list(request.signatures.items())[: q - 1])
    exc = refuse(s, unmask_request(s, request.survivors, few), AbortError)
    assert (exc.round, exc.count, exc.threshold) == ("unmasking", q - 1, q)
    assert s.clients[1].state is ClientState.SIGNED
    finishes_exactly(s, (1, 2, 3, 4))
    assert s.clients[1].state is ClientState.DONE


def test_boundary_sparse_local_list_of_t_minus_1_aborts_and_of_exactly_t_is_answered(make_session):
    s = make_session(n=40, t=None, seed=SEED, **SPARSE)  # k = 14, t = 10
    p, v = s.params, 1
    t = p.threshold
    gone = far_neighbours(p, v, p.graph.degree + 1 - t)  # leaves v exactly t - 1 neighbours
    play(s, {"share_keys": gone}, until="unmasking")
    listed = s.outbox[v].survivors
    assert len(listed) == t and set(listed) == (p.neighbours(v) | {v}) - set(gone)
    short = tuple(u for u in listed if u != max(set(listed) - {v}))
    exc = refuse(s, unmask_request(s, short, to=v), AbortError, to=v)
    assert (exc.round, exc.count, exc.threshold) == ("unmasking", t - 1, t)
    finishes_exactly(s, set(p.client_ids) - set(gone))


@pytest.fixture
def mal_sparse_edge(make_session):
    """Malicious, sparse (n = 40, k = 16, t = 12, q = 22): the k + 1 - t = 5 farthest neighbours of
    client 1 drop in share_keys, so client 1 has exactly t members in its part of the list and a
    signed partner set of exactly t - 1; every other client keeps more.  The masked inputs (with
    their partner signatures) are kept as the server received them."""
    s = make_session(n=40, t=None, seed=SEED, malicious=True, **SPARSE)
    p = s.params
    s.v = 1
    s.gone_early = far_neighbours(p, s.v, p.graph.degree + 1 - p.threshold)
    play(s, {"share_keys": s.gone_early}, until="masked_input")
    replies = s.client_replies()
    s.partner_sigs = {u: m.signature for u, (m,) in replies.items()}
    s.server_collect(replies)
    s.u3 = tuple(u for u in p.client_ids if u not in s.gone_early)
    return s


def partner_set(session, u):
    return tuple(sorted(session.clients[u].completed_share_keys - {u}))


def test_boundary_malicious_sparse_local_part_of_t_minus_1_gets_no_signature_and_of_exactly_t_is_signed(mal_sparse_edge):
    s, p, v = mal_sparse_edge, mal_sparse_edge.params, mal_sparse_edge.v
    t = p.threshold
    assert s.outbox[v].survivors == s.u3
    local_part = (p.neighbours(v) | {v}) & set(s.u3)
    assert len(local_part) == t
    dropped_neighbour = max(local_part - {v})
    listed = tuple(u for u in s.u3 if u != dropped_neighbour)
    assert len(listed) >= p.consistency_quorum  # only the neighbourhood part is short
    exc = refuse(s, survivor_list(s, listed, to=v), AbortError, to=v)
    assert (exc.round, exc.count, exc.threshold) == ("consistency_check", t - 1, t)
    assert s.clients[v].state is ClientState.MASKED
    finishes_exactly(s, s.u3)
    assert s.clients[v].state is ClientState.DONE


def test_boundary_malicious_sparse_partner_set_keeping_exactly_t_minus_1_on_the_list_is_accepted(mal_sparse_edge):
    s, p, v = mal_sparse_edge, mal_sparse_edge.params, mal_sparse_edge.v
    t = p.threshold
    assert len(partner_set(s, v)) == t - 1 and all(len(partner_set(s, u)) >= t for u in s.u3 if u != v)
    s.step()  # consistency_check: every survivor signs the list
    holders = sorted(p.neighbours(v) & set(s.u3))
    for w in holders:
        ids, _ = s.outbox[w].partners[v]
        assert ids == partner_set(s, v) and len(set(ids) & set(s.outbox[w].survivors)) == t - 1
    replies = s.client_replies()
    assert all(v in replies[w][0].b_shares for w in holders)  # every holder accepts v's t - 1 partners
    s.server_collect(replies)
    assert s.server.result.included == s.u3
    assert_exact(s, s.server.result)


def test_boundary_malicious_sparse_partner_set_keeping_t_minus_2_on_the_list_is_refused(mal_sparse_edge):
    """The list leaves out one of v's t - 1 genuine partners: v's signed set then keeps t - 2 on it.
    A holder w of v that signed that list refuses, naming v; every other listed neighbour of w
    keeps at least t - 1 partners on it, so v is the reason.  (v has exactly t holders, w among
    them, so this session cannot finish once w signed the hostile list: nothing to check there.)"""
    s, p, v = mal_sparse_edge, mal_sparse_edge.params, mal_sparse_edge.v
    t, q = p.threshold, p.consistency_quorum

    def fits(w, partner):
        listed = set(s.u3) - {partner}
        if len((p.neighbours(w) | {w}) & listed) < t:
            return False  # w would not sign the list
        others = (p.neighbours(w) & listed) - {v}
        return all(len(set(partner_set(s, x)) & listed) >= t - 1 for x in others)

    w, partner = next(
        (w, x) for w in sorted(p.neighbours(v) & set(s.u3)) for x in partner_set(s, v) if x != w and fits(w, x)
    )
    listed = tuple(u for u in s.u3 if u != partner)
    assert len(set(partner_set(s, v)) & set(listed)) == t - 2
    (signature,) = s.clients[w].receive(survivor_list(s, listed, to=w))
    signatures = signed(s, listed, listed[:q])
    assert signatures.get(w, signature.signature) == signature.signature
    entries = {x: (partner_set(s, x), s.partner_sigs[x]) for x in p.neighbours(w) & set(listed)}
    request = with_partners(unmask_request(s, listed, signatures, to=w), entries)
    exc = refuse(s, request, AbortError, to=w)
    assert (exc.round, exc.count, exc.threshold) == ("unmasking", t - 2, t - 1)
    assert f"client {v}" in str(exc)
    assert s.clients[w].state is ClientState.SIGNED and s.clients[w].unmasked_over is None


@pytest.fixture
def mal_sparse_quorum(make_session):
    """Malicious, sparse (n = 60, k = 20, t = 10, q = 32): a run of 28 ring positions never
    advertises keys, so U3 has exactly q members; every survivor keeps at least k/2 + 1 >= t
    of its neighbourhood and k/2 >= t - 1 partners."""
    s = make_session(n=60, t=10, seed=SEED, malicious=True, min_group=5, **SPARSE)
    p = s.params
    q = p.consistency_quorum
    assert q == 32 and p.graph.degree // 2 >= p.threshold - 1
    ring = p.graph.ring
    run = ring[: p.n - q]
    play(s, {"advertise_keys": run}, until="consistency_check")
    s.u3 = tuple(sorted(ring[p.n - q:]))
    s.middle = ring[p.n - q + len(s.u3) // 2]  # all of its neighbours survive
    assert p.neighbours(s.middle) <= set(s.u3)
    return s


def test_boundary_malicious_sparse_list_of_q_minus_1_gets_no_signature_and_of_exactly_q_is_signed(mal_sparse_quorum):
    s, p, u = mal_sparse_quorum, mal_sparse_quorum.params, mal_sparse_quorum.middle
    q = p.consistency_quorum
    assert s.outbox[u].survivors == s.u3 and len(s.u3) == q
    stranger = max(set(s.u3) - p.neighbours(u) - {u})
    listed = tuple(x for x in s.u3 if x != stranger)
    exc = refuse(s, survivor_list(s, listed, to=u), AbortError, to=u)
    assert (exc.round, exc.count, exc.threshold) == ("consistency_check", q - 1, q)
    assert s.clients[u].state is ClientState.MASKED
    finishes_exactly(s, s.u3)


def test_boundary_malicious_sparse_request_with_q_minus_1_signatures_aborts_and_with_exactly_q_is_answered(mal_sparse_quorum):
    s, p, u = mal_sparse_quorum, mal_sparse_quorum.params, mal_sparse_quorum.middle
    q = p.consistency_quorum
    s.step()
    request = s.outbox[u]
    assert len(request.signatures) == q
    few = dict(list(request.signatures.items())[: q - 1])
    exc = refuse(s, with_partners(unmask_request(s, request.survivors, few, to=u), request.partners), AbortError, to=u)
    assert (exc.round, exc.count, exc.threshold) == ("unmasking", q - 1, q)
    assert s.clients[u].state is ClientState.SIGNED
    finishes_exactly(s, s.u3)
    assert s.clients[u].state is ClientState.DONE


def test_boundary_pinned_client_answers_only_the_pinned_set(make_session):
    """Not counted, but a set boundary: the pinned set itself is answered, a set differing by one
    client (one survivor less, or one dropped client more) is refused (rule survivors-pinned)."""
    s = make_session(n=7, t=4, seed=SEED)
    s.clients[1] = Client(s.params, 1, s.inputs[1], pinned=U3)
    advance_to(s, "unmasking")
    refuse(s, unmask_request(s, (1, 2, 3, 4)), ProtocolViolation, "survivors-pinned")
    refuse(s, unmask_request(s, (1, 2, 3, 4, 5, 6)), ProtocolViolation, "survivors-pinned")
    assert_exact(s, s.finish())
    assert s.clients[1].unmasked_over == frozenset(U3)
