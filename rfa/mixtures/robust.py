"""Byzantine-tolerant aggregation of mixture estimates: COAT (eq. 3), CRED (eq. 4), ARED (eq. 5).

All three start from the pairwise ISE distances between the m transmitted estimates.
r(G_i) is the radius of the smallest ball around G_i holding at least half of the
estimates (G_i included); COAT is the estimate with the smallest such radius r_coat.
CRED flags every estimate at distance >= r_coat from COAT (eq. 4), so it keeps fewer
than half; ARED flags those farther than r_coat * sqrt(0.5 log(m/2) log log m)
(eq. 5), which under the paper's Theorem 4.1 (c) is exactly the failed set.  The
factor is below 1 for m < 15: there ARED flags more machines than CRED, so ``ared``
warns (``AREDRangeWarning``, with the factor) or, with ``strict=True``, refuses.  CRED and
ARED then reduce the kept estimates with GMR (eq. 2), starting from COAT.  These
rules need every estimate in the clear: they cannot run inside secure aggregation.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .distance import pairwise_ise
from .estimate import GaussianMixtureEstimate, MixtureError
from .gmr import gmr
from .sklearn_adapter import MixtureLike, as_estimates

__all__ = ["AREDRangeWarning", "ARED_MIN_MACHINES", "RobustAggregate", "ared", "ared_factor", "coat", "coat_center",
           "cred"]

ARED_MIN_MACHINES = 15  # the least m with sqrt(0.5 log(m/2) log log m) >= 1


class AREDRangeWarning(UserWarning):
    """ARED ran below its working range (m < 15): its margin factor is below 1, so it flags more than CRED."""


@dataclass(frozen=True)
class RobustAggregate:
    """An aggregate and the machines the rule flagged as failed.

    ``center`` is the COAT machine, ``radius`` r_coat, ``threshold`` the distance from
    COAT beyond which (CRED: at or beyond which) an estimate was flagged, and
    ``machines`` the number m of estimates the rule was given.
    """

    mixture: GaussianMixtureEstimate
    flagged: frozenset[int]
    center: int
    radius: float
    threshold: float
    machines: int

    @property
    def detection_rate(self) -> float:
        """The fraction of the m machines flagged as failed."""
        return len(self.flagged) / self.machines


def _distances(estimates: Sequence[GaussianMixtureEstimate], distances: np.ndarray | None) -> np.ndarray:
    m = len(estimates)
    if distances is None:
        return pairwise_ise(estimates)
    dist = np.asarray(distances, dtype=float)
    if dist.shape != (m, m) or not np.all(np.isfinite(dist)) or np.any(dist < 0):
        raise MixtureError(f"distances must be a finite non-negative ({m}, {m}) matrix")
    return dist


def coat_center(distances: np.ndarray) -> tuple[int, float]:
    """(index, r_coat) of eq. 3: the row whose ceil(m/2)-th smallest entry (itself included) is least.

    Ties go to the lowest index, so the choice is deterministic.
    """
    m = distances.shape[0]
    radii = np.sort(distances, axis=1)[:, math.ceil(m / 2) - 1]
    center = int(radii.argmin())
    return center, float(radii[center])


def coat(
    estimates: Sequence[MixtureLike], *, distances: np.ndarray | None = None
) -> RobustAggregate:
    """COAT (eq. 3): the single estimate at the centre of the smallest ball holding half of them.

    COAT uses no other estimate; ``flagged`` is the set outside its ball (eq. 4's set).
    """
    estimates = as_estimates(estimates)
    dist = _distances(estimates, distances)
    center, radius = coat_center(dist)
    return RobustAggregate(estimates[center], _outside(dist[center], radius, strict=False), center, radius, radius,
                           len(estimates))


def _outside(row: np.ndarray, threshold: float, *, strict: bool) -> frozenset[int]:
    # COAT itself and exact copies of it (distance 0) are never flagged: with r_coat = 0,
    # eq. 4 read literally would flag every machine and leave nothing to aggregate.
    far = (row > threshold) if strict else (row >= threshold)
    return frozenset(int(j) for j in np.flatnonzero(far & (row > 0)))


def cred(
    estimates: Sequence[MixtureLike],
    sample_sizes: Sequence[float] | None = None,
    *,
    distances: np.ndarray | None = None,
) -> RobustAggregate:
    """CRED (eq. 4): GMR of the estimates strictly inside COAT's ball."""
    estimates = as_estimates(estimates)
    dist = _distances(estimates, distances)
    center, radius = coat_center(dist)
    flagged = _outside(dist[center], radius, strict=False)
    return _reduce_kept(estimates, sample_sizes, flagged, center, radius, radius)


def ared_factor(m: int) -> float:
    """sqrt(0.5 log(m/2) log log m), the margin of eq. 5; defined (positive) for m >= 3."""
    if m < 3:
        raise MixtureError(f"ARED needs m >= 3 machines (log(m/2) log log m > 0), got m = {m}")
    return math.sqrt(0.5 * math.log(m / 2) * math.log(math.log(m)))


def ared(
    estimates: Sequence[MixtureLike],
    sample_sizes: Sequence[float] | None = None,
    *,
    distances: np.ndarray | None = None,
    strict: bool = False,
) -> RobustAggregate:
    """ARED (eq. 5): GMR of every estimate within r_coat * ared_factor(m) of COAT.

    Below m = 15 the factor is below 1 and ARED flags honest machines CRED keeps:
    it warns (``AREDRangeWarning``), or raises ``MixtureError`` if ``strict``.
    """
    estimates = as_estimates(estimates)
    m = len(estimates)
    factor = ared_factor(m)
    if m < ARED_MIN_MACHINES:
        message = (f"ARED at m = {m} machines: margin factor sqrt(0.5 log(m/2) log log m) = {factor:.3f} < 1, so it "
                   f"flags more machines than CRED; its working range is m >= {ARED_MIN_MACHINES}")
        if strict:
            raise MixtureError(message)
        warnings.warn(message, AREDRangeWarning, stacklevel=2)
    dist = _distances(estimates, distances)
    center, radius = coat_center(dist)
    threshold = radius * factor
    flagged = _outside(dist[center], threshold, strict=True)
    return _reduce_kept(estimates, sample_sizes, flagged, center, radius, threshold)


def _reduce_kept(
    estimates: Sequence[MixtureLike],
    sample_sizes: Sequence[float] | None,
    flagged: frozenset[int],
    center: int,
    radius: float,
    threshold: float,
) -> RobustAggregate:
    kept = [i for i in range(len(estimates)) if i not in flagged]
    sizes = None if sample_sizes is None else [sample_sizes[i] for i in kept]
    mixture = gmr([estimates[i] for i in kept], sizes, init=estimates[center])
    return RobustAggregate(mixture, flagged, center, radius, threshold, len(estimates))
