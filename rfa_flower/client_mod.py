"""The client's side of secure aggregation over Flower: a Flower client mod.

``SecureRFAMod(policy)`` wraps a ClientApp's ``train`` function:

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
  back.

Flower may run every message in a fresh process, so the state machine is not
kept in memory: the node keeps a 32-byte seed from the OS and the server
messages of the session in ``context.state`` and rebuilds the client by
replaying them (the state machine is deterministic given its RNG).  The seed
keys a ChaCha20 stream (``secagg.SeededRandom``); it never leaves the node.
A refused message raises, which Flower returns as an error reply: to the
server a dropout.
"""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message
from flwr.clientapp.typing import ClientAppCallable

from rfa.weiszfeld import weiszfeld_weights
from secagg import Client, SeededRandom, SystemRandom

from .arrays import Layout
from .protocol import SecurePolicy, Setup, SetupError, content, secagg_record

UPDATE = "rfa-update"  # context.state: the local update (ArrayRecord)
LOCAL = "rfa-local"  # context.state: alpha_i and the open session (ConfigRecord)
SEED_BYTES = 32


class SecureRFAMod:
    """``ClientApp(mods=[SecureRFAMod(policy)])`` or ``@app.train(mods=[...])``."""

    def __init__(self, policy: SecurePolicy, *, weighted_by_key: str = "num-examples"):
        self.policy = policy
        self.weighted_by_key = weighted_by_key

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
        if norm > self.policy.norm_bound:  # client-side clipping to the public ball
            update *= self.policy.norm_bound / norm
        alpha = None
        for metrics in reply.content.metric_records.values():
            if self.weighted_by_key in metrics:
                alpha = float(metrics[self.weighted_by_key])  # type: ignore[arg-type]
        if alpha is None or not alpha > 0:
            raise SetupError(f"the train function reported no positive '{self.weighted_by_key}'")
        alpha = float(np.clip(alpha, self.policy.alpha_min, self.policy.alpha_max))
        context.state[UPDATE] = ArrayRecord([update])
        context.state[LOCAL] = ConfigRecord({"alpha": alpha, "seed": b"", "setup": b"", "inbox": []})
        return Message(content("ready"), reply_to=message)

    # ---- secure aggregation steps --------------------------------------------

    def _local(self, context: Context) -> ConfigRecord:
        if LOCAL not in context.state.config_records or UPDATE not in context.state.array_records:
            raise SetupError("no local update: this node did not train in this round")
        return context.state.config_records[LOCAL]

    def _client(self, setup: Setup, local: ConfigRecord, update: np.ndarray, seed: bytes) -> Client:
        """The secagg client of this step, its input the encoding of (beta_i w_i, beta_i)."""
        alpha = np.array([float(local["alpha"])])  # type: ignore[arg-type]
        if setup.kind == "mean":
            beta = float(alpha[0])
        else:
            beta = float(weiszfeld_weights(update[None, :], setup.v, alpha, self.policy.nu)[0])
        encoded = self.policy.encoding.encode(update, beta)
        return Client(setup.params, setup.client_id, encoded.vector, rng=SeededRandom(seed))

    def _setup(self, message: Message, context: Context, record: ConfigRecord) -> Message:
        local = self._local(context)
        update = context.state.array_records[UPDATE].to_numpy_ndarrays()[0]
        setup = Setup.decode(record["setup"])  # type: ignore[arg-type]
        if setup.params.dim != update.size + 1:
            raise SetupError(f"the session is for {setup.params.dim - 1} parameters, the update has {update.size}")
        self.policy.check_step(setup.kind, setup.params, setup.v, f"client {setup.client_id}")
        seed = SystemRandom().bytes(SEED_BYTES)
        replies = self._client(setup, local, update, seed).start()
        local["seed"], local["setup"], local["inbox"] = seed, record["setup"], []
        context.state[LOCAL] = local
        return Message(content("reply", data=[m.encode() for m in replies]), reply_to=message)

    def _round(self, message: Message, context: Context, record: ConfigRecord) -> Message:
        local = self._local(context)
        if not local["setup"]:
            raise SetupError("a secure aggregation round before its setup")
        update = context.state.array_records[UPDATE].to_numpy_ndarrays()[0]
        client = self._client(Setup.decode(local["setup"]), local, update, local["seed"])  # type: ignore[arg-type]
        client.start()
        inbox = list(local["inbox"])  # type: ignore[arg-type]
        for data in inbox:  # replay: rebuilds exactly the state the last message left
            client.receive(data)
        replies = []
        for data in record["data"]:  # type: ignore[union-attr]
            replies += client.receive(data)
            inbox.append(data)
        local["inbox"] = inbox
        context.state[LOCAL] = local
        return Message(content("reply", data=[m.encode() for m in replies]), reply_to=message)
