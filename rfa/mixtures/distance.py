"""The integrated squared error (ISE) between Gaussian mixtures, in closed form.

D_ISE(G, G')^2 = int (f_G - f_G')^2 dx = w'S_OO w - 2 w'S_OR w' + w''S_RR w' with
S[i, j] = phi(mu_i; mu_j, Sigma_i + Sigma_j), because int phi(x; mu_1, Sigma_1)
phi(x; mu_2, Sigma_2) dx = phi(mu_1; mu_2, Sigma_1 + Sigma_2) (Appendix C.1).  This is
the distance COAT, CRED and ARED (Section 3) measure between machines.
``pairwise_ise`` stacks the components of all m estimates, computes every
component-pair product once (in blocks, so memory stays bounded) and reads all m^2
distances off W S W^T, where row i of W holds machine i's weights.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .estimate import GaussianMixtureEstimate, MixtureError
from .sklearn_adapter import MixtureLike, as_estimates

__all__ = ["component_gram", "gaussian_products", "ise", "ise_from_gram", "pairwise_ise"]

_BLOCK_FLOATS = 4_000_000  # about 32 MB of (d, d) matrices per block


def gaussian_products(
    means_a: np.ndarray, covs_a: np.ndarray, means_b: np.ndarray, covs_b: np.ndarray
) -> np.ndarray:
    """int phi(x; mu_a, Sigma_a) phi(x; mu_b, Sigma_b) dx for every pair (a, b): shape (A, B)."""
    a_count, d = means_a.shape
    b_count = means_b.shape[0]
    out = np.empty((a_count, b_count))
    rows = max(1, _BLOCK_FLOATS // max(1, b_count * d * d))
    for start in range(0, a_count, rows):
        stop = min(a_count, start + rows)
        s = covs_a[start:stop, None] + covs_b[None]
        diff = means_a[start:stop, None] - means_b[None]
        chol = np.linalg.cholesky(s)
        z = np.linalg.solve(chol, diff[..., None])[..., 0]
        log_det = 2.0 * np.log(np.diagonal(chol, axis1=-2, axis2=-1)).sum(axis=-1)
        out[start:stop] = np.exp(-0.5 * (np.einsum("abi,abi->ab", z, z) + log_det + d * np.log(2 * np.pi)))
    return out


def ise(g: MixtureLike, h: MixtureLike) -> float:
    """D_ISE(g, h): the L2 distance between the two mixture densities (same d, any orders)."""
    g, h = as_estimates([g, h], same_order=False)
    gg = g.weights @ gaussian_products(g.means, g.covariances, g.means, g.covariances) @ g.weights
    gh = g.weights @ gaussian_products(g.means, g.covariances, h.means, h.covariances) @ h.weights
    hh = h.weights @ gaussian_products(h.means, h.covariances, h.means, h.covariances) @ h.weights
    return float(np.sqrt(max(0.0, gg - 2 * gh + hh)))


def pairwise_ise(estimates: Sequence[MixtureLike]) -> np.ndarray:
    """The (m, m) matrix of D_ISE between every pair of estimates (same d; zero diagonal, symmetric)."""
    estimates = as_estimates(estimates, same_order=False)
    return ise_from_gram(estimates, component_gram(estimates))


def component_gram(estimates: Sequence[GaussianMixtureEstimate]) -> np.ndarray:
    """S[a, b] = int phi_a phi_b over every pair of the estimates' stacked components."""
    means = np.concatenate([g.means for g in estimates])
    covs = np.concatenate([g.covariances for g in estimates])
    return gaussian_products(means, covs, means, covs)


def ise_from_gram(estimates: Sequence[GaussianMixtureEstimate], gram: np.ndarray) -> np.ndarray:
    """The D_ISE matrix from the stacked components' ``component_gram``: W S W^T, row i of W machine i's weights.

    A caller that changes a few machines' components may patch their rows and columns of S
    instead of recomputing all of it (the simulations do, across failure rates).
    """
    owner = np.repeat(np.arange(len(estimates)), [g.n_components for g in estimates])
    if gram.shape != (owner.size, owner.size):
        raise MixtureError(f"the component Gram matrix must be ({owner.size}, {owner.size}), got {gram.shape}")
    w = np.zeros((len(estimates), owner.size))
    w[owner, np.arange(owner.size)] = np.concatenate([g.weights for g in estimates])
    inner = w @ gram @ w.T
    inner = 0.5 * (inner + inner.T)
    sq = np.diag(inner)[:, None] + np.diag(inner)[None, :] - 2 * inner
    dist = np.sqrt(np.maximum(sq, 0.0))
    np.fill_diagonal(dist, 0.0)
    return dist
