"""The Table 1 simulation at quick scale: its outputs, and the paper's worst-case claim on them."""

from __future__ import annotations

import contextlib
import csv
import io
import json

import pytest

from sims import table1_two_phase as table1
from sims.common import with_json


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("table1")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert with_json(table1.NAME, table1.main)(["--quick", "--json", "--out", str(out)]) == 0
    report = json.loads(stdout.getvalue())  # --json: stdout is the JSON alone
    rows = report["csv"]["table1_two_phase.csv"]
    panels = {(r["split"], r["rate"]) for r in rows}
    return out, {f"{s} {r:g}": table1.table(rows, s, r) for s, r in panels}


def test_quick_run_writes_one_row_per_attack_and_rule_a_heatmap_and_a_summary(run):
    out, _ = run
    with (out / "table1_two_phase.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(table1.ATTACKS) * len(table1.RULES)
    assert {(r["attack"], r["rule"]) for r in rows} == {(a, r) for a in table1.ATTACKS for r in table1.RULES}
    assert all(r["corrupted"] == "14" and r["f"] == "14" for r in rows)  # rate 0.4 of 35 clients
    two_phase = [r for r in rows if r["rule"] in table1.TWO_PHASE]
    assert all(0.0 <= float(r["outer_win_share"]) <= 1.0 for r in two_phase)
    assert (out / "table1_heatmap.png").read_bytes().startswith(b"\x89PNG")
    summary = (out / "summary.md").read_text()
    assert "| Cent2P |" in summary and "paper's Table 1" in summary and "Worst-case gap" in summary


def test_quick_run_cent2p_worst_case_is_above_every_one_phase_rules_worst_case(run):
    _, tables = run
    t = tables["uniform 0.4"]
    one_phase = [rule for rule in table1.RULES if rule not in table1.TWO_PHASE]
    assert t["Cent2P"]["Worst"] > max(t[rule]["Worst"] for rule in one_phase)
    assert t["Cent2P"]["Worst"] == min(t["Cent2P"][a] for a in table1.ATTACKS)
