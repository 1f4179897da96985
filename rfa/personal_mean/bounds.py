"""The error bounds of robust personalised mean estimation in a Gaussian mixture.

Managoli, Prabhakaran and Diggavi, "Robust Federated Personalised Mean
Estimation for the Gaussian Mixture Model": k unit-variance components, c*m
corrupted points against m genuine points per component.  This module owns
the formulas; the algorithms are in ``rfa.personal_mean``.

Notation (Lemma 2): Phi and phi are the standard normal c.d.f. and p.d.f.,
``f(x) = Phi(x + Delta) - Phi(x - Delta)`` is the genuine mass within Delta of
a point at distance x from a component mean, ``rho = f(0)``, and ``f^-1`` is
the inverse of f on x >= 0.  A corrupted mass eps is counted in units of one
component's genuine mass (the adversary's total is c).

* Lower bound (Theorem 1, section IV): any algorithm suffers at least
  ``max over eps_i >= 0, sum eps_i <= c, of (1/k) sum h(eps_i)`` with
  ``h(eps) = eps^2 / (eps^2 + 2 pi)``; the paper's closed form
  ``c / (k sqrt(8 pi))`` is the concave envelope of h (budget split into
  c/sqrt(2 pi) components of sqrt(2 pi) each), which the exact maximum reaches
  only when c/sqrt(2 pi) is a whole number of components.
* Upper bound (Theorem 2, asymptotic in m): Lemma 2's median error g, Lemma 3's
  over-estimate eps_hat of the quality estimate, Lemma 4's client error
  ``g^2 / (1 + g^2)``, the adversary's best split of c over the k components
  (the concave envelope over eps), plus the event that the client's own sample
  lies 1.5 Delta or more from its mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr, ndtri

from ..errors import PersonalMeanError

SQRT_2PI = math.sqrt(2 * math.pi)
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(24)


def _phi(x: np.ndarray | float) -> np.ndarray:
    return np.exp(-0.5 * np.square(x)) / SQRT_2PI


def _check_delta(delta: float) -> None:
    if not (math.isfinite(delta) and delta > 0):
        raise PersonalMeanError(f"Delta must be a positive number, got {delta!r}")


def rho(delta: float) -> float:
    """Algorithm 1 line 6: the genuine mass within Delta of a component mean."""
    _check_delta(delta)
    return float(ndtr(delta) - ndtr(-delta))


def window_mass(x: np.ndarray | float, delta: float) -> np.ndarray:
    """f(x) = Phi(x + Delta) - Phi(x - Delta), written as Q(x - Delta) - Q(x + Delta) for accuracy at large x."""
    x = np.abs(np.asarray(x, dtype=float))
    return ndtr(delta - x) - ndtr(-delta - x)


def window_deficit(x: np.ndarray | float, delta: float) -> np.ndarray:
    """rho - f(x), without the cancellation of subtracting two numbers near rho.

    d(x) = integral_0^x [phi(t - Delta) - phi(t + Delta)] dt
         = 2 phi(Delta) integral_0^x exp(-t^2/2) sinh(Delta t) dt,
    a positive integrand, so Gauss-Legendre quadrature keeps full relative
    precision for the tiny x that tiny eps need (x ~ sqrt(eps)); past x = 1 the
    direct difference has no cancellation left.
    """
    x = np.abs(np.asarray(x, dtype=float))
    small = np.minimum(x, 1.0)
    t = 0.5 * small[..., None] * (_GL_NODES + 1.0)
    integral = 0.5 * small * np.sum(_GL_WEIGHTS * np.exp(-0.5 * t * t) * np.sinh(delta * t), axis=-1)
    quadrature = 2.0 * float(_phi(delta)) * integral
    return np.where(x <= 1.0, quadrature, rho(delta) - window_mass(x, delta))


def spread(eps: np.ndarray | float, delta: float) -> np.ndarray:
    """f^-1(rho - eps): how far from a mean a point can pass the density filter when eps mass helps it.

    Infinite for eps >= rho (the corrupted mass alone passes the filter), 0
    for eps = 0.  Vectorised bisection on the increasing deficit
    d(x) = rho - f(x), in log x so that tiny x (x ~ sqrt(eps)) keep their
    relative precision: 90 halvings of [1e-30, Delta + 40] leave a relative
    error below 1e-24.
    """
    eps = np.clip(np.asarray(eps, dtype=float), 0.0, None)
    lo = np.full_like(eps, math.log(1e-30))
    hi = np.full_like(eps, math.log(delta + 40.0))  # f(Delta + 40) is 0 in double precision
    for _ in range(90):
        mid = 0.5 * (lo + hi)
        below = window_deficit(np.exp(mid), delta) < eps
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    x = np.exp(0.5 * (lo + hi))
    return np.where(eps >= rho(delta), np.inf, np.where(eps == 0, 0.0, x))


def _half_plus(s: np.ndarray) -> np.ndarray:
    """Phi^-1(1/2 + s) for s >= 0, infinite for s >= 1/2; the series keeps precision for tiny s."""
    with np.errstate(invalid="ignore"):
        direct = ndtri(np.minimum(0.5 + s, 1.0))
    series = SQRT_2PI * s * (1.0 + math.pi * s * s / 3.0)
    return np.where(s >= 0.5, np.inf, np.where(s < 1e-6, series, direct))


def median_error(eps: np.ndarray | float, delta: float) -> np.ndarray:
    """Lemma 2's g(eps): the server's median is off by at most g(eps) when eps corrupted mass enters it.

    g(eps) = Phi^-1( (1 + eps + Phi(f^-1(rho - eps) + Delta) - Phi(Delta)) / 2 ),
    infinite when the argument reaches 1.  Negative eps (a quality estimate
    below zero) is read as 0.
    """
    eps = np.clip(np.asarray(eps, dtype=float), 0.0, None)
    x = spread(eps, delta)
    skew = ndtr(-delta) - ndtr(-delta - x)  # Phi(x + Delta) - Phi(Delta)
    return _half_plus(0.5 * (eps + skew))


def estimate_ceiling(eps: np.ndarray | float, delta: float) -> np.ndarray:
    """Lemma 3's eps_hat = eps + f^-1(rho - eps) phi(Delta): the largest quality estimate eps can produce."""
    eps = np.clip(np.asarray(eps, dtype=float), 0.0, None)
    return eps + spread(eps, delta) * float(_phi(delta))


def combine_weight(g: np.ndarray | float) -> np.ndarray:
    """Algorithm 2 line 4's weight g^2 / (1 + g^2) on the client's own sample (1 for g = inf)."""
    g2 = np.square(np.asarray(g, dtype=float))
    with np.errstate(invalid="ignore"):
        return np.where(np.isinf(g2), 1.0, g2 / (1.0 + g2))


def component_bound(eps: np.ndarray | float, delta: float) -> np.ndarray:
    """Lemmas 2-4: a client's MSE, given its sample is within 1.5 Delta of its mean, when eps mass hits its component.

    With m -> oo the median is a constant b, |b| <= g(eps), and the client's
    sample is independent of it with a symmetric conditional law, so the cross
    term vanishes and the MSE of (mu~ + G^2 x_v) / (1 + G^2) is at most
    (g(eps)^2 + G^4) / (1 + G^2)^2 <= G^2 / (1 + G^2) for G = g(eps~) >= g(eps).
    G^2 / (1 + G^2) grows with G and eps~ <= eps_hat (Lemma 3), so the bound is
    g(eps_hat)^2 / (1 + g(eps_hat)^2).  (Lemma 4's printed factor 2 comes from
    (a + b)^2 <= 2a^2 + 2b^2; section V's "MSE of 1" for a lost component and
    C0 -> 1 are the bound without it.)
    """
    return combine_weight(median_error(estimate_ceiling(eps, delta), delta))


def far_term(delta: float) -> float:
    """The MSE contributed by clients whose own sample is 1.5 Delta or more from their mean.

    The paper bounds it by 2 Phi(-3 Delta / 2) C3 Delta^2 without giving C3.
    Here: Algorithm 2 returns a convex combination of x_v and an estimate within
    1.5 Delta of x_v, so |mu^ - mu| <= |Z| + a with Z = x_v - mu, a = 1.5 Delta,
    and E[(|Z| + a)^2 ; |Z| >= a] = 2 (3 a phi(a) + (1 + a^2) Phi(-a)).
    """
    _check_delta(delta)
    a = 1.5 * delta
    return float(2.0 * (3.0 * a * _phi(a) + (1.0 + a * a) * ndtr(-a)))


@dataclass(frozen=True)
class UpperBound:
    """Theorem 2 for one Delta, computed numerically.

    ``value(c/k) = (1 - 2 Phi(-1.5 Delta)) * envelope(c/k) + far_term(Delta)``,
    where the envelope is the concave envelope of ``component_bound`` over
    eps >= 0 (the adversary's best split of c over k components).  Above
    ``eps_cr`` the envelope is the line ``c0 * c/k + c1`` (Theorem 2's first
    case); below, it is ``component_bound`` itself.  ``eps_kill`` is the
    smallest mass that makes g(eps_hat) infinite (the client then ignores the
    server).
    """

    delta: float
    eps_cr: float
    eps_kill: float
    c0: float
    c1: float
    far: float
    hull_x: np.ndarray
    hull_y: np.ndarray

    def envelope(self, c_over_k: np.ndarray | float) -> np.ndarray:
        """The hull's chords, raised to component_bound where a chord between grid points dips below it."""
        x = np.asarray(c_over_k, dtype=float)
        inside = np.maximum(np.interp(x, self.hull_x, self.hull_y), component_bound(np.minimum(x, self.eps_kill), self.delta))
        return np.where(x >= self.eps_kill, 1.0, inside)

    def value(self, c_over_k: np.ndarray | float) -> np.ndarray:
        x = np.asarray(c_over_k, dtype=float)
        if np.any(x < 0) or not np.all(np.isfinite(x)):
            raise PersonalMeanError("c/k must be finite and non-negative")
        near = 1.0 - 2.0 * float(ndtr(-1.5 * self.delta))
        return near * self.envelope(x) + self.far


def _upper_hull(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertices of the least concave majorant of the points (x sorted ascending), monotone chain."""
    keep: list[int] = []
    for i in range(len(x)):
        while len(keep) >= 2:
            a, b = keep[-2], keep[-1]
            # drop b when it lies on or below the chord from a to i
            if (y[b] - y[a]) * (x[i] - x[a]) <= (y[i] - y[a]) * (x[b] - x[a]):
                keep.pop()
            else:
                break
        keep.append(i)
    return x[keep], y[keep]


def upper_bound(delta: float, grid: int = 1000) -> UpperBound:
    """Theorem 2's asymptotic upper bound for minimum separation D >= 9 Delta, computed from Lemmas 2-4."""
    _check_delta(delta)
    if delta <= 1.5:
        raise PersonalMeanError(f"Theorem 2 needs Delta > 1.5, got {delta}")
    # eps_kill: where component_bound reaches 1 (g(eps_hat) infinite; eps_hat is infinite from rho on),
    # bracketed by four passes of a 129-point grid (to rho / 128^4).
    lo, hi = 0.0, rho(delta)
    for _ in range(4):
        grid_ = np.linspace(lo, hi, 129)
        first = int(np.argmax(component_bound(grid_, delta) >= 1.0))
        lo, hi = grid_[max(first - 1, 0)], grid_[first]
    eps_kill = float(hi)
    # eps_cr is tiny (1e-14 at Delta = 4), so the grid is logarithmic down to 1e-24.
    eps = np.concatenate(([0.0], np.geomspace(1e-24, eps_kill, grid, endpoint=False)))
    xs = np.concatenate((eps, [eps_kill]))
    ys = np.concatenate((component_bound(eps, delta), [1.0]))
    hull_x, hull_y = _upper_hull(xs, ys)
    c0 = float((hull_y[-1] - hull_y[-2]) / (hull_x[-1] - hull_x[-2]))
    return UpperBound(
        delta=float(delta), eps_cr=float(hull_x[-2]), eps_kill=float(eps_kill), c0=c0,
        c1=float(hull_y[-1] - c0 * hull_x[-1]), far=far_term(delta), hull_x=hull_x, hull_y=hull_y,
    )


def lower_bound(c_over_k: np.ndarray | float) -> np.ndarray:
    """Theorem 1's closed form c / (k sqrt(8 pi)), stated for c/k < sqrt(2 pi)."""
    x = np.asarray(c_over_k, dtype=float)
    if np.any(x < 0) or np.any(x >= SQRT_2PI):
        raise PersonalMeanError(f"Theorem 1 holds for 0 <= c/k < sqrt(2 pi) = {SQRT_2PI:.4f}")
    return x / math.sqrt(8 * math.pi)


def bayes_floor(eps: np.ndarray | float) -> np.ndarray:
    """Section IV's h(eps) = eps^2 / (eps^2 + 2 pi): the minimax MSE floor for a mean known up to an interval of length sqrt(2 pi) eps."""
    e2 = np.square(np.asarray(eps, dtype=float))
    return e2 / (e2 + 2 * math.pi)


@dataclass(frozen=True)
class LowerBound:
    """The exact lower bound max (1/k) sum h(eps_i) over splits of c, with the maximising split."""

    value: float
    allocation: np.ndarray  # eps_i per component, sorted descending, sums to c


def lower_bound_exact(c: float, k: int, grid: int = 2001) -> LowerBound:
    """Theorem 1 before the closed form: max over eps_i >= 0, sum eps_i <= c, of (1/k) sum h(eps_i).

    h is increasing, convex below sqrt(2 pi / 3) and concave above.  At a
    maximum (KKT, h' unimodal) the non-zero eps_i take at most two values, and
    at most one lies in the convex part (two there could be spread apart for
    more).  So the maximum is over j components at (c - e)/j and one at e in
    [0, sqrt(2 pi / 3)], j = 1..k: a grid in e per j, refined around the best.
    """
    if not (isinstance(k, int) and k >= 1):
        raise PersonalMeanError(f"k must be a positive integer, got {k!r}")
    if not (math.isfinite(c) and c >= 0):
        raise PersonalMeanError(f"c must be finite and non-negative, got {c!r}")
    if c == 0:
        return LowerBound(0.0, np.zeros(k))
    best = (-1.0, 0, 0.0)
    e_max = min(c, math.sqrt(2 * math.pi / 3))
    for j in range(1, k + 1):
        # j == k leaves no component for the convex-part share e.
        es = np.linspace(0.0, e_max if j < k else 0.0, grid)
        for _ in range(3):  # grid, then two zoom-ins around the best point
            total = j * bayes_floor((c - es) / j) + bayes_floor(es)
            i = int(np.argmax(total))
            if total[i] > best[0]:
                best = (float(total[i]), j, float(es[i]))
            step = es[1] - es[0] if len(es) > 1 else 0.0
            es = np.linspace(max(0.0, es[i] - step), min(e_max, es[i] + step), grid) if step else es
    value, j, e = best
    allocation = np.zeros(k)
    allocation[:j] = (c - e) / j
    if j < k:
        allocation[j] = e
    return LowerBound(value / k, np.sort(allocation)[::-1])
