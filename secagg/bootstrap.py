"""Session bootstrapping over TCP: the hello frame and the parameters frame.

1. The client connects and sends ``{"type": "hello", "version": 4, "id": I}``.
2. The server binds the connection to ``I`` (refusing an id that is unknown,
   already bound, or arrives after ``advertise_keys`` closed) and answers
   ``{"type": "params", "version", "session_id", "client_ids", "threshold",
   "modulus_bits", "dim", "malicious", "identity_keys", "graph", "calls",
   "round_timeout", "join_seconds"}`` or ``{"type": "refused", "rule",
   "detail"}`` before closing.
3. The client rebuilds ``PublicParams`` (which validates them, identity keys
   included: canonical Ed25519 keys of prime order), refuses
   insecure thresholds and parameters below its own policy (``policy.py``;
   it then answers with a refusal frame and closes), and in malicious-server
   mode refuses identity keys that differ from the ones it trusts
   independently of the server (a local key directory playing the PKI).  It
   then sends ``advertise_keys``.

Both frames are plain msgpack maps with strictly typed fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import msgpack

from .errors import MalformedMessage, ParameterError, ProtocolViolation, SecAggError
from .graph import CompleteGraph, HararyGraph
from .messages import PROTOCOL_VERSION
from .params import PublicParams

HELLO_MAX_BYTES = 256
# The client cannot derive a limit before it knows the parameters; 16 MiB
# holds the parameters of ~200k clients with identity keys.
BOOTSTRAP_MAX_BYTES = 16 << 20


class Refused(SecAggError):
    """The server refused this connection during bootstrapping."""

    def __init__(self, rule: str, detail: str):
        self.rule = rule
        self.detail = detail
        super().__init__(f"server refused the connection ({rule}): {detail}")


@dataclass(frozen=True)
class SessionInfo:
    params: PublicParams
    round_timeout: float  # seconds the server waits for each round after advertise_keys
    join_seconds: float  # seconds left, when the params were sent, until advertise_keys closes


def _unpack(data: bytes, field: str, party: int | None = None) -> dict[str, Any]:
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=False,
            max_ext_len=0,
            max_str_len=4096,
            max_bin_len=64,
            max_array_len=len(data),
            max_map_len=len(data),
        )
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise MalformedMessage(f"not a msgpack object ({exc.__class__.__name__})", party=party, field=field)
    if type(obj) is not dict or type(obj.get("version")) is not int or obj["version"] != PROTOCOL_VERSION or type(obj.get("type")) is not str:
        raise MalformedMessage(f"expected a map with 'type' and 'version' {PROTOCOL_VERSION}", party=party, field=field)
    return obj


def _int(obj: Mapping[str, Any], key: str, field: str) -> int:
    value = obj.get(key)
    if type(value) is not int:
        raise MalformedMessage(f"{key} must be an integer", field=f"{field}.{key}")
    return value


def encode_hello(client_id: int) -> bytes:
    return msgpack.packb({"type": "hello", "version": PROTOCOL_VERSION, "id": client_id})


def decode_hello(data: bytes) -> int:
    """The client id claimed by a hello frame (not yet checked against the session)."""
    obj = _unpack(data, "hello")
    if obj["type"] != "hello" or set(obj) != {"type", "version", "id"}:
        raise MalformedMessage("expected exactly type='hello', version and id", field="hello")
    return _int(obj, "id", "hello")


def params_to_wire(params: PublicParams) -> dict[str, Any]:
    graph: Any = "complete"
    if isinstance(params.graph, HararyGraph):
        graph = ["harary", params.graph.degree, params.graph.dropout, params.graph.corrupt]
    elif not isinstance(params.graph, CompleteGraph):
        raise ParameterError("the TCP bootstrap describes the complete and the Harary (SecAgg+) graphs only")
    return {
        "session_id": params.session_id,
        "client_ids": list(params.client_ids),
        "threshold": params.threshold,
        "modulus_bits": params.modulus_bits,
        "dim": params.dim,
        "malicious": params.malicious,
        "identity_keys": {u: params.identity_keys[u] for u in params.client_ids} if params.malicious else {},
        "graph": graph,
        "calls": params.calls,
    }


def params_from_wire(obj: Mapping[str, Any], field: str = "params", *, allow_insecure: bool = False) -> PublicParams:
    """Rebuild and validate public parameters; every defect is a ``MalformedMessage``.

    ``allow_insecure`` is the reader's choice, never taken from the wire.
    """
    ids = obj.get("client_ids")
    keys = obj.get("identity_keys")
    if type(ids) is not list or not set(map(type, ids)) <= {int}:
        raise MalformedMessage("client_ids must be a list of integers", field=f"{field}.client_ids")
    if type(keys) is not dict or not set(map(type, keys)) <= {int} or not set(map(type, keys.values())) <= {bytes}:
        raise MalformedMessage("identity_keys must map integers to bytes", field=f"{field}.identity_keys")
    if type(obj.get("malicious")) is not bool or type(obj.get("session_id")) is not bytes:
        raise MalformedMessage("malicious must be a bool and session_id bytes", field=field)
    graph = obj.get("graph")
    sparse = (
        type(graph) is list and len(graph) == 4 and graph[0] == "harary" and type(graph[1]) is int
        and all(type(f) is float for f in graph[2:])
    )
    if graph != "complete" and not sparse:
        raise MalformedMessage("graph must be 'complete' or ['harary', degree, dropout, corrupt]", field=f"{field}.graph")
    if not obj["malicious"] and keys:
        raise MalformedMessage("identity keys in honest-but-curious mode", field=f"{field}.identity_keys")
    try:
        neighbours = None
        if sparse:
            neighbours = HararyGraph(ids, graph[1], obj["session_id"], dropout=graph[2], corrupt=graph[3])
        return PublicParams(
            session_id=obj["session_id"],
            graph=neighbours,
            client_ids=tuple(ids),
            threshold=_int(obj, "threshold", field),
            modulus_bits=_int(obj, "modulus_bits", field),
            dim=_int(obj, "dim", field),
            malicious=obj["malicious"],
            identity_keys=dict(keys),
            allow_insecure=allow_insecure,
            calls=_int(obj, "calls", field) if "calls" in obj else 1,  # absent: a one-call session
        )
    except ParameterError as exc:
        raise MalformedMessage(str(exc), field=field) from None


def screen_identity(obj: Mapping[str, Any], trusted_keys: Mapping[int, bytes] | None) -> None:
    """A client's check of the mode and the identity keys on raw parameters, before anything is rebuilt.

    ``trusted_keys``: the identity public keys this client trusts independently of
    the server (its key directory), or None if it has none.  A client with trusted
    keys refuses an honest-but-curious session (``mode-downgrade``); in malicious
    mode a client without them cannot take part (``ParameterError``), and for every
    id in ``client_ids`` the announced key must equal the trusted one
    (``identity-keys``; extra entries are ignored).  Comparing first means a map of
    keys this client does not trust costs no key validation.  Used by the TCP
    client (``tcp._screen``) and by the Flower node (``rfa_flower``).
    """
    malicious = obj.get("malicious")
    if trusted_keys is not None and malicious is False:
        # A client that holds a PKI expects signatures; accepting an honest-but-curious
        # session would let the server substitute keys and unmask every input.
        raise ProtocolViolation(0, "mode-downgrade", "this client requires malicious-server mode")
    if malicious is True:
        if trusted_keys is None:
            raise ParameterError("malicious-server mode: this client has no trusted identity keys (a key directory)")
        ids, keys = obj.get("client_ids"), obj.get("identity_keys")
        if type(ids) is list and type(keys) is dict:
            unknown = [u for u in ids if type(u) is not int or trusted_keys.get(u) != keys.get(u)]
            if unknown:
                raise ProtocolViolation(0, "identity-keys", f"identity keys of {unknown[:5]} differ from the trusted ones")


def encode_params(params: PublicParams, *, round_timeout: float, join_seconds: float) -> bytes:
    body = {"type": "params", "version": PROTOCOL_VERSION, **params_to_wire(params)}
    body.update(round_timeout=float(round_timeout), join_seconds=float(join_seconds))
    return msgpack.packb(body, use_bin_type=True)


def encode_refusal(rule: str, detail: str) -> bytes:
    """A refusal frame: the server's answer to a hello it refuses, or a client's answer to parameters it refuses."""
    return msgpack.packb({"type": "refused", "version": PROTOCOL_VERSION, "rule": rule, "detail": detail[:1024]})


def decode_refusal(data: bytes) -> tuple[str, str] | None:
    """(rule, detail) if ``data`` is a well-formed refusal frame, else None; never raises."""
    if len(data) > 4096:
        return None
    try:
        obj = _unpack(data, "refused")
    except MalformedMessage:
        return None
    rule, detail = obj.get("rule"), obj.get("detail")
    if obj["type"] != "refused" or type(rule) is not str or type(detail) is not str or len(rule) > 64:
        return None
    return rule, detail


def decode_bootstrap_reply(
    data: bytes, *, allow_insecure: bool = False, screen: Callable[[Mapping[str, Any]], None] | None = None
) -> SessionInfo:
    """The server's answer to hello; raises ``Refused`` or ``MalformedMessage``.

    ``allow_insecure`` is the client's own choice: whether it accepts a
    threshold that gives no guarantee (the server cannot make it for it).
    ``screen`` sees the decoded frame before any parameter is rebuilt and may
    raise to refuse it cheaply (the client's policy, its trusted keys).
    """
    obj = _unpack(data, "params", party=0)
    if obj["type"] == "refused":
        rule, detail = obj.get("rule"), obj.get("detail")
        if type(rule) is not str or type(detail) is not str:
            raise MalformedMessage("refusal without rule and detail", party=0, field="refused")
        raise Refused(rule, detail)
    if obj["type"] != "params":
        raise MalformedMessage(f"unexpected bootstrap frame type {obj['type']!r:.40}", party=0, field="type")
    timeouts = obj.get("round_timeout"), obj.get("join_seconds")
    if any(type(x) is not float or not 0 <= x < 1e7 for x in timeouts):
        raise MalformedMessage("round_timeout and join_seconds must be non-negative floats", party=0, field="params")
    if screen is not None:
        screen(obj)
    return SessionInfo(params_from_wire(obj, allow_insecure=allow_insecure), *timeouts)
