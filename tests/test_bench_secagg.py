"""sims.bench_secagg: a smoke run of the sparse-graph benchmark (figures are printed, not asserted)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from rich.console import Console
from rich.table import Table
from rich.text import Text

from secagg import pool
from secagg.simulation import setup_session
from sims import bench_secagg
from sims.bench_secagg import (
    Config, breakdown_table, masked_input_breakdown, paper_table, reconstruction_table, run_both, run_config,
    run_memory, run_speedup, unmasking_rows,
)
from sims.bench_secagg.tables import (
    loopback_rounds_table, loopback_table, main_tables, rounds_table, speedup_table,
)


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


# ---- every table readable at 100 columns ------------------------------------------------


def rendered(tables: list[Table]) -> str:
    """The tables as a pipe at 100 columns gets them, checked: no line wider, no cell cut short
    (every word of every cell is printed whole)."""
    console = Console(width=100, record=True, file=io.StringIO())
    for table in tables:
        console.print(table)
    text = console.export_text()
    assert "\u2026" not in text  # rich's ellipsis: a cell cut short
    assert max(map(len, text.splitlines())) <= 100
    printed = set(text.split())
    for table in tables:
        for column in table.columns:
            for cell in column.cells:
                assert set(Text.from_markup(str(cell)).plain.split()) <= printed, cell
    return text


@pytest.fixture(scope="module")
def malicious_row() -> dict:
    return run_config(Config(12, 4, 0.25, 16, malicious=True), "memory", 1, "median", seed=0)


@pytest.fixture(scope="module")
def loopback_pair() -> tuple[dict, dict]:
    return run_both(Config(6, 4, 1 / 6, 16, seeded=True), 1, "median", 0)


# The widest figures a long run prints: n = 10,000, d = 10^5, minutes of seconds, megabytes per client, a wrong sum.
WIDE_KEY = dict(n=10_000, d=10**5, dropout=0.1, dropped=1000, t=6667, included=9000, correct=False)


def test_main_tables_fit_100_columns_without_truncating_a_number(malicious_row):
    row = malicious_row
    wide = dict(row, **WIDE_KEY, k=199, workers=16, wall_s=1234.567, client_s=12345.678, server_s=1234.567,
                masking_s=1234.567, unmasking_s=1234.567, floor_s=123.456, ratio=123.45, session_ratio=1234.56,
                bytes_sent_per_client=123.4e6, bytes_received_per_client=123.4e6, expansion=12.34,
                hbc_wall_s=1234.567, cpu_s=9999.0, hbc_cpu_s=1.0)
    args = bench_secagg.parse_args(["--graph", "sparse", "--malicious"])
    text = rendered(main_tables([row, wide], args))
    for figure in ("12345.678", "1.2346", "1234.56", "123.4 MB", "0.1 (1000)", "9999.00", f"{row['ratio']:.2f}"):
        assert figure in text


def test_rounds_table_fits_100_columns_with_the_five_malicious_rounds(malicious_row):
    rounds = list(malicious_row["client_rounds_s"])
    assert "consistency_check" in rounds
    wide = dict(malicious_row, **WIDE_KEY, client_rounds_s={r: 12345.678 for r in rounds},
                server_rounds_s={r: 1234.567 for r in rounds}, floor_client_s=9876.543, floor_server_s=987.654)
    text = rendered([rounds_table([malicious_row, wide])])
    assert text.count("12345.678") == len(rounds) and text.count("1234.567") == len(rounds)
    for figure in ("9876.543", "987.654", "consistency_", f"{malicious_row['floor_client_s']:.3f}"):
        assert figure in text


def wide_loopback(mem: dict, tcp: dict) -> tuple[dict, dict]:
    rounds = {r: 1234.567 for r in tcp["round_wall_s"]}
    wide_tcp = dict(tcp, **WIDE_KEY, wall_s=1234.567, server_cpu_s=1234.56, server_session_kb=1_200_000,
                    server_baseline_kb=123_456, bytes_sent_per_client=123.4e6, framing_bytes_per_client=12345.0,
                    expansion=12.345, bytes_received_per_client=987.6e6, round_wall_s=rounds, same_session=False,
                    differences=["messages at the server", "totals", "included sets", "message bytes per client",
                                 "in-memory total = plaintext sum", "TCP total = plaintext sum"], peak_reset=False)
    wide_mem = dict(mem, **WIDE_KEY, wall_s=123.456, round_wall_s={r: 123.456 for r in rounds})
    return wide_mem, wide_tcp


def test_loopback_tables_fit_100_columns_with_a_wrong_session(loopback_pair):
    mem, tcp = loopback_pair
    wide_mem, wide_tcp = wide_loopback(mem, tcp)
    args = bench_secagg.parse_args(["--transport", "both"])
    text = rendered(loopback_table([(mem, tcp), (wide_mem, wide_tcp), (None, wide_tcp)], args))
    for figure in ("1234.567", "123.456", "10.00", "1234.56", "1.2 GB", "126.4 MB", "123.4 MB", "12345 B",
                   "200.0 KB", "12.345", "987.6 MB", "0.1 (1000)", "NO:", "9000", f"{tcp['wall_s']:.3f}"):
        assert figure in text


def test_loopback_rounds_table_fits_100_columns(loopback_pair):
    mem, tcp = loopback_pair
    wide_mem, wide_tcp = wide_loopback(mem, tcp)
    text = rendered([loopback_rounds_table([(mem, tcp), (wide_mem, wide_tcp), (None, wide_tcp)])])
    assert text.count("1234.567") == 8 and text.count("123.456") == 4  # tcp twice, memory once, 4 rounds each
    assert f"{tcp['round_wall_s']['share_keys']:.3f}" in text


def test_paper_table_fits_100_columns_with_the_linear_fit_row(loopback_pair):
    mem, tcp = loopback_pair
    # Two values of n and of d among the TCP rows: the fit row, the widest label, is printed.
    rows = [mem, tcp, dict(tcp, n=7, d=9, bytes_sent_per_client=tcp["bytes_sent_per_client"] + 500)]
    table, notes = paper_table(rows)
    text = rendered([table])
    assert "1.73" in text and "linear fit to this run's tcp rows" in " ".join(text.split())
    assert any(note.startswith("fit to 2 tcp rows") for note in notes)


@pytest.mark.skipif(not pool.can_fork(), reason="the client pool needs the fork start method")
def test_speedup_tables_fit_100_columns():
    row = run_speedup(Config(12, 4, 0.25, 16), 2, 1, "median", 0)
    wide = dict(row, **WIDE_KEY, k=199, workers=16, serial_s=1234.56, pool_s=123.45, speedups=[10.0, 9.87, 10.12],
                serial_cpu_s=12345.6, pool_parent_cpu_s=123.4, pool_workers_cpu_s=12345.6, serial_peak_kb=12_000_000,
                pool_peak_kb=1_000_000, worker_peak_kb=None, load_average=12.3, same_session=False)
    text = rendered(speedup_table([row, wide]))
    for figure in ("1234.56", "123.45", "9.87", "12345.6", "123.4 +", "12.3 GB", "1.0 GB", "0.1 (1000)", "NO",
                   f"{row['serial_s']:.2f}"):
        assert figure in text


def test_breakdown_and_liar_tables_fit_100_columns():
    cfg = Config(12, 10, 0.0, 16)
    parts, total, floor = masked_input_breakdown(cfg, 0)
    wide_cfg = Config(10_000, 10**5, 0.0, 32, graph="sparse")
    breakdown = [breakdown_table(cfg, parts, total, floor),
                 breakdown_table(wide_cfg, {name: 12345.678 for name in parts}, 98765.432, 2.0)]
    rows = unmasking_rows([12], 10, 0)
    liar, ok = reconstruction_table(10**5, rows + [dict(n=10_000, t=6667, honest_s=123.456, liar_s=1234.567,
                                                         named=[1, 2, 9999], exact=False)])
    assert not ok
    text = rendered(breakdown + [liar])
    for figure in ("12345.678", "98765.432", "6172.84", "49382.72", "1234.567", "10.00", "6667", "False",
                   "AES-CTR keystream"):
        assert figure in text


@pytest.mark.parametrize("argv", [
    ["--n", "6", "--d", "10", "--dropout", "0", "0.5"],
    ["--graph", "sparse", "--malicious", "--n", "30", "--d", "10", "--dropout", "0.1"],
    ["--transport", "both", "--n", "6", "--d", "10", "--dropout", "0.2"],
    ["--liar", "--n", "12", "--d", "10"],
    ["--breakdown", "--n", "12", "--d", "10"],
], ids=["memory", "malicious", "both", "liar", "breakdown"])
def test_piped_output_is_at_most_100_columns_wide(capsys, argv):
    assert bench_secagg.main(argv) == 0
    out = capsys.readouterr().out
    assert "\u2026" not in out
    assert out.count("\n") > 5 and max(map(len, out.splitlines())) <= 100
