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
that breaks the protocol (including one with more than one message) all mean
the same: that node dropped out, and the server state machine closes the
round without it, once every reply of the round trip has been read.  Before
each step the server checks the privacy-weight certificate
(``rfa.privacy``); each client checks it again with its own policy.  The
server learns v, sum beta_i w_i and sum beta_i of each step, nothing else.

The first step of an aggregation pins its survivor set: later steps are sent
to those nodes only, and a step whose survivors differ aborts before anything
is unmasked (each node also refuses it on its own, ``client_mod``).  The
median then ends with the last completed iterate, as ``rfa.secure`` does in
memory.  A first step that aborts leaves the global model unchanged for that
round, and training goes on.
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
from secagg import AbortError, MalformedMessage, ProtocolViolation, PublicParams, Server, SystemRandom, decode
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
    steps: tuple[StepRecord, ...]  # the completed steps (none if the first one aborted)
    metrics: MetricRecord | None  # of evaluate_fn, if given
    stopped: str | None = None  # why the aggregation ended before its planned steps, if it did


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

    def __call__(self, nodes: Sequence[int], kind: Kind, v: np.ndarray, *, pinned: bool = False) -> StepRecord:
        """One step; raises ``AbortError`` when it reveals nothing.  ``pinned``: ``nodes`` are the survivor
        set of the aggregation's first step, and this step reveals a sum over all of them or aborts."""
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
        # auto_close=False: a round closes once every reply of the round trip has been read, never in
        # the middle of one node's reply (so no node can answer a round it has not yet been sent).
        server = Server(params, auto_close=False, pinned=params.client_ids if pinned else None)
        outgoing = [
            Message(
                content("setup", setup=Setup(params, secagg_id[n], kind, v, node_of).encode()),
                dst_node_id=n, message_type="train",
            )
            for n in nodes
        ]
        received = 0
        violations: list[tuple[int, str]] = []
        while server.result is None:
            asked = {m.metadata.dst_node_id for m in outgoing}
            replies = self.grid.send_and_receive(outgoing, timeout=self.timeout)
            index = server.round
            for reply in replies:
                node = reply.metadata.src_node_id
                record = None if reply.has_error() else secagg_record(reply)
                if node not in asked or record is None or record.get("op") != "reply":
                    continue  # an error reply is a dropout, like a reply that never comes
                asked.discard(node)  # one reply per node and round
                try:
                    items = wire_items(record)
                    received += sum(map(len, items))
                    if len(items) != 1:  # every client round is answered by exactly one message
                        raise ProtocolViolation(secagg_id[node], "one-message", f"{len(items)} messages in one reply")
                    if decode(items[0], params).sender != secagg_id[node]:
                        raise ProtocolViolation(secagg_id[node], "impersonation", "sent as another client")
                    server.receive(items[0])
                except (MalformedMessage, ProtocolViolation) as exc:
                    violations.append((node, str(exc)))
                    log.warning("node %d broke the protocol: %s", node, exc)
            assert server.round is index
            answers = server.close_round()  # whoever did not answer dropped; AbortError below t
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

    def aggregate(
        self, grid: Grid, nodes: Iterable[int], dim: int
    ) -> tuple[np.ndarray, tuple[StepRecord, ...], str | None]:
        """The rule's aggregate of the updates the nodes hold, by secure averages only.

        Returns the aggregate, the completed steps and why the median stopped early (None if
        it did not).  The first step pins its survivors; a later step that loses one of them
        aborts, and the aggregate is the last completed iterate.  ``AbortError`` from the first
        step propagates: nothing was revealed, so there is no aggregate.
        """
        average = SecureAverage(grid, self.policy, timeout=self.timeout)
        nodes = tuple(sorted(nodes))
        zero = np.zeros(dim)
        steps = [average(nodes, "weiszfeld" if isinstance(self.rule, OneStepRule) else "mean", zero)]
        stopped = None
        if isinstance(self.rule, GeometricMedianRule):
            for _ in range(self.rule.rounds):
                try:
                    steps.append(average(steps[0].included, "weiszfeld", steps[-1].output, pinned=True))
                except AbortError as exc:
                    stopped = str(exc)
                    log.warning("the median stopped after %d of %d steps (last completed iterate kept): %s",
                                len(steps), self.rule.rounds + 1, exc)
                    break
        return steps[-1].output, tuple(steps), stopped

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
            try:
                aggregate, steps, stopped = self.aggregate(grid, ready, w.size)
            except AbortError as exc:  # nothing revealed: this round leaves the model as it was
                log.warning("round %d: secure aggregation aborted, global model unchanged: %s", server_round, exc)
                aggregate, steps, stopped = np.zeros_like(w), (), f"aborted: {exc}"
            w = w + aggregate
            history.arrays = layout.unflatten(w)
            metrics = evaluate_fn(server_round, history.arrays) if evaluate_fn else None
            history.rounds.append(RoundRecord(server_round, ready, steps, metrics, stopped))
        return history

