"""The client's own policy on the parameters a server announces (issue 24, item 3; policy.py).

Every policy item is refused just below its boundary and accepted at it; the defaults accept
what this package itself sizes; ``screen_wire`` refuses before any parameter is rebuilt; and an
unmodified TCP client, facing a hand-written hostile server, sends nothing but its refusal.
"""

from __future__ import annotations

import functools
import logging
import math
import subprocess
import sys
import threading
import warnings

import msgpack
import numpy as np
import pytest
import trio

from secagg import ClientPolicy, PublicParams, SeededRandom
from secagg.bootstrap import HELLO_MAX_BYTES, decode_bootstrap_reply, decode_hello, decode_refusal, params_to_wire
from secagg.errors import MalformedMessage, ParameterError, WeakParameters
from secagg.framing import FrameReader, encode_frame
from secagg.keys import raw_public
from secagg.messages import PROTOCOL_VERSION
from secagg.simulation import identity_keys, setup_session
from secagg.tcp import ClientOutcome, TcpServer, run_client

SECAGG = [sys.executable, "-m", "secagg"]
SID = bytes(range(32))


@functools.lru_cache(maxsize=None)
def private_keys(n: int):
    return identity_keys(range(1, n + 1), SeededRandom(24))


@functools.lru_cache(maxsize=None)
def public_keys(n: int) -> dict[int, bytes]:
    return {u: raw_public(k) for u, k in private_keys(n).items()}


def complete(n: int, t: int, malicious: bool = False) -> PublicParams:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # t = 1 warns; the policy is what is tested here
        return PublicParams(
            session_id=SID, client_ids=tuple(range(1, n + 1)), threshold=t, modulus_bits=16, dim=1,
            malicious=malicious, identity_keys=public_keys(n) if malicious else {},
        )


def sparse(n: int, dropout: float, corrupt: float, malicious: bool = False, **kw) -> PublicParams:
    return PublicParams.create(
        range(1, n + 1), modulus=2**16, dim=1, graph="sparse", dropout=dropout, corrupt=corrupt,
        malicious=malicious, identity_keys=public_keys(n) if malicious else None, session_id=SID, **kw,
    )


def refused(policy: ClientPolicy, params: PublicParams, item: str) -> WeakParameters:
    with pytest.raises(WeakParameters) as info:
        policy.check(params)
    assert info.value.item == item, info.value
    return info.value


# ---- each item: refused just below its boundary, accepted at it --------------------------------------


def test_max_clients_boundary():
    params = complete(20, 14)
    assert ClientPolicy(max_clients=20).check(params) > 0
    refused(ClientPolicy(max_clients=19), params, "max-clients")
    wire = params_to_wire(params)
    ClientPolicy(max_clients=20).screen_wire(wire)
    with pytest.raises(WeakParameters) as info:
        ClientPolicy(max_clients=19).screen_wire(wire)
    assert info.value.item == "max-clients"


@pytest.mark.parametrize(
    "malicious,fraction,need",
    [
        (False, 0.5, 10), (False, 0.51, 11), (False, 0.7, 14), (False, 1.0, 20),
        # malicious mode: PublicParams itself refuses t <= n/2, so the boundary is tested above it
        (True, 0.6, 12), (True, 0.7, 14), (True, 0.96, 20),
    ],
)
def test_min_threshold_boundary_on_the_complete_graph(malicious, fraction, need):
    policy = ClientPolicy(min_threshold=fraction, corrupt=0.0)
    assert need == math.ceil(fraction * 20)
    assert policy.check(complete(20, need, malicious)) == need
    refused(policy, complete(20, need - 1, malicious), "min-threshold")


def test_min_threshold_does_not_apply_to_a_sparse_graph():
    params = sparse(100, 0.1, 0.05)
    assert params.threshold < 0.5 * params.n
    ClientPolicy(min_threshold=1.0).check(params)


@pytest.mark.parametrize(
    "malicious,t_ok",
    [
        (False, 6),  # honest-but-curious: t - 1 >= 5 colluding
        (True, 13),  # malicious: 2t - n - 1 >= 5 colluding
    ],
)
def test_corrupt_boundary_on_the_complete_graph(malicious, t_ok):
    policy = ClientPolicy(corrupt=0.25, min_threshold=0.05, min_group=1)  # 5 of 20 colluding
    assert policy.check(complete(20, t_ok, malicious)) == t_ok - 5
    refused(policy, complete(20, t_ok - 1, malicious), "corrupt")
    # the same threshold against one colluding client more (0.3 of 20 = 6)
    refused(ClientPolicy(corrupt=0.3, min_threshold=0.05, min_group=1), complete(20, t_ok, malicious), "corrupt")


@pytest.mark.parametrize("malicious", [False, True])
def test_corrupt_boundary_on_a_sparse_graph(malicious):
    """The graph must be sized for at least the tolerated corrupted fraction, to the last bit."""
    c = 0.05
    at = sparse(100, 0.1, c, malicious)
    ClientPolicy(corrupt=c).check(at)
    refused(ClientPolicy(corrupt=math.nextafter(c, 1)), at, "corrupt")
    below = sparse(100, 0.1, math.nextafter(c, 0), malicious)
    refused(ClientPolicy(corrupt=c), below, "corrupt")


@pytest.mark.parametrize("malicious", [False, True])
def test_dropout_boundary_on_a_sparse_graph(malicious):
    d = 0.1
    at = sparse(100, d, 0.05, malicious)
    ClientPolicy(dropout=d).check(at)
    refused(ClientPolicy(dropout=math.nextafter(d, 1)), at, "dropout")
    below = sparse(100, math.nextafter(d, 0), 0.05, malicious)
    refused(ClientPolicy(dropout=d), below, "dropout")


def test_dropout_does_not_apply_to_the_complete_graph():
    ClientPolicy(dropout=0.9).check(complete(20, 14))


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: complete(20, 14), id="complete-honest"),
        pytest.param(lambda: complete(20, 14, True), id="complete-malicious"),
        pytest.param(lambda: sparse(100, 0.1, 0.05), id="sparse-honest"),
        pytest.param(lambda: sparse(100, 0.1, 0.05, True), id="sparse-malicious"),
        pytest.param(lambda: sparse(1000, 0.1, 0.05, True), id="sparse-malicious-1000"),
    ],
)
def test_min_group_boundary(make):
    params = make()
    group = ClientPolicy(min_group=1).check(params)
    assert group >= 2
    assert ClientPolicy(min_group=group).check(params) == group
    refused(ClientPolicy(min_group=group + 1), params, "min-group")


def test_min_group_is_the_smallest_sum_a_malicious_sparse_server_can_learn():
    """14.5: t - c, the size create(min_group=m) guarantees; the policy reads the same number."""
    params = sparse(1000, 0.1, 0.05, True, min_group=12)
    assert ClientPolicy(min_group=12).check(params) >= 12


# ---- the defaults ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("malicious", [False, True], ids=["honest-but-curious", "malicious"])
@pytest.mark.parametrize("dropout,corrupt", [(0.1, 0.05), (0.3, 0.1)])
@pytest.mark.parametrize("n", [20, 100, 1000])
def test_defaults_accept_every_sparse_session_this_package_sizes(n, dropout, corrupt, malicious):
    params = sparse(n, dropout, corrupt, malicious)
    ClientPolicy().screen_wire(params_to_wire(params))
    assert ClientPolicy().check(params) >= 2


@pytest.mark.parametrize("malicious", [False, True], ids=["honest-but-curious", "malicious"])
def test_defaults_accept_complete_sessions_with_the_cli_default_threshold(malicious):
    policy = ClientPolicy()
    for n in [*range(2, 101), 1000, policy.max_clients]:
        params = complete(n, 2 * n // 3 + 1, malicious)
        policy.screen_wire(params_to_wire(params))
        assert policy.check(params) >= 2, n


def test_defaults_refuse_the_sessions_of_the_issue():
    """issue 24, item 3: ["harary", 2, 0.0, 0.0] with t = 2, and t = 2 on the complete graph."""
    from secagg.graph import HararyGraph

    ids = tuple(range(1, 9))
    harary = PublicParams(
        session_id=SID, client_ids=ids, threshold=2, modulus_bits=16, dim=1, malicious=True,
        identity_keys=public_keys(8), graph=HararyGraph(ids, 2, SID, dropout=0.0, corrupt=0.0),
    )
    with pytest.raises(WeakParameters) as info:
        ClientPolicy().check(harary)
    assert info.value.item in ("corrupt", "dropout", "min-group")
    refused(ClientPolicy(), complete(8, 2), "min-threshold")


# ---- screen_wire: refuses from the raw frame, before any parameter is rebuilt ------------------------


def raw_frame(**fields) -> bytes:
    body = {"type": "params", "version": PROTOCOL_VERSION, "round_timeout": 1.0, "join_seconds": 1.0, **fields}
    return msgpack.packb(body, use_bin_type=True)


def test_screen_wire_refuses_an_oversized_session_without_building_parameters(monkeypatch):
    def no_rebuild(*args, **kwargs):
        raise AssertionError("PublicParams was built from a frame the policy refuses")

    monkeypatch.setattr("secagg.bootstrap.PublicParams", no_rebuild)
    policy = ClientPolicy(max_clients=50)
    # garbage everywhere but the ids: a rebuild would fail on the session id, the keys, the graph
    frame = raw_frame(client_ids=list(range(1, 52)), threshold=40, session_id=b"x", identity_keys={}, graph="?")
    with pytest.raises(WeakParameters) as info:
        decode_bootstrap_reply(frame, screen=policy.screen_wire)
    assert info.value.item == "max-clients"
    policy.screen_wire({"client_ids": list(range(1, 51)), "threshold": 40})  # exactly max_clients: passes


def test_screen_wire_refuses_t_below_min_group_without_building_parameters(monkeypatch):
    monkeypatch.setattr("secagg.bootstrap.PublicParams", None)
    frame = raw_frame(client_ids=[1, 2, 3, 4], threshold=2, session_id=b"x", identity_keys={}, graph="?")
    with pytest.raises(WeakParameters) as info:
        decode_bootstrap_reply(frame, screen=ClientPolicy(min_group=3).screen_wire)
    assert info.value.item == "min-group"
    ClientPolicy(min_group=2).screen_wire({"client_ids": [1, 2, 3, 4], "threshold": 2})  # t = min_group passes
    # a frame the screen passes goes on to the rebuild (and here fails there)
    monkeypatch.undo()
    with pytest.raises(MalformedMessage):
        decode_bootstrap_reply(frame, screen=ClientPolicy(min_group=2).screen_wire)


@pytest.mark.parametrize("max_clients", [2, 100, 10_000])
def test_frame_limit_holds_the_largest_frame_of_a_session_of_max_clients(max_clients):
    """The client reads the parameters frame with ``frame_limit`` as its bound: a session of
    exactly ``max_clients`` (largest ids, identity keys, a sparse graph) must fit in it."""
    policy = ClientPolicy(max_clients=max_clients)
    top = 2**31 - 1
    ids = list(range(top - max_clients + 1, top + 1))
    frame = raw_frame(
        session_id=SID, client_ids=ids, threshold=2, modulus_bits=64, dim=2**27, malicious=True,
        identity_keys={u: bytes(32) for u in ids}, graph=["harary", 2, 0.1, 0.05], round_timeout=5.0, join_seconds=5.0,
    )
    assert len(frame) <= policy.frame_limit
    assert ClientPolicy(max_clients=2 * max_clients).frame_limit > policy.frame_limit


# ---- invalid policies ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field,value",
    [
        ("min_group", 0), ("min_group", -1), ("min_group", 2.0), ("min_group", True), ("min_group", "3"),
        ("corrupt", -0.01), ("corrupt", 1.0), ("corrupt", 1.5), ("corrupt", math.nan), ("corrupt", True),
        ("corrupt", "0.1"), ("corrupt", None),
        ("dropout", -0.01), ("dropout", 1.0), ("dropout", math.inf), ("dropout", math.nan), ("dropout", False),
        ("min_threshold", 0), ("min_threshold", 0.0), ("min_threshold", -0.5), ("min_threshold", 1.01),
        ("min_threshold", math.nan), ("min_threshold", "0.5"),
        ("max_clients", 1), ("max_clients", 0), ("max_clients", 100.0), ("max_clients", True), ("max_clients", None),
    ],
)
def test_invalid_policy_values_raise_parameter_error(field, value):
    with pytest.raises(ParameterError):
        ClientPolicy(**{field: value})


def test_valid_policy_extremes_are_accepted():
    ClientPolicy(min_group=1, corrupt=0.0, dropout=0.0, min_threshold=1.0, max_clients=2)
    ClientPolicy(corrupt=math.nextafter(1.0, 0), dropout=0.999, min_threshold=math.nextafter(0.0, 1))


# ---- TCP: an unmodified client against a hand-written hostile server ---------------------------------


def hostile_frame(n: int, t: int, graph, malicious: bool, keys: dict[int, bytes] | None = None) -> bytes:
    """The parameters frame a hostile server writes by hand (no PublicParams involved)."""
    return raw_frame(
        session_id=SID, client_ids=list(range(1, n + 1)), threshold=t, modulus_bits=16, dim=3,
        malicious=malicious, identity_keys=dict(keys or {}), graph=graph, round_timeout=5.0, join_seconds=5.0,
    )


async def hostile_server(params_frame: bytes, seen: dict, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Accept one connection: read the hello, send ``params_frame``, record every later frame until EOF."""
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    task_status.started(listener.socket.getsockname()[1])
    async with listener:
        stream = await listener.accept()
    async with stream:
        reader = FrameReader(stream)
        with trio.fail_after(60):
            seen["hello"] = decode_hello(await reader.receive(HELLO_MAX_BYTES))
            await stream.send_all(encode_frame(params_frame))
            seen["frames"] = []
            while (frame := await reader.receive(1 << 20)) is not None:
                seen["frames"].append(frame)


CASES = {
    # the session of the issue: a sparse malicious graph sized for no corruption, no dropout, t = 2
    "harary-2": dict(frame=lambda: hostile_frame(8, 2, ["harary", 2, 0.0, 0.0], True, public_keys(8)),
                     malicious=True, policy=ClientPolicy(), rules={"policy:corrupt", "policy:dropout", "policy:min-group"}),
    "complete-t-2": dict(frame=lambda: hostile_frame(8, 2, "complete", False), malicious=False,
                         policy=ClientPolicy(), rules={"policy:min-threshold"}),
    "t-1": dict(frame=lambda: hostile_frame(8, 1, "complete", False), malicious=False,
                policy=ClientPolicy(), rules={"policy:min-group"}),
    "oversized": dict(frame=lambda: hostile_frame(11, 8, "complete", True, public_keys(11)), malicious=True,
                      policy=ClientPolicy(max_clients=10), rules={"policy:max-clients"}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_tcp_client_declines_a_hostile_server_and_sends_only_its_refusal(case):
    spec = CASES[case]
    seen: dict = {}
    n = len(msgpack.unpackb(spec["frame"](), strict_map_key=False)["client_ids"])
    kwargs = dict(policy=spec["policy"], timeout=30)
    if spec["malicious"]:
        kwargs.update(identity_key=private_keys(n)[1], trusted_keys=public_keys(n))

    async def main() -> ClientOutcome:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(hostile_server, spec["frame"](), seen)
            return await run_client("127.0.0.1", port, 1, np.zeros(3, np.uint64), **kwargs)

    outcome = trio.run(main)
    assert outcome.status == "declined", outcome
    assert outcome.sent_rounds == []
    assert seen["hello"] == 1
    assert len(seen["frames"]) == 1, seen["frames"]  # the refusal and nothing else: no advertise_keys
    refusal = decode_refusal(seen["frames"][0])
    assert refusal is not None
    rule, detail = refusal
    assert rule in spec["rules"], refusal
    assert rule.split(":", 1)[1] in outcome.detail and detail


def test_tcp_allow_insecure_waives_the_policy_check():
    """t = 2 of 8 on the complete graph is below min_threshold; with allow_insecure the client
    takes part anyway: its first frame after the hello is advertise_keys."""
    seen: dict = {}

    async def main() -> ClientOutcome:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(hostile_server, hostile_frame(8, 2, "complete", False), seen)
            return await run_client("127.0.0.1", port, 1, np.zeros(3, np.uint64), allow_insecure=True, timeout=1)

    outcome = trio.run(main)
    assert outcome.sent_rounds == ["advertise_keys"]  # then it waits for a roster that never comes
    assert decode_refusal(seen["frames"][0]) is None and len(seen["frames"]) == 1


def test_tcp_allow_insecure_waives_the_policy_but_not_max_clients():
    """The docstring of run_client: allow_insecure waives the policy, except max_clients."""
    spec = CASES["oversized"]
    seen: dict = {}

    async def main() -> ClientOutcome:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(hostile_server, spec["frame"](), seen)
            return await run_client("127.0.0.1", port, 1, np.zeros(3, np.uint64), policy=spec["policy"],
                                    identity_key=private_keys(11)[1], trusted_keys=public_keys(11),
                                    allow_insecure=True, timeout=30)

    outcome = trio.run(main)
    assert outcome.status == "declined" and outcome.sent_rounds == []
    assert [decode_refusal(f)[0] for f in seen["frames"]] == ["policy:max-clients"]


# ---- the CLI -------------------------------------------------------------------------------------------


POLICY_FLAGS = ["--min-group", "7", "--tolerated-corrupt", "0.2", "--tolerated-dropout", "0.25",
                "--min-threshold", "0.75", "--max-clients", "500"]


def test_cli_client_policy_flags_parse_and_default_to_the_policy_defaults():
    from secagg.cli import build_parser

    base = ["client", "--server", "127.0.0.1:9", "--id", "1"]
    args = build_parser().parse_args(base + POLICY_FLAGS)
    assert (args.min_group, args.tolerated_corrupt, args.tolerated_dropout, args.min_threshold, args.max_clients) == (
        7, 0.2, 0.25, 0.75, 500)
    args = build_parser().parse_args(base)
    d = ClientPolicy()
    assert (args.min_group, args.tolerated_corrupt, args.tolerated_dropout, args.min_threshold, args.max_clients) == (
        d.min_group, d.corrupt, d.dropout, d.min_threshold, d.max_clients)


@pytest.mark.parametrize(
    "flag,value",
    [("--min-group", "0"), ("--tolerated-corrupt", "1"), ("--tolerated-corrupt", "-0.1"),
     ("--tolerated-dropout", "1"), ("--min-threshold", "0"), ("--min-threshold", "1.5"), ("--max-clients", "1")],
)
def test_cli_client_refuses_an_invalid_policy_flag(flag, value, capsys):
    from secagg.cli import main

    with pytest.raises(SystemExit) as info:
        main(["client", "--server", "127.0.0.1:9", "--id", "1", flag, value])
    assert info.value.code == 2
    assert flag in capsys.readouterr().err


def test_cli_client_flags_reach_the_policy_and_a_declined_client_exits_1_with_one_line(monkeypatch, capsys):
    import secagg.cli

    got: dict = {}

    async def fake_run_client(host, port, client_id, value=None, **kwargs):
        got.update(kwargs, host=host, port=port, client_id=client_id)
        return ClientOutcome(client_id, "declined", "the session's parameters are below this client's policy [x]: y")

    monkeypatch.setattr(secagg.cli, "run_client", fake_run_client)
    monkeypatch.setattr(secagg.cli, "_setup_logging", lambda level: None)  # leave pytest's root logger alone
    assert secagg.cli.main(["client", "--server", "127.0.0.1:9", "--id", "3", "--quiet", *POLICY_FLAGS]) == 1
    assert got["policy"] == ClientPolicy(min_group=7, corrupt=0.2, dropout=0.25, min_threshold=0.75, max_clients=500)
    assert (got["host"], got["port"], got["client_id"]) == ("127.0.0.1", 9, 3)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "declined" in err


@pytest.mark.parametrize("quiet", [True, False], ids=["quiet", "default-logging"])
def test_cli_client_process_declines_the_hostile_server_with_exit_1_and_one_stderr_line(tmp_path, quiet):
    from secagg.keydir import generate_keys

    keys = generate_keys(tmp_path / "keys", range(1, 9))
    frame = hostile_frame(8, 2, ["harary", 2, 0.0, 0.0], True, keys)
    seen: dict = {}
    box: dict = {}
    ready = threading.Event()

    async def host():
        async with trio.open_nursery() as nursery:
            box["port"] = await nursery.start(hostile_server, frame, seen)
            ready.set()

    thread = threading.Thread(target=lambda: trio.run(host))
    thread.start()
    assert ready.wait(60)
    argv = ["client", "--server", f"127.0.0.1:{box['port']}", "--id", "1", "--identity-dir", str(tmp_path / "keys")]
    proc = subprocess.run(SECAGG + argv + (["--quiet"] if quiet else []), capture_output=True, text=True, timeout=120)
    thread.join(60)
    assert not thread.is_alive()
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("secagg client 1: declined:"), proc.stderr
    assert "[corrupt]" in proc.stderr
    assert [decode_refusal(f)[0] for f in seen["frames"]] == ["policy:corrupt"]


# ---- the server's side: a declined client is a dropout, logged and in the transcript -----------------


def test_tcp_server_records_a_client_refusal_as_a_dropout(caplog):
    inputs = {u: np.arange(3, dtype=np.uint64) * u for u in (1, 2, 3)}
    params, machines = setup_session(inputs, threshold=2, modulus=2**16, seed=3)

    async def main():
        # advertise_keys closes at its deadline (a declined id stays open to the real client until then)
        server = TcpServer(params, round_timeout=5.0, join_timeout=2.0)
        outcomes = {}

        async def serve(task_status=trio.TASK_STATUS_IGNORED):
            outcomes["server"] = await server.run(task_status=task_status)

        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve)

            async def one(u, **kw):
                outcomes[u] = await run_client("127.0.0.1", port, u, **kw)

            nursery.start_soon(functools.partial(one, 1, value=inputs[1], policy=ClientPolicy(min_group=3)))
            for u in (2, 3):
                nursery.start_soon(functools.partial(one, u, client=machines[u], policy=None))
        return outcomes

    with caplog.at_level(logging.WARNING, logger="secagg.tcp"):
        outcomes = trio.run(main)
    res = outcomes["server"]
    assert outcomes[1].status == "declined" and outcomes[1].sent_rounds == []
    assert outcomes[2].status == outcomes[3].status == "done"
    assert res.dropouts == {"advertise_keys": [1]}
    assert res.violations == []  # declining is the client's right, not a violation
    refusals = [r for r in res.transcript.records if r.verdict.startswith("client-refused:")]
    assert [(r.client, r.channel, r.verdict) for r in refusals] == [(1, "message", "client-refused:policy:min-group")]
    assert decode_refusal(refusals[0].payload)[0] == "policy:min-group"
    assert res.included == (2, 3)
    assert [int(v) for v in res.result.total] == [int(v) for v in (inputs[2] + inputs[3]) % 2**16]
    assert any("client 1 declined the session [policy:min-group]" in r.getMessage() for r in caplog.records)
