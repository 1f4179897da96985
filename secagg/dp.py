"""The distributed discrete Gaussian mechanism inside secure aggregation (Kairouz, Liu, Steinke, ICML 2021).

``DistributedDiscreteGaussian(l2_clip=C, noise_multiplier=z)`` is passed as
``SecureAverageOracle(..., dp=mechanism)``.  In each call every client turns
its (w_i, beta_i) into an integer vector before masking (``CallPlan.encode``)
and the server turns the revealed sum back into an average (``CallPlan.decode``):

1. clip w_i to ||w_i|| <= C (always: it is the privacy rule) and beta_i to the
   public weight bound beta_max;
2. form x_i = (beta_i / beta_max) [w_i, C] in R^(d+1), so ||x_i|| <= sqrt(2) C.
   The weight rides in the last coordinate: the denominator sum beta_i is
   noised and protected like the numerator, never revealed exactly;
3. rotate with the session's public randomized Hadamard (``rotation.py``),
   padding to D = 2**ceil(log2(d + 1)), and scale by the granularity gamma;
4. round to integers at random, conditionally: redraw until the rounded
   vector's norm is at most Delta (KLS21 Sec. 4.1, the bound with beta);
   Delta^2 is an integer, checked exactly;
5. clip each coordinate to [-L, L] (a public bound an honest rotated vector
   exceeds with probability below ``clip_probability``; clipping only lowers the
   norm, so Delta still bounds it, and no input, however chosen, can push the
   sum past L per client);
6. add D exact discrete Gaussians N_Z(0, sigma^2) (``dgauss.py``) from the
   client's CSPRNG, with sigma^2 >= z^2 Delta^2 / t: any t survivors' noise
   sums to variance >= (z Delta)^2;
7. reduce mod M = 2**k, k the fewest bits with
   n_max L + sqrt(2 ln(2 D / p)) sqrt(n_max sigma^2) < M / 2, so the noisy sum
   wraps with probability below p = ``wrap_probability`` (discrete Gaussians
   are sigma^2-subgaussian, CKS20); a ``modulus_bits`` below that is refused.

The server unmasks the sum, divides by gamma, rotates back, and divides the
first d coordinates by the last / C: the average, plus noise of standard
deviation ``noise_std`` per coordinate.

Privacy, per call: with k >= t survivors the server sees the sum of k
discrete Gaussians, which is not a discrete Gaussian.  KLS21 Proposition 14
bounds its Renyi divergence for neighbouring inputs (one client's x_i replaced
by zero) by alpha Delta^2 / (2 k sigma^2) + tau D, with
tau = 10 sum_{j<k} exp(-2 pi^2 sigma^2 j / (j + 1)); so each call is
(xi, rho)-zCDP with rho = Delta^2 / (2 t sigma^2) (k = t is the worst) and
xi = tau(n_max) D (tau grows with k).  Dropouts: fewer than t survivors
never reveal a sum (secure aggregation aborts); more survivors add noise,
which only helps.  A client that drops after sending its masked input still
counts: its noise is in the sum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
import numpy as np

from . import dgauss
from .accounting import PrivacyAccountant, gaussian_epsilon, zcdp_epsilon
from .errors import EncodingOverflow, NoisyWeightSum, OutOfBounds, ParameterError
from .rng import RandomSource, SeededRandom, SystemRandom, fresh_stream
from .rotation import Rotation, padded

_SIGMA2_MAX = 2**28  # the exact int64 sampler's comfortable range (dgauss.check_sigma2 allows ~2**30)


@dataclass(frozen=True)
class PrivacyCost:
    """What one noisy call spends: (xi, rho)-zCDP, and its epsilon at ``delta`` alone."""

    rho: float
    xi: float
    delta: float
    epsilon: float


@dataclass(frozen=True)
class Encoded:
    vector: np.ndarray  # uint64 in [0, M), D elements
    clipped_norm: bool  # ||w_i|| exceeded C
    clipped_weight: bool  # beta_i exceeded beta_max
    clipped_coordinates: int  # rotated coordinates cut to [-L, L] (honest inputs: almost never)
    rounding_draws: int  # conditional rounding attempts


def contribution(vector: np.ndarray, weight: float, d: int, l2_clip: float, weight_bound: float, *,
                 clip: bool, client: int | None) -> tuple[np.ndarray, bool, bool]:
    """x_i = (beta_i / beta_max) [w_i clipped to norm C, C] (steps 1-2), and whether w_i and beta_i were clipped."""
    who = "an input" if client is None else f"client {client}"
    w = np.asarray(vector, dtype=np.float64)
    if w.shape != (d,) or not np.all(np.isfinite(w)):
        raise ParameterError(f"{who}: the vector must be finite with shape ({d},)")
    weight = float(weight)
    if not (math.isfinite(weight) and weight > 0):
        raise ParameterError(f"{who}: the weight must be positive and finite, got {weight!r}")
    if weight > weight_bound and not clip:
        raise OutOfBounds(client, "weight", weight_bound, weight)
    norm = float(np.linalg.norm(w))
    x = np.empty(d + 1)
    x[:-1] = w * (l2_clip / norm) if norm > l2_clip else w
    x[-1] = l2_clip
    x *= min(weight, weight_bound) / weight_bound
    return x, norm > l2_clip, weight > weight_bound


@dataclass(frozen=True)
class CallPlan:
    """The public parameters of one call: every party derives the same plan."""

    d: int
    dim: int  # D
    threshold: int  # t
    max_clients: int
    l2_clip: float  # C
    weight_bound: float  # beta_max
    gamma: float  # integer units per unit of x_i
    sensitivity_sq: int  # Delta^2: bound on ||rounded x_i||^2, integer units
    sigma2: Fraction  # each client's discrete Gaussian parameter
    linf: int  # L
    modulus_bits: int
    rotation: Rotation
    cost: PrivacyCost

    @property
    def modulus(self) -> int:
        return 1 << self.modulus_bits

    def encode(self, vector: np.ndarray, weight: float, rng: RandomSource, *, clip: bool = True,
               client: int | None = None) -> Encoded:
        """One client's side, steps 1-7 of the module docstring."""
        x, clipped_norm, clipped_weight = contribution(
            vector, weight, self.d, self.l2_clip, self.weight_bound, clip=clip, client=client)
        who = "an input" if client is None else f"client {client}"
        y = self.rotation.forward(x) * self.gamma
        low = np.floor(y)
        frac = y - low
        draws = 0
        while True:  # conditional randomized rounding: P[norm above the bound] <= beta per draw
            draws += 1
            u = (np.frombuffer(rng.bytes(8 * self.dim), dtype=np.uint64) >> np.uint64(11)) * 2.0**-53
            r = (low + (u < frac)).astype(np.int64)
            if int(r @ r) <= self.sensitivity_sq:
                break
            if draws >= 200:
                raise ParameterError(f"{who}: conditional rounding failed 200 times (granularity too coarse)")
        cut = np.clip(r, -self.linf, self.linf)
        clipped = int(np.count_nonzero(cut != r))
        noisy = cut + dgauss.sample(self.sigma2, self.dim, rng)
        out = noisy.view(np.uint64) & np.uint64(self.modulus - 1)
        return Encoded(out, clipped_norm, clipped_weight, clipped, draws)

    def decode(self, total: np.ndarray, survivors: int) -> tuple[np.ndarray, float, float]:
        """(average, noisy sum of weights, per-coordinate noise std of the average) from the revealed sum."""
        signed = (np.asarray(total, dtype=np.uint64) & np.uint64(self.modulus - 1)).view(np.int64)
        if self.modulus_bits < 64:  # lift [M/2, M) to [-M/2, 0)
            signed = np.where(signed >= self.modulus // 2, signed - self.modulus, signed)
        x = self.rotation.inverse(signed.astype(np.float64) / self.gamma)
        units = x[-1] / self.l2_clip  # sum beta_i / beta_max, noisy
        if not units > 0:
            raise NoisyWeightSum(
                f"the noisy weight sum of this call is {units * self.weight_bound:.3g} <= 0: the noise swamps "
                "the weights (raise the weights towards the weight bound, or lower the noise multiplier)"
            )
        noise = math.sqrt(survivors * dgauss.variance(float(self.sigma2))) / self.gamma
        return x[:-1] / units, units * self.weight_bound, noise / units


@dataclass
class DistributedDiscreteGaussian:
    """``DistributedDiscreteGaussian(l2_clip=C, noise_multiplier=z)``: the mechanism of one oracle.

    ``noise_multiplier`` z: the survivors' total noise has standard deviation
    at least z times the L2 sensitivity, whenever at least t clients survive.
    ``max_clients``: the most inputs one call sums (sizes the modulus and xi).
    ``granularity``: gamma (default: 8 sqrt(D) / Delta, so rounding inflates the
    sensitivity by well under 1%).  ``modulus_bits``: refused if the sum could
    wrap (default: the fewest safe bits).  ``accountant``: spent on every call.
    """

    l2_clip: float
    noise_multiplier: float
    max_clients: int = 1024
    delta: float = 1e-5
    granularity: float | None = None
    modulus_bits: int | None = None
    beta: float = math.exp(-0.5)
    wrap_probability: float = 2.0**-40
    clip_probability: float = 2.0**-30
    accountant: PrivacyAccountant | None = None
    _plans: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for name in ("l2_clip", "noise_multiplier"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
                raise ParameterError(f"{name} must be positive and finite, got {v!r}")
        if not isinstance(self.max_clients, int) or self.max_clients < 1:
            raise ParameterError(f"max_clients must be a positive integer, got {self.max_clients!r}")
        if self.modulus_bits is not None and not 2 <= self.modulus_bits <= 64:
            raise ParameterError(f"modulus_bits must lie in [2, 64], got {self.modulus_bits}")
        if self.accountant is None:
            self.accountant = PrivacyAccountant(self.delta)

    def plan(self, d: int, threshold: int, weight_bound: float, seed: bytes) -> CallPlan:
        """The public parameters of one call over d-vectors with threshold t and rotation seed ``seed``."""
        key = (d, threshold, weight_bound)
        if key not in self._plans:
            self._plans[key] = self._parameters(d, threshold, weight_bound)
        params = self._plans[key]
        return CallPlan(rotation=Rotation(d + 1, seed), **params)

    def _parameters(self, d: int, t: int, weight_bound: float) -> dict:
        if not (isinstance(t, int) and 1 <= t <= self.max_clients):
            raise ParameterError(f"threshold must lie in [1, max_clients={self.max_clients}], got {t!r}")
        D = padded(d + 1)
        z, n = self.noise_multiplier, self.max_clients
        delta2 = math.sqrt(2) * self.l2_clip  # ||x_i|| <= sqrt(2) C
        if self.granularity is None:
            # gamma Delta = 8 sqrt(D), unless sigma would leave the exact sampler's range.
            scaled = min(8 * math.sqrt(D), math.sqrt(_SIGMA2_MAX * t) / (1.02 * z))
            gamma = scaled / delta2
        else:
            gamma = float(self.granularity)
            if not (math.isfinite(gamma) and gamma > 0):
                raise ParameterError(f"granularity must be positive and finite, got {gamma!r}")
        g = gamma * delta2
        # KLS21 Sec. 4.1: the norm bound conditional randomized rounding enforces.
        bound_sq = min(g * g + D / 4 + math.sqrt(2 * math.log(1 / self.beta)) * (g + math.sqrt(D) / 2),
                       (g + math.sqrt(D)) ** 2)
        sensitivity_sq = math.floor(bound_sq)
        target = z * z * sensitivity_sq / t
        sigma2 = Fraction(math.ceil(target)) if target >= 1 else Fraction(math.ceil(target * 2**16), 2**16)
        # Hoeffding over the public signs: a rotated coordinate of an honest vector (norm <= g) exceeds L - 1
        # with probability <= clip_probability / D, so the vector is cut anywhere with probability <= it.
        linf = math.ceil(g * math.sqrt(2 * math.log(2 * D / self.clip_probability) / D)) + 1
        linf = min(linf, math.isqrt(sensitivity_sq))
        tail = math.sqrt(2 * math.log(2 * D / self.wrap_probability)) * math.sqrt(n * float(sigma2))
        reach = n * linf + tail  # |coordinate of the noisy sum| stays below this except with wrap_probability
        needed = math.ceil(math.log2(reach + 1)) + 1
        if needed > 64:
            raise EncodingOverflow(f"the noisy sum needs {needed} bits (> 64): lower max_clients or the noise")
        bits = needed if self.modulus_bits is None else self.modulus_bits
        if bits < needed:
            raise EncodingOverflow(
                f"modulus 2^{bits} could wrap: {n} clients' sum with noise reaches {reach:.4g}, needing {needed} bits"
            )
        dgauss.check_sigma2(sigma2)
        rho = sensitivity_sq / (2 * t * float(sigma2))
        s2 = float(sigma2)
        j = np.arange(1, n)
        xi = float(10 * np.exp(-2 * math.pi**2 * s2 * j / (j + 1)).sum()) * D
        cost = PrivacyCost(rho, xi, self.delta, zcdp_epsilon(rho, self.delta, 1, xi))
        return dict(d=d, dim=D, threshold=t, max_clients=n, l2_clip=float(self.l2_clip),
                    weight_bound=float(weight_bound), gamma=gamma, sensitivity_sq=sensitivity_sq, sigma2=sigma2,
                    linf=linf, modulus_bits=bits, cost=cost)

    def spend(self, plan: CallPlan, label: str = "call") -> None:
        assert self.accountant is not None
        self.accountant.spend_zcdp(plan.cost.rho, plan.cost.xi, label)

    def epsilon(self, delta: float | None = None) -> float:
        """epsilon of every call this mechanism has answered so far."""
        assert self.accountant is not None
        return self.accountant.epsilon(delta)



def gaussian(rng: RandomSource, size: int) -> np.ndarray:
    """Standard normal floats by Box-Muller on CSPRNG words (central-DP baseline only)."""
    words = np.frombuffer(rng.bytes(16 * ((size + 1) // 2)), dtype=np.uint64).reshape(-1, 2)
    u1 = ((words[:, 0] >> np.uint64(11)) + 1) * 2.0**-53  # (0, 1]
    u2 = (words[:, 1] >> np.uint64(11)) * 2.0**-53
    r = np.sqrt(-2 * np.log(u1))
    return np.concatenate([r * np.cos(2 * np.pi * u2), r * np.sin(2 * np.pi * u2)])[:size]


@dataclass(frozen=True)
class CentralPlan:
    """One call of the central baseline: exact fixed-point sum, Gaussian noise added by the server."""

    d: int
    l2_clip: float
    weight_bound: float
    noise_multiplier: float
    frac_bits: int
    server_rng: RandomSource
    modulus_bits: int = 64
    cost: PrivacyCost | None = None

    @property
    def modulus(self) -> int:
        return 1 << self.modulus_bits

    def encode(self, vector: np.ndarray, weight: float, rng: RandomSource, *, clip: bool = True,
               client: int | None = None) -> Encoded:
        x, clipped_norm, clipped_weight = contribution(
            vector, weight, self.d, self.l2_clip, self.weight_bound, clip=clip, client=client)
        q = np.rint(x * 2.0**self.frac_bits).astype(np.int64)
        return Encoded(q.view(np.uint64), clipped_norm, clipped_weight, 0, 0)

    def decode(self, total: np.ndarray, survivors: int) -> tuple[np.ndarray, float, float]:
        sigma = self.noise_multiplier * math.sqrt(2) * self.l2_clip  # z times the sensitivity of the sum
        x = np.asarray(total, dtype=np.uint64).view(np.int64) * 2.0**-self.frac_bits
        x = x + sigma * gaussian(self.server_rng, self.d + 1)
        units = x[-1] / self.l2_clip
        if not units > 0:
            raise NoisyWeightSum(f"the noisy weight sum of this call is {units * self.weight_bound:.3g} <= 0")
        return x[:-1] / units, units * self.weight_bound, sigma / units


@dataclass
class CentralGaussian:
    """The central-DP baseline (Flower's server-side fixed clipping calibration): same clipping and
    sensitivity as ``DistributedDiscreteGaussian``, but the server adds N(0, (z sqrt(2) C)^2) to the
    unmasked sum itself, so it must be trusted.  Accounted as a Gaussian mechanism."""

    l2_clip: float
    noise_multiplier: float
    max_clients: int = 1024
    delta: float = 1e-5
    accountant: PrivacyAccountant | None = None
    reproducible: bool = False  # simulations only: noise derived from the call's public seed (no privacy)

    def __post_init__(self) -> None:
        if self.accountant is None:
            self.accountant = PrivacyAccountant(self.delta)

    def plan(self, d: int, threshold: int, weight_bound: float, seed: bytes) -> CentralPlan:
        frac_bits = min(40, 61 - math.ceil(math.log2(self.max_clients * math.sqrt(2) * self.l2_clip + 1)))
        cost = PrivacyCost(1 / (2 * self.noise_multiplier**2), 0.0, self.delta,
                           gaussian_epsilon(self.noise_multiplier, self.delta))
        return CentralPlan(d, float(self.l2_clip), float(weight_bound), self.noise_multiplier, frac_bits,
                           # The server's own noise: a secret stream, unless a simulation asks to replay it.
                           SeededRandom(b"secagg/v1/central-noise|" + seed) if self.reproducible
                           else fresh_stream(SystemRandom()), cost=cost)

    def spend(self, plan: CentralPlan, label: str = "call") -> None:
        assert self.accountant is not None
        self.accountant.spend_gaussian(self.noise_multiplier, label)

    def epsilon(self, delta: float | None = None) -> float:
        assert self.accountant is not None
        return self.accountant.epsilon(delta)
