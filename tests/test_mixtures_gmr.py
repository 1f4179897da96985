"""rfa.mixtures.gmr: KL between Gaussians, the moment-matched barycentre, and the MM reduction."""

from __future__ import annotations

import numpy as np
import pytest

from rfa.mixtures import GaussianMixtureEstimate, MixtureError, gmr, kl_gaussian, w1
from rfa.mixtures.gmr import kl_cost_matrix, moment_match


def test_kl_between_univariate_gaussians_matches_the_hand_formula():
    # KL(N(m0, s0^2) || N(m1, s1^2)) = log(s1 / s0) + (s0^2 + (m0 - m1)^2) / (2 s1^2) - 1/2
    m0, s0, m1, s1 = 0.3, 0.7, -1.2, 1.9
    hand = np.log(s1 / s0) + (s0**2 + (m0 - m1) ** 2) / (2 * s1**2) - 0.5
    assert np.isclose(kl_gaussian([m0], [[s0**2]], [m1], [[s1**2]]), hand)


def test_kl_between_diagonal_gaussians_is_the_sum_over_coordinates():
    rng = np.random.default_rng(0)
    m0, m1 = rng.normal(size=3), rng.normal(size=3)
    v0, v1 = rng.uniform(0.5, 2, 3), rng.uniform(0.5, 2, 3)
    per_axis = np.log(np.sqrt(v1 / v0)) + (v0 + (m0 - m1) ** 2) / (2 * v1) - 0.5
    assert np.isclose(kl_gaussian(m0, np.diag(v0), m1, np.diag(v1)), per_axis.sum())


def test_kl_cost_matrix_is_zero_on_identical_components_and_positive_elsewhere():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(4, 2, 2))
    covs = a @ np.swapaxes(a, 1, 2) + np.eye(2)
    means = rng.normal(size=(4, 2))
    cost = kl_cost_matrix(means, covs, means, covs)
    assert np.allclose(np.diag(cost), 0, atol=1e-12)
    assert np.all(cost[~np.eye(4, dtype=bool)] > 0)


def test_moment_match_gives_the_mean_and_covariance_of_the_merged_mixture():
    rng = np.random.default_rng(2)
    w = np.array([0.2, 0.5, 0.3])
    means = rng.normal(size=(3, 2))
    covs = np.stack([np.eye(2), 2 * np.eye(2), [[1.0, 0.3], [0.3, 0.5]]])
    total, centre, cov = moment_match(w[:, None], means, covs)
    # Mixture moments by sampling a large draw from the mixture.
    x, _ = GaussianMixtureEstimate(w, means, covs).sample(400_000, np.random.default_rng(3))
    assert np.isclose(total[0], 1.0)
    assert np.allclose(centre[0], x.mean(axis=0), atol=0.01)
    assert np.allclose(cov[0], np.cov(x, rowvar=False), atol=0.02)


def test_gmr_of_identical_mixtures_returns_that_mixture_whatever_the_sample_sizes():
    rng = np.random.default_rng(4)
    truth = GaussianMixtureEstimate([0.2, 0.3, 0.5], rng.normal(0, 5, (3, 2)), np.stack([np.eye(2)] * 3))
    order = [1, 2, 0]
    shuffled = GaussianMixtureEstimate(truth.weights[order], truth.means[order], truth.covariances[order])
    out = gmr([truth, shuffled, truth], sample_sizes=[10, 300, 7], init=shuffled)
    assert w1(out, truth) < 1e-9


def test_gmr_merges_two_machines_components_by_the_weighted_moment_match():
    # Machine 1 has N(0, 1), machine 2 N(1, 1), sizes 1:3; one component -> N(0.75, 1 + 0.1875).
    a = GaussianMixtureEstimate([1.0], [[0.0]], [[[1.0]]])
    b = GaussianMixtureEstimate([1.0], [[1.0]], [[[1.0]]])
    out = gmr([a, b], sample_sizes=[1, 3])
    assert np.isclose(out.means[0, 0], 0.75) and np.isclose(out.covariances[0, 0, 0], 1 + 0.75 * 0.25)


def test_gmr_refuses_bad_sample_sizes_and_empty_input():
    g = GaussianMixtureEstimate([1.0], [[0.0]], [[[1.0]]])
    with pytest.raises(MixtureError, match="sample_sizes"):
        gmr([g, g], sample_sizes=[1, -1])
    with pytest.raises(MixtureError, match="at least one"):
        gmr([])
