"""Key encodings: X25519 points compared as points, Ed25519 identity keys validated."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from secagg import SeededRandom
from secagg.keys import is_small_order, is_valid_identity_key, raw_public, verify_signature, x25519_point

P = 2**255 - 19


def shared(own: X25519PrivateKey, public: bytes) -> bytes:
    return own.exchange(X25519PublicKey.from_public_bytes(public))


def test_every_encoding_of_an_x25519_point_maps_to_its_canonical_one():
    own = X25519PrivateKey.from_private_bytes(SeededRandom(1).bytes(32))
    base = (9).to_bytes(32, "little")  # the base point: u = 9 < 19, so u + p also fits in 255 bits
    aliases = [(9 + P).to_bytes(32, "little"), (9 | 1 << 255).to_bytes(32, "little"), (9 + P | 1 << 255).to_bytes(32, "little")]
    for alias in aliases:
        assert alias != base and x25519_point(alias) == base
        assert shared(own, alias) == shared(own, base)  # X25519 itself treats them as one key
    key = raw_public(X25519PrivateKey.from_private_bytes(SeededRandom(2).bytes(32)))
    flipped = key[:31] + bytes([key[31] | 0x80])
    assert x25519_point(key) == key == x25519_point(flipped)
    assert shared(own, flipped) == shared(own, key)
    top = (P - 1).to_bytes(32, "little")  # canonical, top byte 0x7f: the slow path keeps it
    assert x25519_point(top) == top


def test_real_ed25519_public_keys_are_valid_identity_keys():
    rng = SeededRandom(3)
    for u in range(50):
        assert is_valid_identity_key(raw_public(Ed25519PrivateKey.from_private_bytes(rng.fork(str(u)).bytes(32))))


@pytest.mark.parametrize("bad", [None, "x" * 32, bytearray(32), bytes(31), bytes(33)])
def test_identity_keys_of_the_wrong_type_or_length_are_not_valid(bad):
    assert not is_valid_identity_key(bad)


# ---- the verification cache (keys.verify_signature) ------------------------------------


def identity(label: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(SeededRandom(label).bytes(32))


def test_a_cached_good_signature_does_not_vouch_for_another_payload_or_key():
    alice, bob = identity("alice"), identity("bob")
    good = alice.sign(b"the survivor list")
    assert verify_signature(raw_public(alice), good, b"the survivor list")
    assert verify_signature(raw_public(alice), good, b"the survivor list")  # answered from the cache
    # The same signature and key over another payload, or under another key, is still refused.
    assert not verify_signature(raw_public(alice), good, b"another survivor list")
    assert not verify_signature(raw_public(bob), good, b"the survivor list")
    forged = bytes([good[0] ^ 1]) + good[1:]
    assert not verify_signature(raw_public(alice), forged, b"the survivor list")


def test_a_cached_refusal_stays_a_refusal_and_a_good_signature_still_verifies_after_it():
    alice = identity("alice")
    payload = b"partners of client 7"
    bad = bytes(64)
    assert not verify_signature(raw_public(alice), bad, payload)
    assert not verify_signature(raw_public(alice), bad, payload)
    assert verify_signature(raw_public(alice), alice.sign(payload), payload)
    assert not verify_signature(raw_public(alice), None, payload)


def test_the_verification_cache_answers_as_libsodium_does_for_equal_payloads_in_distinct_objects():
    alice = identity("alice")
    text = b"x" * 3000
    sig = alice.sign(text)
    copies = [bytes(bytearray(text)) for _ in range(3)]  # equal bytes, distinct objects
    assert all(verify_signature(raw_public(alice), sig, c) for c in copies)
    assert not verify_signature(raw_public(alice), sig, text[:-1] + b"y")


# ---- small-order X25519 keys (keys.is_small_order) ----------------------------------------

P25519 = 2**255 - 19
PROBE = X25519PrivateKey.from_private_bytes(bytes([0x40] * 32))  # any clamped scalar sends small order to 0


def zero_agreement(public: bytes) -> bool:
    try:
        PROBE.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError:
        return True
    return False


def encodings(u: int) -> list[bytes]:
    """Every 32-byte encoding X25519 reads as the point u: u and u + p (when < 2^255), each with the top bit set."""
    values = [u] + ([u + P25519] if u + P25519 < 2**255 else [])
    return [(v | bit).to_bytes(32, "little") for v in values for bit in (0, 1 << 255)]


# The two u-coordinates of the points of order 8 (RFC 7748, and libsodium's list).
ORDER_8 = (
    325606250916557431795983626356110631294008115727848805560023387167927233504,
    39382357235489614581723060781553021112529911719440698176882885853963445705823,
)


def test_the_small_order_list_agrees_with_an_agreement_on_every_encoding_of_each_point():
    rng = SeededRandom("small-order")
    spread = range(2**250, 2**255, 2**250)  # 31 points of large order
    keys = [k for u in (0, 1, P25519 - 1, *ORDER_8, *spread) for k in encodings(u)]
    keys += [rng.bytes(32) for _ in range(300)]
    for key in keys:
        assert is_small_order(key) == zero_agreement(key), key.hex()
    assert sum(map(is_small_order, keys)) == 2 * 2 + 2 * 2 + 2 + 2 * 2  # 0, 1 (two values each), p - 1, order 8


@pytest.mark.parametrize("bad", [b"", bytes(31), bytes(33), "0" * 32, None])
def test_anything_but_32_bytes_counts_as_a_small_order_key(bad):
    assert is_small_order(bad)
