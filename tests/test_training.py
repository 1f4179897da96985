"""Federated training (Algorithms 1 and 4) and the claims the simulations report, at quick scale."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from rfa.aggregators import (
    Cent2P,
    CoordinateMedian,
    GeometricMedianRule,
    Mean,
    OneStepRule,
    TwoPhaseRule,
    make_aggregator,
    registry,
)
from rfa.corruption import UPDATE_CORRUPTIONS
from rfa.data import FederatedDataset, digits
from rfa.errors import CertificateViolation, PlaintextOnly
from rfa.models import LeastSquares, LogisticRegression
from rfa.training import TrainingConfig, split_local_test, train

QUICK = dict(rounds=20, clients_per_round=10, local_steps=10, lr=0.5)


@pytest.fixture(scope="module")
def data():
    return digits(40, split="dirichlet", alpha=0.5, rng=np.random.default_rng(0))


@pytest.fixture(scope="module")
def model():
    return LogisticRegression(64, 10)


def final_accuracy(model, data, rule, **config) -> float:
    return train(model, data, rule, TrainingConfig(**{**QUICK, **config})).final.accuracy


def test_omniscient_corruption_collapses_fedavg_while_rfa_keeps_most_of_its_clean_accuracy(model, data):
    longer = dict(rounds=30)
    clean = final_accuracy(model, data, GeometricMedianRule(), **longer)
    fedavg = final_accuracy(model, data, Mean(), update_corruption="omniscient", rho=0.25, **longer)
    rfa = final_accuracy(model, data, GeometricMedianRule(), update_corruption="omniscient", rho=0.25, **longer)
    assert fedavg < 0.3
    assert rfa >= 0.85 * clean


def test_without_corruption_rfa_is_within_a_few_points_of_fedavg(model, data):
    for seed in (0, 1):
        fedavg = final_accuracy(model, data, Mean(), seed=seed)
        rfa = final_accuracy(model, data, GeometricMedianRule(), seed=seed)
        assert abs(fedavg - rfa) <= 0.05


def test_one_step_rfa_keeps_most_of_rfas_robustness_at_one_oracle_call_per_round(model, data):
    config = dict(update_corruption="omniscient", rho=0.25)
    rfa = train(model, data, GeometricMedianRule(), TrainingConfig(**QUICK, **config))
    one = train(model, data, OneStepRule(), TrainingConfig(**QUICK, **config))
    assert one.final.accuracy >= 0.9 * rfa.final.accuracy
    assert one.final.oracle_calls == QUICK["rounds"]
    assert rfa.final.oracle_calls == 4 * QUICK["rounds"]  # R = 3 steps from the secure weighted mean


def test_personalisation_helps_honest_clients_under_label_skew(model):
    skewed = digits(40, split="dirichlet", alpha=0.1, rng=np.random.default_rng(0))
    train_set, local = split_local_test(skewed, 0.3, np.random.default_rng(1))
    for rule in (Mean(), GeometricMedianRule()):
        shared = train(model, train_set, rule, TrainingConfig(**QUICK), local_test=local)
        personal = train(model, train_set, rule, TrainingConfig(**QUICK, personalised=True), local_test=local)
        assert personal.final.local_accuracy > shared.final.local_accuracy + 0.005
        assert personal.personal  # each selected client kept its own u_i


def test_secure_training_equals_plaintext_training(model, data):
    config = dict(QUICK, rounds=4, update_corruption="omniscient", rho=0.25)
    for rule in (Mean(), GeometricMedianRule(rounds=2), OneStepRule()):
        plain = train(model, data, rule, TrainingConfig(**config))
        secure = train(model, data, rule, TrainingConfig(**config, secure=True, norm_bound=1e3))
        # Same sampling, same local steps; only the oracle's quantization differs (its bound
        # grows with alpha_max / nu = 1e8 here, and errors carry over between rounds).
        assert np.allclose(plain.params, secure.params, atol=1e-4)
        assert secure.final.accuracy == pytest.approx(plain.final.accuracy, abs=0.01)
        assert secure.final.oracle_calls == plain.final.oracle_calls
        assert all(r.bytes_per_client > 0 for r in secure.history)
        assert all(r.max_effective_weight <= r.certified_weight + 1e-12 for r in secure.history)


def test_a_plaintext_rule_with_secure_true_is_refused_before_training(model, data):
    with pytest.raises(PlaintextOnly, match="coordinate_median"):
        train(model, data, CoordinateMedian(), TrainingConfig(**QUICK, secure=True))


def test_privacy_bound_is_enforced_in_training(model, data):
    # nu = 1e-6 cannot certify s = 0.9: the first Weiszfeld step is refused before it is sent.
    with pytest.raises(CertificateViolation):
        train(model, data, GeometricMedianRule(), TrainingConfig(**{**QUICK, "rounds": 2}, secure=True, max_weight=0.9))
    certified = train(
        model, data, GeometricMedianRule(),
        TrainingConfig(**{**QUICK, "rounds": 3}, secure=True, max_weight=0.9, nu="auto"),
    )
    assert all(r.certified_weight <= 0.9 and r.max_effective_weight <= r.certified_weight for r in certified.history)


def test_data_poisoning_touches_only_the_corrupted_clients(model, data):
    result = train(model, data, Mean(), TrainingConfig(**{**QUICK, "rounds": 1}, data_corruption="negate", rho=0.25))
    share = data.sample_counts[result.corrupted].sum() / data.sample_counts.sum()
    assert 0.2 < share <= 0.25


def test_training_over_loopback_tcp_matches_in_memory(model, data):
    config = dict(QUICK, rounds=2, clients_per_round=5, secure=True, norm_bound=1e3)
    memory = train(model, data, OneStepRule(), TrainingConfig(**config))
    tcp = train(model, data, OneStepRule(), TrainingConfig(**config, transport="tcp"))
    assert np.allclose(memory.params, tcp.params, atol=1e-9)


# --- RASHB (Yi et al. Algorithm 1) and 2PRASHB (Algorithm 3) ------------------------------------


def _tiny_regression() -> FederatedDataset:
    rng = np.random.default_rng(3)
    X = [rng.normal(size=(6, 2)) for _ in range(3)]
    y = [x @ np.array([1.0, -2.0]) + rng.normal(size=6) for x in X]
    return FederatedDataset(tuple(X), tuple(y), X[0], y[0])


def test_rashb_momentum_matches_a_hand_computation():
    data, model = _tiny_regression(), LeastSquares(2)
    beta, lr = 0.7, 0.1
    # Full batches (batch_size >= rows): every gradient is deterministic.
    config = TrainingConfig(rounds=3, clients_per_round=3, local_steps=1, lr=lr, batch_size=50, momentum=beta)
    result = train(model, data, Mean(), config)
    w, momenta = np.zeros(2), [np.zeros(2)] * 3
    for _ in range(3):
        momenta = [beta * m + (1 - beta) * model.grad(w, *data.client(i)) for i, m in enumerate(momenta)]
        counts = data.sample_counts
        w = w - lr * (counts @ np.array(momenta)) / counts.sum()
    np.testing.assert_allclose(result.params, w, rtol=1e-12)


def test_rashb_config_refuses_local_steps_and_a_momentum_outside_the_unit_interval():
    with pytest.raises(ValueError, match="local_steps=1"):
        TrainingConfig(momentum=0.9)
    with pytest.raises(ValueError, match="momentum"):
        TrainingConfig(momentum=1.0, local_steps=1)


RASHB = dict(rounds=3, clients_per_round=10, local_steps=1, lr=0.5, batch_size=8, momentum=0.9, rho=0.2)


@pytest.mark.parametrize("corruption", sorted(UPDATE_CORRUPTIONS) + ["label_flip"])
def test_rashb_runs_every_rule_under_every_corruption(model, data, corruption):
    kind = "data_corruption" if corruption == "label_flip" else "update_corruption"
    params = {"z": 1.0} if corruption in ("alie", "sv") else {}
    for name in sorted(registry):
        rule = make_aggregator(name, **TRAINING_RULE_PARAMS.get(name, {}))
        result = train(model, data, rule, TrainingConfig(**RASHB, **{kind: corruption}, corruption_params=params))
        assert np.all(np.isfinite(result.params)), name
        assert len(result.elections) == (3 if isinstance(rule, TwoPhaseRule) else 0)


TRAINING_RULE_PARAMS = {"krum": {"f": 2}, "multi_krum": {"f": 2, "m": 6}, "center_wo": {"f": 2}, "mean_wo": {"f": 2},
                        "center_outer": {"f": 2}, "mean_outer": {"f": 2}, "cent2p": {"f": 2}, "mean2p": {"f": 2},
                        "trimmed_mean": {"beta": 0.2}}


def test_two_phase_training_records_every_rounds_vote_and_applies_the_winner(model, data):
    config = TrainingConfig(**{**RASHB, "rounds": 4}, update_corruption="alie", corrupted_by="count")
    result = train(model, data, Cent2P(f=2), config)
    assert [e.round for e in result.elections] == [1, 2, 3, 4]
    for e in result.elections:
        assert e.inner_votes + e.outer_votes == 10 and e.abstained == 0
        assert e.winner == (1 if e.outer_votes > e.inner_votes else 0)
    # Abstaining corrupted clients: each round's abstentions are its sampled corrupted clients.
    abstain = train(model, data, Cent2P(f=2), replace(config, corrupted_vote="abstain"))
    assert sum(e.abstained for e in abstain.elections) > 0
    assert all(e.inner_votes + e.outer_votes + e.abstained == 10 for e in abstain.elections)


def test_two_phase_rules_are_refused_in_secure_mode(model, data):
    with pytest.raises(PlaintextOnly, match="cent2p"):
        train(model, data, Cent2P(f=2), TrainingConfig(**QUICK, secure=True))


def test_corrupted_by_count_picks_floor_rho_n_clients(model, data):
    result = train(model, data, Mean(), TrainingConfig(**{**QUICK, "rounds": 1}, rho=0.4, corrupted_by="count"))
    assert result.corrupted.sum() == 16  # floor(0.4 * 40)


def test_alie_without_z_survives_rounds_with_a_corrupted_majority(model, data):
    # rho = 0.45 of the weight and m = 5: some rounds sample 3 or more corrupted clients, where the
    # per-round z of "a little is enough" is undefined; the run fixes z from the expected count.
    config = TrainingConfig(rounds=12, clients_per_round=5, local_steps=2, lr=0.5, update_corruption="alie", rho=0.45)
    result = train(model, data, GeometricMedianRule(), config)
    assert len(result.history) == 12 and np.isfinite(result.final.test_loss)


def test_alie_with_a_corrupted_majority_expected_every_round_is_refused_before_training(model, data):
    config = TrainingConfig(rounds=2, clients_per_round=3, local_steps=2, update_corruption="alie", rho=0.9)
    with pytest.raises(ValueError, match="z explicitly"):
        train(model, data, GeometricMedianRule(), config)


def test_secure_one_step_with_auto_nu_uses_the_nu_certified_for_distance_c(model, data):
    from rfa.privacy import smallest_nu
    from secagg import SecureAverageOracle

    config = dict(QUICK, rounds=3)  # clean: no update reaches C, so nothing is clipped
    c, s = 5.0, 0.8
    t = SecureAverageOracle(2 / 3).threshold_for(QUICK["clients_per_round"])
    counts = data.sample_counts
    tight = smallest_nu(s, c, counts.min(), counts.max(), t, reach=c)
    secure = train(model, data, OneStepRule(), TrainingConfig(**config, secure=True, norm_bound=c, max_weight=s, nu="auto"))
    plain = train(model, data, OneStepRule(nu=tight), TrainingConfig(**config))
    assert np.allclose(secure.params, plain.params, atol=1e-6)
    loose = train(model, data, OneStepRule(nu=2 * tight), TrainingConfig(**config))  # the 2C certificate's nu
    assert not np.allclose(loose.params, plain.params, atol=1e-4)
    assert all(r.max_effective_weight <= r.certified_weight <= s for r in secure.history)


def test_warm_start_from_the_previous_aggregate_costs_no_call_and_matches_in_secure_mode(model, data):
    rule = GeometricMedianRule(rounds=1, init="previous")
    config = dict(QUICK, rounds=4, update_corruption="omniscient", rho=0.25)
    plain = train(model, data, rule, TrainingConfig(**config))
    secure = train(model, data, rule, TrainingConfig(**config, secure=True, norm_bound=1e3))
    assert plain.final.oracle_calls == secure.final.oracle_calls == 4
    assert np.allclose(plain.params, secure.params, atol=1e-4)
    # Not the same as starting from zero: round 2 on starts elsewhere.
    zero = train(model, data, GeometricMedianRule(rounds=1, init="zero"), TrainingConfig(**config))
    assert not np.allclose(plain.params, zero.params, atol=1e-3)


def test_replaying_the_previous_aggregate_pins_a_warm_started_median_to_it(model, data):
    rng = np.random.default_rng(3)
    updates, previous = rng.normal(size=(10, 20)), rng.normal(size=20)
    updates[:3] = previous  # 3 of 10 corrupted clients replay the previous aggregate
    warm = GeometricMedianRule(rounds=3, init="previous")(updates, previous=previous)
    cold = GeometricMedianRule(rounds=3)(updates)
    # On the start point their beta = alpha / nu swamps every honest beta: the step cannot leave it.
    assert np.linalg.norm(warm - previous) < 1e-4 * np.linalg.norm(previous)
    assert np.linalg.norm(cold - previous) > 0.3 * np.linalg.norm(previous)
    config = TrainingConfig(**QUICK, update_corruption="replay", rho=0.25)
    stale = train(model, data, GeometricMedianRule(rounds=3, init="previous"), config).final.accuracy
    fresh = train(model, data, GeometricMedianRule(rounds=3), config).final.accuracy
    assert stale < fresh - 0.1


def test_rashb_returns_the_average_of_the_iterates_theta_0_to_theta_T_minus_1():
    data = digits(5, rng=np.random.default_rng(0))
    model = LogisticRegression(64, 10)
    base = dict(clients_per_round=5, local_steps=1, lr=0.3, batch_size=3, momentum=0.9, seed=2)
    iterates = [model.init_params(np.random.default_rng(0))]
    for t in range(1, 4):  # theta_1 .. theta_3 from runs of 1, 2, 3 rounds (same seed: same trajectory)
        iterates.append(train(model, data, Mean(), TrainingConfig(rounds=t, **base)).params)
    result = train(model, data, Mean(), TrainingConfig(rounds=4, **base))
    assert np.allclose(result.average, np.mean(iterates, axis=0))
    assert not np.allclose(result.average, result.params)
