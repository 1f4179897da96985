"""Where the in-memory simulator runs its clients: in this process, or sharded over worker processes.

``LocalClients`` steps every client state machine here, one after the other.
``ClientPool`` forks worker processes that each build and own a shard of the
clients (ids ``i, i + W, i + 2W, ...`` of the sorted ids, so dropouts and
neighbourhoods spread evenly) and step them in parallel, while the parent
runs the server.  Both take one round's work as (client, server message
bytes) pairs and yield each client's encoded replies in the order of that
work, so the server receives exactly the serial run's messages in the serial
order: same transcript, same sum, same survivors.

Protocol messages cross the process boundary only as their msgpack wire
bytes (``send_bytes``/``recv_bytes`` on a pipe), never pickled: the pipe is
the network the state machines would otherwise see.  A client's
``SecAggError`` travels the same way (class name, arguments, attributes) and
is raised again in the parent, as the serial run would raise it; a worker
that dies or fails otherwise raises ``SimulationError`` in the parent, which
then ends every worker.  Workers need the ``fork`` start method (they inherit
the session's parameters and inputs instead of receiving them); where it is
missing, or in a daemonic process, ``resolve_workers`` falls back to the
serial run.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from multiprocessing.connection import Connection, wait
from typing import Callable, Iterator, Sequence

import msgpack

from . import errors
from .client import Client
from .errors import ParameterError, SecAggError, SimulationError

# From this many clients up the pool pays for its forks and pipes (README, Benchmarks: 1.2-1.5x at
# n = 1,000 on the 2 shared cores); smaller sessions, the test suite's among them, stay in one process.
POOL_MIN_CLIENTS = 1000
# A worker sends its replies in chunks of about this many bytes, so the parent can hand
# them to the server while the worker goes on (and no one reply list holds a whole round).
_CHUNK_BYTES = 1 << 20

Work = Sequence[tuple[int, "bytes | None"]]  # (client, server message; None: start())
Replies = Iterator[tuple[int, list[bytes]]]


def available_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def can_fork() -> bool:
    """Whether this process can start workers: fork exists, and it is no daemonic process (which
    multiprocessing forbids to have children)."""
    return "fork" in multiprocessing.get_all_start_methods() and not multiprocessing.current_process().daemon


def resolve_workers(workers: int | None, n: int) -> int:
    """Worker processes for a session of ``n`` clients: 1 means the serial run in this process.

    ``None`` picks one per available core from POOL_MIN_CLIENTS clients up; never more
    workers than clients, and 1 where ``fork`` is unavailable or this process is a daemon.
    """
    if workers is None:
        workers = available_cores() if n >= POOL_MIN_CLIENTS else 1
    elif isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ParameterError(f"workers must be a positive integer or None (automatic), got {workers!r}")
    return max(1, min(workers, n)) if can_fork() else 1


class LocalClients:
    """The serial run: every client in this process."""

    workers = 1

    def __init__(self, clients: dict[int, Client]):
        self.clients = clients  # the state machines, by id
        self.seconds = 0.0  # client time of the latest ``step``

    def step(self, work: Work) -> Replies:
        self.seconds = 0.0
        for u, data in work:
            start = time.perf_counter()
            client = self.clients[u]
            replies = [m.encode() for m in (client.start() if data is None else client.receive(data))]
            self.seconds += time.perf_counter() - start
            yield u, replies

    def __enter__(self) -> LocalClients:
        return self

    def __exit__(self, *_) -> None:
        pass


class ClientPool:
    """``workers`` forked processes, worker i owning the clients ``ids[i::workers]``.

    ``build(u)`` makes client u; it runs inside the worker (with the parent's memory
    as it was at the fork), so clients are built in parallel and never copied.  Use it
    as a context manager, or call ``close()``: an unclosed pool leaves its workers
    waiting for work (they are daemons, and end with this process).
    """

    def __init__(self, build: Callable[[int], Client], ids: Sequence[int], workers: int):
        if not can_fork():
            raise SimulationError("the client pool needs the fork start method and a non-daemonic process (use workers=1)")
        ctx = multiprocessing.get_context("fork")
        self.workers = workers
        self.seconds = 0.0  # client time of the latest ``step``, summed over workers
        self._owner = {u: i % workers for i, u in enumerate(ids)}
        self._conns: list[Connection] = []
        self._procs: list[multiprocessing.process.BaseProcess] = []
        try:
            for i in range(workers):
                here, there = ctx.Pipe()
                proc = ctx.Process(
                    target=_worker, args=(there, build, list(ids[i::workers])), name=f"secagg-worker-{i}", daemon=True
                )
                proc.start()
                there.close()
                self._conns.append(here)
                self._procs.append(proc)
            for i in range(workers):  # every client built (and none refused its parameters)
                self._expect_done(i, self._receive(i, "building its clients"))
        except BaseException:
            self.close(force=True)
            raise

    def __enter__(self) -> ClientPool:
        return self

    def __exit__(self, kind, *_) -> None:
        self.close(force=kind is not None)

    def step(self, work: Work) -> Replies:
        """Hand each worker its part of ``work``; yield the replies in ``work``'s order."""
        self.seconds = 0.0
        parts: list[list[list]] = [[] for _ in range(self.workers)]
        for u, data in work:
            parts[self._owner[u]].append([u, data])
        busy = {i for i, part in enumerate(parts) if part}  # a worker without work gets no note
        for i in sorted(busy):
            self._conns[i].send_bytes(msgpack.packb(["step", parts[i]], use_bin_type=True))
        ready: dict[int, list[bytes]] = {}
        failed: dict[int, SecAggError] = {}  # client -> what it raised (its worker stopped there)
        for u, _ in work:
            while u not in ready and u not in failed:
                i = self._owner[u]
                if i not in busy:
                    raise SimulationError(f"worker {i} finished its part without answering for client {u}")
                # Read every worker that has something, not only u's: one that runs ahead never waits on a full pipe.
                for j in self._readable(busy):
                    self._collect(j, ready, failed, busy)
            if u in failed:
                raise failed[u]
            yield u, ready.pop(u)
        while busy:  # only the "done" notes with the seconds are left
            self._collect(next(iter(busy)), ready, failed, busy)

    def close(self, force: bool = False) -> None:
        """Stop the workers: politely after a finished session, at once after an error."""
        for i, conn in enumerate(self._conns):
            if not force and self._procs[i].is_alive():
                try:
                    conn.send_bytes(msgpack.packb(["stop", []]))
                except OSError:
                    pass
        for proc in self._procs:
            if force:
                proc.kill()
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for conn in self._conns:
            conn.close()
        self._conns, self._procs = [], []

    # ---- the parent's side of the pipes ----------------------------------------------

    def _receive(self, i: int, doing: str) -> list:
        """The next note from worker i; SimulationError if it dies first."""
        conn, proc = self._conns[i], self._procs[i]
        wait([conn, proc.sentinel])  # a note, or the worker's end
        try:
            if conn.poll():
                return msgpack.unpackb(conn.recv_bytes(), raw=False, strict_map_key=False)
        except (EOFError, OSError):  # it closed the pipe as it died
            pass
        proc.join(timeout=5)
        raise SimulationError(f"worker {i} (pid {proc.pid}) died while {doing} (exit code {proc.exitcode})")

    def _readable(self, busy: set[int]) -> list[int]:
        """The busy workers with a note waiting, or that have ended (blocks until there is one)."""
        handles = {self._conns[i]: i for i in busy} | {self._procs[i].sentinel: i for i in busy}
        return sorted({handles[h] for h in wait(list(handles))})

    def _expect_done(self, i: int, note: list) -> None:
        kind = note[0]
        if kind == "error":
            raise _rebuild_error(note[2])
        if kind == "crash":
            raise SimulationError(f"worker {i} failed: {note[1]}")
        if kind != "done":
            raise SimulationError(f"worker {i} sent {kind!r}, expected 'done'")

    def _collect(self, i: int, ready: dict, failed: dict, busy: set) -> None:
        """Read one note of worker i's current step into ``ready`` / ``failed``."""
        note = self._receive(i, "stepping its clients")
        kind = note[0]
        if kind == "replies":
            for u, replies in note[1]:
                ready[u] = replies
        elif kind == "error":
            failed[note[1]] = _rebuild_error(note[2])
        else:
            self._expect_done(i, note)
            self.seconds += note[1]
            busy.discard(i)


# ---- the worker's side --------------------------------------------------------------


def _worker(conn: Connection, build: Callable[[int], Client], ids: list[int]) -> None:
    """A worker's life: build its clients, then step them on request until told to stop."""
    try:
        clients = {}
        for u in ids:
            try:
                clients[u] = build(u)
            except SecAggError as exc:  # a refused input: the parent raises it as the serial run would
                conn.send_bytes(msgpack.packb(["error", u, _describe_error(exc)], use_bin_type=True, default=str))
                return
            except Exception as exc:
                conn.send_bytes(msgpack.packb(["crash", f"building client {u}: {type(exc).__name__}: {exc}"]))
                return
        conn.send_bytes(msgpack.packb(["done", 0.0]))
        while True:
            op, work = msgpack.unpackb(conn.recv_bytes(), raw=False)
            if op == "stop":
                return
            _step(conn, clients, work)
    except (KeyboardInterrupt, BrokenPipeError, EOFError):  # the parent is stopping or gone
        return


def _step(conn: Connection, clients: dict[int, Client], work: list) -> None:
    seconds, chunk, size = 0.0, [], 0
    for u, data in work:
        start = time.perf_counter()
        try:
            client = clients[u]
            replies = [m.encode() for m in (client.start() if data is None else client.receive(data))]
        except SecAggError as exc:  # what the serial run would raise: the parent raises it at u's turn
            _flush(conn, chunk)
            conn.send_bytes(msgpack.packb(["error", u, _describe_error(exc)], use_bin_type=True, default=str))
            break
        except Exception as exc:
            _flush(conn, chunk)
            conn.send_bytes(msgpack.packb(["crash", f"client {u}: {type(exc).__name__}: {exc}"]))
            return
        seconds += time.perf_counter() - start
        chunk.append([u, replies])
        size += sum(map(len, replies))
        if size >= _CHUNK_BYTES:
            _flush(conn, chunk)
            chunk, size = [], 0
    _flush(conn, chunk)
    conn.send_bytes(msgpack.packb(["done", seconds]))


def _flush(conn: Connection, chunk: list) -> None:
    if chunk:
        conn.send_bytes(msgpack.packb(["replies", chunk], use_bin_type=True))


# ---- a client's typed error, across the pipe -----------------------------------------


def _describe_error(exc: SecAggError) -> dict:
    """A SecAggError as plain data: its class name, arguments and attributes."""
    return {"type": type(exc).__name__, "args": list(exc.args), "attrs": dict(vars(exc))}


def _rebuild_error(desc: dict) -> SecAggError:
    """The SecAggError ``_describe_error`` described, or a SimulationError if the class is unknown."""
    cls = getattr(errors, str(desc.get("type")), None)
    if not (isinstance(cls, type) and issubclass(cls, SecAggError)):
        return SimulationError(f"a client raised an unknown error {desc.get('type')!r}: {desc.get('args')}")
    exc = cls.__new__(cls)
    Exception.__init__(exc, *desc["args"])
    exc.__dict__.update(desc["attrs"])
    return exc

