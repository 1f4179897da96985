"""The session ledger (secagg/ledger.py): a client signs in a session id once, across processes."""

from __future__ import annotations

import multiprocessing
import os

import pytest

from secagg.errors import ParameterError
from secagg.ledger import FileLedger, MemoryLedger

SID = bytes(range(32))


def test_the_file_ledger_is_shared_by_every_ledger_on_the_file_and_survives_a_restart(tmp_path):
    a, b = FileLedger(tmp_path / "l"), FileLedger(tmp_path / "l")
    assert a.claim(SID) and not b.claim(SID) and not FileLedger(tmp_path / "l").claim(SID)
    assert b.claim(bytes(32)) and bytes(32) in a and SID in b
    assert (tmp_path / "l").read_text().splitlines() == [SID.hex(), bytes(32).hex()]
    assert (os.stat(tmp_path / "l").st_mode & 0o777) == 0o600  # beside a private key, private too


def test_the_memory_ledger_claims_each_id_once():
    ledger = MemoryLedger()
    assert ledger.claim(SID) and not ledger.claim(SID) and SID in ledger and bytes(32) not in ledger


def _claim_all(path: str, ids: list[bytes], out) -> None:
    ledger = FileLedger(path)
    out.put([i for i in ids if ledger.claim(i)])


def test_processes_racing_on_one_file_claim_each_id_exactly_once(tmp_path):
    """Two clients started at once with the same key: the lock makes check-and-append atomic."""
    ids = [bytes([k]) * 32 for k in range(60)]
    path = str(tmp_path / "race")
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_claim_all, args=(path, ids if k % 2 else ids[::-1], out)) for k in range(3)]
    for p in procs:
        p.start()
    won = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(60)
    assert sorted(i for w in won for i in w) == sorted(ids)  # every id won by exactly one process
    assert sorted(FileLedger(path).path.read_text().splitlines()) == sorted(i.hex() for i in ids)


def test_an_unwritable_ledger_is_a_typed_error(tmp_path):
    with pytest.raises(ParameterError, match="session ledger"):
        FileLedger(tmp_path / "missing-dir" / "l").claim(SID)
