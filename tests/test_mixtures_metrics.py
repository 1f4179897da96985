"""rfa.mixtures.metrics: W1 between mixing distributions on known cases, and ARI."""

from __future__ import annotations

import numpy as np
import pytest

from rfa.mixtures import GaussianMixtureEstimate, MixtureError, ari, w1

EYE = np.stack([np.eye(2)] * 2)


def test_w1_of_a_mixture_with_itself_or_a_permutation_is_zero():
    g = GaussianMixtureEstimate([0.3, 0.7], [[0, 0], [5, 1]], EYE)
    h = GaussianMixtureEstimate([0.7, 0.3], [[5, 1], [0, 0]], EYE)
    assert w1(g, g) < 1e-12 and w1(g, h) < 1e-12


def test_w1_of_single_atoms_is_the_ground_cost():
    # D_1 = ||mu - mu'|| + ||Sigma^1/2 - Sigma'^1/2||_F = 5 + ||I - 2I||_F = 5 + sqrt(2).
    g = GaussianMixtureEstimate([1.0], [[0.0, 0.0]], [np.eye(2)])
    h = GaussianMixtureEstimate([1.0], [[3.0, 4.0]], [4 * np.eye(2)])
    assert np.isclose(w1(g, h), 5 + np.sqrt(2))


def test_w1_moves_only_the_mass_that_must_move():
    # Same atoms, weights (0.5, 0.5) vs (0.8, 0.2): 0.3 of the mass travels the distance 10.
    g = GaussianMixtureEstimate([0.5, 0.5], [[0, 0], [10, 0]], EYE)
    h = GaussianMixtureEstimate([0.8, 0.2], [[0, 0], [10, 0]], EYE)
    assert np.isclose(w1(g, h), 3.0)
    assert np.isclose(w1(h, g), 3.0)


def test_ari_is_one_for_a_perfect_clustering_and_checks_the_labels():
    g = GaussianMixtureEstimate([0.5, 0.5], [[0, 0], [20, 0]], EYE)
    x, labels = g.sample(300, np.random.default_rng(0))
    assert ari(g, x, 1 - labels) == 1.0
    with pytest.raises(MixtureError, match="one label per row"):
        ari(g, x, labels[:-1])
