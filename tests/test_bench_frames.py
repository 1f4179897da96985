"""sims.bench_frames: a quick run judges every frame without crashing (timings are printed, not asserted)."""

from __future__ import annotations

import io

import numpy as np
import pytest

from secagg.bootstrap import encode_params
from secagg.keys import is_valid_identity_key
from secagg.params import PublicParams
from secagg.transcript import TranscriptWriter
from sims import bench_frames

QUICK_CASES = [
    "complete, most ids",
    "sparse k = n - 2, n = 1,000",
    "sparse k = n - 2, n = 8,000",
    "sparse k = n - 2, most ids",
    "sparse k = n - 2, most ids, .45/.45",
    "honest sparse n = 1,000",
    "honest sparse n = 10,000",
    "malicious complete, most keys",
    "malicious sparse k = n - 2, most keys",
    "cut in half",
    "not msgpack (0xc1 bytes)",
    "arrays nested to the limit",
    "odd degree",
    "degree 2^62",
    "NaN dropout",
    "threshold above k",
    "unsorted ids",
    "junk keys in params",
]


def table_rows(text: str) -> list[list[str]]:
    """The body rows of the rich table on stdout, as stripped cells."""
    lines = [line for line in text.splitlines() if line.startswith("│")]
    return [[cell.strip() for cell in line.strip("│").split("│")] for line in lines]


def test_quick_run_has_a_row_per_case_and_reader_and_no_frame_crashes_a_reader(capsys):
    assert bench_frames.main(["--quick"]) == 0
    rows = table_rows(capsys.readouterr().out)
    readers = ["client", "bootstrap", "transcript"]
    try:
        import rfa_flower.protocol  # noqa: F401
    except ImportError:
        pass
    else:
        readers.insert(2, "setup")
    assert [(r[0], r[2]) for r in rows] == [(case, reader) for case in QUICK_CASES for reader in readers]
    for case, _, reader, size, outcome, *_ in rows:
        # a Flower setup also names a node for every id: up to three times the frame
        assert int(size.replace(",", "")) <= (3 if reader == "setup" else 1) * bench_frames.QUICK_MAX_BYTES
        assert outcome == "accepted" or outcome.startswith("refused "), (case, reader, outcome)
        if case.startswith(("cut", "not msgpack", "arrays", "odd", "degree", "NaN", "threshold", "unsorted")):
            assert outcome.startswith("refused "), (case, reader, outcome)


def test_frames_are_written_as_the_server_and_the_transcript_writer_write_them():
    params = PublicParams.create(range(1, 101), modulus=2**16, dim=3, graph="sparse", dropout=0.1, corrupt=0.05,
                                 session_id=bench_frames.SID)
    wire = bench_frames.params_to_wire(params)
    assert bench_frames.frame(wire) == encode_params(params, **bench_frames.TIMEOUTS)
    file = io.BytesIO()
    TranscriptWriter(params, file, keep=False)
    assert bench_frames.transcript_header(wire) == file.getvalue()
    protocol = pytest.importorskip("rfa_flower.protocol")
    assert bench_frames.setup_message(wire) == protocol.Setup(params, 1, "mean", np.zeros(2), {u: u for u in params.client_ids}).encode()


def test_identity_keys_are_distinct_keys_of_prime_order():
    keys = bench_frames.identity_keys(50)
    assert len(set(keys)) == 50 and all(is_valid_identity_key(k) for k in keys)
