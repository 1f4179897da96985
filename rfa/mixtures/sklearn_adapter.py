"""Fitted scikit-learn ``GaussianMixture`` objects in and out of ``GaussianMixtureEstimate``.

``from_sklearn`` expands each covariance type to the (K, d, d) full matrices the
rules use (diag: a diagonal per component; tied: one matrix shared by all K;
spherical: one variance per component); ``to_sklearn`` builds a fitted
``GaussianMixture`` back, in any covariance type the estimate's matrices have
exactly.  ``as_estimates`` is what every rule calls on its input: it converts
scikit-learn objects and refuses a set whose members differ in K or d
(``EstimateMismatch``), since the reduction (eq. 2) maps m order-K mixtures to
one order-K mixture.
"""

from __future__ import annotations

from typing import Iterable, Literal, Sequence, Union

import numpy as np
from sklearn.mixture import GaussianMixture

from .estimate import GaussianMixtureEstimate, MixtureError

__all__ = ["EstimateMismatch", "MixtureLike", "as_estimates", "from_sklearn", "to_sklearn"]

CovarianceType = Literal["full", "diag", "tied", "spherical"]
MixtureLike = Union[GaussianMixtureEstimate, GaussianMixture]


class EstimateMismatch(MixtureError):
    """Estimates given to one rule differ in their number of components K or dimension d."""


def from_sklearn(gm: GaussianMixture) -> GaussianMixtureEstimate:
    """The estimate a fitted ``GaussianMixture`` holds, covariances expanded to (K, d, d)."""
    if not isinstance(gm, GaussianMixture):
        raise MixtureError(f"expected a sklearn.mixture.GaussianMixture, got {type(gm).__name__}")
    if not hasattr(gm, "means_"):
        raise MixtureError("the GaussianMixture is not fitted (no means_): call fit first")
    means = np.asarray(gm.means_, dtype=float)
    k, d = means.shape
    cov = np.asarray(gm.covariances_, dtype=float)
    kind = gm.covariance_type
    if kind == "full":
        full = cov
    elif kind == "diag":
        full = cov[:, :, None] * np.eye(d)[None]
    elif kind == "tied":
        full = np.broadcast_to(cov, (k, d, d)).copy()
    elif kind == "spherical":
        full = cov[:, None, None] * np.eye(d)[None]
    else:
        raise MixtureError(f"unknown covariance_type {kind!r}")
    return GaussianMixtureEstimate(gm.weights_, means, full)


def to_sklearn(estimate: GaussianMixtureEstimate, covariance_type: CovarianceType = "full") -> GaussianMixture:
    """A fitted ``GaussianMixture`` (predict, score_samples, sample work) holding ``estimate``.

    The estimate's covariances must have the requested structure exactly (zero
    off-diagonals for diag, one shared matrix for tied, a multiple of the identity
    for spherical); otherwise ``MixtureError`` names what breaks it.
    """
    cov = estimate.covariances
    k, d = estimate.n_components, estimate.dim
    diagonal = np.diagonal(cov, axis1=1, axis2=2)
    scale = max(1.0, float(np.abs(cov).max()))
    if covariance_type == "full":
        packed = cov.copy()
        prec_chol = np.linalg.inv(np.linalg.cholesky(cov)).transpose(0, 2, 1)
    elif covariance_type in ("diag", "spherical"):
        off = float(np.abs(cov - diagonal[:, :, None] * np.eye(d)[None]).max())
        if off > 1e-12 * scale:
            raise MixtureError(f"covariance_type {covariance_type!r} needs diagonal covariances; largest off-diagonal {off:g}")
        if covariance_type == "diag":
            packed = diagonal.copy()
        else:
            spread = float(np.ptp(diagonal, axis=1).max())
            if spread > 1e-12 * scale:
                raise MixtureError(f"covariance_type 'spherical' needs equal variances per component; spread {spread:g}")
            packed = diagonal[:, 0].copy()
        prec_chol = 1.0 / np.sqrt(packed)
    elif covariance_type == "tied":
        gap = float(np.abs(cov - cov[0]).max())
        if gap > 1e-12 * scale:
            raise MixtureError(f"covariance_type 'tied' needs one covariance shared by all components; largest gap {gap:g}")
        packed = cov[0].copy()
        prec_chol = np.linalg.inv(np.linalg.cholesky(packed)).T
    else:
        raise MixtureError(f"covariance_type must be full, diag, tied or spherical, got {covariance_type!r}")
    gm = GaussianMixture(k, covariance_type=covariance_type)
    gm.weights_ = estimate.weights.copy()
    gm.means_ = estimate.means.copy()
    gm.covariances_ = packed
    gm.precisions_cholesky_ = prec_chol
    gm.precisions_ = _precisions(packed, covariance_type)
    gm.converged_, gm.n_iter_, gm.lower_bound_ = True, 0, -np.inf
    gm.n_features_in_ = d
    return gm


def _precisions(packed: np.ndarray, covariance_type: str) -> np.ndarray:
    return 1.0 / packed if covariance_type in ("diag", "spherical") else np.linalg.inv(packed)


def as_estimates(estimates: Iterable[MixtureLike], *, same_order: bool = True) -> list[GaussianMixtureEstimate]:
    """The estimates as ``GaussianMixtureEstimate``s, all of one d and (if ``same_order``) one K,
    else ``EstimateMismatch``.  Distances (ISE) need only a common d; the rules need a common K."""
    out = [g if isinstance(g, GaussianMixtureEstimate) else from_sklearn(g) for g in estimates]
    if not out:
        raise MixtureError("need at least one estimate")
    check_compatible(out, same_order=same_order)
    return out


def check_compatible(
    estimates: Sequence[GaussianMixtureEstimate], init: GaussianMixtureEstimate | None = None, *,
    same_order: bool = True,
) -> None:
    """Refuse estimates (and a start) that differ from the first in K or d, naming the first one that does."""
    k, d = estimates[0].n_components, estimates[0].dim
    for i, g in enumerate(estimates):
        if g.dim != d or (same_order and g.n_components != k):
            raise EstimateMismatch(f"estimate {i} has K = {g.n_components}, d = {g.dim}; estimate 0 has K = {k}, d = {d}")
    if init is not None and (init.n_components, init.dim) != (k, d):
        raise EstimateMismatch(f"the start has K = {init.n_components}, d = {init.dim}; the estimates have K = {k}, d = {d}")
