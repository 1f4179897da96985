"""sims.bench_secagg: a smoke run of the sparse-graph benchmark (figures are printed, not asserted)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from rich.console import Console

from secagg import pool
from secagg.simulation import setup_session
from sims import bench_secagg
from sims.bench_secagg import Config, run_config, run_memory
from sims.bench_secagg.tables import main_tables


def test_sparse_benchmark_runs_and_counts_the_masks_of_the_graph(capsys):
    code = bench_secagg.main(["--graph", "sparse", "--n", "40", "--d", "100", "--dropout", "0.1", "--json"])
    assert code == 0
    captured = capsys.readouterr()
    (row,) = json.loads(captured.out)  # --json: stdout is the rows alone, the tables go to stderr
    assert row["graph"] == "sparse" and row["k"] == 14 and row["t"] == 10 and row["correct"]
    assert "per client s" in captured.err


def test_sparse_floor_counts_one_pairwise_mask_per_neighbour():
    inputs = {u: np.zeros(2, dtype=np.uint64) for u in range(1, 41)}
    params, _ = setup_session(inputs, modulus=2**16, seed=1, graph="sparse", tolerated_dropout=0.1,
                              tolerated_corrupt=0.05)
    u2 = frozenset(range(1, 41))
    u3 = u2 - {1, 2}
    clients, server = bench_secagg.floor_streams(params, u2, u3)
    assert clients == 38 * (1 + 14)
    assert server == 38 + len(params.neighbours(1) & u3) + len(params.neighbours(2) & u3)


def test_liar_benchmark_times_an_exact_unmasking_with_and_without_the_liar():
    for liar in (False, True):
        seconds, named, exact = bench_secagg.unmasking_seconds(12, 10, liar, seed=3)
        assert seconds > 0 and exact and named == []  # t - 1 = 8 assumed colluders: no proof at n = 12


def test_rows_carry_the_whole_session_against_the_floor_beside_the_masked_input_ratio(capsys):
    assert bench_secagg.main(["--n", "10", "--d", "100", "--dropout", "0.1", "--json"]) == 0
    captured = capsys.readouterr()
    (row,) = json.loads(captured.out)
    assert row["session_ratio"] == (row["client_s"] + row["server_s"]) / row["floor_s"]
    assert row["session_ratio"] > row["ratio"]  # share_keys and the key rounds are on top of masking
    assert "session" in captured.err


def test_malicious_rows_are_timed_beside_the_honest_but_curious_session(capsys):
    args = ["--graph", "sparse", "--malicious", "--n", "30", "--d", "10", "--dropout", "0.1", "--json"]
    assert bench_secagg.main(args) == 0
    captured = capsys.readouterr()
    (row,) = json.loads(captured.out)
    assert row["malicious"] and row["hbc_wall_s"] > 0 and row["correct"]
    assert "mal/HbC" in captured.err and "malicious / honest-but-curious session" in captured.err


@pytest.mark.skipif(not pool.can_fork(), reason="the client pool needs the fork start method")
def test_speedup_runs_one_seeded_session_serially_and_in_the_pool(capsys):
    args = ["--graph", "sparse", "--n", "30", "--d", "10", "--dropout", "0.1", "--speedup", "--workers", "2", "--json"]
    assert bench_secagg.main(args) == 0
    captured = capsys.readouterr()
    (row,) = json.loads(captured.out)
    assert row["workers"] == 2 and row["same_session"] and row["correct"]
    assert row["serial_s"] > 0 and row["pool_s"] > 0 and len(row["speedups"]) == 1


def test_progress_bar_goes_to_stderr_and_stdout_keeps_the_tables(capsys):
    assert bench_secagg.main(["--n", "6", "--d", "10", "--dropout", "0"]) == 0
    captured = capsys.readouterr()
    (bar,) = [line for line in captured.err.splitlines() if "configurations done" in line]
    assert "1/1" in bar
    assert "configurations" not in captured.out and "secagg, memory transport" in captured.out


def test_a_refused_argument_starts_no_progress_bar(capsys):
    with pytest.raises(SystemExit):
        bench_secagg.main(["--n", "6", "--dropout", "1.5"])
    captured = capsys.readouterr()
    assert "configurations" not in captured.err and "--dropout" in captured.err


@pytest.mark.parametrize("malicious", [False, True])
def test_client_steps_count_the_progress_calls_of_one_session(malicious):
    cfg = Config(12, 4, 0.25, 16, malicious=malicious)  # 3 of 12 drop at masked_input
    calls = []
    run_memory(cfg, seed=0, progress=calls.append)
    assert len(calls) == cfg.client_steps


def test_main_tables_fit_100_columns_without_truncating_a_number():
    row = run_config(Config(12, 4, 0.25, 16, malicious=True), "memory", 1, "median", seed=0)
    # The widest figures a long run prints: n = 10,000, minutes of client time, megabytes per client, a wrong sum.
    wide = dict(row, n=10_000, d=10**5, dropout=0.1, dropped=1000, k=199, t=6667, included=9000, correct=False, workers=16,
                wall_s=1234.567, client_s=12345.678, server_s=1234.567, masking_s=1234.567, unmasking_s=1234.567,
                floor_s=123.456, ratio=123.45, session_ratio=1234.56, bytes_sent_per_client=123.4e6,
                bytes_received_per_client=123.4e6, expansion=12.34, hbc_wall_s=1234.567, cpu_s=9999.0, hbc_cpu_s=1.0)
    args = bench_secagg.parse_args(["--graph", "sparse", "--malicious"])
    console = Console(width=100, record=True, file=io.StringIO())
    for table in main_tables([row, wide], args):
        console.print(table)
    text = console.export_text()
    assert "\u2026" not in text  # rich's ellipsis: a cell cut short
    assert max(map(len, text.splitlines())) <= 100
    for figure in ("12345.678", "1.2346", "1234.56", "123.4 MB", "0.1 (1000)", "9999.00", f"{row['ratio']:.2f}"):
        assert figure in text
