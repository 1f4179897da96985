"""Federated training: RFA and FedAvg (Algorithm 1), with personalisation (Algorithm 4).

The server model is a flat parameter vector w.  Each round samples m of the n
clients without replacement; each runs tau local SGD steps from w; the
corrupted ones (a fixed set C, chosen by weight as in equation (5)) may replace
what they send; the server adds the aggregate of the updates w_i - w, weighted
by alpha_i = N_i (footnote 4: updates, not models, are aggregated).

With ``secure=True`` every average is a call to the secure average oracle
(secagg, in memory or over loopback TCP), the privacy-weight rule of
``rfa.privacy`` applies with the public norm bound C on updates and the public
weight range [min N_i, max N_i], and the run counts oracle calls and bytes.
A plaintext-only rule with ``secure=True`` is refused before training starts.

With ``momentum=beta`` the loop is RASHB instead (Yi et al., AAAI 2024,
Algorithm 1): each sampled client computes one stochastic gradient g at w on a
mini-batch, updates its own momentum m_i <- beta m_i + (1 - beta) g (m_i = 0
before its first round) and sends m_i; the server steps w <- w - lr R with R
the rule's aggregate of the momenta.  A two-phase rule (Cent2P, Mean2P) makes
the round 2PRASHB (Algorithm 3): the server turns the rule's two candidate
aggregates into two candidate models, the round's clients vote on them
(``rfa.voting``) and the elected one becomes w; each round's ``Election`` is
recorded in ``TrainingResult.elections``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping

import numpy as np

from secagg import SecureAverageOracle, simulate
from secagg.errors import NoisyWeightSum

from .aggregators import Aggregator, GeometricMedianRule, TwoPhaseRule
from .corruption import alie_z, choose_corrupted, corrupt_updates, poison_clients
from .data import FederatedDataset
from .errors import InvalidArgument, PlaintextOnly, UncertifiableBound
from .models import ClassificationModel, Model, draw_batch, local_sgd
from .privacy import PrivacyPolicy, smallest_nu, weight_floor
from .voting import CorruptedVote, Election, cast_ballots, elect, tally

if TYPE_CHECKING:
    from .dp import RobustDP  # imported by its users: dp-accounting takes seconds to import


@dataclass(frozen=True)
class TrainingConfig:
    rounds: int = 30  # T
    clients_per_round: int = 10  # m
    local_steps: int = 10  # tau
    lr: float = 0.1  # gamma
    batch_size: int = 16
    personalised: bool = False  # Algorithm 4
    data_corruption: str | None = None  # "negate" or "label_flip" (rfa.corruption.DATA_CORRUPTIONS)
    update_corruption: str | None = None  # "omniscient", "gaussian", "sign_flip", "ipm", "alie", "replay"
    rho: float = 0.0  # corrupted fraction, by weight
    corruption_params: Mapping[str, Any] = field(default_factory=dict)
    secure: bool = False
    transport: Literal["memory", "tcp", "sum"] = "memory"  # "sum": the revealed sum only (large simulations)
    threshold: int | float = 2 / 3  # secure aggregation threshold (int, or a fraction of m)
    norm_bound: float = 100.0  # C: public bound on update norms (secure mode clips to it)
    max_weight: float | None = None  # s: the privacy-weight bound (secure mode)
    nu: float | Literal["auto"] | None = None  # None: the rule's own nu
    eval_every: int = 1
    seed: int = 0
    momentum: float | None = None  # beta: RASHB (Yi et al. Algorithm 1) instead of local SGD updates
    corrupted_by: Literal["weight", "count"] = "weight"  # rho of the data (equation (5)) or of the clients
    corrupted_vote: CorruptedVote = "worse"  # two-phase rules: what corrupted clients vote
    vote_batch_size: int | None = None  # two-phase rules: rows of each voter's fresh batch (None: batch_size)

    def __post_init__(self) -> None:
        for name in ("rounds", "clients_per_round", "local_steps", "batch_size", "eval_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise InvalidArgument(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not 0 <= self.rho < 1:
            raise InvalidArgument(f"rho must lie in [0, 1), got {self.rho}")
        if self.transport not in ("memory", "tcp", "sum"):
            raise InvalidArgument(f"transport must be 'memory', 'tcp' or 'sum', got {self.transport!r}")
        if self.data_corruption and self.update_corruption:
            raise InvalidArgument("choose one corruption: data or update")
        if self.momentum is not None:
            if not 0 <= self.momentum < 1:
                raise InvalidArgument(f"momentum (beta) must lie in [0, 1), got {self.momentum}")
            if self.local_steps != 1 or self.personalised:
                raise InvalidArgument("momentum (RASHB) takes one gradient per round: set local_steps=1, personalised=False")
        if self.vote_batch_size is not None and (not isinstance(self.vote_batch_size, int) or self.vote_batch_size < 1):
            raise InvalidArgument(f"vote_batch_size must be a positive integer or None, got {self.vote_batch_size!r}")
        if self.corrupted_by not in ("weight", "count"):
            raise InvalidArgument(f"corrupted_by must be 'weight' or 'count', got {self.corrupted_by!r}")
        if self.corrupted_vote not in ("worse", "abstain"):
            raise InvalidArgument(f"corrupted_vote must be 'worse' or 'abstain', got {self.corrupted_vote!r}")


@dataclass(frozen=True)
class RoundRecord:
    round: int  # outer iterations done
    oracle_calls: int  # cumulative calls to the secure average oracle (or the equivalent count)
    accuracy: float  # global model on the held-out test set (classification); nan otherwise
    local_accuracy: float  # on the clients' local held-out data; personalised models if personalised
    test_loss: float
    bytes_per_client: float  # secure mode: mean bytes a participating client exchanged this round
    max_effective_weight: float  # secure mode: realised max_i beta_i / sum_j beta_j this round
    certified_weight: float  # secure mode: the largest certificate checked this round
    corrupted_share: float = float("nan")  # the corrupted clients' fraction of this round's weight
    epsilon: float = float("nan")  # dp: epsilon spent so far at the run's delta (rfa/dp.py)


@dataclass(frozen=True)
class TrainingResult:
    params: np.ndarray
    personal: dict[int, np.ndarray]  # u_i of personalised clients (empty otherwise)
    history: tuple[RoundRecord, ...]
    corrupted: np.ndarray  # bool mask of C
    config: TrainingConfig
    elections: tuple[Election, ...] = ()  # two-phase rules: every round's vote counts and winner
    average: np.ndarray | None = None  # (1/T) sum_{t=0}^{T-1} theta_t, what Yi et al. Algorithms 1 and 3 return

    @property
    def final(self) -> RoundRecord:
        return self.history[-1]


@dataclass(frozen=True)
class LocalTest:
    """Each client's held-out data, for personalised evaluation."""

    X: tuple[np.ndarray, ...]
    y: tuple[np.ndarray, ...]


def split_local_test(
    dataset: FederatedDataset, fraction: float, rng: np.random.Generator
) -> tuple[FederatedDataset, LocalTest]:
    """Hold out ``fraction`` of every client's rows (at least one, leaving at least one)."""
    train_X, train_y, test_X, test_y = [], [], [], []
    for X, y in zip(dataset.client_X, dataset.client_y):
        order = rng.permutation(len(y))
        k = min(max(1, round(fraction * len(y))), len(y) - 1)
        train_X.append(X[order[k:]])
        train_y.append(y[order[k:]])
        test_X.append(X[order[:k]])
        test_y.append(y[order[:k]])
    train = FederatedDataset(
        client_X=tuple(train_X),
        client_y=tuple(train_y),
        X_test=dataset.X_test,
        y_test=dataset.y_test,
        n_classes=dataset.n_classes,
        truth=dataset.truth,
    )
    return train, LocalTest(tuple(test_X), tuple(test_y))


def _runner(transport: str) -> Callable[..., Any]:
    if transport == "sum":  # simulations only: the revealed sum without running the session
        from secagg.simulation import revealed_sum

        return revealed_sum
    if transport == "tcp":
        from secagg.tcp import simulate_tcp

        return simulate_tcp
    return simulate


class _SecureAggregation:
    """The public side of secure mode: one oracle for the run, the policy's public numbers."""

    def __init__(self, rule: Aggregator, config: TrainingConfig, counts: np.ndarray, dp: "RobustDP | None" = None):
        self.rule = rule
        self.config = config
        self.alpha_range = (float(counts.min()), float(counts.max()))
        m = config.clients_per_round
        t = SecureAverageOracle(config.threshold).threshold_for(m)
        nu = config.nu if config.nu is not None else getattr(rule, "nu", None)
        if dp is not None and config.nu is None and nu is not None:
            nu = dp.nu_fraction * config.norm_bound  # the DP smoothing: flatter weights, less noise (rfa/dp.py)
        if nu == "auto":
            if config.max_weight is None:
                raise InvalidArgument('nu="auto" needs max_weight')
            # The rule knows its broadcasts' distance bound (C for one-step RFA's v = 0, else 2C).
            pick = getattr(rule, "auto_nu", smallest_nu)
            nu = pick(config.max_weight, config.norm_bound, *self.alpha_range, t)
        self.nu = nu
        policy = PrivacyPolicy(nu, config.norm_bound, *self.alpha_range, config.max_weight)
        self.oracle = SecureAverageOracle(
            config.threshold,
            value_bound=config.norm_bound,
            weight_bound=policy.beta_max,
            max_clients=max(m, 2),
            runner=_runner(config.transport),
            dp=None if dp is None else dp.mechanism(config.norm_bound, max(m, 2)),
            seed=None if dp is None else dp.seed,
        )

    def __call__(
        self, updates: np.ndarray, alpha: np.ndarray, ids: np.ndarray, **warm: Any
    ) -> tuple[np.ndarray, Any]:
        kwargs: dict[str, Any] = dict(**warm,
            oracle=self.oracle,
            norm_bound=self.config.norm_bound,
            max_weight=self.config.max_weight,
            alpha_range=self.alpha_range,
        )
        if self.nu is not None:
            kwargs["nu"] = self.nu
        points = {int(i) + 1: updates[k] for k, i in enumerate(ids)}  # secagg ids start at 1
        weights = {int(i) + 1: float(alpha[k]) for k, i in enumerate(ids)}
        result = self.rule.secure(points, weights, **kwargs)
        return result.median, result


def _evaluate(
    model: Model,
    w: np.ndarray,
    dataset: FederatedDataset,
    local: LocalTest | None,
    personal: dict[int, np.ndarray],
    corrupted: np.ndarray,
) -> tuple[float, float, float]:
    """(global test accuracy, honest clients' local accuracy, global test loss)."""
    test_loss = model.loss(w, dataset.X_test, dataset.y_test)
    if not isinstance(model, ClassificationModel):
        return np.nan, np.nan, float(test_loss)
    accuracy = model.accuracy(w, dataset.X_test, dataset.y_test)
    local_accuracy = np.nan
    if local is not None:
        honest = [i for i in range(len(local.y)) if not corrupted[i]]  # only honest clients' accuracy matters
        correct = sum(model.accuracy(w + personal.get(i, 0.0), local.X[i], local.y[i]) * len(local.y[i]) for i in honest)
        local_accuracy = correct / sum(len(local.y[i]) for i in honest)
    return float(accuracy), float(local_accuracy), float(test_loss)


def train(
    model: Model,
    dataset: FederatedDataset,
    rule: Aggregator,
    config: TrainingConfig,
    *,
    local_test: LocalTest | None = None,
    progress: Callable[[int], None] | None = None,
    dp: "RobustDP | None" = None,
) -> TrainingResult:
    """Run Algorithm 1 (Algorithm 4 if ``config.personalised``) and record each evaluated round.

    ``dp``: differential privacy inside secure aggregation (``rfa.dp``); needs
    ``secure=True``; its accountant records every call, and each record carries
    the epsilon spent so far.
    """
    if config.secure and rule.mode != "secure":
        raise PlaintextOnly(
            f"{rule.name} needs every update in the clear; secure=True would silently downgrade privacy"
        )
    n = dataset.n_clients
    m = config.clients_per_round
    if m > n:
        raise InvalidArgument(f"clients_per_round={m} exceeds the {n} clients")
    rng = np.random.default_rng(config.seed)
    counts = dataset.sample_counts.astype(np.int64)
    by = counts if config.corrupted_by == "weight" else np.ones(n, dtype=np.int64)
    corrupted = choose_corrupted(by, config.rho, rng) if config.rho > 0 else np.zeros(n, dtype=bool)
    clean = dataset  # voters judge candidates on their unpoisoned data
    if config.data_corruption and corrupted.any():
        dataset = poison_clients(dataset, corrupted, config.data_corruption)
    if dp is not None:
        if not config.secure:
            raise InvalidArgument("dp adds its noise inside secure aggregation: set secure=True")
        if config.personalised or config.momentum is not None or isinstance(rule, TwoPhaseRule):
            raise InvalidArgument("dp covers plain rounds of FedAvg, RFA and one-step RFA only")
        dp.calibrate(config.rounds * rule.oracle_calls)
        if dp.equal_weights:
            counts = np.ones(n, dtype=np.int64)  # user-level DP: every client counts once
    secure = _SecureAggregation(rule, config, counts, dp) if config.secure else None
    if secure is not None:
        # The mean's bound is the floor; refuse before training rather than at the first round.
        t = secure.oracle.threshold_for(m)
        if config.max_weight is not None and weight_floor(*secure.alpha_range, t) > config.max_weight:
            raise UncertifiableBound(
                f"max_weight={config.max_weight} is below what any aggregation of {m} clients can certify"
            )

    attack = dict(config.corruption_params)
    if config.update_corruption == "alie" and "z" not in attack and corrupted.any():
        # One z for the run, from the corrupted clients the attacker expects per round: a round's
        # own count would leave z undefined whenever sampling gives it a corrupted majority.
        attack["z"] = alie_z(m, math.ceil(corrupted.sum() * m / n - 1e-9))
    # Rules that start from the previous aggregate get it (0 before the first round).
    warm_start = isinstance(rule, GeometricMedianRule) and rule.init == "previous"

    w = model.init_params(rng)
    previous = np.zeros_like(w)
    personal: dict[int, np.ndarray] = {}
    history: list[RoundRecord] = []
    elections: list[Election] = []
    momenta: dict[int, np.ndarray] = {}
    calls = 0
    iterate_sum = np.zeros_like(w)
    for t_round in range(1, config.rounds + 1):
        iterate_sum += w  # theta_{t_round - 1}
        selected = np.sort(rng.choice(n, size=m, replace=False))  # Algorithm 1, line 2
        updates = np.empty((m, w.size))
        if config.momentum is not None:  # RASHB, Algorithm 1 lines 4-7
            batches = [draw_batch(*dataset.client(int(i)), config.batch_size, rng) for i in selected]
            if len({len(yb) for _, yb in batches}) == 1:  # one vectorised pass when the batches stack
                grads = model.stacked_grads(w, np.stack([b[0] for b in batches]), np.stack([b[1] for b in batches]))
            else:
                grads = np.stack([model.grad(w, *b) for b in batches])
            for k, i in enumerate(selected):
                momenta[int(i)] = config.momentum * momenta.get(int(i), 0.0) + (1 - config.momentum) * grads[k]
                updates[k] = momenta[int(i)]
        for k, i in enumerate(selected if config.momentum is None else ()):
            X, y = dataset.client(int(i))
            sgd = dict(steps=config.local_steps, lr=config.lr, batch_size=config.batch_size, rng=rng)
            if config.personalised:  # Algorithm 4: u_i on the residual of w, then w on that of u_i
                u = local_sgd(model, personal.get(int(i), np.zeros_like(w)), X, y, offset=w, **sgd)
                local = local_sgd(model, w, X, y, offset=u, **sgd)
                personal[int(i)] = u
            else:
                local = local_sgd(model, w, X, y, **sgd)  # lines 4-8
            updates[k] = local - w
        bad = corrupted[selected]
        alpha = counts[selected].astype(np.float64)
        if config.update_corruption and bad.any():
            params = dict(attack)
            if config.update_corruption == "omniscient":
                params.setdefault("target", "all")  # Sec. V-A: minus the mean "without the corruption"
            if config.update_corruption == "replay":
                params.setdefault("previous", previous)
            updates = corrupt_updates(config.update_corruption, updates, alpha, bad, rng, **params)
        warm = {"previous": previous} if warm_start else {}
        if secure is not None:
            try:
                aggregate, outcome = secure(updates, alpha, selected, **warm)
            except NoisyWeightSum:  # dp: the noise drowned the first step's weights; this round makes no update
                aggregate = np.zeros_like(w)
                calls += 1
                per_client, realised, certified = np.nan, np.nan, np.nan
            else:
                calls += outcome.oracle_calls
                steps = outcome.rounds
                per_client = sum(s.bytes_per_client for s in steps)
                realised = max(s.realised_max_weight for s in steps)
                certified = max(s.certified_weight for s in steps)
        elif isinstance(rule, TwoPhaseRule):  # Algorithm 3, lines 4-10
            candidates = rule.candidates(updates, alpha)
            proposals = np.stack([_step(w, c, config) for c in candidates])
            voters = [clean.client(int(i)) for i in selected]
            ballots = cast_ballots(model, proposals, voters, bad, rng=rng, corrupted_vote=config.corrupted_vote,
                                   batch_size=config.vote_batch_size or config.batch_size)
            elections.append(elect(*tally(ballots), round=t_round))
            aggregate = candidates[elections[-1].winner]
            per_client, realised, certified = np.nan, np.nan, np.nan
        else:
            aggregate = rule(updates, alpha, **warm)  # line 9
            calls += rule.oracle_calls or 0
            per_client, realised, certified = np.nan, np.nan, np.nan
        w = _step(w, aggregate, config)
        previous = aggregate
        if t_round % config.eval_every == 0 or t_round == config.rounds:
            accuracy, local_accuracy, loss = _evaluate(model, w, dataset, local_test, personal, corrupted)
            history.append(
                RoundRecord(t_round, calls, accuracy, local_accuracy, loss, per_client, realised, certified,
                            corrupted_share=float(alpha[bad].sum() / alpha.sum()),
                            epsilon=dp.spent() if dp is not None else float("nan"))
            )
        if progress is not None:
            progress(t_round)
    return TrainingResult(w, personal, tuple(history), corrupted, config, tuple(elections),
                          average=iterate_sum / config.rounds)


def _step(w: np.ndarray, aggregate: np.ndarray, config: TrainingConfig) -> np.ndarray:
    """The server's step: add the aggregate update, or (RASHB) w - lr * the aggregate momentum."""
    return w - config.lr * aggregate if config.momentum is not None else w + aggregate
