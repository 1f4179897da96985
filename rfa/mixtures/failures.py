"""The three Byzantine failures of Section 5.1, applied to a machine's local estimate.

* mean failure: every component mean replaced by a vector of N(0, 100^2) entries;
* covariance failure: every covariance plus sum_{i=1}^d xi_i xi_i' with xi_i ~ N(0, I_d);
* weight failure: the weights replaced by a Dirichlet draw whose K parameters are
  random integers in [200, 1000], drawn afresh for each failed machine.

``corrupt`` picks round(alpha m) machines at random and applies one failure to each.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .estimate import GaussianMixtureEstimate, MixtureError

__all__ = ["FAILURES", "corrupt", "covariance_failure", "mean_failure", "weight_failure"]

MEAN_FAILURE_SD = 100.0
DIRICHLET_RANGE = (200, 1000)


def mean_failure(g: GaussianMixtureEstimate, rng: np.random.Generator) -> GaussianMixtureEstimate:
    return GaussianMixtureEstimate(g.weights, rng.normal(0.0, MEAN_FAILURE_SD, g.means.shape), g.covariances)


def covariance_failure(g: GaussianMixtureEstimate, rng: np.random.Generator) -> GaussianMixtureEstimate:
    xi = rng.standard_normal((g.n_components, g.dim, g.dim))  # [k, i] is xi_i for component k
    return GaussianMixtureEstimate(g.weights, g.means, g.covariances + np.einsum("kia,kib->kab", xi, xi))


def weight_failure(g: GaussianMixtureEstimate, rng: np.random.Generator) -> GaussianMixtureEstimate:
    low, high = DIRICHLET_RANGE
    alpha = rng.integers(low, high, size=g.n_components, endpoint=True)
    return GaussianMixtureEstimate(rng.dirichlet(alpha), g.means, g.covariances)


FAILURES: dict[str, Callable[[GaussianMixtureEstimate, np.random.Generator], GaussianMixtureEstimate]] = {
    "mean": mean_failure,
    "covariance": covariance_failure,
    "weight": weight_failure,
}


def corrupt(
    estimates: Sequence[GaussianMixtureEstimate], rate: float, kind: str, rng: np.random.Generator
) -> tuple[list[GaussianMixtureEstimate], frozenset[int]]:
    """The transmitted estimates and the failed set: round(rate * m) machines chosen at random."""
    if kind not in FAILURES:
        raise MixtureError(f"unknown failure {kind!r}; choose from {sorted(FAILURES)}")
    if not 0 <= rate < 0.5:
        raise MixtureError(f"failure rate must be in [0, 0.5), got {rate}")
    m = len(estimates)
    failed = frozenset(int(i) for i in rng.choice(m, size=int(round(rate * m)), replace=False))
    fail = FAILURES[kind]
    return [fail(g, rng) if i in failed else g for i, g in enumerate(estimates)], failed
