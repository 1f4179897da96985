"""Differential privacy for the secure mean, the secure geometric median and one-step RFA.

Every step of these aggregates is one call of the secure average oracle,
which reveals a noisy (sum_i beta_i w_i, sum_i beta_i) (``secagg.dp``).  Its
sensitivity to one client is what rfa already bounds in public: ||w_i|| <= C
(clients clip to the norm bound) and beta_i <= the step's weight bound, which
is alpha_max for a mean step and alpha_max / nu for a Weiszfeld step
(beta_i = alpha_i / max(nu, ||v - w_i||), ``privacy.py``).  Each step divides
the weights by its own bound before encoding (the average does not change),
so every step's contribution x_i has norm <= sqrt(2) C and every step gets
noise of standard deviation z sqrt(2) C in those units: the same zCDP per call.
What the noise costs in accuracy depends on the step: the revealed value has
noise std about z sqrt(2) C beta_max / sum_i beta_i (``step_noise_bound`` gives
the public worst case), so a larger nu (flatter weights) means less noise and
less robustness.  Under DP the Weiszfeld smoothing defaults to nu = C / 2.

A training run composes every call every client may take part in:
T rounds x ``rule.oracle_calls``; ``RobustDP(epsilon=E)`` calibrates z so the
whole run spends at most E at delta (``secagg.accounting``), and
``RobustDP.accountant`` answers epsilon(delta) as the run goes.  With
``equal_weights`` (the default) every client's alpha is 1: user-level DP,
where each client counts once whatever its sample count.
``central=True`` is the baseline of Flower's server-side DP: the same
clipping and noise multiplier, with the server adding Gaussian noise to the
exact sum, so the server must be trusted (``secagg.dp.CentralGaussian``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from secagg.accounting import PrivacyAccountant, noise_multiplier_for, zcdp_epsilon
from secagg.dp import CentralGaussian, DistributedDiscreteGaussian

from .errors import InvalidArgument
from .privacy import PrivacyPolicy


@dataclass
class RobustDP:
    """``train(..., dp=RobustDP(epsilon=4))``: DP for a whole training run.

    Give ``epsilon`` (the run's target at ``delta``; z is calibrated from the
    rule's calls) or ``noise_multiplier`` (z itself; epsilon is what it spends).
    """

    epsilon: float | None = None
    delta: float = 1e-5
    noise_multiplier: float | None = None
    nu_fraction: float = 0.5  # Weiszfeld smoothing nu = nu_fraction * C under DP
    equal_weights: bool = True
    central: bool = False
    seed: int | None = None  # simulations only: reproducible noise (and session keys), so no privacy
    accountant: PrivacyAccountant = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if (self.epsilon is None) == (self.noise_multiplier is None):
            raise InvalidArgument("give exactly one of epsilon (a target) or noise_multiplier")
        if self.epsilon is not None and not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise InvalidArgument(f"epsilon must be positive and finite, got {self.epsilon}")
        if not 0 < self.delta < 1:
            raise InvalidArgument(f"delta must lie in (0, 1), got {self.delta}")
        if not self.nu_fraction > 0:
            raise InvalidArgument(f"nu_fraction must be positive, got {self.nu_fraction}")
        if self.accountant is None:
            self.accountant = PrivacyAccountant(self.delta)

    def calibrate(self, calls: int) -> float:
        """z for ``calls`` noisy calls per client in the run (fixes it on first use)."""
        if self.noise_multiplier is None:
            assert self.epsilon is not None
            self.noise_multiplier = noise_multiplier_for(self.epsilon, self.delta, calls)
        return self.noise_multiplier

    def mechanism(self, norm_bound: float, max_clients: int) -> DistributedDiscreteGaussian | CentralGaussian:
        """The oracle's mechanism, spending into this run's accountant."""
        if self.noise_multiplier is None:
            raise InvalidArgument("calibrate() first: the noise multiplier depends on the run's calls")
        common = dict(l2_clip=norm_bound, noise_multiplier=self.noise_multiplier, max_clients=max_clients,
                      delta=self.delta, accountant=self.accountant)
        if self.central:
            return CentralGaussian(**common, reproducible=self.seed is not None)
        return DistributedDiscreteGaussian(**common)

    def per_aggregate(self, calls: int, delta: float | None = None) -> float:
        """epsilon of one aggregate of ``calls`` oracle calls (one secure median: its R (+1) steps)."""
        if self.noise_multiplier is None:
            raise InvalidArgument("calibrate() first")
        z = self.noise_multiplier
        return zcdp_epsilon(1 / (2 * z * z), delta or self.delta, calls)

    def spent(self, delta: float | None = None) -> float:
        """epsilon spent so far at ``delta`` (default: this run's)."""
        return self.accountant.epsilon(delta)


def step_noise_bound(policy: PrivacyPolicy, threshold: int, noise_multiplier: float, reach: float | None = None) -> float:
    """Public worst case of a step's per-coordinate noise std in the value's units.

    The sum's noise is z sqrt(2) C times beta_bound (the step's weight bound)
    and the weight sum is at least t beta_min: alpha_min for a mean step,
    alpha_min / max(nu, D) for a Weiszfeld step with distance bound D (default 2C).
    """
    c = policy.norm_bound
    if policy.nu is None:
        bound, low = policy.alpha_max, policy.alpha_min
    else:
        bound = policy.beta_max
        low = policy.alpha_min / max(policy.nu, 2 * c if reach is None else reach)
    return noise_multiplier * math.sqrt(2) * c * bound / (threshold * low)
