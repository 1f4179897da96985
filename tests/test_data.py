"""Federated datasets: the heterogeneity knobs of the synthetic least squares, the digits splits."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import sqrtm

from rfa.data import (
    FederatedDataset,
    digits,
    dirichlet_partition,
    empirical_hessians,
    iid_partition,
    omega_x,
    omega_y_given_x,
    synthetic_least_squares,
)

N_DIGITS = 1797


def _synthetic(**overrides):
    kwargs = dict(omega_x=3.0, omega_y=2.5, noise=0.1, rng=np.random.default_rng(0)) | overrides
    return synthetic_least_squares(8, 60, 5, **kwargs)


# --- Synthetic least squares ----------------------------------------------------------------------


@pytest.mark.parametrize("ox", [1.0, 1.5, 3.0, 7.5])
@pytest.mark.parametrize("oy", [0.0, 0.3, 4.0])
def test_synthetic_knobs_give_the_requested_omegas_to_1e_9(ox, oy):
    truth = _synthetic(omega_x=ox, omega_y=oy).truth
    assert omega_x(truth.hessians) == pytest.approx(ox, rel=1e-9)
    assert omega_y_given_x(truth.w_star) == pytest.approx(oy, rel=1e-9, abs=1e-12)


def test_omega_x_of_the_clients_empirical_losses_is_the_requested_value():
    data = _synthetic(omega_x=2.0)
    np.testing.assert_allclose(empirical_hessians(data), data.truth.hessians, atol=1e-10)
    assert omega_x(empirical_hessians(data)) == pytest.approx(2.0, rel=1e-9)


def test_omega_x_matches_its_definition_with_a_matrix_square_root():
    rng = np.random.default_rng(1)
    A = rng.normal(size=(4, 3, 3))
    Hs = A @ A.transpose(0, 2, 1) + 0.1 * np.eye(3)
    inv_sqrt = np.linalg.inv(sqrtm(Hs.mean(axis=0)).real)
    expected = max(np.linalg.eigvalsh(inv_sqrt @ H @ inv_sqrt).max() for H in Hs)
    assert omega_x(Hs) == pytest.approx(expected, rel=1e-9)


def test_omega_y_given_x_is_the_largest_pairwise_distance():
    w = np.array([[0.0, 0.0], [3.0, 4.0], [1.0, 1.0]])
    assert omega_y_given_x(w) == pytest.approx(5.0)


def test_omega_x_one_means_identical_marginals_and_omega_y_zero_identical_optima():
    truth = _synthetic(omega_x=1.0, omega_y=0.0).truth
    np.testing.assert_allclose(truth.hessians, truth.hessians[:1].repeat(8, axis=0), atol=1e-12)
    np.testing.assert_array_equal(truth.w_star, truth.w_star[:1].repeat(8, axis=0))


def test_noiseless_pooled_least_squares_recovers_the_global_optimum():
    data = _synthetic(noise=0.0)
    X, y = data.pooled()
    np.testing.assert_allclose(np.linalg.lstsq(X, y, rcond=None)[0], data.truth.w_opt, atol=1e-9)
    for i in range(data.n_clients):
        np.testing.assert_allclose(data.client_y[i], data.client_X[i] @ data.truth.w_star[i], atol=1e-12)


def test_residual_noise_has_the_requested_standard_deviation():
    data = synthetic_least_squares(10, 500, 4, noise=0.3, rng=np.random.default_rng(2))
    residuals = np.concatenate([y - X @ w for X, y, w in zip(data.client_X, data.client_y, data.truth.w_star)])
    assert np.std(residuals) == pytest.approx(0.3, rel=0.05)  # 5000 draws: the std's sd is ~1%


def test_test_set_is_drawn_from_every_client_with_the_clients_optima():
    data = synthetic_least_squares(
        3, 20, 2, omega_y=1.0, noise=0.0, test_samples_per_client=7, rng=np.random.default_rng(3)
    )
    assert data.X_test.shape == (21, 2)
    for i in range(3):
        rows = slice(7 * i, 7 * (i + 1))
        np.testing.assert_allclose(data.y_test[rows], data.X_test[rows] @ data.truth.w_star[i], atol=1e-12)


def test_synthetic_is_deterministic_for_a_seed_and_weights_are_uniform():
    a, b = _synthetic(rng=np.random.default_rng(4)), _synthetic(rng=np.random.default_rng(4))
    for Xa, Xb in zip(a.client_X, b.client_X):
        np.testing.assert_array_equal(Xa, Xb)
    np.testing.assert_allclose(a.weights, np.full(8, 1 / 8))


@pytest.mark.parametrize(
    "bad",
    [dict(omega_x=0.5), dict(omega_x=8.0), dict(omega_x=np.nan), dict(omega_y=-1.0), dict(noise=-0.1)],
)
def test_synthetic_rejects_unattainable_settings(bad):
    with pytest.raises(ValueError):
        _synthetic(**bad)


def test_synthetic_needs_at_least_dim_samples_per_client():
    with pytest.raises(ValueError):
        synthetic_least_squares(4, 3, 5, rng=np.random.default_rng(0))


# --- Partitions and digits -------------------------------------------------------------------------


def _assert_exact_cover(parts, n):
    allrows = np.concatenate(parts)
    assert allrows.shape[0] == n
    np.testing.assert_array_equal(np.sort(allrows), np.arange(n))


def _mean_label_entropy(data: FederatedDataset) -> float:
    entropies = []
    for y in data.client_y:
        p = np.bincount(y, minlength=10) / y.shape[0]
        p = p[p > 0]
        entropies.append(-(p * np.log(p)).sum())
    return float(np.mean(entropies))


@pytest.mark.parametrize("split", ["iid", "dirichlet"])
def test_digits_covers_every_sample_exactly_once(split):
    data = digits(12, split=split, rng=np.random.default_rng(5))
    _assert_exact_cover([*data.client_indices, data.test_indices], N_DIGITS)
    assert data.test_indices.shape[0] == round(0.2 * N_DIGITS)


def test_digits_rows_match_the_source_pixels_scaled_to_unit_interval():
    from sklearn.datasets import load_digits

    source = load_digits()
    data = digits(4, rng=np.random.default_rng(6))
    for X, y, rows in zip(data.client_X, data.client_y, data.client_indices):
        np.testing.assert_array_equal(X, source.data[rows] / 16.0)
        np.testing.assert_array_equal(y, source.target[rows])
    X, _ = data.pooled()
    assert X.min() == 0.0 and X.max() == 1.0


def test_iid_split_sizes_differ_by_at_most_one_and_weights_follow_counts():
    data = digits(7, split="iid", rng=np.random.default_rng(7))
    counts = data.sample_counts
    assert counts.max() - counts.min() <= 1
    np.testing.assert_allclose(data.weights, counts / counts.sum())
    assert data.weights.sum() == pytest.approx(1.0)


def test_dirichlet_split_is_more_label_skewed_than_iid():
    rng_seed = 8
    iid = digits(10, split="iid", rng=np.random.default_rng(rng_seed))
    skewed = digits(10, split="dirichlet", alpha=0.3, rng=np.random.default_rng(rng_seed))
    # An iid client of ~140 samples sees all 10 classes (entropy near log 10 = 2.30).
    assert _mean_label_entropy(iid) > 2.2
    assert _mean_label_entropy(skewed) < _mean_label_entropy(iid) - 0.5


def test_larger_dirichlet_concentration_gives_less_skew():
    low = digits(10, split="dirichlet", alpha=0.1, rng=np.random.default_rng(9))
    high = digits(10, split="dirichlet", alpha=100.0, rng=np.random.default_rng(9))
    assert _mean_label_entropy(low) < _mean_label_entropy(high)


def test_dirichlet_split_gives_every_client_the_minimum_even_when_extreme():
    # alpha = 0.05 over 40 clients leaves many clients (nearly) empty before the top-up.
    data = digits(40, split="dirichlet", alpha=0.05, min_samples=15, rng=np.random.default_rng(10))
    assert data.sample_counts.min() >= 15
    _assert_exact_cover([*data.client_indices, data.test_indices], N_DIGITS)


def test_dirichlet_partition_moves_only_what_the_minimum_needs():
    labels = np.repeat(np.arange(5), 40)
    parts = dirichlet_partition(labels, 20, alpha=0.05, rng=np.random.default_rng(11), min_samples=4)
    sizes = np.array([p.shape[0] for p in parts])
    _assert_exact_cover(parts, 200)
    assert sizes.min() >= 4
    # Topped-up clients stop exactly at the minimum: the rule moves no more rows than it must.
    assert np.any(sizes == 4)


@pytest.mark.parametrize("split", ["iid", "dirichlet"])
def test_digits_is_deterministic_for_a_seed_and_varies_across_seeds(split):
    a, b, c = (digits(6, split=split, rng=np.random.default_rng(s)) for s in (12, 12, 13))
    for ra, rb in zip(a.client_indices, b.client_indices):
        np.testing.assert_array_equal(ra, rb)
    assert any(not np.array_equal(ra, rc) for ra, rc in zip(a.client_indices, c.client_indices))


def test_partitions_refuse_too_many_clients_for_the_minimum():
    with pytest.raises(ValueError):
        iid_partition(100, 11, rng=np.random.default_rng(0), min_samples=10)
    with pytest.raises(ValueError):
        dirichlet_partition(np.zeros(100, dtype=int), 11, alpha=1.0, rng=np.random.default_rng(0), min_samples=10)
    with pytest.raises(ValueError):
        digits(200, rng=np.random.default_rng(0))


def test_digits_rejects_unknown_split_and_bad_test_fraction():
    with pytest.raises(ValueError):
        digits(5, split="pathological", rng=np.random.default_rng(0))
    with pytest.raises(ValueError):
        digits(5, test_fraction=1.0, rng=np.random.default_rng(0))
