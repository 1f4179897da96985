"""The secure weighted-average oracle of the RFA paper (Sec. III-A).

Given w_i in R^d and beta_i > 0 on each client, return
sum_i beta_i w_i / sum_i beta_i over the included clients, computed by one
secure aggregation session on the fixed-point encoding of (beta_i w_i, beta_i)
(``encoding.py``).  The server learns the two sums, sum beta_i w_i and
sum beta_i, and nothing else about any w_i or beta_i.  The oracle counts its
calls, the cost measure of the RFA paper.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

import numpy as np

from .encoding import FixedPointEncoding
from .errors import ParameterError
from .simulation import SimulationResult, simulate


@dataclass(frozen=True)
class AverageResult:
    value: np.ndarray  # float64, the weighted average over ``included``
    included: tuple[int, ...]
    sum_weights: float  # sum of the included beta_i, as the server learns it
    error_bound: float  # worst-case per-coordinate quantization error of ``value``
    clipped_values: int  # coordinates clipped to [-B, B], over all clients
    clipped_weights: int  # clients whose beta exceeded the weight bound
    underflows: int  # clients whose beta encoded to zero
    bytes_per_client: float  # mean bytes sent + received by a client in this call
    session: SimulationResult


Runner = Callable[..., SimulationResult]


class SecureAverageOracle:
    """``SecureAverageOracle(threshold).average(vectors, weights)``.

    ``threshold`` is the secure aggregation threshold t: an int, or a float in
    (0, 1) for ``ceil(threshold * n)`` of the n clients of each call.  The
    encoding's parameters are public; by default it is the most precise one
    for ``max_clients`` inputs in Z_{2**64}.  ``runner`` runs one session
    (``simulate`` by default; a network transport has the same signature).
    """

    def __init__(
        self,
        threshold: int | float | None,
        *,
        value_bound: float = 1e3,
        weight_bound: float = 1.0,
        frac_bits: int | None = None,
        modulus_bits: int = 64,
        max_clients: int = 1024,
        malicious: bool = False,
        seed: int | None = None,
        runner: Runner = simulate,
        graph: str = "complete",
        tolerated_dropout: float | None = None,
        tolerated_corrupt: float | None = None,
    ):
        self.graph: dict[str, object] = {}  # passed to the runner: a sparse graph's sizing
        if graph != "complete":
            self.graph = dict(graph=graph, tolerated_dropout=tolerated_dropout, tolerated_corrupt=tolerated_corrupt)
        sized = threshold is None and graph != "complete"  # t picked per call by the graph's sizing
        if not sized and (isinstance(threshold, bool) or not (
            (isinstance(threshold, int) and threshold >= 1) or (isinstance(threshold, float) and 0 < threshold < 1)
        )):
            raise ParameterError(f"threshold must be an int >= 1 or a fraction in (0, 1), got {threshold!r}")
        if frac_bits is None:
            self.encoding = FixedPointEncoding.for_clients(
                max_clients, modulus_bits=modulus_bits, value_bound=value_bound, weight_bound=weight_bound
            )
        else:
            self.encoding = FixedPointEncoding(value_bound, weight_bound, frac_bits, modulus_bits)
            self.encoding.check_capacity(max_clients)
        self.threshold = threshold
        self.max_clients = max_clients
        self.malicious = malicious
        self.seed = seed
        self.runner = runner
        self.calls = 0
        self.bytes_total = 0

    def threshold_for(self, n: int) -> int | None:
        if self.threshold is None:
            return None
        if isinstance(self.threshold, float):
            return max(1, math.ceil(self.threshold * n))
        return self.threshold

    def average(
        self,
        vectors: Mapping[int, np.ndarray],
        weights: Mapping[int, float],
        dropouts: Mapping[str, Iterable[int]] | None = None,
    ) -> AverageResult:
        """One call: one secure aggregation session over the encoded (beta_i w_i, beta_i)."""
        ids = sorted(vectors)
        if set(weights) != set(ids):
            raise ParameterError("vectors and weights must name the same clients")
        if len(ids) > self.max_clients:
            raise ParameterError(f"{len(ids)} clients exceed the oracle's max_clients={self.max_clients}")
        self.encoding.check_capacity(len(ids))
        dims = {np.shape(vectors[u]) for u in ids}
        if len(dims) != 1 or len(next(iter(dims))) != 1:
            raise ParameterError(f"vectors must be 1-D and of one length, got shapes {sorted(dims)[:3]}")
        encoded = {}
        for u in ids:
            v = np.asarray(vectors[u], dtype=np.float64)
            beta = float(weights[u])
            if not np.all(np.isfinite(v)):
                raise ParameterError(f"vector of client {u} is not finite")
            if not (math.isfinite(beta) and beta > 0):
                raise ParameterError(f"weight of client {u} must be positive and finite, got {beta}")
            encoded[u] = self.encoding.encode(v, beta)
        seed = None if self.seed is None else (self.seed << 32) + self.calls
        self.calls += 1
        session = self.runner(
            {u: e.vector for u, e in encoded.items()},
            threshold=self.threshold_for(len(ids)),
            modulus=self.encoding.modulus,
            dropouts=dropouts,
            malicious=self.malicious,
            seed=seed,
            **self.graph,
        )
        value, sum_weights, error = self.encoding.decode_average(session.total, len(session.included))
        traffic = sum(session.bytes_sent.values()) + sum(session.bytes_received.values())
        self.bytes_total += traffic
        return AverageResult(
            value=value,
            included=session.included,
            sum_weights=sum_weights,
            error_bound=error,
            clipped_values=sum(e.clipped_values for e in encoded.values()),
            clipped_weights=sum(e.clipped_weight for e in encoded.values()),
            underflows=sum(e.underflow for e in encoded.values()),
            bytes_per_client=traffic / len(ids),
            session=session,
        )
