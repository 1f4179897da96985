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
    return out, {f"{s} {r:g} {m}": table1.table(rows, s, r, m) for s, r in panels for m in table1.METRICS}, rows


def test_quick_run_writes_one_row_per_attack_and_rule_a_heatmap_and_a_summary(run):
    out, _, _ = run
    with (out / "table1_two_phase.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(table1.ATTACKS) * len(table1.RULES)
    assert {(r["attack"], r["rule"]) for r in rows} == {(a, r) for a in table1.ATTACKS for r in table1.RULES}
    assert all(r["corrupted"] == "14" and r["f"] == "14" for r in rows)  # rate 0.4 of 35 clients
    assert all(r["model"] == "mlp" and 0 <= float(r["accuracy"]) <= 1 and 0 <= float(r["accuracy_last"]) <= 1
               for r in rows)
    two_phase = [r for r in rows if r["rule"] in table1.TWO_PHASE]
    assert all(0.0 <= float(r["outer_win_share"]) <= 1.0 for r in two_phase)
    assert (out / "table1_heatmap.png").read_bytes().startswith(b"\x89PNG")
    summary = (out / "summary.md").read_text()
    assert "| Cent2P |" in summary and "paper's Table 1" in summary and "Worst-case gap" in summary
    assert "averaged iterate" in summary and "last iterate" in summary and "| momentum | 0.99 | 0.99 |" in summary


def test_quick_run_cent2p_last_iterate_worst_case_is_above_every_one_phase_rules(run):
    # At 100 rounds the averaged iterate still carries the untrained start; the last iterate shows the vote.
    _, tables, _ = run
    t = tables["uniform 0.4 accuracy_last"]
    one_phase = [rule for rule in table1.RULES if rule not in table1.TWO_PHASE]
    assert t["Cent2P"]["Worst"] > max(t[rule]["Worst"] for rule in one_phase)
    assert t["Cent2P"]["Worst"] == min(t["Cent2P"][a] for a in table1.ATTACKS)


def test_vote_gain_is_the_per_seed_difference_of_worst_cases(run):
    _, tables, rows = run
    g = table1.gains(rows, "uniform", 0.4)
    t = tables["uniform 0.4 accuracy"]
    assert g["Cent2P"]["Worst"].mean == pytest.approx(t["Cent2P"]["Worst"] - t["Cent1P"]["Worst"])
    assert g["Mean2P"]["vs Krum"].mean == pytest.approx(t["Mean2P"]["Worst"] - t["Krum"]["Worst"])
    assert g["Cent2P"]["Empire"].mean == pytest.approx(t["Cent2P"]["Empire"] - t["Cent1P"]["Empire"])


def test_help_states_the_seed_count_a_plain_run_uses(capsys):
    with pytest.raises(SystemExit):
        table1.main(["--help"])
    assert "default: 5, quick: 1" in capsys.readouterr().out
