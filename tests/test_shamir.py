"""Shamir secret sharing over GF(2**256 + 297) and Berlekamp-Welch decoding."""

from __future__ import annotations

import numpy as np
import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg import SeededRandom
from secagg import shamir
from secagg.shamir import PRIME


def secret_bytes(rng: np.random.Generator) -> bytes:
    return rng.bytes(shamir.SECRET_BYTES)


def interpolate_at(points: dict[int, int], x: int) -> int:
    """Independent Lagrange interpolation over GF(PRIME): the unique poly of degree < len(points) at x."""
    total = 0
    for xj, yj in points.items():
        num, den = 1, 1
        for xm in points:
            if xm != xj:
                num = num * (x - xm) % PRIME
                den = den * (xj - xm) % PRIME
        total = (total + yj * num * pow(den, -1, PRIME)) % PRIME
    return total


def test_field_prime_is_prime():
    assert sympy.isprime(PRIME)


def test_field_prime_is_the_smallest_prime_above_2_pow_256():
    assert sympy.nextprime(2**256) == PRIME
    assert PRIME > 2 ** (8 * shamir.SECRET_BYTES)


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(
    t=st.integers(1, 7),
    extra=st.integers(0, 5),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
)
def test_any_t_shares_reconstruct_the_secret(t, extra, seed, data):
    rng = np.random.default_rng(seed)
    k = t + extra
    xs = sorted({int(x) for x in rng.choice(2**31 - 1, size=k, replace=False) + 1})
    secret = secret_bytes(rng)
    shares = shamir.split(secret, xs, t, SeededRandom(seed))
    assert set(shares) == set(xs)
    subset = data.draw(st.lists(st.sampled_from(xs), min_size=t, max_size=t, unique=True))
    assert shamir.reconstruct({x: shares[x] for x in subset}, t) == secret


def test_reconstruct_refuses_fewer_than_t_shares():
    shares = shamir.split(bytes(range(32)), [1, 2, 3, 4], 3, SeededRandom(1))
    with pytest.raises(ValueError):
        shamir.reconstruct({1: shares[1], 2: shares[2]}, 3)


@pytest.mark.parametrize("t", [2, 3, 5])
def test_t_minus_1_shares_are_consistent_with_any_secret(t):
    """For fixed t-1 shares, every candidate secret has a degree t-1 polynomial through them."""
    rng = np.random.default_rng(t)
    true_secret = secret_bytes(rng)
    xs = list(range(1, t + 2))
    shares = shamir.split(true_secret, xs, t, SeededRandom(t))
    seen = {x: shares[x] for x in xs[: t - 1]}  # what a coalition of t-1 holders knows
    other_x = xs[-1]
    for candidate in (true_secret, secret_bytes(rng), bytes(32), b"\xff" * 32):
        # The unique polynomial of degree <= t-1 through (0, candidate) and the seen shares.
        points = {0: int.from_bytes(candidate, "big"), **seen}
        assert all(interpolate_at(points, x) == y for x, y in seen.items())
        completion = {**seen, other_x: interpolate_at(points, other_x)}
        assert shamir.reconstruct(completion, t) == candidate
    # And the true polynomial is one of them: the real t-th share yields the true secret.
    assert shamir.reconstruct({**seen, other_x: shares[other_x]}, t) == true_secret


def corrupt(shares: dict[int, int], which, rng: np.random.Generator) -> dict[int, int]:
    bad = dict(shares)
    for x in which:
        bad[x] = (bad[x] + 1 + int(rng.integers(0, 2**62))) % PRIME
    return bad


@pytest.mark.parametrize("t,k", [(2, 4), (3, 7), (4, 10), (5, 9), (3, 12)])
def test_berlekamp_welch_corrects_up_to_half_the_redundancy(t, k):
    rng = np.random.default_rng(100 * t + k)
    secret = secret_bytes(rng)
    xs = sorted(int(x) for x in rng.choice(10_000, size=k, replace=False) + 1)
    shares = shamir.split(secret, xs, t, SeededRandom(k))
    for e in range(1, (k - t) // 2 + 1):
        wrong = frozenset(int(x) for x in rng.choice(xs, size=e, replace=False))
        decoded = shamir.berlekamp_welch(corrupt(shares, wrong, rng), t)
        assert decoded == (secret, wrong)


@pytest.mark.parametrize("t,k", [(2, 4), (3, 7), (4, 10), (5, 9), (3, 12)])
def test_berlekamp_welch_returns_none_beyond_its_capacity(t, k):
    rng = np.random.default_rng(7 * t + k)
    secret = secret_bytes(rng)
    xs = list(range(1, k + 1))
    shares = shamir.split(secret, xs, t, SeededRandom(t))
    e = (k - t) // 2 + 1
    for trial in range(3):
        wrong = [int(x) for x in rng.choice(xs, size=e, replace=False)]
        assert shamir.berlekamp_welch(corrupt(shares, wrong, rng), t) is None


def test_berlekamp_welch_without_redundancy_cannot_correct():
    shares = shamir.split(bytes(32), [1, 2, 3, 4], 3, SeededRandom(0))
    assert shamir.berlekamp_welch(shares, 3) is None  # k - t = 1: no error can be corrected


def test_reconstruct_verified_fast_path_reports_no_wrong_shares():
    secret = bytes(range(32))
    shares = shamir.split(secret, range(1, 6), 3, SeededRandom(3))
    assert shamir.reconstruct_verified(shares, 3, lambda s: s == secret) == (secret, frozenset(), True)


def test_reconstruct_verified_falls_back_to_decoding_when_a_used_share_is_wrong():
    rng = np.random.default_rng(5)
    secret = secret_bytes(rng)
    shares = shamir.split(secret, range(1, 8), 3, SeededRandom(5))
    bad = corrupt(shares, [1], rng)  # x=1 is among the t lowest, so the fast path fails
    assert shamir.reconstruct_verified(bad, 3, lambda s: s == secret) == (secret, frozenset({1}), False)


def test_reconstruct_verified_returns_none_when_nothing_verifies():
    shares = shamir.split(bytes(32), range(1, 8), 3, SeededRandom(6))
    assert shamir.reconstruct_verified(shares, 3, lambda s: False) is None


def test_share_byte_encoding_round_trips_and_rejects_non_field_elements():
    for y in (0, 1, PRIME - 1):
        encoded = shamir.share_to_bytes(y)
        assert len(encoded) == shamir.SHARE_BYTES
        assert shamir.share_from_bytes(encoded) == y
    with pytest.raises(ValueError):
        shamir.share_from_bytes(PRIME.to_bytes(shamir.SHARE_BYTES, "big"))


def test_split_refuses_secrets_of_the_wrong_length():
    with pytest.raises(ValueError):
        shamir.split(b"short", [1, 2, 3], 2, SeededRandom(0))


def test_consistency_check_passes_honest_shares_and_catches_one_wrong_share():
    rng = SeededRandom(11)
    sets = [shamir.split(bytes([i]) * 32, range(1, 9), 4, rng) for i in range(5)]
    assert shamir.consistent(sets, 4, b"seed")
    sets[3][7] = (sets[3][7] + 1) % shamir.PRIME
    assert not shamir.consistent(sets, 4, b"seed")
    assert shamir.off_polynomial(sets[3], 4) == frozenset({7})
