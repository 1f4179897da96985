"""Byzantine-tolerant split-and-conquer learning of Gaussian mixtures (Zhang and Chen 2024).

Each machine fits a mixture to its own data (``fit_local``) and sends it; the server
aggregates the m estimates.  ``gmr`` is the reduction estimator (eq. 2); ``coat``,
``cred`` and ``ared`` (eqs. 3-5) first find the machines whose estimates lie far from
the densest half and then reduce the rest; ``trim``, ``gmr_all`` and ``oracle`` are the
paper's baselines.  Every rule also takes fitted scikit-learn ``GaussianMixture``
objects (``from_sklearn``/``to_sklearn`` convert either way).  Every rule here reads each estimate in the clear (plaintext only).
"""

from .baselines import gmr_all, oracle, trim
from .distance import ise, pairwise_ise
from .estimate import GaussianMixtureEstimate, MixtureError, fit_local
from .failures import FAILURES, corrupt, covariance_failure, mean_failure, weight_failure
from .generate import max_overlap, overlap_matrix, random_mixture
from .gmr import gmr, kl_gaussian
from .metrics import ari, w1
from .robust import ARED_MIN_MACHINES, AREDRangeWarning, RobustAggregate, ared, ared_factor, coat, cred
from .sklearn_adapter import EstimateMismatch, as_estimates, from_sklearn, to_sklearn

__all__ = [
    "ARED_MIN_MACHINES",
    "AREDRangeWarning",
    "EstimateMismatch",
    "FAILURES",
    "GaussianMixtureEstimate",
    "MixtureError",
    "RobustAggregate",
    "ared",
    "ared_factor",
    "ari",
    "as_estimates",
    "coat",
    "corrupt",
    "covariance_failure",
    "cred",
    "fit_local",
    "from_sklearn",
    "gmr",
    "gmr_all",
    "ise",
    "kl_gaussian",
    "max_overlap",
    "mean_failure",
    "oracle",
    "overlap_matrix",
    "pairwise_ise",
    "random_mixture",
    "to_sklearn",
    "trim",
    "w1",
    "weight_failure",
]
