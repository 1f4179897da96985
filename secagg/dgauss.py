"""Exact discrete Gaussian sampling from a CSPRNG (Canonne, Kamath, Steinke, NeurIPS 2020).

``sample(sigma2, size, rng)`` draws ``size`` independent samples of N_Z(0, sigma2):
P[X = x] proportional to exp(-x**2 / (2 sigma2)) over the integers.  sigma2 is a
rational number (``Fraction`` or int) and every decision is an exact integer
comparison between a uniform integer and a rational threshold: no
floating-point value ever decides a sample, so the output has exactly the
discrete Gaussian distribution (CKS20 Algorithms 1-3).  Every random bit comes
from the injected ``RandomSource`` (the project's CSPRNG, ``rng.py``).

Vectorised with numpy int64: all candidates of a batch advance together, and
the Bernoulli(exp(-gamma)) chains run on the shrinking set still undecided.
The integers stay below 2**63: ``sample`` refuses a sigma2 whose acceptance
denominator 2 a b t**2 (sigma2 = a / b, t = floor(sigma) + 1) exceeds 2**62,
and the rare candidates whose acceptance numerator would overflow (|Y| above
about 3e9 / sigma, probability below exp(-3e9 / sigma**2)) are decided with
Python integers instead.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from .errors import ParameterError
from .rng import RandomSource

_LIMIT = 1 << 62  # every denominator stays below this, so u < den and num * 1 fit in int64
_ROOT = 3_037_000_499  # floor(sqrt(2**63 - 1)): |m| <= _ROOT keeps m * m in int64


def _words(rng: RandomSource, k: int, wide: bool = True) -> np.ndarray:
    """k uniform words: uint64, or uint32 (half the keystream) when ``wide`` is False."""
    if wide:
        return np.frombuffer(rng.bytes(8 * k), dtype=np.uint64)
    return np.frombuffer(rng.bytes(4 * k), dtype=np.uint32)


def _bits(x: np.ndarray) -> np.ndarray:
    """An upper bound on the bit length of each x >= 0, exceeding it by at most one.

    frexp's exponent is >= the bit length (a float rounds up at most to the next power of two).
    """
    return np.frexp(x.astype(np.float64))[1]


def below(rng: RandomSource, bound: int, size: int) -> np.ndarray:
    """``size`` uniform integers in [0, bound) for one bound (1 <= bound <= 2**62), by masked rejection."""
    wide = bound > 1 << 32
    mask = (1 << (bound - 1).bit_length()) - 1
    u = (_words(rng, size, wide) & mask).astype(np.int64)
    bad = np.flatnonzero(u >= bound)
    while bad.size:  # each word is accepted with probability > 1/2: draw twice the shortfall
        redo = (_words(rng, 2 * bad.size + 16, wide) & mask).astype(np.int64)
        redo = redo[redo < bound][: bad.size]
        u[bad[: redo.size]] = redo
        bad = bad[redo.size:]
    return u


def uniform_below(rng: RandomSource, bound: np.ndarray) -> np.ndarray:
    """Uniform integers u_i in [0, bound_i) (int64, 1 <= bound_i <= 2**62), by masked rejection."""
    bound = np.asarray(bound, dtype=np.int64)
    wide = bool(bound.size) and int(bound.max()) > 1 << 32
    mask = ((np.uint64(1) << _bits(np.maximum(bound - 1, 0)).astype(np.uint64)) - np.uint64(1))
    if not wide:
        mask = mask.astype(np.uint32)
    u = (_words(rng, bound.size, wide).reshape(bound.shape) & mask).astype(np.int64)
    bad = np.flatnonzero(u >= bound)
    flat_u, flat_bound, flat_mask = u.reshape(-1), bound.reshape(-1), mask.reshape(-1)
    while bad.size:  # each word is accepted with probability >= 1/4
        redo = (_words(rng, bad.size, wide) & flat_mask[bad]).astype(np.int64)
        ok = redo < flat_bound[bad]
        flat_u[bad[ok]] = redo[ok]
        bad = bad[~ok]
    return u


def bernoulli(rng: RandomSource, num: np.ndarray, den: np.ndarray | int) -> np.ndarray:
    """Bernoulli(num / den) exactly: a uniform integer below den compared with num."""
    num = np.asarray(num, dtype=np.int64)
    if isinstance(den, (int, np.integer)):
        return below(rng, int(den), num.size).reshape(num.shape) < num
    return uniform_below(rng, np.broadcast_to(np.asarray(den, dtype=np.int64), num.shape)) < num


_NEST = 12  # 12! < 2**29: one 32-bit word decides 12 draws
_FACT = math.factorial(_NEST)
_CUTS = np.array([_FACT // math.factorial(j) for j in range(_NEST, 0, -1)], dtype=np.int64)  # increasing


def _factorial_run(rng: RandomSource, size: int) -> np.ndarray:
    """S = successes of Bernoulli(1/1), Bernoulli(1/2), ... before the first failure: P[S >= j] = 1/j!.

    One uniform u below 12! decides the first 12 draws at once: the nested events
    u < 12!/j! have probability exactly 1/j!.  Past 12 (probability 1/12!) the
    draws continue one at a time.
    """
    u = below(rng, _FACT, size)
    # #{j <= 12 : u < 12!/j!}: j = 1 always; j = 2, 3 by comparison; the rare rest (1/24) by search.
    s = 1 + (u < _CUTS[-2]).astype(np.int64) + (u < _CUTS[-3])
    deep = np.flatnonzero(u < _CUTS[-4])
    s[deep] = _NEST - np.searchsorted(_CUTS, u[deep], side="right")
    for i in np.flatnonzero(s == _NEST):
        k = _NEST + 1
        while below(rng, k, 1)[0] == 0:
            s[i] += 1
            k += 1
    return s


def _exp_chain(rng: RandomSource, num: np.ndarray | None, den: int, size: int) -> np.ndarray:
    """Bernoulli(exp(-gamma)) for gamma = num/den in [0, 1] (CKS20 Algorithm 1, first case).

    CKS20 count the successes S of Bernoulli(gamma / K), K = 1, 2, ..., before
    the first failure and return 1 iff S is even.  P[S >= j] = gamma**j / j!, so
    S is the minimum of two independent runs: the factorial run (P = 1/j!) and
    the run of Bernoulli(gamma) successes, drawn only as far as the first one
    reaches.  ``num=None`` means gamma = 1 (exp(-1)).
    """
    s = _factorial_run(rng, size)  # >= 1: the first draw, Bernoulli(1/1), always succeeds
    if num is None:
        return (s & 1) == 0
    first = bernoulli(rng, num, den)
    run = first.astype(np.int64)
    live = np.flatnonzero(first & (s > 1))
    while live.size:
        hit = bernoulli(rng, num[live], den)
        run[live[hit]] += 1
        live = live[hit]
        live = live[run[live] < s[live]]
    return (np.minimum(s, run) & 1) == 0


def bernoulli_exp(rng: RandomSource, num: np.ndarray, den: int) -> np.ndarray:
    """Bernoulli(exp(-num/den)) for num/den >= 0, one den (CKS20 Algorithm 1).

    exp(-gamma) = exp(-1)**floor(gamma) * exp(-frac(gamma)): floor(gamma)
    Bernoulli(exp(-1)) draws that must all succeed, then one for the fraction.
    """
    num = np.asarray(num, dtype=np.int64)
    whole, frac = num // den, num % den
    out = _exp_chain(rng, frac, int(den), num.size)
    live = np.flatnonzero(out & (whole > 0))
    left = whole[live]
    while live.size:
        ok = _exp_chain(rng, None, 1, live.size)
        out[live[~ok]] = False
        live, left = live[ok], left[ok] - 1
        live, left = live[left > 0], left[left > 0]
    return out


def _geometric_exp1(rng: RandomSource, size: int) -> np.ndarray:
    """V = successes of Bernoulli(exp(-1)) before the first failure (CKS20 Algorithm 2, lines 5-8)."""
    # Four draws per value at once (P[V >= 4] = e^-4 < 2%): V = the leading successes.
    ok = _exp_chain(rng, None, 1, 4 * size).reshape(size, 4)
    v = np.argmin(np.concatenate([ok, np.zeros((size, 1), dtype=bool)], axis=1), axis=1).astype(np.int64)
    live = np.flatnonzero(v == 4)
    while live.size:
        ok1 = _exp_chain(rng, None, 1, live.size)
        v[live[ok1]] += 1
        live = live[ok1]
    return v


def discrete_laplace(rng: RandomSource, t: int, size: int) -> np.ndarray:
    """Candidates of the discrete Laplace with scale t, P[Y = y] ~ exp(-|y| / t) (CKS20 Algorithm 2).

    Returns fewer than ``size`` values: the rejected candidates are dropped.
    """
    u = below(rng, t, size)
    u = u[_exp_chain(rng, u, t, size)]  # Bernoulli(exp(-U/t)), U/t < 1
    x = u + t * _geometric_exp1(rng, u.size)
    b = below(rng, 2, u.size) == 1
    ok = ~(b & (x == 0))  # B = 1 with X = 0 would count 0 twice
    return np.where(b, -x, x)[ok]


def _as_fraction(sigma2: Fraction | int) -> Fraction:
    if isinstance(sigma2, bool) or not isinstance(sigma2, (int, Fraction)):
        raise ParameterError(f"sigma2 must be an int or a Fraction (exact), got {sigma2!r}")
    sigma2 = Fraction(sigma2)
    if sigma2 <= 0:
        raise ParameterError(f"sigma2 must be positive, got {sigma2}")
    return sigma2


def check_sigma2(sigma2: Fraction | int) -> Fraction:
    """Validate sigma2 for the int64 sampler; returns it as a Fraction."""
    s = _as_fraction(sigma2)
    a, b = s.numerator, s.denominator
    t = math.isqrt(a // b) + 1
    if 2 * a * b * t * t >= _LIMIT:
        raise ParameterError(
            f"sigma2 = {s} is too large (or its denominator too fine) for exact int64 sampling: "
            f"2 a b t^2 = {2 * a * b * t * t:.3g} >= 2^62"
        )
    return s


def sample(sigma2: Fraction | int, size: int, rng: RandomSource) -> np.ndarray:
    """``size`` independent exact samples of N_Z(0, sigma2) as int64 (CKS20 Algorithm 3)."""
    s = check_sigma2(sigma2)
    if size < 0:
        raise ParameterError(f"size must be >= 0, got {size}")
    a, b = s.numerator, s.denominator
    t = math.isqrt(a // b) + 1  # floor(sigma) + 1
    den = 2 * a * b * t * t
    out = np.empty(size, dtype=np.int64)
    filled = 0
    while filled < size:
        need = size - filled
        y = discrete_laplace(rng, t, int(need * 2.2) + 16)
        # Accept Y with probability exp(-(|Y| - sigma2/t)^2 / (2 sigma2)) = exp(-(|Y| t b - a)^2 / den).
        m = np.abs(y) * (t * b) - a  # |Y| t b stays far below 2**63 for every Y the Laplace yields
        small = np.abs(m) <= _ROOT
        accept = np.zeros(y.size, dtype=bool)
        idx = np.flatnonzero(small)
        accept[idx] = bernoulli_exp(rng, m[idx] * m[idx], den)
        for i in np.flatnonzero(~small):  # exact Python integers: almost never reached
            accept[i] = _bernoulli_exp_big(rng, int(m[i]) ** 2, den)
        got = y[accept][:need]
        out[filled:filled + got.size] = got
        filled += got.size
    return out


def _bernoulli_exp_big(rng: RandomSource, num: int, den: int) -> bool:
    """Bernoulli(exp(-num/den)) for a num beyond int64: floor(num/den) steps of exp(-1), then the rest."""
    whole, frac = divmod(num, den)
    for _ in range(whole):
        if not _exp_chain(rng, None, 1, 1)[0]:
            return False
    return bool(_exp_chain(rng, np.array([frac], dtype=np.int64), den, 1)[0])


def pmf(sigma2: float, support: np.ndarray) -> np.ndarray:
    """The discrete Gaussian pmf at the integers ``support`` (float; for tests and plots)."""
    k = np.arange(-int(50 * math.sqrt(sigma2)) - 50, int(50 * math.sqrt(sigma2)) + 51)
    norm = np.exp(-(k.astype(np.float64) ** 2) / (2 * sigma2)).sum()
    return np.exp(-(np.asarray(support, dtype=np.float64) ** 2) / (2 * sigma2)) / norm


def variance(sigma2: float) -> float:
    """The variance of N_Z(0, sigma2), which is at most sigma2 (CKS20 Proposition 2)."""
    k = np.arange(1, int(50 * math.sqrt(sigma2)) + 51, dtype=np.float64)
    w = np.exp(-(k**2) / (2 * sigma2))
    return float(2 * (k**2 * w).sum() / (1 + 2 * w.sum()))
