"""Length-prefixed frames over a byte stream, and the loopback-only rule.

A frame is a 4-byte big-endian unsigned length ``L`` followed by ``L`` bytes
of msgpack.  The reader is handed the largest ``L`` it accepts (derived from
the public parameters by the caller) and refuses a larger prefix before it
reads a single byte of the payload, so a hostile peer cannot make us buffer
more than one legitimate frame.
"""

from __future__ import annotations

import trio

from .errors import MalformedMessage, ParameterError

HEADER_BYTES = 4
MAX_FRAME_BYTES = 2**32 - 1
_CHUNK = 1 << 20  # per receive_some call: bounded memory even for big frames

LOOPBACK_HOSTS = {"127.0.0.1": "127.0.0.1", "localhost": "127.0.0.1", "::1": "::1", "[::1]": "::1"}


class FrameError(MalformedMessage):
    """The byte stream does not carry a valid frame (``rule`` names the defect)."""

    def __init__(self, reason: str, *, rule: str, party: int | None = None):
        super().__init__(reason, party=party, field="frame")
        self.rule = rule


class FrameTooLarge(FrameError):
    def __init__(self, length: int, limit: int, party: int | None = None):
        super().__init__(
            f"length prefix {length} exceeds the limit {limit}", rule="frame-too-large", party=party
        )
        self.length = length
        self.limit = limit


def loopback_host(host: str) -> str:
    """The literal loopback address for ``host``; anything else is refused.

    This transport exists to simulate the protocol on one machine: it never
    binds or connects beyond 127.0.0.1 or ::1 (``localhost`` is read as
    127.0.0.1 without asking a resolver).
    """
    if host in LOOPBACK_HOSTS:
        return LOOPBACK_HOSTS[host]
    raise ParameterError(
        f"refusing host {host!r}: the secagg TCP transport only binds and connects to "
        "127.0.0.1 or ::1 (localhost simulation)"
    )


def parse_address(text: str) -> tuple[str, int]:
    """``127.0.0.1:P`` or ``[::1]:P`` -> (host, port), loopback only."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ParameterError(f"expected HOST:PORT with a port in [1, 65535], got {text!r}")
    return loopback_host(host), int(port)


def encode_frame(payload: bytes) -> bytes:
    if not payload:
        raise ValueError("empty frame")
    if len(payload) > MAX_FRAME_BYTES:
        raise ValueError(f"frame of {len(payload)} bytes cannot be length-prefixed")
    return len(payload).to_bytes(HEADER_BYTES, "big") + payload


class FrameReader:
    """Reads whole frames from a trio stream, never more than the current frame."""

    def __init__(self, stream: trio.abc.ReceiveStream):
        self._stream = stream
        self.bytes_read = 0

    async def _exactly(self, n: int, *, eof_ok: bool) -> bytes | None:
        buf = bytearray()
        while len(buf) < n:
            chunk = await self._stream.receive_some(min(n - len(buf), _CHUNK))
            if not chunk:
                if eof_ok and not buf:
                    return None
                raise FrameError(f"connection closed after {len(buf)} of {n} bytes", rule="truncated-frame")
            buf += chunk
            self.bytes_read += len(chunk)
        return bytes(buf)

    async def receive(self, limit: int) -> bytes | None:
        """The next frame's payload, or ``None`` on a clean end of stream between frames."""
        header = await self._exactly(HEADER_BYTES, eof_ok=True)
        if header is None:
            return None
        length = int.from_bytes(header, "big")
        if length == 0:
            raise FrameError("empty frame", rule="empty-frame")
        if length > limit:
            raise FrameTooLarge(length, limit)
        payload = await self._exactly(length, eof_ok=False)
        assert payload is not None
        return payload
