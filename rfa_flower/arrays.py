"""A model as Flower sees it (an ``ArrayRecord``) and as rfa sees it (one flat float64 vector)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord

from rfa.errors import RFAError


class LayoutMismatch(RFAError, ValueError):
    """A record's arrays do not have the shapes of the global model."""


@dataclass(frozen=True)
class Layout:
    """The shapes of a model's arrays, in record order."""

    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, record: ArrayRecord) -> "Layout":
        return cls(tuple(a.shape for a in record.to_numpy_ndarrays()))

    @property
    def size(self) -> int:
        return int(sum(int(np.prod(s)) for s in self.shapes))

    def flatten(self, record: ArrayRecord) -> np.ndarray:
        arrays = record.to_numpy_ndarrays()
        shapes = tuple(a.shape for a in arrays)
        if shapes != self.shapes:
            raise LayoutMismatch(f"arrays of shapes {shapes[:4]} do not match the model's {self.shapes[:4]}")
        if not arrays:
            return np.zeros(0)
        return np.concatenate([np.asarray(a, dtype=np.float64).reshape(-1) for a in arrays])

    def unflatten(self, vector: np.ndarray) -> ArrayRecord:
        vector = np.asarray(vector, dtype=np.float64)
        if vector.shape != (self.size,):
            raise LayoutMismatch(f"a vector of shape {vector.shape} is not a model of {self.size} parameters")
        cuts = np.cumsum([int(np.prod(s)) for s in self.shapes])[:-1]
        return ArrayRecord([part.reshape(s) for part, s in zip(np.split(vector, cuts), self.shapes)])


def to_record(vector: np.ndarray) -> ArrayRecord:
    """A flat parameter vector as a one-array record."""
    return ArrayRecord([np.asarray(vector, dtype=np.float64)])
