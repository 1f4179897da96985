"""rfa_flower on Flower: strategies vs rfa, the secure workflow in Flower's simulation engine, the wire.

One simulation run (module fixture) serves the end-to-end tests: its server app
runs every strategy for one round, a secure geometric median with a dropout
through a grid that records every reply, and a session whose threshold the
clients refuse.  The clients' updates are fixed functions of their partition,
so each test recomputes the expected aggregate with ``rfa`` on its own.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import msgpack
import numpy as np
import pytest

pytest.importorskip("flwr", reason="Flower is not installed: pip install '.[flower]'")

from hypothesis import example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from flower_support import RecordingGrid, simulate  # noqa: E402
from rfa.aggregators import GeometricMedianRule, TwoPhaseRule, make_aggregator, parameters, registry  # noqa: E402

# Two-phase rules add a vote exchange to the round: tests/test_rfa_flower_vote.py runs them.
ONE_EXCHANGE = sorted(name for name in registry if not issubclass(registry[name], TwoPhaseRule))
from rfa.secure import secure_geometric_median, secure_mean  # noqa: E402
from secagg import AbortError, SecureAverageOracle, decode  # noqa: E402
from secagg.messages import AdvertiseKeys, EncryptedShares, MaskedInput, UnmaskingShares  # noqa: E402

N, D = 6, 8
COUNTS = np.array([30.0, 40.0, 50.0, 60.0, 70.0, 80.0])  # num-examples of partition 0..5
DROPPED = 3  # partition that crashes before sending its masked input in a chosen step of a scenario
GARBLER = 4  # partition that answers the setup of the session with threshold STRICT_T with garbage
DOUBLER = 2  # partition that answers a setup with its advertise_keys and a bogus encrypted_shares at once
STRICT_T = 5  # ceil(0.8 * 6): a stricter threshold than the clients' 2/3, which they accept
# Each scenario trains on its own updates (update_of(p) + offset): a node pins the survivor set of
# the first sum revealed over an update, so scenarios on the same update would constrain each other.
OFFSETS = {"secure": 0.0, "early": 0.01, "garbled": 0.03, "repeat": 0.04, "dropat": 0.05, "double": 0.06,
           "abort": 0.07}
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


def update_of(partition: int, offset: float = 0.0) -> np.ndarray:
    """Client updates: five around one point, partition 5 an outlier far outside the norm ball."""
    u = np.random.default_rng([7, partition]).normal(0.0, 0.3, D) + 1.0 + offset
    return u * 40.0 if partition == 5 else u


def initial() -> np.ndarray:
    return np.linspace(-1.0, 1.0, D)


def policy():
    from rfa.privacy import smallest_nu
    from rfa_flower.protocol import SecurePolicy

    nu = smallest_nu(0.7, 5.0, 30.0, 80.0, 4)  # t = 4 of the 6 clients
    return SecurePolicy(norm_bound=5.0, alpha_min=30.0, alpha_max=80.0, nu=nu, max_weight=0.7, max_clients=16)


# ---- the one simulation run ----------------------------------------------------------------------


def client_app():
    from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    from rfa_flower.client_mod import SecureRFAMod
    import msgpack

    from rfa_flower.protocol import RECORD, Setup, content, secagg_record
    from secagg.messages import EncryptedShares

    secure = SecureRFAMod(policy())

    def route(message, context, call_next):
        """The secure mod for the secure part of the run, plain FedAvg replies for the strategies."""
        record = secagg_record(message)
        config = message.content.config_records.get("config")
        if record is None and not (config and config.get("secure")):
            return call_next(message, context)
        return secure(message, context, call_next)

    def behave(message, context, call_next):
        """What the scenario's train config asks of this node: drop at the masked input of a given
        step (a setup, or a later call's call_open, starts one), answer a setup with two messages,
        or refuse every step of a given round."""
        record = secagg_record(message)
        p = int(context.node_config["partition-id"])
        config = message.content.config_records.get("config")
        if record is None:
            if config is not None and config.get("secure"):
                context.state["test"] = ConfigRecord({
                    "drop": int(config.get("drop-step", 0)) if p == DROPPED else 0,
                    "double": int(config.get("double", -1)) == p,
                    "refuse": int(config.get("refuse-round", 0)) == int(config.get("server-round", -1)),
                    "steps": 0,
                })
            return call_next(message, context)
        test = context.state.config_records.get("test")
        if test is None:
            return call_next(message, context)
        kinds = {msgpack.unpackb(d, strict_map_key=False)[3] for d in record["data"]} if record["op"] == "round" else set()
        if record["op"] == "setup" or "call_open" in kinds:
            test["steps"] = int(test["steps"]) + 1
            if record["op"] == "setup" and test["refuse"]:
                raise ConnectionError("test: this node takes no step in this round")
        context.state["test"] = test
        if test["drop"] and test["steps"] == test["drop"] and kinds & {"forwarded_shares", "call_open"}:
            raise ConnectionError("test dropout")  # asked for its masked input
        reply = call_next(message, context)
        if test["double"] and record["op"] == "setup" and not reply.has_error():
            setup = Setup.decode(record["setup"])
            others = [u for u in setup.params.client_ids if u != setup.client_id]
            bogus = EncryptedShares(setup.params.session_id, setup.client_id, 0, commitment=bytes(32),
                                    ciphertexts={u: bytes(100) for u in others})
            data = list(reply.content.config_records[RECORD]["data"]) + [bogus.encode()]
            return Message(content("reply", data=data), reply_to=message)
        return reply

    def garble(message, context, call_next):
        """Partition GARBLER answers the setup of the one session with t = 5 with bytes that are no message."""
        record = secagg_record(message)
        if record is not None and record["op"] == "setup" and int(context.node_config["partition-id"]) == GARBLER:
            if Setup.decode(record["setup"]).params.threshold == STRICT_T:
                return Message(content("reply", data=[b"\x93\x01garbage"]), reply_to=message)
        return call_next(message, context)

    app = ClientApp()

    @app.train(mods=[garble, behave, route])
    def train(message, context):
        w = message.content["arrays"].to_numpy_ndarrays()[0]
        p = int(context.node_config["partition-id"])
        config = message.content.config_records.get("config")
        offset = float(config.get("offset", 0.0)) if config else 0.0
        reply = RecordDict(
            {"arrays": ArrayRecord([w + update_of(p, offset)]),
             "metrics": MetricRecord({"num-examples": int(COUNTS[p])})}
        )
        return Message(reply, reply_to=message)

    return app


def train_all(grid, scenario: str, **flags) -> tuple[int, ...]:
    """One training round of every node on the scenario's updates; the nodes that are ready."""
    from flwr.app import ConfigRecord, Message, RecordDict

    from rfa_flower.arrays import to_record
    from rfa_flower.protocol import secagg_record

    config = ConfigRecord({"secure": True, "offset": OFFSETS[scenario], **flags})
    messages = [Message(RecordDict({"arrays": to_record(initial()), "config": config}), dst_node_id=n,
                        message_type="train") for n in sorted(grid.get_node_ids())]
    replies = grid.send_and_receive(messages, timeout=60)
    return tuple(sorted(r.metadata.src_node_id for r in replies
                        if not r.has_error() and secagg_record(r) is not None))


@dataclass
class Run:
    """What a test reads of one SecureRFA run: the final model, the rounds, Flower's Result."""

    arrays: object
    rounds: list
    result: object


def server_app(results: dict):
    from flwr.app import ConfigRecord
    from flwr.serverapp import ServerApp

    from rfa_flower.arrays import to_record
    from rfa_flower.protocol import SecurePolicy
    from rfa_flower.strategy import RobustFedAvg
    from rfa_flower.workflow import SecureAverage, SecureRFA

    app = ServerApp()

    def median_run(grid, scenario, rounds=1, steps=2, **flags):
        strategy = SecureRFA(GeometricMedianRule(rounds=steps, nu=policy().nu), policy=policy(),
                             min_available_nodes=N, min_train_nodes=N)
        config = ConfigRecord({"secure": True, "offset": OFFSETS[scenario], **flags})
        result = strategy.start(grid=grid, initial_arrays=to_record(initial()), num_rounds=rounds, timeout=60,
                                train_config=config)
        return Run(result.arrays, strategy.rounds, result)

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
            # The median with a dropout in its last step, and one with a dropout in its first Weiszfeld step.
            recording = RecordingGrid(grid)
            results["secure"] = median_run(recording, "secure", **{"drop-step": 3})
            results["recording"] = recording
            results["early"] = median_run(grid, "early", **{"drop-step": 2})
            lax = SecurePolicy(**{**policy().__dict__, "threshold": 0.34})  # below the clients' 2/3
            try:
                SecureAverage(grid, lax, timeout=60)(sorted(grid.get_node_ids()), "mean", np.zeros(D))
            except AbortError as exc:
                results["refused"] = exc
            train_all(grid, "garbled")
            strict = SecurePolicy(**{**policy().__dict__, "threshold": 0.8})
            results["garbled"] = SecureAverage(grid, strict, timeout=60)(sorted(grid.get_node_ids()), "mean", np.zeros(D))
            # A hostile server repeats the mean step without one node (issue 24, item 2).
            nodes = train_all(grid, "repeat")
            average = SecureAverage(RecordingGrid(grid), policy(), timeout=60)
            results["repeat-first"] = average(nodes, "mean", np.zeros(D))
            try:
                average(nodes[1:], "mean", np.zeros(D))
            except AbortError as exc:
                results["repeat-refused"] = exc
            results["repeat-grid"] = average.grid
            # A hostile server keeps every node in the next step's setup but stops talking to one
            # after it, and skips its own pin: the others must refuse to unmask.
            nodes = train_all(grid, "dropat")
            first = SecureAverage(grid, policy(), timeout=60)(nodes, "mean", np.zeros(D))
            silent = RecordingGrid(grid, silence=nodes[0])
            try:
                SecureAverage(silent, policy(), timeout=60)(nodes, "weiszfeld", first.output)
            except AbortError as exc:
                results["dropat-refused"] = exc
            results["dropat-grid"] = silent
            # Two messages in one reply (issue 24, item 5).
            nodes = train_all(grid, "double", double=DOUBLER)
            results["double"] = SecureAverage(grid, policy(), timeout=60)(nodes, "mean", np.zeros(D))
            # Every node refuses the steps of round 1: that round aborts, training goes on.
            results["abort"] = median_run(grid, "abort", rounds=2, steps=1, **{"refuse-round": 1})
        except Exception as exc:  # surfaced by the tests, not lost in Flower's log
            results["error"] = exc

    return app


@pytest.fixture(scope="module")
def run():
    results: dict = {}
    return simulate(server_app(results), client_app(), N, results)


def expected_points(offset: float = 0.0):
    return {p + 1: update_of(p, offset) for p in range(N)}, {p + 1: COUNTS[p] for p in range(N)}


def in_memory_oracle(threshold=None):
    p = policy()
    return SecureAverageOracle(p.threshold if threshold is None else threshold, value_bound=p.norm_bound,
                               weight_bound=p.privacy.beta_max, max_clients=p.max_clients)


# ---- strategies ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ONE_EXCHANGE)
def test_robust_fedavg_adds_the_rules_aggregate_of_the_updates_weighted_by_num_examples(run, name):
    rule = make_aggregator(name, **RULE_PARAMS.get(name, {}))
    updates = np.stack([update_of(p) for p in range(N)])
    np.testing.assert_allclose(run[name], initial() + rule(updates, COUNTS), rtol=0, atol=1e-12)


def test_robust_strategies_resist_the_outlier_that_moves_fedavg(run):
    honest = np.stack([update_of(p) for p in range(N - 1)]).mean(axis=0)
    moved = np.linalg.norm(run["mean"] - initial() - honest)
    assert moved > 5.0  # the mean follows partition 5
    assert np.linalg.norm(run["geometric_median"] - initial() - honest) < 0.25 * moved


# ---- the secure workflow ----------------------------------------------------------------------------


def test_secure_geometric_median_over_flower_equals_the_in_memory_secure_run_with_the_same_dropout(run):
    """A node drops in the last Weiszfeld step: that step would reveal a sum over another set, so
    it aborts and the median is the last completed iterate, as in memory (rfa.secure)."""
    history = run["secure"]
    (round_,) = history.rounds
    steps = round_.steps
    assert [s.kind for s in steps] == ["mean", "weiszfeld"]
    assert [len(s.included) for s in steps] == [N, N]  # the pinned set, both times
    assert round_.stopped is not None and "pinned" in round_.stopped
    points, weights = expected_points()
    p = policy()
    memory = secure_geometric_median(
        points, weights, rounds=2, nu=p.nu, max_weight=p.max_weight, norm_bound=p.norm_bound,
        alpha_range=(p.alpha_min, p.alpha_max), oracle=in_memory_oracle(),
        dropouts=[None, None, {"masked_input": [DROPPED + 1]}],
    )
    assert memory.stopped is not None and len(memory.rounds) == 2
    # Flower's Result: the model and the round's figures as records
    summary = run["secure"].result.train_metrics_clientapp[1]
    assert (summary["nodes-sampled"], summary["nodes-included"], summary["oracle-calls"], summary["stopped-early"]) == (
        N, N, 2, 1)
    assert summary["certified-weight"] == pytest.approx(max(s.certified_weight for s in steps))
    flower = history.arrays.to_numpy_ndarrays()[0] - initial()
    bound = sum(s.error_bound for s in steps)
    assert np.max(np.abs(flower - memory.median)) <= bound
    for ours, theirs in zip(steps, memory.rounds):
        assert ours.certified_weight == pytest.approx(theirs.certified_weight)
        assert np.max(np.abs(ours.output - theirs.output)) <= ours.error_bound


def test_a_dropout_between_the_mean_and_the_first_weiszfeld_step_reveals_no_second_sum(run):
    """Issue 24, item 2: a natural dropout after the mean step used to let the server subtract the
    mean step's sum from the next one (over one node fewer) and recover that node's update.  Now
    the next step aborts before anything is unmasked; the server holds one sum, and the model
    moves by the certified mean."""
    (round_,) = run["early"].rounds
    assert [s.kind for s in round_.steps] == ["mean"] and len(round_.steps[0].included) == N
    assert round_.stopped is not None and "pinned" in round_.stopped
    moved = run["early"].arrays.to_numpy_ndarrays()[0] - initial()
    np.testing.assert_allclose(moved, round_.steps[0].output, rtol=0, atol=1e-12)


def test_a_server_that_repeats_the_mean_step_without_one_node_gets_no_second_sum(run):
    """Every node refuses, before it sends anything, a step on an update whose first sum was
    revealed over another set of nodes (issue 24, item 2)."""
    first = run["repeat-first"]
    assert len(first.included) == N
    assert isinstance(run["repeat-refused"], AbortError) and run["repeat-refused"].count == 0
    grid = run["repeat-grid"]
    second = [r for r in grid.replies[-(N - 1):]]
    assert len(second) == N - 1 and all(r.has_error() for r in second)
    assert all("pinned" in r.error.reason for r in second)


def test_nodes_refuse_to_unmask_a_survivor_list_other_than_the_pinned_one(run):
    """The server keeps every node in the setup, stops talking to one after it, and does not
    check its own pin: the others refuse the unmask request (rule survivors-pinned)."""
    from rfa_flower.protocol import secagg_record

    assert isinstance(run["dropat-refused"], AbortError) and run["dropat-refused"].round == "unmasking"
    grid = run["dropat-grid"]
    last = grid.replies[-(N - 1):]  # the unmasking round trip, to the N - 1 nodes still talked to
    assert all(r.has_error() and "survivors-pinned" in r.error.reason for r in last)
    for reply in grid.replies:
        record = None if reply.has_error() else secagg_record(reply)
        for data in (record.get("data", []) if record is not None else []):
            assert decode_any(data).__class__.__name__ != "UnmaskingShares"


def decode_any(data: bytes):
    import msgpack

    from secagg.messages import KINDS

    return KINDS[msgpack.unpackb(data, raw=False, strict_map_key=False)[3]]


def test_a_reply_with_two_messages_is_a_violation_and_the_step_goes_on_without_that_node(run):
    """Issue 24, item 5: a node answered its setup with its advertise_keys and a bogus
    encrypted_shares; if it answered last, the round closed in between and the bogus shares were
    forwarded, and the honest nodes aborted.  Now one reply carries one message."""
    step = run["double"]
    assert len(step.violations) == 1 and "one-message" in step.violations[0][1]
    doubler = step.violations[0][0]
    assert doubler not in step.included and len(step.included) == N - 1
    points, weights = expected_points(OFFSETS["double"])
    p = policy()
    memory = secure_mean(points, weights, norm_bound=p.norm_bound, alpha_range=(p.alpha_min, p.alpha_max),
                         oracle=in_memory_oracle(), dropouts={"advertise_keys": [DOUBLER + 1]})
    assert np.max(np.abs(step.output - memory.median)) <= step.error_bound


def test_a_round_whose_aggregation_aborts_leaves_the_model_unchanged_and_training_goes_on(run):
    history = run["abort"]
    first, second = history.rounds
    assert first.steps == () and first.stopped is not None and first.stopped.startswith("aborted")
    assert [s.kind for s in second.steps] == ["mean", "weiszfeld"] and second.stopped is None
    moved = history.arrays.to_numpy_ndarrays()[0] - initial()
    np.testing.assert_allclose(moved, second.steps[-1].output, rtol=0, atol=1e-12)  # round 1 added nothing


def test_replies_to_the_secure_server_hold_only_secagg_client_messages(run):
    from rfa_flower.protocol import RECORD, Setup, secagg_record

    recording = run["recording"]
    params_of = {}
    for msg in recording.sent:
        record = secagg_record(msg)
        if record is not None and record["op"] == "setup":
            setup = Setup.decode(record["setup"])
            params_of[setup.params.session_id] = setup.params
    # One multi-call session: the mean, the first and the (aborted) second Weiszfeld step.
    assert len(params_of) == 1 and next(iter(params_of.values())).calls == 3
    kinds, calls = set(), set()
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
            calls.add(decoded[0].call)
    assert kinds == {AdvertiseKeys, EncryptedShares, MaskedInput, UnmaskingShares}
    assert calls == {0, 1, 2}  # the third call's masked inputs came, its unmasking did not


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
    points, weights = expected_points(OFFSETS["garbled"])
    p = policy()
    memory = secure_mean(points, weights, norm_bound=p.norm_bound, alpha_range=(p.alpha_min, p.alpha_max),
                         oracle=in_memory_oracle(0.8), dropouts={"advertise_keys": [GARBLER + 1]})
    assert np.max(np.abs(step.output - memory.median)) <= step.error_bound


# ---- the record layer, without a run ------------------------------------------------------------------


def test_setup_round_trips_and_rejects_a_broadcast_of_the_wrong_dimension():
    from secagg import PublicParams, SeededRandom

    from rfa_flower.protocol import Setup, SetupError

    params = PublicParams.create([1, 2, 3], threshold=2, modulus=2**64, dim=D + 1, rng=SeededRandom(1))
    setup = Setup(params, 2, "weiszfeld", np.arange(D, dtype=float), {1: 11, 2: 12, 3: 13})
    back = Setup.decode(setup.encode())
    assert (back.params.session_id, back.params.client_ids, back.params.threshold, back.params.dim) == (
        params.session_id, params.client_ids, params.threshold, params.dim
    )
    assert back.client_id == 2 and np.array_equal(back.v, setup.v) and back.nodes == {1: 11, 2: 12, 3: 13}
    with pytest.raises(SetupError, match="dimension"):
        Setup.decode(Setup(params, 2, "weiszfeld", np.arange(D - 1, dtype=float), setup.nodes).encode())
    for nodes in ({1: 11, 2: 12}, {1: 11, 2: 11, 3: 13}, {1: 11, 2: 12, 3: "13"}):
        with pytest.raises(SetupError, match="one distinct node"):
            Setup.decode(Setup(params, 2, "weiszfeld", setup.v, nodes).encode())
    # A mean step broadcasts nothing: no d zeros travel, and a v in a mean setup is refused.
    mean = Setup(params, 2, "mean", np.zeros(D), setup.nodes)
    assert len(setup.encode()) - len(mean.encode()) >= 8 * D
    assert np.array_equal(Setup.decode(mean.encode()).v, np.zeros(D))
    forged = msgpack.unpackb(mean.encode(), raw=False, strict_map_key=False)
    forged["v"] = np.zeros(D).tobytes()
    with pytest.raises(SetupError, match="broadcasts no v"):
        Setup.decode(msgpack.packb(forged, use_bin_type=True))


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=200))
@example(b"\x81\x80\x00")  # a map keyed by a map: msgpack raises TypeError (found by CI)
@example(b"\xdd\x00\x01\x00\x00")  # an array header longer than any policy allows
def test_any_bytes_as_setup_either_decode_or_raise_setup_error(data):
    from secagg import ClientPolicy, WeakParameters

    from rfa_flower.protocol import Setup, SetupError

    for policy in (None, ClientPolicy(max_clients=20)):
        try:
            Setup.decode(data, policy)
        except SetupError:
            pass
        except WeakParameters:
            assert policy is not None  # only a node's own policy refuses a session as too large


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


@pytest.mark.parametrize("name", sorted(name for name in registry if "f" in parameters(name)))
def test_robust_strategy_refuses_a_rule_with_f_unless_f_is_given(name):
    # Issue 25: robust_strategy("krum") silently tolerated f = 0 Byzantine clients.
    from rfa.errors import InvalidArgument
    from rfa_flower.strategy import robust_strategy

    with pytest.raises(InvalidArgument, match=rf'{name} needs f, the number of Byzantine clients it tolerates'):
        robust_strategy(name)
    assert robust_strategy(name, rule_params={"f": 1}).rule.f == 1  # type: ignore[attr-defined]
    assert robust_strategy("trimmed_mean").rule == make_aggregator("trimmed_mean")  # no f: the defaults stand


def test_workflow_refuses_a_plaintext_rule():
    from rfa.errors import PlaintextOnly
    from rfa_flower.workflow import SecureRFA

    with pytest.raises(PlaintextOnly):
        SecureRFA(make_aggregator("krum", f=1), policy=policy())
    with pytest.raises(PlaintextOnly):
        SecureRFA("krum", policy=policy(), rule_params={"f": 1})


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


def test_a_nodes_policy_comes_from_its_node_config_and_a_setup_below_it_is_refused_cheaply():
    from secagg import ClientPolicy, PublicParams, SeededRandom, WeakParameters

    from rfa_flower.protocol import Setup, SetupError, client_policy

    config = {"secagg-min-group": 5, "secagg-tolerated-corrupt": 0.1, "secagg-tolerated-dropout": 0.2,
              "secagg-min-threshold": 0.75, "secagg-max-clients": 50, "partition-id": 3}
    assert client_policy(config) == ClientPolicy(min_group=5, corrupt=0.1, dropout=0.2, min_threshold=0.75,
                                                 max_clients=50)
    assert client_policy({}) == ClientPolicy()
    with pytest.raises(SetupError, match="node config"):
        client_policy({"secagg-min-threshold": 2.0})
    params = PublicParams.create(range(1, 61), threshold=45, modulus=2**64, dim=D + 1, rng=SeededRandom(4))
    data = Setup(params, 1, "mean", np.zeros(D), {u: 100 + u for u in params.client_ids}).encode()
    with pytest.raises(WeakParameters) as info:  # 60 ids > 50: refused from msgpack's length header
        Setup.decode(data, client_policy(config))
    assert info.value.item == "max-clients"
    setup = Setup.decode(data, ClientPolicy())
    assert ClientPolicy(min_threshold=0.75).check(setup.params) >= 2
    with pytest.raises(WeakParameters) as info:
        ClientPolicy(min_threshold=0.75).check(
            PublicParams.create(range(1, 61), threshold=44, modulus=2**64, dim=D + 1, rng=SeededRandom(4)))
    assert info.value.item == "min-threshold"


# ---- `flwr run`: the shipped app with Flower's defaults, and the docs' own app (docs/guide/flower.md) -------------------


def flwr_run(app: Path, log: Path, *args: str, timeout: float = 600) -> tuple[int, str]:
    """``flwr run APP --stream ...`` in a ``Sandbox``: its own FLWR_HOME and SuperLink ports, and every
    process it starts (the local SuperLink, its SuperExec, Ray) stopped when it ends."""
    from rfa_flower.example.sandbox import Sandbox, marked

    with Sandbox() as box:
        code = box.flwr_run(app, *args, log=log, timeout=timeout)
        home = box.home
    assert not home.exists() and not marked(home)  # nothing left behind
    return code, log.read_text()


@pytest.mark.deployment
def test_the_shipped_app_runs_under_flwr_run_with_flowers_default_federation(tmp_path):
    """Issue 20: Flower's default local federation starts 2 simulated SuperNodes; the app sizes
    itself from them, logs one line per round and ends."""
    from rfa_flower.example import server_app  # noqa: F401 - the app must import

    app = Path(__file__).resolve().parents[1] / "rfa_flower" / "example" / "flower_app"
    code, out = flwr_run(app, tmp_path / "flwr.log")
    assert code == 0, out[-3000:]
    assert "split over 2 nodes" in out
    rounds = re.findall(r"\[ROUND (\d)/3\] 2 nodes sampled, 2 trained, 2 included in 4 secure averages", out)
    assert rounds == ["1", "2", "3"], out[-3000:]
    accuracy = [float(a) for a in re.findall(r"\[ROUND \d/3\].*loss [0-9.]+, accuracy ([0-9.]+)", out)]
    assert accuracy[-1] > accuracy[0]  # it learns
    assert "Traceback" not in out


@pytest.mark.deployment
def test_the_docs_own_flower_app_runs_under_flwr_run(tmp_path):
    readme = (Path(__file__).resolve().parents[1] / "docs" / "guide" / "flower.md").read_text()
    section = readme[readme.index("## Your own Flower app"):]
    section = section[:section.index("\n**Making the package available")]
    toml = re.search(r"```toml\n(.*?)```", section, re.S).group(1)
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    command = re.search(r"```bash\n(.*?)```", section, re.S).group(1).strip()
    app = tmp_path / "my-rfa-app"
    app.mkdir()
    (app / "pyproject.toml").write_text(toml)
    (app / "my_rfa_app.py").write_text(code)
    argv = shlex.split(command)
    assert argv[:3] == ["flwr", "run", "my-rfa-app"]
    code, out = flwr_run(app, tmp_path / "flwr.log", *argv[4:])  # argv[3] is --stream, which flwr_run adds
    assert code == 0, out[-3000:]
    assert re.findall(r"\[ROUND (\d)/5\] 5 nodes sampled, 5 trained, 5 included", out) == list("12345"), out[-3000:]
    distances = [float(d) for d in re.search(r"distance to the honest target per round: \[(.*?)\]", out).group(1).split(",")]
    print("docs own app, distance per round:", distances)
    assert len(distances) == 6 and distances[-1] < 0.2 and distances == sorted(distances, reverse=True)
