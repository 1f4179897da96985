"""How close an aggregate is to the truth (Appendix C.1).

``w1`` is the transportation distance between two mixing distributions with ground cost
D_1 = ||mu - mu'||_2 + ||Sigma^1/2 - Sigma'^1/2||_F, solved as a K x K' linear program
(scipy's HiGHS).  ``ari`` is the adjusted Rand index between reference labels and the
clusters k(x) = argmax_k w_k phi(x; mu_k, Sigma_k) an estimate induces.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linprog
from sklearn.metrics import adjusted_rand_score

from .estimate import GaussianMixtureEstimate, MixtureError

__all__ = ["ari", "component_cost", "w1"]


def _sqrtm_psd(covs: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(covs)
    return np.einsum("kij,kj,klj->kil", vectors, np.sqrt(np.maximum(values, 0.0)), vectors)


def component_cost(g: GaussianMixtureEstimate, h: GaussianMixtureEstimate) -> np.ndarray:
    """D_1 between every component of g and every component of h: shape (K_g, K_h)."""
    if g.dim != h.dim:
        raise MixtureError(f"dimensions differ: {g.dim} and {h.dim}")
    mean_part = np.linalg.norm(g.means[:, None] - h.means[None], axis=-1)
    root_g, root_h = _sqrtm_psd(g.covariances), _sqrtm_psd(h.covariances)
    cov_part = np.linalg.norm(root_g[:, None] - root_h[None], axis=(-2, -1))
    return mean_part + cov_part


def w1(g: GaussianMixtureEstimate, h: GaussianMixtureEstimate) -> float:
    """W_1(G, H) = min sum_ij pi_ij D_1(i, j) over couplings of the two weight vectors."""
    cost = component_cost(g, h)
    kg, kh = cost.shape
    rows = np.kron(np.eye(kg), np.ones(kh))   # sum_j pi_ij = w_i
    cols = np.kron(np.ones(kg), np.eye(kh))   # sum_i pi_ij = w'_j
    # The last equality is implied by the others (both weight vectors sum to 1); dropping it
    # keeps the equality system full rank.
    a_eq = np.vstack([rows, cols[:-1]])
    b_eq = np.concatenate([g.weights, h.weights[:-1]])
    result = linprog(cost.ravel(), A_eq=a_eq, b_eq=b_eq, bounds=(0, None), method="highs")
    if not result.success:
        raise MixtureError(f"the transport problem failed: {result.message}")
    return float(max(result.fun, 0.0))


def ari(estimate: GaussianMixtureEstimate, data: np.ndarray, labels: np.ndarray) -> float:
    """Adjusted Rand index between ``labels`` and the clustering of ``data`` by ``estimate``."""
    labels = np.asarray(labels)
    if labels.shape != (np.asarray(data).shape[0],):
        raise MixtureError(f"need one label per row: {labels.shape} labels for data of shape {np.shape(data)}")
    return float(adjusted_rand_score(labels, estimate.predict(data)))
