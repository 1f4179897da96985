"""The error hierarchy: every failure says who broke which rule.

``SecAggError`` is the root.  ``ParameterError`` is raised before any message
exists (bad public parameters or inputs; ``OutOfBounds`` when an input lies
outside the public bounds of the encoding); ``MalformedMessage`` when bytes do not
decode into a well-formed message; ``ProtocolViolation`` when a well-formed
message breaks a protocol rule; ``AbortError`` when fewer than ``t`` clients
remain; ``SimulationError`` when the simulator itself fails (a worker process
of its client pool died or raised something no protocol rule explains).  A
receiver that raises ``MalformedMessage`` or ``ProtocolViolation`` has not
changed its state; ``AbortError`` from the server ends the session.
"""

from __future__ import annotations


class SecAggError(Exception):
    """Root of every error this package raises on purpose."""


class ParameterError(SecAggError, ValueError):
    """Public parameters or local inputs are invalid; nothing was sent."""


class InsecureParameters(ParameterError):
    """The chosen threshold gives no security guarantee for the chosen mode."""


class WeakParameters(InsecureParameters):
    """The server's parameters are below this client's own policy (``secagg.policy``).

    ``item`` names the policy item (``min-group``, ``corrupt``, ``dropout``,
    ``min-threshold``, ``max-clients``); the client refuses the session before
    it sends anything but its refusal.
    """

    def __init__(self, item: str, detail: str):
        self.item = item
        self.detail = detail
        super().__init__(f"the session's parameters are below this client's policy [{item}]: {detail}")


class EncodingOverflow(ParameterError):
    """The sum of the encoded inputs could wrap around the modulus."""


class NoisyWeightSum(SecAggError):
    """Differential privacy: the noisy weight sum a call revealed is not positive, so no average exists."""


class OutOfBounds(ParameterError):
    """A client's input lies outside the public bounds of the encoding; it refuses to encode.

    ``client`` is the refusing client (``None`` if unnamed), ``quantity`` is
    ``"value"`` (a coordinate of w_i) or ``"weight"`` (beta_i), ``bound`` the
    public bound and ``value`` the offending number (``index``: its coordinate).
    """

    def __init__(self, client: int | None, quantity: str, bound: float, value: float, index: int | None = None):
        self.client = client
        self.quantity = quantity
        self.bound = bound
        self.value = value
        self.index = index
        who = "an input" if client is None else f"client {client}"
        what = quantity if index is None else f"{quantity} [{index}]"
        rule = f"|x| <= {bound!r}" if quantity == "value" else f"beta <= {bound!r}"
        super().__init__(
            f"{who}: {what} = {value!r} is outside the public {quantity} bound ({rule}); "
            f"it refuses to encode (normalise the input, raise the bound, or ask for clip=True)"
        )


class MalformedMessage(SecAggError):
    """Bytes that do not decode into a valid message.

    ``party`` is the claimed or known sender (``None`` when even that could
    not be read) and ``field`` the part of the message that is wrong.
    """

    def __init__(self, reason: str, *, party: int | None = None, field: str | None = None):
        self.party = party
        self.field = field
        who = "unknown sender" if party is None else f"party {party}"
        where = f" [{field}]" if field else ""
        super().__init__(f"malformed message from {who}{where}: {reason}")


class ProtocolViolation(SecAggError):
    """A well-formed message that breaks a protocol rule.

    ``party`` is the offender (0 is the server) and ``rule`` a short name of the
    rule, stable enough to log and to test against.
    """

    def __init__(self, party: int, rule: str, detail: str = ""):
        self.party = party
        self.rule = rule
        who = "server" if party == 0 else f"client {party}"
        super().__init__(f"{who} violated rule '{rule}'" + (f": {detail}" if detail else ""))


class AbortError(SecAggError):
    """Fewer than ``t`` clients remain: the session stops and reveals nothing."""

    def __init__(self, round: str, count: int, threshold: int, detail: str = ""):
        self.round = round
        self.count = count
        self.threshold = threshold
        msg = f"aborted in round {round}: {count} clients remain, threshold is {threshold}"
        super().__init__(msg + (f" ({detail})" if detail else ""))


class SimulationError(SecAggError):
    """The in-memory simulator failed, not a party: a worker process of its client pool
    (pool.py) died or raised an unexpected error.  The session's outcome is unknown."""


class SurvivorsChanged(AbortError):
    """A later call of an aggregation lost (or gained) a client of the pinned survivor set: it stops
    before anything is unmasked, since two sums over different sets reveal their difference."""
