"""The privacy-weight rule of an iterative secure aggregate, enforced before each step.

Definition 1 (iv) of the RFA paper asks that every effective weight
beta_i / sum_j beta_j revealed by a step be at most s.  Proposition 3 bounds it
with B = max ||w_i - w_j|| and the smallest realised max(nu, ||v - w_i||),
neither of which anybody can check before the step.  We use a form computable
from public parameters alone:

* every client clips its vector to norm <= C, and refuses a broadcast v with
  ||v|| > C, so ||v - w_i|| <= 2C;
* every client clips alpha_i into the public range [alpha_min, alpha_max];
* secure aggregation reveals no sum of fewer than t inputs.

Then alpha_min / max(nu, 2C) <= beta_i <= alpha_max / nu, and since
x / (x + y) grows with x, every effective weight is at most

    cert = (alpha_max / nu) / (alpha_max / nu + (t - 1) * alpha_min / max(nu, 2C)).

cert falls as nu grows, down to the floor 1 / (1 + (t - 1) alpha_min / alpha_max)
reached at nu >= 2C, where every beta_i = alpha_i / nu: the plain weighted
mean, with no robustness left.  So a bound s is certifiable with a median
only if s is above that floor (s > 1/t for equal weights), and the smallest
nu certifying s is  nu* = 2C (1/s - 1) / ((t - 1) alpha_min / alpha_max).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import CertificateViolation, InvalidArgument, UncertifiableBound


def certified_weight(nu: float, norm_bound: float, alpha_min: float, alpha_max: float, threshold: int) -> float:
    """The largest effective weight any step can reveal under these public parameters."""
    top = alpha_max / nu
    return top / (top + (threshold - 1) * alpha_min / max(nu, 2 * norm_bound))


def weight_floor(alpha_min: float, alpha_max: float, threshold: int) -> float:
    """The certificate as nu -> infinity: no s at or below it is certifiable."""
    return 1.0 / (1.0 + (threshold - 1) * alpha_min / alpha_max)


def smallest_nu(max_weight: float, norm_bound: float, alpha_min: float, alpha_max: float, threshold: int) -> float:
    """The smallest nu whose certificate is <= max_weight; raises if none is."""
    floor = weight_floor(alpha_min, alpha_max, threshold)
    if not max_weight > floor:
        raise UncertifiableBound(
            f"max_weight={max_weight:.6g} cannot be certified: with t={threshold} and alpha in "
            f"[{alpha_min:.3g}, {alpha_max:.3g}] every nu gives a bound >= {floor:.6g} "
            f"(at that floor the median degenerates into the mean); raise s or t"
        )
    nu = 2 * norm_bound * (1 / max_weight - 1) / ((threshold - 1) * alpha_min / alpha_max)
    # Rounding may leave the certificate a hair above s: step nu up until it holds.
    while certified_weight(nu, norm_bound, alpha_min, alpha_max, threshold) > max_weight:
        nu = float(np.nextafter(nu, math.inf))
    return nu


@dataclass(frozen=True)
class PrivacyPolicy:
    """Public parameters of the rule; every party can evaluate it."""

    nu: float | None  # None: a policy for plain weighted means only
    norm_bound: float  # C
    alpha_min: float
    alpha_max: float
    max_weight: float | None  # s; None: report the certificate, enforce nothing

    def __post_init__(self) -> None:
        for name in ("nu", "norm_bound", "alpha_min", "alpha_max"):
            value = getattr(self, name)
            if name == "nu" and value is None:
                continue
            if not (math.isfinite(value) and value > 0):
                raise InvalidArgument(f"{name} must be positive and finite, got {value}")
        if self.alpha_min > self.alpha_max:
            raise InvalidArgument(f"alpha_min={self.alpha_min} exceeds alpha_max={self.alpha_max}")
        if self.max_weight is not None and not 0 < self.max_weight <= 1:
            raise InvalidArgument(f"max_weight must lie in (0, 1], got {self.max_weight}")

    @property
    def beta_max(self) -> float:
        """The largest beta_i any step (Weiszfeld or mean) can produce: the encoding's weight bound."""
        return self.alpha_max if self.nu is None else max(self.alpha_max / self.nu, self.alpha_max)

    def certificate(self, threshold: int) -> float:
        if self.nu is None:
            raise InvalidArgument("this policy has no nu: it certifies weighted means only")
        return certified_weight(self.nu, self.norm_bound, self.alpha_min, self.alpha_max, threshold)

    def check(self, threshold: int, party: str) -> float:
        """Raise CertificateViolation if a Weiszfeld step with threshold t could exceed s; return the certificate."""
        return self._enforce(self.certificate(threshold), threshold, party)

    def check_mean(self, threshold: int, party: str) -> float:
        """The same for a plain weighted mean (beta_i = alpha_i), whose bound is the floor."""
        return self._enforce(weight_floor(self.alpha_min, self.alpha_max, threshold), threshold, party)

    def _enforce(self, cert: float, threshold: int, party: str) -> float:
        if self.max_weight is not None and cert > self.max_weight:
            raise CertificateViolation(
                party,
                f"certified weight {cert:.6g} exceeds max_weight {self.max_weight:.6g} "
                f"(nu={self.nu}, C={self.norm_bound:.3g}, t={threshold})",
            )
        return cert

    def client_check(self, v: np.ndarray, threshold: int, client: int) -> None:
        """What an honest client verifies before computing beta_i for a broadcast v."""
        norm = float(np.linalg.norm(v))
        if not math.isfinite(norm) or norm > self.norm_bound * (1 + 1e-12):
            raise CertificateViolation(
                f"client {client}", f"broadcast v has norm {norm:.6g} > C = {self.norm_bound:.6g}"
            )
        self.check(threshold, f"client {client}")

    def clip_alpha(self, alpha: np.ndarray) -> np.ndarray:
        return np.clip(alpha, self.alpha_min, self.alpha_max)
