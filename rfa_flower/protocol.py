"""What the secure aggregation over Flower puts into Flower records, shared by both sides.

Every message of a session travels as a Flower "train" message whose content
holds one ``ConfigRecord`` under ``RECORD``:

* server -> client, ``op="setup"``: ``setup`` = msgpack of the step
  (the secagg public parameters via ``secagg.bootstrap.params_to_wire``, the
  client's secagg id, which Flower node plays each secagg id, the step kind,
  the broadcast v as float64 bytes); the client answers with its
  ``advertise_keys``;
* server -> client, ``op="round"``: ``data`` = the list of secagg messages
  (``secagg.messages``, msgpack bytes) the server state machine addressed to
  this client; the client answers with the messages its state machine returns.
  The steps of one aggregation (the median's mean and Weiszfeld steps) are the
  calls of one multi-call secagg session (protocol_spec.md 16): the setup
  opens the first, and each later one arrives as a ``call_open`` whose
  broadcast is ``encode_step`` of the step's kind and v (``decode_step``);
* client -> server: ``op="reply"`` with ``data``, or ``op="ready"`` after local
  training (the update stays on the client); a node with an identity (malicious-server
  mode) says which in its "ready": ``identity`` = its PKI id;
* server -> client, ``op="vote"`` (a Flower "evaluate" message, 2PRASHB): the
  two candidate models as ``ArrayRecord``s ``"inner"`` and ``"outer"``; the
  client evaluates both, keeps its ballot and answers ``op="ready"``.  The
  tally is then one secure weighted average of kind ``tally`` (setup and
  rounds as above, also as "evaluate" messages) whose inputs are the ballots
  as one-hot vectors of weight 1 (``TallyPolicy``).

A client reply holds nothing but secagg wire messages (and, in "ready", the
node's public PKI id): no ``num-examples``, no metrics, no model.  The public privacy parameters (``SecurePolicy``) are
agreed before the run (Flower's run config), never taken from the server; the
node's own floor on the secagg parameters (``secagg.ClientPolicy``) comes from
its node config (``client_policy``), and so does its identity for malicious-server
mode (``node_identity``: node config keys ``secagg-identity-dir``, the key directory
``secagg keygen`` writes, and ``secagg-identity``, the node's PKI id).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

import msgpack
import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flwr.app import ConfigRecord, Message, RecordDict

from rfa.errors import RFAError
from rfa.privacy import PrivacyPolicy
from secagg import (
    ClientPolicy, FixedPointEncoding, MalformedMessage, ParameterError, ProtocolViolation, PublicParams, WeakParameters,
)
from secagg.bootstrap import params_from_wire, params_to_wire, screen_identity
from secagg.keydir import load_private_key, load_public_keys
from secagg.ledger import FileLedger

RECORD = "rfa-secagg"
Kind = Literal["mean", "weiszfeld", "tally"]
KINDS = ("mean", "weiszfeld", "tally")
BROADCASTS = ("weiszfeld",)  # the kinds whose setup carries a broadcast point v
CANDIDATES = ("inner", "outer")  # the record keys of a vote message's two candidate models, in ballot order


class SetupError(RFAError, ValueError):
    """A setup message is malformed or asks for a step the client's policy refuses."""


def _check_sizing(threshold: float, max_clients: int) -> None:
    """The two policy fields every step kind shares: the threshold fraction and the encoding's client count."""
    if not 0 < threshold <= 1:
        raise SetupError(f"threshold must be a fraction in (0, 1], got {threshold}")
    if not isinstance(max_clients, int) or max_clients < 2:
        raise SetupError(f"max_clients must be an integer >= 2, got {max_clients!r}")


@dataclass(frozen=True)
class SecurePolicy:
    """The public parameters both sides derive the step rules and the encoding from.

    ``norm_bound`` C (clients clip their update to it), the weight range
    [alpha_min, alpha_max] (clients clip num-examples into it), ``nu``, the
    bound ``max_weight`` s on effective weights (None: report only), the
    smallest secagg ``threshold`` fraction a client accepts, and ``max_clients``,
    which fixes the fixed-point encoding.
    """

    norm_bound: float
    alpha_min: float
    alpha_max: float
    nu: float
    max_weight: float | None = None
    threshold: float = 2 / 3
    max_clients: int = 64

    def __post_init__(self) -> None:
        _check_sizing(self.threshold, self.max_clients)
        self.privacy  # validates C, nu, the weight range and s

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "SecurePolicy":
        """From a Flower run config: keys ``norm-bound``, ``alpha-min``, ``alpha-max``, ``nu`` (required),
        ``max-weight`` (<= 0: none), ``threshold`` (default 2/3), ``max-clients`` (default 64)."""
        missing = [k for k in ("norm-bound", "alpha-min", "alpha-max", "nu") if k not in config]
        if missing:
            raise SetupError(f"the run config lacks the secure aggregation keys {missing} ([tool.flwr.app.config] "
                             "of the app's pyproject.toml, or give the policy to SecureRFAMod and SecureRFA)")
        try:
            s = float(config.get("max-weight", 0.0))
            return cls(
                norm_bound=float(config["norm-bound"]),
                alpha_min=float(config["alpha-min"]),
                alpha_max=float(config["alpha-max"]),
                nu=float(config["nu"]),
                max_weight=s if s > 0 else None,
                threshold=float(config.get("threshold", 2 / 3)),
                max_clients=int(config.get("max-clients", 64)),
            )
        except (TypeError, ValueError) as exc:
            if isinstance(exc, SetupError):
                raise
            raise SetupError(f"the run config's secure aggregation keys: {exc}") from None

    @property
    def privacy(self) -> PrivacyPolicy:
        return PrivacyPolicy(self.nu, self.norm_bound, self.alpha_min, self.alpha_max, self.max_weight)

    @property
    def encoding(self) -> FixedPointEncoding:
        return FixedPointEncoding.for_clients(
            self.max_clients, value_bound=self.norm_bound, weight_bound=self.privacy.beta_max
        )

    def threshold_for(self, n: int) -> int:
        return max(1, math.ceil(self.threshold * n))

    def check_step(self, kind: Kind, params: PublicParams, v: np.ndarray, party: str) -> float:
        """The rule of ``rfa.privacy`` for one step; raises CertificateViolation; returns the certificate."""
        if kind not in ("mean", "weiszfeld"):
            raise SetupError(f"a {kind!r:.20} step is not a step of the robust aggregation of updates")
        if params.n > self.max_clients:
            raise SetupError(f"{params.n} clients exceed max_clients={self.max_clients}")
        if params.threshold < self.threshold_for(params.n):
            raise SetupError(f"threshold t={params.threshold} is below the agreed {self.threshold:.3g} of n={params.n}")
        if kind == "mean":
            return self.privacy.check_mean(params.threshold, party)
        return self.privacy.client_check(v, params.threshold, party)  # certified with this v's reach, as in memory


@dataclass(frozen=True)
class TallyPolicy:
    """The public rules of a secure vote tally (2PRASHB over Flower), agreed before the run.

    Each voter's input is the one-hot vector of its ballot [Inner, Outer] with
    weight 1, encoded with value bound 1 and weight bound 1, the rule of
    ``rfa.voting.secure_tally``: the oracle checks bounds, not one-hotness, so
    within these bounds a malformed input moves the margin by at most 2, and a
    voter's own encoding refuses anything outside them.  ``threshold`` and
    ``max_clients`` are the run's (``SecurePolicy``'s keys, same defaults).
    """

    threshold: float = 2 / 3
    max_clients: int = 64

    def __post_init__(self) -> None:
        _check_sizing(self.threshold, self.max_clients)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "TallyPolicy":
        """From a Flower run config: ``threshold`` (default 2/3) and ``max-clients`` (default 64), both optional."""
        try:
            return cls(threshold=float(config.get("threshold", 2 / 3)), max_clients=int(config.get("max-clients", 64)))
        except (TypeError, ValueError) as exc:
            if isinstance(exc, SetupError):
                raise
            raise SetupError(f"the run config's vote keys: {exc}") from None

    @property
    def encoding(self) -> FixedPointEncoding:
        return FixedPointEncoding.for_clients(self.max_clients, value_bound=1.0, weight_bound=1.0)

    def threshold_for(self, n: int) -> int:
        return max(1, math.ceil(self.threshold * n))

    def check_step(self, kind: Kind, params: PublicParams, v: np.ndarray, party: str) -> float:
        """A tally step's rules; returns 1/t, the largest share one ballot can have in a revealed tally."""
        if kind != "tally":
            raise SetupError(f"{party}: a {kind!r:.20} step is not a vote tally")
        if params.n > self.max_clients:
            raise SetupError(f"{params.n} clients exceed max_clients={self.max_clients}")
        if params.threshold < self.threshold_for(params.n):
            raise SetupError(f"threshold t={params.threshold} is below the agreed {self.threshold:.3g} of n={params.n}")
        if v.shape != (len(CANDIDATES),) or np.any(v != 0):
            raise SetupError(f"{party}: a tally is over ballots of length {len(CANDIDATES)} and broadcasts nothing")
        return 1.0 / params.threshold


# Node config keys of a node's own policy on the secagg parameters (secagg.ClientPolicy), and their fields.
POLICY_KEYS = {
    "secagg-min-group": "min_group",
    "secagg-tolerated-corrupt": "corrupt",
    "secagg-tolerated-dropout": "dropout",
    "secagg-min-threshold": "min_threshold",
    "secagg-max-clients": "max_clients",
    "secagg-max-calls": "max_calls",
}


def client_policy(node_config: Mapping[str, Any]) -> ClientPolicy:
    """The node's ``ClientPolicy`` from its node config (keys ``POLICY_KEYS``; absent keys keep the defaults)."""
    fields: dict[str, Any] = {}
    for key, name in POLICY_KEYS.items():
        if key in node_config:
            value = node_config[key]
            fields[name] = int(value) if name in ("min_group", "max_clients", "max_calls") else float(value)  # type: ignore[arg-type]
    try:
        return ClientPolicy(**fields)
    except ParameterError as exc:
        raise SetupError(f"node config: {exc}") from None


# Node config keys of a node's identity for malicious-server mode (both or neither).
IDENTITY_DIR = "secagg-identity-dir"  # the node's key directory: its client-<id>.key, every client-<id>.pub it trusts
IDENTITY_ID = "secagg-identity"  # the node's PKI id: the secagg id it plays in every malicious-mode session


@dataclass(frozen=True)
class NodeIdentity:
    """A node's long-term identity: its PKI id, its Ed25519 key and the public keys it trusts.

    ``NodeIdentity.load(directory, client_id)`` reads a directory written by
    ``secagg keygen`` (``secagg.keydir``): ``client-<id>.key`` must match
    ``client-<id>.pub``, and every ``client-<id>.pub`` there is trusted.  The
    session ids it signed in are kept beside the key (``ledger``).
    """

    client_id: int
    directory: Path
    key: Ed25519PrivateKey
    trusted: Mapping[int, bytes]

    @classmethod
    def load(cls, directory: str | Path, client_id: int) -> "NodeIdentity":
        try:
            trusted = load_public_keys(directory)
            key = load_private_key(directory, client_id)
        except ParameterError as exc:
            raise SetupError(f"node identity: {exc}") from None
        return cls(client_id, Path(directory), key, trusted)

    def ledger(self) -> FileLedger:
        """``client-<id>.sessions`` beside the key: a session id is signed in once, whatever the process."""
        return FileLedger.beside_key(self.directory, self.client_id)


def node_identity(node_config: Mapping[str, Any]) -> NodeIdentity | None:
    """The node's identity from its node config (``IDENTITY_DIR`` and ``IDENTITY_ID``); None without either."""
    given = [k for k in (IDENTITY_DIR, IDENTITY_ID) if k in node_config]
    if not given:
        return None
    if len(given) == 1:
        missing = IDENTITY_ID if given == [IDENTITY_DIR] else IDENTITY_DIR
        raise SetupError(f"node config: {given[0]} needs {missing} as well")
    directory, client_id = node_config[IDENTITY_DIR], node_config[IDENTITY_ID]
    if isinstance(client_id, str) and client_id.isdigit():
        client_id = int(client_id)
    if type(client_id) is not int or not 1 <= client_id < 2**31:
        raise SetupError(f"node config: {IDENTITY_ID} must be a positive integer (a PKI id), got {client_id!r:.40}")
    if not isinstance(directory, str) or not directory:
        raise SetupError(f"node config: {IDENTITY_DIR} must be a directory path")
    return NodeIdentity.load(directory, client_id)


@dataclass(frozen=True)
class Setup:
    params: PublicParams
    client_id: int  # the recipient's secagg id
    kind: Kind
    v: np.ndarray  # the broadcast; a mean or tally step has none (zeros), and none travels
    nodes: Mapping[int, int]  # secagg id -> the Flower node that plays it (public: pins are kept per node)

    def encode(self) -> bytes:
        return msgpack.packb(
            {
                "params": params_to_wire(self.params),
                "id": self.client_id,
                "kind": self.kind,
                # Only a Weiszfeld step broadcasts a point: d zeros would cost every node 8d bytes.
                "v": np.asarray(self.v, dtype="<f8").tobytes() if self.kind in BROADCASTS else b"",
                "nodes": dict(self.nodes),
            },
            use_bin_type=True,
        )

    @classmethod
    def decode(
        cls, data: bytes, policy: ClientPolicy | None = None, *, trusted_keys: Mapping[int, bytes] | None = None
    ) -> "Setup":
        """Parse a setup.  With the node's ``policy`` (a node deciding whether to take part), refuse
        before rebuilding anything a session below that policy, and screen the mode and the identity
        keys against ``trusted_keys``, the node's identity directory (None: the node has none), as a
        TCP client does (``secagg.bootstrap.screen_identity``: ``mode-downgrade``, ``identity-keys``)."""
        # With a policy, no array or map may list more ids than it accepts: msgpack refuses such a
        # setup from the length header, before building it.
        limit = policy.max_clients + 16 if policy is not None else len(data)
        try:
            obj = msgpack.unpackb(data, raw=False, strict_map_key=False, max_array_len=limit, max_map_len=limit)
        except ValueError as exc:
            if policy is not None and "exceeds max" in str(exc):
                raise WeakParameters(
                    "max-clients", f"the setup holds a list or map of more entries than the {policy.max_clients} "
                    "clients this node accepts"
                ) from None
            raise SetupError(f"malformed setup: {exc}") from None
        except (msgpack.UnpackException, TypeError) as exc:  # TypeError: a map key msgpack cannot hash
            raise SetupError(f"malformed setup: {exc}") from None
        try:
            wire = obj["params"]
            if policy is not None and type(wire) is dict:
                policy.screen_wire(wire)
                try:
                    screen_identity(wire, trusted_keys)
                except ParameterError:  # malicious mode, and this node has no identity
                    raise SetupError(
                        f"malicious-server mode needs this node's identity: node config {IDENTITY_DIR} "
                        f"(a key directory of `secagg keygen`) and {IDENTITY_ID} (its PKI id)"
                    ) from None
            params = params_from_wire(wire)
            client_id, kind, v, nodes = obj["id"], obj["kind"], obj["v"], obj["nodes"]
        except (WeakParameters, ProtocolViolation, SetupError):
            raise  # the node's own policy or identity refuses the session: say so, not "malformed"
        except (MalformedMessage, AttributeError, KeyError, TypeError, ValueError, msgpack.UnpackException) as exc:
            raise SetupError(f"malformed setup: {exc}") from None
        if type(client_id) is not int or client_id not in params.client_ids:
            raise SetupError("setup names a client id outside the session")
        if (type(nodes) is not dict or set(nodes) != params.id_set
                or any(type(x) is not int for x in nodes.values()) or len(set(nodes.values())) != len(nodes)):
            raise SetupError("setup must name one distinct node for every secagg id")
        return cls(params, client_id, kind, _step_vector(kind, v, params), nodes)


def _step_vector(kind: Any, v: Any, params: PublicParams) -> np.ndarray:
    """The broadcast v of a step of this kind, checked (zeros for a kind that broadcasts none)."""
    if kind not in KINDS:
        raise SetupError(f"unknown step kind {kind!r:.20}")
    if kind not in BROADCASTS:
        if v != b"":
            raise SetupError(f"a {kind} step broadcasts no v")
        return np.zeros(params.dim - 1)
    if type(v) is not bytes or len(v) != 8 * (params.dim - 1):
        raise SetupError("the broadcast v does not have the session's dimension")
    vector = np.frombuffer(v, dtype="<f8").astype(np.float64)
    if not np.all(np.isfinite(vector)):
        raise SetupError("the broadcast v is not finite")
    return vector


def encode_step(kind: Kind, v: np.ndarray) -> bytes:
    """The public input of a later step of a multi-call session: its ``call_open`` broadcast."""
    data = np.asarray(v, dtype="<f8").tobytes() if kind in BROADCASTS else b""
    return msgpack.packb({"kind": kind, "v": data}, use_bin_type=True)


def decode_step(data: bytes, params: PublicParams) -> tuple[Kind, np.ndarray]:
    """(kind, v) of a later step's broadcast, checked as a setup's are; ``SetupError`` otherwise."""
    try:
        obj = msgpack.unpackb(data, raw=False, max_array_len=4, max_map_len=4)
        kind, v = obj["kind"], obj["v"]
    except (KeyError, TypeError, ValueError, msgpack.UnpackException) as exc:
        raise SetupError(f"malformed step broadcast: {exc}") from None
    if type(obj) is not dict or set(obj) != {"kind", "v"}:
        raise SetupError("a step broadcast is the map {kind, v}")
    return kind, _step_vector(kind, v, params)


def content(op: str, **fields: Any) -> RecordDict:
    return RecordDict({RECORD: ConfigRecord({"op": op, **fields})})


def wire_items(record: ConfigRecord) -> list[bytes]:
    """The secagg messages of a reply record; anything but a list of bytes is a ``MalformedMessage``."""
    data = record.get("data", [])
    if not isinstance(data, list) or not all(isinstance(item, bytes) for item in data):
        raise MalformedMessage("a reply's data must be a list of secagg messages (bytes)", field="data")
    return data


def secagg_record(message: Message) -> ConfigRecord | None:
    """The secagg record of a message, or None for an ordinary Flower message."""
    if message.has_content() and RECORD in message.content.config_records:
        return message.content.config_records[RECORD]
    return None
