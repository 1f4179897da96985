"""Privacy accounting with Google's dp-accounting: per call, per aggregate, per training run.

Every noisy call of the secure average oracle is one zCDP event: the
distributed discrete Gaussian (``dp.py``) satisfies, at every Renyi order
alpha, RDP of alpha * rho + xi (Kairouz, Liu, Steinke, ICML 2021,
Proposition 14, first bound: rho = Delta^2 / (2 t sigma^2), xi = tau D).  The
accountant composes these events with ``dp_accounting``'s RDP accountant
(``ZCDpEvent``; central Gaussian baselines as ``GaussianDpEvent``) and converts
to (epsilon, delta) with its optimal RDP-to-DP conversion.  RDP, not PLD: the
sum of discrete Gaussians is not a Gaussian, and an RDP bound is what the
paper proves for it.

Neighbouring runs differ in one client's contribution to every call it takes
part in (its vector and weight replaced by nothing, the "zero-out" relation of
the mechanism's sensitivity).  Composition is over every call a client takes
part in; no amplification by sampling is claimed (a deployment cannot prove
which clients were sampled), so the bound holds for any client in any round.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import dp_accounting
from dp_accounting.rdp import rdp_privacy_accountant as rdp

from .errors import ParameterError

ORDERS = tuple(1 + x / 10.0 for x in range(1, 100)) + tuple(range(11, 64)) + (80, 128, 256, 512, 1024)


@dataclass
class PrivacyAccountant:
    """Composes the privacy events of a run; ``epsilon()`` answers epsilon at ``delta``."""

    delta: float = 1e-5
    events: list[tuple[str, dp_accounting.DpEvent]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 0 < self.delta < 1:
            raise ParameterError(f"delta must lie in (0, 1), got {self.delta}")

    def spend_zcdp(self, rho: float, xi: float = 0.0, label: str = "call") -> None:
        """One call that satisfies (xi, rho)-zCDP."""
        if not (rho >= 0 and xi >= 0 and math.isfinite(rho) and math.isfinite(xi)):
            raise ParameterError(f"rho and xi must be finite and >= 0, got {rho}, {xi}")
        self.events.append((label, dp_accounting.ZCDpEvent(rho=rho, xi=xi)))

    def spend_gaussian(self, noise_multiplier: float, label: str = "central") -> None:
        """One Gaussian mechanism with noise std = noise_multiplier x L2 sensitivity (central DP)."""
        self.events.append((label, dp_accounting.GaussianDpEvent(noise_multiplier)))

    @property
    def calls(self) -> int:
        return len(self.events)

    def epsilon(self, delta: float | None = None, label: str | None = None) -> float:
        """epsilon of every event so far (or only those with ``label``) at ``delta``."""
        return epsilon_of([e for lab, e in self.events if label is None or lab == label], delta or self.delta)


def epsilon_of(events: list[dp_accounting.DpEvent], delta: float) -> float:
    if not events:
        return 0.0
    accountant = rdp.RdpAccountant(ORDERS)
    accountant.compose(dp_accounting.ComposedDpEvent(events))
    return float(accountant.get_epsilon(delta))


def zcdp_epsilon(rho: float, delta: float, count: int = 1, xi: float = 0.0) -> float:
    """epsilon at delta of ``count`` compositions of one (xi, rho)-zCDP event."""
    return epsilon_of([dp_accounting.SelfComposedDpEvent(dp_accounting.ZCDpEvent(rho=rho, xi=xi), count)], delta)


def gaussian_epsilon(noise_multiplier: float, delta: float, count: int = 1) -> float:
    """epsilon at delta of ``count`` Gaussian mechanisms with this noise multiplier (central DP)."""
    event = dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(noise_multiplier), count)
    return epsilon_of([event], delta)


def noise_multiplier_for(epsilon: float, delta: float, calls: int) -> float:
    """The smallest z whose ``calls`` compositions of (1 / (2 z^2))-zCDP stay within epsilon at delta.

    rho = 1 / (2 z^2) is both the Gaussian's zCDP and the distributed discrete
    Gaussian's at t survivors (``dp.py`` picks sigma from z that way); the
    bisection keeps the upper end, so the answer never overshoots epsilon.
    """
    if not (epsilon > 0 and math.isfinite(epsilon)):
        raise ParameterError(f"epsilon must be positive and finite, got {epsilon}")
    if calls < 1:
        raise ParameterError(f"calls must be >= 1, got {calls}")

    def eps(z: float) -> float:
        return zcdp_epsilon(1 / (2 * z * z), delta, calls)

    lo, hi = 1e-3, 1.0
    while eps(hi) > epsilon:
        lo, hi = hi, hi * 2
        if hi > 1e7:
            raise ParameterError(f"no noise multiplier reaches epsilon={epsilon} at delta={delta} over {calls} calls")
    for _ in range(50):
        mid = math.sqrt(lo * hi)
        lo, hi = (lo, mid) if eps(mid) <= epsilon else (mid, hi)
        if hi / lo < 1 + 1e-6:
            break
    return hi
