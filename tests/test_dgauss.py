"""The exact discrete Gaussian sampler against its pmf, and its Bernoulli building blocks."""

from fractions import Fraction

import numpy as np
import pytest
from scipy import stats

from secagg import dgauss
from secagg.errors import ParameterError
from secagg.rng import SeededRandom


@pytest.mark.parametrize("sigma2", [Fraction(1, 4), Fraction(9, 4), 30])
def test_sampler_matches_the_discrete_gaussian_pmf_chi_square(sigma2):
    x = dgauss.sample(sigma2, 40_000, SeededRandom(f"pmf{sigma2}"))
    s = float(sigma2) ** 0.5
    edge = max(1, int(3 * s))
    support = np.arange(-edge, edge + 1)
    p = dgauss.pmf(float(sigma2), support)
    observed = np.array([np.count_nonzero(x == k) for k in support] + [np.count_nonzero(np.abs(x) > edge)])
    expected = np.append(p, 1 - p.sum()) * x.size
    keep = expected >= 5
    observed = np.append(observed[keep], observed[~keep].sum())
    expected = np.append(expected[keep], expected[~keep].sum())
    keep = expected > 0
    chi2, pvalue = stats.chisquare(observed[keep], expected[keep] * observed[keep].sum() / expected[keep].sum())
    assert pvalue > 1e-4, (chi2, pvalue)


def test_bernoulli_exp_matches_exp_minus_gamma():
    rng = SeededRandom("bexp")
    for num, den in ((0, 5), (3, 7), (17, 7), (40, 9)):
        hits = dgauss.bernoulli_exp(rng, np.full(50_000, num), den).mean()
        p = np.exp(-num / den)
        assert abs(hits - p) < 5 * np.sqrt(p * (1 - p) / 50_000) + 1e-9


def test_uniform_below_is_uniform_for_mixed_bounds():
    rng = SeededRandom("below")
    u = dgauss.uniform_below(rng, np.full(60_000, 6))
    assert u.min() == 0 and u.max() == 5
    assert stats.chisquare(np.bincount(u, minlength=6)).pvalue > 1e-4
    big = dgauss.uniform_below(rng, np.array([2**62, 3, 1]))
    assert 0 <= big[0] < 2**62 and 0 <= big[1] < 3 and big[2] == 0


def test_sampler_refuses_inexact_or_oversized_sigma2():
    with pytest.raises(ParameterError):
        dgauss.sample(2.5, 10, SeededRandom(0))  # a float is not exact
    with pytest.raises(ParameterError):
        dgauss.sample(2**40, 10, SeededRandom(0))
    with pytest.raises(ParameterError):
        dgauss.sample(0, 10, SeededRandom(0))


def test_same_seed_same_samples_different_seed_different():
    a = dgauss.sample(100, 1000, SeededRandom("a"))
    assert np.array_equal(a, dgauss.sample(100, 1000, SeededRandom("a")))
    assert not np.array_equal(a, dgauss.sample(100, 1000, SeededRandom("b")))
