"""The privacy-weight rule of an iterative secure aggregate, enforced before each step.

Definition 1 (iv) of the RFA paper asks that every effective weight
beta_i / sum_j beta_j revealed by a step be at most s.  Proposition 3 bounds it
with B = max ||w_i - w_j|| and the smallest realised max(nu, ||v - w_i||),
neither of which anybody can check before the step.  We use a form computable
from public values alone:

* every client clips its vector to norm <= C, and refuses a broadcast v with
  ||v|| > C, so ||v - w_i|| <= D(v) = ||v|| + C: at most 2C, and exactly C
  for one-step RFA's v = 0 (the broadcast is public, so every party knows D);
* every client clips alpha_i into the public range [alpha_min, alpha_max];
* secure aggregation reveals no sum of fewer than t inputs.

Then alpha_min / max(nu, D) <= beta_i <= alpha_max / nu, and since
x / (x + y) grows with x, every effective weight is at most

    cert = (alpha_max / nu) / (alpha_max / nu + (t - 1) * alpha_min / max(nu, D)).

cert falls as nu grows, down to the floor 1 / (1 + (t - 1) alpha_min / alpha_max)
reached at nu >= D, where every beta_i = alpha_i / nu: the plain weighted
mean, with no robustness left.  So a bound s is certifiable with a median
only if s is above that floor (s > 1/t for equal weights), and the smallest
nu certifying s is  nu* = D (1/s - 1) / ((t - 1) alpha_min / alpha_max).

The same bound with the number k >= t of inputs a revealed sum actually has
(the survivor list, known to every client before unmasking) in place of t is
what that output satisfies; protocol_spec.md says why nu is still chosen
from t.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import CertificateViolation, PolicyError, UncertifiableBound


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise PolicyError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise PolicyError(f"{name} must be positive and finite, got {value}")
    return float(value)


def _check_public(norm_bound: float, alpha_min: float, alpha_max: float, threshold: int, reach: float | None) -> float:
    """Validate the public parameters; return the distance bound D (default 2C)."""
    _positive("norm_bound", norm_bound)
    _positive("alpha_min", alpha_min)
    _positive("alpha_max", alpha_max)
    if alpha_min > alpha_max:
        raise PolicyError(f"alpha_min={alpha_min} exceeds alpha_max={alpha_max}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, np.integer)) or threshold < 1:
        raise PolicyError(f"threshold must be an integer >= 1, got {threshold!r}")
    return 2.0 * norm_bound if reach is None else _positive("reach", reach)


def broadcast_reach(v: np.ndarray, norm_bound: float) -> float:
    """D(v) = ||v|| + C: the public bound on ||v - w_i|| for a broadcast v (triangle inequality)."""
    return float(np.linalg.norm(v)) + norm_bound


def certified_weight(
    nu: float, norm_bound: float, alpha_min: float, alpha_max: float, threshold: int, reach: float | None = None
) -> float:
    """The largest effective weight a step can reveal; ``reach`` is D (default 2C, any accepted v)."""
    reach = _check_public(norm_bound, alpha_min, alpha_max, threshold, reach)
    top = alpha_max / _positive("nu", nu)
    return top / (top + (threshold - 1) * alpha_min / max(nu, reach))


def weight_floor(alpha_min: float, alpha_max: float, threshold: int) -> float:
    """The certificate as nu -> infinity: no s at or below it is certifiable."""
    return 1.0 / (1.0 + (threshold - 1) * alpha_min / alpha_max)


def smallest_nu(
    max_weight: float, norm_bound: float, alpha_min: float, alpha_max: float, threshold: int,
    reach: float | None = None,
) -> float:
    """The smallest nu whose certificate (distance bound ``reach``, default 2C) is <= max_weight."""
    reach = _check_public(norm_bound, alpha_min, alpha_max, threshold, reach)
    s = _positive("max_weight", max_weight)
    if s >= 1:
        # cert < 1 for every nu > 0: there is no smallest nu, only an infimum of 0.
        raise PolicyError(f"max_weight={s:g} bounds nothing: every nu certifies it; pass nu explicitly")
    floor = weight_floor(alpha_min, alpha_max, threshold)
    if not s > floor:
        raise UncertifiableBound(
            f"max_weight={s:.6g} cannot be certified: with t={threshold} and alpha in "
            f"[{alpha_min:.3g}, {alpha_max:.3g}] every nu gives a bound >= {floor:.6g} "
            f"(at that floor the median degenerates into the mean); raise s or t"
        )
    nu = reach * (1 / s - 1) / ((threshold - 1) * alpha_min / alpha_max)
    # Rounding may leave the certificate a hair above s: step nu up until it holds.
    while certified_weight(nu, norm_bound, alpha_min, alpha_max, threshold, reach) > s:
        nu = float(np.nextafter(nu, math.inf))
    return nu


def into_ball(points: np.ndarray, radius: float) -> np.ndarray:
    """A vector (d,) or rows (n, d) scaled onto the ball ||x|| <= radius, with no ulp overshoot.

    The certificate's D = ||v|| + C needs ||v|| <= C as the clients compute it
    (``np.linalg.norm`` of the vector) and ||w_i|| <= C, so a scaled vector
    whose computed norm still exceeds the radius by rounding is shrunk by one
    ulp at a time until it does not.
    """
    out = np.array(points, dtype=np.float64, copy=True)
    if out.ndim == 1:
        norm = float(np.linalg.norm(out))
        if norm > radius:
            out *= radius / norm
        while float(np.linalg.norm(out)) > radius:
            out *= _ONE_BELOW
        return out
    norms = np.linalg.norm(out, axis=1)
    over = np.flatnonzero(norms > radius)
    out[over] *= (radius / norms[over])[:, None]
    over = over[np.linalg.norm(out[over], axis=1) > radius]
    while over.size:
        out[over] *= _ONE_BELOW
        over = over[np.linalg.norm(out[over], axis=1) > radius]
    return out


_ONE_BELOW = float(np.nextafter(1.0, 0.0))


@dataclass(frozen=True)
class PrivacyPolicy:
    """Public parameters of the rule; every party can evaluate it."""

    nu: float | None  # None: a policy for plain weighted means only
    norm_bound: float  # C
    alpha_min: float
    alpha_max: float
    max_weight: float | None  # s; None: report the certificate, enforce nothing

    def __post_init__(self) -> None:
        if self.nu is not None:
            _positive("nu", self.nu)
        _check_public(self.norm_bound, self.alpha_min, self.alpha_max, 1, None)
        if self.max_weight is not None and not (
            isinstance(self.max_weight, (int, float)) and 0 < self.max_weight <= 1
        ):
            raise PolicyError(f"max_weight must lie in (0, 1], got {self.max_weight}")

    @property
    def beta_max(self) -> float:
        """The largest beta_i any step (Weiszfeld or mean) can produce: the encoding's weight bound."""
        return self.alpha_max if self.nu is None else max(self.alpha_max / self.nu, self.alpha_max)

    def certificate(self, count: int, v: np.ndarray | None = None) -> float:
        """The bound for a sum of at least ``count`` inputs around broadcast ``v`` (None: any accepted v)."""
        if self.nu is None:
            raise PolicyError("this policy has no nu: it certifies weighted means only")
        reach = None if v is None else broadcast_reach(v, self.norm_bound)
        return certified_weight(self.nu, self.norm_bound, self.alpha_min, self.alpha_max, count, reach)

    def mean_certificate(self, count: int) -> float:
        """A plain weighted mean (beta_i = alpha_i): its bound is the floor."""
        return weight_floor(self.alpha_min, self.alpha_max, count)

    def check(self, threshold: int, party: str, v: np.ndarray | None = None) -> float:
        """Raise CertificateViolation if a Weiszfeld step around v with threshold t could exceed s."""
        return self._enforce(self.certificate(threshold, v), threshold, party)

    def check_mean(self, threshold: int, party: str) -> float:
        """The same for a plain weighted mean, whose bound is the floor."""
        return self._enforce(self.mean_certificate(threshold), threshold, party)

    def _enforce(self, cert: float, threshold: int, party: str) -> float:
        if self.max_weight is not None and cert > self.max_weight:
            raise CertificateViolation(
                party,
                f"certified weight {cert:.6g} exceeds max_weight {self.max_weight:.6g} "
                f"(nu={self.nu}, C={self.norm_bound:.3g}, t={threshold})",
            )
        return cert

    def client_check(self, v: np.ndarray, threshold: int, client: int | str) -> float:
        """What an honest client verifies before computing beta_i for a broadcast v; returns the certificate."""
        norm = float(np.linalg.norm(v))
        # Exactly C, no tolerance: the certificate's D = ||v|| + C is only as good as this check.
        if not math.isfinite(norm) or norm > self.norm_bound:
            raise CertificateViolation(
                f"client {client}", f"broadcast v has norm {norm!r} > C = {self.norm_bound!r}"
            )
        return self.check(threshold, f"client {client}", v)

    def clip_alpha(self, alpha: np.ndarray) -> np.ndarray:
        return np.clip(alpha, self.alpha_min, self.alpha_max)
