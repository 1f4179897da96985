"""Random Gaussian mixtures with a prescribed maximum pairwise overlap (MaxOmega, Section 5.1).

The paper draws its mixtures with the R package MixSim (Melnykov et al. 2012).  This is
our Python stand-in, following MixSim's documented recipe but not its code:

1. means uniform on the unit hypercube [0, 1]^d and equal weights (MixSim's defaults,
   ``PiLow = 1``); covariances Wishart(I_d, d + 1) / (d + 1) with eigenvalues lifted so
   the eccentricity sqrt(1 - lambda_min / lambda_max) is at most 0.9 (MixSim's ``ecc``);
2. one common factor c scales every covariance, Sigma_k -> c Sigma_k, and c is found by
   bisection on log c so that MaxOmega = max_{i<j} o_{j|i} + o_{i|j} hits the target;
3. the overlaps o_{j|i} = P(w_i phi_i(X) < w_j phi_j(X) | X ~ phi_i) are estimated by
   Monte Carlo with common random numbers: the same standard normal draws z are used
   for every c (X = mu_i + sqrt(c) L_i z), so the estimate is a deterministic,
   near-monotone function of c and the bisection converges.  MixSim computes the
   overlaps exactly (Davies' algorithm); with ``n_mc`` draws per component the Monte
   Carlo standard error is at most 0.5 / sqrt(n_mc) per overlap.
"""

from __future__ import annotations

import numpy as np

from .estimate import GaussianMixtureEstimate, MixtureError, log_gaussian

__all__ = ["max_overlap", "overlap_matrix", "random_mixture"]

ECCENTRICITY = 0.9


def overlap_matrix(g: GaussianMixtureEstimate, z: np.ndarray) -> np.ndarray:
    """o[i, j] = P(w_i phi_i(X) < w_j phi_j(X) | X ~ phi_i), estimated on standard normal draws z (n, d)."""
    chol = np.linalg.cholesky(g.covariances)
    k = g.n_components
    log_w = np.log(g.weights)
    out = np.zeros((k, k))
    for i in range(k):
        x = g.means[i] + z @ chol[i].T
        score = log_gaussian(x, g.means, g.covariances) + log_w
        out[i] = (score > score[:, [i]]).mean(axis=0)
    np.fill_diagonal(out, 0.0)
    return out


def max_overlap(g: GaussianMixtureEstimate, z: np.ndarray) -> float:
    """MaxOmega = max_{i != j} o_{j|i} + o_{i|j}."""
    o = overlap_matrix(g, z)
    return float((o + o.T).max())


def random_mixture(
    dim: int,
    n_components: int,
    max_omega: float,
    rng: np.random.Generator,
    *,
    n_mc: int = 20_000,
    tol: float = 0.005,
    max_steps: int = 60,
) -> GaussianMixtureEstimate:
    """A random order-K mixture in R^dim whose MaxOmega is within ``tol`` of ``max_omega`` (Monte Carlo)."""
    if dim < 1 or n_components < 2:
        raise MixtureError(f"need dim >= 1 and at least 2 components, got dim = {dim}, K = {n_components}")
    if not 0 < max_omega < 1:
        raise MixtureError(f"max_omega must be in (0, 1), got {max_omega}")
    means = rng.uniform(0.0, 1.0, (n_components, dim))
    a = rng.standard_normal((n_components, dim, dim + 1))
    values, vectors = np.linalg.eigh(a @ np.swapaxes(a, 1, 2) / (dim + 1))
    floor = (1 - ECCENTRICITY**2) * values[:, -1:]
    base = np.einsum("kij,kj,klj->kil", vectors, np.maximum(values, floor), vectors)
    weights = np.full(n_components, 1.0 / n_components)
    z = rng.standard_normal((n_mc, dim))

    def omega(log_c: float) -> float:
        return max_overlap(GaussianMixtureEstimate(weights, means, np.exp(log_c) * base), z)

    # Bracket: overlap grows with the covariance scale c.
    lo, hi = -2.0, 2.0
    while omega(lo) > max_omega:
        lo -= 2.0
        if lo < -60:
            raise MixtureError("could not make the components overlap less than the target")
    while omega(hi) < max_omega:
        hi += 2.0
        if hi > 60:
            raise MixtureError(f"these components never reach MaxOmega = {max_omega}")
    for _ in range(max_steps):
        mid = 0.5 * (lo + hi)
        value = omega(mid)
        if abs(value - max_omega) <= tol:
            return GaussianMixtureEstimate(weights, means, np.exp(mid) * base)
        lo, hi = (mid, hi) if value < max_omega else (lo, mid)
    raise MixtureError(f"bisection did not reach MaxOmega = {max_omega} within {tol}")
