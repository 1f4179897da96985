"""rfa.mixtures.distance: the closed-form ISE against numerical integration, and the pairwise matrix."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate
from scipy.stats import multivariate_normal, norm

from rfa.mixtures import GaussianMixtureEstimate, ise, pairwise_ise


def random_mixture(rng: np.random.Generator, k: int, d: int, spread: float = 2.0) -> GaussianMixtureEstimate:
    a = rng.normal(size=(k, d, d))
    covs = a @ np.swapaxes(a, 1, 2) / d + 0.3 * np.eye(d)
    return GaussianMixtureEstimate(rng.dirichlet(np.ones(k)), rng.normal(0, spread, (k, d)), covs)


def test_ise_matches_numerical_integration_in_one_dimension():
    rng = np.random.default_rng(0)
    g, h = random_mixture(rng, 3, 1), random_mixture(rng, 2, 1)

    def density(mix, x):
        return sum(w * norm.pdf(x, m[0], np.sqrt(c[0, 0])) for w, m, c in zip(mix.weights, mix.means, mix.covariances))

    value, _ = integrate.quad(lambda x: (density(g, x) - density(h, x)) ** 2, -40, 40, limit=200)
    assert np.isclose(ise(g, h) ** 2, value, rtol=1e-6)


def test_ise_matches_numerical_integration_in_two_dimensions():
    rng = np.random.default_rng(1)
    g, h = random_mixture(rng, 2, 2, spread=1.0), random_mixture(rng, 3, 2, spread=1.0)
    grid = np.linspace(-14, 14, 561)
    xx, yy = np.meshgrid(grid, grid)
    pts = np.column_stack([xx.ravel(), yy.ravel()])

    def density(mix):
        return sum(w * multivariate_normal(m, c).pdf(pts) for w, m, c in zip(mix.weights, mix.means, mix.covariances))

    step = grid[1] - grid[0]
    value = ((density(g) - density(h)) ** 2).sum() * step**2
    assert np.isclose(ise(g, h) ** 2, value, rtol=1e-4)


def test_ise_is_zero_for_the_same_mixture_with_components_permuted():
    g = random_mixture(np.random.default_rng(2), 4, 3)
    order = [2, 0, 3, 1]
    h = GaussianMixtureEstimate(g.weights[order], g.means[order], g.covariances[order])
    assert ise(g, h) < 1e-7


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10**6), st.integers(2, 6), st.integers(1, 4), st.integers(1, 3))
def test_pairwise_matrix_equals_the_pairwise_ise_and_is_a_symmetric_distance(seed, m, k, d):
    rng = np.random.default_rng(seed)
    mixtures = [random_mixture(rng, int(rng.integers(1, k + 1)), d) for _ in range(m)]
    dist = pairwise_ise(mixtures)
    expected = np.array([[ise(a, b) for b in mixtures] for a in mixtures])
    assert np.allclose(dist, expected, atol=1e-9)
    assert np.array_equal(dist, dist.T) and np.all(np.diag(dist) == 0)
    i, j, l = rng.integers(0, m, 3)
    assert dist[i, l] <= dist[i, j] + dist[j, l] + 1e-9
