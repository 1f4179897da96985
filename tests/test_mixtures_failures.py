"""rfa.mixtures.failures: each Section 5.1 failure against its definition."""

from __future__ import annotations

import numpy as np
import pytest

from rfa.mixtures import GaussianMixtureEstimate, MixtureError, corrupt, covariance_failure, mean_failure, weight_failure

K, D = 5, 4
BASE = GaussianMixtureEstimate(np.full(K, 1 / K), np.arange(K * D, dtype=float).reshape(K, D),
                               np.stack([np.eye(D) * (k + 1) for k in range(K)]))


def test_mean_failure_replaces_every_mean_by_n_0_100_squared_entries_and_nothing_else():
    rng = np.random.default_rng(0)
    draws = [mean_failure(BASE, rng) for _ in range(400)]
    entries = np.concatenate([g.means.ravel() for g in draws])
    # 8000 N(0, 100^2) entries: the sample sd is within 3% of 100, the mean within 4 sd-of-mean of 0.
    assert abs(entries.std() / 100 - 1) < 0.03 and abs(entries.mean()) < 4 * 100 / np.sqrt(entries.size)
    assert all(np.array_equal(g.weights, BASE.weights) and np.array_equal(g.covariances, BASE.covariances)
               for g in draws)


def test_covariance_failure_adds_a_sum_of_d_outer_products_of_standard_normals():
    rng = np.random.default_rng(1)
    noise = np.stack([covariance_failure(BASE, rng).covariances - BASE.covariances for _ in range(500)])
    # Each added matrix is PSD; sum_{i<=d} xi_i xi_i' is Wishart(I, d): mean d I, var of a diagonal entry 2d.
    assert np.linalg.eigvalsh(noise).min() > -1e-9
    mean = noise.mean(axis=(0, 1))   # 500 draws x 5 components
    assert np.allclose(mean, D * np.eye(D), atol=0.25)
    assert np.isclose(noise[:, :, 0, 0].var(), 2 * D, rtol=0.15)
    g = covariance_failure(BASE, rng)
    assert np.array_equal(g.means, BASE.means) and np.array_equal(g.weights, BASE.weights)


def test_weight_failure_draws_dirichlet_weights_with_parameters_in_200_to_1000():
    rng = np.random.default_rng(2)
    draws = np.stack([weight_failure(BASE, rng).weights for _ in range(500)])
    assert np.allclose(draws.sum(axis=1), 1.0)
    # With every alpha_k in [200, 1000], E w_k = alpha_k / sum(alpha) lies in [200/4200, 1000/1800];
    # the Dirichlet spread around that mean is below 0.02.
    assert draws.min() > 200 / (200 + 4 * 1000) - 0.03 and draws.max() < 1000 / (1000 + 4 * 200) + 0.03
    assert draws.std(axis=0).mean() > 0.05   # the parameters differ from machine to machine


def test_corrupt_fails_round_alpha_m_random_machines_and_leaves_the_others_untouched():
    rng = np.random.default_rng(3)
    estimates = [BASE] * 20
    sent, failed = corrupt(estimates, 0.3, "mean", rng)
    assert len(failed) == 6
    assert all((sent[i] is BASE) == (i not in failed) for i in range(20))
    with pytest.raises(MixtureError, match="unknown failure"):
        corrupt(estimates, 0.1, "labels", rng)
    with pytest.raises(MixtureError, match="rate"):
        corrupt(estimates, 0.5, "mean", rng)
