"""What the secure aggregation over Flower puts into Flower records, shared by both sides.

Every message of a session travels as a Flower "train" message whose content
holds one ``ConfigRecord`` under ``RECORD``:

* server -> client, ``op="setup"``: ``setup`` = msgpack of the step
  (the secagg public parameters via ``secagg.bootstrap.params_to_wire``, the
  client's secagg id, the step kind, the broadcast v as float64 bytes);
  the client answers with its ``advertise_keys``;
* server -> client, ``op="round"``: ``data`` = the list of secagg messages
  (``secagg.messages``, msgpack bytes) the server state machine addressed to
  this client; the client answers with the messages its state machine returns;
* client -> server: ``op="reply"`` with ``data``, or ``op="ready"`` after local
  training (the update stays on the client).

A client reply holds nothing but secagg wire messages: no ``num-examples``,
no metrics, no model.  The public privacy parameters (``SecurePolicy``) are
agreed before the run (Flower's run config), never taken from the server.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import msgpack
import numpy as np
from flwr.app import ConfigRecord, Message, RecordDict

from rfa.errors import RFAError
from rfa.privacy import PrivacyPolicy
from secagg import FixedPointEncoding, MalformedMessage, PublicParams
from secagg.bootstrap import params_from_wire, params_to_wire

RECORD = "rfa-secagg"
Kind = Literal["mean", "weiszfeld"]


class SetupError(RFAError, ValueError):
    """A setup message is malformed or asks for a step the client's policy refuses."""


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
        if not 0 < self.threshold <= 1:
            raise SetupError(f"threshold must be a fraction in (0, 1], got {self.threshold}")
        if not isinstance(self.max_clients, int) or self.max_clients < 2:
            raise SetupError(f"max_clients must be an integer >= 2, got {self.max_clients!r}")
        self.privacy  # validates C, nu, the weight range and s

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "SecurePolicy":
        """From a Flower run config: keys norm-bound, alpha-min, alpha-max, nu, max-weight (<= 0: none), ..."""
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
        if params.n > self.max_clients:
            raise SetupError(f"{params.n} clients exceed max_clients={self.max_clients}")
        if params.threshold < self.threshold_for(params.n):
            raise SetupError(f"threshold t={params.threshold} is below the agreed {self.threshold:.3g} of n={params.n}")
        if kind == "mean":
            return self.privacy.check_mean(params.threshold, party)
        self.privacy.client_check(v, params.threshold, party)
        return self.privacy.certificate(params.threshold)


@dataclass(frozen=True)
class Setup:
    params: PublicParams
    client_id: int  # the recipient's secagg id
    kind: Kind
    v: np.ndarray  # the broadcast (zeros for a mean step)

    def encode(self) -> bytes:
        return msgpack.packb(
            {
                "params": params_to_wire(self.params),
                "id": self.client_id,
                "kind": self.kind,
                "v": np.asarray(self.v, dtype="<f8").tobytes(),
            },
            use_bin_type=True,
        )

    @classmethod
    def decode(cls, data: bytes) -> "Setup":
        try:
            obj = msgpack.unpackb(data, raw=False, strict_map_key=False)
            params = params_from_wire(obj["params"])
            client_id, kind, v = obj["id"], obj["kind"], obj["v"]
        except (MalformedMessage, AttributeError, KeyError, TypeError, ValueError, msgpack.UnpackException) as exc:
            raise SetupError(f"malformed setup: {exc}") from None
        if type(client_id) is not int or client_id not in params.client_ids:
            raise SetupError("setup names a client id outside the session")
        if kind not in ("mean", "weiszfeld"):
            raise SetupError(f"unknown step kind {kind!r:.20}")
        if type(v) is not bytes or len(v) != 8 * (params.dim - 1):
            raise SetupError("the broadcast v does not have the session's dimension")
        vector = np.frombuffer(v, dtype="<f8").astype(np.float64)
        if not np.all(np.isfinite(vector)):
            raise SetupError("the broadcast v is not finite")
        return cls(params, client_id, kind, vector)


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
