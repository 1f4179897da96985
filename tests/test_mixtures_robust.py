"""rfa.mixtures.robust: COAT, CRED and ARED on synthetic sets with known failed machines."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rfa.mixtures import GaussianMixtureEstimate, MixtureError, ared, ared_factor, coat, cred, pairwise_ise, w1
from rfa.mixtures.robust import coat_center

D = 8
MEANS = np.zeros((2, D))
MEANS[1, 0] = 6.0
TRUTH = GaussianMixtureEstimate([0.4, 0.6], MEANS, np.stack([np.eye(D)] * 2))


def honest(rng: np.random.Generator, noise: float = 0.02) -> GaussianMixtureEstimate:
    """The truth with every parameter perturbed: ~100 noisy coordinates, so honest distances concentrate
    the way root-n consistent estimates' do."""
    a = rng.normal(0, noise, (2, D, D))
    return GaussianMixtureEstimate(TRUTH.weights, TRUTH.means + rng.normal(0, noise, (2, D)),
                                   TRUTH.covariances + 0.5 * (a + np.swapaxes(a, 1, 2)))


def failed_far(rng: np.random.Generator) -> GaussianMixtureEstimate:
    return GaussianMixtureEstimate(TRUTH.weights, rng.normal(0, 100, (2, D)), TRUTH.covariances)


def machines(seed: int, m: int, bad: int) -> tuple[list[GaussianMixtureEstimate], frozenset[int]]:
    rng = np.random.default_rng(seed)
    failed = frozenset(int(i) for i in rng.choice(m, bad, replace=False))
    return [failed_far(rng) if i in failed else honest(rng) for i in range(m)], failed


def test_coat_radius_is_the_smallest_half_ball_radius():
    d = np.array([[0, 1, 5, 9], [1, 0, 2, 8], [5, 2, 0, 3], [9, 8, 3, 0]], dtype=float)
    # Balls holding ceil(4/2) = 2 estimates: radii 1, 1, 2, 3; ties go to the lowest index.
    assert coat_center(d) == (0, 1.0)


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 10**6), st.integers(60, 80), st.floats(0.0, 0.45))
def test_ared_flags_exactly_the_failed_machines_and_cred_flags_all_of_them(seed, m, rate):
    estimates, failed = machines(seed, m, int(rate * m))
    by_ared, by_cred = ared(estimates), cred(estimates)
    assert by_ared.center not in failed
    assert by_ared.flagged == failed
    assert failed <= by_cred.flagged
    assert len(by_cred.flagged) >= m - np.ceil(m / 2)   # CRED keeps fewer than half
    assert by_ared.detection_rate == len(failed) / m


def test_robust_aggregates_stay_near_the_truth_while_gmr_of_everything_does_not():
    from rfa.mixtures import gmr_all, oracle

    estimates, failed = machines(0, 60, 24)
    best = w1(oracle(estimates, failed), TRUTH)
    assert np.isclose(w1(ared(estimates).mixture, TRUTH), best)
    assert w1(cred(estimates).mixture, TRUTH) < 2 * best
    assert w1(coat(estimates).mixture, TRUTH) < 0.5
    assert w1(gmr_all(estimates), TRUTH) > 10


def test_flagged_sets_do_not_depend_on_the_order_of_the_machines():
    estimates, failed = machines(1, 61, 20)
    order = np.random.default_rng(0).permutation(61)
    shuffled = [estimates[i] for i in order]
    back = {int(order[j]) for j in ared(shuffled).flagged}
    assert back == set(ared(estimates).flagged) == failed


def test_exact_copies_of_coat_are_never_flagged():
    estimates = [TRUTH] * 12 + [failed_far(np.random.default_rng(2))] * 4
    assert cred(estimates).flagged == ared(estimates).flagged == frozenset({12, 13, 14, 15})


def test_ared_factor_is_the_papers_margin_and_needs_three_machines():
    assert np.isclose(ared_factor(100), np.sqrt(0.5 * np.log(50) * np.log(np.log(100))))
    # Below m = 15 the factor is under 1: ARED's threshold falls inside COAT's ball and it
    # flags more machines than CRED does.
    assert ared_factor(14) < 1 < ared_factor(15)
    with pytest.raises(MixtureError, match="m >= 3"):
        ared_factor(2)


def test_precomputed_distances_are_checked_and_used():
    estimates, failed = machines(3, 60, 12)
    d = pairwise_ise(estimates)
    assert ared(estimates, distances=d).flagged == failed
    with pytest.raises(MixtureError, match="distances"):
        cred(estimates, distances=d[:5, :5])
