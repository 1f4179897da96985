"""The aggregators CRED and ARED are compared with (Section 5.2): GMR on all estimates,
TRIM (the trimmed k-barycentre of Del Barrio et al. 2019, Appendix Algorithm 2) and the
Oracle (GMR on the failure-free estimates, which only a simulation knows).
COAT alone lives in ``robust``.
"""

from __future__ import annotations

from typing import Collection, Sequence

import numpy as np

from .estimate import GaussianMixtureEstimate, MixtureError
from .gmr import gmr, kl_cost_matrix, moment_match, pooled_components
from .sklearn_adapter import MixtureLike, as_estimates, check_compatible

__all__ = ["gmr_all", "oracle", "trim"]


def gmr_all(
    estimates: Sequence[MixtureLike],
    sample_sizes: Sequence[float] | None = None,
    *,
    init: GaussianMixtureEstimate | None = None,
) -> GaussianMixtureEstimate:
    """GMR of every transmitted estimate: not Byzantine tolerant."""
    return gmr(estimates, sample_sizes, init=init)


def oracle(
    estimates: Sequence[MixtureLike],
    failed: Collection[int],
    sample_sizes: Sequence[float] | None = None,
    *,
    init: GaussianMixtureEstimate | None = None,
) -> GaussianMixtureEstimate:
    """GMR of the estimates not in ``failed`` (the true failed set)."""
    estimates = as_estimates(estimates)
    bad = set(failed)
    if not bad <= set(range(len(estimates))):
        raise MixtureError(f"failed machines {sorted(bad - set(range(len(estimates))))} do not exist")
    kept = [i for i in range(len(estimates)) if i not in bad]
    if not kept:
        raise MixtureError("every machine failed: the oracle has nothing to aggregate")
    sizes = None if sample_sizes is None else [sample_sizes[i] for i in kept]
    return gmr([estimates[i] for i in kept], sizes, init=init)


def trim(
    estimates: Sequence[MixtureLike],
    sample_sizes: Sequence[float] | None = None,
    *,
    init: GaussianMixtureEstimate | None = None,
    eta: float = 0.5,
    max_iter: int = 500,
) -> GaussianMixtureEstimate:
    """Appendix Algorithm 2: KL k-barycentres of the pooled components, trimming mass eta.

    Each round assigns every component to its KL-closest centre, keeps the closest
    components up to total mass 1 - eta (the boundary one partially), and moves each
    centre to the moment-matched barycentre of its kept mass.  Stops when neither the
    assignment nor the trimming changes.  ``init`` defaults to the first estimate.
    """
    if not 0 <= eta < 1:
        raise MixtureError(f"trimming level eta must be in [0, 1), got {eta}")
    estimates = as_estimates(estimates)
    weights, means, covs = pooled_components(estimates, sample_sizes)
    start = estimates[0] if init is None else init
    check_compatible(estimates, start)
    k = start.n_components
    centre_means, centre_covs = start.means, start.covariances
    rows = np.arange(weights.size)
    previous: tuple[np.ndarray, np.ndarray] | None = None
    for _ in range(max_iter):
        cost = kl_cost_matrix(means, covs, centre_means, centre_covs)
        assign = cost.argmin(axis=1)
        kept = _trimmed_mass(weights, cost[rows, assign], 1.0 - eta)
        if previous is not None and np.array_equal(assign, previous[0]) and np.allclose(kept, previous[1]):
            break
        previous = (assign, kept)
        mass = np.zeros((weights.size, k))
        mass[rows, assign] = kept
        # A centre left with no kept mass stays where it is, with weight 0 (dropped below).
        alive = mass.sum(axis=0) > 0
        total = np.zeros(k)
        new_means, new_covs = centre_means.copy(), centre_covs.copy()
        total[alive], new_means[alive], new_covs[alive] = moment_match(mass[:, alive], means, covs)
        centre_means, centre_covs = new_means, new_covs
    alive = total > 0
    return GaussianMixtureEstimate(total[alive] / total[alive].sum(), centre_means[alive], centre_covs[alive])


def _trimmed_mass(weights: np.ndarray, loss: np.ndarray, keep: float) -> np.ndarray:
    """kappa of Algorithm 2: the lowest-loss components' weights up to total ``keep``."""
    order = np.argsort(loss, kind="stable")
    before = np.concatenate([[0.0], np.cumsum(weights[order])[:-1]])
    kappa = np.zeros_like(weights)
    kappa[order] = np.clip(keep - before, 0.0, weights[order])
    return kappa
