"""rfa_flower on Flower: strategies vs rfa, the secure workflow in Flower's simulation engine, the wire.

One simulation run (module fixture) serves the end-to-end tests: its server app
runs every strategy for one round, a secure geometric median with a dropout
through a grid that records every reply, and a session whose threshold the
clients refuse.  The clients' updates are fixed functions of their partition,
so each test recomputes the expected aggregate with ``rfa`` on its own.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("flwr", reason="Flower is not installed: pip install '.[flower]'")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from rfa.aggregators import GeometricMedianRule, TwoPhaseRule, make_aggregator, registry  # noqa: E402

# Two-phase rules need a client vote (rfa.voting): RobustFedAvg refuses them.
ONE_EXCHANGE = sorted(name for name in registry if not issubclass(registry[name], TwoPhaseRule))
from rfa.secure import secure_geometric_median, secure_mean  # noqa: E402
from secagg import AbortError, SecureAverageOracle, decode  # noqa: E402
from secagg.messages import AdvertiseKeys, EncryptedShares, MaskedInput, UnmaskingShares  # noqa: E402

N, D = 6, 8
COUNTS = np.array([30.0, 40.0, 50.0, 60.0, 70.0, 80.0])  # num-examples of partition 0..5
DROPPED = 3  # partition that crashes before sending its masked input in the first Weiszfeld step
GARBLER = 4  # partition that answers the setup of the session with threshold STRICT_T with garbage
STRICT_T = 5  # ceil(0.8 * 6): a stricter threshold than the clients' 2/3, which they accept
RULE_PARAMS = {
    "trimmed_mean": {"beta": 0.2},
    # f = 2: with f = 1 every point is a best 1-point cluster (cost 0), and the tie goes to the
    # lowest index, so the result would depend on the order Flower's replies arrive in.
    "center_outer": {"f": 2},
    "mean_outer": {"f": 2},
    "krum": {"f": 1},
    "multi_krum": {"f": 1, "m": 3},
    "center_wo": {"f": 1},
    "mean_wo": {"f": 1},
}


def update_of(partition: int) -> np.ndarray:
    """Client updates: five around one point, partition 5 an outlier far outside the norm ball."""
    u = np.random.default_rng([7, partition]).normal(0.0, 0.3, D) + 1.0
    return u * 40.0 if partition == 5 else u


def initial() -> np.ndarray:
    return np.linspace(-1.0, 1.0, D)


def policy():
    from rfa.privacy import smallest_nu
    from rfa_flower.protocol import SecurePolicy

    nu = smallest_nu(0.7, 5.0, 30.0, 80.0, 4)  # t = 4 of the 6 clients
    return SecurePolicy(norm_bound=5.0, alpha_min=30.0, alpha_max=80.0, nu=nu, max_weight=0.7, max_clients=16)


# ---- the one simulation run ----------------------------------------------------------------------


class RecordingGrid:
    """Delegates to Flower's grid; keeps every message sent and every reply received."""

    def __init__(self, grid):
        self.grid = grid
        self.sent: list = []
        self.replies: list = []

    def get_node_ids(self):
        return self.grid.get_node_ids()

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        self.sent += messages
        replies = list(self.grid.send_and_receive(messages, timeout=timeout))
        self.replies += replies
        return replies


def client_app():
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    from rfa_flower.client_mod import SecureRFAMod
    from rfa_flower.protocol import secagg_record

    secure = SecureRFAMod(policy())

    def route(message, context, call_next):
        """The secure mod for the secure part of the run, plain FedAvg replies for the strategies."""
        record = secagg_record(message)
        config = message.content.config_records.get("config")
        if record is None and not (config and config.get("secure")):
            return call_next(message, context)
        return secure(message, context, call_next)

    def dropout(message, context, call_next):
        """Partition DROPPED dies when asked for its masked input (second round) in the second session."""
        record = secagg_record(message)
        if record is not None and int(context.node_config["partition-id"]) == DROPPED:
            seen = context.state.config_records.get("test-drop")
            sessions, rounds = (seen["sessions"], seen["rounds"]) if seen else (0, 0)
            if record["op"] == "setup":
                sessions, rounds = sessions + 1, 0
            else:
                rounds += 1
            from flwr.app import ConfigRecord

            context.state["test-drop"] = ConfigRecord({"sessions": sessions, "rounds": rounds})
            if sessions == 2 and rounds == 2:
                raise ConnectionError("test dropout")
        return call_next(message, context)

    def garble(message, context, call_next):
        """Partition GARBLER answers the setup of the one session with t = 5 with bytes that are no message."""
        record = secagg_record(message)
        if record is not None and record["op"] == "setup" and int(context.node_config["partition-id"]) == GARBLER:
            from rfa_flower.protocol import Setup, content

            if Setup.decode(record["setup"]).params.threshold == STRICT_T:
                return Message(content("reply", data=[b"\x93\x01garbage"]), reply_to=message)
        return call_next(message, context)

    app = ClientApp()

    @app.train(mods=[garble, dropout, route])
    def train(message, context):
        w = message.content["arrays"].to_numpy_ndarrays()[0]
        p = int(context.node_config["partition-id"])
        reply = RecordDict(
            {"arrays": ArrayRecord([w + update_of(p)]), "metrics": MetricRecord({"num-examples": int(COUNTS[p])})}
        )
        return Message(reply, reply_to=message)

    return app


def server_app(results: dict):
    from flwr.app import ConfigRecord
    from flwr.serverapp import ServerApp

    from rfa_flower.arrays import to_record
    from rfa_flower.protocol import SecurePolicy
    from rfa_flower.strategy import RobustFedAvg
    from rfa_flower.workflow import SecureAverage, SecureRFAWorkflow

    app = ServerApp()

    @app.main()
    def main(grid, context):
        try:
            results["nodes"] = {}
            for name in ONE_EXCHANGE:
                strategy = RobustFedAvg(
                    make_aggregator(name, **RULE_PARAMS.get(name, {})), fraction_evaluate=0.0, min_available_nodes=N,
                    min_train_nodes=N,  # FedAvg sizes its sample before it waits for the nodes
                )
                out = strategy.start(grid, to_record(initial()), num_rounds=1)
                results[name] = out.arrays.to_numpy_ndarrays()[0]
            recording = RecordingGrid(grid)
            workflow = SecureRFAWorkflow(policy(), GeometricMedianRule(rounds=2, nu=policy().nu), timeout=60)
            history = workflow.run(recording, to_record(initial()), 1, train_config=ConfigRecord({"secure": True}))
            results["secure"] = history
            results["recording"] = recording
            lax = SecurePolicy(**{**policy().__dict__, "threshold": 0.34})  # below the clients' 2/3
            try:
                SecureAverage(grid, lax, timeout=60)(sorted(grid.get_node_ids()), "mean", np.zeros(D))
            except AbortError as exc:
                results["refused"] = exc
            strict = SecurePolicy(**{**policy().__dict__, "threshold": 0.8})
            results["garbled"] = SecureAverage(grid, strict, timeout=60)(sorted(grid.get_node_ids()), "mean", np.zeros(D))
        except Exception as exc:  # surfaced by the tests, not lost in Flower's log
            results["error"] = exc

    return app


@pytest.fixture(scope="module")
def run():
    from flwr.simulation import run_simulation

    results: dict = {}
    run_simulation(server_app(results), client_app(), num_supernodes=N,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})
    if "error" in results:
        raise results["error"]
    return results


def expected_points():
    return {p + 1: update_of(p) for p in range(N)}, {p + 1: COUNTS[p] for p in range(N)}


# ---- strategies ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ONE_EXCHANGE)
def test_robust_fedavg_adds_the_rules_aggregate_of_the_updates_weighted_by_num_examples(run, name):
    rule = make_aggregator(name, **RULE_PARAMS.get(name, {}))
    updates = np.stack([update_of(p) for p in range(N)])
    np.testing.assert_allclose(run[name], initial() + rule(updates, COUNTS), rtol=0, atol=1e-12)


def test_robust_fedavg_refuses_a_two_phase_rule_that_needs_a_vote():
    from rfa.errors import NeedsVote
    from rfa_flower.strategy import RobustFedAvg

    with pytest.raises(NeedsVote, match="votes"):
        RobustFedAvg(make_aggregator("cent2p", f=1))


def test_robust_strategies_resist_the_outlier_that_moves_fedavg(run):
    honest = np.stack([update_of(p) for p in range(N - 1)]).mean(axis=0)
    moved = np.linalg.norm(run["mean"] - initial() - honest)
    assert moved > 5.0  # the mean follows partition 5
    assert np.linalg.norm(run["geometric_median"] - initial() - honest) < 0.25 * moved


# ---- the secure workflow ----------------------------------------------------------------------------


def test_secure_geometric_median_over_flower_equals_the_in_memory_secure_run_with_the_same_dropout(run):
    history = run["secure"]
    steps = history.rounds[0].steps
    assert [s.kind for s in steps] == ["mean", "weiszfeld", "weiszfeld"]
    sizes = [len(s.included) for s in steps]
    assert sizes == [N, N - 1, N]  # the dropout only in the first Weiszfeld step
    points, weights = expected_points()
    p = policy()
    oracle = SecureAverageOracle(p.threshold, value_bound=p.norm_bound, weight_bound=p.privacy.beta_max,
                                 max_clients=p.max_clients)
    memory = secure_geometric_median(
        points, weights, rounds=2, nu=p.nu, max_weight=p.max_weight, norm_bound=p.norm_bound,
        alpha_range=(p.alpha_min, p.alpha_max), oracle=oracle,
        dropouts=[None, {"masked_input": [DROPPED + 1]}, None],
    )
    flower = history.arrays.to_numpy_ndarrays()[0] - initial()
    bound = sum(s.error_bound for s in steps)
    assert np.max(np.abs(flower - memory.median)) <= bound
    for ours, theirs in zip(steps, memory.rounds):
        assert ours.certified_weight == pytest.approx(theirs.certified_weight)
        assert np.max(np.abs(ours.output - theirs.output)) <= ours.error_bound


def test_replies_to_the_secure_server_hold_only_secagg_client_messages(run):
    from rfa_flower.protocol import RECORD, Setup, secagg_record

    recording = run["recording"]
    params_of = {}
    for msg in recording.sent:
        record = secagg_record(msg)
        if record is not None and record["op"] == "setup":
            setup = Setup.decode(record["setup"])
            params_of[setup.params.session_id] = setup.params
    assert len(params_of) == 3
    kinds = set()
    for reply in recording.replies:
        if reply.has_error():
            continue
        content = reply.content
        assert not content.array_records and not content.metric_records  # no model, no num-examples
        assert list(content.config_records) == [RECORD]
        record = content.config_records[RECORD]
        assert set(record.keys()) <= {"op", "data"}
        for data in record.get("data", []):
            decoded = [decode(data, params) for params in params_of.values() if _of_session(data, params)]
            assert len(decoded) == 1
            kinds.add(type(decoded[0]))
    assert kinds == {AdvertiseKeys, EncryptedShares, MaskedInput, UnmaskingShares}


def _of_session(data, params) -> bool:
    try:
        decode(data, params)
    except Exception:
        return False
    return True


def test_no_plaintext_update_or_encoded_input_reaches_the_server(run):
    recording = run["recording"]
    wire = b"".join(d for r in recording.replies if not r.has_error()
                    for d in r.content.config_records[next(iter(r.content.config_records))].get("data", []))
    p = policy()
    for partition in range(N):
        u = update_of(partition)
        clipped = u * min(1.0, p.norm_bound / np.linalg.norm(u))
        encoded = p.encoding.encode(clipped, COUNTS[partition]).vector  # the mean step's secagg input
        for needle in (clipped.astype("<f8").tobytes()[:16], clipped.astype("<f4").tobytes()[:8],
                       encoded.astype("<u8").tobytes()[:16]):
            assert needle not in wire


def test_clients_refuse_a_threshold_below_their_policy_so_the_session_aborts(run):
    assert isinstance(run["refused"], AbortError)


def test_a_garbled_reply_is_named_and_left_out_and_the_others_still_get_their_mean(run):
    step = run["garbled"]
    assert len(step.included) == N - 1 == STRICT_T and len(step.violations) == 1
    assert step.violations[0][0] not in step.included
    points, weights = expected_points()
    p = policy()
    oracle = SecureAverageOracle(0.8, value_bound=p.norm_bound, weight_bound=p.privacy.beta_max,
                                 max_clients=p.max_clients)
    memory = secure_mean(points, weights, norm_bound=p.norm_bound, alpha_range=(p.alpha_min, p.alpha_max),
                         oracle=oracle, dropouts={"advertise_keys": [GARBLER + 1]})
    assert np.max(np.abs(step.output - memory.median)) <= step.error_bound


# ---- the record layer, without a run ------------------------------------------------------------------


def test_setup_round_trips_and_rejects_a_broadcast_of_the_wrong_dimension():
    from secagg import PublicParams, SeededRandom

    from rfa_flower.protocol import Setup, SetupError

    params = PublicParams.create([1, 2, 3], threshold=2, modulus=2**64, dim=D + 1, rng=SeededRandom(1))
    setup = Setup(params, 2, "weiszfeld", np.arange(D, dtype=float))
    back = Setup.decode(setup.encode())
    assert (back.params.session_id, back.params.client_ids, back.params.threshold, back.params.dim) == (
        params.session_id, params.client_ids, params.threshold, params.dim
    )
    assert back.client_id == 2 and np.array_equal(back.v, setup.v)
    with pytest.raises(SetupError, match="dimension"):
        Setup.decode(Setup(params, 2, "weiszfeld", np.arange(D - 1, dtype=float)).encode())


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_as_setup_either_decode_or_raise_setup_error(data):
    from rfa_flower.protocol import Setup, SetupError

    try:
        Setup.decode(data)
    except SetupError:
        pass


def test_policy_refuses_a_step_with_a_threshold_below_the_agreed_fraction():
    from secagg import PublicParams, SeededRandom

    from rfa_flower.protocol import SetupError

    params = PublicParams.create(range(1, 7), threshold=3, modulus=2**64, dim=D + 1, rng=SeededRandom(2))
    with pytest.raises(SetupError, match="below the agreed"):
        policy().check_step("mean", params, np.zeros(D), "client 1")


def test_reply_data_other_than_a_list_of_bytes_is_a_malformed_message():
    from flwr.app import ConfigRecord

    from rfa_flower.protocol import wire_items
    from secagg import MalformedMessage

    assert wire_items(ConfigRecord({"op": "reply", "data": [b"a", b"b"]})) == [b"a", b"b"]
    for bad in ([1, 2], "text", 3.0):
        with pytest.raises(MalformedMessage):
            wire_items(ConfigRecord({"op": "reply", "data": bad}))


def test_layout_flattens_and_rebuilds_a_multi_array_model():
    from flwr.app import ArrayRecord

    from rfa_flower.arrays import Layout, LayoutMismatch

    record = ArrayRecord([np.arange(6.0).reshape(2, 3), np.ones(4)])
    layout = Layout.of(record)
    flat = layout.flatten(record)
    assert flat.shape == (10,)
    rebuilt = layout.unflatten(flat).to_numpy_ndarrays()
    assert rebuilt[0].shape == (2, 3) and np.array_equal(rebuilt[0], np.arange(6.0).reshape(2, 3))
    with pytest.raises(LayoutMismatch):
        layout.flatten(ArrayRecord([np.ones(10)]))


def test_workflow_refuses_a_plaintext_rule():
    from rfa.errors import PlaintextOnly
    from rfa_flower.workflow import SecureRFAWorkflow

    with pytest.raises(PlaintextOnly):
        SecureRFAWorkflow(policy(), make_aggregator("krum", f=1))


def test_example_config_reads_flower_run_config_keys_and_refuses_unknown_ones():
    from rfa_flower.example.task import ExampleConfig

    cfg = ExampleConfig.from_run_config({"clients": 4, "rule": "one_step", "secure": False, "alpha-min": 3.0})
    assert (cfg.clients, cfg.rule, cfg.secure, cfg.alpha_min) == (4, "one_step", False, 3.0)
    with pytest.raises(ValueError, match="unknown run-config key"):
        ExampleConfig.from_run_config({"clientz": 4})


# ---- the real local deployment ------------------------------------------------------------------------


@pytest.mark.deployment
def test_example_on_a_local_superlink_and_supernodes_matches_the_in_memory_run(tmp_path):
    from rfa_flower.example.deploy import main

    assert main(["--clients", "2", "--rounds", "1", "--rule", "mean", "--out", str(tmp_path), "--timeout", "400"]) == 0
