"""rfa.personal_mean, its adversaries and its bounds: each formula against an independent hand computation,
then the algorithm on simulated problems (c = 0, every adversary, the quality estimate, the bounds)."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, optimize, stats

from rfa.errors import PersonalMeanError, RFAError
from rfa.personal_mean import (
    ClusterSpacingError,
    Problem,
    ServerOutput,
    combine_estimates,
    label_oracle,
    make_problem,
    mse,
    no_collaboration,
    plain_median,
    quality_estimate,
    robust_clustering,
    split_sizes,
)
from rfa.personal_mean.adversaries import ADVERSARIES, Concentrate, Elongate, FakeClusters, LowerBound, _plateau_samples, _split
from rfa.personal_mean.bounds import (
    SQRT_2PI,
    bayes_floor,
    combine_weight,
    component_bound,
    estimate_ceiling,
    far_term,
    lower_bound,
    lower_bound_exact,
    median_error,
    rho,
    spread,
    upper_bound,
    window_deficit,
    window_mass,
)

K, M, BACKOFF = 10, 20_000, 0.05
norm = stats.norm


def f_by_hand(x: float, d: float) -> float:
    return norm.cdf(x + d) - norm.cdf(x - d)


def spread_by_hand(eps: float, d: float) -> float:
    return optimize.brentq(lambda x: f_by_hand(x, d) - (rho(d) - eps), 0.0, 50.0, xtol=1e-14)


# --- bounds: formulas -------------------------------------------------------------------------


def test_rho_is_the_mass_within_delta_of_the_mean():
    assert rho(2.0) == pytest.approx(norm.cdf(2) - norm.cdf(-2), rel=1e-14)
    assert float(window_mass(0.0, 3.0)) == pytest.approx(rho(3.0), rel=1e-14)


@pytest.mark.parametrize("x", [1e-6, 1e-3, 0.3, 0.99, 1.5, 4.0])
def test_window_deficit_equals_the_integral_of_the_density_difference(x):
    d = 2.0
    mpmath.mp.dps = 40
    by_quad = mpmath.quad(lambda t: mpmath.npdf(t - d) - mpmath.npdf(t + d), [0, x])
    assert float(window_deficit(x, d)) == pytest.approx(float(by_quad), rel=1e-12)


@pytest.mark.parametrize("d", [1.6, 2.0, 3.0])
@pytest.mark.parametrize("eps", [1e-4, 0.05, 0.5, 0.8])
def test_spread_inverts_the_window_mass(d, eps):
    assert float(spread(eps, d)) == pytest.approx(spread_by_hand(eps, d), rel=1e-9)


@settings(max_examples=40, deadline=None)
@given(st.floats(min_value=1e-14, max_value=0.95))
def test_spread_keeps_relative_precision_down_to_tiny_masses(eps):
    assert float(window_deficit(spread(eps, 2.0), 2.0)) == pytest.approx(eps, rel=1e-8)


def test_spread_is_zero_without_corruption_and_infinite_once_the_mass_passes_the_filter_alone():
    assert float(spread(0.0, 2.0)) == 0.0
    assert np.isinf(spread(rho(2.0), 2.0))


@pytest.mark.parametrize("eps", [0.1, 0.5, 0.9])
def test_median_error_is_lemma_2_by_hand(eps):
    d = 2.0
    x = spread_by_hand(eps, d) if eps < rho(d) else math.inf
    arg = 0.5 * (1 + eps + norm.cdf(x + d) - norm.cdf(d))
    expected = norm.ppf(arg) if arg < 1 else math.inf
    assert float(median_error(eps, d)) == pytest.approx(expected, rel=1e-8)


def test_median_error_is_zero_at_zero_increasing_and_infinite_past_phi_delta():
    eps = np.linspace(0, 0.99, 200)
    g = median_error(eps, 2.0)
    assert g[0] == 0.0
    assert np.all(np.diff(g[np.isfinite(g)]) > 0)
    assert np.isinf(median_error(norm.cdf(2.0) + 1e-9, 2.0))  # eps >= rho: 1 + eps + 1 - Phi(Delta) >= 2


def test_estimate_ceiling_is_lemma_3_by_hand():
    d, eps = 2.0, 0.3
    assert float(estimate_ceiling(eps, d)) == pytest.approx(eps + spread_by_hand(eps, d) * norm.pdf(d), rel=1e-9)


def test_combine_weight_trusts_the_own_sample_fully_at_infinite_error():
    assert combine_weight(np.array([0.0, 1.0, np.inf])).tolist() == [0.0, 0.5, 1.0]


def test_component_bound_runs_from_0_to_1():
    b = component_bound(np.array([0.0, 0.1, 0.5, 0.95]), 2.0)
    assert b[0] == 0.0 and b[-1] == 1.0 and np.all(np.diff(b) >= 0)
    g = float(median_error(estimate_ceiling(0.1, 2.0), 2.0))
    assert b[1] == pytest.approx(g * g / (1 + g * g), rel=1e-12)


@pytest.mark.parametrize("d", [2.0, 3.0])
def test_far_term_is_the_integral_of_the_worst_error_beyond_1_5_delta(d):
    a = 1.5 * d
    by_quad, _ = integrate.quad(lambda z: 2 * (z + a) ** 2 * norm.pdf(z), a, np.inf, epsabs=0, epsrel=1e-12)
    assert far_term(d) == pytest.approx(by_quad, rel=1e-9)


@pytest.mark.parametrize("d", [2.0, 3.0, 4.0])
def test_upper_bound_is_the_concave_envelope_of_the_component_bound_plus_the_far_term(d):
    ub = upper_bound(d)
    x = np.concatenate((np.geomspace(1e-20, 1.0, 300), [1.2]))
    env = ub.envelope(x)
    assert np.all(env >= np.minimum(component_bound(x, d), 1.0) - 1e-9)  # a majorant
    assert np.all(np.diff(env) >= -1e-12)
    lin = np.linspace(0.01, 1.0, 100)
    assert np.all(np.diff(ub.envelope(lin), 2) <= 1e-12)  # concave
    near = 1 - 2 * norm.cdf(-1.5 * d)
    assert float(ub.value(0.4)) == pytest.approx(near * (ub.c0 * 0.4 + ub.c1) + ub.far, rel=1e-9)  # Theorem 2, first case
    assert float(ub.value(0.0)) == pytest.approx(ub.far, rel=1e-12)


def test_upper_bound_constants_behave_as_theorem_2_says():
    bounds = {d: upper_bound(d) for d in (2.0, 3.0, 4.0)}
    # C0 close to 1 and tending to 1, C1 and eps_cr << 1 and tending to 0
    assert bounds[2.0].c0 > bounds[3.0].c0 > bounds[4.0].c0 > 1.0 and bounds[4.0].c0 < 1.01
    assert bounds[2.0].c1 > bounds[3.0].c1 > bounds[4.0].c1 and bounds[2.0].c1 < 1e-3
    # the paper's eps_cr: 8.1e-6, 1.2e-9, 1.4e-14 (same order of magnitude; the paper's grid is not given)
    for d, paper in ((2.0, 8.1e-6), (3.0, 1.2e-9), (4.0, 1.4e-14)):
        assert 1 / 3 < bounds[d].eps_cr / paper < 3


def test_upper_bound_refuses_delta_outside_theorem_2():
    with pytest.raises(PersonalMeanError, match="Delta > 1.5"):
        upper_bound(1.5)
    with pytest.raises(PersonalMeanError):
        upper_bound(2.0).value(-0.1)


def test_lower_bound_closed_form_and_its_range():
    assert float(lower_bound(0.5)) == pytest.approx(0.5 / math.sqrt(8 * math.pi), rel=1e-15)
    with pytest.raises(PersonalMeanError, match="sqrt"):
        lower_bound(SQRT_2PI)
    assert isinstance(PersonalMeanError("x"), RFAError)


@pytest.mark.parametrize("j", [1, 2, 3])
def test_exact_lower_bound_meets_the_closed_form_when_the_split_is_whole(j):
    c = j * SQRT_2PI
    exact = lower_bound_exact(c, K)
    assert exact.value == pytest.approx(float(lower_bound(c / K)), rel=1e-6)
    assert exact.allocation.sum() == pytest.approx(c) and np.sum(exact.allocation > 1e-9) == j


@pytest.mark.parametrize("c", [0.3, 1.0, 2.0, 3.7])
def test_exact_lower_bound_matches_brute_force_on_two_components(c):
    e1 = np.linspace(0, c, 200_001)
    brute = np.max(bayes_floor(e1) + bayes_floor(c - e1)) / 2
    exact = lower_bound_exact(c, 2)
    assert exact.value == pytest.approx(brute, rel=1e-7)
    assert exact.value <= float(lower_bound(c / 2)) + 1e-12  # the closed form is the envelope


def test_exact_lower_bound_matches_brute_force_on_three_components():
    c = 4.0
    a, b = np.meshgrid(np.linspace(0, c, 1601), np.linspace(0, c, 1601))
    ok = a + b <= c
    brute = np.max((bayes_floor(a) + bayes_floor(b) + bayes_floor(np.clip(c - a - b, 0, None)))[ok]) / 3
    assert lower_bound_exact(c, 3).value == pytest.approx(brute, rel=1e-4)
    assert lower_bound_exact(c, 3).value >= brute - 1e-12


# --- the algorithm's pieces by hand ------------------------------------------------------------


def test_split_sizes_follow_lines_2_to_4():
    m_h, m1, m2 = split_sizes(20_000, 10, 0.05)
    assert m_h == pytest.approx(800 * math.log(200))
    assert m1 == m2 == pytest.approx((20_000 - m_h) / 2)
    with pytest.raises(PersonalMeanError, match="too few"):
        split_sizes(4000, 10, 0.05)
    with pytest.raises(PersonalMeanError, match="backoff"):
        split_sizes(20_000, 10, 0.0)


def test_quality_estimate_is_line_15_by_hand():
    d, m2 = 2.0, 1000.0
    # m~ = m2 (one component's worth), l = 0.5: eps~ = 1 - (Phi(2.5) - Phi(-2)) + delta
    expected = 1 - (norm.cdf(2.5) - norm.cdf(-2.0)) + 0.05
    assert float(quality_estimate(1000, 0.5, m2, d, 0.05)) == pytest.approx(expected, rel=1e-12)


def _server(means, qualities) -> ServerOutput:
    return ServerOutput(np.array(means, float), np.array(qualities, float), (), np.zeros(len(means)), 0, 0, 0, 0, 0)


def test_combine_estimates_follows_algorithm_2_by_hand():
    d = 2.0
    server = _server([0.0, 50.0, 100.0], [0.0, 0.3, 0.99])
    x = np.array([0.5, 3.5, 51.0, 99.0, -2.9])
    g = float(median_error(0.3, d))
    expected = [
        0.0,  # g(0) = 0: adopt the server's mean
        3.5,  # 3.5 >= 1.5 Delta from the nearest mean: keep x_v
        (50.0 + g * g * 51.0) / (1 + g * g),  # line 4
        99.0,  # eps~ = 0.99 makes g infinite: keep x_v
        0.0,  # 2.9 < 3
    ]
    assert combine_estimates(server, x, d) == pytest.approx(expected, rel=1e-12)
    assert combine_estimates(_server([], []), x, d).tolist() == x.tolist()


def test_plain_median_clusters_by_3_delta_gaps_and_takes_the_nearest_median():
    values = np.array([0.0, 1.0, 2.0, 100.0, 101.0, 105.0])
    assert plain_median(values, np.array([0.7, 104.0]), 2.0).tolist() == [1.0, 101.0]


def test_label_oracle_combines_each_components_median_with_the_plain_median_bound():
    # k = 2, c = 0.5, m = 4: 10 points; component 0 has 4 genuine + 2 corrupted (eps = 0.5 with delta added), component 1 none corrupted
    values = np.array([-1.0, -0.5, 0.5, 1.0, 9.0, 9.0, 19.0, 20.0, 21.0, 22.0])
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
    corrupted = np.array([False] * 4 + [True] * 2 + [False] * 4)
    p = Problem(np.array([0.0, 20.0]), values, corrupted, labels, 2, 0.5, 4, 2.0)
    out = label_oracle(p, backoff=0.1)
    g0 = norm.ppf((1 + 0.6) / 2)  # eps = 6/4 - 1 + 0.1
    w0 = g0 * g0 / (1 + g0 * g0)
    med0 = np.median(values[:6])
    g1 = norm.ppf((1 + 0.1) / 2)
    w1 = g1 * g1 / (1 + g1 * g1)
    expected = [(1 - w0) * med0 + w0 * v for v in values[:4]] + [(1 - w1) * 20.5 + w1 * v for v in values[6:]]
    assert out == pytest.approx(expected, rel=1e-12)
    assert mse(no_collaboration(p.verified), p) == pytest.approx(np.mean(np.square(values[~corrupted] - p.honest_means)))


# --- the problem generator and the adversaries --------------------------------------------------


def test_make_problem_draws_k_plus_c_times_m_clients_with_the_right_corruption_rate_and_components():
    c = 3.0
    p = make_problem(K, c, M, 2.0, ADVERSARIES["elongate"], np.random.default_rng(0))
    n = (K + c) * M
    assert len(p.values) == n
    assert abs(p.corrupted.sum() - n * c / (K + c)) < 5 * math.sqrt(n * c / (K + c))
    np.testing.assert_allclose(np.diff(p.means), 18.0)
    z = p.verified - p.honest_means
    assert abs(z.mean()) < 0.01 and abs(z.var() - 1) < 0.01


def test_make_problem_refuses_what_breaks_the_assumptions():
    rng = np.random.default_rng(0)
    with pytest.raises(PersonalMeanError, match="9 Delta"):
        make_problem(K, 1.0, M, 2.0, ADVERSARIES["elongate"], rng, separation=17.0)
    with pytest.raises(PersonalMeanError, match="adversary"):
        make_problem(K, 1.0, M, 2.0, None, rng)
    with pytest.raises(PersonalMeanError, match="k must"):
        make_problem(0, 1.0, M, 2.0, ADVERSARIES["elongate"], rng)
    with pytest.raises(PersonalMeanError, match="finite"):
        robust_clustering(np.array([0.0, np.nan]), K, 0.0, 2.0, BACKOFF, rng)


def test_split_rounds_to_the_count_in_proportion():
    out = _split(10, np.array([1.0, 1.0, 1.0]))
    assert out.sum() == 10 and sorted(out.tolist()) == [3, 3, 4]


@pytest.mark.parametrize("eps", [0.3, SQRT_2PI])
def test_lower_bound_adversary_turns_a_component_into_f_eps(eps):
    """Genuine N(mu, 1) plus eps as much psi is section IV's f_eps(x - mu') / (1 + eps): a flat plateau of
    length sqrt(2 pi) eps ending at mu (KS against the hand-written c.d.f.)."""
    rng = np.random.default_rng(1)
    n, length = 40_000, SQRT_2PI * eps
    y = np.concatenate((length + rng.standard_normal(n), _plateau_samples(int(round(eps * n)), eps, rng)))

    def cdf(t):
        t = np.asarray(t)
        inside = 0.5 + np.clip(t, 0, length) / SQRT_2PI
        return np.where(t <= 0, norm.cdf(t), np.where(t <= length, inside, 0.5 + eps + norm.cdf(t - length) - 0.5)) / (1 + eps)

    assert stats.kstest(y, cdf).pvalue > 1e-3


def test_point_mass_adversaries_place_their_mass_where_their_formulas_say():
    means, d, rng = 18.0 * np.arange(K), 2.0, np.random.default_rng(0)
    v, lab = Concentrate()(means, 2500, 2.5, d, rng)  # ceil(2.5 / 1) = 3 components
    assert set(lab.tolist()) == {0, 1, 2} and np.all(v == means[lab] + d)
    cost = rho(d) - float(window_mass(3 * d, d))
    v, lab = Elongate()(means, 2500, 2.5, d, rng)  # floor(2.5 / cost) = 2 components
    assert math.floor(2.5 / cost) == 2 and set(lab.tolist()) == {0, 1} and np.all(v == means[lab] + 3 * d)
    v, lab = FakeClusters()(means, 2500, 2.5, d, rng)
    assert set(lab.tolist()) == {0, 1} and np.all(v == means[lab] + 4 * d)
    v, lab = LowerBound()(means, 2500, 2.5, d, rng)
    assert len(v) == 2500 and set(lab.tolist()) <= set(range(K))


# --- the algorithm on simulated problems --------------------------------------------------------


@pytest.fixture(scope="module")
def runs() -> dict[tuple[float, float, str], dict]:
    """Problems at m = 20,000, k = 10: c = 0 and c/k = 0.5 under every adversary, Delta = 2 and 3."""
    out = {}
    for d in (2.0, 3.0):
        for ratio, names in ((0.0, [None]), (0.5, list(ADVERSARIES))):
            for name in names:
                rng = np.random.default_rng([7, int(d), len(out)])
                p = make_problem(K, ratio * K, M, d, ADVERSARIES.get(name) if name else None, rng)
                s = robust_clustering(p.values, K, p.c, d, BACKOFF, rng)
                out[d, ratio, name or "none"] = dict(
                    problem=p, server=s,
                    robust=mse(combine_estimates(s, p.verified, d), p),
                    oracle=mse(label_oracle(p, BACKOFF), p),
                    plain=mse(plain_median(p.values, p.verified, d), p),
                    none=mse(no_collaboration(p.verified), p),
                )
    return out


def test_without_corruption_every_component_is_found_and_the_error_is_the_far_tail(runs):
    # Delta = 2: nearly all the error is clients with |x_v - mu| >= 3, who keep x_v: E[Z^2; |Z| >= 3]
    tail = 2 * (3 * norm.pdf(3) + norm.sf(3))
    for d in (2.0, 3.0):
        r = runs[d, 0.0, "none"]
        assert len(r["server"].means) == K and r["server"].discarded == 0
        np.testing.assert_allclose(r["server"].means, r["problem"].means, atol=0.05)
    assert tail * 0.8 < runs[2.0, 0.0, "none"]["robust"] < tail * 1.2
    assert runs[3.0, 0.0, "none"]["robust"] < 0.005
    assert runs[3.0, 0.0, "none"]["none"] == pytest.approx(1.0, abs=0.02)


def test_quality_estimate_never_falls_below_the_true_corrupted_mass(runs):
    for r in runs.values():
        p, s = r["problem"], r["server"]
        true = np.array([p.corrupted[idx].sum() / s.m2 for idx in s.support])
        assert np.all(s.qualities >= true), (s.qualities, true)


def test_every_adversary_stays_below_the_upper_bound_and_below_no_collaboration(runs):
    bounds = {d: upper_bound(d) for d in (2.0, 3.0)}
    for (d, ratio, name), r in runs.items():
        allowance = math.pi / (2 * r["server"].m2)  # the median's variance, outside the asymptotic bound
        assert r["robust"] <= float(bounds[d].value(ratio)) + allowance, (d, ratio, name)
        assert r["robust"] < 1.0


def test_the_lower_bound_adversary_forces_the_lower_bound_on_every_algorithm(runs):
    floor = lower_bound_exact(0.5 * K, K).value
    for d in (2.0, 3.0):
        r = runs[d, 0.5, "lower-bound"]
        for algorithm in ("robust", "oracle", "plain", "none"):
            assert r[algorithm] >= floor * 0.98, (d, algorithm)


def test_elongation_gets_the_attacked_clusters_discarded(runs):
    for d in (2.0, 3.0):
        cost = rho(d) - float(window_mass(3 * d, d))
        assert runs[d, 0.5, "elongate"]["server"].discarded == math.floor(0.5 * K / cost)


def test_fake_clusters_add_clusters_but_hardly_any_error(runs):
    r = runs[2.0, 0.5, "fake-clusters"]
    assert len(r["server"].means) == K + math.floor(0.5 * K / rho(2.0))
    assert r["robust"] < runs[2.0, 0.0, "none"]["robust"] + 0.01
    assert r["plain"] > 1.0  # without the filter the fake clusters chain the components together


def test_means_closer_than_9_delta_raise_cluster_spacing_error_naming_the_spacing():
    rng = np.random.default_rng(3)
    d = 1.0
    values = np.concatenate([rng.normal(0.0, 1.0, 20_000), rng.normal(2.5, 1.0, 20_000)])  # 2.5 < 9 Delta
    with pytest.raises(ClusterSpacingError, match=r"at least 9 Delta sigma = 9 apart") as info:
        robust_clustering(values, 2, 0.0, d, BACKOFF, np.random.default_rng(0))
    assert isinstance(info.value, PersonalMeanError)
    # With the paper's spacing the same call forms both clusters, and allow_empty turns the error into the fallback.
    spaced = np.concatenate([values[:20_000], values[20_000:] + 9.0 * d])
    assert len(robust_clustering(spaced, 2, 0.0, d, BACKOFF, np.random.default_rng(0)).means) == 2
    empty = robust_clustering(values, 2, 0.0, d, BACKOFF, np.random.default_rng(0), allow_empty=True)
    assert len(empty.means) == 0
    assert combine_estimates(empty, values[:5], d).tolist() == values[:5].tolist()


@pytest.mark.parametrize("sigma", [0.01, 7.0])
def test_sigma_rescales_the_whole_pipeline_exactly(sigma):
    unit = make_problem(K, 1.0, M, 2.0, ADVERSARIES["concentrate"], np.random.default_rng(5))
    scaled = make_problem(K, 1.0, M, 2.0, ADVERSARIES["concentrate"], np.random.default_rng(5), sigma=sigma)
    assert np.allclose(scaled.values, sigma * unit.values) and np.allclose(scaled.means, sigma * unit.means)
    a = robust_clustering(unit.values, K, 1.0, 2.0, BACKOFF, np.random.default_rng(9))
    b = robust_clustering(scaled.values, K, 1.0, 2.0, BACKOFF, np.random.default_rng(9), sigma=sigma)
    assert len(a.means) > 0 and np.allclose(b.means, sigma * a.means) and np.allclose(b.qualities, a.qualities)
    mse_unit = mse(combine_estimates(a, unit.verified, 2.0), unit)
    assert mse(combine_estimates(b, scaled.verified, 2.0), scaled) == pytest.approx(sigma**2 * mse_unit, rel=1e-9)
    assert np.allclose(plain_median(scaled.values, scaled.verified, 2.0, sigma=sigma),
                       sigma * plain_median(unit.values, unit.verified, 2.0))
    with pytest.raises(PersonalMeanError, match="sigma"):
        robust_clustering(unit.values, K, 1.0, 2.0, BACKOFF, np.random.default_rng(9), sigma=0.0)
