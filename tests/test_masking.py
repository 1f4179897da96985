"""The mask PRG and modular mask accumulation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from secagg import PublicParams, SeededRandom
from secagg.masking import _BLOCK, MaskAccumulator, expand, pair_mask_keys, pair_mask_label, prg_key, self_mask_label

SEED = bytes(range(32))
SID_A = b"A" * 32
SID_B = b"B" * 32


def params(modulus_bits=16, dim=64, session_id=SID_A):
    return PublicParams(session_id=session_id, client_ids=(1, 2, 3), threshold=2, modulus_bits=modulus_bits, dim=dim)


def reference_prg(seed: bytes, session_id: bytes, label: bytes, modulus_bits: int, dim: int) -> list[int]:
    """The PRG as documented: HKDF-SHA256 -> AES-256-CTR(zero counter), little-endian words mod M."""
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=session_id, info=label).derive(seed)
    width = next(w for w in (1, 2, 4, 8) if modulus_bits <= 8 * w)
    stream = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update(bytes(dim * width))
    words = [int.from_bytes(stream[i * width : (i + 1) * width], "little") for i in range(dim)]
    return [w % 2**modulus_bits for w in words]


@pytest.mark.parametrize("bits", [1, 7, 8, 12, 16, 31, 32, 33, 63, 64])
def test_prg_matches_the_documented_construction(bits):
    p = params(bits, dim=40)
    got = expand(SEED, self_mask_label(3), p)
    assert [int(v) for v in got] == reference_prg(SEED, SID_A, self_mask_label(3), bits, 40)


def test_prg_is_deterministic_in_seed_session_and_label():
    p = params()
    a = expand(SEED, pair_mask_label(1, 2), p)
    b = expand(SEED, pair_mask_label(1, 2), p)
    assert np.array_equal(a, b)


def test_prg_differs_across_labels_and_seeds():
    p = params()
    streams = [
        expand(SEED, self_mask_label(1), p),
        expand(SEED, self_mask_label(2), p),
        expand(SEED, pair_mask_label(1, 2), p),
        expand(SEED, pair_mask_label(1, 3), p),
        expand(bytes(32), self_mask_label(1), p),
    ]
    for i in range(len(streams)):
        for j in range(i + 1, len(streams)):
            assert not np.array_equal(streams[i], streams[j])


def test_prg_differs_across_sessions():
    """Two sessions (two PublicParams with different ids) get different streams from one seed."""
    a = MaskAccumulator(params(session_id=SID_A))
    b = MaskAccumulator(params(session_id=SID_B))
    a.add_mask(SEED, self_mask_label(1), +1)
    b.add_mask(SEED, self_mask_label(1), +1)
    assert not np.array_equal(a.reduced(), b.reduced())


@pytest.mark.parametrize("bits", range(1, 65))
def test_prg_values_lie_in_zero_to_modulus(bits):
    p = params(bits, dim=256)
    values = expand(SEED, self_mask_label(bits), p)
    assert values.dtype == np.uint64 and values.shape == (256,)
    assert all(0 <= int(v) < 2**bits for v in values)
    # Not degenerate: a 256-element stream takes more than one value (for M=2 both bits appear).
    assert len(set(values.tolist())) > 1


def test_pair_mask_label_is_symmetric_and_self_mask_labels_are_distinct():
    assert pair_mask_label(2, 9) == pair_mask_label(9, 2)
    assert pair_mask_label(2, 9) != pair_mask_label(2, 8)
    assert self_mask_label(1) != self_mask_label(2)
    assert self_mask_label(1) != pair_mask_label(1, 1)


@pytest.mark.parametrize("bits", [1, 16, 32, 64])
def test_pairwise_masks_cancel(bits):
    rng = SeededRandom(bits)
    sk_u = X25519PrivateKey.from_private_bytes(rng.bytes(32))
    sk_v = X25519PrivateKey.from_private_bytes(rng.bytes(32))
    s_uv = sk_u.exchange(sk_v.public_key())
    s_vu = sk_v.exchange(sk_u.public_key())
    p = params(bits, dim=100)
    x_u = np.random.default_rng(bits).integers(0, 2**bits, 100, dtype=np.uint64)
    x_v = np.random.default_rng(bits + 1).integers(0, 2**bits, 100, dtype=np.uint64)
    u, v = 1, 2
    acc_u = MaskAccumulator(p, x_u)
    acc_u.add_mask(s_uv, pair_mask_label(u, v), +1)  # u < v adds
    acc_v = MaskAccumulator(p, x_v)
    acc_v.add_mask(s_vu, pair_mask_label(v, u), -1)  # v > u subtracts
    masked_u = acc_u.reduced()
    assert not np.array_equal(masked_u, x_u)  # the mask did change u's vector
    total = MaskAccumulator(p)
    total.add_vector(masked_u, +1)
    total.add_vector(acc_v.reduced(), +1)
    expected = [(int(a) + int(b)) % 2**bits for a, b in zip(x_u, x_v)]
    assert [int(z) for z in total.reduced()] == expected


@pytest.mark.parametrize("bits", [3, 12, 16, 40, 64])
def test_accumulator_arithmetic_is_modular(bits):
    rng = np.random.default_rng(bits)
    p = params(bits, dim=50)
    vecs = [rng.integers(0, 2**bits, 50, dtype=np.uint64) for _ in range(4)]
    signs = [+1, -1, +1, -1]
    acc = MaskAccumulator(p)
    for vec, sign in zip(vecs, signs):
        acc.add_vector(vec, sign)
    acc.add_mask(SEED, self_mask_label(1), +1)
    acc.add_mask(SEED, self_mask_label(1), -1)
    expected = [sum(s * int(v[i]) for v, s in zip(vecs, signs)) % 2**bits for i in range(50)]
    assert [int(z) for z in acc.reduced()] == expected


def test_accumulator_start_vector_is_copied_not_aliased():
    p = params(16, dim=4)
    start = np.array([1, 2, 3, 4], dtype=np.uint16)
    acc = MaskAccumulator(p, start)
    acc.add_vector(np.array([1, 1, 1, 1], dtype=np.uint16), +1)
    assert start.tolist() == [1, 2, 3, 4]
    assert acc.reduced().tolist() == [2, 3, 4, 5]


def test_params_with_another_session_id_change_the_mask():
    p = params()
    q = dataclasses.replace(p, session_id=SID_B)
    assert not np.array_equal(expand(SEED, self_mask_label(1), p), expand(SEED, self_mask_label(1), q))


@pytest.mark.parametrize("bits", [8, 16, 32, 64])
def test_blocked_expansion_of_several_masks_equals_whole_streams(bits):
    # Long enough for three blocks, the last one partial, so CTR state must carry across blocks.
    dim = 2 * _BLOCK + 1001
    p = params(bits, dim=dim)
    masks = [(SEED, self_mask_label(1), +1), (bytes(32), pair_mask_label(1, 2), -1), (SEED, pair_mask_label(1, 3), +1)]
    acc = MaskAccumulator(p)
    acc.add_masks(masks)
    expected = np.zeros(dim, dtype=object)
    for seed, label, sign in masks:
        expected += sign * np.array(reference_prg(seed, SID_A, label, bits, dim), dtype=object)
    assert [int(v) for v in acc.reduced()] == [int(v) % 2**bits for v in expected]


def test_pair_mask_keys_are_hkdf_blocks_one_per_call_the_same_whatever_the_number_of_calls():
    keys = pair_mask_keys(SEED, SID_A, 9, 2, 5)
    assert len(set(keys)) == 5 and all(len(k) == 32 for k in keys)
    assert keys[0] == prg_key(SEED, SID_A, pair_mask_label(2, 9))  # call 0: the one-call session's key
    assert pair_mask_keys(SEED, SID_A, 2, 9, 3) == keys[:3]  # symmetric, and block l does not depend on L
    okm = HKDF(algorithm=hashes.SHA256(), length=160, salt=SID_A, info=pair_mask_label(2, 9)).derive(SEED)
    assert b"".join(keys) == okm  # the documented construction (protocol_spec.md 4.3)
    assert pair_mask_keys(SEED, SID_B, 2, 9, 1) != keys[:1]
