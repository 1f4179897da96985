"""The plaintext smoothed Weiszfeld algorithm (RFA paper, Sec. IV).

This module owns the plaintext geometric median: Algorithm 2 (smoothed
Weiszfeld) run to convergence or for a fixed number of steps, Algorithm 3
(one step), the per-device weights beta_i = alpha_i / max(nu, ||v - w_i||) of
Algorithm 2, line 3, and the validation of points and weights shared by every
aggregation rule of the package.  The secure version, where each step is one
call to the secure average oracle, lives in ``rfa.secure``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from .errors import InvalidArgument

__all__ = [
    "GeometricMedianResult",
    "PointsError",
    "WeightError",
    "check_points",
    "check_weights",
    "geometric_median",
    "one_step",
    "weiszfeld_weights",
]


class PointsError(InvalidArgument):
    """The points are not a finite (n, d) array with n >= 1 and d >= 1."""


class WeightError(InvalidArgument):
    """The weights alpha_i are not n finite non-negative numbers with a positive sum."""


def check_points(points: ArrayLike) -> np.ndarray:
    """Return ``points`` as a float64 (n, d) array, or raise PointsError saying what is wrong."""
    array = np.asarray(points)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise PointsError(f"points must be numeric, got dtype {array.dtype}")
    if array.ndim != 2:
        raise PointsError(f"points must be a 2-D (n, d) array, got {array.ndim} dimension(s), shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise PointsError(f"points must have at least one row and one column, got shape {array.shape}")
    if np.iscomplexobj(array):
        raise PointsError("points must be real, got a complex array")
    array = np.ascontiguousarray(array, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        bad = int(np.count_nonzero(~np.isfinite(array).all(axis=1)))
        raise PointsError(f"points must be finite: {bad} row(s) contain NaN or infinity")
    return array


def check_weights(weights: ArrayLike | None, n: int) -> np.ndarray:
    """Return alpha as a float64 (n,) array (all ones when ``weights`` is None).

    Zero weights are allowed (that point is ignored by weighted rules); the
    sum must be positive.  Raises WeightError naming the problem.
    """
    if weights is None:
        return np.ones(n)
    alpha = np.asarray(weights)
    if alpha.dtype == object or not (np.issubdtype(alpha.dtype, np.number) or alpha.dtype == bool):
        raise WeightError(f"weights must be numeric, got dtype {alpha.dtype}")
    if np.iscomplexobj(alpha):
        raise WeightError("weights must be real, got a complex array")
    if alpha.shape != (n,):
        raise WeightError(f"weights must have shape ({n},), one per point, got shape {alpha.shape}")
    alpha = alpha.astype(np.float64)
    if not np.all(np.isfinite(alpha)):
        raise WeightError(f"weights must be finite: {int(np.count_nonzero(~np.isfinite(alpha)))} are NaN or infinite")
    if np.any(alpha < 0):
        raise WeightError(f"weights must be non-negative: {int(np.count_nonzero(alpha < 0))} are negative")
    if not alpha.sum() > 0:
        raise WeightError("weights must have a positive sum, got all zeros")
    return alpha


def _check_nu(nu: float) -> float:
    nu = float(nu)
    if not (np.isfinite(nu) and nu > 0):
        raise InvalidArgument(f"nu must be a positive finite number, got {nu!r}")
    return nu


def _check_vector(v: ArrayLike, d: int, what: str) -> np.ndarray:
    vector = np.asarray(v, dtype=np.float64)
    if vector.shape != (d,):
        raise PointsError(f"{what} must have shape ({d},), got {vector.shape}")
    if not np.all(np.isfinite(vector)):
        raise PointsError(f"{what} must be finite")
    return vector


def _row_sq_norms(matrix: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", matrix, matrix)


class _MovingPointDistances:
    """||v - w_i|| for a moving point v, with one matrix-vector product per move.

    The points are stored once, shifted by an origin c (c_i = w_i - c), with
    their squared norms.  For v = c + u,

        ||v - w_i||^2 = ||c_i||^2 - 2 c_i.u + ||u||^2,

    one product C @ u per evaluation and no (n, d) temporary.  The expanded form
    loses precision by cancellation when ||v - w_i|| is small next to
    ||c_i|| + ||u||: its absolute rounding error is at most about
    k (||c_i|| + ||u||)^2 with k = (sqrt(d) + 2) eps (the probabilistic bound
    for a d-term dot product; the worst case is d eps).  The smoothing
    max(nu, .) would hide this only when that error is below nu^2, which
    depends on the scale of the data, so it is not relied upon.  Instead a
    distance whose bound exceeds a relative error of ``_REL`` is recomputed in
    the exact form ||c_i - u||; if more than a quarter of them are unreliable
    (v has moved far from the origin), the origin moves to v in place, after
    which ||v - w_i|| = ||c_i|| has no cancellation at all.
    """

    _REL = 1e-12  # target relative error of every distance

    def __init__(self, points: np.ndarray, start: np.ndarray):
        self._origin = start.copy()
        self._c = points - start  # the only (n, d) array made: once, not per step
        self._sq = _row_sq_norms(self._c)
        self._norms = np.sqrt(self._sq)
        self._u = np.zeros(points.shape[1])
        self._k = (np.sqrt(points.shape[1]) + 2.0) * np.finfo(np.float64).eps

    @property
    def v(self) -> np.ndarray:
        return self._origin + self._u

    def distances(self) -> np.ndarray:
        u = self._u
        uu = float(u @ u)
        if uu == 0.0:  # v is the origin: the stored norms are exact
            return self._norms.copy()
        d2 = self._sq - 2.0 * (self._c @ u)
        d2 += uu
        np.maximum(d2, 0.0, out=d2)  # rounding can make a tiny square negative
        bound = self._k * (self._norms + np.sqrt(uu)) ** 2
        unreliable = np.flatnonzero(2.0 * self._REL * d2 < bound)
        if 4 * unreliable.size > d2.size:
            self._c -= u  # re-centre at v, in place
            self._origin += u
            self._u = np.zeros_like(u)
            self._sq = _row_sq_norms(self._c)
            self._norms = np.sqrt(self._sq)
            return self._norms.copy()
        if unreliable.size:
            diff = self._c[unreliable] - u  # only the few rows close to v
            d2[unreliable] = _row_sq_norms(diff)
        return np.sqrt(d2)

    def average(self, beta: np.ndarray) -> None:
        """v <- sum_i beta_i w_i / sum_i beta_i (Algorithm 2, line 4)."""
        self._u = beta @ self._c / beta.sum()

    def shift(self, gamma: np.ndarray) -> None:
        """v <- v + sum_i gamma_i (w_i - v): the step of centred clipping."""
        self._u = self._u + (gamma @ self._c - gamma.sum() * self._u)


@dataclass(frozen=True)
class GeometricMedianResult:
    """What ``geometric_median`` returns (arrays are read-only).

    ``median``: v^(n_iter), shape (d,).
    ``objective``: g(v^(r)) = sum_i alpha_i ||v^(r) - w_i|| for r = 0..n_iter.
    ``n_iter``: the number of Weiszfeld steps taken.
    ``weights``: the beta_i of the last step, so that
    median = sum_i beta_i w_i / sum_i beta_i; beta_i / alpha_i is the
    re-weighting plotted in Fig. 1 of the RFA paper.
    """

    median: np.ndarray
    objective: np.ndarray
    n_iter: int
    weights: np.ndarray


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def geometric_median(
    points: ArrayLike,
    weights: ArrayLike | None = None,
    *,
    nu: float = 1e-6,
    max_iter: int = 100,
    tol: float | None = 1e-10,
    init: ArrayLike | None = None,
) -> GeometricMedianResult:
    """The smoothed Weiszfeld algorithm (RFA paper, Algorithm 2) on the rows of ``points``.

    Minimises g(v) = sum_i alpha_i ||v - w_i|| (eq. 6) with alpha = ``weights``
    (default all ones), starting from the weighted mean, or ``init``.  Each
    step sets beta_i = alpha_i / max(nu, ||v - w_i||) and
    v <- sum_i beta_i w_i / sum_i beta_i.  It stops after ``max_iter`` steps,
    or earlier once |g(v^(r)) - g(v^(r+1))| <= tol * g(v^(r+1)) (the rule of
    the reference package ``geom-median``); ``tol=None`` always takes exactly
    ``max_iter`` steps, as the secure version does with its fixed budget R.
    """
    w = check_points(points)
    n, d = w.shape
    alpha = check_weights(weights, n)
    nu = _check_nu(nu)
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise InvalidArgument(f"max_iter must be a positive integer, got {max_iter!r}")
    if tol is not None and not (np.isfinite(tol) and tol >= 0):
        raise InvalidArgument(f"tol must be None or a finite number >= 0, got {tol!r}")
    start = alpha @ w / alpha.sum() if init is None else _check_vector(init, d, "init")

    moving = _MovingPointDistances(w, start)
    # The distances at v^(r) give both g(v^(r)) and the weights of step r + 1.
    dist = moving.distances()
    objective = [float(alpha @ dist)]
    for _ in range(max_iter):
        beta = alpha / np.maximum(nu, dist)  # Algorithm 2, line 3
        moving.average(beta)  # line 4
        dist = moving.distances()
        objective.append(float(alpha @ dist))
        if tol is not None and abs(objective[-2] - objective[-1]) <= tol * objective[-1]:
            break
    return GeometricMedianResult(
        median=_frozen(moving.v),
        objective=_frozen(np.array(objective)),
        n_iter=len(objective) - 1,
        weights=_frozen(beta),
    )


def weiszfeld_weights(points: ArrayLike, v: ArrayLike, alpha: ArrayLike | None, nu: float) -> np.ndarray:
    """beta_i = alpha_i / max(nu, ||v - w_i||): Algorithm 2, line 3, for every row w_i.

    In a deployment device i computes its own beta_i; this is the vectorised
    simulation of all of them, in the exact form (one call, nothing to
    amortise a precomputation over).
    """
    w = check_points(points)
    a = check_weights(alpha, w.shape[0])
    center = _check_vector(v, w.shape[1], "v")
    # From v = 0 (Algorithm 3) the distances are the row norms: no copy needed.
    diff = w - center if center.any() else w
    return a / np.maximum(_check_nu(nu), np.sqrt(_row_sq_norms(diff)))


def one_step(
    points: ArrayLike,
    weights: ArrayLike | None = None,
    *,
    nu: float = 1e-6,
    center: ArrayLike | None = None,
) -> np.ndarray:
    """One-step smoothed Weiszfeld (RFA paper, Algorithm 3).

    One step of Algorithm 2 from v = 0 (the paper's choice: the w_i are model
    updates, so 0 means "no update"), or from ``center``:
    beta_i = alpha_i / max(nu, ||w_i - v||), return sum_i beta_i w_i / sum_i beta_i.
    """
    w = check_points(points)
    v = np.zeros(w.shape[1]) if center is None else center
    beta = weiszfeld_weights(w, v, weights, nu)
    return beta @ w / beta.sum()
