"""The command line over loopback TCP: separate processes, killed processes, the demo.

``secagg serve`` and ``secagg client`` run as real subprocesses (``python -m
secagg``); some sessions mix them with in-test trio clients so that a client
process can be SIGKILLed at a chosen point of the protocol.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import trio

from secagg import ClientPolicy
from secagg.cli import main
from secagg.messages import Round
from secagg.tcp import leave_at, run_client

SECAGG = [sys.executable, "-m", "secagg"]
BITS = 32


class Proc:
    """A subprocess whose stdout and stderr go to files (no pipe can fill up and block it)."""

    def __init__(self, tmp: Path, name: str, *args: object):
        self.out, self.err = tmp / f"{name}.out", tmp / f"{name}.err"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.popen = subprocess.Popen(SECAGG + [str(a) for a in args], stdout=out, stderr=err)

    def stderr(self) -> str:
        return self.err.read_text()

    def wait_for(self, text: str, timeout: float = 60) -> str:
        end = time.monotonic() + timeout
        while text not in self.stderr():
            if self.popen.poll() is not None or time.monotonic() > end:
                raise AssertionError(f"{text!r} never appeared; stderr:\n{self.stderr()}")
            time.sleep(0.02)
        return self.stderr()

    def finish(self, timeout: float = 60) -> tuple[int, str]:
        rc = self.popen.wait(timeout=timeout)
        return rc, self.out.read_text()


def serve(tmp: Path, *args: object) -> tuple[Proc, int]:
    proc = Proc(tmp, "serve", "serve", "--port", 0, "--json", *args)
    text = proc.wait_for("listening on 127.0.0.1:")
    port = int(text.split("listening on 127.0.0.1:")[1].split()[0])
    return proc, port


def random_inputs(n: int, dim: int, seed: int) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {u: rng.integers(0, 2**BITS, dim, dtype=np.uint64) for u in range(1, n + 1)}


def check_exact(summary: dict, inputs: dict[int, np.ndarray]) -> None:
    total = sum(inputs[u] for u in summary["included"]) % np.uint64(2**BITS)
    assert summary["total"] == [int(v) for v in total]


def test_serve_and_three_client_processes(tmp_path, capsys):
    inputs = random_inputs(3, 5, seed=1)
    for u, x in inputs.items():
        np.save(tmp_path / f"in{u}.npy", x)
    transcript = tmp_path / "transcript.msgpack"
    server, port = serve(tmp_path, "--clients", 3, "--threshold", 2, "--dim", 5, "--transcript", transcript)
    clients = [
        Proc(tmp_path, f"c{u}", "client", "--server", f"127.0.0.1:{port}", "--id", u, "--input", tmp_path / f"in{u}.npy")
        for u in inputs
    ]
    rc, out = server.finish()
    assert rc == 0, server.stderr()
    assert [c.finish()[0] for c in clients] == [0, 0, 0]
    summary = json.loads(out)
    assert summary["included"] == [1, 2, 3] and summary["violations"] == []
    check_exact(summary, inputs)
    # The auditor's view: inspect decodes every frame and replays the session.
    assert main(["inspect", str(transcript), "--json"]) == 0
    audit = json.loads(capsys.readouterr().out)
    assert audit["total"] == summary["total"] and audit["included"] == [1, 2, 3]
    kinds = [r.get("kind") for r in audit["records"] if r["channel"] == "message"]
    assert sorted(kinds) == sorted(["advertise_keys", "encrypted_shares", "masked_input", "unmasking_shares"] * 3)


def test_malicious_mode_with_a_key_directory(tmp_path):
    keys = tmp_path / "keys"
    assert subprocess.run(SECAGG + ["keygen", "--dir", str(keys), "--clients", "3"], capture_output=True).returncode == 0
    inputs = random_inputs(3, 4, seed=2)
    for u, x in inputs.items():
        np.save(tmp_path / f"in{u}.npy", x)
    server, port = serve(tmp_path, "--clients", 3, "--threshold", 2, "--dim", 4, "--malicious", "--identity-dir", keys)
    clients = [
        Proc(tmp_path, f"c{u}", "client", "--server", f"127.0.0.1:{port}", "--id", u,
             "--input", tmp_path / f"in{u}.npy", "--identity-dir", keys)
        for u in inputs
    ]
    rc, out = server.finish()
    assert rc == 0, server.stderr()
    assert [c.finish()[0] for c in clients] == [0, 0, 0]
    summary = json.loads(out)
    assert summary["malicious"] and summary["counts"]["consistency_check"] == 3
    check_exact(summary, inputs)


@pytest.mark.parametrize("kill_after", [Round.ADVERTISE_KEYS, Round.MASKED_INPUT])
def test_client_process_killed_mid_protocol(tmp_path, kill_after):
    """Client 20 is a real process, SIGKILLed right after it sent ``kill_after``'s message.

    In-test client 1 holds back its own message of that round until the kill,
    so the server is provably still in that round when the process dies.
    """
    n, t, dim = 20, 14, 6
    inputs = random_inputs(n, dim, seed=3)
    np.save(tmp_path / "in20.npy", inputs[20])
    server, port = serve(tmp_path, "--clients", n, "--threshold", t, "--dim", dim, "--round-timeout", 20, "--quiet")
    victim = Proc(tmp_path, "victim", "client", "--server", f"127.0.0.1:{port}", "--id", 20, "--input", tmp_path / "in20.npy")
    outcomes = {}

    async def session():
        killed = trio.Event()

        async def hold(msg):
            if msg.round is kill_after:
                await killed.wait()
            return True

        async def killer():
            with trio.fail_after(60):
                while f"client 20: sent {kill_after.value}" not in victim.stderr():
                    await trio.sleep(0.02)
            victim.popen.kill()  # SIGKILL: no goodbye, the kernel closes the socket
            victim.popen.wait()
            killed.set()

        async def one(u):
            outcomes[u] = await run_client("127.0.0.1", port, u, inputs[u], before_send=hold if u == 1 else None)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(killer)
            for u in range(1, n):
                nursery.start_soon(one, u)

    trio.run(session)
    rc, out = server.finish()
    assert rc == 0, server.stderr()
    assert victim.popen.returncode == -9
    summary = json.loads(out)
    victim_included = kill_after is Round.MASKED_INPUT  # its masked input had arrived
    assert summary["included"] == list(range(1, n + (1 if victim_included else 0)))
    check_exact(summary, inputs)
    next_round = "share_keys" if kill_after is Round.ADVERTISE_KEYS else "unmasking"
    assert summary["dropouts"] == {next_round: [20]}
    assert all(o.status == "done" for o in outcomes.values())


def test_serve_aborts_below_threshold(tmp_path):
    server, port = serve(tmp_path, "--clients", 4, "--threshold", 3, "--dim", 3, "--round-timeout", 2)
    inputs = random_inputs(4, 3, seed=4)
    outcomes = {}

    async def session():
        async def one(u):
            hook = leave_at(Round.SHARE_KEYS) if u in (1, 2) else None
            outcomes[u] = await run_client("127.0.0.1", port, u, inputs[u], before_send=hook)

        async with trio.open_nursery() as nursery:
            for u in inputs:
                nursery.start_soon(one, u)

    trio.run(session)
    rc, out = server.finish()
    assert rc == 3
    assert "session aborted" in server.stderr()
    summary = json.loads(out)
    assert summary["aborted"]["round"] == "share_keys" and summary["aborted"]["count"] == 2
    assert "total" not in summary
    assert {u: o.status for u, o in outcomes.items()} == {1: "left", 2: "left", 3: "aborted", 4: "aborted"}


def test_demo(capsys):
    args = ["demo", "--clients", "20", "--threshold", "14", "--dim", "50", "--dropout", "0.15", "--seed", "1"]
    assert main(args + ["--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["correct"] is True
    injected = sorted(u for ids in summary["injected_dropouts"].values() for u in ids)
    assert injected, "seed 1 injects five dropouts"
    assert sorted(u for ids in summary["dropouts"].values() for u in ids) == injected
    assert main(args + ["--dropout-round", "masked_input"]) == 0
    text, err = capsys.readouterr()
    assert "EQUAL" in text and "unmasking" in text
    assert "advertise_keys ━━" in err and "20/20" in err and "20/20" not in text  # bars on stderr (issue 25)


def test_cli_refuses_non_loopback_hosts(capsys):
    for argv in (["serve", "--host", "0.0.0.0", "--clients", "3", "--dim", "2"],
                 ["client", "--server", "10.1.2.3:4000", "--id", "1"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("127.0.0.1 or ::1") == 2


def test_simulate_still_works(capsys):
    assert main(["simulate", "--clients", "10", "--dim", "20", "--seed", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["correct"] is True


def test_keygen_makes_existing_private_key_files_owner_only(tmp_path):
    keys = tmp_path / "keys"
    keys.mkdir()
    stale = keys / "client-1.key"
    stale.write_text("00" * 32 + "\n")
    stale.chmod(0o644)
    assert main(["keygen", "--dir", str(keys), "--clients", "2", "--force"]) == 0
    for u in (1, 2):
        assert (keys / f"client-{u}.key").stat().st_mode & 0o777 == 0o600
    assert stale.read_text().strip() != "00" * 32  # a fresh key was written


def test_inspect_fails_when_the_transcript_does_not_replay(tmp_path):
    import msgpack

    from secagg.bootstrap import params_to_wire
    from secagg.simulation import setup_session
    from secagg.transcript import FORMAT, VERSION

    params, _ = setup_session({u: np.zeros(4, np.uint64) for u in (1, 2, 3)}, threshold=2, modulus=2**16, seed=1)
    path = tmp_path / "empty.bin"
    # A header and no frames: the session cannot be replayed to a result.
    path.write_bytes(msgpack.packb({"format": FORMAT, "version": VERSION, "params": params_to_wire(params)}))
    assert main(["inspect", str(path), "--json"]) == 1


def test_client_sent_threshold_1_declines_by_default_and_with_min_group_1_warns_once_in_one_line(tmp_path):
    """The session CLIs refuse t = 1.  A client sent it by another server declines it under its default
    policy (a sum of one honest input), in one line; told --min-group 1, it takes part and says so once."""
    import threading
    import warnings

    from secagg.params import PublicParams
    from secagg.tcp import TcpServer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        params = PublicParams.create([1, 2], threshold=1, modulus=2**16, dim=3)
    box: dict = {}
    ready = threading.Event()

    async def host():
        server = TcpServer(params, port=0, round_timeout=10, join_timeout=60)
        async with trio.open_nursery() as nursery:
            box["port"] = await nursery.start(server.run)
            ready.set()
            box["declined"] = await run_client("127.0.0.1", box["port"], 2, np.zeros(3, np.uint64))
            box["other"] = await run_client("127.0.0.1", box["port"], 2, np.zeros(3, np.uint64),
                                            policy=ClientPolicy(min_group=1))

    def in_thread():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trio.run(host)

    thread = threading.Thread(target=in_thread)
    thread.start()
    assert ready.wait(60)
    declined = subprocess.run(SECAGG + ["client", "--server", f"127.0.0.1:{box['port']}", "--id", "1", "--quiet"],
                              capture_output=True, text=True, timeout=120)
    assert declined.returncode == 1
    assert declined.stderr.count("\n") == 1 and "declined" in declined.stderr and "[min-group]" in declined.stderr
    proc = subprocess.run(SECAGG + ["client", "--server", f"127.0.0.1:{box['port']}", "--id", "1", "--quiet",
                                    "--min-group", "1"], capture_output=True, text=True, timeout=120)
    thread.join(60)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "warning" in line.lower()]
    assert len(lines) == 1 and lines[0].startswith("secagg client: warning:") and "t=1" in lines[0], proc.stderr
    assert box["other"].status == "done" and box["declined"].status == "declined"


@pytest.mark.parametrize("port", ["65536", "70000", "-1"])
def test_serve_refuses_a_port_outside_0_to_65535(capsys, port):
    # Issue 25: 70000 listened on 70000 mod 65536, 65536 on a random port.
    with pytest.raises(SystemExit) as info:
        main(["serve", "--port", port, "--clients", "3", "--dim", "4"])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert err.splitlines()[-1] == f"secagg serve: error: argument --port: must be an integer in [0, 65535], got {port}"


@pytest.mark.parametrize("content", ["zero bytes", "empty array", "float array", "not npy", "npz"])
def test_client_refuses_an_input_file_it_cannot_use_in_one_line(tmp_path, capsys, content):
    path = tmp_path / "x.npy"
    if content == "zero bytes":
        path.write_bytes(b"")
    elif content == "empty array":
        np.save(path, np.array([], dtype=np.uint64))
    elif content == "float array":
        np.save(path, np.ones(3))
    elif content == "not npy":
        path.write_text("1 2 3\n")
    else:
        with open(path, "wb") as f:
            np.savez(f, x=np.arange(3))
    # Port 1: nothing listens there, and the input must be refused before any connection is tried.
    code = main(["client", "--server", "127.0.0.1:1", "--id", "1", "--input", str(path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"secagg client: ") and str(path) in err
    assert "connect" not in err
