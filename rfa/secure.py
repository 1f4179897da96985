"""The geometric median as an iterative secure aggregate (RFA paper, Sec. IV).

Every step is exactly one call to the secure average oracle
(``secagg.SecureAverageOracle``): the server broadcasts v, each client
computes beta_i = alpha_i / max(nu, ||v - w_i||) on its own vector
(Algorithm 2, line 3), and the oracle returns sum beta_i w_i / sum beta_i over
the clients included by secure aggregation.  The server sees only v and the
oracle's output, never a w_i or a beta_i.  Before every step the server, and
every client, checks the privacy certificate of ``privacy.py``; a violated
certificate stops the step before any masked input exists.  All calls on one
set of vectors form one ``CohortSession``, which is one multi-call secure
aggregation session (``secagg.OracleSession``, protocol_spec.md 16): key
agreement and secret sharing once, then one masked input and one unmasking per
call.  Its first call pins the survivor set: the clients refuse to unmask a
later call over any other set.

What the simulation additionally records (for the report, not visible to the
server in a deployment): the objective g(v) and the realised maximum
effective weight of each step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Literal, Mapping, Sequence

import numpy as np

from secagg import SecureAverageOracle, SurvivorsChanged
from secagg.errors import NoisyWeightSum

from .errors import InvalidArgument, PolicyError, SurvivorSetChanged
from .privacy import PrivacyPolicy, into_ball, smallest_nu
from .weiszfeld import weiszfeld_weights

Dropouts = Mapping[str, Iterable[int]]


@dataclass(frozen=True)
class StepRecord:
    kind: Literal["mean", "weiszfeld", "one-step"]
    broadcast: np.ndarray | None  # the v the server sent (None for a mean step)
    output: np.ndarray  # the oracle's answer, projected onto the norm ball
    included: tuple[int, ...]
    sum_weights: float  # sum of the included beta_i, which the server learns with the output
    certified_weight: float  # the bound checked before the step (t inputs)
    included_weight_bound: float  # the same bound with the actual count len(included) >= t
    realised_max_weight: float  # max_i beta_i / sum_j beta_j over included (simulation only)
    objective: float  # g(output) = sum_i alpha_i ||output - w_i|| (simulation only)
    error_bound: float  # the oracle's quantization bound for this call
    bytes_per_client: float  # mean bytes a client sent and received in this call
    noise_std: float = 0.0  # differential privacy: the per-coordinate noise std of the output (rfa/dp.py)


@dataclass(frozen=True)
class SecureAggregate:
    median: np.ndarray
    rounds: tuple[StepRecord, ...]
    policy: PrivacyPolicy
    threshold: int  # the secure aggregation threshold of the steps
    stopped: str | None = None  # why the last planned step was refused (survivor set changed), if it was

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
        # C is public.  With no certificate to compute (max_weight=None) the simulation
        # may play it as agreed in advance from the data (the result records the value).
        norms = np.linalg.norm(matrix, axis=1)
        self.norm_bound = float(norm_bound) if norm_bound is not None else float(max(norms.max(), 1e-12))
        lo, hi = alpha_range if alpha_range is not None else (float(alpha.min()), float(alpha.max()))
        self.alpha_range = (float(lo), float(hi))
        # Client-side clipping to the public norm ball and weight range.
        self.points = into_ball(matrix, self.norm_bound)
        self.alpha = np.clip(alpha, lo, hi)

    def keep(self, ids: Sequence[int]) -> None:
        """From now on only these clients take part (the survivor set pinned by the first call)."""
        rows = [self.ids.index(u) for u in ids]
        self.ids, self.points, self.alpha = list(ids), self.points[rows], self.alpha[rows]

    def objective(self, v: np.ndarray) -> float:
        return float(self.alpha @ np.linalg.norm(self.points - v, axis=1))


def _plans(dropouts: Dropouts | Sequence[Dropouts] | None, calls: int) -> list[Dropouts | None]:
    if dropouts is None or isinstance(dropouts, Mapping):
        return [dropouts] * calls
    plans = list(dropouts)
    return plans[:calls] + [None] * max(0, calls - len(plans))


class CohortSession:
    """One aggregation of one set of client vectors: the ``calls`` oracle calls a server may make on them,
    in one multi-call secure aggregation session.

    The first call pins the survivor set: each later call is answered only by
    the clients it included, and if a later call would reveal a sum over any
    other set (a client dropped, or one came back) every honest client refuses
    to unmask it (``SurvivorSetChanged``), so nothing is revealed.  Two sums over
    sets differing by one client, with the same beta_i for the others, would
    reveal that client's beta_j w_j and beta_j (protocol_spec.md).  A client
    takes part in one session per vector; a new vector (the next training
    round's update) opens a new session.
    """

    def __init__(
        self, points, weights=None, *, nu: float | Literal["auto"] | None = 1e-6, max_weight: float | None = None,
        norm_bound: float | None = None, alpha_range: tuple[float, float] | None = None,
        oracle: SecureAverageOracle | None = None, threshold: int | float = 2 / 3,
        first_broadcast: Literal["zero", "any"] = "any", calls: int = 1,
    ):
        if norm_bound is None and max_weight is not None:
            raise PolicyError(
                "max_weight needs the public norm bound C (norm_bound): the certificate is computed from "
                "it, and a C taken from the data would publish the largest client norm"
            )
        cohort = _Cohort(points, weights, norm_bound, alpha_range)
        lo, hi = cohort.alpha_range
        n = len(cohort.ids)
        t = oracle.threshold_for(n) if oracle is not None else SecureAverageOracle(threshold).threshold_for(n)
        if nu == "auto":
            if max_weight is None:
                raise InvalidArgument('nu="auto" needs max_weight: it picks the smallest nu that certifies it')
            # One-step RFA only ever broadcasts v = 0, so ||v - w_i|| <= C, not 2C.
            reach = cohort.norm_bound if first_broadcast == "zero" else None
            nu = smallest_nu(max_weight, cohort.norm_bound, lo, hi, t, reach)
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
        self.cohort, self.policy, self.oracle, self.threshold = cohort, policy, oracle, t
        self.session = oracle.session(calls)
        self.pinned: tuple[int, ...] | None = None

    @property
    def dimension(self) -> int:
        return self.cohort.points.shape[1]

    def mean(self, dropouts: Dropouts | None = None) -> StepRecord:
        """A plain weighted mean: beta_i = alpha_i."""
        return self._step(None, "mean", dropouts)

    def weiszfeld(
        self, v: np.ndarray, dropouts: Dropouts | None = None, kind: Literal["weiszfeld", "one-step"] = "weiszfeld"
    ) -> StepRecord:
        """One smoothed Weiszfeld step around the broadcast v (Algorithm 2, lines 3-4)."""
        return self._step(np.asarray(v, dtype=np.float64), kind, dropouts)

    def _step(
        self, v: np.ndarray | None, kind: Literal["mean", "weiszfeld", "one-step"], dropouts: Dropouts | None
    ) -> StepRecord:
        """One oracle call. Checks happen first, so a refusal sends nothing."""
        cohort, policy, oracle, threshold = self.cohort, self.policy, self.oracle, self.threshold
        if v is None:  # a plain weighted mean: beta_i = alpha_i
            cert = policy.check_mean(threshold, "server")
            beta = cohort.alpha
        else:
            if v.shape != (self.dimension,):
                raise InvalidArgument(f"the broadcast must have shape ({self.dimension},), got {v.shape}")
            cert = policy.check(threshold, "server", v)
            policy.client_check(v, threshold, "every client")  # each honest client runs the same check
            beta = weiszfeld_weights(cohort.points, v, cohort.alpha, policy.nu)  # Algorithm 2, line 3
        if dropouts is not None and self.pinned is not None:  # clients outside the pinned set left already
            dropouts = {r: [u for u in who if u in self.pinned] for r, who in dropouts.items()}
        scale = 1.0
        if getattr(oracle, "dp", None) is not None:  # each step's own weight bound sets its sensitivity (rfa/dp.py)
            scale = oracle.encoding.weight_bound / (policy.alpha_max if v is None else policy.beta_max)
        try:
            result = self.session.average(
                {u: cohort.points[k] for k, u in enumerate(cohort.ids)},
                {u: float(beta[k]) * scale for k, u in enumerate(cohort.ids)},
                dropouts=dropouts,
                clip=True,  # clipping into the public C and beta_max is part of the privacy rule (privacy.py)
                broadcast=b"" if v is None else v.astype("<f8").tobytes(),  # the call_open's public v
            )
        except SurvivorsChanged as stopped:  # the protocol's pinning (server and every client): nothing unmasked
            raise SurvivorSetChanged(
                "every client",
                f"this step's survivor set differs from the one pinned by the first call of the aggregation "
                f"({stopped}); two sums over different sets would reveal the difference, so nobody unmasks",
            ) from None
        index = {u: k for k, u in enumerate(cohort.ids)}
        included_beta = beta[[index[u] for u in result.included]]
        if self.pinned is None:
            self.pinned = result.included
            cohort.keep(result.included)
        count = len(result.included)
        included_bound = policy.mean_certificate(count) if v is None else policy.certificate(count, v)
        output = into_ball(result.value, policy.norm_bound)
        return StepRecord(
            kind=kind,
            broadcast=None if v is None else v.copy(),
            output=output,
            included=result.included,
            sum_weights=result.sum_weights / scale,
            certified_weight=cert,
            included_weight_bound=included_bound,
            realised_max_weight=float(included_beta.max() / included_beta.sum()),
            objective=cohort.objective(output),
            error_bound=result.quantization_error,  # against the clipped inputs, which the rule aggregates
            bytes_per_client=result.bytes_per_client,
            noise_std=result.noise_std,
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
    init: Literal["mean", "zero"] | np.ndarray = "mean",
    oracle: SecureAverageOracle | None = None,
    threshold: int | float = 2 / 3,
    dropouts: Dropouts | Sequence[Dropouts] | None = None,
) -> SecureAggregate:
    """Smoothed Weiszfeld (Algorithm 2) with ``rounds`` secure oracle calls.

    ``points``: a mapping id -> vector, or an (n, d) array (ids 1..n).
    ``weights``: alpha_i (default 1), clipped into the public ``alpha_range``.
    ``norm_bound``: the public C every client clips its vector to; required
    with ``max_weight`` (``PolicyError`` otherwise).
    ``max_weight``: s of Definition 1 (iv), enforced before every step;
    ``nu="auto"`` picks the smallest nu that certifies it.
    ``init``: the start point.  ``"mean"`` starts from the secure weighted
    mean, one more oracle call (recorded as a step of kind "mean"), so the
    result equals the plaintext ``geometric_median(..., max_iter=rounds)``;
    ``"zero"`` or a public vector of norm <= C (e.g. the previous round's
    aggregate) starts there for free.
    ``threshold`` is the secure aggregation threshold when no oracle is given.
    ``dropouts``: one plan for every call, or a sequence of plans, one per call.
    The first call pins the survivor set (``CohortSession``): if a later call
    loses a client the clients refuse to unmask it, and the result is the
    last completed iterate, with ``stopped`` saying why.
    """
    if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1:
        raise InvalidArgument(f"rounds must be a positive integer, got {rounds!r}")
    if isinstance(init, str) and init not in ("mean", "zero"):
        raise InvalidArgument(f'init must be "mean", "zero" or a vector, got {init!r}')
    from_mean = isinstance(init, str) and init == "mean"
    calls = rounds + (1 if from_mean else 0)
    session = CohortSession(
        points, weights, nu=nu, max_weight=max_weight, norm_bound=norm_bound,
        alpha_range=alpha_range, oracle=oracle, threshold=threshold, calls=calls,
    )
    plans = iter(_plans(dropouts, calls))
    records: list[StepRecord] = []
    stopped = None
    if isinstance(init, str):
        v = np.zeros(session.dimension) if init == "zero" else None
    else:
        v = np.asarray(init, dtype=np.float64)
        if v.shape != (session.dimension,):
            raise InvalidArgument(f"init must have shape ({session.dimension},), got {v.shape}")
    try:
        if v is None:
            records.append(session.mean(next(plans)))
            v = records[-1].output
        for _ in range(rounds):
            records.append(session.weiszfeld(v, next(plans)))
            v = records[-1].output
    except SurvivorSetChanged as refused:
        if not records:
            raise
        stopped = refused.reason  # the last completed iterate is still a certified output
    except NoisyWeightSum as swamped:  # differential privacy: this step's noise drowned its weights
        if not records:
            raise
        stopped = str(swamped)  # the last iterate is still a (noisy) output
    return SecureAggregate(
        median=v, rounds=tuple(records), policy=session.policy, threshold=session.threshold, stopped=stopped
    )


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
    """One-step RFA (Algorithm 3): one oracle call from v = 0, same privacy rule.

    Its broadcast is 0, so ||v - w_i|| <= C: the certificate (and the nu that
    ``nu="auto"`` picks) uses C, not the 2C of an arbitrary broadcast.
    """
    session = CohortSession(
        points, weights, nu=nu, max_weight=max_weight, norm_bound=norm_bound,
        alpha_range=alpha_range, oracle=oracle, threshold=threshold, first_broadcast="zero",
    )
    record = session.weiszfeld(np.zeros(session.dimension), dropouts, kind="one-step")
    return SecureAggregate(median=record.output, rounds=(record,), policy=session.policy, threshold=session.threshold)


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
    session = CohortSession(
        points, weights, nu=None, max_weight=max_weight, norm_bound=norm_bound,
        alpha_range=alpha_range, oracle=oracle, threshold=threshold,
    )
    record = session.mean(dropouts)
    return SecureAggregate(median=record.output, rounds=(record,), policy=session.policy, threshold=session.threshold)
