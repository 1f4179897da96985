"""Malicious-server mode over Flower: identity keys from a `secagg keygen` directory, one simulation run.

Six nodes (partitions 0..5) have an identity: a key directory of their own
(their client-<id>.key and every client-<id>.pub) and a PKI id, 11 + partition,
given through the node config that a test mod fills from the partition id
(``run_simulation`` sets only partition-id and num-partitions; the production
mod reads the node config).  A seventh node (partition ANON) has none.  The
directory also holds the key of COLLUDER, an identity no node plays: the
server holds it in the scenario where it colludes with that client.

One simulation (module fixture) serves every end-to-end test; its server app
runs each scenario on its own updates (update_of(p) + offset), since a node
pins the survivor set of the first sum revealed over an update.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr", reason="Flower is not installed: pip install '.[flower]'")

from flower_support import RecordingGrid, simulate  # noqa: E402
from rfa.aggregators import GeometricMedianRule  # noqa: E402
from rfa.secure import secure_geometric_median, secure_mean  # noqa: E402
from secagg import AbortError, SecureAverageOracle, decode  # noqa: E402
from secagg.keydir import generate_keys, load_private_key, load_public_keys  # noqa: E402
from secagg.messages import AdvertiseKeys, UnmaskingShares  # noqa: E402

N, D = 6, 8  # nodes with an identity
ANON = N  # partition of the node without one
NODES = N + 1
COUNTS = np.array([30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 55.0])
COLLUDER = 99  # a PKI id in every directory that no node plays
DISTRUSTER = 2  # in the "distrust" scenarios this node trusts another key for pki(STALE)
STALE = 4
VICTIM = 3  # the node whose place a colluding identity takes in the "swap" scenario
OFFSETS = {"median": 0.0, "distrust": 0.01, "strict": 0.02, "anon": 0.03, "ledger": 0.04, "downgrade": 0.05,
           "swap": 0.06}


def pki(partition: int) -> int:
    return 11 + partition


def update_of(partition: int, offset: float = 0.0) -> np.ndarray:
    """Five updates around one point, partition 5 an outlier far outside the norm ball."""
    u = np.random.default_rng([11, partition]).normal(0.0, 0.3, D) + 1.0 + offset
    return u * 40.0 if partition == 5 else u


def initial() -> np.ndarray:
    return np.linspace(-1.0, 1.0, D)


def policy(threshold: float = 2 / 3):
    from rfa.privacy import smallest_nu
    from rfa_flower.protocol import SecurePolicy

    nu = smallest_nu(0.7, 5.0, 30.0, 80.0, 4)  # t = 4 of the 6 identity nodes
    return SecurePolicy(norm_bound=5.0, alpha_min=30.0, alpha_max=80.0, nu=nu, max_weight=0.7, max_clients=16,
                        threshold=threshold)


@dataclass(frozen=True)
class Keys:
    root: Path

    @property
    def public(self) -> Path:  # the server's copy: .pub files only
        return self.root / "public"

    def node(self, partition: int, stale: bool = False) -> Path:
        return self.root / (f"node-{partition}-stale" if stale else f"node-{partition}")

    @property
    def colluder(self):
        return load_private_key(self.root / "all", COLLUDER)


def write_keys(root: Path) -> Keys:
    """`secagg keygen`'s layout: a directory per node (its own .key, every .pub), the server's .pub files,
    and for DISTRUSTER a second directory whose client-pki(STALE).pub is another key."""
    everyone = root / "all"
    generate_keys(everyone, [pki(p) for p in range(N)] + [COLLUDER])
    keys = Keys(root)
    keys.public.mkdir()
    for pub in everyone.glob("*.pub"):
        shutil.copy(pub, keys.public)
    for p in range(N):
        for stale in (False, True) if p == DISTRUSTER else (False,):
            directory = keys.node(p, stale)
            directory.mkdir()
            for pub in everyone.glob("*.pub"):
                shutil.copy(pub, directory)
            shutil.copy(everyone / f"client-{pki(p)}.key", directory)
    generate_keys(root / "other", [pki(STALE)])
    shutil.copy(root / "other" / f"client-{pki(STALE)}.pub", keys.node(DISTRUSTER, stale=True))
    return keys


# ---- the one simulation run ----------------------------------------------------------------------


class ColludingGrid(RecordingGrid):
    """A hostile server that colludes with client COLLUDER: messages to ``node`` never leave the
    server, which answers them itself as COLLUDER (with its key), with an input of zeros."""

    def __init__(self, grid, node: int, key):
        super().__init__(grid)
        self.node = node
        self.key = key
        self.client = None

    def send_and_receive(self, messages, *, timeout=None):
        from flwr.app import Message

        from rfa_flower.protocol import Setup, content, secagg_record
        from secagg import Client

        messages = list(messages)
        mine = [m for m in messages if m.metadata.dst_node_id == self.node]
        replies = super().send_and_receive([m for m in messages if m.metadata.dst_node_id != self.node],
                                           timeout=timeout)
        for m in mine:
            record = secagg_record(m)
            if record["op"] == "setup":
                setup = Setup.decode(record["setup"])
                value = policy().encoding.encode(np.zeros(D), policy().alpha_min).vector
                self.client = Client(setup.params, setup.client_id, value, identity_key=self.key)
                out = self.client.start()
            else:
                out = [x for data in record["data"] for x in self.client.receive(data)]
            replies.append(Message(content("reply", data=[x.encode() for x in out]), reply_to=m))
        return replies


def client_app(keys: Keys):
    from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    from rfa_flower.client_mod import MEMORY, SecureRFAMod
    from rfa_flower.protocol import IDENTITY_DIR, IDENTITY_ID, secagg_record

    secure = SecureRFAMod(policy())

    def identity(message, context, call_next):
        """The node config of a deployment, from the partition: the node's key directory and PKI id (the
        stale directory for DISTRUSTER when the train config of the round says so); none for ANON."""
        p = int(context.node_config["partition-id"])
        config = message.content.config_records.get("config") if secagg_record(message) is None else None
        if config is not None and config.get("secure"):
            context.state["test-identity"] = ConfigRecord({"stale": int(config.get("distrust", -1)) == p})
        if p != ANON:
            test = context.state.config_records.get("test-identity")
            context.node_config[IDENTITY_DIR] = str(keys.node(p, stale=bool(test and test["stale"])))
            context.node_config[IDENTITY_ID] = pki(p)
        return call_next(message, context)

    def forget(message, context, call_next):
        """A restarted SuperNode: its context state (session ids, pins) is lost, its key directory is not."""
        config = message.content.config_records.get("config") if secagg_record(message) is None else None
        if config is not None and config.get("forget"):
            if MEMORY in context.state.config_records:
                del context.state[MEMORY]
                return Message(RecordDict({"forgot": ConfigRecord({"forgot": True})}), reply_to=message)
            raise RuntimeError("test: this node had no memory to forget")
        return call_next(message, context)

    app = ClientApp()

    @app.train(mods=[identity, forget, secure])
    def train(message, context):
        w = message.content["arrays"].to_numpy_ndarrays()[0]
        p = int(context.node_config["partition-id"])
        offset = float(message.content["config"].get("offset", 0.0))
        reply = RecordDict({"arrays": ArrayRecord([w + update_of(p, offset)]),
                            "metrics": MetricRecord({"num-examples": int(COUNTS[p])})})
        return Message(reply, reply_to=message)

    return app


def train_all(grid, keys: Keys, scenario: str, **flags):
    """One training round of every node on the scenario's updates: node -> PKI id of the nodes with an
    identity (``announced_identities`` of the ready replies), and the node that announced none."""
    from flwr.app import ConfigRecord, Message, RecordDict

    from rfa_flower.arrays import to_record
    from rfa_flower.protocol import secagg_record
    from rfa_flower.workflow import announced_identities

    config = ConfigRecord({"secure": True, "offset": OFFSETS[scenario], **flags})
    messages = [Message(RecordDict({"arrays": to_record(initial()), "config": config}), dst_node_id=n,
                        message_type="train") for n in sorted(grid.get_node_ids())]
    replies = list(grid.send_and_receive(messages, timeout=60))
    assert not any(r.has_error() for r in replies), [r.error.reason for r in replies if r.has_error()]
    ids = announced_identities(replies, load_public_keys(keys.public))
    (anon,) = [r.metadata.src_node_id for r in replies if "identity" not in secagg_record(r)]
    return ids, anon


def server_app(results: dict, keys: Keys):
    from flwr.app import ConfigRecord, Message, RecordDict
    from flwr.serverapp import ServerApp

    from rfa_flower.arrays import to_record
    from rfa_flower.protocol import secagg_record
    from rfa_flower.workflow import SecureAverage, SecureRFA

    app = ServerApp()

    def attempt(name, call):
        try:
            results[name] = call()
        except AbortError as exc:
            results[name] = exc

    @app.main()
    def main(grid, context):
        try:
            # (1) The secure geometric median in malicious mode, the node without identity left out.
            recording = RecordingGrid(grid)
            strategy = SecureRFA(GeometricMedianRule(rounds=2, nu=policy().nu), policy=policy(), malicious=True,
                                 identity_keys=str(keys.public), min_available_nodes=NODES, min_train_nodes=NODES)
            result = strategy.start(grid=recording, initial_arrays=to_record(initial()), num_rounds=1, timeout=60,
                                    train_config=ConfigRecord({"secure": True, "offset": OFFSETS["median"]}))
            results["median"] = (result, strategy.rounds, recording)

            def average(grid, threshold=2 / 3):
                return SecureAverage(grid, policy(threshold), timeout=60, malicious=True, identity_keys=keys.public)

            # (2) A node whose directory holds another key for one id refuses; t = 4 of 6 goes on, t = 6 aborts.
            ids, _ = train_all(grid, keys, "distrust", distrust=DISTRUSTER)
            results["distrust-ids"] = ids
            results["distrust-grid"] = RecordingGrid(grid)
            attempt("distrust", lambda: average(results["distrust-grid"])(ids, "mean", np.zeros(D)))
            ids, _ = train_all(grid, keys, "strict", distrust=DISTRUSTER)
            results["strict-grid"] = RecordingGrid(grid)
            attempt("strict", lambda: average(results["strict-grid"], 1.0)(ids, "mean", np.zeros(D)))
            # (3) A server that gives the node without identity a PKI id: that node refuses, the rest go on.
            ids, anon = train_all(grid, keys, "anon")
            results["anon-node"] = anon
            results["anon-grid"] = RecordingGrid(grid)
            attempt("anon", lambda: average(results["anon-grid"])({**ids, anon: COLLUDER}, "mean", np.zeros(D)))
            # (4) A hostile server re-sends a finished session's setups to nodes that lost their context state.
            ids, _ = train_all(grid, keys, "ledger")
            first = RecordingGrid(grid)
            attempt("ledger-first", lambda: average(first)(ids, "mean", np.zeros(D)))
            results["ledger-forgot"] = list(grid.send_and_receive(
                [Message(RecordDict({"config": ConfigRecord({"forget": True})}), dst_node_id=n, message_type="train")
                 for n in ids], timeout=60))
            again = [Message(RecordDict({"rfa-secagg": ConfigRecord(dict(secagg_record(m)))}),
                             dst_node_id=m.metadata.dst_node_id, message_type="train")
                     for m in first.sent if secagg_record(m)["op"] == "setup"]
            results["ledger-setups"] = again
            results["ledger-replies"] = list(grid.send_and_receive(again, timeout=60))
            # (5) An honest-but-curious session: every node with an identity refuses it.
            ids, anon = train_all(grid, keys, "downgrade")
            results["downgrade-grid"] = RecordingGrid(grid)
            results["downgrade-anon"] = anon
            attempt("downgrade", lambda: SecureAverage(results["downgrade-grid"], policy(), timeout=60)(
                sorted([*ids, anon]), "mean", np.zeros(D)))
            # (6) After a first sum over the six, the server keeps the six Flower nodes but gives VICTIM's
            # place to COLLUDER, whose key it holds, and plays it itself.
            ids, _ = train_all(grid, keys, "swap")
            attempt("swap-first", lambda: average(grid)(ids, "mean", np.zeros(D)))
            victim = next(n for n, u in ids.items() if u == pki(VICTIM))
            results["swap-grid"] = ColludingGrid(grid, victim, keys.colluder)
            attempt("swap", lambda: average(results["swap-grid"])({**ids, victim: COLLUDER}, "mean", np.zeros(D)))
            results["swap-ids"] = ids
        except Exception as exc:  # surfaced by the tests, not lost in Flower's log
            results["error"] = exc

    return app


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return write_keys(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def run(keys):
    results: dict = {}
    return simulate(server_app(results, keys), client_app(keys), NODES, results)


def errors_by_node(grid) -> dict[int, str]:
    return {r.metadata.src_node_id: r.error.reason for r in grid.replies if r.has_error()}


def in_memory_oracle(threshold: float = 2 / 3) -> SecureAverageOracle:
    p = policy()
    return SecureAverageOracle(threshold, value_bound=p.norm_bound, weight_bound=p.privacy.beta_max,
                               max_clients=p.max_clients, malicious=True)


def expected_points(offset: float):
    return {pki(p): update_of(p, offset) for p in range(N)}, {pki(p): COUNTS[p] for p in range(N)}


# ---- (1) the secure geometric median in malicious mode --------------------------------------------


def test_malicious_mode_secure_geometric_median_over_flower_equals_the_in_memory_malicious_run(run, keys):
    result, rounds, _ = run["median"]
    (round_,) = rounds
    steps = round_.steps
    assert [s.kind for s in steps] == ["mean", "weiszfeld", "weiszfeld"] and round_.stopped is None
    assert len(round_.trained) == N and all(len(s.included) == N for s in steps)  # ANON announced no identity
    assert result.train_metrics_clientapp[1]["nodes-sampled"] == NODES
    points, weights = expected_points(OFFSETS["median"])
    p = policy()
    memory = secure_geometric_median(
        points, weights, rounds=2, nu=p.nu, max_weight=p.max_weight, norm_bound=p.norm_bound,
        alpha_range=(p.alpha_min, p.alpha_max), oracle=in_memory_oracle(),
    )
    assert memory.stopped is None and len(memory.rounds) == 3
    flower = result.arrays.to_numpy_ndarrays()[0] - initial()
    assert np.max(np.abs(flower - memory.median)) <= sum(s.error_bound for s in steps)
    for ours, theirs in zip(steps, memory.rounds):
        assert ours.certified_weight == pytest.approx(theirs.certified_weight)
        assert np.max(np.abs(ours.output - theirs.output)) <= ours.error_bound


def test_the_sessions_secagg_ids_are_the_nodes_pki_ids_with_the_directorys_keys_and_signed_keys(run, keys):
    from rfa_flower.protocol import Setup, secagg_record
    from secagg.keys import keys_payload, verify_signature

    _, rounds, recording = run["median"]
    directory = load_public_keys(keys.public)
    announced = {r.metadata.src_node_id: secagg_record(r).get("identity") for r in recording.replies
                 if not r.has_error() and secagg_record(r)["op"] == "ready"}
    assert len(announced) == NODES and sorted(u for u in announced.values() if u is not None) == [
        pki(p) for p in range(N)]
    setups = [(m.metadata.dst_node_id, Setup.decode(secagg_record(m)["setup"])) for m in recording.sent
              if secagg_record(m) is not None and secagg_record(m)["op"] == "setup"]
    assert len(setups) == N  # the median's three steps are the calls of one session: one setup per node
    params_of = {}
    for node, setup in setups:
        params = setup.params
        assert params.malicious and params.threshold == 4 and params.client_ids == tuple(pki(p) for p in range(N))
        assert dict(params.identity_keys) == {u: directory[u] for u in params.client_ids}
        assert setup.client_id == announced[node] and setup.nodes[setup.client_id] == node
        params_of[params.session_id] = params
    signed = 0
    for reply in recording.replies:
        record = None if reply.has_error() else secagg_record(reply)
        for data in (record.get("data", []) if record is not None else []):
            for params in params_of.values():
                try:
                    msg = decode(data, params)
                except Exception:
                    continue
                if isinstance(msg, AdvertiseKeys):
                    payload = keys_payload(params.session_id, msg.sender, msg.c_pk, msg.s_pk)
                    assert verify_signature(directory[msg.sender], msg.signature, payload)
                    signed += 1
    assert signed == N and {p.calls for p in params_of.values()} == {3}


# ---- (2) a node that trusts other keys -----------------------------------------------------------------


def test_a_node_whose_directory_disagrees_with_the_sessions_keys_refuses_and_the_threshold_decides(run):
    ids = run["distrust-ids"]
    distruster = next(n for n, u in ids.items() if u == pki(DISTRUSTER))
    errors = errors_by_node(run["distrust-grid"])
    assert list(errors) == [distruster]
    assert "identity-keys" in errors[distruster] and str(pki(STALE)) in errors[distruster]
    step = run["distrust"]  # t = 4 of 6: the five others go on
    assert set(step.included) == set(ids) - {distruster} and step.violations == ()
    points, weights = expected_points(OFFSETS["distrust"])
    p = policy()
    memory = secure_mean(points, weights, norm_bound=p.norm_bound, alpha_range=(p.alpha_min, p.alpha_max),
                         oracle=in_memory_oracle(), dropouts={"advertise_keys": [pki(DISTRUSTER)]})
    assert np.max(np.abs(step.output - memory.median)) <= step.error_bound
    strict = run["strict"]  # t = 6 of 6: the same refusal aborts the session, nothing revealed
    assert isinstance(strict, AbortError) and (strict.round, strict.count, strict.threshold) == (
        "advertise_keys", N - 1, N)
    errors = errors_by_node(run["strict-grid"])
    assert len(errors) == 1 and "identity-keys" in next(iter(errors.values()))


# ---- (3) no keys, no malicious mode -------------------------------------------------------------------


def test_a_server_without_identity_keys_is_refused_at_construction(keys, tmp_path):
    from rfa_flower.protocol import SetupError
    from rfa_flower.workflow import SecureAverage, SecureRFA

    for build in (lambda: SecureRFA("geometric_median", policy=policy(), malicious=True),
                  lambda: SecureAverage(None, policy(), malicious=True)):
        with pytest.raises(SetupError, match="malicious=True needs the nodes' identity public keys") as info:
            build()
        assert "\n" not in str(info.value)
    with pytest.raises(SetupError, match="identity_keys go with malicious=True"):
        SecureRFA("mean", policy=policy(), identity_keys=keys.public)
    with pytest.raises(SetupError, match="no client-<id>.pub"):
        SecureRFA("mean", policy=policy(), malicious=True, identity_keys=tmp_path)
    with pytest.raises(SetupError, match="prime order"):
        SecureRFA("mean", policy=policy(), malicious=True, identity_keys={1: bytes(32)})
    strategy = SecureRFA("mean", policy=policy(), malicious=True, identity_keys=load_public_keys(keys.public))
    assert strategy.malicious and set(strategy.identity_keys) == {*map(pki, range(N)), COLLUDER}


def test_malicious_mode_raises_the_threshold_above_half_the_nodes(keys):
    from rfa_flower.workflow import SecureAverage

    lax = policy(0.34)
    assert SecureAverage(None, lax).threshold_for(6) == 3
    assert SecureAverage(None, lax, malicious=True, identity_keys=keys.public).threshold_for(6) == 4
    assert SecureAverage(None, policy(), malicious=True, identity_keys=keys.public).threshold_for(7) == 5


def test_a_node_without_identity_config_refuses_a_malicious_setup(run):
    anon = run["anon-node"]
    errors = errors_by_node(run["anon-grid"])
    assert list(errors) == [anon]
    assert "SetupError" in errors[anon] and "needs this node's identity" in errors[anon]
    assert "secagg-identity-dir" in errors[anon] and "secagg-identity" in errors[anon]
    assert len(run["anon"].included) == N and anon not in run["anon"].included  # t = 5 of 7: the six go on


def test_a_nodes_identity_comes_from_its_node_config_and_a_broken_one_is_refused(keys, tmp_path):
    from rfa_flower.protocol import IDENTITY_DIR, IDENTITY_ID, SetupError, node_identity
    from secagg.keys import raw_public

    assert node_identity({"partition-id": 0}) is None
    me = node_identity({IDENTITY_DIR: str(keys.node(1)), IDENTITY_ID: pki(1)})
    assert me.client_id == pki(1) and raw_public(me.key) == me.trusted[pki(1)]
    assert set(me.trusted) == {*map(pki, range(N)), COLLUDER}
    assert me.ledger().path == keys.node(1) / f"client-{pki(1)}.sessions"
    assert node_identity({IDENTITY_DIR: str(keys.node(1)), IDENTITY_ID: str(pki(1))}).client_id == pki(1)
    for config, match in (({IDENTITY_DIR: str(keys.node(1))}, "needs secagg-identity"),
                          ({IDENTITY_ID: 3}, "needs secagg-identity-dir"),
                          ({IDENTITY_DIR: str(keys.node(1)), IDENTITY_ID: 0}, "positive integer"),
                          ({IDENTITY_DIR: str(keys.node(1)), IDENTITY_ID: pki(2)}, "cannot read"),  # not its key
                          ({IDENTITY_DIR: str(tmp_path), IDENTITY_ID: pki(1)}, "no client-<id>.pub")):
        with pytest.raises(SetupError, match=match):
            node_identity(config)


def test_a_nodes_decode_screens_the_mode_and_the_keys_before_rebuilding_anything(keys):
    from rfa_flower.protocol import Setup, SetupError
    from secagg import ClientPolicy, ProtocolViolation, PublicParams, SeededRandom

    directory = load_public_keys(keys.public)
    ids = [pki(p) for p in range(N)]
    bad = {**directory, pki(STALE): load_public_keys(keys.node(DISTRUSTER, stale=True))[pki(STALE)]}
    malicious = PublicParams.create(ids, threshold=4, modulus=2**64, dim=D + 1, malicious=True,
                                    identity_keys={u: directory[u] for u in ids}, rng=SeededRandom(3))
    honest = PublicParams.create(ids, threshold=4, modulus=2**64, dim=D + 1, rng=SeededRandom(3))
    nodes = {u: 1000 + u for u in ids}

    def data(params):
        return Setup(params, ids[0], "mean", np.zeros(D), nodes).encode()

    assert Setup.decode(data(malicious), ClientPolicy(), trusted_keys=directory).params.malicious
    with pytest.raises(ProtocolViolation, match="identity-keys"):
        Setup.decode(data(malicious), ClientPolicy(), trusted_keys=bad)
    with pytest.raises(ProtocolViolation, match="mode-downgrade"):
        Setup.decode(data(honest), ClientPolicy(), trusted_keys=directory)
    with pytest.raises(SetupError, match="needs this node's identity"):
        Setup.decode(data(malicious), ClientPolicy())
    assert not Setup.decode(data(honest), ClientPolicy()).params.malicious  # no identity: as before
    assert Setup.decode(data(malicious)).params.malicious  # the server's own decode screens nothing


# ---- (4) the ledger: one session id, once -------------------------------------------------------------


def test_a_node_takes_part_once_in_a_session_id_even_after_losing_its_context_state(run, keys):
    from rfa_flower.protocol import Setup, secagg_record

    assert len(run["ledger-first"].included) == N
    # The nodes really lost their context state (its session ids and pins), so only the ledger is left.
    assert all(not r.has_error() and "forgot" in r.content.config_records for r in run["ledger-forgot"])
    replies = run["ledger-replies"]
    assert len(replies) == N
    assert all(r.has_error() and "session-reused" in r.error.reason for r in replies), [
        r.error.reason if r.has_error() else "accepted" for r in replies]
    (sid,) = {Setup.decode(secagg_record(m)["setup"]).params.session_id for m in run["ledger-setups"]}
    for p in range(N):
        lines = (keys.node(p) / f"client-{pki(p)}.sessions").read_text().split()
        assert lines.count(sid.hex()) == 1


# ---- (5) no downgrade ---------------------------------------------------------------------------------


def test_a_node_with_an_identity_refuses_an_honest_but_curious_session(run):
    from rfa_flower.protocol import secagg_record

    exc = run["downgrade"]
    assert isinstance(exc, AbortError) and (exc.round, exc.count) == ("advertise_keys", 1)
    grid = run["downgrade-grid"]
    errors = errors_by_node(grid)
    anon = run["downgrade-anon"]
    assert len(errors) == N and anon not in errors
    assert all("mode-downgrade" in reason for reason in errors.values())
    (accepted,) = [r for r in grid.replies if not r.has_error()]  # the node without identity takes part
    assert accepted.metadata.src_node_id == anon and len(secagg_record(accepted)["data"]) == 1


# ---- the pin in malicious mode is over identities -----------------------------------------------------


def test_a_server_that_gives_a_pinned_nodes_place_to_a_colluding_identity_gets_no_second_sum(run):
    """After a first sum over the six, a second step over the same six Flower nodes in which COLLUDER
    (whose key the server holds) plays instead of VICTIM would give x_VICTIM - x_COLLUDER away.  In
    malicious mode the pin holds PKI ids, so every honest node refuses it before sending anything."""
    from rfa_flower.protocol import secagg_record

    assert len(run["swap-first"].included) == N
    exc = run["swap"]
    assert isinstance(exc, AbortError) and (exc.round, exc.count) == ("advertise_keys", 1)  # the colluder only
    grid = run["swap-grid"]
    victim = grid.node
    errors = errors_by_node(grid)
    assert set(errors) == set(run["swap-ids"]) - {victim}
    assert all("pinned" in reason for reason in errors.values())
    for reply in grid.replies:
        if reply.metadata.src_node_id != victim:
            assert reply.has_error()  # no honest node sent anything
    assert not any(isinstance(decode(d, p), UnmaskingShares)
                   for r in grid.replies if not r.has_error() for d in secagg_record(r)["data"]
                   for p in [grid.client.params])
