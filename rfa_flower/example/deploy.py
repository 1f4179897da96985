"""``python3 -m rfa_flower.example.deploy``: the example over a real local Flower deployment.

Starts one SuperLink and ``--clients`` SuperNodes as separate processes, all
bound to 127.0.0.1 on free ports, in a throw-away ``FLWR_HOME``
(``sandbox.Sandbox``: nothing of the user's Flower configuration is read or
written); runs the Flower App in ``flower_app/`` with ``flwr run APP local
--stream``, which ends when the run ends; stops every process it started, the
ClientApp and ServerApp processes Flower starts included; compares the
server app's JSON result with the in-memory run of the same configuration
(``__main__.compare``).  Ctrl-C does the same stopping and removing: exit 130,
one line.

The processes import this checkout through ``PYTHONPATH``; the SuperNodes
start one ClientApp process per message (Flower's default isolation), which
is what makes a deployment step slower than a simulation step.  The logs of
every process are copied to ``<out>/deployment-logs/`` when the run fails or
with ``--keep-logs``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from secagg.cli_support import script

from .__main__ import APP_DIR, app_run_config, compare, config_from, parse, parser, progress
from .sandbox import HOST, RunFailed, Sandbox, free_port

PROG = "python3 -m rfa_flower.example.deploy"


def wait_for_port(port: int, process: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RunFailed(f"{process.args[0]} exited with code {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.2)
    raise RunFailed(f"nothing listens on {HOST}:{port} after {seconds:g} s")


def build_parser() -> argparse.ArgumentParser:
    p = parser(PROG, "Run the example on a local SuperLink + SuperNodes and compare with the in-memory run")
    p.add_argument("--keep-logs", action="store_true", help="copy every process's log to <out>/deployment-logs")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(build_parser(), argv)
    cfg = config_from(args, "deployment").with_alpha_range()  # the public range, computed once here
    result = Path(cfg.out)
    result.unlink(missing_ok=True)
    kept = result.with_name("deployment-logs")
    start_time = time.perf_counter()
    with Sandbox() as box:
        (box.home / "config.toml").write_text(
            f'[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = "{HOST}:{box.link_port}"\ninsecure = true\n'
        )
        print(f"{PROG}: a SuperLink on {HOST}:{box.link_port} and {cfg.clients} SuperNodes (FLWR_HOME {box.home})",
              file=sys.stderr, flush=True)
        failure = None
        try:
            link = box.start(["flower-superlink", "--insecure", "--host", HOST, "--port", str(box.link_port)],
                             log=box.home / "superlink.log")
            wait_for_port(box.link_port, link, 120)
            for i in range(cfg.clients):
                box.start(
                    ["flower-supernode", "--insecure", "--superlink", f"{HOST}:{box.link_port}", "--host", HOST,
                     "--port", str(free_port()), "--node-config", f"partition-id={i} num-partitions={cfg.clients}"],
                    log=box.home / f"supernode-{i}.log",
                )
            with progress(PROG, cfg.rounds) as on_line:
                code = box.flwr_run(APP_DIR, "local", config=app_run_config(cfg), log=box.home / "flwr-run.log",
                                    on_line=on_line, timeout=args.timeout)
            if not result.exists():
                failure = f"the Flower run ended without a result (flwr run exit {code})"
        except RunFailed as exc:
            failure = str(exc)
        if failure is not None or args.keep_logs:
            box.stop()  # the processes have closed their logs
            shutil.rmtree(kept, ignore_errors=True)
            kept.mkdir(parents=True)
            for log in box.home.glob("*.log"):
                shutil.copy(log, kept / log.name)
        if failure is not None:
            print(f"{PROG}: {failure}; the logs: {kept}", file=sys.stderr)
            return 1
    flower = json.loads(result.read_text())
    return compare(cfg, flower, "deployment", time.perf_counter() - start_time)


if __name__ == "__main__":
    script(PROG, main)
