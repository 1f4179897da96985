"""Flower's processes in a throw-away ``FLWR_HOME``, all stopped together, even on Ctrl-C.

``flwr run`` and ``flower-superlink``/``flower-supernode`` start processes
that leave their parent's process group: the local SuperLink the CLI starts
for a simulation runs in its own session, so does its SuperExec, and Ray's
processes below that.  What they all keep is their environment, so a
``Sandbox`` marks every process it starts with its own ``FLWR_HOME`` (a fresh
temporary directory) and stops, by that mark in ``/proc/<pid>/environ`` (or
the directory on its command line: some of Ray's processes get only that),
every process that carries it: first SIGTERM, then SIGKILL for what is left
after a short grace.  Then it removes the directory.  ``with Sandbox() as
box:`` does this on any exit, a ``KeyboardInterrupt`` or SIGTERM included
(SIGTERM is turned into ``SystemExit(143)`` while the sandbox is open, so
the cleanup runs).

Inside the sandbox:

* ``FLWR_HOME`` is the directory, so nothing of the user's Flower
  configuration is read or written;
* the local SuperLink that ``flwr run`` starts for a simulation listens on
  two free ports (``FLWR_LOCAL_SUPERLINK_HTTP_API_PORT``,
  ``FLWR_LOCAL_CONTROL_API_PORT``), never on Flower's fixed 39091/39093, so
  it cannot meet another run's SuperLink;
* Ray keeps its session directory there (``RAY_TMPDIR``), not in /tmp/ray
  (unless the directory's path is too long for Ray's socket paths);
* the processes import this checkout (``PYTHONPATH``), and Flower's update
  check (a network call) is off.

``Sandbox.flwr_run`` runs ``flwr run APP [CONNECTION] --stream ...`` in its
own process group, writes its output to a log file and hands each line to a
callback (progress), and returns the CLI's exit code once the run has ended.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

ROOT = Path(__file__).resolve().parents[2]  # the checkout the processes import
HOST = "127.0.0.1"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
RAY_TMPDIR_MAX = 40  # longer (a long TMPDIR): Ray keeps its session in /tmp/ray, as it does by default


class RunFailed(RuntimeError):
    """A Flower run that did not end with a result; ``str()`` is one line for the user."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def config_value(value: Any) -> str:
    """A run-config value as ``flwr run --run-config`` parses it (TOML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return repr(value)
    raise TypeError(f"a run-config value must be a bool, a number or a string, got {type(value).__name__}")


def run_config(values: Mapping[str, Any]) -> str:
    return " ".join(f"{key}={config_value(value)}" for key, value in values.items())


def marked(home: Path) -> list[int]:
    """The processes whose environment or command line names ``home`` (empty where /proc is missing).

    Most carry FLWR_HOME; some of Ray's get only its session directory inside ``home`` on their
    command line.  ``home`` is a fresh ``mkdtemp`` path, so nothing outside the sandbox names it."""
    needle = str(home).encode()
    found = []
    try:
        entries = os.scandir("/proc")
    except OSError:
        return []
    with entries:
        for entry in entries:
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:  # a zombie's are empty
                named = Path(entry.path, "environ").read_bytes() + Path(entry.path, "cmdline").read_bytes()
            except OSError:
                continue
            if needle in named:
                found.append(int(entry.name))
    return found


class Sandbox:
    """A fresh FLWR_HOME and the environment of every process started in it (see the module docstring)."""

    def __init__(self, prefix: str = "rfa-flower-", grace: float = 1.5):
        self.grace = grace
        self.home = Path(tempfile.mkdtemp(prefix=prefix))
        self.link_port = free_port()
        self.control_port = free_port()
        self.env = {
            **os.environ,
            "FLWR_HOME": str(self.home),
            "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(self.link_port),
            "FLWR_LOCAL_CONTROL_API_PORT": str(self.control_port),
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",  # silences a FutureWarning of Ray's in every run
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
        }
        if len(str(self.home)) <= RAY_TMPDIR_MAX:  # Ray's socket paths under it must fit in 107 bytes
            self.env["RAY_TMPDIR"] = str(self.home)
        self.processes: list[subprocess.Popen] = []
        self._sigterm: Any = None
        self.closed = False

    # ---- context manager: whatever happens, nothing is left behind ------------------------------

    def __enter__(self) -> "Sandbox":
        if threading.current_thread() is threading.main_thread():
            self._sigterm = signal.signal(signal.SIGTERM, _exit_on_sigterm)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop every process of the sandbox and remove its directory (idempotent)."""
        if self.closed:
            return
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None  # a second Ctrl-C waits
        try:
            self.stop()
            for _ in range(3):  # a process killed while writing may leave a file behind for a moment
                shutil.rmtree(self.home, ignore_errors=True)
                if not self.home.exists():
                    break
                time.sleep(0.1)
            self.closed = True
        finally:
            if main:
                signal.signal(signal.SIGINT, previous)
                if self._sigterm is not None:
                    signal.signal(signal.SIGTERM, self._sigterm)

    def stop(self) -> None:
        """SIGTERM every process of the sandbox, SIGKILL what is left after the grace period."""
        for sig, wait in ((signal.SIGTERM, self.grace), (signal.SIGKILL, 3.0)):
            for proc in self.processes:
                if proc.poll() is None:
                    _signal_group(proc.pid, sig)
            deadline = time.monotonic() + wait
            sent: set[int] = set()
            while True:
                left = marked(self.home)
                for pid in set(left) - sent:  # once each: a process may be busy shutting down
                    _signal(pid, sig)
                    sent.add(pid)
                for proc in self.processes:
                    proc.poll()  # reap our own children
                if not left or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            if not left:
                break
        for proc in self.processes:
            try:
                proc.wait(1.0)
            except subprocess.TimeoutExpired:
                pass

    # ---- starting processes ---------------------------------------------------------------------------

    def start(self, argv: Sequence[str], log: Path | None = None, **popen: Any) -> subprocess.Popen:
        """``argv`` in its own session (Ctrl-C reaches only us), output to ``log`` unless redirected."""
        if log is not None:
            with open(log, "w") as out:
                proc = subprocess.Popen(list(argv), env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True, **popen)
        else:
            proc = subprocess.Popen(list(argv), env=self.env, stdin=subprocess.DEVNULL, start_new_session=True,
                                    **popen)
        self.processes.append(proc)
        return proc

    def flwr_run(
        self,
        app: Path,
        *args: str,
        config: Mapping[str, Any] | None = None,
        log: Path,
        on_line: Callable[[str], None] = lambda line: None,
        timeout: float = 3600.0,
    ) -> int:
        """``flwr run APP *args --stream --run-config CONFIG``; its exit code once the stream ends.

        Every output line (colours removed) goes to ``log`` and to ``on_line``.  Raises
        ``RunFailed`` if the CLI runs longer than ``timeout`` seconds.
        """
        argv = ["flwr", "run", str(app), *args, "--stream"]
        if config:
            argv += ["--run-config", run_config(config)]
        proc = self.start(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        lines: queue.Queue[str | None] = queue.Queue()

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + timeout
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as out:
            while True:
                try:
                    line = lines.get(timeout=0.2)
                except queue.Empty:
                    if time.monotonic() > deadline:
                        raise RunFailed(f"flwr run did not end within {timeout:g} s; its log: {log}") from None
                    continue
                if line is None:
                    break
                line = ANSI.sub("", line.rstrip("\n"))
                out.write(line + "\n")
                out.flush()
                on_line(line)
        return proc.wait()


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except OSError:  # gone already, or not ours to signal
        pass


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except OSError:
        pass


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signal.SIGTERM)
