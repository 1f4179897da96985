"""Every command line, run as a subprocess on bad input, ends with one clear line and a documented code.

The cases are the ones a new user hits (issue 15): out-of-range flags,
Ctrl-C, a port in use, unwritable output paths, existing keys, a closed
pipe.  Each must exit with the code the "Exit codes" table of docs/guide/tcp.md gives and
print no traceback.  The subprocesses of one test run concurrently (the
suite runs on 2 cores).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from secagg import cli_support

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
UNWRITABLE = "/proc/no-such-dir/out"  # /proc refuses new entries, even for root


def start(args: list[str], cwd: Path, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", *args], cwd=cwd, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def check_one_line(proc: subprocess.Popen, code: int, needle: str, timeout: float = 120) -> str:
    out, err = proc.communicate(timeout=timeout)
    where = f"{proc.args}: exit {proc.returncode}\n{err}"
    assert proc.returncode == code, where
    assert "Traceback" not in err and "ExceptionGroup" not in err, where
    # argparse prints its usage lines, then the one error line; others print just the line.
    last = err.strip().splitlines()[-1] if err.strip() else ""
    assert needle in last, where
    return err


BAD_FLAGS = [
    (["secagg", "simulate", "--dropout", "1.5"], "argument --dropout: must be in [0, 1], got 1.5"),
    (["secagg", "simulate", "--dropout", "-0.1"], "argument --dropout: must be in [0, 1], got -0.1"),
    (["secagg", "simulate", "--clients", "3", "--threshold", "1"], "argument --threshold: must be in [2, --clients=3]"),
    (["secagg", "demo", "--clients", "4", "--threshold", "5"], "argument --threshold"),
    (["secagg", "simulate", "--modulus-bits", "65"], "argument --modulus-bits: must be at most 64"),
    (["secagg", "client", "--server", "127.0.0.1:1", "--id", "1", "--timeout", "-5"], "argument --timeout"),
    (["secagg", "client", "--server", "10.0.0.1:80", "--id", "1"], "127.0.0.1 or ::1"),
    (["secagg", "keygen", "--dir", "keys", "--clients", "0"], "argument --clients: must be an integer >= 2, got 0"),
    (["rfa", "demo", "--rho", "1.5"], "argument --rho"),
    (["rfa", "demo", "--per-round", "50"], "argument --per-round: must be at most --clients=40"),
    (["rfa", "demo", "--out", UNWRITABLE], "--out /proc/no-such-dir/out: cannot write there"),
    (["sims.fig1_weiszfeld", "--seeds", "0"], "argument --seeds: must be an integer >= 1, got 0"),
    (["sims.fig5_one_step", "--quick", "--out", UNWRITABLE], "--out /proc/no-such-dir/out: cannot write there"),
    (["sims.bench_secagg", "--n", "1"], "argument --n: must be an integer >= 2, got 1"),
    (["secagg", "simulate", "--workers", "0"], "argument --workers: must be an integer >= 1, got 0"),
    (["sims.bench_secagg", "--speedup", "--transport", "tcp"], "--speedup: only with the memory transport"),
]


def test_bad_flag_values_are_refused_up_front_naming_the_flag(tmp_path):
    procs = [(start(args, tmp_path), needle) for args, needle in BAD_FLAGS]
    for proc, needle in procs:
        check_one_line(proc, cli_support.USAGE, needle)
    assert not (tmp_path / "keys").exists() and not (tmp_path / "out").exists()  # nothing ran


def test_environment_problems_end_with_one_line(tmp_path):
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "client-1.pub").write_text("00" * 32 + "\n")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        procs = [
            (start(["secagg", "serve", "--port", str(port), "--clients", "3", "--dim", "2"], tmp_path),
             cli_support.FAILED, "the port is already in use"),
            (start(["secagg", "serve", "--clients", "3", "--dim", "2", "--transcript", UNWRITABLE], tmp_path),
             cli_support.FAILED, "No such file or directory: /proc/no-such-dir/out"),
            (start(["secagg", "keygen", "--dir", UNWRITABLE, "--clients", "3"], tmp_path),
             cli_support.FAILED, "/proc/no-such-dir"),
            (start(["secagg", "keygen", "--dir", "keys", "--clients", "3"], tmp_path),
             cli_support.USAGE, "Pass --force to replace them."),
            (start(["secagg", "inspect", "missing.bin"], tmp_path), cli_support.FAILED, "No such file or directory"),
        ]
        for proc, code, needle in procs:
            check_one_line(proc, code, needle)
    assert (tmp_path / "keys" / "client-1.pub").read_text() == "00" * 32 + "\n"  # not overwritten


def test_keygen_force_replaces_the_keys(tmp_path):
    from secagg.cli import main

    assert main(["keygen", "--dir", str(tmp_path), "--clients", "2", "--quiet"]) == 0
    old = (tmp_path / "client-1.pub").read_text()
    assert main(["keygen", "--dir", str(tmp_path), "--clients", "2"]) == cli_support.USAGE
    assert (tmp_path / "client-1.pub").read_text() == old
    assert main(["keygen", "--dir", str(tmp_path), "--clients", "2", "--force", "--quiet"]) == 0
    assert (tmp_path / "client-1.pub").read_text() != old


def test_ctrl_c_ends_with_one_line_and_code_130(tmp_path):
    serve = start(["secagg", "serve", "--clients", "3", "--dim", "2"], tmp_path)
    demo = start(["rfa", "demo", "--out", str(tmp_path / "demo")], tmp_path)
    # Interrupt each in its long phase: the server waiting for clients, the demo training
    # (it creates --out just before it starts).
    while "listening on" not in serve.stderr.readline() and serve.poll() is None:
        pass
    deadline = time.monotonic() + 120
    while not (tmp_path / "demo").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    for proc in (serve, demo):
        proc.send_signal(signal.SIGINT)
    for proc in (serve, demo):
        err = check_one_line(proc, cli_support.INTERRUPTED, "interrupted")
        assert err.count("interrupted") == 1


def test_an_interrupt_inside_exec_still_exits_130_under_python_m(tmp_path):
    """CPython marks a KeyboardInterrupt leaving exec() as unhandled and `python -m` would end with
    SIGINT (-2): the race the Ctrl-C test above hit when the signal landed in a lazy import."""
    (tmp_path / "interrupted_in_exec.py").write_text(
        "from secagg.cli_support import run_main\n"
        "def main(argv):\n"
        "    exec('raise KeyboardInterrupt')\n"
        "raise SystemExit(run_main('demo', main))\n"
    )
    proc = start(["interrupted_in_exec"], tmp_path)  # -m finds it in the working directory
    err = check_one_line(proc, cli_support.INTERRUPTED, "interrupted")
    assert err.count("interrupted") == 1


def test_a_closed_pipe_is_silent_with_code_141(tmp_path):
    from secagg.cli import main as secagg_main
    from secagg.transcript import TranscriptWriter
    from secagg.simulation import setup_session

    params, _ = setup_session({u: np.zeros(200_000, np.uint64) for u in (1, 2, 3)}, threshold=2, modulus=2**32, seed=1)
    with open(tmp_path / "t.bin", "wb") as f:
        TranscriptWriter(params, f)  # a header only: inspect prints its records and a replay error
    assert secagg_main(["inspect", str(tmp_path / "t.bin"), "--json"]) == cli_support.FAILED
    # The JSON of a large session does not fit a pipe buffer: closing the read end early breaks the pipe.
    for flags in (["--json"], []):
        reader, writer = os.pipe()
        os.close(reader)
        proc = subprocess.Popen([sys.executable, "-m", "secagg", "inspect", "t.bin", *flags], cwd=tmp_path, env=ENV,
                                stdout=writer, stderr=subprocess.PIPE, text=True)
        os.close(writer)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == cli_support.BROKEN_PIPE, err
        assert err == "", err


def test_every_flag_has_help_text():
    from rfa.cli import build_parser as rfa_parser
    from secagg.cli import build_parser as secagg_parser
    from sims.common import parser as sims_parser

    def flags(parser):
        for action in parser._actions:
            if action.choices and isinstance(action.choices, dict):  # subcommands
                for sub in action.choices.values():
                    yield from flags(sub)
            elif action.option_strings:
                yield parser.prog, action

    for prog, action in [*flags(secagg_parser()), *flags(rfa_parser()), *flags(sims_parser("x", "y"))]:
        assert action.help, f"{prog} {action.option_strings} has no help text"


SIM_COMMANDS = sorted(f"sims.{p.stem}" for p in (ROOT / "sims").glob("*.py")
                      if 'if __name__ == "__main__":\n    entry_point' in p.read_text()
                      or 'if __name__ == "__main__":\n    script' in p.read_text())
COMMANDS = [*SIM_COMMANDS, "rfa_flower.example", "rfa_flower.example.deploy",
            *(f"secagg {c}" for c in ("simulate", "serve", "client", "demo", "keygen", "inspect")), "rfa demo"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_help_names_the_command_as_typed_and_shows_each_option_with_help_and_one_default_style(
        command, capsys, monkeypatch):
    import argparse
    import importlib
    import re

    module, *sub = command.split()
    seen: list[argparse.ArgumentParser] = []
    show_help = argparse._HelpAction.__call__

    def record(self, parser, namespace, values, option_string=None):
        seen.append(parser)
        show_help(self, parser, namespace, values, option_string)

    monkeypatch.setattr(argparse._HelpAction, "__call__", record)
    if module in ("secagg", "rfa"):
        main = importlib.import_module(f"{module}.cli").main
    else:
        mod = importlib.import_module(module)
        main = getattr(mod, "main", None) or importlib.import_module(f"{module}.__main__").main
    with pytest.raises(SystemExit) as info:
        main([*sub, "--help"])
    text = capsys.readouterr().out
    assert info.value.code == 0 and len(seen) == 1
    typed = command if module in ("secagg", "rfa") else f"python3 -m {command}"
    assert text.startswith(f"usage: {typed} "), text[:80]  # never __main__.py or deploy.py
    for action in seen[0]._actions:
        if action.option_strings:
            assert action.help and action.help != argparse.SUPPRESS, (command, action.option_strings)
    # One style: "(default: X)", as the formatter writes it (issue 25 found "(default 0.1)" beside it).
    assert not re.search(r"\(default [^:]", " ".join(text.split())), text


@pytest.mark.parametrize("module", ["sims.common", "sims.federation"])
def test_shared_simulation_code_run_as_a_command_says_so_in_one_line(module):
    proc = subprocess.run([sys.executable, "-m", module, "--help"], env=ENV, capture_output=True, text=True, timeout=60)
    assert proc.returncode == cli_support.USAGE and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "not a command" in proc.stderr


def test_integer_flags_take_any_notation_of_a_whole_number_like_the_benchmarks():
    import argparse

    count = cli_support.int_at_least(1)
    assert count("1e3") == count("1000") == count("1_000") == 1000
    for text in ("1.5", "1e-3", "nan", "inf", "x", "1e300"):
        with pytest.raises(argparse.ArgumentTypeError):
            count(text)
    port = cli_support.int_at_least(0, 65535)
    assert port("65535") == 65535
    with pytest.raises(argparse.ArgumentTypeError, match=r"must be an integer in \[0, 65535\], got 65536"):
        port("65536")


def test_version_flags_print_the_package_version(capsys):
    import secagg
    from rfa.cli import main as rfa_main
    from secagg.cli import main as secagg_main

    for main, name in ((secagg_main, "secagg"), (rfa_main, "rfa")):
        with pytest.raises(SystemExit) as info:
            main(["--version"])
        assert info.value.code == 0
        assert capsys.readouterr().out.strip() == f"{name} {secagg.__version__}"


def test_float_in_refuses_nan_and_the_open_ends():
    import argparse

    unit = cli_support.float_in(0, 1, low_open=True)
    assert unit("1") == 1.0
    for text in ("0", "nan", "1.0001", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            unit(text)
    with pytest.raises(argparse.ArgumentTypeError):
        cli_support.float_in(0, low_open=True)("inf")
