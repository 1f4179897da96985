"""Issue 20 over Flower: the two-phase vote (2PRASHB, ``cent2p``) and personalised RFA (Algorithm 4).

One simulation run (module fixture) serves every end-to-end test: its server app
runs ``RobustFedAvg`` with ``cent2p`` for two rounds through a grid that records
every reply, one more ``cent2p`` round in which one node submits a malformed
ballot within the bounds and another a ballot outside them, and ``SecureRFA``
(the secure geometric median) for two rounds of personalised training, then one
federated evaluation of the personalised models.  The nodes' updates, losses and
local training are fixed functions of their partition (and the server round), so
each test recomputes the expected result with ``rfa`` in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

pytest.importorskip("flwr", reason="Flower is not installed: pip install '.[flower]'")

from flower_support import RecordingGrid, simulate  # noqa: E402
from rfa.aggregators import GeometricMedianRule, make_aggregator  # noqa: E402
from rfa.models import LeastSquares, draw_batch, local_sgd  # noqa: E402
from rfa.secure import secure_geometric_median  # noqa: E402
from rfa.voting import INNER, OUTER, cast_ballots, elect, tally  # noqa: E402
from secagg import AbortError, SecureAverageOracle, decode  # noqa: E402
from secagg.messages import AdvertiseKeys, EncryptedShares, MaskedInput, UnmaskingShares  # noqa: E402

N, D = 6, 8
F = 2  # cent2p's f: with f = 1 every point is a best 1-point cluster and the tie would follow reply order
COUNTS = np.array([30.0, 40.0, 50.0, 60.0, 70.0, 80.0])  # num-examples of partition 0..5
ROWS = 20  # rows of each partition's local data
VOTE_BATCH = 32  # >= ROWS: each vote's "fresh batch" is all of the node's rows, so the in-memory ballots match
# Where each partition's data pulls the model (initial() + TARGET[p] in every coordinate): partitions
# 0 and 1 sit near Inner, 2 to 5 near Outer in the first round, so the first vote elects Outer 4 to 2.
TARGET = np.array([1.0, 1.0, 10.0, 10.0, 10.0, 10.0])
OFFSETS = {"vote": 0.0, "cheat": 0.02, "abstain": 0.03}  # each vote on its own candidates (a node pins each vote's tally)
CHEAT = 0  # an Inner voter whose tally input is (-1, +1): within the bounds, the most it can move
BIG = 2  # an Outer voter whose tally input is (0, 3): outside the bounds, its encoding refuses it
MALFORMED = {CHEAT: (-1.0, 1.0), BIG: (0.0, 3.0)}
ABSTAINER = 3  # an Outer voter whose evaluate function fails in one vote
MODEL = LeastSquares(D)
SGD = dict(steps=3, lr=0.02, batch_size=8)  # the personalised local passes


def update_of(partition: int, offset: float = 0.0) -> np.ndarray:
    """Client updates of the vote rounds: five around one point, partition 5 an outlier far away."""
    u = np.random.default_rng([7, partition]).normal(0.0, 0.3, D) + 1.0 + offset
    return u * 40.0 if partition == 5 else u


def initial() -> np.ndarray:
    return np.linspace(-1.0, 1.0, D)


def data_of(partition: int) -> tuple[np.ndarray, np.ndarray]:
    """The partition's local data: noiseless least squares around initial() + TARGET[partition]."""
    X = np.random.default_rng([11, partition]).normal(size=(ROWS, D))
    return X, X @ (initial() + TARGET[partition])


def personal_step(partition: int, server_round: int, w: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Algorithm 4 on one node, as rfa.training.train runs it: u on the residual of w, then w on that of u."""
    X, y = data_of(partition)
    u = local_sgd(MODEL, u, X, y, offset=w, rng=np.random.default_rng([partition, server_round, 0]), **SGD)
    trained = local_sgd(MODEL, w, X, y, offset=u, rng=np.random.default_rng([partition, server_round, 1]), **SGD)
    return u, trained


def policy():
    from rfa.privacy import smallest_nu
    from rfa_flower.protocol import SecurePolicy

    nu = smallest_nu(0.7, 5.0, 30.0, 80.0, 4)  # t = 4 of the 6 clients
    return SecurePolicy(norm_bound=5.0, alpha_min=30.0, alpha_max=80.0, nu=nu, max_weight=0.7, max_clients=16)


# ---- the one simulation run ----------------------------------------------------------------------


def client_app():
    from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    from rfa_flower import PersonalisedMod, SecureRFAMod, SecureVoteMod
    from rfa_flower.client_mod import BALLOT
    from rfa_flower.protocol import secagg_record

    secure, personal = SecureRFAMod(policy()), PersonalisedMod()

    def route(message, context, call_next):
        """Plain FedAvg replies for RobustFedAvg's (plaintext) prepare phase; the secure mod around the
        personalised mod for SecureRFA's rounds."""
        record = secagg_record(message)
        config = message.content.config_records.get("config")
        if record is None and not (config and config.get("personalised")):
            return call_next(message, context)
        return secure(message, context, lambda m, c: personal(m, c, call_next))

    def cheat(message, context, call_next):
        """In a round trained with cheat=True, partitions CHEAT and BIG replace their ballot by a
        malformed one when the tally's setup arrives (a corrupted node can put anything there)."""
        record = secagg_record(message)
        test = context.state.config_records.get("test")
        p = int(context.node_config["partition-id"])
        if record is not None and test is not None and p in MALFORMED:
            if record["op"] == "vote":  # this vote's tally only (a failed message keeps no state)
                context.state["test"] = ConfigRecord({**test, "cheat": False, "armed": bool(test["cheat"])})
            elif record["op"] == "setup" and test.get("armed"):
                context.state[BALLOT] = ArrayRecord([np.array(MALFORMED[p])])
        return call_next(message, context)

    app = ClientApp()

    @app.train(mods=[route])
    def train(message, context):
        p = int(context.node_config["partition-id"])
        config = message.content["config"]
        w = message.content["arrays"].to_numpy_ndarrays()[0]
        context.state["test"] = ConfigRecord({"cheat": bool(config.get("cheat", False)),
                                              "abstain": bool(config.get("abstain", False)) and p == ABSTAINER})
        reply = RecordDict({"metrics": MetricRecord({"num-examples": int(COUNTS[p])})})
        if config.get("personalised"):
            u = message.content["personal"].to_numpy_ndarrays()[0]
            u, trained = personal_step(p, int(config["server-round"]), w, u)
            reply["arrays"], reply["personal"] = ArrayRecord([trained]), ArrayRecord([u])
        else:
            reply["arrays"] = ArrayRecord([w + update_of(p, float(config.get("offset", 0.0)))])
        return Message(reply, reply_to=message)

    @app.evaluate(mods=[cheat, SecureVoteMod(), PersonalisedMod()])
    def evaluate(message, context):
        """A vote candidate's loss on a batch drawn from the vote's seed, or the personalised model's loss."""
        p = int(context.node_config["partition-id"])
        config = message.content["config"]
        w = message.content["arrays"].to_numpy_ndarrays()[0]
        X, y = data_of(p)
        if config.get("vote"):
            test = context.state.config_records.get("test")
            if test is not None and test["abstain"]:
                raise RuntimeError("test: this node cannot evaluate")
            loss = MODEL.loss(w, *draw_batch(X, y, VOTE_BATCH, np.random.default_rng(int(config["vote-seed"]))))
        else:
            loss = MODEL.loss(w + message.content["personal"].to_numpy_ndarrays()[0], X, y)
        return Message(RecordDict({"metrics": MetricRecord({"eval_loss": loss, "num-examples": ROWS})}),
                       reply_to=message)

    return app


@dataclass
class Run:
    result: object  # Flower's Result
    strategy: object
    grid: RecordingGrid


def server_app(results: dict):
    from flwr.app import ConfigRecord, Message, RecordDict
    from flwr.serverapp import ServerApp

    from rfa_flower import RobustFedAvg, SecureRFA, TallyPolicy
    from rfa_flower.arrays import to_record
    from rfa_flower.voting import SecureVote
    from rfa_flower.workflow import SecureAverage

    app = ServerApp()

    def vote_run(grid, scenario, rounds, **flags):
        recording = RecordingGrid(grid)
        strategy = RobustFedAvg(make_aggregator("cent2p", f=F), fraction_evaluate=0.0, min_available_nodes=N,
                                min_train_nodes=N)
        result = strategy.start(grid=recording, initial_arrays=to_record(initial()), num_rounds=rounds, timeout=60,
                                train_config=ConfigRecord({"offset": OFFSETS[scenario], **flags}))
        return Run(result, strategy, recording)

    @app.main()
    def main(grid, context):
        try:
            results["vote"] = vote_run(grid, "vote", 2)
            results["cheat"] = vote_run(grid, "cheat", 1, cheat=True)
            # A hostile server tallies one vote twice, the second time without one node.
            nodes = sorted(grid.get_node_ids())
            candidates = [to_record(initial() + 0.5 * k) for k in (1, 2)]
            results["repeat-first"] = SecureVote(grid, TallyPolicy(), timeout=60)(1, nodes, candidates)
            repeat = RecordingGrid(grid)
            try:
                SecureAverage(repeat, TallyPolicy(), timeout=60, message_type="evaluate")(nodes[1:], "tally", np.zeros(2))
            except AbortError as exc:
                results["repeat-refused"] = exc
            results["repeat-grid"] = repeat
            # A node whose evaluation fails abstains; a tally that names it anyway finds no ballot there.
            results["abstain"] = vote_run(grid, "abstain", 1, abstain=True)
            stale = RecordingGrid(grid)
            try:
                SecureAverage(stale, TallyPolicy(), timeout=60, message_type="evaluate")(nodes, "tally", np.zeros(2))
            except AbortError as exc:
                results["stale-refused"] = exc
            results["stale-grid"] = stale
            recording = RecordingGrid(grid)
            strategy = SecureRFA(GeometricMedianRule(rounds=2, nu=policy().nu), policy=policy(),
                                 min_available_nodes=N, min_train_nodes=N)
            result = strategy.start(grid=recording, initial_arrays=to_record(initial()), num_rounds=2, timeout=60,
                                    train_config=ConfigRecord({"personalised": True}))
            # Federated evaluation of the personalised models w + u_i, each on its node's data.
            config = ConfigRecord({"personalised": True})
            messages = [Message(RecordDict({"arrays": result.arrays, "config": config}), dst_node_id=n,
                                message_type="evaluate") for n in sorted(grid.get_node_ids())]
            results["evaluated"] = list(recording.send_and_receive(messages, timeout=60))
            results["personal"] = Run(result, strategy, recording)
        except Exception as exc:  # surfaced by the tests, not lost in Flower's log
            results["error"] = exc

    return app


@pytest.fixture(scope="module")
def run():
    results: dict = {}
    return simulate(server_app(results), client_app(), N, results)


def model_of(arrays) -> np.ndarray:
    return arrays.to_numpy_ndarrays()[0]


def expected_votes(scenario: str, rounds: int):
    """In memory: each round's candidates of the same updates, every node's ballot from the same
    losses (rfa.voting.cast_ballots on the same batches), the election; and the models."""
    rule = make_aggregator("cent2p", f=F)
    w = initial()
    out = []
    for r in range(1, rounds + 1):
        updates = np.stack([(w + update_of(p, OFFSETS[scenario])) - w for p in range(N)])  # as RobustFedAvg does
        candidates = rule.candidates(updates, COUNTS)
        proposals = np.stack([w + c for c in candidates])
        ballots = cast_ballots(MODEL, proposals, [data_of(p) for p in range(N)], np.zeros(N, dtype=bool),
                               batch_size=VOTE_BATCH, rng=np.random.default_rng(0))
        election = elect(*tally(ballots), round=r)
        out.append((w, proposals, ballots, election))
        w = w + candidates[election.winner]
    return out, w


# ---- (a) the vote elects what the in-memory computation elects ----------------------------------------


def test_a_cent2p_round_over_flower_elects_the_in_memory_candidate_and_yields_its_model(run):
    expected, final = expected_votes("vote", 2)
    votes = run["vote"].strategy.votes
    assert [v.election for v in votes] == [e for *_, e in expected]
    # The data make the test discriminate: Outer wins round 1 against two Inner votes, Inner round 2.
    assert [(e.inner_votes, e.outer_votes, e.winner) for *_, e in expected] == [(2, 4, OUTER), (6, 0, INNER)]
    assert all(v.election.abstained == 0 and len(v.tally.included) == N for v in votes)
    np.testing.assert_allclose(model_of(run["vote"].result.arrays), final, rtol=0, atol=1e-10)
    for r, vote in enumerate(votes, start=1):  # the counts are also in Flower's Result, one record per round
        metrics = run["vote"].result.train_metrics_clientapp[r]
        assert (metrics["vote-inner"], metrics["vote-outer"], metrics["vote-winner"]) == (
            vote.election.inner_votes, vote.election.outer_votes, vote.election.winner)


def test_the_candidates_sent_to_the_nodes_are_the_in_memory_candidate_models(run):
    from rfa_flower.protocol import CANDIDATES, secagg_record

    expected, _ = expected_votes("vote", 2)
    sent = [m for m in run["vote"].grid.sent if (r := secagg_record(m)) is not None and r["op"] == "vote"]
    assert len(sent) == 2 * N and all(m.metadata.message_type == "evaluate" for m in sent)
    for r, (_, proposals, _, _) in enumerate(expected):
        for message in sent[r * N:(r + 1) * N]:
            got = np.stack([model_of(message.content[name]) for name in CANDIDATES])
            np.testing.assert_allclose(got, proposals, rtol=0, atol=1e-10)


# ---- (b) the server never sees a ballot or a loss ---------------------------------------------------------


def test_no_vote_reply_holds_a_ballot_or_a_loss_only_ready_and_tally_secagg_messages(run):
    from rfa_flower.protocol import RECORD, Setup, TallyPolicy, secagg_record

    grid = run["vote"].grid
    params_of = {}
    for message in grid.sent:
        record = secagg_record(message)
        if record is not None and record["op"] == "setup":
            setup = Setup.decode(record["setup"])
            assert setup.kind == "tally" and message.metadata.message_type == "evaluate"
            params_of[setup.params.session_id] = setup.params
    assert len(params_of) == 2  # one tally per round
    expected, _ = expected_votes("vote", 2)
    losses = [MODEL.loss(c, *data_of(p)) for _, proposals, _, _ in expected for c in proposals for p in range(N)]
    ballots = [np.eye(2)[b] for _, _, round_ballots, _ in expected for b in round_ballots]
    encoded = [TallyPolicy().encoding.encode(b, 1.0).vector for b in ballots]
    evaluate_replies = [r for r in grid.replies if r.metadata.message_type == "evaluate"]
    assert len(evaluate_replies) == 2 * 5 * N  # per round: the vote, then the tally's setup and three rounds
    kinds, ops, wire = set(), [], b""
    for reply in evaluate_replies:
        assert not reply.has_error()
        content = reply.content
        assert not content.array_records and not content.metric_records  # no model, no loss, no ballot
        assert list(content.config_records) == [RECORD]
        record = content.config_records[RECORD]
        assert set(record.keys()) <= {"op", "data"}
        ops.append(record["op"])
        for data in record.get("data", []):
            decoded = [decode(data, params) for params in params_of.values() if _of_session(data, params)]
            assert len(decoded) == 1
            kinds.add(type(decoded[0]))
            wire += data
    assert ops.count("ready") == 2 * N and set(ops) == {"ready", "reply"}
    assert kinds == {AdvertiseKeys, EncryptedShares, MaskedInput, UnmaskingShares}
    for loss in losses:
        assert np.float64(loss).tobytes() not in wire
    for vector in encoded:
        assert vector.astype("<u8").tobytes() not in wire
    # The plaintext prepare phase is the only place a model travels (the spec's prepare phase).
    assert all(r.metadata.message_type == "train" for r in grid.replies if not r.has_error() and r.content.array_records)


def _of_session(data, params) -> bool:
    try:
        decode(data, params)
    except Exception:
        return False
    return True


# ---- (c) a corrupted voter -----------------------------------------------------------------------------------


def test_a_malformed_ballot_within_the_bounds_moves_the_margin_by_two_and_one_outside_is_refused(run):
    (vote,) = run["cheat"].strategy.votes
    nodes = vote.asked
    expected, _ = expected_votes("cheat", 1)
    (_, _, ballots, honest) = expected[0]
    assert (honest.inner_votes, honest.outer_votes) == (2, 4) and ballots[CHEAT] == INNER and ballots[BIG] == OUTER
    # BIG's own encoding refused its tally input before it sent anything: it counts as an abstainer.
    grid = run["cheat"].grid
    refused = [r for r in grid.replies if r.has_error()]
    assert len(refused) == 1 and "outside the public value bound" in refused[0].error.reason
    assert refused[0].metadata.src_node_id not in vote.tally.included and len(vote.tally.included) == N - 1
    assert vote.election.abstained == 1
    # The same inputs through the in-memory oracle with the tally's bounds give the same counts.
    inputs = {p + 1: np.array(MALFORMED[CHEAT]) if p == CHEAT else np.eye(2)[ballots[p]] for p in range(N) if p != BIG}
    oracle = SecureAverageOracle(2 / 3, value_bound=1.0, weight_bound=1.0, max_clients=64)
    memory = oracle.average(inputs, {u: 1.0 for u in inputs})
    counts = tuple(int(c) for c in np.rint(memory.value * memory.sum_weights))
    assert (vote.election.inner_votes, vote.election.outer_votes) == counts == (0, 4)
    # The margin (Outer minus Inner) of the other four voters is 3 - 1 = 2; the malformed ballot adds 2,
    # the most any input within the bounds can add, against 1 for a well-formed vote for Outer.
    others = [ballots[p] for p in range(N) if p not in (CHEAT, BIG)]
    margin_without = others.count(OUTER) - others.count(INNER)
    margin = vote.election.outer_votes - vote.election.inner_votes
    assert margin - margin_without == 2
    assert len(nodes) == N


def test_a_server_that_tallies_one_vote_twice_without_one_node_gets_no_second_count(run):
    """The ballot is pinned like an update (protocol_spec.md 15.3), per vote: two tallies of the
    same vote over sets that differ by one node would give that node's ballot away."""
    first = run["repeat-first"]
    assert first.tally is not None and len(first.tally.included) == N
    assert first.election.inner_votes + first.election.outer_votes == N
    assert isinstance(run["repeat-refused"], AbortError) and run["repeat-refused"].count == 0
    replies = run["repeat-grid"].replies
    assert len(replies) == N - 1 and all(r.has_error() and "pinned" in r.error.reason for r in replies)


def test_a_node_whose_evaluation_fails_abstains_and_keeps_no_old_ballot(run):
    (vote,) = run["abstain"].strategy.votes
    expected, _ = expected_votes("abstain", 1)
    ballots = expected[0][2]
    others = [ballots[p] for p in range(N) if p != ABSTAINER]
    assert (vote.election.inner_votes, vote.election.outer_votes, vote.election.abstained) == (
        others.count(INNER), others.count(OUTER), 1) == (2, 3, 1)
    failed = [r for r in run["abstain"].grid.replies if r.has_error()]
    assert len(failed) == 1 and failed[0].metadata.src_node_id not in vote.ready
    assert failed[0].error.reason == "this node abstains: RuntimeError"  # no loss in the reason
    # A tally that names the abstainer anyway: it has no ballot to put in (its previous one is gone),
    # and the voters refuse a second tally of their vote over another set of nodes.
    assert isinstance(run["stale-refused"], AbortError)
    reasons = {r.metadata.src_node_id: r.error.reason for r in run["stale-grid"].replies if r.has_error()}
    assert len(reasons) == N and "no ballot" in reasons[failed[0].metadata.src_node_id]
    assert sum("pinned" in reason for reason in reasons.values()) == N - 1


def test_a_node_refuses_a_ballot_outside_the_unit_bounds_and_the_policy_refuses_other_kinds():
    from secagg import OutOfBounds, PublicParams, SeededRandom

    from rfa_flower.protocol import SetupError, TallyPolicy

    encoding = TallyPolicy().encoding
    assert (encoding.value_bound, encoding.weight_bound) == (1.0, 1.0)
    for bad, weight in (((0.0, 3.0), 1.0), ((1.0, 0.0), 2.0), ((-1.5, 0.0), 1.0)):
        with pytest.raises(OutOfBounds):
            encoding.encode(np.array(bad), weight)
    params = PublicParams.create(range(1, 7), threshold=4, modulus=encoding.modulus, dim=3, rng=SeededRandom(3))
    assert TallyPolicy().check_step("tally", params, np.zeros(2), "client 1") == pytest.approx(1 / 4)
    with pytest.raises(SetupError, match="not a vote tally"):
        TallyPolicy().check_step("mean", params, np.zeros(2), "client 1")
    with pytest.raises(SetupError, match="broadcasts nothing"):
        TallyPolicy().check_step("tally", params, np.array([0.0, 1.0]), "client 1")
    low = PublicParams.create(range(1, 7), threshold=3, modulus=encoding.modulus, dim=3, rng=SeededRandom(3))
    with pytest.raises(SetupError, match="below the agreed"):
        TallyPolicy().check_step("tally", low, np.zeros(2), "client 1")
    # An update's policy refuses a tally step: a server cannot have an update tallied with weight 1.
    with pytest.raises(SetupError, match="not a step of the robust aggregation"):
        policy().check_step("tally", params, np.zeros(2), "client 1")


# ---- (d) personalised RFA ----------------------------------------------------------------------------


def expected_personal(run):
    """Each round recomputed from the shared model Flower started it with: the nodes' updates
    (Algorithm 4), the secure geometric median in memory, and the personal models u_i."""
    p = policy()
    w = initial()
    u = {q: np.zeros(D) for q in range(N)}
    rounds = []
    for r, record in enumerate(run["personal"].strategy.rounds, start=1):
        trained = {}
        for q in range(N):
            u[q], trained[q] = personal_step(q, r, w, u[q])
        points = {q + 1: trained[q] - w for q in range(N)}
        oracle = SecureAverageOracle(p.threshold, value_bound=p.norm_bound, weight_bound=p.privacy.beta_max,
                                     max_clients=p.max_clients)
        memory = secure_geometric_median(points, {q + 1: COUNTS[q] for q in range(N)}, rounds=2, nu=p.nu,
                                         max_weight=p.max_weight, norm_bound=p.norm_bound,
                                         alpha_range=(p.alpha_min, p.alpha_max), oracle=oracle)
        rounds.append((record, memory, {q: u[q].copy() for q in range(N)}))
        w = w + record.steps[-1].output  # the shared model Flower's next round starts from
    return rounds, w, u


def test_personalised_rfa_over_flower_aggregates_the_shared_part_as_in_memory(run):
    rounds, w, _ = expected_personal(run)
    assert len(rounds) == 2
    for record, memory, _ in rounds:
        assert [s.kind for s in record.steps] == ["mean", "weiszfeld", "weiszfeld"] and record.stopped is None
        assert len(record.trained) == N and all(len(s.included) == N for s in record.steps)
        assert np.max(np.abs(record.steps[-1].output - memory.median)) <= sum(s.error_bound for s in record.steps)
    np.testing.assert_array_equal(model_of(run["personal"].result.arrays), w)
    # Personalisation changes the shared updates: without u_i, round 2's would differ.
    record, memory, _ = rounds[1]
    w1 = initial() + rounds[0][0].steps[-1].output
    plain = {q + 1: local_sgd(MODEL, w1, *data_of(q), rng=np.random.default_rng([q, 2, 1]), **SGD) - w1
             for q in range(N)}
    assert max(np.max(np.abs(plain[q + 1] - (personal_step(q, 2, w1, rounds[0][2][q])[1] - w1)))
               for q in range(N)) > 1e-3


def test_the_personalised_models_stay_on_the_nodes_and_are_evaluated_there(run):
    from rfa_flower.protocol import RECORD

    rounds, w, u = expected_personal(run)
    # The evaluation ran on each node with its own u_i, kept across both rounds in its context state.
    evaluated = run["evaluated"]
    assert len(evaluated) == N and not any(r.has_error() for r in evaluated)
    losses = sorted(float(r.content["metrics"]["eval_loss"]) for r in evaluated)
    expected = sorted(MODEL.loss(w + u[q], *data_of(q)) for q in range(N))
    np.testing.assert_allclose(losses, expected, rtol=1e-12, atol=0)
    # The match means something: with the shared model alone every node's loss would differ.
    assert min(abs(MODEL.loss(w, *data_of(q)) - MODEL.loss(w + u[q], *data_of(q))) for q in range(N)) > 1e-2
    # No reply ever held u_i: the training replies are "ready" and secagg messages, the evaluation metrics.
    personal_bytes = [v.astype("<f8").tobytes()[:16] for _, _, us in rounds for v in us.values()]
    for reply in run["personal"].grid.replies:
        assert not reply.has_error() and not reply.content.array_records
        if reply.metadata.message_type == "train":
            assert list(reply.content.config_records) == [RECORD] and not reply.content.metric_records
            wire = b"".join(reply.content.config_records[RECORD].get("data", []))
            assert not any(needle in wire for needle in personal_bytes)
        else:
            assert set(reply.content.metric_records["metrics"].keys()) == {"eval_loss", "num-examples"}


def test_robust_fedavg_takes_a_two_phase_rule_and_the_vote_record_holds_both_candidates():
    """No more NeedsVote: the strategy runs the vote.  Unit check of the record the vote sends."""
    from flwr.app import ArrayRecord

    from rfa_flower import RobustFedAvg, TallyPolicy
    from rfa_flower.protocol import CANDIDATES, RECORD, SetupError
    from rfa_flower.voting import vote_content

    strategy = RobustFedAvg(make_aggregator("mean2p", f=1), vote_policy=TallyPolicy(threshold=0.75))
    assert strategy.vote_policy.threshold == 0.75 and strategy.votes == []
    content = vote_content([ArrayRecord([np.zeros(3)]), ArrayRecord([np.ones(3)])])
    assert content.config_records[RECORD]["op"] == "vote" and set(CANDIDATES) <= set(content.array_records)
    with pytest.raises(SetupError, match="exactly 2"):
        vote_content([ArrayRecord([np.zeros(3)])])
