"""Malformed and hostile messages of every kind: typed errors, no state change.

For each message kind a real session is run up to the point where that kind
is received; its genuine encoding is then mutated (garbage, truncation, wrong
types, lengths, ids, versions, sessions, rounds, duplicate map keys, oversized
arrays, trailing bytes, out-of-range values) and each mutant is delivered to
the receiver.  Every mutant must raise a typed error and leave the receiver's
visible state as it was; afterwards the genuine message is delivered and the
session must still end with the exact sum.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

import msgpack
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from secagg import AbortError, MalformedMessage, ProtocolViolation, SecAggError, decode
from secagg.keys import raw_public
from secagg.messages import (
    Abort,
    AdvertiseKeys,
    ConsistencySignature,
    EncryptedShares,
    ForwardedShares,
    KeyRoster,
    MaskedInput,
    Round,
    SurvivorList,
    UnmaskingShares,
    UnmaskRequest,
    PROTOCOL_VERSION,
    max_message_bytes,
)
from secagg.shamir import PRIME, SHARE_BYTES, share_from_bytes, share_to_bytes

MODULUS = 2**12  # not a whole number of bytes: masked values >= M are representable on the wire
DIM = 5
N = 6
DROPS = {"masked_input": [6]}  # so that unmasking asks for s shares too
MAL = (MalformedMessage, None)


def PV(rule):
    return (ProtocolViolation, rule)


ABORT = (AbortError, None)


class Dup:
    """A msgpack map written pair by pair, so keys may repeat."""

    def __init__(self, pairs):
        self.pairs = list(pairs)


def pack(obj: Any) -> bytes:
    packer = msgpack.Packer(use_bin_type=True)
    if isinstance(obj, Dup):
        return packer.pack_map_header(len(obj.pairs)) + b"".join(pack(k) + pack(v) for k, v in obj.pairs)
    if isinstance(obj, dict):
        return pack(Dup(obj.items()))
    if isinstance(obj, (list, tuple)):
        return packer.pack_array_header(len(obj)) + b"".join(pack(x) for x in obj)
    return packer.pack(obj)


def unpack(raw: bytes) -> list:
    return msgpack.unpackb(raw, raw=False, strict_map_key=False)


def flip(data: bytes, position: int = 0) -> bytes:
    return data[:position] + bytes([data[position] ^ 0x01]) + data[position + 1 :]


# ---- targets: a session stopped where one message kind is received ------------------


@dataclass
class Target:
    session: Any
    genuine: Any
    to_server: bool
    finish: Callable[[], Any]

    @property
    def raw(self) -> bytes:
        return self.genuine.encode()

    @property
    def env(self) -> list:
        return unpack(self.raw)

    def deliver(self, data):
        if self.to_server:
            return self.session.server.receive(data)
        return self.session.clients[1].receive(data)

    def view(self):
        return self.session.server_view() if self.to_server else self.session.client_view(1)


def advance_to(session, round_name):
    while session.server.round.value != round_name:
        session.step(DROPS.get(session.server.round.value, ()))


def make_target(make_session, kind: str, malicious: bool) -> Target:
    s = make_session(n=N, t=4 if malicious else 3, dim=DIM, modulus=MODULUS, malicious=malicious, seed=5)
    client_kinds = {
        "advertise_keys": "advertise_keys",
        "encrypted_shares": "share_keys",
        "masked_input": "masked_input",
        "consistency_signature": "consistency_check",
        "unmasking_shares": "unmasking",
    }
    server_kinds = {
        "key_roster": "share_keys",
        "forwarded_shares": "masked_input",
        "survivor_list": "consistency_check",
        "unmask_request": "unmasking",
        "abort": "masked_input",
    }
    if kind in client_kinds:
        advance_to(s, client_kinds[kind])
        replies = s.client_replies(DROPS.get(client_kinds[kind], ()))

        def finish():
            s.server_collect(replies)
            return s.finish(DROPS)

        return Target(s, replies[1][0], True, finish)
    advance_to(s, server_kinds[kind])
    if kind == "abort":
        genuine = Abort(s.params.session_id, 0, 1, at_round=Round.MASKED_INPUT, count=3, reason="deadline")
    else:
        genuine = s.outbox[1]
    return Target(s, genuine, False, lambda: s.finish(DROPS))


# ---- mutations ------------------------------------------------------------------

Mutation = tuple[str, Callable[[Target], Any], tuple]


def at(index, value) -> Callable[[Target], bytes]:
    def mutate(tg: Target) -> bytes:
        env = tg.env
        env[index] = value(tg, env) if callable(value) else value
        return pack(env)

    return mutate


def in_body(edit: Callable[[Target, list], Any]) -> Callable[[Target], bytes]:
    """``edit`` changes the body in place (its return value is ignored)."""

    def mutate(tg: Target) -> bytes:
        env = tg.env
        body = copy.deepcopy(env[7])
        edit(tg, body)
        env[7] = body
        return pack(env)

    return mutate


def setitem(container, key, value):
    container[key] = value


def other_round(tg: Target, env) -> str:
    return "share_keys" if env[2] != "share_keys" else "masked_input"


COUNTERPART = {
    "encrypted_shares": "key_roster",
    "key_roster": "encrypted_shares",
    "masked_input": "forwarded_shares",
    "forwarded_shares": "masked_input",
    "unmasking_shares": "unmask_request",
    "unmask_request": "unmasking_shares",
    "consistency_signature": "survivor_list",
    "survivor_list": "consistency_signature",
}


def generic_mutations(kind: str, to_server: bool) -> list[Mutation]:
    garbage = np.random.default_rng(0).bytes(200)
    cases: list[Mutation] = [
        ("empty", lambda tg: b"", MAL),
        ("never-used-byte", lambda tg: b"\xc1", MAL),
        ("random-garbage", lambda tg: garbage, MAL),
        ("str-not-bytes", lambda tg: "not bytes", MAL),
        ("none-not-bytes", lambda tg: None, MAL),
        ("truncated-to-1", lambda tg: tg.raw[:1], MAL),
        ("truncated-half", lambda tg: tg.raw[: len(tg.raw) // 2], MAL),
        ("truncated-last-byte", lambda tg: tg.raw[:-1], MAL),
        ("trailing-byte", lambda tg: tg.raw + b"\x00", MAL),
        ("two-messages", lambda tg: tg.raw + tg.raw, MAL),
        ("envelope-map", lambda tg: pack({"version": 1}), MAL),
        ("envelope-scalar", lambda tg: pack(1), MAL),
        ("envelope-short", lambda tg: pack(tg.env[:6]), MAL),
        ("envelope-long", lambda tg: pack(tg.env + [None]), MAL),
        ("oversized-array", at(7, [0] * 100), MAL),
        ("oversized-message", lambda tg: pack(tg.env[:7] + [b"\x00" * (max_message_bytes(tg.session.params) + 1)]), MAL),
        ("ext-type", at(0, msgpack.ExtType(1, b"x")), MAL),
        ("version-next", at(0, PROTOCOL_VERSION + 1), MAL),
        ("version-1", at(0, 1), MAL),
        ("version-0", at(0, 0), MAL),
        ("version-str", at(0, str(PROTOCOL_VERSION)), MAL),
        ("version-bool", at(0, True), MAL),
        ("version-nil", at(0, None), MAL),
        ("session-other", at(1, b"\x99" * 32), PV("session-id")),
        ("session-short", at(1, lambda tg, env: env[1][:31]), MAL),
        ("session-long", at(1, lambda tg, env: env[1] + b"\x00"), MAL),
        ("session-str", at(1, "s" * 32), MAL),
        ("round-unknown", at(2, "round_nine"), MAL),
        ("round-int", at(2, 2), MAL),
        ("round-bytes", at(2, lambda tg, env: env[2].encode()), MAL),
        ("kind-unknown", at(3, "nonsense"), MAL),
        ("kind-int", at(3, 5), MAL),
        ("kind-bytes", at(3, lambda tg, env: env[3].encode()), MAL),
        ("sender-too-big", at(4, N + 1), MAL),
        ("sender-negative", at(4, -1), MAL),
        ("sender-huge", at(4, 2**63), MAL),
        ("sender-str", at(4, "1"), MAL),
        ("sender-float", at(4, 1.0), MAL),
        ("recipient-too-big", at(5, N + 1), MAL),
        ("recipient-negative", at(5, -1), MAL),
        ("recipient-str", at(5, "0"), MAL),
        ("call-beyond-the-session", at(6, 1), MAL),  # a one-call session has call 0 only
        ("call-negative", at(6, -1), MAL),
        ("call-str", at(6, "0"), MAL),
        ("call-nil", at(6, None), MAL),
        ("body-map", at(7, {}), MAL),
        ("body-nil", at(7, None), MAL),
        ("body-bytes", at(7, b""), MAL),
        ("body-longer", at(7, lambda tg, env: env[7] + [None]), MAL),
        ("body-shorter", at(7, lambda tg, env: env[7][:-1]), MAL),
    ]
    if kind != "abort":
        cases.append(("round-of-another-kind", at(2, other_round), MAL))
    if kind in COUNTERPART:
        cases.append(("kind-of-the-other-direction", at(3, COUNTERPART[kind]), MAL))
    if to_server:
        cases += [
            ("sender-server", at(4, 0), MAL),
            ("sender-bool", at(4, True), MAL),
            ("recipient-a-client", at(5, 2), MAL),
        ]
    else:
        cases += [
            ("sender-a-client", at(4, 2), MAL),
            ("sender-bool", at(4, False), MAL),
            ("recipient-server", at(5, 0), MAL),
            ("recipient-another-client", at(5, 2), PV("recipient")),
        ]
    return cases


def fresh_key(i: int) -> bytes:
    return raw_public(X25519PrivateKey.from_private_bytes(bytes([i + 1]) * 32))


def map_mutations(field_index: int, value_length: int) -> list[Mutation]:
    """Mutations of an id -> bytes map at body[field_index]."""

    def edit(change):
        return in_body(lambda tg, body: setitem(body, field_index, change(tg, body[field_index])))

    def first(m):
        return next(iter(m))

    return [
        ("map-as-list", edit(lambda tg, m: list(m.values())), MAL),
        ("map-nil", edit(lambda tg, m: None), MAL),
        ("map-key-0", edit(lambda tg, m: {**m, 0: m[first(m)]}), MAL),
        ("map-key-not-in-session", edit(lambda tg, m: {**m, N + 1: m[first(m)]}), MAL),
        ("map-key-str", edit(lambda tg, m: {**{k: v for k, v in m.items() if k != first(m)}, str(first(m)): m[first(m)]}), MAL),
        ("map-key-negative", edit(lambda tg, m: {**m, -3: m[first(m)]}), MAL),
        ("map-duplicate-key", edit(lambda tg, m: Dup(list(m.items()) + [(first(m), m[first(m)])])), MAL),
        ("map-oversized", edit(lambda tg, m: Dup([(k, m[first(m)]) for k in range(1, 100)])), MAL),
        ("map-value-short", edit(lambda tg, m: {**m, first(m): m[first(m)][:-1]}), MAL),
        ("map-value-long", edit(lambda tg, m: {**m, first(m): m[first(m)] + b"\x00"}), MAL),
        ("map-value-str", edit(lambda tg, m: {**m, first(m): "x" * value_length}), MAL),
        ("map-value-int", edit(lambda tg, m: {**m, first(m): 7}), MAL),
        ("map-value-nil", edit(lambda tg, m: {**m, first(m): None}), MAL),
    ]


def id_list_mutations(index: int) -> list[Mutation]:
    def edit(change):
        return in_body(lambda tg, body: setitem(body, index, change(body[index])))

    return [
        ("ids-map", edit(lambda ids: {i: i for i in ids}), MAL),
        ("ids-nil", edit(lambda ids: None), MAL),
        ("ids-not-in-session", edit(lambda ids: ids + [N + 1]), MAL),
        ("ids-zero", edit(lambda ids: ids + [0]), MAL),
        ("ids-str", edit(lambda ids: ids[:-1] + [str(ids[-1])]), MAL),
        ("ids-nil-entry", edit(lambda ids: ids + [None]), MAL),
        ("ids-oversized", edit(lambda ids: (ids * 50)[:100]), MAL),
        ("ids-duplicate", edit(lambda ids: ids + [ids[-1]]), PV("survivors-duplicate")),
        ("ids-omit-self", edit(lambda ids: [i for i in ids if i != 1]), PV("survivors-omit-self")),
        ("ids-too-few", edit(lambda ids: [1, 2]), ABORT),
    ]


def body_mutations(kind: str, malicious: bool) -> list[Mutation]:
    key_fields = [
        ("c_pk-31", in_body(lambda tg, b: setitem(b, 0, b[0][:31])), MAL),
        ("c_pk-33", in_body(lambda tg, b: setitem(b, 0, b[0] + b"\x00")), MAL),
        ("c_pk-str", in_body(lambda tg, b: setitem(b, 0, "k" * 32)), MAL),
        ("c_pk-int", in_body(lambda tg, b: setitem(b, 0, 5)), MAL),
        ("s_pk-nil", in_body(lambda tg, b: setitem(b, 1, None)), MAL),
        ("s_pk-31", in_body(lambda tg, b: setitem(b, 1, b[1][:31])), MAL),
        ("signature-63", in_body(lambda tg, b: setitem(b, 2, b"\x01" * 63)), MAL),
        ("signature-str", in_body(lambda tg, b: setitem(b, 2, "s" * 64)), MAL),
    ]
    if kind == "advertise_keys":
        cases = list(key_fields)
        if malicious:
            cases += [
                ("signature-missing", in_body(lambda tg, b: setitem(b, 2, None)), MAL),
                ("signature-wrong", in_body(lambda tg, b: setitem(b, 2, flip(b[2], 5))), PV("key-signature")),
                ("keys-replaced", in_body(lambda tg, b: setitem(b, 0, fresh_key(1))), PV("key-signature")),
            ]
        else:
            cases += [
                ("same-key-twice", in_body(lambda tg, b: setitem(b, 1, b[0])), PV("duplicate-key")),
                ("small-order-key", in_body(lambda tg, b: setitem(b, 1, bytes(32))), PV("small-order-key")),
            ]
        return cases
    if kind == "encrypted_shares":
        return map_mutations(1, 94) + [
            ("commitment-31", in_body(lambda tg, b: setitem(b, 0, b[0][:31])), MAL),
            ("commitment-nil", in_body(lambda tg, b: setitem(b, 0, None)), MAL),
            ("commitment-str", in_body(lambda tg, b: setitem(b, 0, "c" * 32)), MAL),
            ("missing-recipient", in_body(lambda tg, b: b[1].pop(2)), PV("share-recipients")),
            ("ciphertext-to-self", in_body(lambda tg, b: setitem(b[1], 1, b[1][2])), PV("share-recipients")),
        ]
    if kind == "masked_input":
        width = 2  # 2**12 travels in 2 bytes

        def with_value(value):
            return in_body(lambda tg, b: setitem(b, 0, value.to_bytes(width, "little") + b[0][width:]))

        return [
            ("one-element-short", in_body(lambda tg, b: setitem(b, 0, b[0][:-width])), MAL),
            ("one-byte-short", in_body(lambda tg, b: setitem(b, 0, b[0][:-1])), MAL),
            ("one-element-long", in_body(lambda tg, b: setitem(b, 0, b[0] + b"\x00" * width)), MAL),
            ("as-list-of-ints", in_body(lambda tg, b: setitem(b, 0, [0] * DIM)), MAL),
            ("as-str", in_body(lambda tg, b: setitem(b, 0, "m" * DIM * width)), MAL),
            ("value-equal-to-M", with_value(MODULUS), MAL),
            ("value-max-word", with_value(2**16 - 1), MAL),
        ]
    if kind == "consistency_signature":
        return [
            ("signature-63", in_body(lambda tg, b: setitem(b, 0, b[0][:63])), MAL),
            ("signature-65", in_body(lambda tg, b: setitem(b, 0, b[0] + b"\x00")), MAL),
            ("signature-nil", in_body(lambda tg, b: setitem(b, 0, None)), MAL),
            ("signature-str", in_body(lambda tg, b: setitem(b, 0, "s" * 64)), MAL),
            ("signature-flipped", in_body(lambda tg, b: setitem(b, 0, flip(b[0], 10))), PV("consistency-signature")),
            ("signature-zero", in_body(lambda tg, b: setitem(b, 0, bytes(64))), PV("consistency-signature")),
        ]
    if kind == "unmasking_shares":
        too_big = PRIME.to_bytes(SHARE_BYTES, "big")  # last 32-bit word = p
        return map_mutations(0, SHARE_BYTES) + [
            ("b-share-not-a-field-element", in_body(lambda tg, b: setitem(b[0], 2, too_big)), MAL),
            ("b-share-first-word-p", in_body(lambda tg, b: setitem(b[0], 2, PRIME.to_bytes(4, "big") + b[0][2][4:])), MAL),
            ("s-share-all-ones", in_body(lambda tg, b: setitem(b[1], 6, b"\xff" * SHARE_BYTES)), MAL),
            ("s-map-nil", in_body(lambda tg, b: setitem(b, 1, None)), MAL),
            ("s-map-bad-key", in_body(lambda tg, b: setitem(b[1], N + 1, b[1][6])), MAL),
            ("b-share-missing", in_body(lambda tg, b: b[0].pop(3)), PV("unmasking-shares")),
            ("b-share-of-dropped", in_body(lambda tg, b: setitem(b[0], 6, b[1][6])), PV("unmasking-shares")),
            ("s-share-of-survivor", in_body(lambda tg, b: setitem(b[1], 2, b[0][2])), PV("unmasking-shares")),
            ("s-share-missing", in_body(lambda tg, b: b[1].pop(6)), PV("unmasking-shares")),
        ]
    if kind == "key_roster":

        def entry(change):
            return in_body(lambda tg, b: change(b[0]))

        cases = map_mutations(0, 3)[:8] + [
            ("entry-bytes", entry(lambda m: setitem(m, 2, b"x" * 64)), MAL),
            ("entry-short", entry(lambda m: setitem(m, 2, m[2][:2])), MAL),
            ("entry-long", entry(lambda m: setitem(m, 2, m[2] + [None])), MAL),
            ("entry-c_pk-31", entry(lambda m: setitem(m[2], 0, m[2][0][:31])), MAL),
            ("entry-s_pk-nil", entry(lambda m: setitem(m[2], 1, None)), MAL),
            ("entry-signature-63", entry(lambda m: setitem(m[2], 2, b"\x01" * 63)), MAL),
            ("omits-self", entry(lambda m: m.pop(1)), PV("roster-self")),
            ("alters-own-key", entry(lambda m: setitem(m[1], 0, fresh_key(9))), PV("roster-self")),
            ("duplicate-public-key", entry(lambda m: setitem(m, 3, list(m[2]))), PV("roster-duplicate-key")),
            ("too-few-entries", entry(lambda m: [m.pop(k) for k in (3, 4, 5, 6)]), ABORT),
        ]
        if malicious:
            cases += [
                ("signature-flipped", entry(lambda m: setitem(m[2], 2, flip(m[2][2], 3))), PV("roster-signature")),
                ("signature-missing", entry(lambda m: setitem(m[2], 2, None)), PV("roster-signature")),
            ]
        else:
            cases += [
                ("small-order-key", entry(lambda m: setitem(m[2], 0, bytes(32))), PV("small-order-key")),
            ]
        return cases
    if kind == "forwarded_shares":
        return map_mutations(0, 94) + [
            ("from-self", in_body(lambda tg, b: setitem(b[0], 1, b[0][2])), PV("forwarded-sender")),
            ("flipped", in_body(lambda tg, b: setitem(b[0], 2, flip(b[0][2], 30))), PV("share-authentication")),
            ("swapped", in_body(lambda tg, b: b[0].update({2: b[0][3], 3: b[0][2]})), PV("share-authentication")),
            ("too-few-senders", in_body(lambda tg, b: setitem(b, 0, {2: b[0][2]})), ABORT),
        ]
    if kind == "survivor_list":
        return id_list_mutations(0)
    if kind == "unmask_request":
        cases = id_list_mutations(0)
        if malicious:

            def sigs(change):
                return in_body(lambda tg, b: setitem(b, 1, change(b[1])))

            cases += [
                ("signatures-list", sigs(lambda m: list(m.values())), MAL),
                ("signature-63", sigs(lambda m: {**m, 2: m[2][:63]}), MAL),
                ("signature-key-not-in-session", sigs(lambda m: {**m, N + 1: m[2]}), MAL),
                ("signature-duplicate-key", sigs(lambda m: Dup(list(m.items()) + [(2, m[2])])), MAL),
                ("signatures-missing", sigs(lambda m: None), ABORT),
                ("signatures-too-few", sigs(lambda m: {k: m[k] for k in (1, 2, 3)}), ABORT),
                ("signature-flipped", sigs(lambda m: {**m, 2: flip(m[2], 7)}), PV("consistency-signature")),
                ("signature-of-non-survivor", sigs(lambda m: {**m, 6: m[2]}), PV("consistency-signer")),
            ]
        else:
            cases += [
                ("signatures-in-honest-mode", in_body(lambda tg, b: setitem(b, 1, {})), PV("unexpected-signatures")),
                ("signatures-list", in_body(lambda tg, b: setitem(b, 1, [])), MAL),
            ]
        return cases
    assert kind == "abort"
    cases = [
        ("count-negative", in_body(lambda tg, b: setitem(b, 0, -1)), MAL),
        ("count-above-n", in_body(lambda tg, b: setitem(b, 0, N + 1)), MAL),
        ("count-huge", in_body(lambda tg, b: setitem(b, 0, 2**63)), MAL),
        ("count-str", in_body(lambda tg, b: setitem(b, 0, "3")), MAL),
        ("count-nil", in_body(lambda tg, b: setitem(b, 0, None)), MAL),
        ("reason-bytes", in_body(lambda tg, b: setitem(b, 1, b"deadline")), MAL),
        ("reason-int", in_body(lambda tg, b: setitem(b, 1, 3)), MAL),
        ("reason-nil", in_body(lambda tg, b: setitem(b, 1, None)), MAL),
        ("reason-too-long", in_body(lambda tg, b: setitem(b, 1, "r" * 5000)), MAL),
    ]
    if not malicious:
        cases.append(("round-consistency-in-honest-mode", at(2, "consistency_check"), MAL))
    return cases


KINDS = [
    ("advertise_keys", False),
    ("advertise_keys", True),
    ("encrypted_shares", False),
    ("encrypted_shares", True),
    ("masked_input", False),
    ("masked_input", True),
    ("consistency_signature", True),
    ("unmasking_shares", False),
    ("unmasking_shares", True),
    ("key_roster", False),
    ("key_roster", True),
    ("forwarded_shares", False),
    ("forwarded_shares", True),
    ("survivor_list", True),
    ("unmask_request", False),
    ("unmask_request", True),
    ("abort", False),
    ("abort", True),
]
KIND_IDS = [f"{k}-{'mal' if m else 'hbc'}" for k, m in KINDS]


@pytest.mark.parametrize("kind,malicious", KINDS, ids=KIND_IDS)
def test_every_mutant_is_refused_with_a_typed_error_and_no_state_change(make_session, kind, malicious):
    tg = make_target(make_session, kind, malicious)
    assert tg.genuine.KIND == kind
    assert pack(tg.env) == tg.raw  # the test's re-encoder is faithful
    mutations = generic_mutations(kind, tg.to_server) + body_mutations(kind, malicious)
    assert len({name for name, _, _ in mutations}) == len(mutations)
    failures = []
    for name, mutate, (error, rule) in mutations:
        data = mutate(tg)
        before = tg.view()
        try:
            tg.deliver(data)
        except SecAggError as exc:
            if not isinstance(exc, error) or (rule is not None and exc.rule != rule):
                failures.append(f"{name}: expected {error.__name__}({rule}), got {exc!r}")
        except Exception as exc:  # an untyped error is a failure too
            failures.append(f"{name}: untyped {exc!r}")
        else:
            failures.append(f"{name}: accepted")
        if tg.view() != before:
            failures.append(f"{name}: changed the receiver's state")
    assert not failures, "\n".join(failures)
    # The receiver is intact: the genuine message still completes an exact session.
    result = tg.finish()
    assert [int(v) for v in result.total] == tg.session.expected(result.included)
    assert set(result.included) == set(range(1, N))  # client 6 dropped before its masked input


@pytest.mark.parametrize("kind,malicious", [k for k in KINDS], ids=KIND_IDS)
def test_genuine_message_decodes_to_an_equal_message_and_re_encodes_identically(make_session, kind, malicious):
    tg = make_target(make_session, kind, malicious)
    msg = decode(tg.raw, tg.session.params)
    assert type(msg) is type(tg.genuine)
    assert msg.encode() == tg.raw
    assert (msg.sender, msg.recipient, msg.session_id) == (tg.genuine.sender, tg.genuine.recipient, tg.genuine.session_id)
    if isinstance(msg, MaskedInput):
        assert np.array_equal(msg.masked, tg.genuine.masked)
    else:
        assert msg == tg.genuine


def test_decoded_fields_have_the_documented_types(make_session):
    tg = make_target(make_session, "unmasking_shares", False)
    msg = decode(tg.raw, tg.session.params)
    assert isinstance(msg, UnmaskingShares)
    assert all(isinstance(k, int) and isinstance(v, int) and share_from_bytes(share_to_bytes(v)) == v for k, v in msg.b_shares.items())
    mi = make_target(make_session, "masked_input", False)
    masked = decode(mi.raw, mi.session.params).masked
    assert masked.shape == (DIM,) and int(masked.max()) < MODULUS


def test_message_classes_cover_every_kind():
    classes = {AdvertiseKeys, EncryptedShares, MaskedInput, ConsistencySignature, UnmaskingShares,
               KeyRoster, ForwardedShares, SurvivorList, UnmaskRequest, Abort}
    assert {c.KIND for c in classes} == {k for k, _ in KINDS}
    assert {c for c in classes if c.FROM_SERVER} == {KeyRoster, ForwardedShares, SurvivorList, UnmaskRequest, Abort}


def test_malformed_message_names_the_sender_and_field(make_session):
    tg = make_target(make_session, "encrypted_shares", False)
    env = tg.env
    env[7][0] = env[7][0][:31]
    with pytest.raises(MalformedMessage) as info:
        tg.deliver(pack(env))
    assert info.value.party == 1 and info.value.field == "commitment"


@pytest.mark.parametrize(
    "n,reason",
    [
        pytest.param(3, "x" * 2000, id="long-ascii-small-session"),  # once over max_message_bytes
        pytest.param(10, "é" * 700, id="non-ascii"),  # 700 characters but 1400 bytes: once over max_str_len
    ],
)
def test_server_abort_notice_with_any_reason_decodes(make_session, n, reason):
    # Regression: Abort.body cut the reason by characters and small sessions refused the notice.
    s = make_session(n=n, t=n, dim=2, seed=1)
    s.client_replies()  # nobody's keys reach the server
    with pytest.raises(AbortError):
        s.server.close_round()
    notices = s.server.abort_notices(reason)
    assert s.clients[1].receive(notices[0]) == []
    assert s.clients[1].state.value == "aborted"
    assert reason[:100] in s.clients[1].abort_reason


@pytest.mark.parametrize("dtype", ["<u1", "<u2", "<u4", "<u8"])
def test_masked_input_packs_the_array_bytes_as_tobytes_would(dtype):
    """MaskedInput.body hands msgpack the array's buffer (no copy): the bytes must be tobytes()'s,
    for a contiguous array and for a strided view alike."""
    values = np.arange(40, dtype=dtype) * 3
    for masked in (values, values[::2]):
        msg = MaskedInput(b"s" * 32, 1, 0, masked=masked)
        envelope = [PROTOCOL_VERSION, msg.session_id, msg.round.value, msg.KIND, 1, 0, 0, [masked.tobytes()]]
        assert msg.encode() == msgpack.packb(envelope, use_bin_type=True)
