"""The teaching demo's command line: `rfa demo` and its JSON contract."""

from __future__ import annotations

import json

import pytest

from rfa.cli import main


def test_demo_json_lists_the_three_methods_with_the_documented_keys(tmp_path, capsys):
    assert main(["demo", "--json", "--rounds", "12", "--out", str(tmp_path)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["method"] for r in rows] == ["fedavg", "rfa", "one_step_rfa"]
    for row in rows:
        assert set(row) == {"method", "accuracy", "clean_accuracy", "oracle_calls", "bytes_per_client",
                            "max_effective_weight", "max_certified_weight", "nu", "weight_floor", "epsilon",
                            "noise_multiplier"}
        assert row["epsilon"] is None and row["noise_multiplier"] is None  # no --epsilon: no DP
        assert 0 <= row["accuracy"] <= 1 and 0 <= row["clean_accuracy"] <= 1 and row["bytes_per_client"] > 0
        assert 0 < row["max_effective_weight"] <= row["max_certified_weight"] <= 1
        assert 0 < row["weight_floor"] <= row["max_certified_weight"]
    by = {r["method"]: r for r in rows}
    # One secure call per round for FedAvg and one-step, R + 1 = 4 for RFA.
    assert by["fedavg"]["oracle_calls"] == by["one_step_rfa"]["oracle_calls"] == 12
    assert by["rfa"]["oracle_calls"] == 48
    # The omniscient quarter breaks FedAvg, not RFA.
    assert by["fedavg"]["accuracy"] < 0.3 < 0.7 < by["rfa"]["accuracy"]
    # The mean has no smoothing; the medians report the nu their secure steps used.
    assert by["fedavg"]["nu"] is None and by["rfa"]["nu"] > 0 and by["one_step_rfa"]["nu"] > 0
    for name in ("demo.csv", "accuracy_vs_rounds.png", "accuracy_vs_oracle_calls.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_demo_refuses_a_privacy_bound_below_what_any_aggregation_can_certify_before_any_progress_bar(tmp_path, capsys):
    # Issue 25: the first progress bar was drawn (on stdout) before the refusal.
    with pytest.raises(SystemExit) as info:
        main(["demo", "--rounds", "2", "--max-weight", "0.01", "--out", str(tmp_path)])
    out, err = capsys.readouterr()
    assert info.value.code == 2 and out == ""
    assert err.splitlines()[-1].startswith("rfa demo: error: argument --max-weight: must exceed 0.")
    assert "rho=" not in err and "Traceback" not in err


def test_demo_draws_its_progress_bars_on_stderr_and_its_table_on_stdout(tmp_path, capsys):
    assert main(["demo", "--rounds", "1", "--clients", "4", "--per-round", "4", "--out", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "fedavg rho=0.25" in err and "rho=" not in out
    assert "one-step RFA" in out


def test_demo_json_reports_the_nu_chosen_to_certify_max_weight(tmp_path, capsys):
    assert main(["demo", "--json", "--rounds", "2", "--max-weight", "0.9", "--out", str(tmp_path)]) == 0
    by = {r["method"]: r for r in json.loads(capsys.readouterr().out)}
    for key in ("rfa", "one_step_rfa"):
        assert by[key]["nu"] > 1e-6  # nu="auto" had to smooth to certify s = 0.9
        assert by[key]["weight_floor"] < by[key]["max_certified_weight"] <= 0.9


def test_demo_table_fits_80_columns(tmp_path):
    from rich.console import Console

    from rfa.cli import _table, build_parser

    args = build_parser().parse_args(["demo", "--out", str(tmp_path)])
    row = dict(method="one_step_rfa", accuracy=0.999, clean_accuracy=0.999, oracle_calls=1200,
               bytes_per_client=123456.0, max_effective_weight=0.123, max_certified_weight=0.999, nu=123.456,
               weight_floor=0.5)
    console = Console(width=80, record=True)
    console.print(_table([row, dict(row, method="rfa"), dict(row, method="fedavg", nu=None)], args))
    lines = console.export_text().splitlines()
    assert all(len(line) <= 80 for line in lines)
    assert any("123" in line and "99.9%" in line for line in lines)  # every cell on the row's one line


def test_demo_epsilon_reports_the_epsilon_each_method_spent(tmp_path, capsys):
    args = ["demo", "--json", "--quiet", "--epsilon", "30", "--clients", "8", "--per-round", "8", "--rounds", "2",
            "--out", str(tmp_path)]
    assert main(args) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["method"] for r in rows] == ["fedavg", "rfa", "one_step_rfa"]
    by = {r["method"]: r for r in rows}
    for row in rows:
        # Calibrated to the run's calls, so no method spends more than its target.
        assert 0 < row["epsilon"] <= 30 and row["noise_multiplier"] > 0
    # One call per round: every planned call happens (a swamped one still counts), so the target is spent.
    # (A secure median may stop early when its noisy weight sum is not positive, spending less.)
    assert 0.9 * 30 < by["fedavg"]["epsilon"] and 0.9 * 30 < by["one_step_rfa"]["epsilon"]
    # RFA makes 4 calls per round to FedAvg's 1: the same epsilon needs more noise per call.
    assert by["rfa"]["noise_multiplier"] > by["fedavg"]["noise_multiplier"]
