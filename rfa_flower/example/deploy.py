"""``python3 -m rfa_flower.example.deploy``: the example over a real local Flower deployment.

Starts one SuperLink and ``--clients`` SuperNodes as separate processes, all
bound to 127.0.0.1 on free ports, in a throw-away ``FLWR_HOME`` (nothing of
the user's Flower configuration is read or written); submits the Flower App in
``flower_app/`` with ``flwr run``; waits for the server app's JSON result;
stops every process it started (by process group); compares the result with
the in-memory run of the same configuration (``__main__.compare``).

The processes import this checkout through ``PYTHONPATH``; the SuperNodes
start one ClientApp process per message (Flower's default isolation), which
is what makes a deployment step slower than a simulation step.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from .__main__ import compare, config_from, parser

APP_DIR = Path(__file__).with_name("flower_app")
HOST = "127.0.0.1"  # loopback only


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with code {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on {HOST}:{port} after {seconds:g} s")


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def main(argv: list[str] | None = None) -> int:
    p = parser("Run the example on a local SuperLink + SuperNodes and compare with the in-memory run")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for the run")
    p.add_argument("--keep-logs", action="store_true", help="keep the processes' logs (printed path)")
    args = p.parse_args(argv)
    cfg = config_from(args, "deployment").with_alpha_range()  # the public range, computed once here
    Path(cfg.out).unlink(missing_ok=True)
    home = Path(tempfile.mkdtemp(prefix="rfa-flower-"))
    link_port = free_port()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = "{HOST}:{link_port}"\ninsecure = true\n'
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "FLWR_HOME": str(home), "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    processes: list[subprocess.Popen] = []

    def start(name: str, *command: str) -> subprocess.Popen:
        log = open(home / f"{name}.log", "w")
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        processes.append(proc)
        return proc

    def stop_all() -> None:
        for proc in processes:  # each started its own session: stop it with its children
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in processes:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)

    start_time = time.perf_counter()
    with ExitStack() as stack:
        stack.callback(stop_all)
        link = start("superlink", "flower-superlink", "--insecure", "--host", HOST, "--port", str(link_port))
        wait_for_port(link_port, link, 120)
        for i in range(cfg.clients):
            port = free_port()
            start(
                f"supernode-{i}", "flower-supernode", "--insecure", "--superlink", f"{HOST}:{link_port}",
                "--host", HOST, "--port", str(port), "--node-config", f"partition-id={i} num-partitions={cfg.clients}",
            )
        overrides = " ".join(
            f"{k}={toml_value(v)}"
            for k, v in dict(
                clients=cfg.clients, rounds=cfg.rounds, rule=cfg.rule, secure=cfg.secure, out=cfg.out,
                alpha_min=cfg.alpha_min, alpha_max=cfg.alpha_max,
            ).items()
        )
        submitted = subprocess.run(
            ["flwr", "run", str(APP_DIR), "local", "--run-config", overrides],
            env=env, capture_output=True, text=True, timeout=300,
        )
        if submitted.returncode != 0:
            print(submitted.stdout, submitted.stderr, file=sys.stderr)
            return 1
        print(f"submitted to the SuperLink on {HOST}:{link_port} with {cfg.clients} SuperNodes (logs: {home})")
        deadline = time.monotonic() + args.timeout
        while not Path(cfg.out).exists():
            if time.monotonic() > deadline or link.poll() is not None:
                print(f"no result after {args.timeout:g} s; logs in {home}", file=sys.stderr)
                return 1
            time.sleep(1.0)
        time.sleep(0.5)  # the server app writes the file in one call; let it close
        flower = json.loads(Path(cfg.out).read_text())
    seconds = time.perf_counter() - start_time
    status = compare(cfg, flower, "deployment", seconds)
    if not args.keep_logs and status == 0:
        shutil.rmtree(home, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
