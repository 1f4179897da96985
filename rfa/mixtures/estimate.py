"""The Gaussian mixture estimate one machine sends, and how a machine fits it.

``GaussianMixtureEstimate`` holds a mixing distribution G = sum_k w_k delta_(mu_k, Sigma_k)
(weights, means, covariances) and refuses anything that is not one: wrong shapes,
non-finite entries, negative weights or weights not summing to one, covariances that
are not symmetric positive definite.  ``fit_local`` is the local inference step of
split-and-conquer learning (Section 2.1): EM for the MLE (scikit-learn), or the
penalised MLE of Chen and Tan (2009) with penalty a_n * sum_k {tr(Sigma_k^-1 S_x) +
log det Sigma_k} (Appendix A.1, eq. 7), which keeps every covariance above
2 a_n / (n + 2 a_n) S_x and so the likelihood bounded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans
from sklearn.mixture import GaussianMixture

from ..errors import RFAError

__all__ = ["GaussianMixtureEstimate", "MixtureError", "fit_local", "log_gaussian"]

_WEIGHT_TOL = 1e-8
_SYMMETRY_TOL = 1e-8


class MixtureError(RFAError, ValueError):
    """A mixture estimate, a set of estimates or a parameter of the mixture rules is invalid."""


def log_gaussian(x: np.ndarray, means: np.ndarray, covariances: np.ndarray) -> np.ndarray:
    """log phi(x_j; mu_k, Sigma_k) for data (n, d) and K components: shape (n, K)."""
    chol = np.linalg.cholesky(covariances)
    inv_chol = np.linalg.inv(chol)
    diff = x[None, :, :] - means[:, None, :]
    z = diff @ np.swapaxes(inv_chol, 1, 2)
    log_det = 2.0 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
    d = x.shape[1]
    return (-0.5 * ((z * z).sum(axis=2) + log_det[:, None] + d * np.log(2 * np.pi))).T


@dataclass(frozen=True)
class GaussianMixtureEstimate:
    """A finite Gaussian mixture: weights (K,), means (K, d), covariances (K, d, d)."""

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray

    def __post_init__(self) -> None:
        w = np.array(self.weights, dtype=float)
        mu = np.array(self.means, dtype=float)
        cov = np.array(self.covariances, dtype=float)
        if w.ndim != 1 or w.size == 0:
            raise MixtureError(f"weights must be a non-empty vector, got shape {w.shape}")
        k = w.size
        if mu.ndim != 2 or mu.shape[0] != k:
            raise MixtureError(f"means must have shape (K={k}, d), got {mu.shape}")
        d = mu.shape[1]
        if d == 0:
            raise MixtureError("means must have at least one dimension")
        if cov.shape != (k, d, d):
            raise MixtureError(f"covariances must have shape ({k}, {d}, {d}), got {cov.shape}")
        for name, a in (("weights", w), ("means", mu), ("covariances", cov)):
            if not np.all(np.isfinite(a)):
                raise MixtureError(f"{name} contain non-finite entries")
        if np.any(w < 0):
            raise MixtureError(f"weights must be non-negative, got minimum {w.min():g}")
        if abs(w.sum() - 1.0) > _WEIGHT_TOL:
            raise MixtureError(f"weights must sum to 1, got {w.sum():.12g}")
        asym = np.abs(cov - np.swapaxes(cov, 1, 2)).max()
        if asym > _SYMMETRY_TOL * max(1.0, np.abs(cov).max()):
            raise MixtureError(f"covariances must be symmetric (largest asymmetry {asym:g})")
        cov = 0.5 * (cov + np.swapaxes(cov, 1, 2))
        try:
            np.linalg.cholesky(cov)
        except np.linalg.LinAlgError:
            raise MixtureError("covariances must be positive definite") from None
        w = w / w.sum()
        for a in (w, mu, cov):
            a.setflags(write=False)
        object.__setattr__(self, "weights", w)
        object.__setattr__(self, "means", mu)
        object.__setattr__(self, "covariances", cov)

    @property
    def n_components(self) -> int:
        return self.weights.size

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def log_weighted_densities(self, x: np.ndarray) -> np.ndarray:
        """log{w_k phi(x_j; mu_k, Sigma_k)}, shape (n, K)."""
        x = self._check_data(x)
        with np.errstate(divide="ignore"):
            return log_gaussian(x, self.means, self.covariances) + np.log(self.weights)

    def log_density(self, x: np.ndarray) -> np.ndarray:
        """log f_G(x_j), shape (n,)."""
        lw = self.log_weighted_densities(x)
        top = lw.max(axis=1, keepdims=True)
        return (top + np.log(np.exp(lw - top).sum(axis=1, keepdims=True)))[:, 0]

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Cluster labels k(x) = argmax_k w_k phi(x; mu_k, Sigma_k) (Appendix C.1)."""
        return self.log_weighted_densities(x).argmax(axis=1)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """n draws and the component each came from."""
        labels = rng.choice(self.n_components, size=n, p=self.weights)
        z = rng.standard_normal((n, self.dim))
        chol = np.linalg.cholesky(self.covariances)
        x = self.means[labels] + np.einsum("nij,nj->ni", chol[labels], z)
        return x, labels

    def _check_data(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise MixtureError(f"data must have shape (n, {self.dim}), got {x.shape}")
        return x


def fit_local(
    data: np.ndarray,
    n_components: int,
    *,
    penalised: bool = True,
    penalty: float | None = None,
    init: GaussianMixtureEstimate | None = None,
    tol: float = 1e-6,
    max_iter: int = 1000,
    seed: int = 0,
) -> GaussianMixtureEstimate:
    """Fit an order-K Gaussian mixture to one machine's data.

    ``penalised=True`` runs the EM of the penalised MLE (Appendix A.1) with
    a_n = ``penalty`` (default n^-1/2, the paper's Section 5.2 choice) until the
    per-observation penalised log-likelihood changes by less than ``tol``.
    ``penalised=False`` runs scikit-learn's EM for the MLE.  ``init`` starts EM from a
    given mixture (the paper starts from the true one); otherwise k-means seeded
    by ``seed`` does.
    """
    x = np.asarray(data, dtype=float)
    if x.ndim != 2 or not np.all(np.isfinite(x)):
        raise MixtureError(f"data must be a finite (n, d) array, got shape {x.shape}")
    n, d = x.shape
    if n_components < 1 or n < n_components + 1:
        raise MixtureError(f"need at least K + 1 = {n_components + 1} rows to fit K = {n_components}, got {n}")
    if init is not None and (init.n_components != n_components or init.dim != d):
        raise MixtureError(f"init has K = {init.n_components}, d = {init.dim}; expected K = {n_components}, d = {d}")
    if not penalised:
        kwargs = {}
        if init is not None:
            kwargs = dict(weights_init=init.weights, means_init=init.means,
                          precisions_init=np.linalg.inv(init.covariances))
        gm = GaussianMixture(n_components, covariance_type="full", tol=tol, max_iter=max_iter,
                             random_state=seed, **kwargs).fit(x)
        return GaussianMixtureEstimate(gm.weights_, gm.means_, gm.covariances_)
    a_n = n ** -0.5 if penalty is None else float(penalty)
    if not a_n > 0:
        raise MixtureError(f"penalty must be positive, got {penalty}")
    s_x = np.cov(x, rowvar=False, bias=True).reshape(d, d)
    if init is None:
        labels = KMeans(n_components, n_init=1, random_state=seed).fit(x).labels_
        resp = np.eye(n_components)[labels]
        means = np.zeros((n_components, d))
        weights, means, covs = _penalised_m_step(x, resp, means, s_x, a_n)
    else:
        weights, means, covs = init.weights, init.means, init.covariances
    previous = -np.inf
    for _ in range(max_iter):
        lw = log_gaussian(x, means, covs) + np.log(np.maximum(weights, 1e-300))
        top = lw.max(axis=1, keepdims=True)
        log_f = top[:, 0] + np.log(np.exp(lw - top).sum(axis=1))
        objective = (log_f.sum() - a_n * _penalty(covs, s_x)) / n
        if objective - previous < tol:
            break
        previous = objective
        resp = np.exp(lw - log_f[:, None])
        weights, means, covs = _penalised_m_step(x, resp, means, s_x, a_n)
    return GaussianMixtureEstimate(weights, means, covs)


def _penalty(covs: np.ndarray, s_x: np.ndarray) -> float:
    """sum_k tr(Sigma_k^-1 S_x) + log det Sigma_k (Chen and Tan 2009)."""
    trace = np.trace(np.linalg.solve(covs, np.broadcast_to(s_x, covs.shape)), axis1=1, axis2=2)
    return float((trace + np.linalg.slogdet(covs)[1]).sum())


def _penalised_m_step(
    x: np.ndarray, resp: np.ndarray, old_means: np.ndarray, s_x: np.ndarray, a_n: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The M step of eq. 7: Sigma_k = (2 a_n S_x + S_k) / (2 a_n + n w_k)."""
    nk = resp.sum(axis=0)
    # An empty component keeps its mean; its covariance falls back to S_x through the penalty.
    means = np.where(nk[:, None] > 0, resp.T @ x / np.maximum(nk, 1e-300)[:, None], old_means)
    diff = x[None, :, :] - means[:, None, :]
    scatter = np.swapaxes(diff * resp.T[:, :, None], 1, 2) @ diff
    covs = (2 * a_n * s_x + scatter) / (2 * a_n + nk)[:, None, None]
    return nk / nk.sum(), means, covs
