"""Typed protocol messages and their strict msgpack wire format.

Every message is one msgpack array, the envelope
``[version, session_id, round, kind, sender, recipient, call, body]``, where
the server is party 0, ``call`` is the oracle call of a multi-call session
(0 for its key rounds) and ``body`` is a kind-specific array (see
protocol_spec.md).  ``decode`` checks every type, length, id and array size
against the public parameters and raises ``MalformedMessage`` (or
``ProtocolViolation`` for a message of another session) instead of returning
anything half-valid.  No pickle, no msgpack extension types.
"""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

import msgpack
import numpy as np

from .errors import MalformedMessage, ProtocolViolation
from .params import PublicParams
from .roster import DIGEST_BYTES, MAX_PATH, RosterProof
from .shamir import SHARE_BYTES, share_from_bytes, share_to_bytes
from .sharecrypt import ciphertext_bytes

# 2: chunked Shamir shares over GF(2**32 - 5); 3: signatures bind the roster digest;
# 4: multi-call sessions (the call index in the envelope, one seed share per call, call_open)
PROTOCOL_VERSION = 4
SERVER = 0
KEY_BYTES = 32
SIGNATURE_BYTES = 64
COMMITMENT_BYTES = 32
MAX_TEXT = 1024


class Round(str, enum.Enum):
    ADVERTISE_KEYS = "advertise_keys"
    SHARE_KEYS = "share_keys"
    MASKED_INPUT = "masked_input"
    CONSISTENCY_CHECK = "consistency_check"
    UNMASKING = "unmasking"

    def __str__(self) -> str:
        return self.value


def rounds_for(malicious: bool) -> tuple[Round, ...]:
    if malicious:
        return tuple(Round)
    return tuple(r for r in Round if r is not Round.CONSISTENCY_CHECK)


@dataclass(frozen=True)
class Message:
    """Common envelope. Subclasses add body fields, ``KIND`` and ``ROUND``."""

    KIND: ClassVar[str]
    ROUND: ClassVar[Round | None]  # None: carried in the envelope (Abort)
    FROM_SERVER: ClassVar[bool]

    session_id: bytes
    sender: int
    recipient: int
    call: int = 0  # the oracle call this message belongs to (0 in advertise_keys and share_keys)

    @property
    def round(self) -> Round:
        assert self.ROUND is not None
        return self.ROUND

    def body(self) -> list[Any]:
        raise NotImplementedError

    def encode(self) -> bytes:
        envelope = [
            PROTOCOL_VERSION, self.session_id, self.round.value, self.KIND, self.sender, self.recipient, self.call
        ]
        return _packer().pack(envelope + [self.body()])


_local = threading.local()


def _packer() -> msgpack.Packer:
    """This thread's Packer (packb's output, byte for byte).

    Kept, because its buffer is: msgpack.packb allocates a fresh 256 KiB buffer per message,
    then grows it to fit a masked input, and faulting that memory in cost more than packing.
    A Packer is not thread-safe, hence one per thread; pack() resets it even when it raises.
    """
    packer: msgpack.Packer | None = getattr(_local, "packer", None)
    if packer is None:
        packer = _local.packer = msgpack.Packer(use_bin_type=True)
    return packer


# ---- client -> server -------------------------------------------------------


@dataclass(frozen=True)
class AdvertiseKeys(Message):
    KIND = "advertise_keys"
    ROUND = Round.ADVERTISE_KEYS
    FROM_SERVER = False
    c_pk: bytes = b""  # X25519 key for share encryption
    s_pk: bytes = b""  # X25519 key for pairwise masks
    signature: bytes | None = None  # Ed25519 over both keys (malicious mode)

    def body(self) -> list[Any]:
        return [self.c_pk, self.s_pk, self.signature]


@dataclass(frozen=True)
class EncryptedShares(Message):
    KIND = "encrypted_shares"
    ROUND = Round.SHARE_KEYS
    FROM_SERVER = False
    commitment: bytes = b""  # SHA-256 commitments to the self-mask seeds b^(0..L-1), concatenated
    ciphertexts: Mapping[int, bytes] = field(default_factory=dict)  # receiver -> ciphertext

    def body(self) -> list[Any]:
        return [self.commitment, dict(self.ciphertexts)]


@dataclass(frozen=True, eq=False)
class MaskedInput(Message):
    KIND = "masked_input"
    ROUND = Round.MASKED_INPUT
    FROM_SERVER = False
    masked: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    signature: bytes | None = None  # malicious mode, sparse graph: over the partners it masked against (14.5)

    def body(self) -> list[Any]:
        # The array's own buffer: the same bin on the wire as tobytes(), without a d-element copy.
        body: list[Any] = [memoryview(np.ascontiguousarray(self.masked))]
        return body if self.signature is None else body + [self.signature]


@dataclass(frozen=True)
class ConsistencySignature(Message):
    KIND = "consistency_signature"
    ROUND = Round.CONSISTENCY_CHECK
    FROM_SERVER = False
    signature: bytes = b""

    def body(self) -> list[Any]:
        return [self.signature]


@dataclass(frozen=True)
class UnmaskingShares(Message):
    KIND = "unmasking_shares"
    ROUND = Round.UNMASKING
    FROM_SERVER = False
    b_shares: Mapping[int, int] = field(default_factory=dict)  # survivor -> share of its seed b
    s_shares: Mapping[int, int] = field(default_factory=dict)  # dropped -> share of its mask key

    def body(self) -> list[Any]:
        enc = lambda shares: {k: share_to_bytes(v) for k, v in shares.items()}
        return [enc(self.b_shares), enc(self.s_shares)]


# ---- server -> client -------------------------------------------------------


@dataclass(frozen=True)
class KeyRoster(Message):
    KIND = "key_roster"
    ROUND = Round.SHARE_KEYS
    FROM_SERVER = True
    keys: Mapping[int, tuple[bytes, bytes, bytes | None]] = field(default_factory=dict)
    # malicious mode, sparse graph: the roster digest and the path to the recipient's own entry
    proof: RosterProof | None = None

    def body(self) -> list[Any]:
        body: list[Any] = [{k: list(v) for k, v in self.keys.items()}]
        if self.proof is not None:
            pr = self.proof
            body.append([pr.root, pr.index, pr.size, list(pr.path)])
        return body


@dataclass(frozen=True)
class ForwardedShares(Message):
    KIND = "forwarded_shares"
    ROUND = Round.MASKED_INPUT
    FROM_SERVER = True
    ciphertexts: Mapping[int, bytes] = field(default_factory=dict)  # sender -> ciphertext for recipient

    def body(self) -> list[Any]:
        return [dict(self.ciphertexts)]


@dataclass(frozen=True)
class CallOpen(Message):
    """Opens oracle call ``call`` >= 1 of a multi-call session (its masked_input round).

    ``broadcast`` is the call's public input, opaque to secagg (RFA: the v of a
    Weiszfeld step); the client hands it to its inputs callback."""

    KIND = "call_open"
    ROUND = Round.MASKED_INPUT
    FROM_SERVER = True
    broadcast: bytes = b""

    def body(self) -> list[Any]:
        return [self.broadcast]


@dataclass(frozen=True)
class SurvivorList(Message):
    KIND = "survivor_list"
    ROUND = Round.CONSISTENCY_CHECK
    FROM_SERVER = True
    survivors: tuple[int, ...] = ()

    def body(self) -> list[Any]:
        return [list(self.survivors)]


@dataclass(frozen=True)
class UnmaskRequest(Message):
    KIND = "unmask_request"
    ROUND = Round.UNMASKING
    FROM_SERVER = True
    survivors: tuple[int, ...] = ()
    signatures: Mapping[int, bytes] | None = None  # malicious mode: consistency signatures
    # malicious mode, sparse graph: listed neighbour -> (the partners it masked against, its signature)
    partners: Mapping[int, tuple[tuple[int, ...], bytes]] | None = None

    def body(self) -> list[Any]:
        body: list[Any] = [list(self.survivors), None if self.signatures is None else dict(self.signatures)]
        if self.partners is not None:
            body.append({v: [list(ids), sig] for v, (ids, sig) in self.partners.items()})
        return body


@dataclass(frozen=True)
class Abort(Message):
    """The server tells a client the session stopped; the envelope round is where."""

    KIND = "abort"
    ROUND = None
    FROM_SERVER = True
    at_round: Round = Round.ADVERTISE_KEYS
    count: int = 0
    reason: str = ""

    @property
    def round(self) -> Round:
        return self.at_round

    def body(self) -> list[Any]:
        # Cut by bytes, not characters: the decoder limits strings to MAX_TEXT bytes.
        return [self.count, self.reason.encode()[:MAX_TEXT].decode(errors="ignore")]


KINDS: dict[str, type[Message]] = {
    cls.KIND: cls
    for cls in (
        AdvertiseKeys,
        EncryptedShares,
        MaskedInput,
        ConsistencySignature,
        UnmaskingShares,
        KeyRoster,
        ForwardedShares,
        CallOpen,
        SurvivorList,
        UnmaskRequest,
        Abort,
    )
}


def max_broadcast_bytes(params: PublicParams) -> int:
    """The largest public broadcast a call_open may carry: a float64 vector of length d and a header
    (0 in a one-call session, which has no call_open: its frame limits stay those of wire version 3)."""
    return 8 * params.dim + 64 if params.calls > 1 else 0


def max_message_bytes(params: PublicParams) -> int:
    """An upper bound on the size of any valid encoded message of this session."""
    per_client = 16 + max(3 * KEY_BYTES + SIGNATURE_BYTES, ciphertext_bytes(params.calls), 2 * (SHARE_BYTES + 8))
    partners = 0
    if params.malicious and params.sparse:  # unmask_request: k partner lists of k ids (5 bytes each at most)
        k = params.graph.degree  # type: ignore[union-attr]
        partners = k * (16 + SIGNATURE_BYTES + 5 * k) + 16 + (MAX_PATH + 1) * (DIGEST_BYTES + 2)  # + roster proof
    return 512 + MAX_TEXT + max(
        params.dim * params.element_bytes + SIGNATURE_BYTES, params.n * per_client + partners,
        max_broadcast_bytes(params), COMMITMENT_BYTES * params.calls,
    )


# ---- decoding ---------------------------------------------------------------


class _Reader:
    """Field checks that raise MalformedMessage naming the sender and field."""

    def __init__(self, params: PublicParams, sender: int | None):
        self.params = params
        self.sender = sender
        self.ids = params.id_set

    def fail(self, field_name: str, reason: str) -> MalformedMessage:
        return MalformedMessage(reason, party=self.sender, field=field_name)

    def bin(self, value: Any, name: str, length: int | None = None) -> bytes:
        if type(value) is not bytes:
            raise self.fail(name, f"expected bytes, got {type(value).__name__}")
        if length is not None and len(value) != length:
            raise self.fail(name, f"expected {length} bytes, got {len(value)}")
        return value

    def int(self, value: Any, name: str, lo: int, hi: int) -> int:
        if type(value) is not int or not lo <= value <= hi:
            raise self.fail(name, f"expected an integer in [{lo}, {hi}], got {value!r:.40}")
        return value

    def client_id(self, value: Any, name: str) -> int:
        if type(value) is not int or value not in self.ids:
            raise self.fail(name, f"{value!r:.40} is not a client id of this session")
        return value

    def array(self, value: Any, name: str, length: int | None = None) -> list[Any]:
        if type(value) is not list:
            raise self.fail(name, f"expected an array, got {type(value).__name__}")
        if length is not None and len(value) != length:
            raise self.fail(name, f"expected {length} elements, got {len(value)}")
        return value

    def id_map(self, value: Any, name: str) -> dict[int, Any]:
        if type(value) is not dict:
            raise self.fail(name, f"expected a map, got {type(value).__name__}")
        for key in value:
            self.client_id(key, f"{name} key")
        return value

    def id_list(self, value: Any, name: str) -> tuple[int, ...]:
        # Duplicates are kept: rejecting them is a protocol rule of the receiver.
        items = self.array(value, name)
        if set(map(type, items)) <= {int} and self.ids.issuperset(items):  # in C: malicious lists are O(n)
            return tuple(items)
        return tuple(self.client_id(v, name) for v in items)  # names the first bad element

    def bin_map(self, value: Any, name: str, length: int) -> dict[int, bytes]:
        return {k: self.bin(v, f"{name}[{k}]", length) for k, v in self.id_map(value, name).items()}

    def share_map(self, value: Any, name: str) -> dict[int, int]:
        shares = {}
        for k, v in self.bin_map(value, name, SHARE_BYTES).items():
            try:
                shares[k] = share_from_bytes(v)
            except ValueError:
                raise self.fail(f"{name}[{k}]", "share is not a vector of field elements") from None
        return shares

    def signature(self, value: Any, name: str) -> bytes:
        return self.bin(value, name, SIGNATURE_BYTES)


def _unique_keys(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate map key")
    return result


def _unpack(data: bytes, params: PublicParams) -> Any:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedMessage(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_message_bytes(params):
        raise MalformedMessage(f"{len(data)} bytes exceeds the session's limit {max_message_bytes(params)}")
    limit = max(params.n, 8)
    try:
        return msgpack.unpackb(
            bytes(data),
            raw=False,
            strict_map_key=False,
            use_list=True,
            max_bin_len=max(
                params.dim * params.element_bytes, ciphertext_bytes(params.calls), max_broadcast_bytes(params),
                COMMITMENT_BYTES * params.calls, 128,
            ),
            max_str_len=MAX_TEXT,
            max_array_len=limit,
            max_map_len=limit,
            max_ext_len=0,
            object_pairs_hook=_unique_keys,
        )
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise MalformedMessage(f"not a msgpack object within the session's limits ({exc.__class__.__name__}: {exc})")


def decode(data: bytes, params: PublicParams) -> Message:
    """Parse and validate one message of the session ``params``."""
    obj = _unpack(data, params)
    r = _Reader(params, None)
    envelope = r.array(obj, "envelope", 8)
    version, session_id, round_name, kind, sender, recipient, call, body = envelope
    r.int(version, "version", PROTOCOL_VERSION, PROTOCOL_VERSION)
    max_id = params.client_ids[-1]  # sorted
    sender = r.int(sender, "sender", 0, max_id)
    r.sender = sender
    recipient = r.int(recipient, "recipient", 0, max_id)
    if type(kind) is not str or kind not in KINDS:
        raise r.fail("kind", f"unknown message kind {kind!r:.40}")
    cls = KINDS[kind]
    if type(round_name) is not str or round_name not in Round._value2member_map_:
        raise r.fail("round", f"unknown round {round_name!r:.40}")
    round_ = Round(round_name)
    if cls.ROUND is not None and round_ is not cls.ROUND:
        raise r.fail("round", f"a {kind} message belongs to round {cls.ROUND}, not {round_}")
    call = r.int(call, "call", 0, params.calls - 1)
    if call and (round_ in (Round.ADVERTISE_KEYS, Round.SHARE_KEYS) or cls is ForwardedShares):
        raise r.fail("call", f"{kind} belongs to the session's key rounds, call 0, not call {call}")
    if cls is CallOpen and not call:
        raise r.fail("call", "call 0 is opened by forwarded_shares, not call_open")
    if round_ is Round.CONSISTENCY_CHECK and not params.malicious:
        raise r.fail("round", "consistency_check exists only in malicious-server mode")
    if cls.FROM_SERVER:
        if sender != SERVER:
            raise r.fail("sender", f"{kind} is sent by the server only")
        r.client_id(recipient, "recipient")
    else:
        r.client_id(sender, "sender")
        if recipient != SERVER:
            raise r.fail("recipient", f"{kind} is sent to the server only")
    r.bin(session_id, "session_id", len(params.session_id))
    if session_id != params.session_id:
        raise ProtocolViolation(sender, "session-id", "message belongs to another session")
    header = dict(session_id=session_id, sender=sender, recipient=recipient, call=call)
    return _decode_body(cls, header, round_, body, r)


def _decode_body(cls: type[Message], header: dict, round_: Round, body: Any, r: _Reader) -> Message:
    p = r.params
    if cls is AdvertiseKeys:
        c_pk, s_pk, sig = r.array(body, "body", 3)
        sig = None if sig is None else r.signature(sig, "signature")
        if p.malicious and sig is None:
            raise r.fail("signature", "malicious-server mode requires a signature on the keys")
        return AdvertiseKeys(**header, c_pk=r.bin(c_pk, "c_pk", KEY_BYTES), s_pk=r.bin(s_pk, "s_pk", KEY_BYTES), signature=sig)
    if cls is EncryptedShares:
        commitment, cts = r.array(body, "body", 2)
        return EncryptedShares(
            **header,
            commitment=r.bin(commitment, "commitment", COMMITMENT_BYTES * p.calls),
            ciphertexts=r.bin_map(cts, "ciphertexts", ciphertext_bytes(p.calls)),
        )
    if cls is MaskedInput:
        signed = p.malicious and p.sparse
        raw, *sig = r.array(body, "body", 2 if signed else 1)
        raw = r.bin(raw, "masked", p.dim * p.element_bytes)
        masked = np.frombuffer(raw, dtype=p.dtype)
        if p.modulus_bits < 8 * p.element_bytes and int(masked.max()) >= p.modulus:
            raise r.fail("masked", f"value out of range [0, 2**{p.modulus_bits})")
        return MaskedInput(**header, masked=masked, signature=r.signature(sig[0], "signature") if signed else None)
    if cls is ConsistencySignature:
        (sig,) = r.array(body, "body", 1)
        return ConsistencySignature(**header, signature=r.signature(sig, "signature"))
    if cls is UnmaskingShares:
        b, s = r.array(body, "body", 2)
        return UnmaskingShares(**header, b_shares=r.share_map(b, "b_shares"), s_shares=r.share_map(s, "s_shares"))
    if cls is KeyRoster:
        with_proof = p.malicious and p.sparse
        entries, *rest = r.array(body, "body", 2 if with_proof else 1)
        keys = {}
        for cid, entry in r.id_map(entries, "keys").items():
            c_pk, s_pk, sig = r.array(entry, f"keys[{cid}]", 3)
            sig = None if sig is None else r.signature(sig, f"keys[{cid}].signature")
            keys[cid] = (r.bin(c_pk, f"keys[{cid}].c_pk", KEY_BYTES), r.bin(s_pk, f"keys[{cid}].s_pk", KEY_BYTES), sig)
        proof = None
        if with_proof:
            root, index, size, path = r.array(rest[0], "proof", 4)
            size = r.int(size, "proof.size", 1, p.n)
            hashes = r.array(path, "proof.path")
            if len(hashes) > MAX_PATH:
                raise r.fail("proof.path", f"{len(hashes)} hashes, more than a tree of {p.n} leaves has")
            proof = RosterProof(
                root=r.bin(root, "proof.root", DIGEST_BYTES),
                index=r.int(index, "proof.index", 0, size - 1),
                size=size,
                path=tuple(r.bin(h, "proof.path", DIGEST_BYTES) for h in hashes),
            )
        return KeyRoster(**header, keys=keys, proof=proof)
    if cls is ForwardedShares:
        (cts,) = r.array(body, "body", 1)
        return ForwardedShares(**header, ciphertexts=r.bin_map(cts, "ciphertexts", ciphertext_bytes(p.calls)))
    if cls is CallOpen:
        (broadcast,) = r.array(body, "body", 1)
        broadcast = r.bin(broadcast, "broadcast")
        if len(broadcast) > max_broadcast_bytes(p):
            raise r.fail("broadcast", f"{len(broadcast)} bytes, more than {max_broadcast_bytes(p)}")
        return CallOpen(**header, broadcast=broadcast)
    if cls is SurvivorList:
        (ids,) = r.array(body, "body", 1)
        return SurvivorList(**header, survivors=r.id_list(ids, "survivors"))
    if cls is UnmaskRequest:
        signed = p.malicious and p.sparse
        ids, sigs, *rest = r.array(body, "body", 3 if signed else 2)
        signatures = None
        if sigs is not None:
            signatures = {k: r.signature(v, f"signatures[{k}]") for k, v in r.id_map(sigs, "signatures").items()}
        partners = None
        if signed:
            partners = {}
            for v, entry in r.id_map(rest[0], "partners").items():
                listed, sig = r.array(entry, f"partners[{v}]", 2)
                partners[v] = (r.id_list(listed, f"partners[{v}].ids"), r.signature(sig, f"partners[{v}].signature"))
        return UnmaskRequest(**header, survivors=r.id_list(ids, "survivors"), signatures=signatures, partners=partners)
    assert cls is Abort
    count, reason = r.array(body, "body", 2)
    if type(reason) is not str:
        raise r.fail("reason", "expected text")
    return Abort(**header, at_round=round_, count=r.int(count, "count", 0, p.n), reason=reason)
