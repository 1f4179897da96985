"""The secure weighted-average oracle on top of secure aggregation."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from secagg import AbortError, EncodingOverflow, FixedPointEncoding, OutOfBounds, ParameterError, SecureAverageOracle, simulate


class Recorder:
    """A runner that records its calls and runs ``simulate``."""

    def __init__(self):
        self.calls = []

    def __call__(self, inputs, **kwargs):
        self.calls.append(kwargs)
        return simulate(inputs, **kwargs)


def problem(n=6, d=5, seed=0):
    rng = np.random.default_rng(seed)
    vectors = {u: rng.normal(size=d) for u in range(1, n + 1)}
    weights = {u: float(rng.uniform(0.1, 1.0)) for u in range(1, n + 1)}
    return vectors, weights


def numpy_average(vectors, weights, ids):
    return np.average(np.stack([vectors[u] for u in ids]), axis=0, weights=[weights[u] for u in ids])


def test_average_matches_numpy_within_a_tight_reported_bound():
    vectors, weights = problem()
    oracle = SecureAverageOracle(threshold=0.6, seed=1)
    r = oracle.average(vectors, weights)
    assert r.included == tuple(range(1, 7))
    assert np.all(np.abs(r.value - numpy_average(vectors, weights, r.included)) <= r.error_bound)
    assert 0 < r.error_bound < 1e-9
    assert r.sum_weights == pytest.approx(sum(weights.values()), rel=1e-9)
    assert r.clipped_values == 0 and r.clipped_weights == 0 and r.underflows == 0
    assert r.bytes_per_client > 0


def test_average_with_dropouts_is_over_the_included_clients_only():
    vectors, weights = problem(n=8, seed=3)
    oracle = SecureAverageOracle(threshold=0.6, seed=2)
    r = oracle.average(vectors, weights, dropouts={"share_keys": [2], "masked_input": [5], "unmasking": [7]})
    assert r.included == (1, 3, 4, 6, 7, 8)
    expected = numpy_average(vectors, weights, r.included)
    assert np.all(np.abs(r.value - expected) <= r.error_bound)
    assert not np.all(np.abs(numpy_average(vectors, weights, range(1, 9)) - expected) <= r.error_bound)
    assert r.sum_weights == pytest.approx(sum(weights[u] for u in r.included), rel=1e-9)


def test_malicious_mode_oracle_gives_the_same_average():
    vectors, weights = problem(n=5, seed=4)
    r = SecureAverageOracle(threshold=4, malicious=True, seed=3).average(vectors, weights)
    assert np.all(np.abs(r.value - numpy_average(vectors, weights, r.included)) <= r.error_bound)


def test_modulus_2_pow_32_oracle_works_with_a_coarser_bound():
    vectors, weights = problem(seed=5)
    oracle = SecureAverageOracle(threshold=0.6, modulus_bits=32, seed=4)
    r = oracle.average(vectors, weights)
    assert oracle.encoding.modulus_bits == 32
    assert np.all(np.abs(r.value - numpy_average(vectors, weights, r.included)) <= r.error_bound)
    assert 0 < r.error_bound < 0.1
    assert r.session.params.modulus == 2**32


def test_clipped_coordinates_and_weights_are_counted_and_clipped_when_asked():
    vectors = {1: np.array([5.0, -0.5, 20.0]), 2: np.array([-30.0, 1.0, 0.0]), 3: np.array([0.2, 0.3, 0.4])}
    weights = {1: 3.0, 2: 0.5, 3: 1.0}
    oracle = SecureAverageOracle(threshold=2, value_bound=10.0, weight_bound=2.0, seed=5)
    r = oracle.average(vectors, weights, clip=True)
    assert r.clipped_values == 2  # 20 and -30
    assert r.clipped_weights == 1  # weight 3 > 2
    assert r.clipped_inputs == 2  # clients 1 and 2
    clipped = {u: np.clip(v, -10, 10) for u, v in vectors.items()}
    expected = numpy_average(clipped, {u: min(w, 2.0) for u, w in weights.items()}, (1, 2, 3))
    assert np.all(np.abs(r.value - expected) <= r.quantization_error)
    # Against the inputs as given, nothing public bounds the distortion, and the result says so.
    assert r.error_bound == math.inf
    assert np.max(np.abs(r.value - numpy_average(vectors, weights, (1, 2, 3)))) > 1.0


def test_the_issue_example_is_refused_by_default_not_silently_clipped():
    runner = Recorder()
    oracle = SecureAverageOracle(threshold=2, runner=runner)
    with pytest.raises(OutOfBounds) as refused:
        oracle.average({1: np.array([0.0, 0.0]), 2: np.array([1.0, 1.0])}, {1: 1.0, 2: 3.0})
    err = refused.value
    assert (err.client, err.quantity, err.bound, err.value) == (2, "weight", 1.0, 3.0)
    assert "client 2" in str(err) and "3.0" in str(err) and "1.0" in str(err)
    assert runner.calls == [] and oracle.calls == 0  # refused before any message


def test_a_value_outside_the_value_bound_is_refused_naming_the_coordinate():
    runner = Recorder()
    oracle = SecureAverageOracle(threshold=2, value_bound=10.0, runner=runner)
    vectors = {1: np.array([1.0, 2.0]), 2: np.array([0.5, -10.5]), 3: np.array([0.0, 0.0])}
    with pytest.raises(OutOfBounds) as refused:
        oracle.average(vectors, {1: 1.0, 2: 1.0, 3: 1.0})
    assert (refused.value.client, refused.value.quantity, refused.value.index) == (2, "value", 1)
    assert (refused.value.bound, refused.value.value) == (10.0, -10.5)
    assert runner.calls == []
    # Exactly at the bound is inside it.
    r = oracle.average({**vectors, 2: np.array([0.5, -10.0])}, {1: 1.0, 2: 1.0, 3: 1.0})
    assert r.clipped_inputs == 0 and r.error_bound < 1e-9


def test_a_refusing_client_drops_out_and_the_others_are_unaffected():
    vectors, weights = problem(n=6, d=3, seed=11)
    weights[4] = 5.0  # above the weight bound 1
    r = SecureAverageOracle(threshold=4, seed=2).average(vectors, weights, on_refusal="dropout")
    assert r.included == (1, 2, 3, 5, 6)
    assert set(r.refused) == {4} and r.refused[4].quantity == "weight"
    assert np.all(np.abs(r.value - numpy_average(vectors, weights, r.included)) <= r.error_bound)
    # It never sent a message: the server lists it among the advertise_keys dropouts.
    assert r.session.counts["advertise_keys"] == 5
    # With dropouts of the caller's own, both stay out; with too few left, the session aborts.
    r = SecureAverageOracle(threshold=4, seed=2).average(vectors, weights, {"advertise_keys": [1]}, on_refusal="dropout")
    assert r.included == (2, 3, 5, 6) and set(r.refused) == {4}
    assert np.all(np.abs(r.value - numpy_average(vectors, weights, r.included)) <= r.error_bound)
    with pytest.raises(AbortError):
        SecureAverageOracle(threshold=4).average(vectors, {**weights, 1: 2.0, 2: 2.0}, on_refusal="dropout")


def test_clipping_in_bounds_inputs_changes_nothing():
    vectors, weights = problem(n=5, d=4, seed=12)
    plain = SecureAverageOracle(threshold=3, seed=4).average(vectors, weights)
    clipped = SecureAverageOracle(threshold=3, seed=4).average(vectors, weights, clip=True)
    assert np.array_equal(plain.value, clipped.value)
    assert plain.error_bound == clipped.error_bound == clipped.quantization_error
    assert clipped.clipped_inputs == 0


def test_sample_counts_normalised_by_a_public_maximum_give_the_weighted_average():
    vectors, _ = problem(n=4, d=3, seed=13)
    counts = {1: 120, 2: 30, 3: 600, 4: 5}
    oracle = SecureAverageOracle(threshold=3, weight_bound=1000, seed=3)  # no client holds more than 1000 samples
    r = oracle.average(vectors, counts)
    assert np.all(np.abs(r.value - numpy_average(vectors, counts, r.included)) <= r.error_bound)
    assert r.sum_weights == pytest.approx(sum(counts.values()))
    with pytest.raises(OutOfBounds, match="client 3"):
        oracle.average(vectors, {**counts, 3: 1001})


def test_on_refusal_must_be_a_known_mode():
    vectors, weights = problem(n=3, d=2)
    with pytest.raises(ParameterError, match="on_refusal"):
        SecureAverageOracle(threshold=2).average(vectors, weights, on_refusal="ignore")


def test_weights_that_encode_to_zero_are_counted_as_underflows():
    vectors = {u: np.array([float(u)]) for u in range(1, 5)}
    weights = {1: 1.0, 2: 1.0, 3: 1e-300, 4: 1.0}
    r = SecureAverageOracle(threshold=3, seed=6).average(vectors, weights)
    assert r.underflows == 1
    assert abs(r.value[0] - (1 + 2 + 4) / 3) <= r.error_bound


def test_calls_are_counted_and_each_call_is_a_fresh_session():
    vectors, weights = problem(n=4, d=2, seed=7)
    runner = Recorder()
    oracle = SecureAverageOracle(threshold=0.6, seed=9, runner=runner)
    assert oracle.calls == 0
    sessions = [oracle.average(vectors, weights).session.params.session_id for _ in range(3)]
    assert oracle.calls == 3 == len(runner.calls)
    assert len(set(sessions)) == 3
    assert all(c["threshold"] == math.ceil(0.6 * 4) and c["modulus"] == 2**64 for c in runner.calls)


def test_integer_threshold_is_used_as_is():
    vectors, weights = problem(n=5, d=2, seed=8)
    runner = Recorder()
    SecureAverageOracle(threshold=4, seed=1, runner=runner).average(vectors, weights)
    assert runner.calls[0]["threshold"] == 4


def test_an_encoding_that_could_overflow_is_refused_before_any_message():
    runner = Recorder()
    with pytest.raises(EncodingOverflow):
        SecureAverageOracle(threshold=2, frac_bits=14, modulus_bits=16, max_clients=4, runner=runner)
    with pytest.raises(EncodingOverflow):
        SecureAverageOracle(threshold=2, modulus_bits=8, max_clients=1000, runner=runner)
    assert runner.calls == []


def test_average_refuses_an_overflowing_encoding_without_calling_the_runner():
    vectors, weights = problem(n=4, d=2)
    runner = Recorder()
    oracle = SecureAverageOracle(threshold=2, runner=runner)
    oracle.encoding = FixedPointEncoding(frac_bits=14, modulus_bits=16)  # holds at most one input
    with pytest.raises(EncodingOverflow):
        oracle.average(vectors, weights)
    assert runner.calls == []


def test_more_clients_than_max_clients_are_refused():
    vectors, weights = problem(n=5, d=2)
    runner = Recorder()
    oracle = SecureAverageOracle(threshold=2, max_clients=4, runner=runner)
    with pytest.raises(ParameterError):
        oracle.average(vectors, weights)
    assert runner.calls == []


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf, -math.inf])
def test_invalid_weights_are_refused(bad):
    vectors, weights = problem(n=4, d=2)
    runner = Recorder()
    oracle = SecureAverageOracle(threshold=2, runner=runner)
    with pytest.raises(ParameterError):
        oracle.average(vectors, {**weights, 2: bad})
    assert runner.calls == []


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_vectors_are_refused(bad):
    vectors, weights = problem(n=4, d=3)
    runner = Recorder()
    oracle = SecureAverageOracle(threshold=2, runner=runner)
    v = vectors[3].copy()
    v[1] = bad
    with pytest.raises(ParameterError):
        oracle.average({**vectors, 3: v}, weights)
    assert runner.calls == []


def test_mismatched_or_ragged_inputs_are_refused():
    vectors, weights = problem(n=4, d=3)
    oracle = SecureAverageOracle(threshold=2)
    with pytest.raises(ParameterError):
        oracle.average(vectors, {u: w for u, w in weights.items() if u != 4})
    with pytest.raises(ParameterError):
        oracle.average({**vectors, 2: np.zeros(4)}, weights)
    with pytest.raises(ParameterError):
        oracle.average({**vectors, 2: np.zeros((3, 1))}, weights)


@pytest.mark.parametrize("threshold", [0, -1, 1.0, 1.5, 0.0, True, "3"])
def test_invalid_oracle_threshold_is_refused(threshold):
    with pytest.raises(ParameterError):
        SecureAverageOracle(threshold=threshold)


def test_error_bound_holds_for_values_near_the_value_bound():
    # Regression: with the bound n*B/(S-n), which ignored float64 rounding, this case exceeded it.
    a = float.fromhex("-0x1.a433c112a8c94p+9")  # about -840.4
    b = float.fromhex("-0x1.bfef8651dcda4p+9")  # about -895.9
    wa = float.fromhex("0x1.584a1760790dbp-1")
    wb = float.fromhex("0x1.b93384b181147p-1")
    r = SecureAverageOracle(threshold=2, seed=1).average({1: np.array([a]), 2: np.array([b])}, {1: wa, 2: wb})
    exact = (Fraction(wa) * Fraction(a) + Fraction(wb) * Fraction(b)) / (Fraction(wa) + Fraction(wb))
    assert abs(Fraction(float(r.value[0])) - exact) <= Fraction(r.error_bound)


def test_modulus_2_pow_63_oracle_works():
    vectors, weights = problem(n=4, d=2)
    r = SecureAverageOracle(threshold=2, modulus_bits=63, max_clients=8, seed=1).average(vectors, weights)
    assert np.all(np.abs(r.value - numpy_average(vectors, weights, r.included)) <= r.error_bound)


def test_sparse_graph_oracle_averages_exactly_as_the_complete_graph_does():
    rng = np.random.default_rng(3)
    vectors = {u: rng.normal(size=4) for u in range(1, 41)}
    weights = {u: float(rng.uniform(0.1, 1.0)) for u in vectors}
    drops = {"masked_input": [5, 17]}
    sparse = SecureAverageOracle(None, graph="sparse", tolerated_dropout=0.1, tolerated_corrupt=0.05, seed=1)
    full = SecureAverageOracle(21, seed=1)
    a, b = sparse.average(vectors, weights, drops), full.average(vectors, weights, drops)
    assert a.session.params.sparse and a.included == b.included == tuple(u for u in vectors if u not in (5, 17))
    assert np.array_equal(a.value, b.value)
    assert a.bytes_per_client < b.bytes_per_client


def test_a_session_over_a_one_call_runner_keeps_the_pin_itself():
    # OracleSession with a custom runner (spec 16.5): one session per call, the pin checked by the session.
    from secagg import SurvivorsChanged
    from secagg.simulation import simulate as run_one

    runs = []

    def runner(*args, **kwargs):
        runs.append(1)
        return run_one(*args, **kwargs)

    w = {1: np.array([1.0, -2.0]), 2: np.array([3.0, 0.5]), 3: np.array([0.0, 4.0])}
    ones = {u: 1.0 for u in w}
    oracle = SecureAverageOracle(threshold=2, runner=runner)
    session = oracle.session(3)
    first = session.average(w, ones)
    assert np.allclose(first.value, (w[1] + w[2] + w[3]) / 3, atol=first.error_bound)
    with pytest.raises(SurvivorsChanged):  # a later call naming other clients is refused before it runs
        session.average({1: w[1], 2: w[2]}, {1: 1.0, 2: 1.0})
    assert len(runs) == 1
    with pytest.raises(SurvivorsChanged):  # one whose survivors differ is discarded
        session.average(w, ones, dropouts={"masked_input": [3]})
    assert len(runs) == 2 and oracle.sessions == 2
