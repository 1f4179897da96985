"""The quick version of sims.gmm_personal_mean: its outputs, and the claims they support at this scale."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import pytest

from sims import gmm_personal_mean
from sims.common import with_json


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp(gmm_personal_mean.NAME)
    with contextlib.redirect_stdout(io.StringIO()) as stdout:
        assert with_json(gmm_personal_mean.NAME, gmm_personal_mean.main)(["--quick", "--out", str(folder), "--json"]) == 0
    (folder / "report.json").write_text(stdout.getvalue())  # --json: stdout is the JSON report alone
    return folder


@pytest.fixture(scope="module")
def rows(out: Path) -> list[dict[str, float | str]]:
    with (out / f"{gmm_personal_mean.NAME}.csv").open(newline="") as f:
        raw = list(csv.DictReader(f))
    return [{k: (v if k == "adversary" else float(v)) for k, v in r.items()} for r in raw]


def test_quick_run_writes_csv_json_plots_and_summary(out, rows):
    assert {"delta", "c_over_k", "adversary", "seed", "mse_robust", "mse_oracle", "mse_plain", "mse_none",
            "lower_bound", "lower_bound_exact", "upper_bound", "eps_margin", "allowance", "se_robust"} <= set(rows[0])
    report = json.loads((out / "report.json").read_text())
    assert len(report["csv"][f"{gmm_personal_mean.NAME}.csv"]) == len(rows)
    for png in ("fig1a_bounds.png", "fig1a_measured.png", "fig1b.png"):
        assert (out / png).stat().st_size > 1000
    summary = (out / "summary.md").read_text()
    assert summary.startswith("# ") and "**NO**" not in summary and summary.count("**yes**") == 2


def test_worst_adversary_lands_between_the_lower_and_upper_bounds(rows):
    worst: dict[tuple[float, float], dict] = {}
    for r in rows:
        key = (r["delta"], r["c_over_k"])
        if r["c_over_k"] > 0 and (key not in worst or r["mse_robust"] > worst[key]["mse_robust"]):
            worst[key] = r
    assert len(worst) >= 4
    for key, r in worst.items():
        assert r["lower_bound"] <= r["mse_robust"] <= r["upper_bound"] + r["allowance"] + 3 * r["se_robust"], key


def test_every_run_is_below_the_upper_bound_below_1_and_has_eps_tilde_above_the_corrupted_mass(rows):
    for r in rows:
        assert r["mse_robust"] <= r["upper_bound"] + r["allowance"] + 3 * r["se_robust"]
        assert r["mse_robust"] < 1.0
        assert r["eps_margin"] >= 0.0
