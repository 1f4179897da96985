"""sims.mixture_aggregation --quick: outputs, and the paper's claims at quick scale (fixed seeds)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from sims import mixture_aggregation


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("mixture_aggregation")
    assert mixture_aggregation.main(["--quick", "--out", str(folder)]) == 0
    return folder


def rows(out: Path) -> list[dict[str, str]]:
    with (out / "mixture_aggregation.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_quick_run_writes_csv_plots_summary_and_json(out):
    assert {r["part"] for r in rows(out)} == {"fig2", "table2"}
    for png in ("fig2_w1.png", "table2_ari.png"):
        assert (out / png).stat().st_size > 1000
    summary = (out / "summary.md").read_text()
    assert "m = 20 machines" in summary and "plaintext" in summary
    assert set(json.loads((out / "headline.json").read_text())["headline"]) == {"fig2", "table2"}


def test_ared_is_within_a_small_factor_of_the_oracle_and_gmr_breaks_under_mean_failure(out):
    fig2 = [r for r in rows(out) if r["part"] == "fig2"]
    w = {(r["failure"], r["rate"], r["method"]): float(r["w1"]) for r in fig2}
    for (failure, rate, method), value in w.items():
        if method == "ARED":
            assert value <= 1.5 * w[failure, rate, "Oracle"]
    assert all(w["mean", rate, "GMR"] > 20 * w["mean", rate, "Oracle"] for _, rate, _ in w)


def test_ared_detects_mean_and_covariance_failures_exactly(out):
    for r in rows(out):
        if r["part"] == "fig2" and r["method"] == "ARED" and r["failure"] in ("mean", "covariance"):
            assert r["ared_exact"] == "True"
            assert float(r["ared_detected"]) == float(r["rate"])


def test_patched_distances_equal_a_fresh_pairwise_ise_and_fits_come_back_from_the_cache(tmp_path):
    import numpy as np

    from rfa.mixtures import corrupt, pairwise_ise, random_mixture
    from rfa.mixtures.distance import component_gram

    rng = np.random.default_rng(0)
    local = [random_mixture(3, 2, 0.1, rng) for _ in range(8)]
    for kind in ("mean", "covariance", "weight"):
        sent, failed = corrupt(local, 0.25, kind, np.random.default_rng(1))
        patched = mixture_aggregation.patched_distances(component_gram(local), sent, failed)
        assert np.allclose(patched, pairwise_ise(sent), rtol=1e-10, atol=1e-12)
    calls = []
    fits = mixture_aggregation.cached_fits(tmp_path, "k", lambda: calls.append(1) or local)
    again = mixture_aggregation.cached_fits(tmp_path, "k", lambda: calls.append(1) or local)
    assert calls == [1] and all(np.array_equal(a.covariances, b.covariances) for a, b in zip(fits, again))


def test_table2_reports_both_settings_with_false_alarms(out):
    summary = (out / "summary.md").read_text()
    assert "Setting `paper`" in summary and "Setting `independent`" in summary and "false alarms" in summary
    assert {r["setting"] for r in rows(out) if r["part"] == "table2"} == {"paper", "independent"}
