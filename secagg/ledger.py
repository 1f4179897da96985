"""Which session ids a client has signed in: a client with a long-term identity signs in each once.

Ed25519 is deterministic and identity keys are long-term, so without this
record a server could run several sessions under one session id and combine
what the client signed in each.  The roster digest (roster.py) already makes
every signature after round 1 unique to one run of the protocol; refusing a
session id the client has signed in before also closes the case of two runs
under one id at the same time (protocol_spec.md 9.2, 12.2).

``Client`` claims the session id in ``start()``, before its first signature,
through an injected ``SessionLedger``: ``MemoryLedger`` for one process,
``FileLedger`` for a file kept beside the identity key (what ``secagg client
--identity-dir`` uses).  The state machine itself does no I/O.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Protocol

from .errors import ParameterError


class SessionLedger(Protocol):
    def claim(self, session_id: bytes) -> bool:
        """Record ``session_id``; False if it was recorded before (then nothing changes)."""


class MemoryLedger:
    """Session ids claimed in this process (tests, simulations, one long-lived client)."""

    def __init__(self) -> None:
        self._seen: set[bytes] = set()

    def claim(self, session_id: bytes) -> bool:
        if session_id in self._seen:
            return False
        self._seen.add(session_id)
        return True

    def __contains__(self, session_id: bytes) -> bool:
        return session_id in self._seen


class FileLedger:
    """Session ids claimed by any process that uses this file: one hex id per line, append only.

    Check and append happen under an exclusive ``flock``, and the line is
    flushed to disk before ``claim`` returns, so two clients started at once
    with the same key cannot both claim one id, and a crash never forgets one.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def beside_key(cls, directory: str | Path, client_id: int) -> "FileLedger":
        """``client-<id>.sessions`` in the identity directory, next to ``client-<id>.key``."""
        return cls(Path(directory) / f"client-{client_id}.sessions")

    def claim(self, session_id: bytes) -> bool:
        line = session_id.hex() + "\n"
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as exc:
            raise ParameterError(f"cannot open the session ledger {self.path}: {exc.strerror}") from None
        with os.fdopen(fd, "r+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes
            f.seek(0)
            if any(seen == line for seen in f):
                return False
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        return True

    def __contains__(self, session_id: bytes) -> bool:
        try:
            with open(self.path) as f:
                return any(seen.strip() == session_id.hex() for seen in f)
        except FileNotFoundError:
            return False
