"""Every aggregation rule of the simulations behind one interface.

This module owns the ``Aggregator`` interface, the rules the RFA paper compares
against (Sec. V-B: coordinate-wise median, trimmed mean, norm clipping,
(multi-)Krum), centred clipping, the 1-center / 1-mean clustering rules of Yi
et al. (AAAI 2024: Inner aggregation, Algorithm 2; Outer aggregation, Sec. 4.1;
the two candidates of the two-phase rules Cent2P / Mean2P, Algorithm 3), and the plaintext counterparts of the secure
rules (mean, geometric median, one-step), with a registry for simulations.

An ``Aggregator`` maps an (n, d) array of updates and optional weights alpha_i
to a (d,) aggregate.  ``mode`` says how it can run: "secure" rules are
sequences of weighted averages, so they run through the secure average oracle
(``oracle_calls`` calls each); "plaintext" rules need every update in the clear.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal, Mapping

import numpy as np
from numpy.typing import ArrayLike

from .errors import InvalidArgument, NeedsVote, PlaintextOnly
from .privacy import smallest_nu
from .secure import SecureAggregate, one_step_geometric_median, secure_geometric_median, secure_mean
from .weiszfeld import (
    _MovingPointDistances,
    _check_nu,
    _check_vector,
    _row_sq_norms,
    check_points,
    check_weights,
    geometric_median,
    one_step,
)

__all__ = [
    "Aggregator",
    "Cent2P",
    "CenterOuter",
    "CenterWithOutliers",
    "CenteredClipping",
    "CoordinateMedian",
    "GeometricMedianRule",
    "Krum",
    "Mean",
    "Mean2P",
    "MeanOuter",
    "MeanWithOutliers",
    "MultiKrum",
    "NormClippedMean",
    "OneStepRule",
    "TrimmedMean",
    "TwoPhaseRule",
    "make_aggregator",
    "parameters",
    "registry",
]

Mode = Literal["secure", "plaintext"]


class Aggregator(ABC):
    """``rule(points, weights=None) -> (d,) array``; weights default to all ones.

    Class attributes: ``name`` (the registry key), ``mode`` ("secure" or
    "plaintext"), ``uses_weights`` (False: the weights are validated, then
    ignored; the rule's docstring says why).  ``oracle_calls`` is the number of
    secure average oracle calls per aggregation for a secure rule, None for a
    plaintext rule (which cannot run through the oracle at all).
    """

    name: ClassVar[str]
    mode: ClassVar[Mode]
    uses_weights: ClassVar[bool]

    @property
    def oracle_calls(self) -> int | None:
        return None

    def secure(self, points: Any, weights: Any = None, **privacy: Any) -> "SecureAggregate":
        """Run the rule through the secure average oracle (``rfa.secure``); plaintext rules refuse.

        ``privacy`` goes to the secure function: ``oracle``, ``norm_bound``,
        ``max_weight``, ``alpha_range``, ``threshold``, ``dropouts`` (and ``nu``,
        which overrides the rule's own, e.g. ``nu="auto"``).
        """
        raise PlaintextOnly(
            f"{self.name} needs every individual update in the clear: it cannot run through "
            f"the secure average oracle (use a secure rule: mean, geometric_median, one_step)"
        )

    def __call__(self, points: ArrayLike, weights: ArrayLike | None = None) -> np.ndarray:
        w = check_points(points)
        alpha = check_weights(weights, w.shape[0])
        return self._aggregate(w, alpha)

    @abstractmethod
    def _aggregate(self, points: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        """``points``: validated float64 (n, d); ``alpha``: validated float64 (n,)."""


def _check_count(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise InvalidArgument(f"{what} must be a non-negative integer, got {value!r}")
    return int(value)


def _check_positive(value: float, what: str) -> float:
    value = float(value)
    if not (np.isfinite(value) and value > 0):
        raise InvalidArgument(f"{what} must be a positive finite number, got {value!r}")
    return value


def _pairwise_sq_distances(points: np.ndarray) -> np.ndarray:
    """||w_i - w_j||^2 for all pairs from one Gram matrix, O(n^2 d) flops, n x n memory.

    The points are centred at their mean first: the Gram expansion
    ||a||^2 + ||b||^2 - 2 a.b cancels in proportion to the squared norms, and
    centring makes those as small as the spread of the points allows.
    """
    centred = points - points.mean(axis=0)
    sq = _row_sq_norms(centred)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (centred @ centred.T)
    np.maximum(d2, 0.0, out=d2)
    np.fill_diagonal(d2, 0.0)
    return d2


# --- Secure rules: sequences of weighted averages --------------------------------


@dataclass(frozen=True)
class Mean(Aggregator):
    """The weighted mean sum_i alpha_i w_i / sum_i alpha_i (FedAvg): one oracle call."""

    name: ClassVar[str] = "mean"
    mode: ClassVar[Mode] = "secure"
    uses_weights: ClassVar[bool] = True

    @property
    def oracle_calls(self) -> int:
        return 1

    def _aggregate(self, points: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        return alpha @ points / alpha.sum()

    def secure(self, points: Any, weights: Any = None, **privacy: Any) -> "SecureAggregate":
        privacy.pop("nu", None)  # a mean has no smoothing
        return secure_mean(points, weights, **privacy)


@dataclass(frozen=True)
class GeometricMedianRule(Aggregator):
    """RFA: ``rounds`` smoothed Weiszfeld steps (Algorithm 2) from the start point ``init``.

    Exactly ``rounds`` steps, no early stop, as under a fixed oracle budget R.
    ``init="mean"`` starts from the weighted mean, itself one oracle call
    under the oracle, so ``oracle_calls = rounds + 1`` (the paper's "3 calls"
    are this mean and 2 steps, as the authors' code counts them).
    ``init="zero"`` starts from 0 (``rounds=1`` is one-step RFA) and
    ``init="previous"`` from the previous aggregate, which the training loop
    passes as ``previous`` (0 when there is none); both are public, so they
    cost no call.  docs/reproductions/rfa.md ("Warm start") has the measured comparison.
    """

    rounds: int = 3
    nu: float = 1e-6
    init: Literal["mean", "zero", "previous"] = "mean"
    name: ClassVar[str] = "geometric_median"
    mode: ClassVar[Mode] = "secure"
    uses_weights: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if _check_count(self.rounds, "rounds") < 1:
            raise InvalidArgument(f"rounds must be at least 1, got {self.rounds}")
        _check_nu(self.nu)
        if self.init not in ("mean", "zero", "previous"):
            raise InvalidArgument(f'init must be "mean", "zero" or "previous", got {self.init!r}')

    @property
    def oracle_calls(self) -> int:
        return self.rounds + (self.init == "mean")

    def _start(self, d: int, previous: ArrayLike | None) -> np.ndarray | None:
        """The start point, None for the weighted mean."""
        if self.init == "mean":
            return None
        if self.init == "previous" and previous is not None:
            return _check_vector(previous, d, "previous")
        return np.zeros(d)

    def __call__(
        self, points: ArrayLike, weights: ArrayLike | None = None, *, previous: ArrayLike | None = None
    ) -> np.ndarray:
        w = check_points(points)
        alpha = check_weights(weights, w.shape[0])
        start = self._start(w.shape[1], previous)
        return geometric_median(w, alpha, nu=self.nu, max_iter=self.rounds, tol=None, init=start).median.copy()

    def _aggregate(self, points: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        return self(points, alpha)

    def secure(
        self, points: Any, weights: Any = None, *, previous: ArrayLike | None = None, **privacy: Any
    ) -> "SecureAggregate":
        privacy.setdefault("nu", self.nu)
        first = next(iter(points.values())) if isinstance(points, Mapping) else np.asarray(points)[0]
        start = self._start(np.shape(first)[0], previous)
        return secure_geometric_median(
            points, weights, rounds=self.rounds, init="mean" if start is None else start, **privacy
        )

    def auto_nu(self, max_weight: float, norm_bound: float, alpha_min: float, alpha_max: float, t: int) -> float:
        """What ``nu="auto"`` picks: any broadcast has ||v|| <= C, so ||v - w_i|| <= 2C."""
        return smallest_nu(max_weight, norm_bound, alpha_min, alpha_max, t)


@dataclass(frozen=True)
class OneStepRule(Aggregator):
    """One-step RFA (Algorithm 3): one Weiszfeld step from v = 0, one oracle call."""

    nu: float = 1e-6
    name: ClassVar[str] = "one_step"
    mode: ClassVar[Mode] = "secure"
    uses_weights: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check_nu(self.nu)

    @property
    def oracle_calls(self) -> int:
        return 1

    def _aggregate(self, points: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        return one_step(points, alpha, nu=self.nu)

    def secure(self, points: Any, weights: Any = None, **privacy: Any) -> "SecureAggregate":
        privacy.setdefault("nu", self.nu)
        return one_step_geometric_median(points, weights, **privacy)

    def auto_nu(self, max_weight: float, norm_bound: float, alpha_min: float, alpha_max: float, t: int) -> float:
        """What ``nu="auto"`` picks: the broadcast is 0, so ||v - w_i|| <= C."""
        return smallest_nu(max_weight, norm_bound, alpha_min, alpha_max, t, reach=norm_bound)


# --- Plaintext rules --------------------------------------------------------------


@dataclass(frozen=True)
class CoordinateMedian(Aggregator):
    """Coordinate-wise (weighted) median (Yin et al. 2018).

    Per coordinate: the midpoint of the lower weighted median (the smallest
    value whose cumulative weight reaches half the total) and the upper one
    (the smallest whose cumulative weight exceeds half).  Both minimise
    sum_i alpha_i |x - w_ij|, and with equal weights the midpoint is exactly
    ``np.median`` (the mean of the two middle values for even n), which is used
    directly then.  Zero-weight points are never selected.
    """

    name: ClassVar[str] = "coordinate_median"
    mode: ClassVar[Mode] = "plaintext"
    uses_weights: ClassVar[bool] = True

    def _aggregate(self, points: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        if np.all(alpha == alpha[0]):
            return np.median(points, axis=0)
        order = np.argsort(points, axis=0, kind="stable")
        values = np.take_along_axis(points, order, axis=0)
        twice_cumulative = 2.0 * np.cumsum(alpha[order], axis=0)
        total = alpha.sum()
        lower = np.argmax(twice_cumulative >= total, axis=0)
        upper = np.argmax(twice_cumulative > total, axis=0)
        columns = np.arange(points.shape[1])
        return 0.5 * (values[lower, columns] + values[upper, columns])


@dataclass(frozen=True)
class TrimmedMean(Aggregator):
    """Coordinate-wise beta-trimmed mean (Yin et al. 2018), unweighted.

    Per coordinate, drop the floor(beta n) smallest and floor(beta n) largest
    values and average the rest.  Weights are ignored: the guarantee is stated
    in counts (it removes every corrupted value when at most beta n of the n
    clients are corrupted), and trimming by weight mass would need a bound on
    the corrupted clients' total weight instead, a different threat model.  A
    zero-weight point therefore still counts.
    """

    beta: float = 0.1
    name: ClassVar[str] = "trimmed_mean"
    mode: ClassVar[Mode] = "plaintext"
    uses_weights: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if not (np.isfinite(self.beta) and 0 <= self.beta < 0.5):
            raise InvalidArgument(f"beta (the trimmed fraction per side) must be in [0, 0.5), got {self.beta!r}")

    def _aggregate(self, points: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        n = points.shape[0]
        k = int(np.floor(self.beta * n))
        if k == 0:
            return points.mean(axis=0)
        # After partitioning at ranks k and n-k-1, rows k..n-k-1 hold exactly
        # the kept values of each column (in some order): no full sort needed.
        kept = np.partition(points, (k, n - k - 1), axis=0)[k : n - k]
        return kept.mean(axis=0)


@dataclass(frozen=True)
class NormClippedMean(Aggregator):
    """Weighted mean after clipping each update to norm <= tau: w_i min(1, tau / ||w_i||)."""

    tau: float = 1.0
    name: ClassVar[str] = "norm_clipped_mean"
    mode: ClassVar[Mode] = "plaintext"
    uses_weights: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check_positive(self.tau, "tau")

    def _aggregate(self, points: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        norms = np.sqrt(_row_sq_norms(points))
        scale = self.tau / np.maximum(norms, self.tau)  # = min(1, tau/||w_i||), no 0/0
        return (alpha * scale) @ points / alpha.sum()


def _krum_scores(points: np.ndarray, f: int) -> np.ndarray:
    """Blanchard et al. (2017): score(i) = sum of ||w_i - w_j||^2 over the n - f - 2 nearest j != i."""
    n = points.shape[0]
    neighbours = n - f - 2
    if neighbours < 1:
        raise InvalidArgument(f"Krum needs n - f - 2 >= 1 neighbours, got n={n}, f={f}")
    d2 = _pairwise_sq_distances(points)
    np.fill_diagonal(d2, np.inf)  # a point is not its own neighbour
    return np.partition(d2, neighbours - 1, axis=1)[:, :neighbours].sum(axis=1)


@dataclass(frozen=True)
class Krum(Aggregator):
    """Krum (Blanchard et al. 2017): the update with the smallest score, f Byzantine clients.

    Needs n - f - 2 >= 1; the paper's guarantee needs n > 2f + 2.  Ties go to
    the lowest index.  Weights are ignored: Krum returns one client's update
    unchanged and its selection counts neighbours (f is a number of clients),
    so a weight has nowhere to enter without changing the rule.
    """

    f: int = 0
    name: ClassVar[str] = "krum"
    mode: ClassVar[Mode] = "plaintext"
    uses_weights: ClassVar[bool] = False

    def __post_init__(self) -> None:
        _check_count(self.f, "f")

    def _aggregate(self, points: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        return points[int(np.argmin(_krum_scores(points, self.f)))].copy()


@dataclass(frozen=True)
class MultiKrum(Aggregator):
    """Multi-Krum (Blanchard et al. 2017): average of the m updates with the best Krum scores.

    The selection is by count, exactly as in Krum (ties to the lowest index).
    The average of the selected updates is alpha-weighted: the selection has
    already excluded the suspicious updates, and among the trusted ones the
    data-size weights of FedAvg apply (equal weights give Blanchard's plain
    average).  With m = 1 this is Krum.
    """

    f: int = 0
    m: int = 1
    name: ClassVar[str] = "multi_krum"
    mode: ClassVar[Mode] = "plaintext"
    uses_weights: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check_count(self.f, "f")
        if _check_count(self.m, "m") < 1:
            raise InvalidArgument(f"m must be at least 1, got {self.m}")

    def _aggregate(self, points: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        if self.m > points.shape[0]:
            raise InvalidArgument(f"m={self.m} exceeds the number of points n={points.shape[0]}")
        best = np.argsort(_krum_scores(points, self.f), kind="stable")[: self.m]
        chosen = alpha[best]
        if not chosen.sum() > 0:
            raise InvalidArgument("every update Multi-Krum selected has weight zero")
        return chosen @ points[best] / chosen.sum()


@dataclass(frozen=True)
class CenteredClipping(Aggregator):
    """Centred clipping (Karimireddy, He and Jaggi, ICML 2021).

    ``iterations`` times: v <- v + sum_i alpha_i clip_tau(w_i - v) / sum_i alpha_i,
    with clip_tau(x) = x min(1, tau / ||x||), from ``init`` (e.g. the previous
    aggregate, as in the paper) or, if None, the weighted mean.
    """

    tau: float = 1.0
    iterations: int = 3
    init: ArrayLike | None = field(default=None, compare=False)
    name: ClassVar[str] = "centered_clipping"
    mode: ClassVar[Mode] = "plaintext"
    uses_weights: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check_positive(self.tau, "tau")
        if _check_count(self.iterations, "iterations") < 1:
            raise InvalidArgument(f"iterations must be at least 1, got {self.iterations}")
        if self.init is not None:
            start = np.asarray(self.init, dtype=np.float64)
            if start.ndim != 1 or not np.all(np.isfinite(start)):
                raise InvalidArgument("init must be a finite 1-D vector")
            object.__setattr__(self, "init", start)

    def _aggregate(self, points: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        start = alpha @ points / alpha.sum() if self.init is None else _check_vector(self.init, points.shape[1], "init")
        moving = _MovingPointDistances(points, start)
        gamma_scale = alpha / alpha.sum()
        for _ in range(self.iterations):
            dist = moving.distances()
            clip = self.tau / np.maximum(dist, self.tau)  # min(1, tau / ||w_i - v||)
            moving.shift(gamma_scale * clip)
        return moving.v


Cost = Literal["center", "mean"]


def _best_cluster(points: np.ndarray, size: int, cost: Cost) -> np.ndarray:
    """Yi et al. (AAAI 2024), Algorithm 2, steps 1-5, for clusters of ``size`` points.

    For every x_i, K(x_i) is the ``size`` points of X closest to x_i, x_i
    included, and dist_i = cost(x_i, K(x_i)) by eq. (5): the largest distance
    (1-center) or the sum of squared distances (1-mean).  Returns the indices
    of K(x_j), j = argmin_i dist_i.  Ties (equal distances, equal costs) go to
    the lowest index; with ``size`` = 1 every point is a cluster of cost 0, so
    K(x_1) = {x_1}.  Under the 1-center cost two clusters tie whenever their
    largest distance is the same pair (x_i's farthest member is x_k and x_k's
    is x_i), so equal radii are ranked by the 1-mean cost first: the choice
    then depends on the points, not on their order.
    """
    others = size - 1  # K(x_i) is x_i itself plus its size - 1 nearest other points
    if others == 0:
        return np.zeros(1, dtype=np.intp)
    d2 = _pairwise_sq_distances(points)
    # x_i is always in K(x_i) (step 2, "including x_i"), even when a duplicate
    # of it ties at distance 0; the other members are picked from the rest.
    np.fill_diagonal(d2, np.inf)
    nearest = np.partition(d2, others - 1, axis=1)[:, :others]
    spread = nearest.sum(axis=1)  # sum_{x in K} ||x - x_i||^2, x_i itself adds 0
    if cost == "center":
        # max_{x in K} ||x - x_i||; comparing squared distances ranks the same.
        j = int(np.lexsort((spread, nearest.max(axis=1)))[0])  # step 5, equal radii by spread
    else:
        j = int(np.argmin(spread))  # step 5
    return np.concatenate(([j], np.argsort(d2[j], kind="stable")[:others]))


def _clusters_with_outliers(points: np.ndarray, f: int, cost: Cost) -> np.ndarray:
    """Inner aggregation, Algorithm 2 (CenterwO / MeanwO): the mean of the best n - f point cluster (step 6)."""
    n = points.shape[0]
    if not 2 * f < n:
        raise InvalidArgument(f"Algorithm 2 needs f < n/2, got f={f}, n={n}")
    return points[_best_cluster(points, n - f, cost)].mean(axis=0)  # 1/(n - f) sum_{x in K(x_j)} x


def _outside_cluster(points: np.ndarray, f: int, cost: Cost) -> np.ndarray:
    """Outer aggregation (Yi et al. Sec. 4.1): the mean of the n - f points outside the best f-point cluster.

    The answer to the sneak attack, where the f corrupted vectors hide inside the
    honest cloud but close to each other: the tightest cluster of f points is
    theirs, and removing it leaves the honest points.  f = 0 removes nothing.
    """
    n = points.shape[0]
    if not f < n:
        raise InvalidArgument(f"Outer aggregation needs f < n (a point outside the cluster), got f={f}, n={n}")
    keep = np.ones(n, dtype=bool)
    if f > 0:
        keep[_best_cluster(points, f, cost)] = False
    return points[keep].mean(axis=0)


@dataclass(frozen=True)
class CenterWithOutliers(Aggregator):
    """CenterwO: Algorithm 2 of Yi et al. with the 1-center cost (eq. 5, max distance).

    Returns the mean of the n - f points in the smallest ball centred at a data
    point x_j that covers n - f points (a 2-approximate 1-center with f outliers,
    Lemma 1).  Weights are ignored: the algorithm counts points (n - f of them)
    and returns their plain mean, 1/(n - f) sum_{x in K(x_j)} x (step 6).
    """

    f: int = 0
    name: ClassVar[str] = "center_wo"
    mode: ClassVar[Mode] = "plaintext"
    uses_weights: ClassVar[bool] = False

    def __post_init__(self) -> None:
        _check_count(self.f, "f")

    def _aggregate(self, points: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        return _clusters_with_outliers(points, self.f, "center")


@dataclass(frozen=True)
class MeanWithOutliers(Aggregator):
    """MeanwO: Algorithm 2 of Yi et al. with the 1-mean cost (eq. 5, sum of squared distances).

    Returns the mean of the n - f points nearest to the data point x_j whose
    n - f nearest points have the least sum of squared distances to it (a
    2-approximate 1-mean with f outliers, Lemma 1).  Weights are ignored, as
    in CenterwO: the algorithm counts points and returns their plain mean.
    """

    f: int = 0
    name: ClassVar[str] = "mean_wo"
    mode: ClassVar[Mode] = "plaintext"
    uses_weights: ClassVar[bool] = False

    def __post_init__(self) -> None:
        _check_count(self.f, "f")

    def _aggregate(self, points: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        return _clusters_with_outliers(points, self.f, "mean")


@dataclass(frozen=True)
class _ClusterRule(Aggregator):
    """A plaintext rule built on the clusters of Algorithm 2 with f outliers and one cost.

    Weights are ignored, as in CenterwO / MeanwO: the rules count points.
    """

    f: int = 0
    cost: ClassVar[Cost]
    mode: ClassVar[Mode] = "plaintext"
    uses_weights: ClassVar[bool] = False

    def __post_init__(self) -> None:
        _check_count(self.f, "f")


@dataclass(frozen=True)
class _OuterRule(_ClusterRule):
    """Outer aggregation (Yi et al. Sec. 4.1): the mean of the points outside the best f-point cluster."""

    def _aggregate(self, points: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        return _outside_cluster(points, self.f, self.cost)


@dataclass(frozen=True)
class CenterOuter(_OuterRule):
    """Outer aggregation with the 1-center cost: the mean of the points outside the best f-point ball.

    The f-point cluster is found as in Algorithm 2 (the smallest ball centred
    at a data point that covers f points); the answer to the sneak attack.
    """

    name: ClassVar[str] = "center_outer"
    cost: ClassVar[Cost] = "center"


@dataclass(frozen=True)
class MeanOuter(_OuterRule):
    """Outer aggregation with the 1-mean cost: the mean of the points outside the best f-point 1-mean cluster."""

    name: ClassVar[str] = "mean_outer"
    cost: ClassVar[Cost] = "mean"


@dataclass(frozen=True)
class TwoPhaseRule(_ClusterRule):
    """2PRASHB's prepare phase (Yi et al., Algorithm 3, lines 4-5): exactly two candidates, Inner and Outer.

    ``candidates(points)`` is the (2, d) array [Inner, Outer]: eq. (6), the mean
    of the best n - f point cluster (CenterwO / MeanwO), and eq. (7), the mean
    of the points outside the best f-point cluster.  The aggregate is the
    candidate the clients elect (lines 6-10, ``rfa.voting``), so it is not a
    function of the points alone: ``rule(points)`` raises ``NeedsVote``;
    ``rfa.training.train`` runs the vote in memory, and ``rfa_flower.RobustFedAvg``
    over Flower (the tally through the secure average).  Plaintext: both candidates need every
    update in the clear (only the vote tally can go through the secure average
    oracle, ``rfa.voting.secure_tally``).  Weights are ignored, as in CenterwO.
    """

    def candidates(self, points: ArrayLike, weights: ArrayLike | None = None) -> np.ndarray:
        w = check_points(points)
        check_weights(weights, w.shape[0])
        return np.stack([_clusters_with_outliers(w, self.f, self.cost), _outside_cluster(w, self.f, self.cost)])

    def _aggregate(self, points: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        raise NeedsVote(
            f"{self.name} is a two-phase rule: its aggregate is the candidate the clients elect, so it needs "
            f"their votes (run it in rfa.training.train or rfa_flower.RobustFedAvg, or put rule.candidates(points) to "
            f"the clients with rfa.voting.cast_ballots, tally and elect)"
        )


@dataclass(frozen=True)
class Cent2P(TwoPhaseRule):
    """Cent2P: 2PRASHB with Inner = CenterwO and Outer = CenterOuter (1-center cost)."""

    name: ClassVar[str] = "cent2p"
    cost: ClassVar[Cost] = "center"


@dataclass(frozen=True)
class Mean2P(TwoPhaseRule):
    """Mean2P: 2PRASHB with Inner = MeanwO and Outer = MeanOuter (1-mean cost)."""

    name: ClassVar[str] = "mean2p"
    cost: ClassVar[Cost] = "mean"


registry: dict[str, type[Aggregator]] = {
    rule.name: rule
    for rule in (
        Mean,
        GeometricMedianRule,
        OneStepRule,
        CoordinateMedian,
        TrimmedMean,
        NormClippedMean,
        Krum,
        MultiKrum,
        CenteredClipping,
        CenterWithOutliers,
        MeanWithOutliers,
        CenterOuter,
        MeanOuter,
        Cent2P,
        Mean2P,
    )
}


def make_aggregator(name: str, **kwargs: Any) -> Aggregator:
    """``make_aggregator("trimmed_mean", beta=0.2)``: the rule registered as ``name``."""
    try:
        rule = registry[name]
    except KeyError:
        raise InvalidArgument(f"unknown aggregator {name!r}; known: {', '.join(sorted(registry))}") from None
    known = parameters(name)
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        takes = f"its parameters are {', '.join(known)}" if known else "it takes no parameters"
        raise InvalidArgument(f"{name} has no parameter {', '.join(map(repr, unknown))}; {takes}")
    return rule(**kwargs)


def parameters(name: str) -> tuple[str, ...]:
    """The keyword arguments ``make_aggregator(name, ...)`` accepts, in declaration order."""
    return tuple(f.name for f in fields(registry[name]) if f.init)
