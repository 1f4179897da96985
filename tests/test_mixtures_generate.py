"""rfa.mixtures.generate: random mixtures whose MaxOmega hits the target."""

from __future__ import annotations

import numpy as np
import pytest

from rfa.mixtures import GaussianMixtureEstimate, MixtureError, max_overlap, overlap_matrix, random_mixture
from scipy.stats import norm


def test_overlap_of_two_equal_weight_unit_gaussians_is_the_normal_tail():
    # o_{2|1} = P(X > delta / 2) for X ~ N(0, 1) when the means are delta apart.
    g = GaussianMixtureEstimate([0.5, 0.5], [[0.0], [2.0]], [[[1.0]], [[1.0]]])
    z = np.random.default_rng(0).standard_normal((200_000, 1))
    o = overlap_matrix(g, z)
    assert np.allclose(o[[0, 1], [1, 0]], norm.sf(1.0), atol=0.004)


@pytest.mark.parametrize("target", [0.1, 0.3])
def test_random_mixture_reaches_the_target_max_omega_on_fresh_draws(target):
    g = random_mixture(5, 4, target, np.random.default_rng(1), n_mc=5000, tol=0.005)
    assert g.n_components == 4 and g.dim == 5 and np.allclose(g.weights, 0.25)
    fresh = np.random.default_rng(2).standard_normal((40_000, 5))
    assert abs(max_overlap(g, fresh) - target) < 0.02
    eig = np.linalg.eigvalsh(g.covariances)
    assert np.all(np.sqrt(1 - eig[:, 0] / eig[:, -1]) <= 0.9 + 1e-9)   # MixSim's eccentricity cap


def test_random_mixture_refuses_impossible_targets():
    with pytest.raises(MixtureError, match="max_omega"):
        random_mixture(3, 3, 1.5, np.random.default_rng(0))
