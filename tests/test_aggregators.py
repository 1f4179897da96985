"""Every aggregation rule against a hand-computed case and against its defining formula."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from rfa import (
    Aggregator,
    Cent2P,
    CenteredClipping,
    CenterOuter,
    CenterWithOutliers,
    CoordinateMedian,
    GeometricMedianRule,
    Krum,
    Mean,
    Mean2P,
    MeanOuter,
    MeanWithOutliers,
    MultiKrum,
    NeedsVote,
    NormClippedMean,
    OneStepRule,
    PlaintextOnly,
    TrimmedMean,
    TwoPhaseRule,
    WeightError,
    geometric_median,
    make_aggregator,
    one_step,
    registry,
)
from rfa.errors import InvalidArgument

# Parameters that make every registered rule runnable on 15 points.
PARAMS = {
    "trimmed_mean": {"beta": 0.2},
    "krum": {"f": 3},
    "multi_krum": {"f": 3, "m": 4},
    "centered_clipping": {"tau": 1.0, "iterations": 3},
    "center_wo": {"f": 3},
    "mean_wo": {"f": 3},
    "center_outer": {"f": 3},
    "mean_outer": {"f": 3},
    "cent2p": {"f": 3},
    "mean2p": {"f": 3},
}


def every_rule() -> list[Aggregator]:
    """Every registered rule that maps points to an aggregate (two-phase rules need a vote: tested apart)."""
    rules = [make_aggregator(name, **PARAMS.get(name, {})) for name in sorted(registry)]
    return [rule for rule in rules if not isinstance(rule, TwoPhaseRule)]


def cloud(seed: int, n: int = 15, d: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


# --- Brute-force references, one loop per definition ------------------------------


def trimmed_mean_reference(points, k):
    n, d = points.shape
    return np.array([np.mean(sorted(points[:, j])[k : n - k]) for j in range(d)])


def krum_scores_reference(points, f):
    n = len(points)
    scores = []
    for i in range(n):
        d2 = sorted(float(np.sum((points[i] - points[j]) ** 2)) for j in range(n) if j != i)
        scores.append(sum(d2[: n - f - 2]))
    return np.array(scores)


def centered_clipping_reference(points, alpha, tau, iterations, v):
    for _ in range(iterations):
        step = np.zeros_like(v)
        for w, a in zip(points, alpha):
            x = w - v
            norm = np.linalg.norm(x)
            step += a * (x if norm <= tau else x * tau / norm)
        v = v + step / alpha.sum()
    return v


def algorithm2_reference(points, f, cost):
    """Yi et al., Algorithm 2, literally: K(x_i), dist_i = cost(x_i, K(x_i)), argmin, mean."""
    n = len(points)
    best_cost, best_cluster = np.inf, None
    for i in range(n):
        by_distance = sorted(range(n), key=lambda j: (np.linalg.norm(points[j] - points[i]), j != i))
        cluster = by_distance[: n - f]
        distances = [np.linalg.norm(points[j] - points[i]) for j in cluster]
        c = max(distances) if cost == "center" else sum(x * x for x in distances)
        if c < best_cost:
            best_cost, best_cluster = c, cluster
    return points[best_cluster].mean(axis=0)


# --- The interface ----------------------------------------------------------------


def test_registry_names_modes_and_oracle_calls_are_consistent():
    assert {"mean", "geometric_median", "one_step"} <= set(registry)
    for name, rule_class in registry.items():
        rule = make_aggregator(name, **PARAMS.get(name, {}))
        assert isinstance(rule, rule_class) and isinstance(rule, Aggregator)
        assert rule.name == name
        assert rule.mode in ("secure", "plaintext")
        assert isinstance(rule.uses_weights, bool)
        if rule.mode == "secure":
            assert isinstance(rule.oracle_calls, int) and rule.oracle_calls >= 1
        else:
            assert rule.oracle_calls is None
    secure = {name for name, rule in registry.items() if rule.mode == "secure"}
    assert secure == {"mean", "geometric_median", "one_step"}


@pytest.mark.parametrize("rule", every_rule(), ids=lambda r: r.name)
def test_each_rule_returns_one_vector_and_honours_its_uses_weights_flag(rule):
    points = cloud(0)
    alpha = np.random.default_rng(1).uniform(0.1, 5.0, size=len(points))
    plain = rule(points)
    weighted = rule(points, alpha)
    assert plain.shape == (points.shape[1],) and np.all(np.isfinite(plain))
    if rule.uses_weights:
        assert not np.allclose(plain, weighted)
    else:
        np.testing.assert_array_equal(plain, weighted)


@pytest.mark.parametrize("rule", every_rule(), ids=lambda r: r.name)
def test_each_rule_validates_weights_even_when_it_ignores_them(rule):
    with pytest.raises(WeightError, match="negative"):
        rule(cloud(0), -np.ones(15))


def test_unknown_rule_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="krum"):
        make_aggregator("median-of-means")


def test_an_unknown_parameter_is_an_invalid_argument_naming_it_and_the_rules_parameters():
    # Issue 25: make_aggregator("mean", nu=...) raised a raw TypeError from the dataclass.
    with pytest.raises(InvalidArgument, match=r"mean has no parameter 'nu'; it takes no parameters"):
        make_aggregator("mean", nu=0.1)
    with pytest.raises(InvalidArgument, match=r"krum has no parameter 'beta'; its parameters are f$"):
        make_aggregator("krum", beta=0.1)
    assert make_aggregator("trimmed_mean", beta=0.2).beta == 0.2


@pytest.mark.parametrize(
    "build",
    [
        lambda: TrimmedMean(beta=0.5),
        lambda: NormClippedMean(tau=0.0),
        lambda: Krum(f=-1),
        lambda: MultiKrum(f=1, m=0),
        lambda: GeometricMedianRule(rounds=0),
        lambda: OneStepRule(nu=0.0),
        lambda: CenteredClipping(tau=1.0, iterations=0),
        lambda: CenterWithOutliers(f=1.5),
    ],
)
def test_invalid_parameters_are_refused_at_construction(build):
    with pytest.raises(ValueError):
        build()


@pytest.mark.parametrize(
    "rule, n",
    [(Krum(f=3), 5), (MultiKrum(f=1, m=6), 5), (CenterWithOutliers(f=3), 6), (MeanWithOutliers(f=2), 4)],
    ids=["krum needs n-f-2>=1", "m<=n", "centerwo needs f<n/2", "meanwo needs f<n/2"],
)
def test_rules_refuse_too_few_points_for_their_f(rule, n):
    with pytest.raises(ValueError):
        rule(cloud(2, n=n))


# --- Secure rules, computed in plaintext ------------------------------------------


def test_mean_is_the_weighted_mean():
    np.testing.assert_allclose(Mean()([[0.0, 0.0], [2.0, 4.0]], [3.0, 1.0]), [0.5, 1.0])
    points, alpha = cloud(3), np.arange(1.0, 16.0)
    np.testing.assert_allclose(Mean()(points, alpha), np.average(points, axis=0, weights=alpha))
    assert Mean().oracle_calls == 1


def test_geometric_median_rule_is_a_fixed_number_of_weiszfeld_steps():
    points, alpha = cloud(4), np.linspace(1.0, 3.0, 15)
    rule = GeometricMedianRule(rounds=4, nu=1e-5)
    expected = geometric_median(points, alpha, nu=1e-5, max_iter=4, tol=None)
    np.testing.assert_array_equal(rule(points, alpha), expected.median)
    assert expected.n_iter == 4
    assert rule.oracle_calls == 5  # the starting weighted mean, then one call per step


def test_one_step_rule_is_algorithm_3():
    points, alpha = cloud(5), np.linspace(1.0, 3.0, 15)
    np.testing.assert_array_equal(OneStepRule(nu=1e-3)(points, alpha), one_step(points, alpha, nu=1e-3))
    assert OneStepRule().oracle_calls == 1


# --- Coordinate-wise median ---------------------------------------------------------


def test_coordinate_median_hand_cases():
    points = np.array([[1.0, 10.0], [2.0, 30.0], [3.0, 20.0], [100.0, -5.0]])
    np.testing.assert_allclose(CoordinateMedian()(points), [2.5, 15.0])
    column = np.array([[1.0], [2.0], [3.0]])
    np.testing.assert_allclose(CoordinateMedian()(column, [0.2, 0.2, 0.6]), [3.0])  # 0.6 > half
    # cumulative weight reaches exactly half at 1: the midpoint of 1 and 2
    np.testing.assert_allclose(CoordinateMedian()(column, [0.5, 0.25, 0.25]), [1.5])
    # a zero-weight point is never the median
    np.testing.assert_allclose(CoordinateMedian()(column, [1.0, 0.0, 1.0]), [2.0])


@pytest.mark.parametrize("n", [7, 8])
def test_coordinate_median_equals_numpy_median_with_equal_weights(n):
    points = cloud(6, n=n, d=9)
    np.testing.assert_array_equal(CoordinateMedian()(points), np.median(points, axis=0))
    np.testing.assert_array_equal(CoordinateMedian()(points, np.full(n, 0.3)), np.median(points, axis=0))


def test_weighted_coordinate_median_minimises_weighted_absolute_deviation():
    rng = np.random.default_rng(7)
    points = rng.normal(size=(11, 6))
    alpha = rng.uniform(0.1, 2.0, size=11)
    median = CoordinateMedian()(points, alpha)
    for j in range(points.shape[1]):
        def loss(m):
            return float(alpha @ np.abs(points[:, j] - m))
        assert loss(median[j]) <= min(loss(x) for x in points[:, j]) + 1e-12


# --- Trimmed mean -------------------------------------------------------------------


def test_trimmed_mean_hand_case():
    points = np.array([[1.0, -50.0], [2.0, 0.0], [3.0, 1.0], [4.0, 2.0], [100.0, 3.0]])
    # beta n = 1: drop one value at each end of each column
    np.testing.assert_allclose(TrimmedMean(beta=0.2)(points), [3.0, 1.0])
    np.testing.assert_allclose(TrimmedMean(beta=0.19)(points), points.mean(axis=0))  # floor(0.95) = 0


@pytest.mark.parametrize("n, beta", [(10, 0.1), (13, 0.3), (9, 0.45), (20, 0.0)])
def test_trimmed_mean_equals_the_sorting_reference(n, beta):
    points = cloud(8, n=n, d=7)
    points[0] = 1e9  # an outlier row that must be trimmed whenever beta n >= 1
    expected = trimmed_mean_reference(points, int(np.floor(beta * n)))
    np.testing.assert_allclose(TrimmedMean(beta=beta)(points), expected, rtol=1e-12)


# --- Norm clipping ----------------------------------------------------------------------


def test_norm_clipped_mean_hand_case():
    # (3, 4) has norm 5 -> (0.6, 0.8); (0.1, 0) is inside the ball; zero is kept.
    points = np.array([[3.0, 4.0], [0.1, 0.0], [0.0, 0.0]])
    np.testing.assert_allclose(NormClippedMean(tau=1.0)(points), [0.7 / 3, 0.8 / 3])


def test_norm_clipped_mean_equals_its_formula():
    points = cloud(9) * np.linspace(0.1, 3.0, 15)[:, None]
    alpha = np.linspace(1.0, 2.0, 15)
    expected = sum(a * w * min(1.0, 1.5 / np.linalg.norm(w)) for a, w in zip(alpha, points)) / alpha.sum()
    np.testing.assert_allclose(NormClippedMean(tau=1.5)(points, alpha), expected, rtol=1e-12)


# --- Krum and Multi-Krum --------------------------------------------------------------------


def test_krum_and_multi_krum_hand_case():
    # f = 1, n - f - 2 = 2 neighbours; squared-distance scores:
    # 0: .25 + 4 = 4.25, 0.5: .25 + 2.25 = 2.5, 2: 2.25 + 4 = 6.25, 10: 1 + 64, 11: 1 + 81
    points = np.array([[0.0], [0.5], [2.0], [10.0], [11.0]])
    np.testing.assert_array_equal(Krum(f=1)(points), [0.5])
    np.testing.assert_allclose(MultiKrum(f=1, m=2)(points), [0.25])
    np.testing.assert_allclose(MultiKrum(f=1, m=2)(points, [1.0, 3.0, 1.0, 1.0, 1.0]), [0.375])


@pytest.mark.parametrize("seed", range(3))
def test_krum_equals_the_brute_force_loop(seed):
    points = cloud(10 + seed, n=12, d=5)
    points[:3] += 20.0 * np.random.default_rng(seed).normal(size=(3, 5))
    scores = krum_scores_reference(points, 3)
    np.testing.assert_array_equal(Krum(f=3)(points), points[np.argmin(scores)])
    best = np.argsort(scores, kind="stable")[:5]
    alpha = np.linspace(1.0, 2.0, 12)
    np.testing.assert_allclose(MultiKrum(f=3, m=5)(points, alpha), alpha[best] @ points[best] / alpha[best].sum())


# --- Centred clipping -------------------------------------------------------------------------


def test_centered_clipping_hand_case():
    points = np.array([[0.0], [1.0], [100.0]])
    # from 0: clip(0) + clip(1) + clip(100) = 0 + 1 + 1 -> v = 2/3
    np.testing.assert_allclose(CenteredClipping(tau=1.0, iterations=1, init=[0.0])(points), [2 / 3])
    # then from 2/3: -2/3 + 1/3 + 1 = 2/3 -> v = 2/3 + 2/9
    np.testing.assert_allclose(CenteredClipping(tau=1.0, iterations=2, init=[0.0])(points), [8 / 9])


@pytest.mark.parametrize("init", [None, np.full(4, 5.0)])
def test_centered_clipping_equals_the_loop(init):
    points = cloud(13)
    points[:3] += 50.0
    alpha = np.linspace(0.5, 2.0, 15)
    start = alpha @ points / alpha.sum() if init is None else init
    expected = centered_clipping_reference(points, alpha, 0.8, 5, start)
    rule = CenteredClipping(tau=0.8, iterations=5, init=init)
    np.testing.assert_allclose(rule(points, alpha), expected, rtol=1e-10, atol=1e-12)


# --- CenterwO and MeanwO (Yi et al., Algorithm 2) ----------------------------------------------


@pytest.mark.parametrize("rule", [CenterWithOutliers(f=2), MeanWithOutliers(f=2)], ids=["center", "mean"])
def test_clustering_rules_return_the_mean_of_the_inliers(rule):
    inliers = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, 0.5]])
    points = np.vstack([inliers, [[100.0, 100.0], [-100.0, 50.0]]])
    np.testing.assert_allclose(rule(points), [0.5, 0.5])


def test_center_and_mean_costs_pick_different_clusters():
    # 1-D, f = 2, clusters of 3.  Center x, its cluster, max distance, sum of squares:
    # 0: {0,1,5} 5, 26;  1: {1,0,5} 4, 17;  5: {5,8,1} 4, 25;  8: {8,5,11} 3, 18;  11: {11,8,5} 6, 45
    points = np.array([[0.0], [1.0], [5.0], [8.0], [11.0]])
    np.testing.assert_allclose(CenterWithOutliers(f=2)(points), [8.0])  # mean of {5, 8, 11}
    np.testing.assert_allclose(MeanWithOutliers(f=2)(points), [2.0])  # mean of {0, 1, 5}


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("cost, rule_class", [("center", CenterWithOutliers), ("mean", MeanWithOutliers)])
def test_clustering_rules_equal_the_literal_algorithm(seed, cost, rule_class):
    rng = np.random.default_rng(20 + seed)
    points = rng.normal(size=(13, 4))
    points[:5] = rng.normal(loc=6.0, scale=3.0, size=(5, 4))
    for f in (0, 3, 6):
        np.testing.assert_allclose(rule_class(f=f)(points), algorithm2_reference(points, f, cost), rtol=1e-12)


def test_clustering_rules_keep_the_point_itself_among_duplicates():
    # Three copies of one point: K(x_i) must contain x_i; any choice of copies
    # gives the same mean, and the answer is that point.
    points = np.array([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [9.0, 0.0], [0.0, 9.0]])
    np.testing.assert_allclose(CenterWithOutliers(f=2)(points), [1.0, 1.0])
    np.testing.assert_allclose(MeanWithOutliers(f=2)(points), [1.0, 1.0])


# --- Outer aggregation (Yi et al. Sec. 4.1) and the two-phase candidates (Algorithm 3) --------------


def outer_reference(points, f, cost):
    """Brute force: of all f-point subsets S, the one with the least cost from its best member; mean of the rest.

    Equal 1-center radii are ranked by the sum of squared distances, the rule's documented tie-break.
    """
    n = len(points)
    best_cost, best_set = (np.inf,), ()
    for subset in itertools.combinations(range(n), f):
        for centre in subset:
            distances = [np.linalg.norm(points[j] - points[centre]) for j in subset]
            spread = sum(x * x for x in distances)
            c = (max(distances) ** 2, spread) if cost == "center" else (spread,)
            if c < best_cost:
                best_cost, best_set = c, subset
    return np.delete(points, list(best_set), axis=0).mean(axis=0)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("cost, rule_class", [("center", CenterOuter), ("mean", MeanOuter)])
def test_outer_aggregation_equals_the_brute_force_over_all_f_point_subsets(seed, cost, rule_class):
    rng = np.random.default_rng(40 + seed)
    points = rng.normal(size=(9, 3))
    points[:3] = rng.normal(scale=0.3, size=(3, 3))  # a tight group, as a sneak attack would place
    for f in (2, 3, 4):
        np.testing.assert_allclose(rule_class(f=f)(points), outer_reference(points, f, cost), rtol=1e-12)


@pytest.mark.parametrize("rule_class", [CenterOuter, MeanOuter])
def test_outer_aggregation_removes_a_sneak_attack_inside_the_honest_cloud(rule_class):
    honest = cloud(5, n=9, d=3)
    sneak = np.tile(honest.mean(axis=0) + 0.3, (4, 1))  # 4 identical vectors inside the cloud
    points = np.vstack([honest, sneak])
    np.testing.assert_allclose(rule_class(f=4)(points), honest.mean(axis=0))
    assert not np.allclose(CenterWithOutliers(f=4)(points), honest.mean(axis=0))  # Inner keeps them


def test_outer_aggregation_with_f_zero_is_the_mean_and_needs_f_below_n():
    points = cloud(1, n=5)
    np.testing.assert_allclose(CenterOuter(f=0)(points), points.mean(axis=0))
    with pytest.raises(ValueError, match="f < n"):
        MeanOuter(f=5)(points)


@pytest.mark.parametrize(
    "rule, inner, outer",
    [(Cent2P(f=3), CenterWithOutliers(f=3), CenterOuter(f=3)), (Mean2P(f=3), MeanWithOutliers(f=3), MeanOuter(f=3))],
    ids=["cent2p", "mean2p"],
)
def test_two_phase_candidates_are_inner_then_outer_and_the_rule_refuses_to_aggregate_without_a_vote(rule, inner, outer):
    points = cloud(7)
    candidates = rule.candidates(points)
    np.testing.assert_array_equal(candidates, np.stack([inner(points), outer(points)]))
    assert rule.mode == "plaintext" and rule.oracle_calls is None
    assert make_aggregator(rule.name, f=3) == rule
    with pytest.raises(NeedsVote, match="vote"):
        rule(points)
    with pytest.raises(PlaintextOnly):
        rule.secure(points)


# --- Robustness and symmetry ------------------------------------------------------------------------


ROBUST = [
    GeometricMedianRule(rounds=30),
    CoordinateMedian(),
    TrimmedMean(beta=0.2),
    NormClippedMean(tau=1.0),
    Krum(f=3),
    MultiKrum(f=3, m=5),
    CenteredClipping(tau=1.0, iterations=5, init=np.zeros(4)),
    CenterWithOutliers(f=3),
    MeanWithOutliers(f=3),
]


@pytest.mark.parametrize("rule", ROBUST, ids=lambda r: r.name)
def test_robust_rules_ignore_three_far_outliers_that_move_the_mean(rule):
    points = cloud(30)
    inlier_centre = points[3:].mean(axis=0)
    spread = np.linalg.norm(points[3:] - inlier_centre, axis=1).max()
    points[:3] = 1e6
    assert np.linalg.norm(Mean()(points) - inlier_centre) > 1e5
    assert np.linalg.norm(rule(points) - inlier_centre) <= spread


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), data=st.data())
def test_every_rule_is_permutation_invariant(seed, data):
    points = cloud(seed)
    alpha = np.random.default_rng(seed).uniform(0.5, 2.0, size=15)
    perm = np.array(data.draw(st.permutations(range(15))))
    for rule in every_rule():
        np.testing.assert_allclose(rule(points[perm], alpha[perm]), rule(points, alpha), rtol=1e-9, atol=1e-12)


integer_clouds = st.integers(1, 9).flatmap(
    lambda n: st.integers(1, 4).flatmap(lambda d: arrays(np.float64, (n, d), elements=st.integers(-99, 99).map(float)))
)


@settings(max_examples=60, deadline=None)
@given(points=integer_clouds, shift=st.integers(-1000, 1000).map(float), weights_seed=st.integers(0, 100))
def test_coordinate_median_and_trimmed_mean_are_translation_equivariant(points, shift, weights_seed):
    alpha = np.random.default_rng(weights_seed).integers(1, 4, size=len(points)).astype(float)
    # integer data and shift: every value is exact, so equality is exact
    np.testing.assert_array_equal(CoordinateMedian()(points + shift, alpha), CoordinateMedian()(points, alpha) + shift)
    np.testing.assert_allclose(TrimmedMean(beta=0.25)(points + shift), TrimmedMean(beta=0.25)(points) + shift, atol=1e-9)
