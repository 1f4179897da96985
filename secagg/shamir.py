"""t-of-n Shamir secret sharing of 32-byte secrets, chunked over GF(2**32 - 5), in numpy.

A secret (a self-mask seed or an X25519 private key) is cut into ``CHUNKS``
chunks of ``CHUNK_BITS`` bits; each chunk is shared with its own independent
random polynomial of degree t-1 over GF(p), p = 2**32 - 5 (the largest prime
below 2**32).  Any t-1 shares are uniform and independent of every chunk, so
the chunked scheme is exactly as private as one polynomial over a large
field.  A product of two elements fits in a uint64, so every loop over
holders, chunks and secrets is a numpy operation.  A share is the ``CHUNKS``
evaluations at the holder's id, 36 bytes (big-endian 32-bit words); in Python
it is the integer of those bytes.

Reconstruction is verified (``recover_group``): the secret must pass a check
(commitment or public key), and when a responder's share is off the
polynomial, error-correcting decoding over *all* shares (Berlekamp-Welch,
with the verified point (0, secret) added) decides who lied, and only then is
anyone named (protocol_spec.md 4.9).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterable, Sequence

import numpy as np

from .rng import RandomSource

PRIME = 2**32 - 5
SECRET_BYTES = 32
CHUNK_BITS = 29
CHUNKS = -(-8 * SECRET_BYTES // CHUNK_BITS)  # 9
SHARE_BYTES = 4 * CHUNKS  # 36
_P = np.uint64(PRIME)
_WORDS = f">{CHUNKS}I"
_TOP_BITS = 8 * SECRET_BYTES - CHUNK_BITS * (CHUNKS - 1)  # bits in the last chunk


# ---- field arithmetic on uint64 arrays of elements < p --------------------------


def _mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b) % _P


def _inv(a: np.ndarray) -> np.ndarray:
    """a**(p-2) elementwise (Fermat); a must be nonzero mod p."""
    result = np.ones_like(a)
    base = a % _P
    e = PRIME - 2
    while e:
        if e & 1:
            result = _mul(result, base)
        base = _mul(base, base)
        e >>= 1
    return result


def _prod_last_axis(a: np.ndarray) -> np.ndarray:
    """Product mod p along the last axis, by pairwise halving (log2 steps)."""
    while a.shape[-1] > 1:
        if a.shape[-1] % 2:
            a = np.concatenate([a, np.ones(a.shape[:-1] + (1,), np.uint64)], axis=-1)
        a = _mul(a[..., 0::2], a[..., 1::2])
    return a[..., 0]


def _denominators(xs: np.ndarray) -> np.ndarray:
    """prod_{l != i} (x_i - x_l) for distinct x's along the last axis (shape (..., m))."""
    diff = (xs[..., :, None] + _P - xs[..., None, :]) % _P
    diagonal = np.arange(xs.shape[-1])
    diff[..., diagonal, diagonal] = 1
    return _prod_last_axis(diff)


def _barycentric(xs: np.ndarray) -> np.ndarray:
    """w_i = 1 / prod_{l != i} (x_i - x_l) for distinct x's along the last axis (shape (..., m))."""
    return _inv(_denominators(xs))


def _signed_product(x: np.ndarray) -> np.ndarray:
    """(-1)**(t-1) * prod(x) along the last axis (of length t): prod_{l != j} (0 - x_l) is this / x_j."""
    total = _prod_last_axis(x)
    return (_P - total) % _P if x.shape[-1] % 2 == 0 else total


def _weights_at_zero_rows(x: np.ndarray) -> np.ndarray:
    """Lagrange coefficients at 0 for each row of x's (shape (..., t)): see ``_weights_at_zero``."""
    return _mul(_inv(_mul(_denominators(x), x)), _signed_product(x)[..., None])


@lru_cache(maxsize=256)
def _weights_at_zero(xs: tuple[int, ...]) -> np.ndarray:
    """Lagrange coefficients l_j with f(0) = sum_j l_j f(x_j) for deg f < len(xs).

    l_j = w_j * prod_{l != j} (0 - x_l) = (-1)**(t-1) * prod(x) / (x_j * prod_{l != j} (x_j - x_l)).
    Cached: the complete graph rebuilds every secret from the same x's.
    """
    return _weights_at_zero_rows(np.array(xs, dtype=np.uint64))


def _consistent(xs: np.ndarray, ys: np.ndarray, threshold: int) -> np.ndarray:
    """Whether the points (xs, ys[..., i]) lie on one polynomial of degree < t, per column.

    With w the barycentric weights, sum_i w_i y_i x_i**j is the coefficient of
    x**(m-1) in the interpolant times x**j, so it vanishes for all
    j < m - t iff the interpolant has degree < t.  ys has shape (m, ...).
    """
    m = xs.shape[0]
    if m <= threshold:
        return np.ones(ys.shape[1:], dtype=bool)
    w = _barycentric(xs).reshape((m,) + (1,) * (ys.ndim - 1))
    term = _mul(w, ys)
    xcol = xs.reshape(w.shape)
    ok = np.ones(ys.shape[1:], dtype=bool)
    for _ in range(m - threshold):
        ok &= (term.sum(axis=0) % _P) == 0  # m terms < 2**32 each: no overflow
        term = _mul(term, xcol)
    return ok


# ---- encoding -----------------------------------------------------------------


def _secret_chunks(secret: bytes) -> np.ndarray:
    value = int.from_bytes(secret, "big")
    mask = (1 << CHUNK_BITS) - 1
    return np.array([(value >> (CHUNK_BITS * i)) & mask for i in range(CHUNKS)], dtype=np.uint64)


def _chunks_secret(chunks: np.ndarray) -> bytes | None:
    """The secret whose chunks these are, or None if a chunk is out of range (inconsistent shares)."""
    values = [int(c) for c in chunks]
    if any(c >> CHUNK_BITS for c in values) or values[-1] >> _TOP_BITS:
        return None
    return sum(c << (CHUNK_BITS * i) for i, c in enumerate(values)).to_bytes(SECRET_BYTES, "big")


def share_to_bytes(y: int) -> bytes:
    return y.to_bytes(SHARE_BYTES, "big")


def share_from_bytes(data: bytes) -> int:
    """Decode a share; the caller has checked the length. Raises on a word >= p."""
    # A word >= p = 0xFFFFFFFB starts with bytes FF FF FF, so a share without that run is
    # valid and skips unpacking (a client decodes two shares per neighbour per session).
    if len(data) != SHARE_BYTES or (b"\xff\xff\xff" in data and max(struct.unpack(_WORDS, data)) >= PRIME):
        raise ValueError("share is not a vector of field elements")
    return int.from_bytes(data, "big")


def share_array(ys: Sequence[int]) -> np.ndarray:
    """Shares as a (len(ys), CHUNKS) uint64 array."""
    raw = b"".join(y.to_bytes(SHARE_BYTES, "big") for y in ys)
    return np.frombuffer(raw, dtype=">u4").reshape(len(ys), CHUNKS).astype(np.uint64)


def _share_ints(rows: np.ndarray) -> list[int]:
    raw = rows.astype(">u4").tobytes()
    return [int.from_bytes(raw[i : i + SHARE_BYTES], "big") for i in range(0, len(raw), SHARE_BYTES)]


# ---- sharing ----------------------------------------------------------------------


def _random_elements(rng: RandomSource, count: int) -> np.ndarray:
    """``count`` uniform elements of GF(p): 32-bit words, rejecting those >= p (no modulo bias)."""
    out = np.frombuffer(rng.bytes(4 * count), dtype="<u4").astype(np.uint64)
    bad = np.flatnonzero(out >= _P)
    while bad.size:
        fresh = np.frombuffer(rng.bytes(4 * bad.size), dtype="<u4").astype(np.uint64)
        out[bad] = fresh
        bad = bad[fresh >= _P]
    return out


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b mod p without overflow: b is split in 16-bit halves, so each sum of
    t products stays below t * 2**48 < 2**64 (t < 2**16)."""
    lo, hi = b & np.uint64(0xFFFF), b >> np.uint64(16)
    return ((a @ hi) % _P * np.uint64(1 << 16) + (a @ lo) % _P) % _P


def split_many(secrets: Sequence[bytes], xs: Iterable[int], threshold: int, rng: RandomSource) -> list[dict[int, int]]:
    """Shares ``{x: f(x)}`` of each secret: per chunk, a random degree ``threshold-1``
    polynomial with f(0) = chunk, evaluated at every x as one Vandermonde product."""
    if any(len(s) != SECRET_BYTES for s in secrets):
        raise ValueError(f"secret must be {SECRET_BYTES} bytes")
    holders = list(xs)
    if any(not 0 < x < PRIME for x in holders):
        raise ValueError("share x's must lie in [1, p)")
    if not 1 <= threshold < 2**16:
        raise ValueError("threshold must be in [1, 2**16)")
    width = len(secrets) * CHUNKS
    coefficients = np.vstack(
        [np.concatenate([_secret_chunks(s) for s in secrets])[None, :],
         _random_elements(rng, (threshold - 1) * width).reshape(threshold - 1, width)]
    )
    x = np.array(holders, dtype=np.uint64)
    vandermonde = np.ones((len(holders), threshold), dtype=np.uint64)
    for j in range(1, threshold):
        vandermonde[:, j] = _mul(vandermonde[:, j - 1], x)
    y = _matmul(vandermonde, coefficients)
    return [dict(zip(holders, _share_ints(y[:, i * CHUNKS : (i + 1) * CHUNKS]))) for i in range(len(secrets))]


# ---- error-correcting decoding --------------------------------------------------


def _solve(a: np.ndarray, b: np.ndarray) -> np.ndarray | None:
    """One solution of a x = b over GF(p) (free variables 0), or None: vectorised Gauss-Jordan."""
    m = np.concatenate([a % _P, (b % _P)[:, None]], axis=1)
    rows, cols = a.shape
    pivots: list[int] = []
    r = 0
    for c in range(cols):
        if r == rows:
            break
        nonzero = np.flatnonzero(m[r:, c])
        if nonzero.size == 0:
            continue
        pr = r + int(nonzero[0])
        if pr != r:
            m[[r, pr]] = m[[pr, r]]
        m[r] = _mul(m[r], np.uint64(pow(int(m[r, c]), PRIME - 2, PRIME)))
        factors = m[:, c].copy()
        factors[r] = 0
        m = (m + _P - _mul(factors[:, None], m[r][None, :])) % _P
        pivots.append(c)
        r += 1
    if np.any(m[r:, -1]):
        return None
    solution = np.zeros(cols, dtype=np.uint64)
    for i, c in enumerate(pivots):
        solution[c] = m[i, -1]
    return solution


def _evaluate(poly: np.ndarray, xs: np.ndarray) -> np.ndarray:
    y = np.zeros_like(xs)
    for c in poly[::-1]:
        y = (y * xs + c) % _P
    return y


def berlekamp_welch(xs: Sequence[int], ys: Sequence[int], threshold: int) -> frozenset[int] | None:
    """The x's of the wrong values among points (x_i, y_i) of a degree < t polynomial, or None.

    Finds E (monic, degree e = (m - t) // 2) and Q (degree < e + t) with
    Q(x_i) = y_i E(x_i) for every point; then f = Q / E, and the wrong points
    are those off f.  Decodes whenever at most e values are wrong; returns None
    when no polynomial of degree < t is within e of the points.  One vector of
    field elements (callers combine chunks first).  O(m^3) vectorised.
    """
    x = np.array(xs, dtype=np.uint64)
    y = np.array(ys, dtype=np.uint64) % _P
    m = len(x)
    errors = (m - threshold) // 2
    if errors < 0:
        return None
    powers = np.ones((m, errors + threshold + 1), dtype=np.uint64)
    for j in range(1, powers.shape[1]):
        powers[:, j] = _mul(powers[:, j - 1], x)
    a = np.concatenate([powers[:, : errors + threshold], (_P - _mul(y[:, None], powers[:, :errors])) % _P], axis=1)
    solution = _solve(a, _mul(y, powers[:, errors]))
    if solution is None:
        return None
    q = [int(c) for c in solution[: errors + threshold]]
    e = [int(c) for c in solution[errors + threshold :]] + [1]
    # f = Q / E by long division; exact iff the remainder is zero.
    quotient = [0] * max(len(q) - len(e) + 1, 1)
    for i in range(len(q) - len(e), -1, -1):
        coef = q[i + len(e) - 1]
        quotient[i] = coef
        for j, d in enumerate(e):
            q[i + j] = (q[i + j] - coef * d) % PRIME
    if any(q) or any(quotient[threshold:]):
        return None
    wrong = np.flatnonzero(_evaluate(np.array(quotient, dtype=np.uint64), x) != y)
    if wrong.size > errors:
        return None
    return frozenset(int(xs[i]) for i in wrong)


# ---- verified reconstruction of a group of secrets shared among the same holders --


@dataclass(frozen=True)
class Recovery:
    secrets: list[bytes | None]  # per secret: the verified secret, or None (cannot be decoded)
    liars: frozenset[int]  # responders proven to have sent a wrong share
    suspects: frozenset[int]  # responders excluded from the fast path (liars and unproven suspects)
    unattributed: bool  # some share was wrong but the liars could not be told apart from honest ones


def _coefficients(seed: bytes, count: int) -> np.ndarray:
    """The ``count`` Fiat-Shamir coefficients of ``_combine`` for ``seed``."""
    stream = hashlib.shake_256(b"secagg/v2/shamir-combine|" + seed).digest(8 * count)
    return np.frombuffer(stream, dtype="<u8") % _P


def _combine(rows: np.ndarray, seed: bytes) -> np.ndarray:
    """Random linear combination over all axes but the first (Fiat-Shamir from ``seed``): shape (m,).

    A wrong value anywhere makes the combination leave the polynomial except
    with probability 1/p over the coefficients, which hash every share, so no
    responder can choose its error to cancel.
    """
    flat = rows.reshape(rows.shape[0], -1)
    rho = _coefficients(seed, flat.shape[1])
    return _mul(flat, rho[None, :]).sum(axis=1) % _P  # fewer than 2**32 terms < 2**32: no overflow


def _naming_seed(xs: Sequence[int], shares: np.ndarray) -> bytes:
    """The Fiat-Shamir seed of a group's combinations: a hash of every x and share."""
    return hashlib.sha256(np.array(xs, dtype=">u4").tobytes() + shares.astype(">u4").tobytes()).digest()


def _range_seed(seed: bytes, lo: int, hi: int) -> bytes:
    """The seed of the naming check's combination of secrets lo..hi-1."""
    return seed + lo.to_bytes(4, "big") + hi.to_bytes(4, "big")


def _first_inconsistent(points: np.ndarray, rows: np.ndarray, threshold: int, seed: bytes) -> int | None:
    """Index of a secret whose points (points, rows[b]) are off every degree < t polynomial, or None.

    rows: (secrets, len(points), CHUNKS).  One combined check, then bisection:
    O(log secrets) checks instead of one per secret.
    """

    def clean(lo: int, hi: int) -> bool:
        combined = _combine(np.moveaxis(rows[lo:hi], 1, 0), _range_seed(seed, lo, hi))
        return bool(_consistent(points, combined[:, None], threshold)[0])

    lo, hi = 0, rows.shape[0]
    if clean(lo, hi):
        return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if clean(lo, mid):
            lo = mid
        else:
            hi = mid
    return lo


def _interpolate(xs: tuple[int, ...], at: Sequence[int]) -> np.ndarray:
    """Matrix L (len(at), len(xs)) with f(at_k) = sum_j L[k, j] f(x_j) for deg f < len(xs)."""
    x = np.array(xs, dtype=np.uint64)
    w = _barycentric(x)
    rows = []
    for z in at:
        diff = (np.uint64(z) + _P - x) % _P  # z is not among xs
        full = int(_prod_last_axis(diff[None, :])[0])
        rows.append(_mul(_mul(w, _inv(diff)), np.uint64(full)))
    return np.array(rows, dtype=np.uint64).reshape(len(at), len(xs))


def recover_group(
    xs: Sequence[int],
    shares: np.ndarray,
    threshold: int,
    verify: Sequence[Callable[[bytes], bool]],
    *,
    suspects: frozenset[int] = frozenset(),
    max_liars: int,
) -> Recovery:
    """Rebuild and verify several secrets all shared among the responders ``xs``.

    ``shares`` has shape (secrets, len(xs), CHUNKS); ``verify[b]`` checks secret
    b; ``max_liars`` is the most responders assumed to lie (the collusion bound).
    ``suspects`` (responders caught earlier in the session) are left out of the
    fast path.  Steps:

    1. Fast path: interpolate at 0 from the t lowest unsuspected responders and
       verify.  A secret that fails is decoded (Berlekamp-Welch over the
       unsuspected shares) and whoever decoding puts off the polynomial becomes a
       suspect, so the secrets still to do take the fast path again: one
       decoding per liar, not one per secret (audit 14.2).  A secret that
       cannot be decoded stops the group (the caller aborts).
    2. Naming (audit 14.1): every unsuspected share plus the verified point
       (0, secret) must lie on one polynomial of degree < t; a secret that fails
       (found by bisection) is decoded against all of those points and its
       outliers become suspects, until the rest is consistent.  That consistent
       set A is the true polynomial when |A| > max_liars + t - 1, because two
       distinct polynomials of degree < t share at most t - 1 points; only then
       are the suspects whose shares are off it named.  Otherwise nobody is
       named and ``unattributed`` is set.  An honest responder's share is on the
       true polynomial, so it is never named while at most ``max_liars`` lie.
    """
    x_all = list(xs)
    count = shares.shape[0]
    out: list[bytes | None] = [None] * count
    suspects = frozenset(suspects)
    seed = _naming_seed(x_all, shares)
    everyone = np.arange(len(x_all))

    def trusted() -> np.ndarray:
        return np.array([i for i, x in enumerate(x_all) if x not in suspects], dtype=np.int64)

    def from_points(b: int, idx: np.ndarray) -> bytes | None:
        base = tuple(int(i) for i in idx[:threshold])
        weights = _weights_at_zero(tuple(x_all[i] for i in base))
        secret = _chunks_secret(_mul(weights[:, None], shares[b][list(base)]).sum(axis=0) % _P)
        return secret if secret is not None and verify[b](secret) else None

    # 1. Fast path, falling back to decoding; suspects carry over to the next secrets.
    pending = list(range(count))
    while pending:
        idx = trusted()
        if idx.size < threshold:
            idx = everyone
        base = idx[:threshold]
        weights = _weights_at_zero(tuple(x_all[i] for i in base))
        chunks = _mul(weights[None, :, None], shares[pending][:, base, :]).sum(axis=1) % _P
        failed = None
        for j, b in enumerate(pending):
            secret = _chunks_secret(chunks[j])
            if secret is not None and verify[b](secret):
                out[b] = secret
            else:
                failed = j
                break
        if failed is None:
            break
        b, pending = pending[failed], pending[failed + 1 :]
        for pool in (idx, everyone) if idx.size < len(x_all) else (everyone,):
            column = _combine(shares[b][pool], seed + b.to_bytes(4, "big"))
            wrong = berlekamp_welch([x_all[i] for i in pool], [int(v) for v in column], threshold)
            if wrong is not None:
                out[b] = from_points(b, np.array([i for i in pool if x_all[i] not in wrong], dtype=np.int64))
                if out[b] is not None:
                    suspects |= wrong
                    break
        if out[b] is None:
            return Recovery(secrets=out, liars=frozenset(), suspects=suspects, unattributed=True)

    # 2. Naming against all unsuspected shares and the verified secrets.
    unattributed = False
    liars: set[int] = set()
    consistent = False
    while True:
        idx = trusted()
        if idx.size < threshold:
            break
        points = np.array([0] + [x_all[i] for i in idx], dtype=np.uint64)
        rows = np.concatenate(
            [np.stack([_secret_chunks(s) for s in out])[:, None, :], shares[:, idx, :]], axis=1  # type: ignore[arg-type]
        )
        bad = _first_inconsistent(points, rows, threshold, seed)
        if bad is None:
            consistent = True
            break
        column = _combine(rows[bad], seed + b"name" + bad.to_bytes(4, "big"))
        wrong = berlekamp_welch([int(v) for v in points], [int(v) for v in column], threshold)
        if not wrong or 0 in wrong:
            break
        suspects |= wrong
    present = sorted(x_all.index(x) for x in suspects if x in x_all)
    if present:
        if consistent and idx.size + 1 > max_liars + threshold - 1:
            base = tuple(x_all[i] for i in idx[:threshold])
            matrix = _interpolate(base, [x_all[i] for i in present])  # (suspects, t)
            expected = _mul(matrix[None, :, :, None], shares[:, None, idx[:threshold], :]).sum(axis=2) % _P
            off = np.any(expected.astype(np.uint64) != shares[:, present, :], axis=(0, 2))
            liars = {x_all[i] for i, o in zip(present, off) if o}
        else:
            unattributed = True
    elif not consistent:
        unattributed = True
    return Recovery(secrets=out, liars=frozenset(liars), suspects=suspects, unattributed=unattributed)


# ---- many groups at once ------------------------------------------------------------


def _consistent_rows(points: np.ndarray, weights: np.ndarray, values: np.ndarray, threshold: int) -> np.ndarray:
    """``_consistent`` for one column per row: points, their barycentric weights and values of shape
    (groups, m); bool (groups,)."""
    m = points.shape[1]
    term = _mul(weights, values)
    ok = np.ones(points.shape[0], dtype=bool)
    for _ in range(max(m - threshold, 0)):
        ok &= (term.sum(axis=1) % _P) == 0
        term = _mul(term, points)
    return ok


def _settled_at_once(
    groups: Sequence[tuple[Sequence[int], np.ndarray, Sequence[Callable[[bytes], bool]]]], threshold: int
) -> list[list[bytes] | None]:
    """Per group, its secrets if recover_group (given no suspect among its holders) would return them
    with nobody suspected, else None.

    That is the honest case: every secret interpolated from the t lowest holders verifies, and the
    first naming check (the same Fiat-Shamir combination of the same points) passes.  Groups with
    as many holders and secrets are computed together, as arrays of shape (groups, ...): on a
    sparse graph every client's holders differ, and one group at a time cost each group more
    numpy calls than it has holders.
    """
    settled: list[list[bytes] | None] = [None] * len(groups)
    shapes: dict[tuple[int, ...], list[int]] = {}
    for g, (xs, shares, _) in enumerate(groups):
        if len(xs) >= threshold:
            shapes.setdefault(shares.shape, []).append(g)
    for (count, m, chunks_per_share), members in shapes.items():
        x = np.array([list(groups[g][0]) for g in members], dtype=np.uint64)  # (G, m)
        shares = np.stack([groups[g][1] for g in members])  # (G, secrets, m, CHUNKS)
        base = x[:, :threshold]
        points = np.concatenate([np.zeros((len(members), 1), dtype=np.uint64), x], axis=1)
        # One inversion for the weights at 0 (_weights_at_zero_rows) and the check's barycentric weights.
        inverses = _inv(np.concatenate([_mul(_denominators(base), base), _denominators(points)], axis=1))
        weights = _mul(inverses[:, :threshold], _signed_product(base)[:, None])  # (G, t)
        chunks = _mul(weights[:, None, :, None], shares[:, :, :threshold, :]).sum(axis=2) % _P  # (G, secrets, CHUNKS)
        # recover_group's first naming check: points 0 (the secrets) and the holders, combined over
        # secrets and chunks with the coefficients of _combine for that group's seed.
        rows = np.concatenate([chunks[:, :, None, :], shares], axis=2)  # (G, secrets, m + 1, CHUNKS)
        flat = np.moveaxis(rows, 2, 1).reshape(len(members), m + 1, count * chunks_per_share)
        rho = np.stack([
            _coefficients(_range_seed(_naming_seed(groups[g][0], groups[g][1]), 0, count), count * chunks_per_share)
            for g in members
        ])
        combined = _mul(flat, rho[:, None, :]).sum(axis=2) % _P  # (G, m + 1)
        ok = _consistent_rows(points, inverses[:, threshold:], combined, threshold)
        for row, g in enumerate(members):
            if not ok[row]:
                continue
            secrets = [_chunks_secret(c) for c in chunks[row]]
            if all(s is not None and check(s) for s, check in zip(secrets, groups[g][2])):
                settled[g] = secrets  # type: ignore[assignment]
    return settled


def recover_groups(
    groups: Sequence[tuple[Sequence[int], np.ndarray, Sequence[Callable[[bytes], bool]]]],
    threshold: int,
    *,
    suspects: frozenset[int] = frozenset(),
    max_liars: int,
) -> list[Recovery]:
    """``recover_group`` on each (xs, shares, verify) group in turn, the suspects of each carried to
    the next; stops after a group with a secret that cannot be decoded (the caller aborts there).

    Exactly the results of those calls: a group settled by ``_settled_at_once`` whose holders
    include no suspect gets the Recovery recover_group would return; any other group takes
    recover_group itself.
    """
    settled = _settled_at_once(groups, threshold)
    out: list[Recovery] = []
    for (xs, shares, verify), secrets in zip(groups, settled):
        if secrets is not None and suspects.isdisjoint(xs):
            got = Recovery(secrets=list(secrets), liars=frozenset(), suspects=suspects, unattributed=False)
        else:
            got = recover_group(xs, shares, threshold, verify, suspects=suspects, max_liars=max_liars)
        out.append(got)
        suspects = got.suspects
        if any(s is None for s in got.secrets):
            break
    return out
