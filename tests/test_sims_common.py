"""sims/common.py: the flags every simulation inherits are checked up front, and --json reports the run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sims import common


def fake_sim(argv=None) -> int:
    args = common.parser("fake", "a simulation of nothing").parse_args(argv)
    assert args.out.is_dir()  # created, and proved writable, before any work
    rows = [{"seed": s, "accuracy": np.float64(0.5 + s / 10), "loss": float("nan")} for s in common.seeds(args)]
    common.write_csv(args.out / "fake.csv", rows)
    fig, ax = common.plt.subplots()
    common.save_figure(fig, args.out / "fake.png")
    common.write_summary(args.out / "summary.md", "Fake", ["nothing happened"])
    common.console.print("done")
    return 0


def test_json_prints_what_the_run_wrote_on_stdout(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(common.console, "stderr", False)  # restored after the test
    out = tmp_path / "new" / "dir"
    assert common.with_json("fake", fake_sim)(["--json", "--seeds", "2", "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)  # stdout holds the JSON alone
    assert report["name"] == "fake" and report["out"] == str(out) and report["exit_code"] == 0
    assert report["figures"] == [str(out / "fake.png")] and report["summary"] == str(out / "summary.md")
    assert report["csv"]["fake.csv"] == [{"seed": 0, "accuracy": 0.5, "loss": None},
                                         {"seed": 1, "accuracy": 0.6, "loss": None}]
    assert "done" not in json.dumps(report)  # the console's messages went to stderr


@pytest.mark.parametrize("flags,message", [
    (["--seeds", "0"], "argument --seeds: must be an integer >= 1, got 0"),
    (["--out", "/proc/no-such-dir/x"], "--out /proc/no-such-dir/x: cannot write there"),
])
def test_bad_shared_flags_stop_before_the_run(flags, message, capsys):
    with pytest.raises(SystemExit) as info:
        fake_sim(flags)
    assert info.value.code == 2
    assert message in capsys.readouterr().err
