"""The quick versions of the Fig. 4, 5, 6, trade-off and warm-start simulations: outputs, and the claims they support.

Each script runs once per module (a shared fixture) with ``--quick`` into a
temporary folder; the tests then read its CSV.  The qualitative checks are
ones a broken pipeline could fail at this scale (fixed seeds, so they are
deterministic).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from sims import fig4_oracle_calls, fig5_one_step, fig6_personalisation, tradeoff, warm_start


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def check_outputs(out: Path, name: str, columns: set[str], pngs: tuple[str, ...]) -> list[dict[str, str]]:
    rows = read_rows(out / f"{name}.csv")
    assert rows, f"{name}.csv is empty"
    assert columns <= set(rows[0]), f"missing columns {columns - set(rows[0])}"
    for png in pngs:
        assert (out / png).stat().st_size > 1000, f"{png} is empty"
    assert (out / "summary.md").read_text().startswith("# ")
    return rows


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folders = {}
    for module in (fig4_oracle_calls, fig5_one_step, fig6_personalisation, tradeoff, warm_start):
        out = tmp_path_factory.mktemp(module.NAME)
        assert module.main(["--quick", "--out", str(out)]) == 0
        folders[module.NAME] = out
    return folders


def test_fig4_counts_calls_and_rfa_survives_omniscient(outputs):
    rows = check_outputs(
        outputs["fig4_oracle_calls"], "fig4_oracle_calls",
        {"setting", "method", "seed", "round", "oracle_calls", "calls_per_round", "accuracy"},
        ("fig4_oracle_calls.png",),
    )
    settings = {r["setting"] for r in rows}
    assert settings == set(fig4_oracle_calls.SETTINGS)
    per_round = {}
    for r in rows:
        per_round.setdefault(r["method"], set()).add(int(r["oracle_calls"]) / int(r["round"]))
    assert per_round == {"FedAvg": {1.0}, "RFA": {4.0}, "one-step RFA": {1.0}}

    def final(method: str) -> float:
        mine = [r for r in rows if r["setting"] == "omniscient, rho=0.25" and r["method"] == method]
        last = max(int(r["round"]) for r in mine)
        return float(next(r["accuracy"] for r in mine if int(r["round"]) == last))

    assert final("RFA") > final("FedAvg") + 0.3


def test_fig5_one_step_keeps_most_of_rfa(outputs):
    rows = check_outputs(
        outputs["fig5_one_step"], "fig5_one_step",
        {"corruption", "rho", "method", "seed", "calls_per_round", "accuracy"},
        ("fig5_one_step.png",),
    )
    assert len(rows) == 2 * 2 * 3  # corruptions x rho in {0, 0.25} x methods, one seed

    def acc(method: str) -> float:
        return float(next(r["accuracy"] for r in rows if (r["corruption"], float(r["rho"]), r["method"]) == ("omniscient", 0.25, method)))

    one_step = next(r for r in rows if r["method"] == "one-step RFA")
    assert float(one_step["calls_per_round"]) == 1.0
    assert acc("one-step RFA") >= 0.8 * acc("RFA")
    assert acc("one-step RFA") > acc("FedAvg")


def test_fig6_personalisation_helps_under_label_skew_but_not_iid(outputs):
    out = outputs["fig6_personalisation"]
    rows = check_outputs(
        out, "fig6_personalisation",
        {"split", "rho", "method", "personalised", "seed", "local_accuracy", "global_accuracy"},
        ("fig6_personalisation.png",),
    )
    assert len(rows) == 2 * 2 * 2 * 2  # splits x rho x aggregators x personalised
    assert read_rows(out / "fig6_personalisation_curves.csv")

    def local(split: str, rho: float, method: str, personalised: bool) -> float:
        key = (split, rho, method, str(personalised))
        return float(next(r["local_accuracy"] for r in rows if (r["split"], float(r["rho"]), r["method"], r["personalised"]) == key))

    skew = "label skew (Dirichlet 0.1)"
    for method in ("FedAvg", "RFA"):
        for rho in (0.0, 0.25):
            # Algorithm 4's point: the personal u_i absorb what the shared model cannot fit for every client.
            assert local(skew, rho, method, True) > local(skew, rho, method, False) + 0.03, (method, rho)
        # The contrast: without heterogeneity u_i only fits noise in a client's few rows.
        assert local("iid", 0.0, method, True) < local("iid", 0.0, method, False), method


def test_tradeoff_certificate_and_cost_of_privacy(outputs):
    rows = check_outputs(
        outputs["tradeoff"], "tradeoff",
        {"corruption", "C_label", "C", "method", "s", "nu", "seed", "accuracy",
         "max_realised_weight", "max_certified_weight", "rounds_over_certificate", "calls_per_round"},
        ("tradeoff.png", "tradeoff_nu.png"),
    )
    bounded = [r for r in rows if r["s"] != "nan" and r["method"] in tradeoff.BOUNDED]
    assert bounded
    for r in bounded:
        assert int(r["rounds_over_certificate"]) == 0
        assert float(r["max_realised_weight"]) <= float(r["max_certified_weight"]) <= float(r["s"])
    assert all(int(r["rounds_over_certificate"]) == 0 for r in rows)

    for c_label in {r["C_label"] for r in bounded}:
        for method in tradeoff.BOUNDED:
            mine = sorted(
                (r for r in bounded if (r["C_label"], r["method"], r["corruption"]) == (c_label, method, "omniscient")),
                key=lambda r: float(r["s"]),
            )
            nus = [float(r["nu"]) for r in mine]  # ascending s: nu* must not increase
            assert all(a >= b for a, b in zip(nus, nus[1:])), (c_label, method, nus)
            assert all(math.isfinite(nu) and nu > 0 for nu in nus)
            # Tightest s -> largest nu -> closest to the (attacked) mean; loosest s -> robust.
            assert float(mine[-1]["accuracy"]) > float(mine[0]["accuracy"]), (c_label, method)


def test_warm_start_replay_breaks_the_previous_aggregate_start_but_not_the_mean_start(outputs):
    rows = check_outputs(
        outputs["warm_start"], "warm_start",
        {"setting", "rule", "seed", "calls_per_round", "accuracy", "calls_to_target"}, ("warm_start.png",),
    )
    acc = {(r["setting"], r["rule"]): float(r["accuracy"]) for r in rows}
    calls = {r["rule"]: int(r["calls_per_round"]) for r in rows}
    assert calls == {"FedAvg": 1, "mean + 3": 4, "previous + 3": 3, "previous + 1": 1}
    assert acc["replay", "mean + 3"] > acc["clean", "mean + 3"] - 0.05
    assert acc["replay", "previous + 3"] < acc["replay", "mean + 3"] - 0.2
