"""Flower strategies that aggregate updates with the rules of ``rfa.aggregators``.

``RobustFedAvg`` is Flower's ``FedAvg`` with one change: ``aggregate_train``
turns each reply's model w_i into the update w_i - w against the global model w
of the round (footnote 4 of the RFA paper: updates, not models, are
aggregated), aggregates the updates with the rule, weighted by each reply's
``num-examples`` (``weighted_by_key``), and returns w + aggregate.  Sampling,
configuration, evaluation and metric aggregation are FedAvg's.

These strategies see every update in the clear, as Flower's own robust
strategies (Krum, FedMedian, ...) do.  The secure geometric median, where the
server sees no update, is ``rfa_flower.workflow``.

A two-phase rule (``cent2p``, ``mean2p``: 2PRASHB, Yi et al. Algorithm 3) adds
a second exchange to the round: the prepare phase is the plaintext one above
(``rule.candidates`` of the updates), then the round's nodes vote on the two
candidate models w + Inner and w + Outer and the tally runs through the secure
weighted average (``rfa_flower.voting``; the nodes run
``client_mod.SecureVoteMod`` on their evaluate handler).  The elected
candidate steps the model, and the round's counts and winner are logged and
added to the round's train metrics (``vote-inner``, ``vote-outer``,
``vote-abstained``, ``vote-winner``, 0 = Inner).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Result

from rfa.aggregators import Aggregator, TwoPhaseRule, make_aggregator, parameters, registry
from rfa.errors import InvalidArgument, RFAError

from .arrays import Layout
from .protocol import TallyPolicy
from .voting import SecureVote, VoteRecord

log = logging.getLogger("flwr")


class ReplyError(RFAError, ValueError):
    """A training reply lacks its model or its example count."""


class RobustFedAvg(FedAvg):
    """``RobustFedAvg(make_aggregator("geometric_median", rounds=3), min_train_nodes=5)``.

    Keyword arguments are FedAvg's.  Replies carrying an error are left out,
    as FedAvg leaves them out.  With a two-phase rule each round also runs the
    vote (module docstring); ``vote_policy`` is the run's ``TallyPolicy``
    (threshold and max-clients, agreed with the nodes; default
    ``TallyPolicy()``, which matches nodes whose run config leaves both keys
    out), and ``votes`` holds every round's ``VoteRecord``.
    """

    def __init__(self, rule: Aggregator, *, vote_policy: TallyPolicy | None = None, **fedavg: Any):
        super().__init__(**fedavg)
        self.rule = rule
        self.vote_policy = vote_policy if vote_policy is not None else TallyPolicy()
        self.votes: list[VoteRecord] = []
        self._global: dict[int, ArrayRecord] = {}  # server round -> the model w sent for it
        self._grid: Grid | None = None  # the vote's second exchange goes through the round's grid
        self._timeout = 3600.0

    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
    ) -> Result:
        """FedAvg's ``start``; the vote's round trips (two-phase rules) get the same ``timeout``."""
        self._timeout = timeout
        self.votes = []
        return super().start(grid=grid, initial_arrays=initial_arrays, num_rounds=num_rounds, timeout=timeout,
                             train_config=train_config, evaluate_config=evaluate_config, evaluate_fn=evaluate_fn)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._global = {server_round: arrays}  # only the current round's w is ever needed
        self._grid = grid
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        # In node order: a rule that breaks ties by index (Krum, cent2p with f = 1) then does not depend on
        # the order the replies arrived in.
        valid = sorted((m for m in replies if not m.has_error()), key=lambda m: m.metadata.src_node_id)
        if not valid:
            return None, None
        if server_round not in self._global:
            raise ReplyError(f"round {server_round} was never configured: no global model to subtract")
        layout = Layout.of(self._global[server_round])
        w = layout.flatten(self._global[server_round])
        updates = np.stack([layout.flatten(self._model_of(m)) - w for m in valid])
        weights = np.array([self._examples_of(m) for m in valid])
        metrics = self.train_metrics_aggr_fn([m.content for m in valid], self.weighted_by_key)
        if isinstance(self.rule, TwoPhaseRule):
            aggregate, vote = self._vote(server_round, [m.metadata.src_node_id for m in valid], w, layout,
                                         self.rule.candidates(updates, weights))
            metrics = MetricRecord({**(metrics or {}), **vote.metrics()})
        else:
            aggregate = self.rule(updates, weights)
        return layout.unflatten(w + aggregate), metrics

    def _vote(
        self, server_round: int, nodes: list[int], w: np.ndarray, layout: Layout, candidates: np.ndarray
    ) -> tuple[np.ndarray, VoteRecord]:
        """Algorithm 3, lines 6-10: the round's nodes elect w + Inner or w + Outer; the winner's update."""
        if self._grid is None:
            raise ReplyError(f"round {server_round} was never configured: no grid to run the vote through")
        models = [layout.unflatten(w + c) for c in candidates]
        vote = SecureVote(self._grid, self.vote_policy, timeout=self._timeout)(
            server_round, nodes, models, ConfigRecord({"server-round": server_round}))
        self.votes.append(vote)
        log.info("\t├──> %s", vote.line())
        return candidates[vote.election.winner], vote

    def _model_of(self, reply: Message) -> ArrayRecord:
        records = reply.content.array_records
        if self.arrayrecord_key in records:
            return records[self.arrayrecord_key]
        if len(records) == 1:
            return next(iter(records.values()))
        raise ReplyError(f"reply from node {reply.metadata.src_node_id} carries no single model record")

    def _examples_of(self, reply: Message) -> float:
        for record in reply.content.metric_records.values():
            if self.weighted_by_key in record:
                value = float(record[self.weighted_by_key])  # type: ignore[arg-type]
                if not (np.isfinite(value) and value > 0):
                    raise ReplyError(f"node {reply.metadata.src_node_id}: {self.weighted_by_key}={value} is not positive")
                return value
        raise ReplyError(f"reply from node {reply.metadata.src_node_id} has no '{self.weighted_by_key}' metric")


def robust_strategy(rule: str, *, rule_params: dict[str, Any] | None = None, **fedavg: Any) -> RobustFedAvg:
    """``robust_strategy("trimmed_mean", rule_params={"beta": 0.2})``: any rule of the registry by name.

    A rule that tolerates f Byzantine clients (Krum, the clustering rules) needs ``f`` in ``rule_params``:
    the class default f = 0 tolerates none, which a robust strategy must not assume silently.
    """
    params = dict(rule_params or {})
    if rule in registry and "f" in parameters(rule) and "f" not in params:
        raise InvalidArgument(
            f"{rule} needs f, the number of Byzantine clients it tolerates: "
            f'robust_strategy("{rule}", rule_params={{"f": ...}}) (f = 0 would tolerate none)'
        )
    return RobustFedAvg(make_aggregator(rule, **params), **fedavg)
