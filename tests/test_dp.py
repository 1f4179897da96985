"""The distributed discrete Gaussian mechanism through the secure average oracle."""

import math
import random

import numpy as np
import pytest

from secagg import SecureAverageOracle
from secagg.dp import DistributedDiscreteGaussian
from secagg.errors import EncodingOverflow, ParameterError


def _oracle(z=1.0, n=12, seed=3, **kwargs):
    mech = DistributedDiscreteGaussian(l2_clip=1.0, noise_multiplier=z, max_clients=n, **kwargs)
    return mech, SecureAverageOracle(0.5, value_bound=1.0, max_clients=n, dp=mech, seed=seed)


def test_noise_of_a_zero_input_aggregate_matches_noise_std_and_is_fresh_each_call():
    mech, oracle = _oracle(z=0.5)
    zeros = {u: np.zeros(2000) for u in range(1, 13)}
    ones = {u: 1.0 for u in zeros}
    first, second = oracle.average(zeros, ones), oracle.average(zeros, ones)
    for r in (first, second):
        assert r.noise_std > 0
        # 2000 coordinates: the sample std is within ~3% of the true one (4 sigma below 9%).
        assert abs(np.std(r.value) / r.noise_std - 1) < 0.09
        assert abs(np.mean(r.value)) < 4 * r.noise_std / math.sqrt(2000)
    assert np.corrcoef(first.value, second.value)[0, 1] < 0.1  # fresh noise, not replayed


def test_noisy_average_is_centred_on_the_true_average():
    _, oracle = _oracle(z=0.3)
    rng = np.random.default_rng(0)  # test data, not noise
    vectors = {u: rng.uniform(-1, 1, 64) / 10 for u in range(1, 13)}
    weights = {u: float(rng.uniform(0.2, 1.0)) for u in vectors}
    r = oracle.average(vectors, weights)
    truth = sum(weights[u] * vectors[u] for u in vectors) / sum(weights.values())
    assert np.sqrt(np.mean((r.value - truth) ** 2)) < 2 * r.noise_std
    assert r.sum_weights == pytest.approx(sum(weights.values()), rel=0.2)


def test_privacy_spent_per_call_and_composed_by_the_accountant():
    mech, oracle = _oracle(z=2.0)
    data = {u: np.zeros(30) for u in range(1, 13)}
    w = {u: 1.0 for u in data}
    r = oracle.average(data, w)
    assert r.privacy.rho <= 1 / (2 * 2.0**2) and r.privacy.rho > 0.95 / (2 * 2.0**2)
    one = mech.epsilon()
    oracle.average(data, w)
    assert mech.accountant.calls == 2 and mech.epsilon() > one
    from secagg.accounting import zcdp_epsilon

    assert mech.epsilon() == pytest.approx(zcdp_epsilon(r.privacy.rho, 1e-5, 2, r.privacy.xi))


def test_dropouts_above_the_threshold_keep_the_noise_at_least_the_target():
    mech, oracle = _oracle(z=1.0)
    data = {u: np.zeros(500) for u in range(1, 13)}
    r = oracle.average(data, {u: 1.0 for u in data}, dropouts={"masked_input": [1, 2, 3, 4]})
    plan = next(iter(mech._plans.values()))
    assert len(r.included) == 8
    # t = 6 survivors would hold variance z^2 Delta^2; 8 hold more: in sum units, std >= z Delta.
    assert r.noise_std * r.sum_weights / 1.0 * plan["gamma"] >= math.sqrt(plan["sensitivity_sq"]) * 0.999


def test_a_modulus_that_could_wrap_is_refused():
    with pytest.raises(EncodingOverflow):
        DistributedDiscreteGaussian(l2_clip=1.0, noise_multiplier=1.0, max_clients=100, modulus_bits=12).plan(
            1000, 67, 1.0, b"s")
    with pytest.raises(EncodingOverflow):
        DistributedDiscreteGaussian(l2_clip=1.0, noise_multiplier=1.0, max_clients=100, granularity=1e18).plan(
            10, 67, 1.0, b"s")
    plan = DistributedDiscreteGaussian(l2_clip=1.0, noise_multiplier=1.0, max_clients=100).plan(1000, 67, 1.0, b"s")
    assert plan.max_clients * plan.linf < plan.modulus // 2


def test_parameters_are_checked():
    with pytest.raises(ParameterError):
        DistributedDiscreteGaussian(l2_clip=0.0, noise_multiplier=1.0)
    with pytest.raises(ParameterError):
        DistributedDiscreteGaussian(l2_clip=1.0, noise_multiplier=-1.0)


def test_noise_never_comes_from_a_non_cryptographic_rng(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a non-cryptographic RNG was used")

    for name in ("default_rng", "normal", "randint", "random", "standard_normal", "binomial", "uniform",
                 "RandomState", "Generator", "seed", "choice", "permutation", "shuffle"):
        monkeypatch.setattr(np.random, name, refuse)
    for name in ("random", "randint", "randrange", "getrandbits", "gauss", "normalvariate", "choice",
                 "shuffle", "uniform", "seed", "sample"):
        monkeypatch.setattr(random, name, refuse)
    _, oracle = _oracle(z=1.0, seed=None)  # the OS CSPRNG, as deployed
    r = oracle.average({u: np.full(40, 0.1) for u in range(1, 13)}, {u: 1.0 for u in range(1, 13)})
    assert r.noise_std > 0


def test_central_baseline_noise_matches_noise_std_and_is_secret_unless_replayed():
    from secagg.dp import CentralGaussian

    zeros = {u: np.zeros(2000) for u in range(1, 13)}
    ones = {u: 1.0 for u in zeros}

    def run(reproducible):
        mech = CentralGaussian(l2_clip=1.0, noise_multiplier=0.5, max_clients=12, reproducible=reproducible)
        return SecureAverageOracle(0.5, value_bound=1.0, max_clients=12, dp=mech, seed=3).average(zeros, ones)

    r = run(False)
    assert abs(np.std(r.value) / r.noise_std - 1) < 0.09
    # Same public seed: the deployed server's noise differs (secret); a replayed simulation's is equal.
    assert not np.array_equal(run(False).value, r.value)
    assert np.array_equal(run(True).value, run(True).value)
