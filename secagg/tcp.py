"""Secure aggregation over real TCP sockets on loopback (trio).

A thin transport over the sans-I/O state machines.  It moves length-prefixed
msgpack frames (``framing.py``), binds each connection to one client id at
bootstrap (``bootstrap.py``), and decides *when* a round closes: as soon as
every client still connected has answered (in ``advertise_keys``: every
client, since a disconnect there may be an impostor's), or at the round's
deadline, whichever comes first.  Every protocol rule stays in
``Client``/``Server``.

The transport's own rules, each logged with the client id and a rule name:

* a frame longer than ``max_message_bytes(params)`` is refused from its length
  prefix, before its payload is read (``frame-too-large``);
* a connection may only send messages whose envelope sender is the id it
  claimed in its hello (``sender-binding``); a second connection claiming a
  connected id is refused (``duplicate-id``), as is a join after
  ``advertise_keys`` closed (``late-join``) or a reconnect of a client the
  server already accepted a message from (``rejoin``).  An id whose
  connection died before any of its messages was accepted may be claimed
  again while ``advertise_keys`` is open: the state machine never heard of
  it, and this lets the real client in after an impostor was dropped;
* a disconnect, a missed deadline (``timeout``), a truncated or malformed
  frame, or any ``MalformedMessage``/``ProtocolViolation`` raised by the state
  machine makes that client a dropout: its connection is closed and the
  server stops waiting for it.  A message the server already accepted stays
  accepted (there is no way to take it back), so such a client drops at the
  next round.

Fewer than ``t`` clients at any round: every connected client gets the
server's abort notice and the run ends with ``TcpServerResult.abort`` set.

A multi-call session (``params.calls`` > 1, protocol_spec.md 16) stays
connected between calls: when a call is unmasked the server asks
``next_call(result)`` for the next call's public broadcast (``None`` ends
the session there) and opens it; ``TcpServerResult.results`` holds every
call's result.  A client takes the ``inputs`` callback that gives its vector
for each call.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Awaitable, BinaryIO, Callable, Mapping

import numpy as np
import trio

from .bootstrap import (
    BOOTSTRAP_MAX_BYTES,
    HELLO_MAX_BYTES,
    Refused,
    decode_bootstrap_reply,
    decode_hello,
    decode_refusal,
    encode_hello,
    encode_params,
    encode_refusal,
    params_to_wire,
    screen_identity,
)
from .client import Client, ClientState, Inputs
from .errors import AbortError, MalformedMessage, ParameterError, ProtocolViolation, SecAggError, WeakParameters
from .framing import FrameError, FrameReader, encode_frame, loopback_host
from .messages import Message, Round, decode, max_message_bytes, rounds_for
from .ledger import SessionLedger
from .params import PublicParams
from .policy import ClientPolicy
from .rng import RandomSource, SystemRandom
from .server import Server, ServerResult, ServerState
from .simulation import SimulationResult, check_dropouts, setup_session
from .transcript import Transcript, TranscriptWriter

log = logging.getLogger("secagg.tcp")

LINGER_SECONDS = 2.0  # after the last frame, how long we wait for the peer to close first
CLIENT_GRACE_SECONDS = 30.0  # clients wait this much beyond the server's announced deadlines

EventHook = Callable[[str, Mapping[str, Any]], None]
BeforeSend = Callable[[Message], Awaitable[bool]]
NextCall = Callable[[ServerResult], "bytes | None"]  # a call's result -> the next call's broadcast, None: stop


@dataclass(frozen=True)
class Violation:
    client: int | None  # the bound id, or the id a refused hello claimed
    rule: str
    detail: str
    round: str


@dataclass
class TcpServerResult:
    params: PublicParams
    result: ServerResult | None  # the last call's (None if the session ended without completing a call it opened)
    abort: AbortError | None
    counts: dict[str, int]  # clients that completed each round
    round_seconds: dict[str, float]
    bytes_sent: dict[int, int]  # by each client to the server, framing included
    bytes_received: dict[int, int]  # by each client from the server, framing included
    dropouts: dict[str, list[int]]  # round -> clients that stopped answering there
    violations: list[Violation]
    transcript: Transcript
    results: list[ServerResult] = field(default_factory=list)  # every completed call, in order

    @property
    def included(self) -> tuple[int, ...]:
        return self.result.included if self.result else ()


class _Connection:
    def __init__(self, stream: trio.SocketStream, number: int):
        self.stream = stream
        self.reader = FrameReader(stream)
        self.number = number
        self.client: int | None = None
        self.bytes_written = 0
        self.outbox, self._outbox_out = trio.open_memory_channel[bytes](math.inf)
        self.scope = trio.CancelScope()
        self.reader_done = trio.Event()
        self.closing = False

    @property
    def label(self) -> str:
        return f"client {self.client}" if self.client is not None else f"connection #{self.number}"

    def send(self, payload: bytes) -> None:
        try:
            self.outbox.send_nowait(encode_frame(payload))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass  # already closing: nothing more goes out


class TcpServer:
    """One session's server on 127.0.0.1 or ::1; ``await run()`` returns the outcome.

    ``round_timeout`` bounds every round after ``advertise_keys``;
    ``join_timeout`` (default: ``round_timeout``) bounds ``advertise_keys``,
    which is also when clients may connect.  ``on_event(kind, info)`` is told
    about joins, answers, rounds and dropouts (progress bars use it).
    ``next_call(result)``: in a multi-call session, the broadcast that opens the
    call after the one just unmasked, or ``None`` to end the session (default:
    every planned call, with an empty broadcast).
    """

    def __init__(
        self,
        params: PublicParams,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        round_timeout: float = 10.0,
        join_timeout: float | None = None,
        hello_timeout: float | None = None,
        transcript_file: BinaryIO | None = None,
        keep_transcript: bool = True,
        on_event: EventHook | None = None,
        next_call: NextCall | None = None,
    ):
        if round_timeout <= 0 or (join_timeout is not None and join_timeout <= 0):
            raise ParameterError("timeouts must be positive")
        self.params = params
        self.host = loopback_host(host)
        self.port = port
        self.round_timeout = float(round_timeout)
        self.join_timeout = float(join_timeout if join_timeout is not None else round_timeout)
        self.hello_timeout = float(hello_timeout if hello_timeout is not None else min(self.round_timeout, 10.0))
        self.limit = max_message_bytes(params)
        self.server = Server(params, auto_close=False)  # the transport closes rounds (unmasking in a thread)
        self._rounds = rounds_for(params.malicious)
        self._writer = TranscriptWriter(params, transcript_file, keep=keep_transcript)
        self._on_event = on_event
        self._next_call = next_call
        self._live: dict[int, _Connection] = {}
        self._bound: dict[int, _Connection] = {}  # every connection ever bound, by id
        self._dead: set[int] = set()
        self._answered: set[int] = set()
        self._conns: set[_Connection] = set()
        self._unbound = 0
        self._max_unbound = params.n + 64
        self._dropouts: dict[str, list[int]] = {}
        self._violations: list[Violation] = []
        self._round_seconds: dict[str, float] = {}
        self._abort: AbortError | None = None
        self._finished = False
        self._closing = False  # the unmasking round is being closed in a worker thread
        self._round_index = 0
        self._round_start = 0.0
        self._deadline = math.inf
        self._progress = trio.Event()
        self._nursery: trio.Nursery | None = None

    # ---- running ------------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> TcpServerResult:
        """Listen, run the session to its end, close every connection; ``started(port)`` once listening."""
        listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        for extra in listeners[1:]:
            await extra.aclose()
        listener = listeners[0]
        self.port = listener.socket.getsockname()[1]
        log.info("listening on %s port %d for %d clients", self.host, self.port, self.params.n)
        self._round_start = trio.current_time()
        self._deadline = self._round_start + self.join_timeout
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._accept, listener)
            task_status.started(self.port)
            self._emit("round_start", round=self.server.round.value, expected=self.params.n)
            await self._drive()
            with trio.move_on_after(LINGER_SECONDS + 1.0):
                while self._conns:
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        return self._summary()

    async def _drive(self) -> None:
        """Play the deadline: close the current round when its time is up."""
        while not self._finished:
            index = self._round_index
            with trio.move_on_at(math.inf if self._closing else self._deadline):
                await self._progress.wait()
            if not self._finished and not self._closing and index == self._round_index:
                self._close_round("deadline")

    async def _accept(self, listener: trio.SocketListener) -> None:
        async with listener:
            number = 0
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:  # e.g. out of file descriptors: keep serving the others
                    log.error("accept failed: %s", exc)
                    await trio.sleep(0.1)
                    continue
                number += 1
                assert self._nursery is not None
                self._nursery.start_soon(self._connection, stream, number)

    async def _connection(self, stream: trio.SocketStream, number: int) -> None:
        conn = _Connection(stream, number)
        self._conns.add(conn)
        self._unbound += 1
        try:
            with conn.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._write_loop, conn)
                    try:
                        await self._read_loop(conn)
                    finally:
                        conn.reader_done.set()
        except Exception:  # a bug here must cost one connection, never the server
            log.exception("%s: internal error; dropping the connection", conn.label)
            self._drop(conn, "internal-error", "see the traceback above")
        finally:
            if conn.client is None:
                self._unbound -= 1
            self._conns.discard(conn)
            await trio.aclose_forcefully(stream)

    async def _write_loop(self, conn: _Connection) -> None:
        try:
            async for data in conn._outbox_out:
                with trio.move_on_after(self.round_timeout) as cs:
                    await conn.stream.send_all(data)
                if cs.cancelled_caught:
                    self._drop(conn, "write-timeout", "does not read what the server sends")
                    return
                conn.bytes_written += len(data)
            # The outbox was closed: say so, then give the peer a moment to close first,
            # so that nothing we sent is lost to a reset.
            await conn.stream.send_eof()
            with trio.move_on_after(LINGER_SECONDS):
                await conn.reader_done.wait()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._drop(conn, "disconnect", f"connection lost while sending ({exc.__class__.__name__})")
        finally:
            conn.scope.cancel()

    async def _read_loop(self, conn: _Connection) -> None:
        try:
            if not await self._hello(conn):
                return
            while True:
                frame = await conn.reader.receive(self.limit)
                if frame is None:
                    self._drop(conn, "disconnect", "closed the connection")
                    return
                self._on_message(conn, frame)
        except FrameError as exc:
            if conn.client is not None:  # a marker: the frame itself was never read whole
                self._writer.add(conn.client, "message", b"", exc.rule)
            self._drop(conn, exc.rule, str(exc), violation=True)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._drop(conn, "disconnect", f"connection lost ({exc.__class__.__name__})")

    # ---- bootstrapping ------------------------------------------------------

    async def _hello(self, conn: _Connection) -> bool:
        if self._unbound > self._max_unbound:
            self._refuse(conn, None, "too-many-connections", f"more than {self._max_unbound} unbound connections")
            return False
        with trio.move_on_after(self.hello_timeout) as cs:
            frame = await conn.reader.receive(HELLO_MAX_BYTES)
        if cs.cancelled_caught:
            self._refuse(conn, None, "hello-timeout", f"no hello within {self.hello_timeout:g} s", reply=False)
            return False
        if frame is None:
            log.info("%s closed before its hello", conn.label)
            return False
        claimed: int | None = None
        rule, detail = "", ""
        try:
            claimed = decode_hello(frame)
        except MalformedMessage as exc:
            rule, detail = "bad-hello", str(exc)
        else:
            if self._finished:
                rule, detail = "session-over", "the session has ended"
            elif claimed not in self.params.client_ids:
                rule, detail = "unknown-id", f"{claimed} is not a client of this session"
            elif claimed in self._live:
                rule, detail = "duplicate-id", f"client {claimed} is already connected"
            elif self.server.round is not Round.ADVERTISE_KEYS:
                rule, detail = "late-join", f"the session is at {self.server.round}"
            elif claimed not in self.server.waiting_for:
                rule, detail = "rejoin", f"client {claimed} already advertised its keys and left"
        self._writer.add(claimed, "hello", frame, rule or "ok")
        if rule:
            self._refuse(conn, claimed, rule, detail)
            return False
        assert claimed is not None
        conn.client = claimed
        self._unbound -= 1
        if claimed in self._dead:  # an earlier connection for this id died before saying anything valid
            self._dead.discard(claimed)
            self._dropouts[Round.ADVERTISE_KEYS.value].remove(claimed)
            if not self._dropouts[Round.ADVERTISE_KEYS.value]:
                del self._dropouts[Round.ADVERTISE_KEYS.value]
        self._live[claimed] = self._bound[claimed] = conn
        seconds_left = max(0.0, self._deadline - trio.current_time())
        conn.send(encode_params(self.params, round_timeout=self.round_timeout, join_seconds=seconds_left))
        log.info("client %d joined", claimed)
        self._emit("joined", client=claimed)
        return True

    def _refuse(self, conn: _Connection, claimed: int | None, rule: str, detail: str, reply: bool = True) -> None:
        who = conn.label if claimed is None else f"{conn.label} claiming client {claimed}"
        log.warning("%s refused [%s]: %s", who, rule, detail)
        self._violations.append(Violation(claimed, rule, detail, self.server.round.value))
        conn.closing = True
        if reply:
            conn.send(encode_refusal(rule, detail))
        conn.outbox.close()  # the writer sends the refusal, then closes

    # ---- protocol messages --------------------------------------------------

    def _on_message(self, conn: _Connection, frame: bytes) -> None:
        u = conn.client
        assert u is not None
        if self._finished or self._closing:
            return  # the session is over, or its last round is closing: nothing a client says matters any more
        round_ = self.server.round
        if round_ is Round.ADVERTISE_KEYS and u not in self._answered and (refusal := decode_refusal(frame)):
            # The client declined the parameters (its own policy, its trusted keys): a dropout, not a violation.
            rule, detail = refusal
            self._writer.add(u, "message", frame, f"client-refused:{rule}")
            log.warning("client %d declined the session [%s]: %s", u, rule, detail[:200])
            self._drop(conn, f"client-refused:{rule}", detail)
            return
        try:
            msg = decode(frame, self.params)
            if msg.sender != u:
                raise ProtocolViolation(u, "sender-binding", f"envelope sender {msg.sender} on client {u}'s connection")
            self.server.receive(frame)  # auto_close=False: never closes the round, never aborts
        except (MalformedMessage, ProtocolViolation) as exc:
            rule = exc.rule if isinstance(exc, ProtocolViolation) else f"malformed:{exc.field or 'encoding'}"
            self._writer.add(u, "message", frame, rule)
            self._drop(conn, rule, str(exc), violation=True)
            return
        self._writer.add(u, "message", frame, "ok")
        self._answered.add(u)
        self._emit("answer", round=round_.value, client=u)
        self._maybe_close_round()  # every live client answered, or only known dropouts are left

    # ---- rounds -------------------------------------------------------------

    def _close_round(self, trigger: str) -> None:
        round_ = self.server.round
        missing = self.server.waiting_for
        if trigger != "complete":  # a replaying Server closes a complete round by itself
            self._writer.add(None, "close", round_.value, trigger)
        if round_ is Round.UNMASKING and self._nursery is not None:
            # Reconstruction can take seconds (a decoding per liar): keep the event loop serving.
            self._closing = True
            self._nursery.start_soon(self._close_in_thread, round_, missing)
            return
        try:
            outgoing = self.server.close_round()
        except AbortError as exc:
            self._abort_session(exc)
            return
        self._after_round(round_, outgoing, missing)

    async def _close_in_thread(self, round_: Round, missing: frozenset[int]) -> None:
        try:
            outgoing = await trio.to_thread.run_sync(self.server.close_round)
        except AbortError as exc:
            self._closing = False
            self._abort_session(exc)
            return
        self._closing = False
        self._after_round(round_, outgoing, missing)

    def _after_round(self, round_: Round, outgoing: list[Message], missing: frozenset[int]) -> None:
        now = trio.current_time()
        seconds = now - self._round_start
        self._round_seconds[round_.value] = seconds
        self._emit("round_end", round=round_.value, count=self.server.counts.get(round_.value, 0), seconds=seconds)
        log.info("round %s closed: %d clients, %.3f s", round_, self.server.counts.get(round_.value, 0), seconds)
        for u in sorted(missing):
            if u in self._live:
                self._drop(self._live[u], "timeout", f"no {round_} message before the deadline", at=round_.value)
            elif u not in self._bound:
                self._dropouts.setdefault(round_.value, []).append(u)  # never connected
        self._answered = set()
        if self.server.result is not None:
            broadcast = self._open_next_call()
            if broadcast is None:
                self._finish()
                return
            outgoing = self.server.open_call(broadcast)
            self._emit("call_open", call=self.server.call)
            log.info("call %d opened (%d bytes of broadcast)", self.server.call, len(broadcast))
        self._round_index += 1
        self._round_start = now
        self._deadline = now + self.round_timeout
        progress, self._progress = self._progress, trio.Event()
        progress.set()
        for msg in outgoing:
            conn = self._live.get(msg.recipient)
            if conn is not None:
                conn.send(msg.encode())
        self._emit("round_start", round=self.server.round.value, expected=len(self.server.waiting_for))
        self._maybe_close_round()

    def _open_next_call(self) -> bytes | None:
        """The next call's broadcast, recorded in the transcript; None when the session is over."""
        if self.server.state is not ServerState.CALL_DONE:
            return None
        assert self.server.result is not None
        broadcast = b"" if self._next_call is None else self._next_call(self.server.result)
        if broadcast is not None:
            self._writer.add(None, "call", bytes(broadcast))
        return broadcast

    def _maybe_close_round(self) -> None:
        """Close early once the round is complete, or every client still awaited is known to be gone.

        An id the state machine has accepted no message from is never gone: its
        connection may have been an impostor's bare hello, and the id stays open
        to the real client until the join deadline.  In advertise_keys that is
        every awaited id, so that round closes early only when all have answered.
        """
        if self._finished or self._closing or self.server.state is not ServerState.COLLECTING:
            return
        if self.server.round_complete:
            self._close_round("complete")
        elif self.server.round is Round.ADVERTISE_KEYS:
            return
        elif self._dead and self.server.waiting_for <= self._dead:
            self._close_round("dropouts")

    def _drop(
        self, conn: _Connection, rule: str, detail: str, *, violation: bool = False, at: str | None = None
    ) -> None:
        """Close the connection; a bound client becomes a dropout (at round ``at`` if given)."""
        if conn.closing:
            return
        conn.closing = True
        conn.scope.cancel()
        u = conn.client
        round_name = self.server.round.value
        if violation:
            log.warning("%s broke rule [%s] at %s: %s", conn.label, rule, round_name, detail)
            self._violations.append(Violation(u, rule, detail, round_name))
        if u is None or self._finished:
            if not violation:
                log.debug("%s closed [%s]: %s", conn.label, rule, detail)
            return
        del self._live[u]
        self._dead.add(u)
        timed_out = at is not None
        at = at or self._dropout_round(u)
        if at is None:
            return
        self._dropouts.setdefault(at, []).append(u)
        if not violation:
            log.info("client %d dropped at %s [%s]: %s", u, at, rule, detail)
        self._emit("dropout", client=u, round=at, rule=rule)
        if not timed_out:  # a timeout is found while closing the round: no early close then
            self._maybe_close_round()

    def _dropout_round(self, u: int) -> str | None:
        """The first round this client will not answer (None: it completed them all)."""
        index = self._rounds.index(self.server.round)
        if u in self._answered:
            index += 1
        return self._rounds[index].value if index < len(self._rounds) else None

    def _abort_session(self, exc: AbortError) -> None:
        self._abort = exc
        log.error("session aborted: %s", exc)
        for notice in self.server.abort_notices(reason=str(exc)):
            conn = self._live.get(notice.recipient)
            if conn is not None:
                conn.send(notice.encode())
        self._round_seconds[self.server.round.value] = trio.current_time() - self._round_start
        self._finish()

    def _finish(self) -> None:
        self._finished = True
        for conn in list(self._conns):
            conn.outbox.close()  # writers flush what is queued, then close
        self._progress.set()
        self._emit("aborted" if self._abort else "done")

    def _emit(self, kind: str, **info: Any) -> None:
        if self._on_event is not None:
            self._on_event(kind, info)

    def _summary(self) -> TcpServerResult:
        return TcpServerResult(
            params=self.params,
            result=self.server.result,
            abort=self._abort,
            counts=dict(self.server.counts),
            round_seconds=dict(self._round_seconds),
            bytes_sent={u: c.reader.bytes_read for u, c in sorted(self._bound.items())},
            bytes_received={u: c.bytes_written for u, c in sorted(self._bound.items())},
            dropouts={r: sorted(ids) for r, ids in self._dropouts.items()},
            violations=list(self._violations),
            transcript=self._writer.transcript,
            results=list(self.server.results),
        )


# ---- client -------------------------------------------------------------------


@dataclass
class ClientOutcome:
    client_id: int
    status: str  # done | aborted | left | dropped | refused (by the server) | declined (by this client's policy) | error
    detail: str = ""
    params: PublicParams | None = None
    sent_rounds: list[str] = field(default_factory=list)
    bytes_sent: int = 0
    bytes_received: int = 0
    calls: int = 0  # the calls this client revealed its shares for


class _Stop(Exception):
    def __init__(self, status: str, detail: str):
        self.status = status
        self.detail = detail


async def run_client(
    host: str,
    port: int,
    client_id: int,
    value: np.ndarray | None = None,
    *,
    client: Client | None = None,
    identity_key=None,
    trusted_keys: Mapping[int, bytes] | None = None,
    rng: RandomSource | None = None,
    before_send: BeforeSend | None = None,
    timeout: float | None = None,
    allow_insecure: bool = False,
    policy: ClientPolicy | None = ClientPolicy(),
    ledger: SessionLedger | None = None,
    inputs: Inputs | None = None,
) -> ClientOutcome:
    """Run one client over TCP until the session ends for it; never raises for protocol events.

    Either ``value`` (the input; random if ``None``) or a prepared ``client``
    state machine, whose parameters must then equal the server's.  In
    malicious-server mode ``trusted_keys`` are the identity public keys from
    the local PKI; the server's copy must match them exactly.  ``policy`` is
    this client's floor on the announced parameters (``policy.py``; ``None``
    accepts whatever ``PublicParams`` accepts, for sessions this process
    built itself); a session below it is declined with a refusal frame
    before anything else is sent (``allow_insecure`` waives it, except for
    ``max_clients``).  ``ledger`` records the session ids this
    client signs in (malicious mode, ``ledger.py``).
    ``before_send(msg)`` may delay a message or return ``False`` to leave
    the session instead of sending it (dropout injection).  ``timeout``
    overrides the wait for each server frame.
    ``inputs(call, call_open)``: this client's vector for each call of a multi-call
    session.  A multi-call session is declined with a ``value`` and no ``inputs``
    (one fixed vector is not a per-call input); with neither, every call's input is random.
    """
    host = loopback_host(host)
    outcome = ClientOutcome(client_id, "error")
    try:
        stream = await trio.open_tcp_stream(host, port)
    except OSError as exc:
        outcome.detail = f"cannot connect to {host}:{port}: {exc}"
        log.error("client %d: %s", client_id, outcome.detail)
        return outcome
    async with stream:
        reader = FrameReader(stream)

        async def send(payload: bytes) -> None:
            data = encode_frame(payload)
            await stream.send_all(data)
            outcome.bytes_sent += len(data)

        async def receive(limit: int, wait: float) -> bytes | None:
            with trio.move_on_after(timeout if timeout is not None else wait) as cs:
                frame = await reader.receive(limit)
            outcome.bytes_received = reader.bytes_read
            if cs.cancelled_caught:
                raise _Stop("error", "timed out waiting for the server")
            return frame

        machine: Client | None = client
        try:
            await send(encode_hello(client_id))
            reply = await receive(policy.frame_limit if policy else BOOTSTRAP_MAX_BYTES, CLIENT_GRACE_SECONDS)
            if reply is None:
                raise _Stop("dropped", "the server closed the connection before sending the parameters")
            try:
                info = decode_bootstrap_reply(
                    reply, allow_insecure=allow_insecure,
                    screen=lambda obj: _screen(obj, policy, trusted_keys, allow_insecure),
                )
                params = outcome.params = info.params
                _check_params(params, client_id, client, allow_insecure, policy)
                if params.calls > 1 and client is None and inputs is None and value is not None:
                    raise ParameterError(f"a session of {params.calls} calls needs an inputs callback for every call")
            except (WeakParameters, MalformedMessage, ProtocolViolation, ParameterError) as exc:
                # Tell the server why, so its operator sees it; then nothing else is sent.
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    await send(encode_refusal(_refusal_rule(exc), str(exc)))
                raise
            if machine is None:
                if value is None and inputs is None:
                    source = rng or SystemRandom()
                    if params.calls > 1:
                        inputs = lambda call, opened: _random_input(params, source)  # noqa: E731
                    else:
                        value = _random_input(params, source)
                machine = Client(
                    params, client_id, value, rng=rng, identity_key=identity_key, ledger=ledger, inputs=inputs
                )
            replies = machine.start()
            wait = info.join_seconds + info.round_timeout + CLIENT_GRACE_SECONDS
            limit = max_message_bytes(params)
            while True:
                for msg in replies:
                    if before_send is not None and not await before_send(msg):
                        raise _Stop("left", f"left the session instead of sending {msg.round}")
                    await send(msg.encode())
                    outcome.sent_rounds.append(msg.round.value)
                    log.info("client %d: sent %s", client_id, msg.round)
                frame = await receive(limit, wait)
                if frame is None:
                    if machine.state is ClientState.DONE:
                        raise _Stop("done", "the server closed the session")
                    raise _Stop("dropped", f"the server closed the connection while this client was {machine.state.value}")
                replies = machine.receive(frame)
                if machine.state is ClientState.DONE:
                    outcome.calls = machine.call + 1
                if machine.state is ClientState.ABORTED:
                    raise _Stop("aborted", machine.abort_reason or "the server aborted")
                wait = 2 * info.round_timeout + CLIENT_GRACE_SECONDS
        except _Stop as stop:
            outcome.status, outcome.detail = stop.status, stop.detail
        except Refused as exc:
            outcome.status, outcome.detail = "refused", str(exc)
        except WeakParameters as exc:
            outcome.status, outcome.detail = "declined", str(exc)
        except AbortError as exc:
            outcome.status, outcome.detail = "aborted", str(exc)
        except (SecAggError, FrameError) as exc:
            outcome.detail = str(exc)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            outcome.status, outcome.detail = "dropped", f"connection lost ({exc.__class__.__name__}: {exc})"
        outcome.bytes_received = reader.bytes_read
    level = logging.INFO if outcome.status in ("done", "left") else logging.WARNING
    log.log(level, "client %d: %s: %s", client_id, outcome.status, outcome.detail)
    return outcome


def _screen(
    obj: Mapping[str, Any], policy: ClientPolicy | None, trusted_keys: Mapping[int, bytes] | None, allow_insecure: bool
) -> None:
    """What a client checks on the raw parameters frame, before rebuilding anything from it:
    the session's size (its policy), then the mode and the identity keys
    (``bootstrap.screen_identity``, shared with the Flower node)."""
    if policy is not None:
        policy.screen_wire(obj, size_only=allow_insecure)
    screen_identity(obj, trusted_keys)


def _refusal_rule(exc: SecAggError) -> str:
    if isinstance(exc, WeakParameters):
        return f"policy:{exc.item}"
    if isinstance(exc, ProtocolViolation):
        return exc.rule
    if isinstance(exc, MalformedMessage):
        return f"malformed:{exc.field or 'params'}"
    return "parameters"


def _check_params(
    params: PublicParams,
    client_id: int,
    client: Client | None,
    allow_insecure: bool,
    policy: ClientPolicy | None,
) -> None:
    """What a client checks on the rebuilt parameters: its id, the threshold, its own policy."""
    if client_id not in params.client_ids:
        raise ProtocolViolation(0, "params-id", f"client {client_id} is not in the server's session")
    params.check_threshold(allow_insecure=allow_insecure)
    if policy is not None and not allow_insecure:  # allow_insecure waives every guarantee, this client's own too
        policy.check(params)
    if client is not None and params_to_wire(client.params) != params_to_wire(params):
        raise ProtocolViolation(0, "params-mismatch", "the server's parameters differ from this client's")


def _random_input(params: PublicParams, rng: RandomSource) -> np.ndarray:
    raw = np.frombuffer(rng.bytes(8 * params.dim), dtype="<u8")
    return raw & np.uint64(params.modulus - 1) if params.modulus_bits < 64 else raw.copy()


# ---- one process, real sockets --------------------------------------------------


@dataclass
class LocalRun:
    server: TcpServerResult
    clients: dict[int, ClientOutcome]


async def run_local_session(
    params: PublicParams,
    machines: Mapping[int, Client],
    *,
    before_send: Mapping[int, BeforeSend] | None = None,
    host: str = "127.0.0.1",
    round_timeout: float = 5.0,
    join_timeout: float | None = None,
    trusted_keys: Mapping[int, bytes] | None = None,
    transcript_file: BinaryIO | None = None,
    on_event: EventHook | None = None,
    next_call: NextCall | None = None,
) -> LocalRun:
    """The server and the given clients in one trio run, over loopback TCP."""
    server = TcpServer(
        params,
        host=host,
        round_timeout=round_timeout,
        join_timeout=join_timeout,
        transcript_file=transcript_file,
        on_event=on_event,
        next_call=next_call,
    )
    hooks = before_send or {}
    outcomes: dict[int, ClientOutcome] = {}
    result: list[TcpServerResult] = []

    async def one(u: int, port: int) -> None:
        outcomes[u] = await run_client(  # this process built the session: no policy of a client's own
            host, port, u, client=machines[u], trusted_keys=trusted_keys, before_send=hooks.get(u), policy=None
        )

    async def serve(task_status=trio.TASK_STATUS_IGNORED) -> None:
        result.append(await server.run(task_status=task_status))

    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve)
        for u in sorted(machines):
            nursery.start_soon(one, u, port)
    return LocalRun(result[0], dict(sorted(outcomes.items())))


def leave_at(round_: Round | str) -> BeforeSend:
    """A ``before_send`` hook: disconnect instead of sending this round's message."""
    name = Round(round_).value

    async def hook(msg: Message) -> bool:
        return msg.round.value != name

    return hook


def delay_at(round_: Round | str, seconds: float) -> BeforeSend:
    """A ``before_send`` hook: send this round's message ``seconds`` late."""
    name = Round(round_).value

    async def hook(msg: Message) -> bool:
        if msg.round.value == name:
            await trio.sleep(seconds)
        return True

    return hook



def simulate_tcp(
    inputs: Mapping[int, np.ndarray],
    *,
    threshold: int | None = None,
    modulus: int,
    dropouts: Mapping[str, Any] | None = None,
    malicious: bool = False,
    seed: int | bytes | None = None,
    round_timeout: float = 30.0,
    host: str = "127.0.0.1",
    **graph: Any,
) -> SimulationResult:
    """``simulate`` over real loopback sockets: same signature, same result type.

    The session is built by ``setup_session``, so a seeded run is the very
    session ``simulate`` runs.  A dropout disconnects instead of sending its
    round's message.  Usable as ``SecureAverageOracle(runner=simulate_tcp)``.
    """
    params, machines = setup_session(
        inputs, threshold=threshold, modulus=modulus, malicious=malicious, seed=seed, **graph
    )  # graph: graph="sparse", tolerated_dropout=..., tolerated_corrupt=... as for simulate
    plan = check_dropouts(dropouts, params.client_ids, malicious)
    hooks: dict[int, BeforeSend] = {}
    for round_ in rounds_for(malicious):  # earliest round wins
        for u in plan.get(round_, ()):
            hooks.setdefault(u, leave_at(round_))
    # This process made every identity key, so it is the PKI the clients trust.
    trusted = dict(params.identity_keys) if malicious else None
    run = trio.run(
        lambda: run_local_session(
            params, machines, before_send=hooks, host=host, round_timeout=round_timeout, trusted_keys=trusted
        )
    )
    server = run.server
    if server.abort is not None:
        raise server.abort
    assert server.result is not None
    return SimulationResult(
        total=server.result.total,
        included=server.result.included,
        transcript=[frame for _, frame in server.transcript.accepted_messages()],
        params=params,
        counts=server.counts,
        bytes_sent=dict(server.bytes_sent),
        bytes_received=dict(server.bytes_received),
        server_seconds=dict(server.round_seconds),
    )
