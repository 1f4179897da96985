"""The randomized Hadamard rotation of the distributed discrete Gaussian (Kairouz et al. 2021, Sec. 4).

x in R^d is zero-padded to D = 2**ceil(log2 d) coordinates and mapped to
H S x / sqrt(D), with H the D x D Walsh-Hadamard matrix and S a diagonal of
random signs drawn from a public per-session seed.  The map is orthogonal, so
it keeps L2 norms (the mechanism's sensitivity), and for any fixed x each
rotated coordinate is a sum of D independent signs times x_j / sqrt(D):
sub-Gaussian with variance ||x||^2 / D (Hoeffding), which is what lets the
modulus be small (``dp.py``).  ``inverse`` undoes it on the server.

The seed is public: the rotation hides nothing, it only spreads each vector
over all coordinates.  Signs come from ``SeededRandom`` (a ChaCha20 stream), so
every party derives the same S from the seed.
"""

from __future__ import annotations

import numpy as np

from .errors import ParameterError
from .rng import SeededRandom


def padded(d: int) -> int:
    """D: the smallest power of two >= d."""
    if d < 1:
        raise ParameterError(f"dimension must be >= 1, got {d}")
    return 1 << (d - 1).bit_length()


def _fwht(x: np.ndarray) -> np.ndarray:
    """Unnormalised fast Walsh-Hadamard transform along the last axis (length a power of two)."""
    x = np.array(x, dtype=np.float64, copy=True)
    n = x.shape[-1]
    h = 1
    while h < n:
        y = x.reshape(*x.shape[:-1], n // (2 * h), 2, h)
        a, b = y[..., 0, :].copy(), y[..., 1, :]
        y[..., 0, :] += b
        y[..., 1, :] = a - b
        h *= 2
    return x


class Rotation:
    """``Rotation(d, seed)``: the public rotation of one session, R^d -> R^D."""

    def __init__(self, d: int, seed: bytes):
        self.d = d
        self.dim = padded(d)
        raw = np.frombuffer(SeededRandom(b"secagg/v1/dp-rotation|" + seed).bytes(self.dim), dtype=np.uint8)
        self.signs = np.where(raw & 1, -1.0, 1.0)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """H S [x, 0] / sqrt(D) for x of shape (d,) or (n, d)."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape[-1] != self.d:
            raise ParameterError(f"the rotation is for dimension {self.d}, got {x.shape[-1]}")
        pad = np.zeros((*x.shape[:-1], self.dim))
        pad[..., : self.d] = x
        return _fwht(pad * self.signs) / np.sqrt(self.dim)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """S H y / sqrt(D), cut back to the first d coordinates."""
        y = np.asarray(y, dtype=np.float64)
        if y.shape[-1] != self.dim:
            raise ParameterError(f"the inverse rotation takes {self.dim} coordinates, got {y.shape[-1]}")
        return (_fwht(y) / np.sqrt(self.dim) * self.signs)[..., : self.d]
