"""t-of-n Shamir secret sharing over the prime field GF(2**256 + 297).

The secrets are 32-byte strings (a self-mask seed and an X25519 private key),
so the field must exceed 2**256; 2**256 + 297 is the smallest prime that does
(checked in the tests).  Share ``x`` coordinates are the client ids, which are
non-zero and below the prime.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Callable, Iterable, Mapping

from .rng import RandomSource, random_below

PRIME = 2**256 + 297
SECRET_BYTES = 32
SHARE_BYTES = 33  # a field element, big-endian


def split(secret: bytes, xs: Iterable[int], threshold: int, rng: RandomSource) -> dict[int, int]:
    """Shares ``{x: f(x)}`` of a random degree ``threshold-1`` polynomial with f(0) = secret."""
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"secret must be {SECRET_BYTES} bytes")
    coefficients = [int.from_bytes(secret, "big")]
    coefficients += [random_below(rng, PRIME) for _ in range(threshold - 1)]
    shares = {}
    for x in xs:
        y = 0
        for c in reversed(coefficients):  # Horner
            y = (y * x + c) % PRIME
        shares[x] = y
    return shares


@lru_cache(maxsize=64)
def lagrange_at_zero(xs: tuple[int, ...]) -> tuple[int, ...]:
    """Coefficients l_j with f(0) = sum_j l_j f(x_j) for any f of degree < len(xs).

    Cached: the server reconstructs every secret of a session from the same
    responders, so it computes these once per session.
    """
    coefficients = []
    for j, xj in enumerate(xs):
        num, den = 1, 1
        for m, xm in enumerate(xs):
            if m != j:
                num = num * xm % PRIME
                den = den * (xm - xj) % PRIME
        coefficients.append(num * pow(den, -1, PRIME) % PRIME)
    return tuple(coefficients)


def reconstruct(shares: Mapping[int, int], threshold: int) -> bytes:
    """The secret from any ``threshold`` shares (the lowest x's are used)."""
    if len(shares) < threshold:
        raise ValueError(f"need {threshold} shares, have {len(shares)}")
    xs = tuple(sorted(shares)[:threshold])
    secret = sum(l * shares[x] for l, x in zip(lagrange_at_zero(xs), xs)) % PRIME
    if secret >= 2 ** (8 * SECRET_BYTES):
        raise ValueError("shares are inconsistent: reconstructed value is not a 32-byte secret")
    return secret.to_bytes(SECRET_BYTES, "big")


def share_to_bytes(y: int) -> bytes:
    return y.to_bytes(SHARE_BYTES, "big")


def share_from_bytes(data: bytes) -> int:
    """Decode a share; the caller has checked the length. Raises on y >= PRIME."""
    y = int.from_bytes(data, "big")
    if y >= PRIME:
        raise ValueError("share is not a field element")
    return y


def _solve(rows: list[list[int]], rhs: list[int]) -> list[int] | None:
    """One solution of a linear system over GF(PRIME) (free variables 0), or None."""
    n_cols = len(rows[0])
    m = [row[:] + [b] for row, b in zip(rows, rhs)]
    pivots: list[int] = []
    r = 0
    for c in range(n_cols):
        pivot = next((i for i in range(r, len(m)) if m[i][c]), None)
        if pivot is None:
            continue
        m[r], m[pivot] = m[pivot], m[r]
        inv = pow(m[r][c], -1, PRIME)
        m[r] = [v * inv % PRIME for v in m[r]]
        for i in range(len(m)):
            if i != r and m[i][c]:
                f = m[i][c]
                m[i] = [(a - f * b) % PRIME for a, b in zip(m[i], m[r])]
        pivots.append(c)
        r += 1
    if any(row[-1] for row in m[r:]):
        return None
    solution = [0] * n_cols
    for i, c in enumerate(pivots):
        solution[c] = m[i][-1]
    return solution


def _poly_divide(num: list[int], den: list[int]) -> tuple[list[int], bool]:
    """Quotient of num / den (coefficients low to high) and whether it divides exactly."""
    num = num[:]
    quotient = [0] * max(len(num) - len(den) + 1, 1)
    inv_lead = pow(den[-1], -1, PRIME)
    for i in range(len(num) - len(den), -1, -1):
        coef = num[i + len(den) - 1] * inv_lead % PRIME
        quotient[i] = coef
        for j, d in enumerate(den):
            num[i + j] = (num[i + j] - coef * d) % PRIME
    return quotient, not any(num)


def _evaluate(poly: list[int], x: int) -> int:
    y = 0
    for c in reversed(poly):
        y = (y * x + c) % PRIME
    return y


def berlekamp_welch(shares: Mapping[int, int], threshold: int) -> tuple[bytes, frozenset[int]] | None:
    """Decode despite up to (k - t) // 2 wrong shares; return (secret, wrong x's) or None.

    Finds E (monic, degree e) and Q (degree < e + t) with Q(x_i) = y_i E(x_i)
    for every share; then f = Q / E and the wrong shares are the roots of E.
    O(k^3) field operations: used only when the fast path fails a check.
    """
    points = sorted(shares.items())
    errors = (len(points) - threshold) // 2
    if errors < 1:
        return None
    rows, rhs = [], []
    for x, y in points:
        powers = [pow(x, j, PRIME) for j in range(errors + threshold)]
        rows.append(powers + [(-y * powers[j]) % PRIME for j in range(errors)])
        rhs.append(y * pow(x, errors, PRIME) % PRIME)
    solution = _solve(rows, rhs)
    if solution is None:
        return None
    q, e = solution[: errors + threshold], solution[errors + threshold :] + [1]
    f, exact = _poly_divide(q, e)
    if not exact or len([c for c in f[threshold:] if c]):
        return None
    secret = f[0] if f else 0
    if secret >= 2 ** (8 * SECRET_BYTES):
        return None
    wrong = frozenset(x for x, y in points if _evaluate(f, x) != y)
    return secret.to_bytes(SECRET_BYTES, "big"), wrong


def reconstruct_verified(
    shares: Mapping[int, int], threshold: int, verify: Callable[[bytes], bool]
) -> tuple[bytes, frozenset[int], bool] | None:
    """(secret that passes ``verify``, x's of wrong shares found, fast path used?), or None.

    Fast path: interpolate the ``threshold`` lowest shares; the other shares
    are not examined (see ``consistent``).  If the secret fails the check (a
    responder lied), fall back to Berlekamp-Welch decoding, which examines all.
    """
    try:
        secret = reconstruct(shares, threshold)
    except ValueError:
        secret = None
    if secret is not None and verify(secret):
        return secret, frozenset(), True
    decoded = berlekamp_welch(shares, threshold)
    if decoded is None or not verify(decoded[0]):
        return None
    return decoded[0], decoded[1], False


def _interpolate_at(points: Mapping[int, int], xs: Iterable[int]) -> dict[int, int]:
    """Values at ``xs`` of the polynomial of degree < len(points) through ``points``.

    Lagrange form f(x) = sum_j y_j w_j prod_{m != j} (x - x_m) with the
    barycentric weights w_j = 1 / prod_{m != j} (x_j - x_m) computed once;
    the products for each x come from prefix and suffix products, so each
    point costs O(t) multiplications and no inversion.
    """
    known = sorted(points)
    t = len(known)
    denominators = []
    for j, xj in enumerate(known):
        den = 1
        for m, xm in enumerate(known):
            if m != j:
                den = den * (xj - xm) % PRIME
        denominators.append(den)
    scaled = [points[xj] * pow(den, -1, PRIME) % PRIME for xj, den in zip(known, denominators)]
    out = {}
    for x in xs:
        diffs = [(x - xm) % PRIME for xm in known]
        prefix = [1] * (t + 1)
        for m in range(t):
            prefix[m + 1] = prefix[m] * diffs[m] % PRIME
        total, suffix = 0, 1
        for j in range(t - 1, -1, -1):
            total += scaled[j] * prefix[j] * suffix
            suffix = suffix * diffs[j] % PRIME
        out[x] = total % PRIME
    return out


def off_polynomial(shares: Mapping[int, int], threshold: int) -> frozenset[int]:
    """The x's whose share is off the polynomial through the ``threshold`` lowest x's."""
    base = sorted(shares)[:threshold]
    rest = [x for x in sorted(shares) if x not in base]
    expected = _interpolate_at({x: shares[x] for x in base}, rest)
    return frozenset(x for x in rest if expected[x] != shares[x])


def consistent(share_sets: list[Mapping[int, int]], threshold: int, seed: bytes) -> bool:
    """Whether every set of shares (all over the same x's) lies on a degree < t polynomial.

    One check for all secrets: a combination sum_v rho_v f_v of polynomials of
    degree < t has degree < t, while a wrong share makes the combination leave
    it except with probability 1/PRIME over rho.  The rho_v are hashed from
    ``seed``, which must commit to every share (Fiat-Shamir), so no responder
    can choose its error to cancel.
    """
    if not share_sets:
        return True
    rho = [
        int.from_bytes(hashlib.sha512(seed + i.to_bytes(4, "big")).digest(), "big") % PRIME
        for i in range(len(share_sets))
    ]
    xs = sorted(share_sets[0])
    combined = {x: sum(r * s[x] for r, s in zip(rho, share_sets)) % PRIME for x in xs}
    return not off_polynomial(combined, threshold)
