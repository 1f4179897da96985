"""The geometric median as an iterative secure aggregate (RFA paper, Sec. IV).

Every step is exactly one call to the secure average oracle
(``secagg.SecureAverageOracle``): the server broadcasts v, each client
computes beta_i = alpha_i / max(nu, ||v - w_i||) on its own vector
(Algorithm 2, line 3), and the oracle returns sum beta_i w_i / sum beta_i over
the clients included by secure aggregation.  The server sees only v and the
oracle's output, never a w_i or a beta_i.  Before every step the server, and
every client, checks the privacy certificate of ``privacy.py``; a violated
certificate stops the step before any masked input exists.

What the simulation additionally records (for the report, not visible to the
server in a deployment): the objective g(v) and the realised maximum
effective weight of each step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Literal, Mapping, Sequence

import numpy as np
from .errors import InvalidArgument

from secagg import SecureAverageOracle

from .privacy import PrivacyPolicy, smallest_nu
from .weiszfeld import weiszfeld_weights

Dropouts = Mapping[str, Iterable[int]]


@dataclass(frozen=True)
class StepRecord:
    kind: Literal["mean", "weiszfeld", "one-step"]
    broadcast: np.ndarray | None  # the v the server sent (None for a mean step)
    output: np.ndarray  # the oracle's answer, projected onto the norm ball
    included: tuple[int, ...]
    certified_weight: float  # the bound checked before the step
    realised_max_weight: float  # max_i beta_i / sum_j beta_j over included (simulation only)
    objective: float  # g(output) = sum_i alpha_i ||output - w_i|| (simulation only)
    error_bound: float  # the oracle's quantization bound for this call
    bytes_per_client: float  # mean bytes a client sent and received in this call


@dataclass(frozen=True)
class SecureAggregate:
    median: np.ndarray
    rounds: tuple[StepRecord, ...]
    policy: PrivacyPolicy
    threshold: int  # the secure aggregation threshold of the steps

    @property
    def oracle_calls(self) -> int:
        return len(self.rounds)

    @property
    def max_effective_weight(self) -> float:
        return max(r.realised_max_weight for r in self.rounds)


class _Cohort:
    """The clients' side of the simulation: their clipped vectors and weights."""

    def __init__(self, points, weights, norm_bound: float | None, alpha_range: tuple[float, float] | None):
        if isinstance(points, Mapping):
            self.ids = sorted(points)
            matrix = np.stack([np.asarray(points[u], dtype=np.float64) for u in self.ids])
        else:
            matrix = np.asarray(points, dtype=np.float64)
            if matrix.ndim != 2:
                raise InvalidArgument(f"points must be an (n, d) array or a mapping, got shape {matrix.shape}")
            self.ids = list(range(1, matrix.shape[0] + 1))
        if not np.all(np.isfinite(matrix)):
            raise InvalidArgument("points must be finite")
        n = matrix.shape[0]
        if weights is None:
            alpha = np.ones(n)
        elif isinstance(weights, Mapping):
            alpha = np.array([float(weights[u]) for u in self.ids])
        else:
            alpha = np.asarray(weights, dtype=np.float64).reshape(-1)
        if alpha.shape != (n,) or not np.all(np.isfinite(alpha)) or np.any(alpha <= 0):
            raise InvalidArgument("weights must be one positive finite number per point")
        norms = np.linalg.norm(matrix, axis=1)
        # C and [alpha_min, alpha_max] are public; unset, the simulation plays them
        # as agreed in advance from the data (the result records the values used).
        self.norm_bound = float(norm_bound) if norm_bound is not None else float(max(norms.max(), 1e-12))
        lo, hi = alpha_range if alpha_range is not None else (float(alpha.min()), float(alpha.max()))
        self.alpha_range = (float(lo), float(hi))
        # Client-side clipping to the public norm ball and weight range.
        scale = np.minimum(1.0, self.norm_bound / np.maximum(norms, 1e-300))
        self.points = matrix * scale[:, None]
        self.alpha = np.clip(alpha, lo, hi)

    def objective(self, v: np.ndarray) -> float:
        return float(self.alpha @ np.linalg.norm(self.points - v, axis=1))


def _plans(dropouts: Dropouts | Sequence[Dropouts] | None, calls: int) -> list[Dropouts | None]:
    if dropouts is None or isinstance(dropouts, Mapping):
        return [dropouts] * calls
    plans = list(dropouts)
    return plans[:calls] + [None] * max(0, calls - len(plans))


def _project(v: np.ndarray, radius: float) -> np.ndarray:
    """Onto the public norm ball: removes quantization overshoot, so honest clients accept v."""
    norm = float(np.linalg.norm(v))
    return v if norm <= radius else v * (radius / norm)


def _setup(
    points, weights, *, nu, max_weight, norm_bound, alpha_range, oracle, threshold
) -> tuple[_Cohort, PrivacyPolicy, SecureAverageOracle, int]:
    cohort = _Cohort(points, weights, norm_bound, alpha_range)
    lo, hi = cohort.alpha_range
    n = len(cohort.ids)
    t = oracle.threshold_for(n) if oracle is not None else SecureAverageOracle(threshold).threshold_for(n)
    if nu == "auto":
        if max_weight is None:
            raise InvalidArgument('nu="auto" needs max_weight: it picks the smallest nu that certifies it')
        nu = smallest_nu(max_weight, cohort.norm_bound, lo, hi, t)
    policy = PrivacyPolicy(None if nu is None else float(nu), cohort.norm_bound, lo, hi, max_weight)
    beta_max = policy.beta_max
    if oracle is None:
        oracle = SecureAverageOracle(
            threshold, value_bound=cohort.norm_bound, weight_bound=beta_max, max_clients=max(n, 2)
        )
    elif oracle.encoding.value_bound < cohort.norm_bound or oracle.encoding.weight_bound < beta_max * (1 - 1e-12):
        raise InvalidArgument(
            f"the oracle's encoding (value bound {oracle.encoding.value_bound:.3g}, weight bound "
            f"{oracle.encoding.weight_bound:.3g}) does not cover C = {cohort.norm_bound:.3g} and "
            f"the largest beta = {beta_max:.3g}: its clipping would distort the step"
        )
    return cohort, policy, oracle, t


def _step(
    cohort: _Cohort,
    policy: PrivacyPolicy,
    oracle: SecureAverageOracle,
    threshold: int,
    v: np.ndarray | None,
    kind: Literal["mean", "weiszfeld", "one-step"],
    dropouts: Dropouts | None,
) -> StepRecord:
    """One oracle call. Checks happen first, so a refusal sends nothing."""
    if v is None:  # a plain weighted mean: beta_i = alpha_i
        cert = policy.check_mean(threshold, "server")
        beta = cohort.alpha
    else:
        cert = policy.check(threshold, "server")
        policy.client_check(v, threshold, "every client")  # each honest client runs the same check
        beta = weiszfeld_weights(cohort.points, v, cohort.alpha, policy.nu)  # Algorithm 2, line 3
    result = oracle.average(
        {u: cohort.points[k] for k, u in enumerate(cohort.ids)},
        {u: float(beta[k]) for k, u in enumerate(cohort.ids)},
        dropouts=dropouts,
        clip=True,  # clipping into the public C and beta_max is part of the privacy rule (privacy.py)
    )
    index = {u: k for k, u in enumerate(cohort.ids)}
    included_beta = beta[[index[u] for u in result.included]]
    output = _project(result.value, policy.norm_bound)
    return StepRecord(
        kind=kind,
        broadcast=None if v is None else v.copy(),
        output=output,
        included=result.included,
        certified_weight=cert,
        realised_max_weight=float(included_beta.max() / included_beta.sum()),
        objective=cohort.objective(output),
        error_bound=result.quantization_error,  # against the clipped inputs, which the rule aggregates
        bytes_per_client=result.bytes_per_client,
    )


def secure_geometric_median(
    points,
    weights=None,
    *,
    rounds: int = 3,
    nu: float | Literal["auto"] = 1e-6,
    max_weight: float | None = None,
    norm_bound: float | None = None,
    alpha_range: tuple[float, float] | None = None,
    init: Literal["mean"] | np.ndarray = "mean",
    oracle: SecureAverageOracle | None = None,
    threshold: int | float = 2 / 3,
    dropouts: Dropouts | Sequence[Dropouts] | None = None,
) -> SecureAggregate:
    """Smoothed Weiszfeld (Algorithm 2) with ``rounds`` secure oracle calls.

    ``points``: a mapping id -> vector, or an (n, d) array (ids 1..n).
    ``weights``: alpha_i (default 1), clipped into the public ``alpha_range``.
    ``norm_bound``: the public C every client clips its vector to.
    ``max_weight``: s of Definition 1 (iv), enforced before every step;
    ``nu="auto"`` picks the smallest nu that certifies it.
    ``init="mean"`` starts from the secure weighted mean, one more oracle call
    (recorded as a step of kind "mean"), so the result equals the plaintext
    ``geometric_median(..., max_iter=rounds)``; an array starts there for free.
    ``threshold`` is the secure aggregation threshold when no oracle is given.
    ``dropouts``: one plan for every call, or a sequence of plans, one per call.
    """
    if not isinstance(rounds, int) or rounds < 1:
        raise InvalidArgument(f"rounds must be a positive integer, got {rounds!r}")
    cohort, policy, oracle, t = _setup(
        points, weights, nu=nu, max_weight=max_weight, norm_bound=norm_bound,
        alpha_range=alpha_range, oracle=oracle, threshold=threshold,
    )
    calls = rounds + (1 if isinstance(init, str) else 0)
    plans = iter(_plans(dropouts, calls))
    records: list[StepRecord] = []
    if isinstance(init, str):
        if init != "mean":
            raise InvalidArgument(f'init must be "mean" or a vector, got {init!r}')
        records.append(_step(cohort, policy, oracle, t, None, "mean", next(plans)))
        v = records[-1].output
    else:
        v = np.asarray(init, dtype=np.float64)
        if v.shape != (cohort.points.shape[1],):
            raise InvalidArgument(f"init must have shape ({cohort.points.shape[1]},), got {v.shape}")
    for _ in range(rounds):
        records.append(_step(cohort, policy, oracle, t, v, "weiszfeld", next(plans)))
        v = records[-1].output
    return SecureAggregate(median=v, rounds=tuple(records), policy=policy, threshold=t)


def one_step_geometric_median(
    points,
    weights=None,
    *,
    nu: float | Literal["auto"] = 1e-6,
    max_weight: float | None = None,
    norm_bound: float | None = None,
    alpha_range: tuple[float, float] | None = None,
    oracle: SecureAverageOracle | None = None,
    threshold: int | float = 2 / 3,
    dropouts: Dropouts | None = None,
) -> SecureAggregate:
    """One-step RFA (Algorithm 3): one oracle call from v = 0, same privacy rule."""
    cohort, policy, oracle, t = _setup(
        points, weights, nu=nu, max_weight=max_weight, norm_bound=norm_bound,
        alpha_range=alpha_range, oracle=oracle, threshold=threshold,
    )
    zero = np.zeros(cohort.points.shape[1])
    record = _step(cohort, policy, oracle, t, zero, "one-step", dropouts)
    return SecureAggregate(median=record.output, rounds=(record,), policy=policy, threshold=t)


def secure_mean(
    points,
    weights=None,
    *,
    max_weight: float | None = None,
    norm_bound: float | None = None,
    alpha_range: tuple[float, float] | None = None,
    oracle: SecureAverageOracle | None = None,
    threshold: int | float = 2 / 3,
    dropouts: Dropouts | None = None,
) -> SecureAggregate:
    """The weighted mean (FedAvg's aggregate): one oracle call with beta_i = alpha_i.

    Its effective weights are alpha_i / sum alpha_j <= the floor of
    ``privacy.weight_floor``; ``max_weight`` below that floor is refused.
    """
    cohort, policy, oracle, t = _setup(
        points, weights, nu=None, max_weight=max_weight, norm_bound=norm_bound,
        alpha_range=alpha_range, oracle=oracle, threshold=threshold,
    )
    record = _step(cohort, policy, oracle, t, None, "mean", dropouts)
    return SecureAggregate(median=record.output, rounds=(record,), policy=policy, threshold=t)
