"""Key material: raw encodings, X25519 agreement, Ed25519 signatures and what is signed.

X25519 rejects small-order public keys (the agreement would be all zeros and
carry no secret); ``agree`` turns that into a ``ProtocolViolation`` naming
the peer that advertised the key, so a hostile key never surfaces as an
untyped error.  X25519 keys are compared as points (``x25519_point``): an
encoding with the top bit set, or with u >= p, names the same point as its
canonical one.  An Ed25519 identity key must be the canonical encoding of a
point of prime order (``is_valid_identity_key``): with a small-order key such
as the identity point, OpenSSL verifies the signature (R = identity, S = 0) on
every message (libsodium, which ``verify_signature`` uses, refuses it too).  The signed payloads and the seed commitment are domain separated
and bind the session id; the signatures made after round 1 also bind the roster
digest (roster.py), which makes them unique to one session.
"""

from __future__ import annotations

import functools
import hashlib
import threading

import msgpack
from nacl.bindings import crypto_core_ed25519_is_valid_point
from nacl.exceptions import CryptoError
from nacl.signing import VerifyKey
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from .errors import ProtocolViolation

def raw_public(key: X25519PrivateKey | Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def raw_private(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())


_P25519 = 2**255 - 19
# The points of order dividing 8 on Curve25519 and on its twist, as canonical u-coordinates
# (RFC 7748; libsodium refuses the same list): 0 (order 2), 1 and p - 1 (order 4), and the two of
# order 8.  X25519 with any clamped scalar (a multiple of 8) sends exactly these to zero.
_SMALL_ORDER = frozenset(
    u.to_bytes(32, "little")
    for u in (
        0, 1, _P25519 - 1,
        325606250916557431795983626356110631294008115727848805560023387167927233504,
        39382357235489614581723060781553021112529911719440698176882885853963445705823,
    )
)


def is_small_order(public: bytes) -> bool:
    """Whether an X25519 public key names a point of small order (or is no 32-byte key at all).

    A set lookup on the canonical point, not an agreement: the server checks every advertised
    key, 2n of them, while the clients wait (an agreement with a fixed clamped scalar decides the
    same; tests/test_keys.py checks that on every encoding of each point)."""
    if type(public) is not bytes or len(public) != 32:
        return True
    return x25519_point(public) in _SMALL_ORDER


def x25519_point(public: bytes) -> bytes:
    """The canonical encoding of the point an X25519 public key names (RFC 7748, Sec. 5).

    X25519 ignores the top bit and reduces u mod p, so 2**255 / 19 encodings
    collide; equality of keys must be decided on this form, not on the bytes.
    """
    if public[31] < 0x7F:  # top bit clear and u < 2**255 - 2**248 < p: canonical already (the common case)
        return public
    u = int.from_bytes(public, "little") & ((1 << 255) - 1)
    return (u % _P25519).to_bytes(32, "little")


def is_valid_identity_key(public: object) -> bool:
    """Whether ``public`` is a canonical Ed25519 public key of prime order (libsodium's check)."""
    return isinstance(public, bytes) and len(public) == 32 and _valid_point(public)


@functools.lru_cache(maxsize=1 << 16)  # every party checks every key; in one process, once is enough
def _valid_point(public: bytes) -> bool:
    return bool(crypto_core_ed25519_is_valid_point(public))


def agree(own: X25519PrivateKey, peer_public: X25519PublicKey | bytes, peer: int) -> bytes:
    """X25519 shared secret; a small-order peer key is a violation by ``peer``."""
    if isinstance(peer_public, bytes):
        peer_public = X25519PublicKey.from_public_bytes(peer_public)
    try:
        return own.exchange(peer_public)
    except ValueError:
        raise ProtocolViolation(peer, "small-order-key", "advertised X25519 key has small order") from None


def keys_payload(session_id: bytes, u: int, c_pk: bytes, s_pk: bytes) -> bytes:
    """What a client signs in advertise_keys (malicious mode)."""
    return b"secagg/v1/advertise|" + session_id + u.to_bytes(4, "big") + c_pk + s_pk


def consistency_payload(session_id: bytes, roster: bytes, survivors: tuple[int, ...], call: int = 0) -> bytes:
    """What a client signs in consistency_check: the session, the roster digest and the survivor set.

    ``roster`` is the root of the tree over this session's advertised keys
    (roster.py), which holds the signer's own fresh keys: no signature from
    another session verifies on it, even under the same session id (4.2).  ``call`` is the
    oracle call: a signature of one call does not verify for another (16.4)."""
    return b"secagg/v4/consistency|" + session_id + roster + call.to_bytes(4, "big") + msgpack.packb(sorted(survivors))


def partners_payload(session_id: bytes, roster: bytes, u: int, partners: tuple[int, ...], call: int = 0) -> bytes:
    """What a client signs with its masked input on a sparse graph in malicious mode: the
    neighbours it masked against, so that its share holders can check them (14.5).  Bound
    to the roster digest and the call like the consistency signature."""
    return (b"secagg/v4/partners|" + session_id + roster + u.to_bytes(4, "big") + call.to_bytes(4, "big")
            + msgpack.packb(sorted(partners)))


def seed_commitment(session_id: bytes, u: int, seed: bytes, call: int = 0) -> bytes:
    """SHA-256 commitment to u's self-mask seed of one call; lets the server check its reconstruction."""
    return hashlib.sha256(
        b"secagg/v4/seed-commitment|" + session_id + u.to_bytes(4, "big") + call.to_bytes(4, "big") + seed
    ).digest()


def verify_signature(public: bytes, signature: bytes | None, payload: bytes) -> bool:
    """Ed25519 verification with libsodium, which also refuses non-canonical S and
    small-order R; about twice as fast as OpenSSL's here.

    Verification is a deterministic function of (key, signature, payload), so its
    answer is remembered per (key, signature, SHA-256 of the payload): a process that
    checks one triple again gets the earlier answer, refusal included.  That is what
    makes the in-memory simulator's malicious mode cheap, where every client checks
    the same quorum of consistency signatures over the same list (protocol_spec.md
    14.5); a deployed client, alone in its process, verifies each signature itself.
    A hit for a different payload would need a SHA-256 collision.
    """
    if signature is None:
        return False
    key = (public, signature, _payload_digest(payload))
    known = _VERIFIED.get(key)
    if known is None:
        known = _verify(public, signature, payload)
        with _VERIFIED_LOCK:  # the TCP server verifies in a worker thread too
            if len(_VERIFIED) >= _VERIFIED_MAX:
                del _VERIFIED[next(iter(_VERIFIED))]  # the oldest answer
            _VERIFIED[key] = known
    return known


def _verify(public: bytes, signature: bytes, payload: bytes) -> bool:
    try:
        _verify_key(public).verify(payload, signature)
    except CryptoError:  # a bad signature, or one of the wrong length
        return False
    return True


# Answers kept: far above the O(n) distinct signatures of one session, and small (about 200 B each).
_VERIFIED_MAX = 1 << 17
_VERIFIED: dict[tuple[bytes, bytes, bytes], bool] = {}
_VERIFIED_LOCK = threading.Lock()


@functools.lru_cache(maxsize=256)
def _payload_digest(payload: bytes) -> bytes:
    """SHA-256 of a payload, once per distinct payload: a client checks one list against
    O(n) signatures, and a hit costs Python's (cached) hash of the bytes and a compare."""
    return hashlib.sha256(payload).digest()


@functools.lru_cache(maxsize=65536)
def _verify_key(public: bytes) -> VerifyKey:
    return VerifyKey(public)
