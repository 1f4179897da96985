"""The plaintext smoothed Weiszfeld algorithm (RFA paper, Algorithms 2 and 3)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from rfa import PointsError, WeightError, geometric_median, one_step, weiszfeld_weights


def reference_weiszfeld(points, alpha, nu, steps, init=None):
    """Algorithm 2 as written in the paper: one Python loop over the points per step."""
    points = np.asarray(points, dtype=float)
    alpha = np.asarray(alpha, dtype=float)
    n = len(points)
    v = sum(alpha[i] * points[i] for i in range(n)) / alpha.sum() if init is None else np.asarray(init, float)

    def g(v):
        return sum(alpha[i] * np.linalg.norm(v - points[i]) for i in range(n))

    objective = [g(v)]
    beta = None
    for _ in range(steps):
        beta = np.array([alpha[i] / max(nu, np.linalg.norm(v - points[i])) for i in range(n)])
        v = sum(beta[i] * points[i] for i in range(n)) / beta.sum()
        objective.append(g(v))
    return v, np.array(objective), beta


def unit_gradient(points, alpha, v):
    """sum_i alpha_i (v - w_i) / ||v - w_i||: the gradient of g where no w_i equals v."""
    diff = v - points
    return (alpha[:, None] * diff / np.linalg.norm(diff, axis=1)[:, None]).sum(axis=0)


def contaminated(seed, n=40, d=6, outliers=12, shift=1e3):
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(n, d))
    points[:outliers] += shift
    return points


@pytest.mark.parametrize(
    "seed, offset, nu",
    [(0, 0.0, 1e-6), (1, 1e6, 1e-6), (2, -3e4, 1e-2), (3, 0.0, 10.0)],
)
def test_fixed_steps_equal_the_reference_loop(seed, offset, nu):
    points = contaminated(seed) + offset
    alpha = np.random.default_rng(seed + 100).uniform(0.1, 3.0, size=len(points))
    ours = geometric_median(points, alpha, nu=nu, max_iter=25, tol=None)
    v, objective, beta = reference_weiszfeld(points, alpha, nu, 25)
    scale = np.ptp(points, axis=0).max()
    assert ours.n_iter == 25
    np.testing.assert_allclose(ours.median, v, rtol=0, atol=1e-11 * scale + 1e-13 * abs(offset))
    np.testing.assert_allclose(ours.objective, objective, rtol=1e-11)
    np.testing.assert_allclose(ours.weights, beta, rtol=1e-9)


def test_points_close_to_the_iterate_far_from_the_start_keep_exact_weights():
    # A heavy tight cluster (weight 0.6) far from many light points: the start
    # (the weighted mean) is ~400 away, the iterates approach the cluster, and
    # ||v - w_i|| for its members is ~1e-4 while ||w_i - start|| ~ 400.  The
    # expanded form of the squared distance alone would lose about
    # eps * 400^2 / 1e-8 ~ 1e-3 of each of those weights to cancellation.
    rng = np.random.default_rng(7)
    d = 8
    anchor = np.full(d, 50.0)
    cluster = anchor + 1e-4 * rng.normal(size=(4, d))
    far = anchor + 1e3 + rng.normal(size=(30, d))
    points = np.vstack([cluster, far])
    alpha = np.r_[np.full(4, 0.15), np.full(30, 0.4 / 30)]
    ours = geometric_median(points, alpha, nu=1e-9, max_iter=40, tol=None)
    v, objective, beta = reference_weiszfeld(points, alpha, 1e-9, 40)
    assert np.linalg.norm(v - anchor) < 1e-3  # the case is what it claims: v ends in the cluster
    # 1e-7, not 1e-15: beta_i = alpha_i / ||v - w_i|| with ||v - w_i|| ~ 2.5e-4
    # amplifies the last-bit differences of v (~1e-14) between any two
    # implementations about 1e5-fold over the steps.
    np.testing.assert_allclose(ours.weights, beta, rtol=1e-7)
    np.testing.assert_allclose(ours.median, v, rtol=0, atol=1e-12 * 1e3)


def test_default_start_is_the_weighted_mean_and_init_overrides_it():
    points = contaminated(4)
    alpha = np.arange(1.0, len(points) + 1)
    mean = alpha @ points / alpha.sum()
    assert geometric_median(points, alpha, max_iter=1).objective[0] == pytest.approx(
        float(alpha @ np.linalg.norm(points - mean, axis=1)), rel=1e-12
    )
    init = points[5] + 0.5
    result = geometric_median(points, alpha, max_iter=3, init=init, tol=None)
    v, objective, _ = reference_weiszfeld(points, alpha, 1e-6, 3, init=init)
    np.testing.assert_allclose(result.objective, objective, rtol=1e-12)
    np.testing.assert_allclose(result.median, v, atol=1e-9)


def test_median_is_the_beta_weighted_average_of_the_points():
    points = contaminated(5)
    result = geometric_median(points, max_iter=7, tol=None)
    np.testing.assert_allclose(result.median, result.weights @ points / result.weights.sum(), atol=1e-9)


@pytest.mark.parametrize("seed", [10, 11, 12])
def test_converged_median_has_zero_gradient(seed):
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(15, 3)) * [1.0, 3.0, 0.5]
    alpha = rng.uniform(0.5, 1.5, size=15)
    v = geometric_median(points, alpha, max_iter=300, tol=None).median
    assert np.linalg.norm(v - points, axis=1).min() > 1e-3  # no point coincides with v
    assert np.linalg.norm(unit_gradient(points, alpha, v)) < 1e-10 * alpha.sum()


def test_median_at_a_heavy_point_satisfies_the_subgradient_condition():
    # With more than half the weight on one point, the median is that point:
    # ||sum_{i != k} alpha_i (w_k - w_i) / ||w_k - w_i|| || <= alpha_k.
    rng = np.random.default_rng(13)
    points = rng.normal(size=(9, 4))
    alpha = np.r_[9.0, np.ones(8)]
    result = geometric_median(points, alpha, nu=1e-8, max_iter=500)
    assert np.linalg.norm(result.median - points[0]) < 1e-6
    others = unit_gradient(points[1:], alpha[1:], points[0])
    assert np.linalg.norm(others) <= alpha[0]
    # and the smoothed objective's gradient vanishes at the returned point
    diff = result.median - points
    smoothed = (alpha[:, None] * diff / np.maximum(1e-8, np.linalg.norm(diff, axis=1))[:, None]).sum(axis=0)
    assert np.linalg.norm(smoothed) < 1e-6 * alpha.sum()


def test_integer_weights_equal_duplicated_points():
    rng = np.random.default_rng(14)
    points = rng.normal(size=(8, 5))
    counts = np.array([1, 3, 2, 1, 4, 1, 2, 1])
    weighted = geometric_median(points, counts, max_iter=30, tol=None)
    duplicated = geometric_median(np.repeat(points, counts, axis=0), max_iter=30, tol=None)
    np.testing.assert_allclose(weighted.median, duplicated.median, atol=1e-12)
    np.testing.assert_allclose(weighted.objective, duplicated.objective, rtol=1e-12)


def test_identical_points_give_that_point_without_division_by_zero():
    points = np.tile([3.0, -1.0, 2.5], (6, 1))
    with np.errstate(all="raise"):
        result = geometric_median(points, max_iter=10)
    np.testing.assert_array_equal(result.median, points[0])
    np.testing.assert_array_equal(result.objective, 0.0)


def test_a_point_at_the_starting_mean_is_handled_and_is_the_median():
    # Square corners plus their centre: the start (the mean) is a data point,
    # at distance 0; by symmetry the median is the centre.
    points = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [0.0, 0.0]]) + [2.0, 3.0]
    with np.errstate(all="raise"):
        result = geometric_median(points, max_iter=20)
    np.testing.assert_allclose(result.median, [2.0, 3.0], atol=1e-12)
    assert result.objective[-1] == pytest.approx(4.0)


def test_collinear_points_odd_count_give_the_middle_point():
    direction = np.array([1.0, 2.0, -1.0]) / np.sqrt(6.0)
    t = np.array([0.0, 1.0, 2.0, 3.0, 10.0])
    points = np.array([5.0, -2.0, 7.0]) + t[:, None] * direction
    result = geometric_median(points, max_iter=200)
    np.testing.assert_allclose(result.median, points[2], atol=1e-6)


def test_collinear_points_even_count_give_a_point_of_the_middle_segment():
    direction = np.array([3.0, 4.0]) / 5.0
    t = np.array([0.0, 1.0, 2.0, 3.0])
    points = t[:, None] * direction
    result = geometric_median(points, np.ones(4), max_iter=200)
    s = result.median @ direction
    assert np.linalg.norm(result.median - s * direction) < 1e-9  # on the line
    assert 1.0 - 1e-9 <= s <= 2.0 + 1e-9
    # every point of [1, 2] has g = t + (t - 1) + (2 - t) + (3 - t) = 4
    assert result.objective[-1] == pytest.approx(4.0, rel=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_objective_never_increases(seed):
    # Proposition 2's descent: every distance stays above nu here, where the
    # smoothed objective is g itself.
    points = contaminated(seed + 20, outliers=seed * 4)
    alpha = np.random.default_rng(seed).uniform(0.2, 2.0, size=len(points))
    result = geometric_median(points, alpha, max_iter=60, tol=None)
    assert np.all(np.diff(result.objective) <= 1e-13 * result.objective[:-1])


def test_median_resists_less_than_half_the_weight_at_distance_1e6():
    rng = np.random.default_rng(21)
    inliers = rng.normal(size=(30, 5))
    outliers = 1e6 + rng.normal(size=(20, 5))
    points = np.vstack([inliers, outliers])
    alpha = np.r_[np.full(30, 0.6 / 30), np.full(20, 0.4 / 20)]
    centre = inliers.mean(axis=0)
    spread = np.linalg.norm(inliers - centre, axis=1).max()
    median = geometric_median(points, alpha, max_iter=100).median
    mean = alpha @ points / alpha.sum()
    assert np.linalg.norm(median - centre) <= spread
    assert np.linalg.norm(mean - centre) > 1e5


def test_stopping_rule_is_the_first_small_relative_improvement():
    points = contaminated(30)
    result = geometric_median(points, max_iter=500, tol=1e-6)
    obj = result.objective
    small = np.abs(obj[:-1] - obj[1:]) <= 1e-6 * obj[1:]
    assert result.n_iter < 500
    assert small[-1] and not small[:-1].any()
    assert len(obj) == result.n_iter + 1


def test_tol_none_takes_exactly_max_iter_steps_even_when_converged():
    points = np.tile([1.0, 2.0], (4, 1))
    assert geometric_median(points, max_iter=5, tol=None).n_iter == 5


def test_one_step_from_zero_matches_the_hand_computation():
    # norms 5 and 1: beta = (1/5, 1); v = ((0.6, 0.8) + (0, 1)) / 1.2
    np.testing.assert_allclose(one_step([[3.0, 4.0], [0.0, 1.0]]), [0.5, 1.5])


def test_one_step_from_a_centre_is_one_weiszfeld_step_from_there():
    points = contaminated(31)
    alpha = np.linspace(1.0, 2.0, len(points))
    centre = np.full(points.shape[1], 0.3)
    expected, _, _ = reference_weiszfeld(points, alpha, 1e-6, 1, init=centre)
    np.testing.assert_allclose(one_step(points, alpha, center=centre), expected, atol=1e-12)
    np.testing.assert_allclose(
        geometric_median(points, alpha, max_iter=1, init=centre).median, expected, atol=1e-12
    )


def test_weiszfeld_weights_smooth_a_zero_distance_with_nu():
    points = np.array([[0.0, 0.0], [3.0, 4.0], [1e-9, 0.0]])
    beta = weiszfeld_weights(points, np.zeros(2), np.array([2.0, 1.0, 1.0]), 1e-6)
    np.testing.assert_allclose(beta, [2.0 / 1e-6, 1.0 / 5.0, 1.0 / 1e-6])


@pytest.mark.parametrize(
    "weights, problem",
    [
        ([1.0, -1.0, 1.0], "negative"),
        ([1.0, np.nan, 1.0], "finite"),
        ([1.0, np.inf, 1.0], "finite"),
        ([0.0, 0.0, 0.0], "positive sum"),
        ([1.0, 1.0], "shape"),
        ([[1.0, 1.0, 1.0]], "shape"),
    ],
)
def test_invalid_weights_raise_weight_error_naming_the_problem(weights, problem):
    with pytest.raises(WeightError, match=problem):
        geometric_median(np.eye(3), weights)
    with pytest.raises(ValueError):  # WeightError is a ValueError
        one_step(np.eye(3), weights)


@pytest.mark.parametrize(
    "points, problem",
    [
        (np.ones(3), "2-D"),
        (np.ones((2, 2, 2)), "2-D"),
        (np.empty((0, 3)), "at least one row"),
        (np.array([[1.0, np.nan], [0.0, 0.0]]), "finite"),
        (np.array([["a", "b"]]), "numeric"),
    ],
)
def test_invalid_points_raise_points_error(points, problem):
    with pytest.raises(PointsError, match=problem):
        geometric_median(points)


@pytest.mark.parametrize("kwargs", [{"nu": 0.0}, {"nu": -1.0}, {"nu": np.nan}, {"max_iter": 0}, {"tol": -1.0}])
def test_invalid_parameters_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        geometric_median(np.eye(3), **kwargs)


def test_init_of_the_wrong_shape_is_refused():
    with pytest.raises(PointsError, match="init"):
        geometric_median(np.eye(3), init=np.zeros(2))


small_clouds = st.integers(2, 8).flatmap(
    lambda n: st.integers(1, 4).flatmap(
        lambda d: arrays(np.float64, (n, d), elements=st.integers(-50, 50).map(float))
    )
)


@settings(max_examples=60, deadline=None)
@given(points=small_clouds, shift=st.integers(-1000, 1000).map(float), data=st.data())
def test_median_is_translation_equivariant_and_permutation_invariant(points, shift, data):
    perm = data.draw(st.permutations(range(len(points))))
    base = geometric_median(points, max_iter=30, tol=None).median
    moved = geometric_median(points + shift, max_iter=30, tol=None).median
    permuted = geometric_median(points[list(perm)], max_iter=30, tol=None).median
    scale = 1.0 + np.abs(points).max()
    np.testing.assert_allclose(moved, base + shift, rtol=0, atol=1e-6 * (scale + abs(shift)))
    np.testing.assert_allclose(permuted, base, rtol=0, atol=1e-6 * scale)
