"""Chunked Shamir sharing over GF(2**32 - 5), Berlekamp-Welch decoding and verified group recovery."""

from __future__ import annotations

import numpy as np
import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg import SeededRandom
from secagg import shamir
from secagg.shamir import CHUNKS, PRIME


def secret_bytes(rng: np.random.Generator) -> bytes:
    return rng.bytes(shamir.SECRET_BYTES)


def words(y: int) -> list[int]:
    return [int(w) for w in shamir.share_array([y])[0]]


def from_words(ws: list[int]) -> int:
    return int.from_bytes(b"".join(w.to_bytes(4, "big") for w in ws), "big")


def shifted(y: int, delta: int, chunk: int | None = None) -> int:
    """The share y with ``delta`` added (mod p) to one chunk, or to every chunk."""
    ws = words(y)
    for c in range(CHUNKS) if chunk is None else [chunk]:
        ws[c] = (ws[c] + delta) % PRIME
    return from_words(ws)


def split(secret: bytes, xs, t: int, rng) -> dict[int, int]:
    return shamir.split_many([secret], xs, t, rng)[0]


def reconstruct(shares: dict[int, int], t: int) -> bytes:
    """Unverified: the secret from the t lowest x's (recover_group with a check that accepts anything)."""
    xs = sorted(shares)[:t]
    got = shamir.recover_group(xs, shamir.share_array([shares[x] for x in xs])[None], t, [lambda s: True], max_liars=0)
    if got.secrets[0] is None:
        raise ValueError("inconsistent")
    return got.secrets[0]


def verified(shares: dict[int, int], t: int, verify, *, max_liars: int):
    """(secret, proven liars) or None, for one secret."""
    xs = sorted(shares)
    got = shamir.recover_group(xs, shamir.share_array([shares[x] for x in xs])[None], t, [verify], max_liars=max_liars)
    return None if got.secrets[0] is None else (got.secrets[0], got.liars)


def lagrange_at_zero(xs: list[int]) -> list[int]:
    """Independent Python-integer Lagrange coefficients at 0 over GF(PRIME)."""
    out = []
    for j, xj in enumerate(xs):
        num = den = 1
        for m, xm in enumerate(xs):
            if m != j:
                num = num * (-xm) % PRIME
                den = den * (xj - xm) % PRIME
        out.append(num * pow(den, -1, PRIME) % PRIME)
    return out


def test_field_prime_is_the_largest_prime_below_2_pow_32():
    assert sympy.isprime(PRIME) and sympy.nextprime(PRIME) > 2**32
    assert CHUNKS * shamir.CHUNK_BITS >= 8 * shamir.SECRET_BYTES and shamir.CHUNK_BITS < 32


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(t=st.integers(1, 9), extra=st.integers(0, 6), seed=st.integers(0, 2**32 - 1), data=st.data())
def test_any_t_shares_reconstruct_the_secret(t, extra, seed, data):
    rng = np.random.default_rng(seed)
    xs = sorted({int(x) for x in rng.choice(2**31 - 1, size=t + extra, replace=False) + 1})
    secret = secret_bytes(rng)
    shares = split(secret, xs, t, SeededRandom(seed))
    assert set(shares) == set(xs)
    assert all(shamir.share_from_bytes(shamir.share_to_bytes(y)) == y for y in shares.values())
    subset = data.draw(st.lists(st.sampled_from(xs), min_size=t, max_size=t, unique=True))
    assert reconstruct({x: shares[x] for x in subset}, t) == secret


@settings(max_examples=20, deadline=None, derandomize=True, database=None)
@given(t=st.integers(2, 8), seed=st.integers(0, 2**32 - 1))
def test_every_chunk_is_a_degree_t_minus_1_polynomial_through_the_secret_chunk(t, seed):
    """Checked with independent big-integer Lagrange arithmetic, chunk by chunk."""
    rng = np.random.default_rng(seed)
    secret = secret_bytes(rng)
    xs = list(range(1, t + 3))
    shares = split(secret, xs, t, SeededRandom(seed))
    value = int.from_bytes(secret, "big")
    expected = [(value >> (shamir.CHUNK_BITS * c)) & ((1 << shamir.CHUNK_BITS) - 1) for c in range(CHUNKS)]
    for subset in (xs[:t], xs[-t:]):
        coeffs = lagrange_at_zero(subset)
        got = [sum(l * words(shares[x])[c] for l, x in zip(coeffs, subset)) % PRIME for c in range(CHUNKS)]
        assert got == expected


def test_split_many_shares_each_secret_independently():
    secrets = [bytes(range(32)), b"\xff" * 32, bytes(32)]
    all_shares = shamir.split_many(secrets, range(1, 8), 4, SeededRandom(2))
    assert [reconstruct(s, 4) for s in all_shares] == secrets


@pytest.mark.parametrize("t", [2, 3, 5])
def test_t_minus_1_shares_are_uniform_whatever_the_secret(t):
    """For fixed t-1 shares, every candidate secret completes to a valid sharing, chunk by chunk
    (perfect privacy of the chunked scheme)."""
    rng = np.random.default_rng(t)
    true_secret = secret_bytes(rng)
    xs = list(range(1, t + 1))
    shares = split(true_secret, xs, t, SeededRandom(t))
    seen = xs[: t - 1]
    for candidate in (true_secret, secret_bytes(rng), bytes(32), b"\xff" * 32):
        # the last share that makes ``candidate`` the secret, chunk by chunk
        coeffs = lagrange_at_zero(xs)
        cand = int.from_bytes(candidate, "big")
        target = [(cand >> (shamir.CHUNK_BITS * c)) & ((1 << shamir.CHUNK_BITS) - 1) for c in range(CHUNKS)]
        last = [
            (target[c] - sum(l * words(shares[x])[c] for l, x in zip(coeffs, seen))) * pow(coeffs[-1], -1, PRIME) % PRIME
            for c in range(CHUNKS)
        ]
        completion = {**{x: shares[x] for x in seen}, xs[-1]: from_words(last)}
        assert reconstruct(completion, t) == candidate


def test_random_coefficients_reject_words_above_the_prime():
    class Words:  # first 4-byte word is 0xffffffff >= p, must be redrawn
        def __init__(self):
            self.calls = 0

        def bytes(self, n):
            self.calls += 1
            return b"\xff" * 4 + bytes(n - 4) if self.calls == 1 else b"\x01" * n

    values = shamir._random_elements(Words(), 3)
    assert values.tolist() == [0x01010101, 0, 0]


@pytest.mark.parametrize("t,k", [(2, 4), (3, 7), (4, 10), (5, 9), (3, 12)])
def test_berlekamp_welch_finds_up_to_half_the_redundancy(t, k):
    rng = np.random.default_rng(100 * t + k)
    xs = sorted(int(x) for x in rng.choice(10_000, size=k, replace=False) + 1)
    poly = [int(c) for c in rng.integers(0, PRIME, t)]
    ys = [sum(c * pow(x, j, PRIME) for j, c in enumerate(poly)) % PRIME for x in xs]
    for e in range(0, (k - t) // 2 + 1):
        wrong = frozenset(int(x) for x in rng.choice(xs, size=e, replace=False))
        bad = [(y + 1 + int(rng.integers(0, PRIME - 1))) % PRIME if x in wrong else y for x, y in zip(xs, ys)]
        assert shamir.berlekamp_welch(xs, bad, t) == wrong


@pytest.mark.parametrize("t,k", [(2, 4), (3, 7), (4, 10), (5, 9), (3, 12)])
def test_berlekamp_welch_returns_none_beyond_its_capacity(t, k):
    rng = np.random.default_rng(7 * t + k)
    xs = list(range(1, k + 1))
    ys = [int(v) for v in rng.integers(0, PRIME, k)]  # random points: far from every low-degree polynomial
    assert shamir.berlekamp_welch(xs, ys, t) is None


def test_reconstruct_verified_reports_no_liars_for_honest_shares():
    secret = bytes(range(32))
    shares = split(secret, range(1, 6), 3, SeededRandom(3))
    assert verified(shares, 3, lambda s: s == secret, max_liars=1) == (secret, frozenset())


def test_a_wrong_share_on_the_fast_path_is_decoded_and_its_sender_named():
    secret = secret_bytes(np.random.default_rng(5))
    shares = split(secret, range(1, 8), 3, SeededRandom(5))
    shares[1] = shifted(shares[1], 7, chunk=4)  # x=1 is among the t lowest
    assert verified(shares, 3, lambda s: s == secret, max_liars=2) == (secret, frozenset({1}))


def test_reconstruct_verified_returns_none_when_nothing_verifies():
    shares = split(bytes(32), range(1, 8), 3, SeededRandom(6))
    assert verified(shares, 3, lambda s: False, max_liars=2) is None


def test_colluders_who_keep_f0_right_are_named_and_honest_responders_are_not():
    """Audit 14.1: ids 1 and 2 shift their shares by d1, d2 with l1 d1 + l2 d2 = 0 for the Lagrange
    coefficients of the t lowest ids, so the fast path still rebuilds the right secret; the old
    check then trusted the polynomial through ids 1..t and named the honest higher ids."""
    t, xs = 4, list(range(1, 11))
    secret = bytes(range(1, 33))
    shares = split(secret, xs, t, SeededRandom(9))
    l = lagrange_at_zero(xs[:t])
    d1 = 12345
    d2 = (-l[0] * d1 * pow(l[1], -1, PRIME)) % PRIME
    bad = dict(shares)
    bad[1], bad[2] = shifted(shares[1], d1), shifted(shares[2], d2)
    assert reconstruct(bad, t) == secret  # the fast path is fooled...
    got = verified(bad, t, lambda s: s == secret, max_liars=t - 1)
    assert got == (secret, frozenset({1, 2}))  # ...but only the two colluders are named


def test_nobody_is_named_when_the_liars_cannot_be_told_apart():
    """With t - 1 possible liars and few extra shares the decoded polynomial proves nothing."""
    t, xs = 4, list(range(1, 7))
    secret = bytes(range(32))
    shares = split(secret, xs, t, SeededRandom(4))
    shares[6] = shifted(shares[6], 1, chunk=0)
    shares_arr = shamir.share_array([shares[x] for x in xs])[None]
    got = shamir.recover_group(xs, shares_arr, t, [lambda s: s == secret], max_liars=t - 1)
    assert got.secrets == [secret] and got.liars == frozenset() and got.unattributed
    # with the assumption of one liar at most, the same shares prove that 6 lied
    got = shamir.recover_group(xs, shares_arr, t, [lambda s: s == secret], max_liars=1)
    assert got.liars == frozenset({6}) and not got.unattributed


def test_one_liar_costs_one_decoding_for_all_secrets_of_a_group(monkeypatch):
    """Audit 14.2: once caught, a liar is left out of the fast path of every later secret."""
    calls = []
    real = shamir.berlekamp_welch
    monkeypatch.setattr(shamir, "berlekamp_welch", lambda *a: calls.append(1) or real(*a))
    t, xs, count = 5, list(range(1, 16)), 12
    rng = SeededRandom(8)
    secrets = [rng.bytes(32) for _ in range(count)]
    rows = []
    for s in secrets:
        sh = split(s, xs, t, rng)
        sh[1] = shifted(sh[1], 3)  # the lowest id lies about every secret
        rows.append(shamir.share_array([sh[x] for x in xs]))
    got = shamir.recover_group(xs, np.stack(rows), t, [lambda z, s=s: z == s for s in secrets], max_liars=4)
    assert got.secrets == secrets and got.liars == frozenset({1})
    assert len(calls) == 1
    # a later group starts with the liar already suspected: no decoding at all
    calls.clear()
    again = shamir.recover_group(xs, np.stack(rows), t, [lambda z, s=s: z == s for s in secrets],
                                 suspects=got.suspects, max_liars=4)
    assert again.secrets == secrets and again.liars == frozenset({1}) and calls == []


def test_share_byte_encoding_round_trips_and_rejects_words_at_or_above_p():
    for y in (0, 1, from_words([PRIME - 1] * CHUNKS)):
        encoded = shamir.share_to_bytes(y)
        assert len(encoded) == shamir.SHARE_BYTES
        assert shamir.share_from_bytes(encoded) == y
    for bad_word in range(CHUNKS):
        ws = [0] * CHUNKS
        ws[bad_word] = PRIME
        with pytest.raises(ValueError):
            shamir.share_from_bytes(from_words(ws).to_bytes(shamir.SHARE_BYTES, "big"))


def test_split_refuses_secrets_of_the_wrong_length_and_x_zero():
    with pytest.raises(ValueError):
        split(b"short", [1, 2, 3], 2, SeededRandom(0))
    with pytest.raises(ValueError):
        split(bytes(32), [0, 1, 2], 2, SeededRandom(0))


def sequential_recoveries(groups, t, *, suspects, max_liars):
    """The straightforward path recover_groups must match: recover_group per group, suspects carried."""
    out = []
    for xs, shares, verify in groups:
        got = shamir.recover_group(xs, shares, t, verify, suspects=suspects, max_liars=max_liars)
        out.append(got)
        suspects = got.suspects
        if any(s is None for s in got.secrets):
            break
    return out


@settings(max_examples=60, deadline=None)
@given(
    t=st.integers(2, 6),
    extra=st.lists(st.integers(0, 5), min_size=1, max_size=6),  # holders beyond t, per group
    members=st.integers(1, 3),
    liars=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 12), st.integers(0, CHUNKS)), max_size=4),
    suspect=st.sets(st.integers(1, 14), max_size=2),
    max_liars=st.integers(0, 3),
    seed=st.integers(0, 2**16),
)
def test_recover_groups_gives_the_results_of_recover_group_one_group_at_a_time(
    t, extra, members, liars, suspect, max_liars, seed
):
    """Groups of several sizes (so several batches), honest or with lying holders (a chunk or every
    chunk off), earlier suspects: the batched path must not change a single field of any Recovery."""
    rng = SeededRandom(seed)
    pick = np.random.default_rng(seed)
    groups, truth = [], []
    for g, more in enumerate(extra):
        xs = sorted(int(x) for x in pick.choice(np.arange(1, 15), size=t + more, replace=False))
        secrets = [rng.bytes(32) for _ in range(members)]
        tables = [split(s, xs, t, rng) for s in secrets]
        for group, holder, chunk in liars:
            if group == g and holder < len(xs):
                for table in tables:
                    table[xs[holder]] = shifted(table[xs[holder]], 1 + holder, None if chunk == CHUNKS else chunk)
        shares = np.stack([shamir.share_array([table[x] for x in xs]) for table in tables])
        groups.append((xs, shares, [lambda z, s=s: z == s for s in secrets]))
        truth.append(secrets)
    suspects = frozenset(suspect)
    want = sequential_recoveries(groups, t, suspects=suspects, max_liars=max_liars)
    got = shamir.recover_groups(groups, t, suspects=suspects, max_liars=max_liars)
    assert got == want
    if not liars and not suspects:  # the honest case is the batched one: every secret back
        assert [r.secrets for r in got] == truth


def test_recover_groups_settles_honest_groups_without_recover_group(monkeypatch):
    """The batched path is the one taken when nobody lies (so the property test above exercises it)."""
    rng = SeededRandom(5)
    groups, secrets = [], []
    for xs in ([1, 2, 3, 4, 5], [2, 3, 4, 6, 7], [1, 3, 5, 7, 8, 9], [4, 5, 6]):
        s = rng.bytes(32)
        table = split(s, xs, 3, rng)
        groups.append((xs, shamir.share_array([table[x] for x in xs])[None], [lambda z, s=s: z == s]))
        secrets.append([s])
    monkeypatch.setattr(shamir, "recover_group", lambda *a, **k: pytest.fail("took the one-group path"))
    got = shamir.recover_groups(groups, 3, suspects=frozenset({10}), max_liars=1)
    assert [r.secrets for r in got] == secrets
    assert all(r.liars == frozenset() and r.suspects == {10} and not r.unattributed for r in got)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.integers(0, 2**32 - 1), st.integers(PRIME - 3, 2**32 - 1),
                          st.sampled_from([0xFFFFFF00, 0x00FFFFFF, 0xFFFF0000, 0x0000FFFF])),
                min_size=CHUNKS, max_size=CHUNKS))
def test_share_decoding_accepts_exactly_the_vectors_of_field_elements(ws):
    """share_from_bytes skips unpacking when no FF FF FF run occurs; it must still accept a share iff
    every word is below p (runs of FF across a word boundary included)."""
    data = b"".join(w.to_bytes(4, "big") for w in ws)
    if all(w < PRIME for w in ws):
        assert shamir.share_from_bytes(data) == int.from_bytes(data, "big")
    else:
        with pytest.raises(ValueError):
            shamir.share_from_bytes(data)
