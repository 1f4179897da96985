"""rfa.mixtures.baselines: TRIM (Appendix Algorithm 2), GMR on all machines and the Oracle."""

from __future__ import annotations

import numpy as np
import pytest

from rfa.mixtures import GaussianMixtureEstimate, MixtureError, gmr, gmr_all, oracle, trim, w1
from rfa.mixtures.baselines import _trimmed_mass

TRUTH = GaussianMixtureEstimate([0.5, 0.5], [[0.0, 0.0], [6.0, 0.0]], np.stack([np.eye(2)] * 2))


def noisy(rng: np.random.Generator) -> GaussianMixtureEstimate:
    return GaussianMixtureEstimate(TRUTH.weights, TRUTH.means + rng.normal(0, 0.05, (2, 2)), TRUTH.covariances)


def test_trimmed_mass_keeps_the_lowest_loss_components_up_to_one_minus_eta():
    kappa = _trimmed_mass(np.array([0.1, 0.4, 0.3, 0.2]), np.array([3.0, 0.0, 2.0, 1.0]), keep=0.5)
    assert np.allclose(kappa, [0.0, 0.4, 0.0, 0.1])


def test_trim_ignores_a_minority_of_far_away_components():
    rng = np.random.default_rng(0)
    estimates = [noisy(rng) for _ in range(7)]
    estimates += [GaussianMixtureEstimate([0.5, 0.5], rng.normal(0, 100, (2, 2)), TRUTH.covariances) for _ in range(3)]
    out = trim(estimates, init=estimates[0], eta=0.5)
    assert np.isclose(out.weights.sum(), 1.0)
    assert w1(out, TRUTH) < 0.2
    assert w1(gmr_all(estimates, init=estimates[0]), TRUTH) > 10


def test_trim_with_no_trimming_is_the_gmr_on_identical_inputs():
    rng = np.random.default_rng(1)
    estimates = [noisy(rng) for _ in range(5)]
    assert w1(trim(estimates, init=estimates[0], eta=0.0), gmr(estimates, init=estimates[0])) < 1e-9


def test_oracle_is_gmr_on_the_failure_free_machines():
    rng = np.random.default_rng(2)
    estimates = [noisy(rng) for _ in range(6)]
    failed = {1, 4}
    kept = [g for i, g in enumerate(estimates) if i not in failed]
    assert w1(oracle(estimates, failed, init=estimates[0]), gmr(kept, init=estimates[0])) < 1e-12
    with pytest.raises(MixtureError, match="do not exist"):
        oracle(estimates, {9})
    with pytest.raises(MixtureError, match="every machine failed"):
        oracle(estimates, range(6))
    with pytest.raises(MixtureError, match="eta"):
        trim(estimates, eta=1.0)
