"""rfa.mixtures.sklearn_adapter: fitted GaussianMixture objects in and out, mismatched sets refused, ARED's range."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.mixture import GaussianMixture

from rfa.errors import RFAError
from rfa.mixtures import (
    AREDRangeWarning,
    EstimateMismatch,
    GaussianMixtureEstimate,
    MixtureError,
    ared,
    ared_factor,
    cred,
    from_sklearn,
    gmr,
    ise,
    pairwise_ise,
    to_sklearn,
    trim,
)

KINDS = ("full", "diag", "tied", "spherical")


def _fitted(kind: str, seed: int = 0, k: int = 3, d: int = 2, n: int = 300) -> tuple[GaussianMixture, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 6, (k, d))
    x = centres[rng.integers(k, size=n)] + rng.normal(size=(n, d)) * rng.uniform(0.5, 2.0, d)
    return GaussianMixture(k, covariance_type=kind, random_state=seed).fit(x), x


@pytest.mark.parametrize("kind", KINDS)
def test_from_sklearn_keeps_the_density_and_to_sklearn_round_trips_every_covariance_type(kind):
    gm, x = _fitted(kind)
    est = from_sklearn(gm)
    assert est.covariances.shape == (3, 2, 2)
    # The expanded full matrices give scikit-learn's own log-density and labels.
    assert np.allclose(est.log_density(x), gm.score_samples(x), rtol=0, atol=1e-9)
    assert np.array_equal(est.predict(x), gm.predict(x))
    back = to_sklearn(est, kind)
    assert back.covariance_type == kind
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        assert np.allclose(getattr(back, name), getattr(gm, name), rtol=1e-10, atol=1e-12), name
    assert np.allclose(back.score_samples(x), gm.score_samples(x), rtol=0, atol=1e-9)
    assert np.allclose(from_sklearn(back).covariances, est.covariances)


def test_to_sklearn_refuses_a_structure_the_covariances_do_not_have():
    cov = np.array([[[2.0, 0.5], [0.5, 1.0]], [[1.0, 0.0], [0.0, 3.0]]])
    est = GaussianMixtureEstimate([0.5, 0.5], [[0.0, 0.0], [5.0, 5.0]], cov)
    for kind in ("diag", "tied", "spherical"):
        with pytest.raises(MixtureError, match=kind):
            to_sklearn(est, kind)
    with pytest.raises(MixtureError, match="covariance_type"):
        to_sklearn(est, "banded")  # type: ignore[arg-type]


def test_rules_accept_fitted_sklearn_mixtures_directly():
    fits = [_fitted(kind, seed=s)[0] for s, kind in enumerate(KINDS)]
    converted = [from_sklearn(g) for g in fits]
    assert np.array_equal(pairwise_ise(fits), pairwise_ise(converted))
    assert ise(fits[0], fits[1]) == ise(converted[0], converted[1])
    assert np.allclose(gmr(fits).means, gmr(converted).means)
    assert np.allclose(trim(fits).means, trim(converted).means)


def test_unfitted_or_foreign_objects_are_refused_with_a_typed_error():
    with pytest.raises(MixtureError, match="not fitted"):
        from_sklearn(GaussianMixture(2))
    with pytest.raises(MixtureError, match="GaussianMixture"):
        from_sklearn(np.zeros(3))  # type: ignore[arg-type]


def _estimate(k: int, d: int, shift: float = 0.0) -> GaussianMixtureEstimate:
    return GaussianMixtureEstimate(np.full(k, 1 / k), shift + np.arange(k * d, dtype=float).reshape(k, d),
                                   np.stack([np.eye(d)] * k))


@pytest.mark.parametrize("odd", [(3, 2), (2, 3)])
def test_a_set_with_a_different_k_or_d_is_refused_naming_the_estimate(odd):
    good = [_estimate(2, 2, 0.01 * i) for i in range(20)]
    bad = good[:7] + [_estimate(*odd)] + good[7:]
    for rule in (gmr, trim, cred, ared):
        with pytest.raises(EstimateMismatch, match=r"estimate 7 has K = %d, d = %d" % odd) as info:
            rule(bad)
        assert isinstance(info.value, RFAError)
    with pytest.raises(EstimateMismatch, match="the start has K = 3"):
        gmr(good, init=_estimate(3, 2))


def test_ared_warns_below_m_15_with_its_factor_and_strict_refuses():
    small = [_estimate(2, 2, 0.01 * i) for i in range(6)]
    with pytest.warns(AREDRangeWarning, match=f"m = 6 .*= {ared_factor(6):.3f} < 1"):
        ared(small)
    with pytest.raises(MixtureError, match="m = 6"):
        ared(small, strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ared([_estimate(2, 2, 0.01 * i) for i in range(15)])  # the factor is >= 1 from m = 15 on
    assert ared_factor(14) < 1 <= ared_factor(15)
