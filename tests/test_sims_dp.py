"""The quick DP trade-off simulation and the DP benchmark: outputs, and what their numbers must satisfy."""

from __future__ import annotations

import csv
import math

from sims import bench_dp, dp_tradeoff


def test_dp_tradeoff_quick_writes_every_run_and_spends_at_most_the_target(tmp_path):
    assert dp_tradeoff.main(["--quick", "--quiet", "--out", str(tmp_path)]) == 0
    with (tmp_path / "dp_tradeoff.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["method"] for r in rows} == set(dp_tradeoff.METHODS)
    assert {r["mode"] for r in rows} == {"distributed", "central", "none"}
    for r in rows:
        assert 0 <= float(r["accuracy"]) <= 1
        if r["mode"] != "none":
            assert 0 < float(r["epsilon"]) <= float(r["epsilon_target"]) * (1 + 1e-9)
    clean = {r["method"]: float(r["accuracy"]) for r in rows if r["mode"] == "none" and float(r["rho"]) == 0}
    assert min(clean.values()) > 0.5  # the pipeline trains at all without noise
    assert (tmp_path / "dp_tradeoff.png").stat().st_size > 1000
    assert "| FedAvg | distributed |" in (tmp_path / "summary.md").read_text()


def test_bench_dp_quick_prints_the_ratio_and_bits(tmp_path):
    assert bench_dp.main(["--quick", "--quiet", "--n", "8", "--d", "200", "--out", str(tmp_path)]) == 0
    with (tmp_path / "bench_dp.csv").open(newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert float(row["ratio"]) > 0 and math.isfinite(float(row["ratio"]))
    assert int(row["modulus_bits"]) < 64 and int(row["padded_dim"]) == 256
    # The measured error of the noisy mean is the noise the call reports, within sampling error.
    assert 0.7 < float(row["rmse"]) / float(row["noise_std"]) < 1.3


def test_bench_dp_prints_each_table_row_on_one_line_and_its_progress_on_stderr(tmp_path, capsys):
    assert bench_dp.main(["--quick", "--n", "8", "--d", "200", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("|")]
    assert len(rows) == 3 and all(line.endswith("|") for line in rows)  # header, rule, the one row: none folded
    assert rows[0].count("|") == rows[2].count("|")
    assert "secure averages" not in out  # the bar is on stderr
