"""The server's transcript: every frame it read, in order, for audit and replay.

File format: a sequence of msgpack objects, nothing else.

* First a header map ``{"format": "secagg-transcript", "version": 2,
  "params": {...}}`` with the public parameters (as in the bootstrap frame).
* Then one array per event ``[seconds, client, channel, payload, verdict]``:
  ``seconds`` since the server started (float), ``client`` the id bound to
  the connection (for a hello, the id it claims; nil if unreadable),
  ``channel`` one of

  - ``"hello"``: a bootstrap frame, ``payload`` its bytes;
  - ``"message"``: a protocol frame, ``payload`` its bytes exactly as read;
  - ``"close"``: the transport closed a round itself (deadline or every live
    client answered), ``payload`` the round name;
  - ``"call"``: the server opened the next call of a multi-call session,
    ``payload`` the call's public broadcast;

  and ``verdict`` ``"ok"`` for an accepted frame, else the rule it broke.

``read_transcript`` loads a file; ``replay_calls`` feeds the accepted frames,
the closes and the call openings to a fresh ``Server`` and so recomputes
exactly what the server computed, call by call (``replay``: the last call); ``decode(record.payload, transcript.params)`` parses any frame.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import msgpack

from .bootstrap import params_from_wire, params_to_wire
from .errors import MalformedMessage
from .params import PublicParams
from .server import Server, ServerResult, ServerState

FORMAT = "secagg-transcript"
VERSION = 2  # 2: the "call" channel of multi-call sessions
CHANNELS = ("hello", "message", "close", "call")


@dataclass(frozen=True)
class Record:
    seconds: float
    client: int | None
    channel: str
    payload: bytes | str
    verdict: str


@dataclass
class Transcript:
    params: PublicParams
    records: list[Record]

    def accepted_messages(self) -> list[tuple[int, bytes]]:
        """(client id, frame) of every protocol frame the server accepted, in order."""
        return [(r.client, r.payload) for r in self.records if r.channel == "message" and r.verdict == "ok"]  # type: ignore[misc]


class TranscriptWriter:
    """Appends each record to the file, if given, as it happens; keeps them in memory if ``keep``.

    Keeping costs a copy of every frame (all masked inputs): a server that
    only needs the file, or no transcript at all, passes ``keep=False``.
    """

    def __init__(self, params: PublicParams, file: BinaryIO | None = None, *, keep: bool = True):
        self.transcript = Transcript(params, [])
        self._file = file
        self._keep = keep
        self._start = time.monotonic()
        if file is not None:
            file.write(msgpack.packb({"format": FORMAT, "version": VERSION, "params": params_to_wire(params)}))
            file.flush()

    def add(self, client: int | None, channel: str, payload: bytes | str, verdict: str = "ok") -> None:
        record = Record(time.monotonic() - self._start, client, channel, payload, verdict)
        if self._keep:
            self.transcript.records.append(record)
        if self._file is not None:
            # Flushed per record so that a crash or a kill still leaves what was seen.
            self._file.write(msgpack.packb([record.seconds, client, channel, payload, verdict]))
            self._file.flush()


def read_transcript(path: str | Path) -> Transcript:
    data = Path(path).read_bytes()
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=max(len(data), 1), max_ext_len=0)
    unpacker.feed(data)
    try:
        objects = list(unpacker)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise MalformedMessage(f"{path} is not a msgpack stream ({exc.__class__.__name__})", field="transcript")
    if not objects or type(objects[0]) is not dict or objects[0].get("format") != FORMAT:
        raise MalformedMessage(f"{path} does not start with a {FORMAT} header", field="transcript")
    if objects[0].get("version") != VERSION:
        raise MalformedMessage(f"unsupported transcript version {objects[0].get('version')!r}", field="transcript")
    if type(objects[0].get("params")) is not dict:
        raise MalformedMessage("the header's params must be a map", field="transcript.params")
    # An auditor must be able to read the transcript of any session, insecure ones included.
    params = params_from_wire(objects[0]["params"], "transcript.params", allow_insecure=True)
    records = []
    for i, obj in enumerate(objects[1:], 1):
        ok = type(obj) is list and len(obj) == 5
        if ok:
            seconds, client, channel, payload, verdict = obj
            ok = (
                type(seconds) is float
                and (client is None or type(client) is int)
                and channel in CHANNELS
                and type(payload) is (str if channel == "close" else bytes)
                and type(verdict) is str
            )
        if not ok:
            raise MalformedMessage(f"record {i} is not [seconds, client, channel, payload, verdict]", field="transcript")
        records.append(Record(seconds, client, channel, payload, verdict))
    return Transcript(params, records)


def replay(transcript: Transcript) -> ServerResult:
    """Recompute the server's result (of the last call) from the transcript; raises ``AbortError`` as the server did."""
    return replay_calls(transcript)[-1]


def replay_calls(transcript: Transcript) -> list[ServerResult]:
    """Recompute every call's result from the transcript; raises ``AbortError`` as the server did."""
    server = Server(transcript.params)
    for r in transcript.records:
        if r.channel == "call" and server.state is ServerState.CALL_DONE:
            server.open_call(r.payload)  # type: ignore[arg-type]
        elif server.state is not ServerState.COLLECTING:
            continue
        elif r.channel == "message" and r.verdict == "ok":
            server.receive(r.payload)  # type: ignore[arg-type]
        elif r.channel == "close" and server.round.value == r.payload:
            server.close_round()
    if server.state is ServerState.COLLECTING or not server.results:
        raise MalformedMessage("the transcript ends before the session does", field="transcript")
    return list(server.results)
