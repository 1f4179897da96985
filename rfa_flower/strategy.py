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
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from rfa.aggregators import Aggregator, TwoPhaseRule, make_aggregator
from rfa.errors import NeedsVote, RFAError

from .arrays import Layout


class ReplyError(RFAError, ValueError):
    """A training reply lacks its model or its example count."""


class RobustFedAvg(FedAvg):
    """``RobustFedAvg(make_aggregator("geometric_median", rounds=3), min_train_nodes=5)``.

    Keyword arguments are FedAvg's.  Replies carrying an error are left out,
    as FedAvg leaves them out.
    """

    def __init__(self, rule: Aggregator, **fedavg: Any):
        if isinstance(rule, TwoPhaseRule):
            # Its aggregate is the candidate the clients elect: a second exchange this strategy does not run.
            raise NeedsVote(f"{rule.name} needs the clients' votes on its two candidates; RobustFedAvg aggregates "
                            "in one exchange (run two-phase rules in rfa.training.train)")
        super().__init__(**fedavg)
        self.rule = rule
        self._global: dict[int, ArrayRecord] = {}  # server round -> the model w sent for it

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._global = {server_round: arrays}  # only the current round's w is ever needed
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid = [m for m in replies if not m.has_error()]
        if not valid:
            return None, None
        if server_round not in self._global:
            raise ReplyError(f"round {server_round} was never configured: no global model to subtract")
        layout = Layout.of(self._global[server_round])
        w = layout.flatten(self._global[server_round])
        updates = np.stack([layout.flatten(self._model_of(m)) - w for m in valid])
        weights = np.array([self._examples_of(m) for m in valid])
        aggregate = self.rule(updates, weights)
        metrics = self.train_metrics_aggr_fn([m.content for m in valid], self.weighted_by_key)
        return layout.unflatten(w + aggregate), metrics

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
    """``robust_strategy("trimmed_mean", rule_params={"beta": 0.2})``: any rule of the registry by name."""
    return RobustFedAvg(make_aggregator(rule, **(rule_params or {})), **fedavg)
