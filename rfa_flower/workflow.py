"""The server's side of secure aggregation over Flower: the secure geometric median as a workflow.

``SecureRFAWorkflow(policy, rule).run(grid, initial_arrays, num_rounds)`` runs
federated training (Algorithm 1 of the RFA paper) on a Flower ``Grid``:

1. one train message per node; nodes wrapped in ``client_mod.SecureRFAMod``
   train, keep the update and answer "ready";
2. the aggregate of the updates is computed by secure weighted averages only
   (``SecureAverage``): one for the starting mean and one per smoothed
   Weiszfeld step (Algorithm 2) for the geometric median, one from v = 0 for
   one-step RFA (Algorithm 3), one for the mean;
3. w <- w + aggregate.

``SecureAverage`` drives ``secagg.Server`` through ``grid.send_and_receive``:
a setup message per node, then one Flower round trip per secagg round.  A
reply that does not arrive within the timeout, an error reply and a reply
that breaks the protocol all mean the same: that node dropped out, and the
server state machine closes the round without it.  Before each step the
server checks the privacy-weight certificate (``rfa.privacy``); each client
checks it again with its own policy.  The server learns v, sum beta_i w_i and
sum beta_i of each step, nothing else.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid

from rfa.aggregators import Aggregator, GeometricMedianRule, Mean, OneStepRule
from rfa.errors import PlaintextOnly
from secagg import MalformedMessage, ProtocolViolation, PublicParams, Server, SystemRandom, decode
from secagg.rng import RandomSource

from .arrays import Layout
from .protocol import Kind, SecurePolicy, Setup, SetupError, content, secagg_record, wire_items

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepRecord:
    kind: Kind
    broadcast: np.ndarray  # the v sent (zeros for a mean step)
    output: np.ndarray  # the secure average, projected onto the norm ball
    nodes: tuple[int, ...]  # the nodes asked
    included: tuple[int, ...]  # the nodes whose masked input is in the sum
    certified_weight: float  # the bound the server checked before the step
    error_bound: float  # the encoding's worst-case per-coordinate error of ``output``
    sum_weights: float  # sum of the included beta_i (the server learns it)
    bytes_received: int  # secagg bytes the server received from the nodes
    seconds: float
    violations: tuple[tuple[int, str], ...] = ()  # (node, the rule it broke): left out of the step


@dataclass(frozen=True)
class RoundRecord:
    round: int
    trained: tuple[int, ...]  # nodes that answered "ready"
    steps: tuple[StepRecord, ...]
    metrics: MetricRecord | None  # of evaluate_fn, if given


@dataclass
class History:
    arrays: ArrayRecord
    rounds: list[RoundRecord] = field(default_factory=list)


def _project(v: np.ndarray, radius: float) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    return v if norm <= radius else v * (radius / norm)


class SecureAverage:
    """One secure weighted average over the nodes: ``SecureAverage(grid, policy)(nodes, kind, v)``."""

    def __init__(self, grid: Grid, policy: SecurePolicy, *, timeout: float = 60.0, rng: RandomSource | None = None):
        self.grid = grid
        self.policy = policy
        self.timeout = timeout
        self.rng = rng or SystemRandom()

    def __call__(self, nodes: Sequence[int], kind: Kind, v: np.ndarray) -> StepRecord:
        start = time.perf_counter()
        nodes = tuple(sorted(nodes))
        secagg_id = {node: k + 1 for k, node in enumerate(nodes)}
        node_of = {k: node for node, k in secagg_id.items()}
        encoding = self.policy.encoding
        encoding.check_capacity(len(nodes))
        params = PublicParams.create(
            secagg_id.values(),
            threshold=self.policy.threshold_for(len(nodes)),
            modulus=encoding.modulus,
            dim=v.size + 1,
            rng=self.rng,
        )
        certificate = self.policy.check_step(kind, params, v, "server")
        server = Server(params)
        outgoing = [
            Message(content("setup", setup=Setup(params, secagg_id[n], kind, v).encode()), dst_node_id=n, message_type="train")
            for n in nodes
        ]
        received = 0
        violations: list[tuple[int, str]] = []
        while server.result is None:
            asked = {m.metadata.dst_node_id for m in outgoing}
            replies = self.grid.send_and_receive(outgoing, timeout=self.timeout)
            index, answers = server.round, []
            for reply in replies:
                node = reply.metadata.src_node_id
                record = None if reply.has_error() else secagg_record(reply)
                if node not in asked or record is None or record.get("op") != "reply":
                    continue  # an error reply is a dropout, like a reply that never comes
                asked.discard(node)  # one reply per node and round
                try:
                    items = wire_items(record)
                except MalformedMessage as exc:
                    violations.append((node, str(exc)))
                    continue
                for data in items:
                    received += len(data)
                    try:
                        if decode(data, params).sender != secagg_id[node]:
                            raise ProtocolViolation(secagg_id[node], "impersonation", "sent as another client")
                        answers += server.receive(data)
                    except (MalformedMessage, ProtocolViolation) as exc:
                        violations.append((node, str(exc)))
                        log.warning("node %d broke the protocol: %s", node, exc)
                        break
            if server.result is None and server.round is index:
                answers = server.close_round()  # the rest dropped; AbortError below t
            per_node: dict[int, list[bytes]] = {}
            for msg in answers:
                per_node.setdefault(node_of[msg.recipient], []).append(msg.encode())
            outgoing = [
                Message(content("round", data=data), dst_node_id=n, message_type="train") for n, data in per_node.items()
            ]
        result = server.result
        value, sum_weights, error = encoding.decode_average(result.total, len(result.included))
        return StepRecord(
            kind=kind,
            broadcast=v.copy(),
            output=_project(value, self.policy.norm_bound),
            nodes=nodes,
            included=tuple(node_of[u] for u in result.included),
            certified_weight=certificate,
            error_bound=error,
            sum_weights=sum_weights,
            bytes_received=received,
            seconds=time.perf_counter() - start,
            violations=tuple(violations),
        )


class SecureRFAWorkflow:
    """``SecureRFAWorkflow(policy, GeometricMedianRule(rounds=3, nu=policy.nu))``.

    ``rule`` is one of the secure rules of ``rfa.aggregators`` (mean,
    geometric median, one-step); its nu must be the policy's, which the
    clients enforce.  Plaintext rules are refused: they need every update.
    """

    def __init__(self, policy: SecurePolicy, rule: Aggregator, *, timeout: float = 60.0, min_nodes: int = 2):
        if not isinstance(rule, (Mean, GeometricMedianRule, OneStepRule)):
            raise PlaintextOnly(f"{rule.name} needs every update in the clear; use RobustFedAvg for it")
        if not isinstance(rule, Mean) and rule.nu != policy.nu:
            raise SetupError(f"the rule's nu={rule.nu} differs from the agreed policy's nu={policy.nu}")
        self.policy = policy
        self.rule = rule
        self.timeout = timeout
        self.min_nodes = min_nodes

    def aggregate(self, grid: Grid, nodes: Iterable[int], dim: int) -> tuple[np.ndarray, tuple[StepRecord, ...]]:
        """The rule's aggregate of the updates the nodes hold, by secure averages only."""
        average = SecureAverage(grid, self.policy, timeout=self.timeout)
        nodes = tuple(sorted(nodes))
        zero = np.zeros(dim)
        if isinstance(self.rule, OneStepRule):
            steps = [average(nodes, "weiszfeld", zero)]
        else:
            steps = [average(nodes, "mean", zero)]
            if isinstance(self.rule, GeometricMedianRule):
                for _ in range(self.rule.rounds):
                    steps.append(average(nodes, "weiszfeld", steps[-1].output))
        return steps[-1].output, tuple(steps)

    def run(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int,
        *,
        train_config: ConfigRecord | None = None,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
        wait_seconds: float = 120.0,
    ) -> History:
        """``num_rounds`` rounds of training on every connected node; the first waits for ``min_nodes``."""
        layout = Layout.of(initial_arrays)
        w = layout.flatten(initial_arrays)
        history = History(initial_arrays)
        deadline = time.monotonic() + wait_seconds
        while len(list(grid.get_node_ids())) < self.min_nodes:
            if time.monotonic() > deadline:
                raise SetupError(f"fewer than {self.min_nodes} nodes connected within {wait_seconds:g} s")
            time.sleep(0.2)
        for server_round in range(1, num_rounds + 1):
            config = ConfigRecord(dict(train_config or {}))
            config["server-round"] = server_round
            arrays = layout.unflatten(w)
            messages = [
                Message(RecordDict({"arrays": arrays, "config": config}), dst_node_id=n, message_type="train")
                for n in sorted(grid.get_node_ids())
            ]
            replies = grid.send_and_receive(messages, timeout=self.timeout)
            ready = tuple(
                sorted(
                    m.metadata.src_node_id
                    for m in replies
                    if not m.has_error() and (r := secagg_record(m)) is not None and r.get("op") == "ready"
                )
            )
            aggregate, steps = self.aggregate(grid, ready, w.size)
            w = w + aggregate
            history.arrays = layout.unflatten(w)
            metrics = evaluate_fn(server_round, history.arrays) if evaluate_fn else None
            history.rounds.append(RoundRecord(server_round, ready, steps, metrics))
        return history

