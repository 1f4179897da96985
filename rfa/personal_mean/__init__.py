"""Robust personalised mean estimation in a Gaussian mixture (Managoli, Prabhakaran and Diggavi).

``estimation`` owns the problem, ROBUST CLUSTERING (Algorithm 1), COMBINE
ESTIMATES (Algorithm 2) and the baselines; ``adversaries`` the attacks;
``bounds`` Theorem 1's lower and Theorem 2's upper bound.  The algorithms'
names are re-exported here, so ``from rfa.personal_mean import robust_clustering``
works as it did when this was one module.
"""

from .adversaries import ADVERSARIES
from .bounds import lower_bound, upper_bound
from .estimation import (
    Adversary,
    ClusterSpacingError,
    Problem,
    ServerOutput,
    combine_estimates,
    label_oracle,
    make_problem,
    mse,
    no_collaboration,
    plain_median,
    quality_estimate,
    robust_clustering,
    split_sizes,
    squared_errors,
)

__all__ = [
    "ADVERSARIES",
    "Adversary",
    "ClusterSpacingError",
    "Problem",
    "ServerOutput",
    "combine_estimates",
    "label_oracle",
    "lower_bound",
    "make_problem",
    "mse",
    "no_collaboration",
    "plain_median",
    "quality_estimate",
    "robust_clustering",
    "split_sizes",
    "squared_errors",
    "upper_bound",
]
