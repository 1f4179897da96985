"""The teaching demo's command line: `rfa demo` and its JSON contract."""

from __future__ import annotations

import json

from rfa.cli import main


def test_demo_json_lists_the_three_methods_with_the_documented_keys(tmp_path, capsys):
    assert main(["demo", "--json", "--rounds", "12", "--out", str(tmp_path)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["method"] for r in rows] == ["fedavg", "rfa", "one_step_rfa"]
    for row in rows:
        assert set(row) == {"method", "accuracy", "oracle_calls", "bytes_per_client", "max_effective_weight"}
        assert 0 <= row["accuracy"] <= 1 and row["bytes_per_client"] > 0
        assert 0 < row["max_effective_weight"] <= 1
    by = {r["method"]: r for r in rows}
    # One secure call per round for FedAvg and one-step, R + 1 = 4 for RFA.
    assert by["fedavg"]["oracle_calls"] == by["one_step_rfa"]["oracle_calls"] == 12
    assert by["rfa"]["oracle_calls"] == 48
    # The omniscient quarter breaks FedAvg, not RFA.
    assert by["fedavg"]["accuracy"] < 0.3 < 0.7 < by["rfa"]["accuracy"]
    for name in ("demo.csv", "accuracy_vs_rounds.png", "accuracy_vs_oracle_calls.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_demo_refuses_a_privacy_bound_below_what_any_aggregation_can_certify(tmp_path, capsys):
    assert main(["demo", "--rounds", "2", "--max-weight", "0.05", "--out", str(tmp_path)]) == 2
    assert "max_weight" in capsys.readouterr().out
