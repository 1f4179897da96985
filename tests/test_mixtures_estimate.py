"""rfa.mixtures.estimate: validation of mixture estimates and the local (penalised) EM fit."""

from __future__ import annotations

import numpy as np
import pytest

from rfa.errors import RFAError
from rfa.mixtures import GaussianMixtureEstimate, MixtureError, fit_local, w1


def two_blobs(dim: int = 2) -> GaussianMixtureEstimate:
    means = np.zeros((2, dim))
    means[1, 0] = 8.0
    return GaussianMixtureEstimate([0.3, 0.7], means, np.stack([np.eye(dim), 0.5 * np.eye(dim)]))


@pytest.mark.parametrize(
    "weights, means, covs, message",
    [
        ([0.5, 0.6], np.zeros((2, 2)), np.stack([np.eye(2)] * 2), "sum to 1"),
        ([-0.5, 1.5], np.zeros((2, 2)), np.stack([np.eye(2)] * 2), "non-negative"),
        ([0.5, 0.5], np.zeros((3, 2)), np.stack([np.eye(2)] * 2), "means must have shape"),
        ([0.5, 0.5], np.zeros((2, 2)), np.stack([np.eye(3)] * 2), "covariances must have shape"),
        ([0.5, 0.5], np.array([[0.0, np.nan], [0, 0]]), np.stack([np.eye(2)] * 2), "non-finite"),
        ([0.5, 0.5], np.zeros((2, 2)), np.stack([np.eye(2), [[1.0, 0.5], [0.0, 1.0]]]), "symmetric"),
        ([0.5, 0.5], np.zeros((2, 2)), np.stack([np.eye(2), [[1.0, 2.0], [2.0, 1.0]]]), "positive definite"),
    ],
)
def test_invalid_mixtures_are_refused_with_a_typed_error_naming_the_rule(weights, means, covs, message):
    with pytest.raises(MixtureError, match=message) as info:
        GaussianMixtureEstimate(weights, means, covs)
    assert isinstance(info.value, RFAError) and isinstance(info.value, ValueError)


def test_estimate_arrays_are_read_only_copies():
    weights = np.array([0.3, 0.7])
    g = GaussianMixtureEstimate(weights, np.zeros((2, 1)), np.ones((2, 1, 1)))
    weights[0] = 0.9
    assert g.weights[0] == 0.3
    with pytest.raises(ValueError):
        g.means[0, 0] = 1.0


def test_predict_assigns_points_to_the_component_with_largest_weighted_density():
    g = two_blobs()
    x, labels = g.sample(2000, np.random.default_rng(0))
    assert (g.predict(x) == labels).mean() > 0.99
    assert np.isclose(np.exp(g.log_density(np.zeros((1, 2))))[0],
                      0.3 / (2 * np.pi) + 0.7 * np.exp(-0.5 * 64 / 0.5) / (2 * np.pi * 0.5))


@pytest.mark.parametrize("penalised", [True, False])
def test_local_fit_recovers_a_well_separated_mixture(penalised):
    truth = two_blobs(3)
    x, _ = truth.sample(4000, np.random.default_rng(1))
    fit = fit_local(x, 2, penalised=penalised, seed=0)
    assert w1(fit, truth) < 0.15


def test_penalised_covariances_stay_above_the_chen_tan_floor():
    # Appendix A.1: every Sigma_k >= 2 a_n / (n + 2 a_n) S_x, even for a component on very few points.
    rng = np.random.default_rng(2)
    x = np.vstack([rng.normal(0, 1, (300, 2)), np.full((3, 2), 20.0) + 1e-9 * rng.normal(size=(3, 2))])
    a_n = 0.5
    fit = fit_local(x, 2, penalty=a_n, seed=0)
    s_x = np.cov(x, rowvar=False, bias=True)
    floor = 2 * a_n / (len(x) + 2 * a_n) * s_x
    for cov in fit.covariances:
        assert np.linalg.eigvalsh(cov - floor).min() > -1e-12


def test_penalised_em_does_not_lower_the_penalised_likelihood_of_its_start():
    truth = two_blobs(2)
    x, _ = truth.sample(500, np.random.default_rng(3))
    n = len(x)
    s_x = np.cov(x, rowvar=False, bias=True)

    def objective(g: GaussianMixtureEstimate) -> float:
        pen = sum(np.trace(np.linalg.solve(c, s_x)) + np.linalg.slogdet(c)[1] for c in g.covariances)
        return g.log_density(x).sum() - n ** -0.5 * pen

    fit = fit_local(x, 2, init=truth)
    assert objective(fit) >= objective(truth)


def test_fit_refuses_too_few_rows_and_mismatched_init():
    with pytest.raises(MixtureError, match="at least K"):
        fit_local(np.zeros((3, 2)), 3)
    with pytest.raises(MixtureError, match="init has"):
        fit_local(np.random.default_rng(0).normal(size=(50, 3)), 2, init=two_blobs(2))
