"""The server's side of secure aggregation over Flower: the secure geometric median as a strategy.

``SecureRFA(rule, policy=...).start(grid=..., initial_arrays=..., num_rounds=...)``
runs federated training (Algorithm 1 of the RFA paper) on a Flower ``Grid``,
with the signature and the ``Result`` of Flower's strategies:

1. one train message per sampled node; nodes wrapped in
   ``client_mod.SecureRFAMod`` train, keep the update and answer "ready";
2. the aggregate of the updates is computed by secure weighted averages only
   (``SecureAverage``): one for the starting mean and one per smoothed
   Weiszfeld step (Algorithm 2) for the geometric median, one from v = 0 for
   one-step RFA (Algorithm 3), one for the mean;
3. w <- w + aggregate, one log line per round.

``SecureAverage`` drives ``secagg.Server`` through ``grid.send_and_receive``:
a setup message per node, then one Flower round trip per secagg round.  A
reply that does not arrive within the timeout, an error reply and a reply
that breaks the protocol (including one with more than one message) all mean
the same: that node dropped out, and the server state machine closes the
round without it, once every reply of the round trip has been read.  Before
each step the server checks the privacy-weight certificate
(``rfa.privacy``); each client checks it again with its own policy.  The
server learns v, sum beta_i w_i and sum beta_i of each step, nothing else.

**Malicious-server mode** (``SecureRFA(..., malicious=True, identity_keys=DIR)``,
DIR the directory ``secagg keygen`` writes, or its ``load_public_keys``): each
node announces its PKI id in its "ready" reply; a step's secagg ids are those
PKI ids (``Setup.nodes``: PKI id -> Flower node), its parameters carry their
identity public keys, its threshold is at least floor(n/2) + 1 (the rule of
malicious mode), on the complete graph.  A node whose announced id is not in
the directory, or is announced by another node too, is left out.  Each node
checks the keys against its own directory and signs (``client_mod``).

The steps of one aggregation are the calls of one multi-call secagg session
(``SecureAverage.session``, protocol_spec.md 16): key agreement and secret
sharing once, then a ``call_open`` (the step's kind and v), a masked input and
an unmasking per step.  The first step pins its survivor set: later steps are
sent to those nodes only, and a step whose survivors differ aborts before
anything is unmasked (each node also refuses it on its own, ``client_mod``).  The
median then ends with the last completed iterate, as ``rfa.secure`` does in
memory.  A first step that aborts leaves the global model unchanged for that
round, and training goes on.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid

from flwr.serverapp.strategy import Result
from flwr.serverapp.strategy.strategy_utils import sample_nodes

from rfa.aggregators import Aggregator, GeometricMedianRule, Mean, OneStepRule, make_aggregator
from rfa.errors import PlaintextOnly
from secagg import (
    AbortError, MalformedMessage, ParameterError, ProtocolViolation, PublicParams, Server, SystemRandom, decode,
)
from secagg.keydir import load_public_keys
from secagg.keys import is_valid_identity_key
from secagg.rng import RandomSource

from .arrays import Layout
from .protocol import (
    Kind, SecurePolicy, Setup, SetupError, TallyPolicy, content, encode_step, secagg_record, wire_items,
)

log = logging.getLogger("flwr")  # Flower's logger: `flwr run --stream` and the simulation show these lines


@dataclass(frozen=True)
class StepRecord:
    kind: Kind
    broadcast: np.ndarray  # the v sent (zeros for a mean step)
    output: np.ndarray  # the secure average, projected onto the norm ball (a tally: the average ballot, as is)
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
    trained: tuple[int, ...]  # nodes that answered "ready" (malicious mode: with a usable PKI id)
    steps: tuple[StepRecord, ...]  # the completed steps (none if the first one aborted)
    metrics: MetricRecord | None  # of evaluate_fn, if given
    stopped: str | None = None  # why the aggregation ended before its planned steps, if it did

    def summary(self, sampled: int) -> MetricRecord:
        """The round's secure aggregation in numbers (``Result.train_metrics_clientapp``)."""
        return MetricRecord({
            "nodes-sampled": sampled,
            "nodes-ready": len(self.trained),
            "nodes-included": len(self.steps[0].included) if self.steps else 0,
            "oracle-calls": len(self.steps),
            "certified-weight": max((s.certified_weight for s in self.steps), default=0.0),
            "stopped-early": int(self.stopped is not None),
        })

    def line(self, sampled: int) -> str:
        """One log line, the way Flower's strategies report a round."""
        s = self.summary(sampled)
        text = (f"{sampled} nodes sampled, {s['nodes-ready']} trained, {s['nodes-included']} included in "
                f"{s['oracle-calls']} secure averages, certified weight {s['certified-weight']:.3g}")
        if self.stopped is not None:
            text += f"; stopped: {self.stopped}"
        if self.metrics is not None:
            text += "; " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in self.metrics.items())
        return text


def _project(v: np.ndarray, radius: float) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    return v if norm <= radius else v * (radius / norm)


IdentityKeys = Mapping[int, bytes] | str | os.PathLike


def identity_keys_for(malicious: bool, identity_keys: IdentityKeys | None) -> dict[int, bytes] | None:
    """The identity public keys of a malicious-mode server (None in honest-but-curious mode), checked.

    ``identity_keys``: a directory of ``secagg keygen`` (its ``client-<id>.pub``
    files are read) or a mapping PKI id -> 32-byte Ed25519 public key, e.g.
    ``secagg.keydir.load_public_keys(DIR)``.  Raises ``SetupError`` (one line) for
    malicious mode without keys, keys without malicious mode, or an invalid key.
    """
    if not malicious:
        if identity_keys is not None:
            raise SetupError("identity_keys go with malicious=True: an honest-but-curious session uses none, "
                             "and a node with an identity refuses one")
        return None
    if identity_keys is None:
        raise SetupError("malicious=True needs the nodes' identity public keys: identity_keys=DIR (the directory "
                         "`secagg keygen` writes) or identity_keys=secagg.keydir.load_public_keys(DIR)")
    if isinstance(identity_keys, (str, os.PathLike)):
        try:
            return load_public_keys(Path(identity_keys))
        except ParameterError as exc:
            raise SetupError(f"identity_keys: {exc}") from None
    keys = dict(identity_keys)
    bad = [u for u, key in keys.items()
           if type(u) is not int or not 1 <= u < 2**31 or type(key) is not bytes or not is_valid_identity_key(key)]
    if bad or not keys:
        raise SetupError(f"identity_keys must map PKI ids (positive integers) to Ed25519 public keys of prime order; "
                         f"refused: {bad[:5] if bad else 'an empty map'}")
    return keys


def announced_identities(replies: Iterable[Message], identity_keys: Mapping[int, bytes]) -> dict[int, int]:
    """Flower node id -> the PKI id it announced in its "ready" reply, for the nodes that can take part
    in a malicious-mode step: an id in ``identity_keys``, announced by this node only.  The others
    are logged and left out (an id two nodes claim: both, as the server cannot tell which one lies)."""
    claims: dict[int, list[int]] = {}
    for m in replies:
        record = None if m.has_error() else secagg_record(m)
        if record is None or record.get("op") != "ready":
            continue
        node, pki = m.metadata.src_node_id, record.get("identity")
        if type(pki) is not int or pki not in identity_keys:
            log.warning("node %d announced no identity of the directory (%.20r): left out of malicious-mode "
                        "aggregation", node, pki)
            continue
        claims.setdefault(pki, []).append(node)
    for pki, claimants in claims.items():
        if len(claimants) > 1:
            log.warning("nodes %s all announced PKI id %d: all left out", sorted(claimants), pki)
    return {nodes[0]: pki for pki, nodes in claims.items() if len(nodes) == 1}


class SecureAverage:
    """One secure weighted average over the nodes: ``SecureAverage(grid, policy)(nodes, kind, v)``.

    ``policy`` is a ``SecurePolicy`` for the steps of a robust aggregation (kinds ``mean`` and
    ``weiszfeld``, sent as Flower "train" messages) or a ``TallyPolicy`` for a vote tally (kind
    ``tally``, ``message_type="evaluate"``: the nodes' vote mod runs on their evaluate handler).
    ``malicious=True`` runs malicious-server mode with the nodes' ``identity_keys``
    (a directory of ``secagg keygen`` or a mapping PKI id -> public key; refused
    here without them); each call then takes ``nodes`` as a mapping Flower node id
    -> PKI id (``announced_identities``).
    """

    def __init__(
        self, grid: Grid, policy: SecurePolicy | TallyPolicy, *, timeout: float = 60.0,
        rng: RandomSource | None = None, message_type: str = "train", malicious: bool = False,
        identity_keys: IdentityKeys | None = None,
    ):
        self.grid = grid
        self.policy = policy
        self.timeout = timeout
        self.rng = rng or SystemRandom()
        self.identity_keys = identity_keys_for(malicious, identity_keys)
        self.message_type = message_type

    @property
    def malicious(self) -> bool:
        return self.identity_keys is not None

    def threshold_for(self, n: int) -> int:
        """The policy's fraction of n; in malicious mode also t > n/2 (protocol_spec.md 8.2)."""
        t = self.policy.threshold_for(n)
        return max(t, n // 2 + 1) if self.malicious else t

    def __call__(self, nodes: Sequence[int] | Mapping[int, int], kind: Kind, v: np.ndarray) -> StepRecord:
        """One step in a session of its own; raises ``AbortError`` when it reveals nothing.  ``nodes``: the
        Flower node ids, numbered 1..n as secagg ids; in malicious mode a mapping Flower node id -> its
        PKI id, the secagg id it plays."""
        return self.session(nodes, 1).step(kind, v)

    def session(self, nodes: Sequence[int] | Mapping[int, int], calls: int) -> "StepSession":
        """A session of up to ``calls`` steps over ``nodes`` (as for one step): one key agreement."""
        return StepSession(self, nodes, calls)


class StepSession:
    """The steps of one aggregation as the calls of one multi-call secagg session (protocol_spec.md 16).

    ``step(kind, v)`` runs the next call: the first sends every node its setup (and runs the key
    rounds), each later one a ``call_open`` with the step's kind and v, to the survivors of the
    first only (a later step that loses one aborts before anything is unmasked)."""

    def __init__(self, average: SecureAverage, nodes: Sequence[int] | Mapping[int, int], calls: int):
        if average.identity_keys is not None:
            if not isinstance(nodes, Mapping):
                raise SetupError("malicious-server mode: nodes must map each Flower node id to its PKI id "
                                 "(announced_identities of the ready replies)")
            secagg_id = dict(nodes)
            unknown = sorted(u for u in secagg_id.values() if u not in average.identity_keys)
            if unknown or len(set(secagg_id.values())) != len(secagg_id):
                raise SetupError(f"malicious-server mode: every node needs its own PKI id of the directory; "
                                 f"unknown {unknown[:5]}, or one id given twice")
        else:
            secagg_id = {node: k + 1 for k, node in enumerate(sorted(nodes))}
        self.average = average
        self.secagg_id = secagg_id
        self.nodes = tuple(sorted(secagg_id))
        self.node_of = {k: node for node, k in secagg_id.items()}
        self.calls = calls
        self.server: Server | None = None

    def step(self, kind: Kind, v: np.ndarray) -> StepRecord:
        """The session's next step; raises ``AbortError`` when it reveals nothing."""
        start = time.perf_counter()
        average, secagg_id, nodes, node_of = self.average, self.secagg_id, self.nodes, self.node_of
        encoding = average.policy.encoding
        if self.server is None:
            encoding.check_capacity(len(nodes))
            params = PublicParams.create(
                secagg_id.values(),
                threshold=average.threshold_for(len(nodes)),
                modulus=encoding.modulus,
                dim=v.size + 1,
                rng=average.rng,
                malicious=average.malicious,
                identity_keys=(
                    {u: average.identity_keys[u] for u in secagg_id.values()} if average.identity_keys else None
                ),
                calls=self.calls,
            )
            certificate = average.policy.check_step(kind, params, v, "server")
            # auto_close=False: a round closes once every reply of the round trip has been read, never in
            # the middle of one node's reply (so no node can answer a round it has not yet been sent).
            server = self.server = Server(params, auto_close=False)
            asked_ids = params.client_ids
            outgoing = [
                Message(
                    content("setup", setup=Setup(params, secagg_id[n], kind, v, node_of).encode()),
                    dst_node_id=n, message_type=average.message_type,
                )
                for n in nodes
            ]
        else:
            server, params = self.server, self.server.params
            certificate = average.policy.check_step(kind, params, v, "server")
            # Later steps go to the pinned survivors only (open_call), with the step's kind and v.
            outgoing = self._messages(server.open_call(encode_step(kind, v)))
            asked_ids = server.pinned or ()
        received = 0
        violations: list[tuple[int, str]] = []
        while server.result is None:
            asked = {m.metadata.dst_node_id for m in outgoing}
            replies = average.grid.send_and_receive(outgoing, timeout=average.timeout)
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
            outgoing = self._messages(server.close_round())  # whoever did not answer dropped; AbortError below t
        result = server.result
        value, sum_weights, error = encoding.decode_average(result.total, len(result.included))
        return StepRecord(
            kind=kind,
            broadcast=v.copy(),
            output=value if kind == "tally" else _project(value, average.policy.norm_bound),  # a tally is counts
            nodes=tuple(node_of[u] for u in asked_ids),
            included=tuple(node_of[u] for u in result.included),
            certified_weight=certificate,
            error_bound=error,
            sum_weights=sum_weights,
            bytes_received=received,
            seconds=time.perf_counter() - start,
            violations=tuple(violations),
        )

    def _messages(self, answers: list) -> list[Message]:
        """The server's secagg messages as Flower "round" messages, one per node."""
        per_node: dict[int, list[bytes]] = {}
        for msg in answers:
            per_node.setdefault(self.node_of[msg.recipient], []).append(msg.encode())
        return [
            Message(content("round", data=data), dst_node_id=n, message_type=self.average.message_type)
            for n, data in per_node.items()
        ]


class SecureRFA:
    """The secure robust aggregation as a Flower strategy.

    ``SecureRFA("geometric_median", policy=policy).start(grid=grid, initial_arrays=arrays, num_rounds=3)``

    ``rule`` is a secure rule of ``rfa.aggregators`` (``"mean"``,
    ``"geometric_median"``, ``"one_step"``, by name or as an object; its nu
    must be the policy's, which the nodes enforce); plaintext rules are
    refused, they need every update (use ``RobustFedAvg``).  Sampling follows
    Flower's ``FedAvg``: ``fraction_train`` of the connected nodes, at least
    ``min_train_nodes``, once at least ``min_available_nodes`` are connected.
    ``timeout`` bounds each Flower round trip; ``start``'s ``timeout`` is
    Flower's name for it and overrides it.  ``malicious=True`` runs every
    secure average in malicious-server mode with the nodes' ``identity_keys``
    (the directory ``secagg keygen`` writes, or a mapping PKI id -> public
    key); without them it is refused here.
    """

    def __init__(
        self,
        rule: Aggregator | str = "geometric_median",
        *,
        policy: SecurePolicy,
        fraction_train: float = 1.0,
        min_train_nodes: int = 2,
        min_available_nodes: int = 2,
        arrayrecord_key: str = "arrays",
        configrecord_key: str = "config",
        rule_params: dict | None = None,
        malicious: bool = False,
        identity_keys: IdentityKeys | None = None,
    ):
        self.identity_keys = identity_keys_for(malicious, identity_keys)  # first: a refusal costs nothing
        if isinstance(rule, str):
            params = dict(rule_params or {})
            if rule in ("geometric_median", "one_step"):
                params.setdefault("nu", policy.nu)
            rule = make_aggregator(rule, **params)
        elif rule_params:
            raise SetupError("rule_params go with a rule given by name")
        if not isinstance(rule, (Mean, GeometricMedianRule, OneStepRule)):
            raise PlaintextOnly(f"{rule.name} needs every update in the clear; use RobustFedAvg for it")
        if not isinstance(rule, Mean) and rule.nu != policy.nu:
            raise SetupError(f"the rule's nu={rule.nu} differs from the agreed policy's nu={policy.nu}")
        if not 0.0 < fraction_train <= 1.0:
            raise SetupError(f"fraction_train must be in (0, 1], got {fraction_train}")
        if min_train_nodes < 2 or min_available_nodes < 2:
            raise SetupError("secure aggregation needs at least 2 nodes (min_train_nodes, min_available_nodes)")
        self.policy = policy
        self.rule = rule
        self.fraction_train = fraction_train
        self.min_train_nodes = min_train_nodes
        self.min_available_nodes = min_available_nodes
        self.arrayrecord_key = arrayrecord_key
        self.configrecord_key = configrecord_key
        self.timeout = 60.0
        self.rounds: list[RoundRecord] = []  # what each round did, step by step (also summarised in the Result)

    def summary(self) -> None:
        log.info("\t├── rule: %s (%s)", self.rule.name, ", ".join(f"{k}={v}" for k, v in vars(self.rule).items()))
        log.info("\t├── policy: C=%g, weights in [%g, %g], nu=%g, max weight %s, threshold %.3g of the nodes",
                 self.policy.norm_bound, self.policy.alpha_min, self.policy.alpha_max, self.policy.nu,
                 self.policy.max_weight, self.policy.threshold)
        log.info("\t├── sampling: fraction_train=%g, min_train_nodes=%d, min_available_nodes=%d",
                 self.fraction_train, self.min_train_nodes, self.min_available_nodes)
        log.info("\t└── mode: %s", "honest-but-curious" if self.identity_keys is None else
                 f"malicious server, {len(self.identity_keys)} identity keys")

    @property
    def malicious(self) -> bool:
        return self.identity_keys is not None

    def aggregate(
        self, grid: Grid, nodes: Iterable[int] | Mapping[int, int], dim: int
    ) -> tuple[np.ndarray, tuple[StepRecord, ...], str | None]:
        """The rule's aggregate of the updates the nodes hold, by secure averages only.

        ``nodes``: Flower node ids; in malicious mode a mapping node id -> PKI id.

        Returns the aggregate, the completed steps and why the median stopped early (None if
        it did not).  The first step pins its survivors; a later step that loses one of them
        aborts, and the aggregate is the last completed iterate.  ``AbortError`` from the first
        step propagates: nothing was revealed, so there is no aggregate.
        """
        average = SecureAverage(grid, self.policy, timeout=self.timeout, malicious=self.malicious,
                                identity_keys=self.identity_keys)
        ids = dict(nodes) if isinstance(nodes, Mapping) else None
        if self.malicious and ids is None:
            raise SetupError("malicious-server mode: nodes must map each Flower node id to its PKI id")
        zero = np.zeros(dim)
        calls = 1 + self.rule.rounds if isinstance(self.rule, GeometricMedianRule) else 1
        session = average.session(ids if self.malicious else tuple(sorted(nodes)), calls)  # type: ignore[arg-type]
        steps = [session.step("weiszfeld" if isinstance(self.rule, OneStepRule) else "mean", zero)]
        stopped = None
        if isinstance(self.rule, GeometricMedianRule):
            for _ in range(self.rule.rounds):
                try:
                    steps.append(session.step("weiszfeld", steps[-1].output))
                except AbortError as exc:
                    stopped = str(exc)
                    log.warning("the median stopped after %d of %d steps (last completed iterate kept): %s",
                                len(steps), self.rule.rounds + 1, exc)
                    break
        return steps[-1].output, tuple(steps), stopped

    def _sample(self, grid: Grid) -> list[int]:
        """Flower's FedAvg sampling: wait for ``min_available_nodes``, then take ``fraction_train`` of them."""
        connected = list(grid.get_node_ids())
        size = max(int(len(connected) * self.fraction_train), self.min_train_nodes)
        sampled, _ = sample_nodes(grid, self.min_available_nodes, size)
        return sorted(sampled)

    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
    ) -> Result:
        """Run ``num_rounds`` rounds; the Flower ``Result`` (arrays, per-round secure aggregation
        figures in ``train_metrics_clientapp``, ``evaluate_fn``'s in ``evaluate_metrics_serverapp``)."""
        self.timeout = timeout
        log.info("Starting %s strategy:", type(self).__name__)
        self.summary()
        layout = Layout.of(initial_arrays)
        w = layout.flatten(initial_arrays)
        result = Result(arrays=initial_arrays)
        self.rounds = []
        began = time.time()
        if evaluate_fn is not None:
            metrics = evaluate_fn(0, initial_arrays)
            log.info("Initial global evaluation results: %s", metrics)
            if metrics is not None:
                result.evaluate_metrics_serverapp[0] = metrics
        for server_round in range(1, num_rounds + 1):
            config = ConfigRecord(dict(train_config or {}))
            config["server-round"] = server_round
            arrays = layout.unflatten(w)
            sampled = self._sample(grid)
            messages = [
                Message(RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config}), dst_node_id=n,
                        message_type="train")
                for n in sampled
            ]
            replies = list(grid.send_and_receive(messages, timeout=timeout))
            identities = announced_identities(replies, self.identity_keys) if self.identity_keys is not None else None
            ready = tuple(sorted(identities)) if identities is not None else tuple(sorted(
                m.metadata.src_node_id for m in replies
                if not m.has_error() and (r := secagg_record(m)) is not None and r.get("op") == "ready"
            ))
            try:
                aggregate, steps, stopped = self.aggregate(grid, identities if identities is not None else ready, w.size)
            except AbortError as exc:  # nothing revealed: this round leaves the model as it was
                log.warning("round %d: secure aggregation aborted, global model unchanged: %s", server_round, exc)
                aggregate, steps, stopped = np.zeros_like(w), (), f"aborted: {exc}"
            w = w + aggregate
            result.arrays = layout.unflatten(w)
            metrics = evaluate_fn(server_round, result.arrays) if evaluate_fn is not None else None
            if metrics is not None:
                result.evaluate_metrics_serverapp[server_round] = metrics
            record = RoundRecord(server_round, ready, steps, metrics, stopped)
            self.rounds.append(record)
            result.train_metrics_clientapp[server_round] = record.summary(len(sampled))
            log.info("[ROUND %d/%d] %s", server_round, num_rounds, record.line(len(sampled)))
        log.info("Strategy execution finished in %.2fs", time.time() - began)
        return result
