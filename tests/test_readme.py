"""The README and the docs pages run as written: every ```python block, and every command of their
```bash blocks (README.md and every Markdown page under docs/).

Each python block is executed on its own (a fresh namespace), compiled with
README.md's own line numbers, so a failure's traceback points at the README
line; a value it states in a ``# -> value`` comment is compared with what the
code gives (tests/snippets.py).  Each bash block runs in bash in a fresh directory, with the checkout
on PYTHONPATH and every fixed port (``7000``) replaced by a free one.  Its
``python3 -m sims.*`` and ``python3 -m rfa_flower.*`` commands are parsed
in-process with ``--help`` appended (every flag before it is still parsed and
checked; the simulations themselves run with ``--quick`` in
tests/test_sims_*.py, the Flower example in tests/test_rfa_flower.py), ``python3 -m rfa demo`` gets
``--rounds 2`` (the full demo runs in tests/test_rfa_cli.py), and
``pip install``/``pytest`` lines are skipped (this suite is that run; of
``pip install X && CMD`` only CMD is run), and so are ``flwr run`` lines
(tests/test_rfa_flower.py runs the README's own Flower app under ``flwr run``).  Whoever adds a README section keeps it
runnable: this test picks new blocks up by itself.
"""

from __future__ import annotations

import codeop
import importlib
import os
import re
import shlex
import socket
import subprocess
import time
from pathlib import Path

import pytest
from snippets import checked

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]


def blocks(language: str) -> list[tuple[str, int, str]]:
    """(page, line number of the first code line, code) of every fenced block in ``language``."""
    found = []
    for page in PAGES:
        lines, i = page.read_text().splitlines(), 0
        while i < len(lines):
            if lines[i].strip() == f"```{language}":
                start, i = i + 2, i + 1
                body = []
                while lines[i].strip() != "```":
                    body.append(lines[i])
                    i += 1
                found.append((str(page.relative_to(ROOT)), start, "\n".join(body)))
            i += 1
    return found


def where(page: str, start: int) -> str:
    return f"{page}:{start}"


@pytest.mark.parametrize("page,start,code", blocks("python"), ids=lambda v: v if isinstance(v, (str, int)) and not str(v).count("\n") else "")
def test_python_snippet_runs_as_written(page, start, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a snippet that writes files writes them here
    # Compiled with the page's line numbers ("docs/x.md", line N in a traceback); a "# -> value" comment is checked.
    compiled, namespace, _ = checked(code, str(ROOT / page), start)
    exec(compiled, namespace)


def _is_a_file(page: str, start: int) -> bool:
    """A block introduced as a file ("`my_app.py`:") is saved, not pasted."""
    before = [line for line in (ROOT / page).read_text().splitlines()[: start - 2] if line.strip()]
    return bool(before) and re.fullmatch(r"`[\w/.-]+\.py`:", before[-1].strip()) is not None


@pytest.mark.parametrize("page,start,code", [b for b in blocks("python") if not _is_a_file(*b[:2])],
                         ids=lambda v: v if isinstance(v, (str, int)) and not str(v).count("\n") else "")
def test_python_snippet_pastes_into_the_repl(page, start, code):
    # Issue 25: three snippets raised SyntaxError in the Python 3.11 REPL, which ends an indented block at
    # a blank line and takes one statement at a time.  Fed line by line, as a paste is.
    compiler, buffer = codeop.CommandCompiler(), []
    for number, line in enumerate(code.splitlines(), start):
        buffer.append(line)
        try:
            complete = compiler("\n".join(buffer), "<stdin>", "single")
        except SyntaxError as exc:
            pytest.fail(f"{page}:{number}: {exc.msg} when pasted into the REPL (a blank line ends a block)")
        if complete is not None:
            buffer = []


def test_the_docs_state_values_that_their_tests_compare():
    # The values a reader takes from a comment are checked (tests/snippets.py), not just printed.
    counted = {page: 0 for page, _, _ in blocks("python")}
    for page, start, code in blocks("python"):
        counted[page] += checked(code, page, start)[2]
    assert counted["README.md"] >= 4 and sum(counted.values()) >= 12, counted


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SKIPPED = re.compile(r"^\s*(python3 -m (pip|pytest)\b|flwr run\b)")  # flwr run: tests/test_rfa_flower.py runs it
INSTALL_THEN = re.compile(r"^\s*python3 -m pip install \S+ && (.*)$")
SIM = re.compile(r"^(\s*python3 -m (?:sims|rfa_flower)\.\S+(?:\s+[^#\s][^#]*?)?)(\s*#.*)?$")
DEMO = re.compile(r"^(\s*python3 -m rfa demo(?:\s+[^#\s][^#]*?)?)(\s*#.*)?$")


def runnable(code: str, port: int | None = None) -> tuple[str, list[list[str]]]:
    """The bash block as the test runs it, and the argv of each sims command in it (see the docstring).

    ``port`` replaces 7000 (default: a free port)."""
    out, sims = [], []
    for line in code.splitlines():
        installed = INSTALL_THEN.match(line)
        if installed:  # "pip install ... && CMD": this suite runs installed, so only CMD is checked
            line = installed.group(1)
        if SKIPPED.match(line):
            continue
        m = SIM.match(line)
        if m:
            sims.append(shlex.split(m.group(1))[2:])  # ["sims.name", flags...]
            continue
        m = DEMO.match(line)
        if m:
            line = m.group(1).rstrip() + " --rounds 2"
        out.append(line)
    return "\n".join(out).replace("7000", str(port or _free_port())), sims


@pytest.mark.parametrize("page,start,code", blocks("bash"), ids=lambda v: v if isinstance(v, (str, int)) and not str(v).count("\n") else "")
def test_bash_block_runs_without_a_traceback(page, start, code, tmp_path, capsys):
    script, sims = runnable(code)
    for module, *flags in sims:
        with pytest.raises(SystemExit) as info:
            mod = importlib.import_module(module)
            main = getattr(mod, "main", None) or importlib.import_module(f"{module}.__main__").main
            main([*flags, "--help"])
        assert info.value.code == 0, f"{where(page, start)}: python3 -m {module} {' '.join(flags)}: {capsys.readouterr().err}"
    if not script.strip():
        return
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(["bash", "-c", "set -euo pipefail\n" + script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=240)
    logs = "".join(p.read_text() for p in tmp_path.glob("*.log"))
    failure = f"{where(page, start)}: exit {proc.returncode}\n{proc.stderr[-3000:]}\n{logs[-2000:]}"
    assert proc.returncode == 0, failure
    assert "Traceback" not in proc.stderr + logs, failure


SERVER_BLOCKS = [b for b in blocks("bash") if "secagg serve" in b[2]]


@pytest.mark.parametrize("page,start,code", SERVER_BLOCKS,
                         ids=lambda v: v if isinstance(v, (str, int)) and not str(v).count("\n") else "")
def test_a_server_block_on_a_busy_port_stops_at_once_with_the_servers_error(page, start, code, tmp_path):
    # Issue 25: `until grep -q listening serve.log` waited forever when the port was taken, and raced
    # the shell creating serve.log.  Every wait has its own time limit and stops on the server's error.
    waits = [line for line in code.splitlines() if "until grep" in line]
    assert waits and all(line.startswith("timeout ") for line in waits), waits
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        script, _ = runnable(code, busy.getsockname()[1])
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        began = time.monotonic()
        proc = subprocess.run(["bash", "-c", "set -euo pipefail\n" + script], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60)
    failure = f"{where(page, start)}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert proc.returncode != 0, failure
    assert time.monotonic() - began < 20, failure  # not the 30 s limit: the server's exit ends the wait
    assert "secagg: the port is already in use" in proc.stdout + proc.stderr, failure
    assert "No such file" not in proc.stderr and "Traceback" not in proc.stdout + proc.stderr, failure


def test_the_bash_blocks_cover_every_command_line():
    # Every CLI shows up in some block, so the test above exercises each of them.
    text = "\n".join(code for _, _, code in blocks("bash"))
    for command in ("secagg demo", "secagg serve", "secagg client", "secagg inspect", "secagg keygen", "rfa demo"):
        assert f"python3 -m {command}" in text, command


def test_the_readme_stays_an_overview_and_links_into_the_docs():
    # Issue 25: reference material buried the overview; the guides live in docs/ (the MkDocs site).
    text = README.read_text()
    assert len(text.splitlines()) <= 500
    links = re.findall(r"\]\((docs/[^)#]+)", text)
    assert links and all((ROOT / link).is_file() for link in links), [l for l in links if not (ROOT / l).is_file()]
