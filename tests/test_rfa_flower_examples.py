"""The Flower example and benchmark as a user runs them (issue 20, "Faults as in a deployment", "Benchmark").

* Bad flags: ``python3 -m rfa_flower.example``, ``... .example.deploy`` and
  ``python3 -m sims.bench_flower`` refuse them while parsing: exit 2, the
  usage and one error line naming the flag, under the command's own prog
  name, never a traceback; every option's help shows its default.
* Ctrl-C: each command, interrupted in the middle of a Flower run, ends
  within 5 s (asserted with slack: 8 s, the suite shares 2 cores) with exit
  130 and one line on stderr, and leaves neither its FLWR_HOME nor any
  process that carries it.
* The example end to end under ``flwr run``, and the benchmark in its tiny
  mode: the table's rows and their correctness checks.

Every test that runs Flower starts a SuperLink (``flwr run`` starts a local
one for a simulation), so it is marked ``deployment``, as in
tests/test_rfa_flower.py.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("flwr", reason="Flower is not installed: pip install '.[flower]'")

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
INTERRUPT_BUDGET = 8.0  # the issue asks for 5 s; slack for a loaded 2-core machine
HOME = re.compile(r"FLWR_HOME (/\S+?)[;)]")


def start(module: str, *args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=cwd, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def carriers(home: str) -> list[int]:
    """Processes whose environment or command line names ``home``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            data = (proc / "environ").read_bytes() + (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if home.encode() in data:
            found.append(int(proc.name))
    return found


# ---- bad flags: exit 2, usage and one error line, no traceback --------------------------------------

EXAMPLE = "rfa_flower.example"
DEPLOY = "rfa_flower.example.deploy"
BENCH = "sims.bench_flower"
BAD_FLAGS = [
    (EXAMPLE, ["--rule", "krum"], "argument --rule: krum needs every update in the clear; add --plaintext"),
    (EXAMPLE, ["--rule", "trimmed_mean", "--quick"], "add --plaintext"),
    (EXAMPLE, ["--rule", "cent2p", "--plaintext"], "argument --rule: cent2p needs the clients' votes"),
    (EXAMPLE, ["--rule", "no_such_rule"], "argument --rule: unknown rule 'no_such_rule'"),
    (EXAMPLE, ["--clients", "0"], "argument --clients: must be an integer >= 2, got 0"),
    (EXAMPLE, ["--clients", "-3"], "argument --clients: must be an integer >= 2, got -3"),
    (EXAMPLE, ["--clients", "65"], "argument --clients: must be at most 64"),
    (EXAMPLE, ["--rounds", "0"], "argument --rounds: must be an integer >= 1, got 0"),
    (EXAMPLE, ["--rounds", "-1"], "argument --rounds: must be an integer >= 1, got -1"),
    (EXAMPLE, ["--timeout", "-5"], "argument --timeout: must be in (0, inf), got -5"),
    (EXAMPLE, ["--out", "/proc/no-such-dir/out"], "--out /proc/no-such-dir/out: cannot write there"),
    (DEPLOY, ["--rule", "krum"], "argument --rule: krum needs every update in the clear; add --plaintext"),
    (DEPLOY, ["--clients", "1"], "argument --clients: must be an integer >= 2, got 1"),
    (BENCH, ["--n", "1"], "argument --n: must be an integer >= 3, got 1"),
    (BENCH, ["--n", "-1"], "argument --n: must be an integer >= 3, got -1"),
    (BENCH, ["--n", "10", "2"], "argument --n: must be an integer >= 3, got 2"),
    (BENCH, ["--n", "5000"], "argument --n: must be at most 1024"),
    (BENCH, ["--d", "0"], "argument --d: must be an integer >= 1, got 0"),
]


def test_bad_flags_end_with_the_usage_and_one_error_line_naming_the_flag(tmp_path):
    procs = [(start(module, *args, cwd=tmp_path), module, args, needle) for module, args, needle in BAD_FLAGS]
    for proc, module, args, needle in procs:
        out, err = proc.communicate(timeout=120)
        where = f"python3 -m {module} {' '.join(args)}: exit {proc.returncode}\n{err}"
        assert proc.returncode == 2, where
        assert "Traceback" not in err and out == "", where
        lines = err.strip().splitlines()
        assert lines[0].startswith(f"usage: python3 -m {module} "), where
        assert not re.search(r"\w+\.py\b", "\n".join(lines[:-1])), where  # no __main__.py, deploy.py, ...
        assert lines[-1].startswith(f"python3 -m {module}: error: ") and needle in lines[-1], where
        assert sum("error" in line for line in lines) == 1, where
    assert not (tmp_path / "out").exists()  # nothing ran


def parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    from rfa_flower.example import __main__ as example
    from rfa_flower.example import deploy
    from sims import bench_flower

    return [(EXAMPLE, example.build_parser()), (DEPLOY, deploy.build_parser()), (BENCH, bench_flower.build_parser())]


@pytest.mark.parametrize("module,parser", parsers(), ids=[m for m, _ in parsers()])
def test_every_option_has_help_and_shows_its_default(module, parser):
    assert parser.prog == f"python3 -m {module}"
    text = parser.format_help()
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        assert action.help, f"{module} {action.option_strings[0]} has no help"
        if action.nargs == 0:  # a switch: off unless given
            continue
        flag = re.escape(action.option_strings[0])
        block = re.search(rf"\n  {flag}\b.*?(?=\n  -|\Z)", text, re.S).group(0)
        assert "default" in block, f"{module} {action.option_strings[0]}: no default in its help:\n{block}"


# ---- Ctrl-C: exit 130 within the budget, one line, nothing left behind -----------------------------


def interrupt_when(proc: subprocess.Popen, ready: str) -> tuple[str, str]:
    """Read stderr until a line contains ``ready``; SIGINT; return (FLWR_HOME, stderr read so far)."""
    seen, home = [], None
    while True:
        line = proc.stderr.readline()
        assert line, f"ended before {ready!r}: exit {proc.wait()}\n{''.join(seen)}"
        seen.append(line)
        if home is None and (m := HOME.search(line)):
            home = m.group(1)
        if ready in line:
            break
    assert home is not None, "".join(seen)
    proc.send_signal(signal.SIGINT)
    return home, "".join(seen)


def check_interrupted(proc: subprocess.Popen, home: str, module: str, before: str) -> None:
    sent = time.monotonic()
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    seconds = time.monotonic() - sent
    where = f"exit {proc.returncode} {seconds:.1f} s after SIGINT\nstderr before: {before}\nafter: {err}"
    assert proc.returncode == 130, where
    assert seconds < INTERRUPT_BUDGET, where
    assert err.strip().splitlines() == [f"python3 -m {module}: interrupted"], where
    assert not Path(home).exists(), where
    assert carriers(home) == [], where


@pytest.mark.deployment
def test_ctrl_c_in_the_middle_of_a_simulation_stops_everything_within_the_budget(tmp_path):
    """Interrupted while round 2 of 4 runs (Ray's actors up, the local SuperLink busy)."""
    proc = start(EXAMPLE, "--quick", "--rounds", "4", "--out", str(tmp_path / "out"), cwd=tmp_path)
    home, before = interrupt_when(proc, "[ROUND 1/4]")
    check_interrupted(proc, home, EXAMPLE, before)


@pytest.mark.deployment
def test_ctrl_c_while_the_local_superlink_starts_stops_everything_within_the_budget(tmp_path):
    proc = start(EXAMPLE, "--quick", "--out", str(tmp_path / "out"), cwd=tmp_path)
    home, before = interrupt_when(proc, "flwr run with")
    check_interrupted(proc, home, EXAMPLE, before)


@pytest.mark.deployment
def test_ctrl_c_in_the_middle_of_a_deployment_stops_everything_within_the_budget(tmp_path):
    """SuperLink, SuperNodes and the ClientApp processes they start for the run's messages."""
    proc = start(DEPLOY, "--clients", "2", "--rounds", "3", "--rule", "mean", "--out", str(tmp_path / "out"),
                 cwd=tmp_path)
    home, before = interrupt_when(proc, "started run")
    time.sleep(3.0)  # the SuperNodes are pulling messages and starting ClientApp processes
    check_interrupted(proc, home, DEPLOY, before)


# ---- end to end ------------------------------------------------------------------------------------


@pytest.mark.deployment
def test_the_example_runs_the_shipped_app_under_flwr_run_and_matches_the_in_memory_run(tmp_path):
    proc = start(EXAMPLE, "--clients", "3", "--rounds", "2", "--rule", "mean", "--out", str(tmp_path / "out"),
                 cwd=tmp_path)
    out, err = proc.communicate(timeout=600)
    where = f"exit {proc.returncode}\n{out}\n{err}"
    assert proc.returncode == 0, where
    assert "MATCH" in out and "MISMATCH" not in out, where
    assert re.findall(r"\[ROUND (\d)/2\] 3 nodes sampled, 3 trained, 3 included", err) == ["1", "2"], where
    assert "deprecat" not in err.lower() and "Traceback" not in err, where
    log = (tmp_path / "out" / "simulation-flwr.log").read_text()
    assert "split over 3 nodes" in log and "DEPRECATED" not in log
    comparison = json.loads((tmp_path / "out" / "simulation-comparison.json").read_text())
    assert comparison["max_abs_diff"] <= comparison["bound"] and comparison["clients"] == 3
    home = HOME.search(err).group(1)
    assert not Path(home).exists() and carriers(home) == []


@pytest.mark.deployment
def test_bench_flower_quick_prints_the_three_aggregations_side_by_side_and_they_are_correct(tmp_path):
    proc = start(BENCH, "--quick", "--json", "--out", str(tmp_path / "out"), cwd=tmp_path)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    rows = json.loads(out)  # with --json stdout carries the rows alone; the table goes to stderr
    assert [(r["side"], r["n"], r["d"], r["t"]) for r in rows] == [
        ("mean", 3, 100, 2), ("geometric_median", 3, 100, 2), ("flower", 3, 100, 2)]
    mean, median, flower = rows
    assert all(r["ok"] and r["included"] == 3 for r in rows)
    # Round trips: the train round plus 4 for a secure average; the median's 4 averages are the calls of
    # one secagg session, so each after the first adds 2 (call_open + masked input, unmasking).
    # Flower's SecAgg+ makes 4.
    assert (mean["round_trips"], median["round_trips"], flower["round_trips"]) == (5, 11, 4)
    assert (mean["secure_averages"], median["secure_averages"]) == (1, 4)
    assert mean["max_error"] <= mean["error_bound"] < 1e-12  # 64-bit fixed point: the exact mean, nearly
    assert median["worst_step_error_over_bound"] <= 1.0 and median["max_error"] < 1e-10
    assert flower["max_error"] <= flower["error_bound"] < 1e-3  # Flower's 2^22-level quantization
    for r in rows:
        assert r["seconds"] > 0 and r["bytes_up_per_node"] > 0 and r["bytes_down_per_node"] > 0
        assert r["time_ratio"] == pytest.approx(r["seconds"] / flower["seconds"])
        assert r["bytes_up_ratio"] == pytest.approx(r["bytes_up_per_node"] / flower["bytes_up_per_node"])
    # What ours sends up is its secagg messages and the Flower records around them.
    assert 0 < mean["secagg_bytes_up_per_node"] < mean["bytes_up_per_node"]
    for label in ("ours: secure mean", "ours: secure geometric median", "Flower SecAgg+ FedAvg"):
        assert label in err
    assert "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "flower-n3.json", "flower-n3.log", "ours-n3.json", "ours-n3.log"]


def test_the_run_shows_round_lines_and_on_a_terminal_a_bar_with_flowers_latest_event(capsys, monkeypatch):
    # Issue 25: a deployment's round takes a minute or more with nothing on screen between round lines.
    from rfa_flower.example.__main__ import progress

    flower_log = ["Successfully started run 42", "INFO :      configure_train: sampled 3 nodes",
                  "INFO :      [ROUND 1/2] 3 nodes sampled, 3 trained", "INFO :      aggregate_train: received 3"]
    with progress("prog", 2) as on_line:  # not a terminal: the round lines alone, as before
        for line in flower_log:
            on_line(line)
    assert capsys.readouterr().err.splitlines() == ["prog: started run 42", "prog: [ROUND 1/2] 3 nodes sampled, 3 trained"]
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich: stderr is a terminal
    with progress("prog", 2) as on_line:
        for line in flower_log:
            on_line(line)
    err = capsys.readouterr().err
    assert "prog: [ROUND 1/2] 3 nodes sampled, 3 trained" in err and "1/2" in err
    assert "aggregate_train: received 3" in err or "configure_train: sampled 3 nodes" in err
