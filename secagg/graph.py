"""Who masks with whom: the neighbour graph of a session, and how to size a sparse one.

Bonawitz et al. pair every client with every other (``CompleteGraph``, the
default).  SecAgg+ (Bell et al., CCS 2020) pairs each client with k
neighbours only: ``HararyGraph`` is the Harary graph H(k, n) (ring positions
i and j adjacent iff their ring distance is at most k/2) with the clients
placed on the ring by a uniformly random permutation hashed from the session
id, public randomness every party derives alike.  Pairwise masks, Shamir
shares, survivor lists and unmasking are then per neighbourhood.

``sparse_parameters`` picks the smallest even k, and a threshold t, for which
the three events that break the protocol each have probability at most
2**-bits over the graph (protocol_spec.md section 14):

* privacy: some honest client has t corrupted holders of its shares;
* privacy: the honest surviving clients are not connected (the server would
  learn the sum of each component);
* correctness: some client has fewer than t surviving holders of its shares.

In malicious-server mode the server picks the survivor list itself, so the
connectivity event gives nothing; what bounds the smallest sum it can learn is
the most corrupted neighbours any client has (``max_corrupt_neighbours``), and
``sparse_parameters(min_group=m)`` grows k until every sum it can learn covers
at least m honest inputs (protocol_spec.md section 14.5).

The corrupted and dropped sets are fixed before the graph is drawn (static
corruption, non-adaptive dropouts), as in the semi-honest analysis of Bell et
al.; the bounds are hypergeometric tails with a union bound over clients.  The
tails are computed in floating point from pmf ratios (relative error below
1e-9 against exact integer arithmetic), O(k) numpy work, because a peer's
parameters frame can announce k in the hundreds of thousands and must be
judged in milliseconds.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Iterable, Protocol

import numpy as np

from .errors import InsecureParameters, ParameterError


class NeighbourGraph(Protocol):
    name: str

    def neighbours(self, u: int) -> frozenset[int]:
        """The clients ``u`` shares its secrets with and masks against (never ``u``)."""


class CompleteGraph:
    """Every client is a neighbour of every other (Bonawitz et al. 2017)."""

    name = "complete"

    def __init__(self, client_ids: Iterable[int]):
        self._ids = frozenset(client_ids)

    def neighbours(self, u: int) -> frozenset[int]:
        return self._ids - {u}


@dataclass(frozen=True)
class SparseBounds:
    """Upper bounds (union bounds over clients) on the failure events, for given n, k, t."""

    corrupt_holders: float  # P[some honest client has >= t corrupted neighbours]
    disconnected: float  # P[the honest survivors are not connected]
    too_few_holders: float  # P[some client has fewer than t surviving holders]

    @property
    def privacy(self) -> float:
        return self.corrupt_holders + self.disconnected


# Sizing and validation read the same two tails (corrupted, dropped) several times
# per degree, so they are cached; a handful of entries is enough for that, and a
# small cache bounds the memory hostile frames can pin (an entry holds k + 2 floats).
@lru_cache(maxsize=16)
def _tails(population: int, marked: int, draws: int) -> np.ndarray:
    """P[X >= j] for j = 0 .. draws + 1, X ~ Hypergeometric(population, marked, draws) (read-only).

    Log-pmf by the ratio recurrence pmf(i + 1) / pmf(i) summed outwards from the
    mode, so no large log-factorials cancel and no term above the mode overflows;
    then a reverse cumulative sum of the scaled pmf, normalised by its total:
    every sum is of positive terms, so the far tail carries no cancellation.
    Relative error below 1e-9 wherever the tail is above 1e-300 (tests/test_graph.py
    checks it against exact integer arithmetic); further out it underflows to 0.
    """
    if not 0 <= marked <= population or not 0 <= draws <= population:
        raise ValueError(f"no hypergeometric law draws {draws} of {population} with {marked} marked")
    low, high = max(0, draws - (population - marked)), min(draws, marked)  # the support of X
    mode = min(max((draws + 1) * (marked + 1) // (population + 2), low), high)
    i = np.arange(low, high, dtype=np.float64)
    # Both products are exact integers in float64 (below 2**53 for population < 9e7);
    # log1p of their relative difference keeps ratios near 1 accurate to the last bit.
    up, down = (marked - i) * (draws - i), (i + 1) * (population - marked - draws + i + 1)
    log_ratio = np.log1p((up - down) / down)
    m = mode - low
    log_pmf = np.zeros(high - low + 1)  # relative to the mode: at most 0 (up to rounding)
    np.cumsum(log_ratio[m:], out=log_pmf[m + 1 :])
    log_pmf[:m] = -np.cumsum(log_ratio[:m][::-1])[::-1]
    upper = np.cumsum(np.exp(log_pmf)[::-1])[::-1]
    tails = np.zeros(draws + 2)
    tails[:low] = 1.0
    tails[low : high + 1] = upper / upper[0]
    tails.flags.writeable = False
    return tails


@lru_cache(maxsize=256)
def _run_removed(n: int, removed: int, run: int) -> float:
    """P[a fixed run of ``run`` ring positions is all removed] = prod_i (removed - i) / (n - i)."""
    if run > removed:
        return 0.0  # the factor at i = removed is 0
    i = np.arange(run, dtype=np.float64)
    return float(np.prod((removed - i) / (n - i)))


# The two threshold-dependent bounds of sparse_bounds, for an array of thresholds at
# once: sparse_parameters scans every t of every k it tries.
def _corrupt_holder_bounds(n: int, degree: int, corrupted: int, thresholds: np.ndarray) -> np.ndarray:
    """n P[>= t of k neighbours corrupted], at most 1, per threshold t."""
    if not corrupted:
        return np.zeros(len(thresholds))
    return np.minimum(n * _tails(n - 1, corrupted, degree)[np.minimum(thresholds, degree + 1)], 1.0)


def _too_few_holder_bounds(n: int, degree: int, dropped: int, thresholds: np.ndarray) -> np.ndarray:
    """n P[> k - t of k neighbours dropped], at most 1, per threshold t."""
    if not dropped:
        return np.zeros(len(thresholds))
    # at most k - t dropped neighbours keeps t surviving holders
    return np.minimum(n * _tails(n - 1, dropped, degree)[degree - thresholds + 1], 1.0)


def sparse_bounds(n: int, degree: int, threshold: int, dropout: float, corrupt: float) -> SparseBounds:
    """The three failure bounds for H(k, n) under a random relabelling (see module docstring).

    * corrupted holders: u's k neighbours are a uniform k-subset of the other
      n - 1 clients, so their corrupted count is hypergeometric; u's own share
      is honest.  Union over the n clients.
    * connectivity: on the ring, survivors at distance <= k/2 are adjacent, so the
      honest survivors stay connected unless k/2 consecutive positions are all
      corrupted or dropped; a fixed run of k/2 positions is all removed with
      probability prod_i (R - i)/(n - i).  Union over the n runs.
    * correctness: a client's secret needs t surviving holders among its k
      neighbours (its own share is not counted: a dropped client holds none).
    """
    corrupted = math.floor(corrupt * n)
    dropped = math.floor(dropout * n)
    removed = min(n, corrupted + dropped)
    t = np.array([threshold])
    return SparseBounds(
        float(_corrupt_holder_bounds(n, degree, corrupted, t)[0]),
        min(n * _run_removed(n, removed, degree // 2), 1.0),
        float(_too_few_holder_bounds(n, degree, dropped, t)[0]),
    )


def max_corrupt_neighbours(n: int, degree: int, corrupt: float, security_bits: int = 40) -> int:
    """Smallest c with P[some client has more than c corrupted neighbours] <= 2**-security_bits.

    Same hypergeometric tail and union bound as the corrupted-holder event of
    ``sparse_bounds``, read the other way round.
    """
    corrupted = math.floor(corrupt * n)
    if not corrupted:
        return 0
    # tails[degree + 1] = 0, so some c passes; argmax finds the first
    passes = n * _tails(n - 1, corrupted, degree)[1:] <= 2.0**-security_bits
    return int(np.argmax(passes))


def min_honest_group(n: int, degree: int, threshold: int, corrupt: float, security_bits: int = 40) -> int:
    """Fewest honest inputs in any sum a malicious server can learn (protocol_spec.md 14.5).

    Every honest member of the signed list L has at least t - 1 neighbours in L
    (client guard) and masked against each of them; at most c of those are
    corrupted, so its honest component in L has at least t - c members.
    """
    return threshold - max_corrupt_neighbours(n, degree, corrupt, security_bits)


def _check_fractions(dropout: float, corrupt: float) -> None:
    if not all(isinstance(f, (int, float)) and not isinstance(f, bool) for f in (dropout, corrupt)) or not (
        0 <= dropout < 1 and 0 <= corrupt < 1 and dropout + corrupt < 1
    ):
        raise ParameterError(f"dropout and corrupt must be fractions in [0, 1) with sum < 1, got {dropout!r}, {corrupt!r}")


@dataclass(frozen=True)
class SparseChoice:
    degree: int
    threshold: int
    bounds: SparseBounds
    min_group: int  # malicious server: fewest honest inputs in any sum it can learn (min_honest_group)


def sparse_parameters(
    n: int,
    *,
    dropout: float,
    corrupt: float,
    security_bits: int = 40,
    correctness_bits: int = 20,
    min_group: int | None = None,
) -> SparseChoice:
    """Smallest even degree k < n - 1 and a threshold t with both privacy events below
    2**-security_bits and the correctness event below 2**-correctness_bits.

    Of the thresholds that work, the largest is taken (most margin against
    collusion).  ``min_group`` (malicious-server mode) also requires every sum
    the server can learn to cover at least that many honest inputs.  Raises
    ``InsecureParameters`` when no k < n - 1 works: use the complete graph
    (every k >= n - 1 is the complete graph).
    """
    _check_fractions(dropout, corrupt)
    if min_group is not None and (not isinstance(min_group, int) or isinstance(min_group, bool) or min_group < 2):
        raise ParameterError(f"min_group must be an integer >= 2, got {min_group!r}")
    if n < 4:
        raise InsecureParameters(f"n={n} is too small for a sparse graph; use the complete graph")
    secure, correct = 2.0**-security_bits, 2.0**-correctness_bits
    corrupted, dropped = math.floor(corrupt * n), math.floor(dropout * n)
    for k in range(2, n - 1, 2):
        if sparse_bounds(n, k, 1, dropout, corrupt).disconnected > secure:
            continue
        # corrupted-holder bound falls with t, dropped-holder bound rises: the smallest t
        # meeting the first, then the largest t >= it meeting the second (all t at once).
        rising = np.arange(1, k + 1)
        passes = _corrupt_holder_bounds(n, k, corrupted, rising) <= secure
        if not passes.any():
            continue
        lo = int(rising[np.argmax(passes)])
        falling = np.arange(k, lo - 1, -1)
        passes = _too_few_holder_bounds(n, k, dropped, falling) <= correct
        if not passes.any():
            continue
        hi = int(falling[np.argmax(passes)])
        group = min_honest_group(n, k, hi, corrupt, security_bits)
        if min_group is not None and group < min_group:
            continue
        return SparseChoice(k, hi, sparse_bounds(n, k, hi, dropout, corrupt), group)
    wanted = "" if min_group is None else f" and sums over at least {min_group} honest inputs"
    raise InsecureParameters(
        f"no sparse graph on n={n} clients gives 2^-{security_bits} privacy and 2^-{correctness_bits} correctness"
        f"{wanted} with dropout={dropout} and corrupt={corrupt}; use the complete graph"
    )


class HararyGraph:
    """SecAgg+ graph: H(k, n) on a ring ordered by SHA-256(seed, id) (a public random permutation).

    Only the parameters are validated on construction: the ring (n hashes) and
    each client's neighbour set are derived on first use, so judging a peer's
    parameters frame costs nothing O(n k).
    """

    name = "harary"

    def __init__(self, client_ids: Iterable[int], degree: int, seed: bytes, *, dropout: float, corrupt: float):
        ids = frozenset(client_ids)
        if not isinstance(degree, int) or isinstance(degree, bool) or degree < 2 or degree % 2 or degree >= len(ids) - 1:
            raise ParameterError(f"sparse degree must be even and in [2, n - 2] for n={len(ids)}, got {degree!r}")
        _check_fractions(dropout, corrupt)
        self.ids = ids
        self.degree = degree
        self.seed = seed
        self.dropout = float(dropout)
        self.corrupt = float(corrupt)
        self._neighbours: dict[int, frozenset[int]] = {}  # filled by neighbours() on demand

    @cached_property
    def ring(self) -> tuple[int, ...]:
        """Public: the order every party derives from the seed."""
        prefix = b"secagg/v2/graph|" + self.seed
        # the keys are distinct digests, so the order depends on the id set alone, not on set iteration order
        return tuple(sorted(self.ids, key=lambda u: hashlib.sha256(prefix + u.to_bytes(4, "big")).digest()))

    @cached_property
    def _position(self) -> dict[int, int]:
        return {u: i for i, u in enumerate(self.ring)}

    def neighbours(self, u: int) -> frozenset[int]:
        found = self._neighbours.get(u)
        if found is None:
            ring, at, half = self.ring, self._position[u], self.degree // 2  # KeyError for a stranger, as before
            n = len(ring)
            found = frozenset(ring[(at + d) % n] for d in range(-half, half + 1) if d)
            self._neighbours[u] = found
        return found
