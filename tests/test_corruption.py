"""Corruptions: the corrupted set by weight, data poisoning, and every update corruption."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.stats import norm

from rfa.corruption import (
    DATA_CORRUPTIONS,
    UPDATE_CORRUPTIONS,
    a_little_is_enough,
    alie_z,
    choose_corrupted,
    corrupt_updates,
    flip_labels,
    gaussian,
    inner_product_manipulation,
    negate_images,
    omniscient,
    poison_clients,
    replay_previous,
    sign_flip,
)
from rfa.data import digits, synthetic_least_squares

# --- choose_corrupted ------------------------------------------------------------------------------


def _best_fraction_by_enumeration(weights, rho):
    total = weights.sum()
    best = 0.0
    for r in range(len(weights) + 1):
        for subset in itertools.combinations(range(len(weights)), r):
            frac = weights[list(subset)].sum() / total
            if frac <= rho:
                best = max(best, frac)
    return best


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("rho", [0.1, 0.25, 1 / 3, 0.5])
def test_corrupted_fraction_never_exceeds_rho_and_is_the_closest_achievable(seed, rho):
    rng = np.random.default_rng(seed)
    weights = rng.integers(1, 60, size=10)
    mask = choose_corrupted(weights, rho, rng)
    fraction = weights[mask].sum() / weights.sum()
    assert fraction <= rho
    assert fraction == _best_fraction_by_enumeration(weights, rho)


def test_equal_weights_give_floor_rho_n_random_clients():
    sets = [choose_corrupted(np.ones(20), 0.25, np.random.default_rng(s)) for s in range(5)]
    assert all(m.sum() == 5 for m in sets)
    assert len({tuple(np.flatnonzero(m)) for m in sets}) > 1


def test_fraction_exactly_reachable_is_reached_on_dataset_counts():
    data = digits(15, split="dirichlet", alpha=0.5, rng=np.random.default_rng(0))
    counts = data.sample_counts
    mask = choose_corrupted(counts, 0.25, np.random.default_rng(1))
    fraction = counts[mask].sum() / counts.sum()
    assert fraction <= 0.25
    assert counts[mask].sum() == int(np.floor(0.25 * counts.sum()))  # many clients: the target is hit


def test_rho_zero_and_one_select_nobody_and_everybody():
    w = np.array([3, 5, 7])
    assert not choose_corrupted(w, 0.0, np.random.default_rng(0)).any()
    assert choose_corrupted(w, 1.0, np.random.default_rng(0)).all()


def test_a_single_client_heavier_than_rho_is_never_chosen():
    mask = choose_corrupted(np.array([90, 5, 5]), 0.5, np.random.default_rng(0))
    assert not mask[0] and mask[1:].all()


@pytest.mark.parametrize("bad", [np.array([0.5, 0.25, 0.25]), np.array([3, 0, 2]), np.array([])])
def test_choose_corrupted_requires_positive_integer_weights(bad):
    with pytest.raises(ValueError):
        choose_corrupted(bad, 0.3, np.random.default_rng(0))


def test_choose_corrupted_rejects_rho_outside_unit_interval():
    with pytest.raises(ValueError):
        choose_corrupted(np.ones(4), 1.5, np.random.default_rng(0))


# --- Data poisoning --------------------------------------------------------------------------------


def test_negate_images_and_flip_labels_follow_their_formulas():
    X = np.array([[0.0, 0.25, 1.0]])
    np.testing.assert_array_equal(negate_images(X), [[1.0, 0.75, 0.0]])
    np.testing.assert_array_equal(flip_labels(np.array([0, 3, 9]), 10), [9, 6, 0])
    with pytest.raises(ValueError):
        negate_images(np.array([[2.0]]))


@pytest.mark.parametrize("name", sorted(DATA_CORRUPTIONS))
def test_data_poisoning_changes_only_corrupted_clients_and_never_the_input(name):
    data = digits(6, rng=np.random.default_rng(2))
    snapshot = [(X.copy(), y.copy()) for X, y in zip(data.client_X, data.client_y)]
    mask = np.array([True, False, True, False, False, False])
    poisoned = poison_clients(data, mask, name)
    for i in range(6):
        X0, y0 = snapshot[i]
        np.testing.assert_array_equal(data.client_X[i], X0)  # the input dataset is untouched
        np.testing.assert_array_equal(data.client_y[i], y0)
        if mask[i]:
            expected_X = 1.0 - X0 if name == "negate" else X0
            expected_y = y0 if name == "negate" else 9 - y0
            np.testing.assert_array_equal(poisoned.client_X[i], expected_X)
            np.testing.assert_array_equal(poisoned.client_y[i], expected_y)
        else:
            assert poisoned.client_X[i] is data.client_X[i] and poisoned.client_y[i] is data.client_y[i]
    assert poisoned.X_test is data.X_test and poisoned.y_test is data.y_test


def test_label_flip_needs_a_classification_dataset():
    data = synthetic_least_squares(3, 5, 2, rng=np.random.default_rng(0))
    with pytest.raises(ValueError):
        poison_clients(data, np.array([True, False, False]), "label_flip")


# --- Update corruptions ----------------------------------------------------------------------------


def _round(seed=0, n=12, d=40):
    rng = np.random.default_rng(seed)
    updates = rng.normal(loc=0.5, size=(n, d))
    weights = rng.integers(5, 50, size=n).astype(float)
    corrupted = np.zeros(n, dtype=bool)
    corrupted[rng.choice(n, size=4, replace=False)] = True
    return updates, weights, corrupted


@pytest.mark.parametrize("name", sorted(UPDATE_CORRUPTIONS))
def test_update_corruption_leaves_honest_rows_bit_identical_and_inputs_unchanged(name):
    updates, weights, corrupted = _round()
    originals = updates.copy(), weights.copy(), corrupted.copy()
    out = corrupt_updates(name, updates, weights, corrupted, np.random.default_rng(1))
    assert out.shape == updates.shape and out is not updates
    np.testing.assert_array_equal(out[~corrupted], updates[~corrupted])
    assert not np.any(np.all(out[corrupted] == updates[corrupted], axis=1))  # every corrupted row changed
    for before, after in zip(originals, (updates, weights, corrupted)):
        np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize("name", sorted(UPDATE_CORRUPTIONS))
def test_update_corruption_with_nobody_corrupted_returns_an_equal_copy(name):
    updates, weights, _ = _round()
    out = corrupt_updates(name, updates, weights, np.zeros(12, dtype=bool), np.random.default_rng(1))
    np.testing.assert_array_equal(out, updates)


@pytest.mark.parametrize("seed", range(4))
def test_omniscient_sets_the_weighted_mean_to_minus_the_honest_weighted_mean(seed):
    updates, weights, corrupted = _round(seed)
    out = omniscient(updates, weights, corrupted, np.random.default_rng(0))
    honest_mean = np.average(updates[~corrupted], axis=0, weights=weights[~corrupted])
    np.testing.assert_allclose(np.average(out, axis=0, weights=weights), -honest_mean, rtol=1e-10, atol=1e-12)


def test_omniscient_all_target_negates_the_mean_without_corruption():
    updates, weights, corrupted = _round(5)
    out = omniscient(updates, weights, corrupted, np.random.default_rng(0), target="all")
    clean_mean = np.average(updates, axis=0, weights=weights)
    np.testing.assert_allclose(np.average(out, axis=0, weights=weights), -clean_mean, rtol=1e-10, atol=1e-12)


def test_omniscient_with_default_unit_weights_uses_plain_means():
    updates, _, corrupted = _round(6)
    out = omniscient(updates, None, corrupted, np.random.default_rng(0))
    np.testing.assert_allclose(out.mean(axis=0), -updates[~corrupted].mean(axis=0), rtol=1e-10, atol=1e-12)


def test_gaussian_noise_has_the_spread_of_the_clients_own_update():
    rng = np.random.default_rng(7)
    updates = rng.normal(size=(3, 50_000)) * np.array([[0.1], [1.0], [3.0]])
    corrupted = np.array([False, True, True])
    out = gaussian(updates, None, corrupted, np.random.default_rng(8))
    noise = out[corrupted] - updates[corrupted]
    np.testing.assert_allclose(noise.std(axis=1), updates[corrupted].std(axis=1), rtol=0.02)
    np.testing.assert_allclose(noise.mean(axis=1), 0.0, atol=0.05)


def test_gaussian_measures_spread_from_the_reference_model_when_rows_are_models():
    rng = np.random.default_rng(9)
    server = rng.normal(scale=100.0, size=20_000)
    models = server + 0.5 * rng.normal(size=(2, 20_000))
    corrupted = np.array([True, False])
    out = gaussian(models, None, corrupted, np.random.default_rng(10), reference=server)
    assert (out[0] - models[0]).std() == pytest.approx(0.5, rel=0.03)


def test_gaussian_fixed_sigma_overrides_the_rule():
    updates = np.zeros((2, 20_000))
    out = gaussian(updates, None, np.array([True, False]), np.random.default_rng(11), sigma=2.0)
    assert out[0].std() == pytest.approx(2.0, rel=0.03)


def test_gaussian_is_reproducible_for_a_seed():
    updates, weights, corrupted = _round()
    a = gaussian(updates, weights, corrupted, np.random.default_rng(3))
    b = gaussian(updates, weights, corrupted, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)


def test_sign_flip_sends_minus_scale_times_own_update():
    updates, weights, corrupted = _round()
    out = sign_flip(updates, weights, corrupted, np.random.default_rng(0), scale=4.0)
    np.testing.assert_array_equal(out[corrupted], -4.0 * updates[corrupted])


def test_inner_product_manipulation_sends_minus_epsilon_honest_mean():
    updates, weights, corrupted = _round()
    out = inner_product_manipulation(updates, weights, corrupted, np.random.default_rng(0), epsilon=0.5)
    honest_mean = np.average(updates[~corrupted], axis=0, weights=weights[~corrupted])
    np.testing.assert_allclose(out[corrupted], np.tile(-0.5 * honest_mean, (4, 1)))
    assert np.all(out[corrupted] @ honest_mean < 0)  # the point of the attack: a negative inner product


def test_a_little_is_enough_sends_mean_minus_z_std_of_honest_updates():
    updates, _, corrupted = _round()
    out = a_little_is_enough(updates, None, corrupted, np.random.default_rng(0), z=1.5)
    honest = updates[~corrupted]
    np.testing.assert_allclose(out[corrupted], np.tile(honest.mean(axis=0) - 1.5 * honest.std(axis=0), (4, 1)))


def test_a_little_is_enough_default_z_is_baruchs_z_max():
    # n = 12 clients, f = 4 corrupted: s = floor(12/2 + 1) - 4 = 3, z = Phi^{-1}((12 - 3) / 12).
    assert alie_z(12, 4) == pytest.approx(norm.ppf(9 / 12))
    updates, _, corrupted = _round()
    honest = updates[~corrupted]
    out = a_little_is_enough(updates, None, corrupted, np.random.default_rng(0))
    expected = honest.mean(axis=0) - norm.ppf(0.75) * honest.std(axis=0)
    np.testing.assert_allclose(out[corrupted][0], expected)


def test_a_little_is_enough_refuses_default_z_with_a_corrupted_majority():
    updates = np.random.default_rng(0).normal(size=(5, 3))
    mask = np.array([True, True, True, False, False])
    with pytest.raises(ValueError):
        a_little_is_enough(updates, None, mask, np.random.default_rng(0))
    out = a_little_is_enough(updates, None, mask, np.random.default_rng(0), z=1.0)
    assert np.all(np.isfinite(out))


def test_replay_sends_the_previous_aggregate_and_zero_before_the_first_round():
    updates, weights, corrupted = _round()
    previous = np.linspace(-1, 1, updates.shape[1])
    out = replay_previous(updates, weights, corrupted, np.random.default_rng(0), previous=previous)
    assert np.all(out[corrupted] == previous)
    assert not replay_previous(updates, weights, corrupted, np.random.default_rng(0))[corrupted].any()
    with pytest.raises(ValueError, match="previous"):
        replay_previous(updates, weights, corrupted, np.random.default_rng(0), previous=previous[:3])


def test_attacks_on_the_honest_mean_need_an_honest_client():
    updates = np.ones((3, 2))
    everyone = np.ones(3, dtype=bool)
    for attack, params in ((omniscient, {}), (inner_product_manipulation, {}), (a_little_is_enough, {"z": 1.0})):
        with pytest.raises(ValueError):
            attack(updates, None, everyone, np.random.default_rng(0), **params)


def test_corrupt_updates_rejects_unknown_names_and_non_boolean_masks():
    updates, weights, _ = _round()
    with pytest.raises(ValueError, match="known"):
        corrupt_updates("bit_flip", updates, weights, np.zeros(12, dtype=bool), np.random.default_rng(0))
    with pytest.raises(ValueError):
        corrupt_updates("sign_flip", updates, weights, np.array([0, 1] * 6), np.random.default_rng(0))


def test_registry_names_map_to_the_documented_functions():
    assert UPDATE_CORRUPTIONS["ipm"] is inner_product_manipulation
    assert UPDATE_CORRUPTIONS["alie"] is a_little_is_enough
    assert UPDATE_CORRUPTIONS["empire"] is inner_product_manipulation  # Yi et al.'s Table 1 names
    assert UPDATE_CORRUPTIONS["sv"] is a_little_is_enough
    assert UPDATE_CORRUPTIONS["replay"] is replay_previous
    assert set(UPDATE_CORRUPTIONS) == {"gaussian", "omniscient", "sign_flip", "ipm", "alie", "empire", "sv", "replay"}
    with pytest.raises(TypeError):
        UPDATE_CORRUPTIONS["new"] = sign_flip  # read-only


def test_table1_empire_and_sv_follow_their_formulas_and_leave_honest_rows_untouched():
    updates, weights, corrupted = _round(2)
    honest_mean = np.average(updates[~corrupted], axis=0, weights=weights[~corrupted])
    empire = corrupt_updates("empire", updates, weights, corrupted, np.random.default_rng(0), epsilon=0.1)
    np.testing.assert_allclose(empire[corrupted], np.tile(-0.1 * honest_mean, (4, 1)))
    sv = corrupt_updates("sv", updates, None, corrupted, np.random.default_rng(0), z=1.2)
    honest = updates[~corrupted]
    np.testing.assert_allclose(sv[corrupted], np.tile(honest.mean(axis=0) - 1.2 * honest.std(axis=0), (4, 1)))
    for out in (empire, sv):
        np.testing.assert_array_equal(out[~corrupted], updates[~corrupted])
