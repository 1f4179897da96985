"""The client's side of secure aggregation over Flower: a Flower client mod.

``SecureRFAMod()`` wraps a ClientApp's ``train`` function:

* an ordinary train message runs the wrapped function; the mod keeps the
  update w_i - w (clipped to the public norm ball C) and the weight
  alpha_i = num-examples (clipped into the public range) in the node's
  ``context.state`` and answers only "ready": the model and the metrics never
  leave the node;
* a setup message of a step checks the privacy rule of ``rfa.privacy`` with
  the client's own policy (a violated certificate refuses the step before any
  masked input exists), computes beta_i (Algorithm 2, line 3), encodes
  (beta_i w_i, beta_i) and starts a ``secagg.Client``;
* each later message is fed to that client state machine, whose replies go
  back.  The steps of one aggregation share one multi-call session
  (protocol_spec.md 16): a later step arrives as a ``call_open`` carrying its
  kind and v, and the node checks that step's certificate with its own policy,
  as it checked the first, before computing its input.

Before a step starts the node also checks, with nothing sent yet: that the
setup names this node for its secagg id; its own policy on the secagg
parameters (``secagg.ClientPolicy`` from its node config, or given to the
mod); the mode and the identity keys against its identity directory, if it
has one; that it has not taken part in a session with that id before; and the
survivor pin.  **Pin:** the first step that reveals a sum containing this
node's update fixes the set it was revealed over (Flower node ids; in
malicious-server mode the PKI ids, the identities the signatures bind); every
later step on the same update (the same vector and weight, whatever round the
server says it is) must be over exactly that set, or the node refuses to
start it, and its secagg client refuses to unmask any other survivor list.
Two sums over sets that differ by one node would reveal that node's update
(protocol_spec.md, RFA section "Across calls").

**Malicious-server mode.** A node with an identity in its node config
(``secagg-identity-dir``: a directory of ``secagg keygen`` holding its
``client-<id>.key`` and every ``client-<id>.pub`` it trusts;
``secagg-identity``: its PKI id) announces its PKI id in "ready", takes part
only in malicious-mode sessions whose identity keys equal its directory's
(``mode-downgrade``, ``identity-keys``, as ``secagg client --identity-dir``)
and in which it plays its PKI id, signs with its key, and claims each session
id once in the ``FileLedger`` beside its key (at the setup; the rebuilds of
later messages claim nothing).  A node without an identity refuses a
malicious-mode setup.

Flower may run every message in a fresh process, so the state machine is not
kept in memory: the node keeps a 32-byte seed from the OS and the server
messages of the session in ``context.state`` and rebuilds the client by
replaying them (the state machine is deterministic given its RNG).  The seed
keys a ChaCha20 stream (``secagg.SeededRandom``); it never leaves the node.
A refused message raises, which Flower returns as an error reply: to the
server a dropout.

``SecureVoteMod()`` is the same machinery on the ClientApp's ``evaluate``
handler for the 2PRASHB vote: it computes the node's ballot on two candidate
models with the ClientApp's own evaluate function, keeps it, and puts it into
the tally (kind ``tally``) as a one-hot vector of weight 1.
"""

from __future__ import annotations

import hashlib

import msgpack
import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, RecordDict
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.constant import ErrorCode

from rfa.voting import INNER, OUTER
from rfa.weiszfeld import weiszfeld_weights
from secagg import Client, ClientPolicy, SeededRandom, SessionLedger, SystemRandom
from secagg.messages import CallOpen

from .arrays import Layout
from .protocol import (
    CANDIDATES, NodeIdentity, SecurePolicy, Setup, SetupError, TallyPolicy, client_policy, content, decode_step,
    node_identity, secagg_record,
)

UPDATE = "rfa-update"  # context.state: the local update (ArrayRecord)
LOCAL = "rfa-local"  # context.state: alpha_i and the open session (ConfigRecord)
BALLOT = "rfa-ballot"  # context.state: the one-hot ballot of the last vote (ArrayRecord), SecureVoteMod
VOTE = "rfa-vote"  # context.state: the weight 1 and the tally's open session (ConfigRecord), SecureVoteMod
# context.state: what outlives one update: the pins (update digest -> node ids) and the session ids
# this node has taken part in, as msgpack bytes (Flower node ids are unsigned 64-bit integers).
MEMORY = "rfa-memory"
SEED_BYTES = 32


class SecureRFAMod:
    """``@app.train(mods=[SecureRFAMod()])``: needs no ``Context`` to build.

    ``policy``: the public privacy parameters agreed for the run; None reads them
    from the run config when a message arrives (``SecurePolicy.from_config``: keys
    ``norm-bound``, ``alpha-min``, ``alpha-max``, ``nu``, ...).  ``client_policy``:
    the node's floor on the secagg parameters; None reads it from the node config
    when a setup arrives (keys ``protocol.POLICY_KEYS``).  The node's identity for
    malicious-server mode always comes from its node config (``protocol.node_identity``).
    """

    # Where a step's input lives in context.state: the vector, and its ConfigRecord (the weight alpha,
    # the open session's seed, setup and inbox, and the digest its pin is kept under).
    _vector_key = UPDATE
    _local_key = LOCAL
    _missing = "no local update: this node did not train in this round"

    def __init__(
        self, policy: SecurePolicy | None = None, *, weighted_by_key: str = "num-examples",
        client_policy: ClientPolicy | None = None,
    ):
        self.policy = policy
        self.weighted_by_key = weighted_by_key
        self.client_policy = client_policy

    def _policy(self, context: Context) -> SecurePolicy:
        return self.policy if self.policy is not None else SecurePolicy.from_config(context.run_config)

    def __call__(self, message: Message, context: Context, call_next: ClientAppCallable) -> Message:
        record = secagg_record(message)
        if record is None:
            return self._train(message, context, call_next)
        op = record.get("op")
        if op == "setup":
            return self._setup(message, context, record)
        if op == "round":
            return self._round(message, context, record)
        raise SetupError(f"unknown secure aggregation op {op!r:.20}")

    # ---- local training: keep the update, answer "ready" --------------------

    def _train(self, message: Message, context: Context, call_next: ClientAppCallable) -> Message:
        reply = call_next(message, context)
        if reply.has_error():
            return reply
        if len(message.content.array_records) != 1 or len(reply.content.array_records) != 1:
            raise SetupError("a train message and its reply must carry exactly one model record each")
        sent = next(iter(message.content.array_records.values()))
        trained = next(iter(reply.content.array_records.values()))
        layout = Layout.of(sent)
        update = layout.flatten(trained) - layout.flatten(sent)
        norm = float(np.linalg.norm(update))
        if not np.isfinite(norm):
            raise SetupError("the local update is not finite")
        policy = self._policy(context)
        if norm > policy.norm_bound:  # client-side clipping to the public ball
            update *= policy.norm_bound / norm
        alpha = None
        for metrics in reply.content.metric_records.values():
            if self.weighted_by_key in metrics:
                alpha = float(metrics[self.weighted_by_key])  # type: ignore[arg-type]
        if alpha is None or not alpha > 0:
            raise SetupError(f"the train function reported no positive '{self.weighted_by_key}'")
        alpha = float(np.clip(alpha, policy.alpha_min, policy.alpha_max))
        identity = node_identity(context.node_config)  # a broken identity config fails here, before any step
        context.state[UPDATE] = ArrayRecord([update])
        context.state[LOCAL] = ConfigRecord({
            "alpha": alpha, "seed": b"", "setup": b"", "inbox": [], "digest": _digest(update, alpha),
        })
        if identity is None:
            return Message(content("ready"), reply_to=message)
        return Message(content("ready", identity=identity.client_id), reply_to=message)  # public: its PKI id

    # ---- secure aggregation steps --------------------------------------------

    def _local(self, context: Context) -> ConfigRecord:
        if self._local_key not in context.state.config_records or self._vector_key not in context.state.array_records:
            raise SetupError(self._missing)
        return context.state.config_records[self._local_key]

    @staticmethod
    def _client(
        policy: SecurePolicy, setup: Setup, local: ConfigRecord, update: np.ndarray, seed: bytes, pin: set[int] | None,
        identity: NodeIdentity | None = None, ledger: SessionLedger | None = None,
    ) -> Client:
        """The secagg client of this step, its input the encoding of (beta_i w_i, beta_i); in malicious
        mode with the node's identity key, and ``ledger`` only when it starts the session (the setup).

        A multi-call session's later steps arrive as call_open broadcasts (``decode_step``): the node
        checks each one's certificate with its own policy, as it checks the setup's, before it
        computes that step's input."""
        alpha = np.array([float(local["alpha"])])  # type: ignore[arg-type]
        params = setup.params

        def encoded(kind: str, v: np.ndarray) -> np.ndarray:
            if kind in ("mean", "tally"):  # a tally's weight is 1 (SecureVoteMod's alpha)
                beta = float(alpha[0])
            else:
                beta = float(weiszfeld_weights(update[None, :], v, alpha, policy.nu)[0])
            return policy.encoding.encode(update, beta).vector

        def inputs(call: int, opened: CallOpen | None) -> np.ndarray:
            if opened is None:
                return encoded(setup.kind, setup.v)
            kind, v = decode_step(opened.broadcast, params)
            policy.check_step(kind, params, v, f"client {setup.client_id}")  # refuses before anything is masked
            return encoded(kind, v)

        pinned = None if pin is None else [u for u in setup.nodes if _pin_member(setup, u) in pin]
        key = identity.key if params.malicious and identity is not None else None
        if params.calls > 1:
            return Client(params, setup.client_id, None, rng=SeededRandom(seed), pinned=pinned,
                          identity_key=key, ledger=ledger, inputs=inputs)
        return Client(params, setup.client_id, encoded(setup.kind, setup.v), rng=SeededRandom(seed), pinned=pinned,
                      identity_key=key, ledger=ledger)

    def _setup(self, message: Message, context: Context, record: ConfigRecord) -> Message:
        local = self._local(context)
        update = context.state.array_records[self._vector_key].to_numpy_ndarrays()[0]
        policy = self.client_policy or client_policy(context.node_config)
        identity = node_identity(context.node_config)
        # The mode and the identity keys are screened here, against this node's directory.
        setup = Setup.decode(record["setup"], policy, trusted_keys=identity.trusted if identity else None)  # type: ignore[arg-type]
        params = setup.params
        if setup.nodes[setup.client_id] != context.node_id:
            raise SetupError(f"the setup gives secagg id {setup.client_id} to node {setup.nodes[setup.client_id]}, "
                             f"not to this node {context.node_id}")
        if params.malicious and identity is not None and setup.client_id != identity.client_id:
            raise SetupError(f"the setup gives this node secagg id {setup.client_id}; its identity is "
                             f"{identity.client_id} (malicious-server mode plays the PKI id)")
        if params.dim != update.size + 1:
            raise SetupError(f"the session is for {params.dim - 1} parameters, the update has {update.size}")
        policy.check(params)
        agreed = self._policy(context)
        agreed.check_step(setup.kind, params, setup.v, f"client {setup.client_id}")
        pins, sessions = _memory(context)
        if params.session_id in sessions:
            raise SetupError(f"session id {params.session_id.hex()[:16]}... was used before: refused")
        pin = pins.get(_pin_key(setup, local["digest"]))  # type: ignore[arg-type]
        members = {_pin_member(setup, u) for u in setup.nodes}
        if pin is not None and members != pin:
            raise SetupError(
                f"the survivor set pinned by this update's first sum has {len(pin)} nodes; this step asks "
                f"{len(members)}, {len(pin ^ members)} of them different: two sums over "
                "different sets would reveal the difference"
            )
        seed = SystemRandom().bytes(SEED_BYTES)
        # Only here, where the session starts, does the client claim the session id in the ledger.
        ledger = identity.ledger() if params.malicious and identity is not None else None
        replies = self._client(agreed, setup, local, update, seed, pin, identity, ledger).start()
        _remember(context, pins, sessions | {params.session_id})
        local["seed"], local["setup"], local["inbox"] = seed, record["setup"], []
        context.state[self._local_key] = local
        return Message(content("reply", data=[m.encode() for m in replies]), reply_to=message)

    def _round(self, message: Message, context: Context, record: ConfigRecord) -> Message:
        local = self._local(context)
        if not local["setup"]:
            raise SetupError("a secure aggregation round before its setup")
        update = context.state.array_records[self._vector_key].to_numpy_ndarrays()[0]
        setup = Setup.decode(local["setup"])  # type: ignore[arg-type]
        pins, sessions = _memory(context)
        key = _pin_key(setup, local["digest"])  # type: ignore[arg-type]
        # Malicious mode: the same identity key on every rebuild, and no ledger (the setup claimed the id).
        identity = node_identity(context.node_config) if setup.params.malicious else None
        client = self._client(self._policy(context), setup, local, update, local["seed"], pins.get(key), identity)  # type: ignore[arg-type]
        client.start()
        inbox = list(local["inbox"])  # type: ignore[arg-type]
        for data in inbox:  # replay: rebuilds exactly the state the last message left (no reply, no masks)
            client.receive(data, replay=True)
        replies = []
        for data in record["data"]:  # type: ignore[union-attr]
            replies += client.receive(data)  # with a pin, a different survivor list raises: nothing revealed
            inbox.append(data)
        if client.unmasked_over is not None and key not in pins:
            # This update's first revealed sum: every later one must be over the same nodes.
            pins[key] = {_pin_member(setup, u) for u in client.unmasked_over}
            _remember(context, pins, sessions)
        local["inbox"] = inbox
        context.state[self._local_key] = local
        return Message(content("reply", data=[m.encode() for m in replies]), reply_to=message)


class SecureVoteMod(SecureRFAMod):
    """``@app.evaluate(mods=[SecureVoteMod()])``: the node's side of the 2PRASHB vote (Yi et al., Algorithm 3).

    * A vote message (``op="vote"``, from ``RobustFedAvg`` with a two-phase
      rule) carries the two candidate models.  The mod runs the ClientApp's own
      ``evaluate`` function on each, as an ordinary evaluate message (the
      candidate under ``arrayrecord_key``; its ``"config"`` has ``vote=True``,
      ``candidate`` = ``"inner"`` or ``"outer"`` and one ``vote-seed``, the
      same for both calls, from which to draw the fresh mini-batch both are
      judged on), and reads the loss under ``loss_key`` from the reply's
      metrics.  The ballot is the lower loss (equal losses: Inner, the tie rule
      of ``rfa.voting``); the node keeps it in ``context.state`` and answers
      only "ready": neither the losses nor the ballot leave the node.
    * The tally's setup and rounds (kind ``tally``) are one secure weighted
      average whose input is the ballot's one-hot vector with weight 1, under
      the run's ``TallyPolicy`` (value and weight bounds 1: a ballot outside
      them is refused by the encoding, before anything is sent).  The node
      checks what ``SecureRFAMod`` checks (its ``ClientPolicy``, its secagg id,
      no reused session id); its pin is per vote, under a digest of the two
      candidates: a second tally on the same candidates must be over the same
      nodes.
    * Any other evaluate message goes to the evaluate function untouched.

    ``policy``: the ``TallyPolicy``; None reads it from the run config (keys
    ``threshold``, ``max-clients``, both optional).  A failed evaluation or a
    missing loss raises: the node abstains (to the server, it did not vote).
    """

    _vector_key = BALLOT
    _local_key = VOTE
    _missing = "no ballot: this node did not vote on these candidates"

    def __init__(
        self, policy: TallyPolicy | None = None, *, loss_key: str = "eval_loss", arrayrecord_key: str = "arrays",
        client_policy: ClientPolicy | None = None,
    ):
        self.policy = policy  # type: ignore[assignment]
        self.loss_key = loss_key
        self.arrayrecord_key = arrayrecord_key
        self.client_policy = client_policy

    def _policy(self, context: Context) -> TallyPolicy:  # type: ignore[override]
        return self.policy if self.policy is not None else TallyPolicy.from_config(context.run_config)  # type: ignore[return-value]

    def __call__(self, message: Message, context: Context, call_next: ClientAppCallable) -> Message:
        record = secagg_record(message)
        if record is None:
            return call_next(message, context)  # an ordinary evaluation
        op = record.get("op")
        if op == "vote":
            return self._vote(message, context, call_next)
        if op == "setup":
            return self._setup(message, context, record)
        if op == "round":
            return self._round(message, context, record)
        raise SetupError(f"unknown secure vote op {op!r:.20}")

    def _vote(self, message: Message, context: Context, call_next: ClientAppCallable) -> Message:
        # A new vote first removes the last ballot, so a node that fails to vote now has none to tally.
        # Every failure below is an error reply, not an exception: Flower keeps the state a reply leaves
        # (it drops that of a message that raised, which would bring the old ballot back).
        for key in (BALLOT, VOTE):
            if key in context.state:
                del context.state[key]
        try:
            losses, digest = self._losses(message, context, call_next)
        except _Abstain as failed:
            return failed.reply
        except Exception as exc:  # the reason names the failure only: it must not carry a loss
            return Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, f"this node abstains: {type(exc).__name__}"),
                           reply_to=message)
        ballot = OUTER if losses[OUTER] < losses[INNER] else INNER  # equal losses: Inner (rfa.voting's tie rule)
        context.state[BALLOT] = ArrayRecord([np.eye(len(CANDIDATES))[ballot]])
        context.state[VOTE] = ConfigRecord({"alpha": 1.0, "seed": b"", "setup": b"", "inbox": [], "digest": digest})
        return Message(content("ready"), reply_to=message)

    def _losses(self, message: Message, context: Context, call_next: ClientAppCallable) -> tuple[list[float], str]:
        """Both candidates' losses from the ClientApp's evaluate function, and the vote's digest."""
        received = message.content
        records = received.array_records
        if any(name not in records for name in CANDIDATES):
            raise SetupError(f"a vote message must carry both candidates {CANDIDATES}")
        candidates = [records[name] for name in CANDIDATES]
        layout = Layout.of(candidates[0])
        vectors = [layout.flatten(c) for c in candidates]  # LayoutMismatch if the two differ
        config = dict(received.config_records["config"]) if "config" in received.config_records else {}
        config.update({"vote": True, "vote-seed": int.from_bytes(SystemRandom().bytes(7), "big")})
        losses = []
        try:
            for name, candidate in zip(CANDIDATES, candidates):
                message.content = RecordDict({
                    self.arrayrecord_key: candidate, "config": ConfigRecord({**config, "candidate": name}),
                })
                reply = call_next(message, context)
                if reply.has_error():
                    raise _Abstain(reply)  # the evaluate function's own error reply
                losses.append(self._loss(reply))
        finally:
            message.content = received
        return losses, _vote_digest(vectors)

    def _loss(self, reply: Message) -> float:
        for metrics in reply.content.metric_records.values():
            if self.loss_key in metrics:
                loss = float(metrics[self.loss_key])  # type: ignore[arg-type]
                if np.isfinite(loss):
                    return loss
        raise SetupError(f"the evaluate function reported no finite '{self.loss_key}' for a vote candidate")


class _Abstain(Exception):
    """The evaluate function answered a vote candidate with an error reply: the node abstains with it."""

    def __init__(self, reply: Message):
        super().__init__("abstains")
        self.reply = reply


def _digest(update: np.ndarray, alpha: float) -> str:
    """Names the vector a sum contains: pins are per (update, weight), not per server round."""
    data = np.asarray(update, dtype="<f8").tobytes() + np.float64(alpha).tobytes()
    return hashlib.sha256(b"rfa-flower/pin|" + data).hexdigest()


def _pin_key(setup: Setup, digest: str) -> str:
    """Pins of the two modes are kept apart: they hold different kinds of ids."""
    return "pki:" + digest if setup.params.malicious else digest


def _pin_member(setup: Setup, u: int) -> int:
    """What a pin holds for secagg id ``u``: its Flower node, or in malicious-server mode its PKI id
    (``u`` itself).  Node ids are labels the SuperLink gives: a server that kept a pinned node's id
    but gave its place to a colluding identity would otherwise meet the pin."""
    return u if setup.params.malicious else setup.nodes[u]


def _vote_digest(candidates: list[np.ndarray]) -> str:
    """Names a vote: pins are per pair of candidates, whatever ballot this node cast on them."""
    data = b"".join(np.asarray(c, dtype="<f8").tobytes() + np.uint64(c.size).tobytes() for c in candidates)
    return hashlib.sha256(b"rfa-flower/vote|" + data).hexdigest()


def _memory(context: Context) -> tuple[dict[str, set[int]], set[bytes]]:
    """The node's pins and the session ids it took part in (empty on a fresh node)."""
    record = context.state.config_records.get(MEMORY)
    if record is None:
        return {}, set()
    obj = msgpack.unpackb(record["memory"], raw=False)  # type: ignore[arg-type]
    return {k: set(v) for k, v in obj["pins"].items()}, set(obj["sessions"])


def _remember(context: Context, pins: dict[str, set[int]], sessions: set[bytes]) -> None:
    data = {"pins": {k: sorted(v) for k, v in pins.items()}, "sessions": sorted(sessions)}
    context.state[MEMORY] = ConfigRecord({"memory": msgpack.packb(data, use_bin_type=True)})
