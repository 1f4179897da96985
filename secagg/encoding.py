"""Fixed-point encoding of (beta_i * w_i, beta_i) into Z_M and back.

Public parameters: the value bound B (each coordinate of w_i must lie in
[-B, B]), the weight bound beta_max (each beta_i must lie in (0, beta_max]),
the fractional bits f and the modulus M = 2**k.  A client whose input lies
outside the bounds refuses to encode it (``OutOfBounds``) unless clipping
was asked for (``clip=True``: w_i clipped to [-B, B] per coordinate, beta_i
to beta_max).  A client sends

    q_i = round(2**f * (beta_i / beta_max) * (w_i / B))   in [-2**f, 2**f]^d
    r_i = round(2**f * beta_i / beta_max)                  in [0, 2**f]

as d + 1 elements of Z_M (two's complement).  The sum of n such vectors is
exact, without wrap-around, iff n * 2**f < M / 2, which ``check_capacity``
enforces before anything is sent.  The average is B * sum(q) / sum(r); the
scale beta_max cancels.

Quantization (per coordinate, worst case).  Each encoded element errs from its
exact scaled value by at most delta = 1/2 + 2**(f - 51): 1/2 from rounding,
and 2**(f - 51) for the float64 products that form it (a few relative errors
of 2**-53 on a value of at most 2**f).  With S = sum(r) (the encoded weight
sum, which the server learns) and n inputs, the decoded average v' of an exact
average v with |v| <= B satisfies

    v' - v = B (e_q - (v / B) e_r) / (S - e_r),  |e_q|, |e_r| <= n delta,

so  |v' - v| <= 2 n delta B / (S - n delta) + 2**-50 B  for S > n delta, the
last term covering the float64 decoding.  That is about
n * B * beta_max / (2**f * sum(beta_i)).  f is capped at 50 so that the float64
terms stay below a quarter of the rounding error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import EncodingOverflow, OutOfBounds, ParameterError


@dataclass(frozen=True)
class Encoded:
    vector: np.ndarray  # uint64, d + 1 elements in [0, M)
    clipped_values: int  # coordinates of w that were clipped to [-B, B] (clip=True only)
    clipped_weight: bool  # beta was above beta_max and was clipped to it (clip=True only)
    underflow: bool  # beta encodes to 0: this input carries no weight


@dataclass(frozen=True)
class FixedPointEncoding:
    value_bound: float = 1e3
    weight_bound: float = 1.0
    frac_bits: int = 50
    modulus_bits: int = 64

    def __post_init__(self) -> None:
        if not (math.isfinite(self.value_bound) and self.value_bound > 0):
            raise ParameterError(f"value bound must be positive and finite, got {self.value_bound}")
        if not (math.isfinite(self.weight_bound) and self.weight_bound > 0):
            raise ParameterError(f"weight bound must be positive and finite, got {self.weight_bound}")
        if not 1 <= self.modulus_bits <= 64:
            raise ParameterError(f"modulus must be 2**k with 1 <= k <= 64, got k={self.modulus_bits}")
        if not 0 <= self.frac_bits <= 50:
            # float64 carries 53 significant bits; above 50 its rounding rivals the quantization.
            raise ParameterError(f"fractional bits must be in [0, 50], got {self.frac_bits}")
        if not math.isfinite(2.0**self.frac_bits / self.value_bound):
            # A tiny B makes the scale infinite: inf * 0 = NaN would reach the integer cast.
            raise ParameterError(
                f"value bound {self.value_bound!r} is too small: the scale 2**{self.frac_bits} / B overflows float64"
            )

    @classmethod
    def for_clients(cls, max_clients: int, *, modulus_bits: int = 64, **kwargs) -> "FixedPointEncoding":
        """The most precise encoding whose sum over ``max_clients`` inputs cannot wrap."""
        frac_bits = min(50, modulus_bits - 1 - math.ceil(math.log2(max_clients + 1)))
        if frac_bits < 0:
            raise EncodingOverflow(f"2**{modulus_bits} is too small to sum {max_clients} inputs")
        return cls(frac_bits=frac_bits, modulus_bits=modulus_bits, **kwargs)

    @property
    def modulus(self) -> int:
        return 1 << self.modulus_bits

    def max_clients(self) -> int:
        """Largest n with n * 2**f < M / 2."""
        return (self.modulus // 2 - 1) >> self.frac_bits

    def check_capacity(self, n: int) -> None:
        if n > self.max_clients():
            raise EncodingOverflow(
                f"the sum of {n} inputs with {self.frac_bits} fractional bits could wrap around "
                f"M = 2**{self.modulus_bits}: at most {self.max_clients()} inputs fit; "
                f"lower frac_bits or raise the modulus"
            )

    def encode(
        self, vector: np.ndarray, weight: float, *, clip: bool = False, client: int | None = None
    ) -> Encoded:
        """Encode one client's (w_i, beta_i); ``client`` names it in errors.

        An input outside the public bounds (a coordinate with |w_ij| > B, or
        beta_i > beta_max) is refused with ``OutOfBounds`` unless ``clip``:
        then it is clipped into them and ``Encoded`` says how much was.
        """
        who = "an input" if client is None else f"client {client}"
        vector = np.asarray(vector, dtype=np.float64)
        if vector.ndim != 1 or not np.all(np.isfinite(vector)):
            raise ParameterError(f"{who}: the vector must be 1-D and finite")
        weight = float(weight)
        if not (math.isfinite(weight) and weight > 0):
            raise ParameterError(f"{who}: the weight must be positive and finite, got {weight!r}")
        if not clip:
            if weight > self.weight_bound:
                raise OutOfBounds(client, "weight", self.weight_bound, weight)
            if vector.size and float(np.max(np.abs(vector))) > self.value_bound:
                j = int(np.argmax(np.abs(vector)))
                raise OutOfBounds(client, "value", self.value_bound, float(vector[j]), j)
        scale = float(2**self.frac_bits)
        clipped = np.clip(vector, -self.value_bound, self.value_bound)
        n_clipped = int(np.count_nonzero(clipped != vector))
        w = min(weight, self.weight_bound)
        rel = w / self.weight_bound
        scaled = np.empty(vector.shape[0] + 1, dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):  # checked just below
            scaled[:-1] = clipped * (scale * rel / self.value_bound)
            scaled[-1] = scale * rel
        # The last guard before the cast: NaN or inf cast to int64 is undefined, not an error.
        if not np.all(np.isfinite(scaled)):
            raise EncodingOverflow(f"{who}: the scaled input is not finite (value bound {self.value_bound!r})")
        q = np.rint(scaled).astype(np.int64)
        encoded = q.view(np.uint64)  # two's complement: already q mod 2**64
        if self.modulus_bits < 64:
            encoded = encoded & np.uint64(self.modulus - 1)
        return Encoded(encoded, n_clipped, weight > self.weight_bound, q[-1] == 0)

    def signed(self, total: np.ndarray) -> np.ndarray:
        """Lift a sum in [0, M) to the signed integers it represents, as int64."""
        t = total.astype(np.uint64)
        if self.modulus_bits == 64:
            return t.view(np.int64)
        # t - M for t >= M/2, computed as t + (2**64 - M) in wrapping uint64 (fits for every M <= 2**63).
        half = np.uint64(self.modulus // 2)
        return np.where(t >= half, t + np.uint64(2**64 - self.modulus), t).view(np.int64)

    def decode_average(self, total: np.ndarray, n: int) -> tuple[np.ndarray, float, float]:
        """(weighted average, sum of weights, worst-case per-coordinate error) of a sum of n encodings."""
        s = self.signed(total)
        weight_units = int(s[-1])
        if weight_units <= 0:
            raise ParameterError(
                "every included weight encodes to zero: raise frac_bits or lower the weight bound"
            )
        with np.errstate(over="ignore"):  # checked just below
            value = s[:-1].astype(np.float64) * (self.value_bound / weight_units)
        if not np.all(np.isfinite(value)):  # only a value bound near the float64 maximum gets here
            raise EncodingOverflow(f"the decoded average overflows float64 (value bound {self.value_bound!r})")
        sum_weights = weight_units * self.weight_bound / 2**self.frac_bits
        spread = n * (0.5 + 2.0 ** (self.frac_bits - 51))
        if weight_units > spread:
            error = 2 * spread * self.value_bound / (weight_units - spread) + 2.0**-50 * self.value_bound
        else:
            error = math.inf
        return value, sum_weights, error
