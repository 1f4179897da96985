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
al.; the bounds are exact hypergeometric tails (integer arithmetic) with a union
bound over clients.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Protocol

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


@lru_cache(maxsize=4096)
def _tails(population: int, marked: int, draws: int) -> tuple[float, ...]:
    """P[X >= j] for j = 0 .. draws + 1, X ~ Hypergeometric(population, marked, draws), exactly.

    Sums of products of binomials in Python integers, one division per tail: no
    floating-point cancellation in the far tail the 2**-40 bounds live in.
    """
    terms = [math.comb(marked, j) * math.comb(population - marked, draws - j) for j in range(draws + 1)]
    total = math.comb(population, draws)
    tails, running = [0.0] * (draws + 2), 0
    for j in range(draws, -1, -1):
        running += terms[j]
        tails[j] = running / total
    return tuple(tails)


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
    p_corrupt = n * _tails(n - 1, corrupted, degree)[min(threshold, degree + 1)] if corrupted else 0.0
    run = degree // 2
    p_run = 1.0
    for i in range(run):
        p_run *= max(removed - i, 0) / (n - i)
    # at most k - t dropped neighbours keeps t surviving holders
    p_drop = n * _tails(n - 1, dropped, degree)[degree - threshold + 1] if dropped else 0.0
    return SparseBounds(min(p_corrupt, 1.0), min(n * p_run, 1.0), min(p_drop, 1.0))


def max_corrupt_neighbours(n: int, degree: int, corrupt: float, security_bits: int = 40) -> int:
    """Smallest c with P[some client has more than c corrupted neighbours] <= 2**-security_bits.

    Same hypergeometric tail and union bound as the corrupted-holder event of
    ``sparse_bounds``, read the other way round.
    """
    corrupted = math.floor(corrupt * n)
    if not corrupted:
        return 0
    tails = _tails(n - 1, corrupted, degree)
    return next(c for c in range(degree + 1) if n * tails[c + 1] <= 2.0**-security_bits)


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
    for k in range(2, n - 1, 2):
        if sparse_bounds(n, k, 1, dropout, corrupt).disconnected > secure:
            continue
        # corrupted-holder bound falls with t, dropped-holder bound rises: bisect each edge.
        lo = next((t for t in range(1, k + 1) if sparse_bounds(n, k, t, 0.0, corrupt).corrupt_holders <= secure), None)
        if lo is None:
            continue
        hi = next((t for t in range(k, lo - 1, -1) if sparse_bounds(n, k, t, dropout, 0.0).too_few_holders <= correct), None)
        if hi is None:
            continue
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
    """SecAgg+ graph: H(k, n) on a ring ordered by SHA-256(seed, id) (a public random permutation)."""

    name = "harary"

    def __init__(self, client_ids: Iterable[int], degree: int, seed: bytes, *, dropout: float, corrupt: float):
        ids = sorted(set(client_ids))
        if not isinstance(degree, int) or isinstance(degree, bool) or degree < 2 or degree % 2 or degree >= len(ids) - 1:
            raise ParameterError(f"sparse degree must be even and in [2, n - 2] for n={len(ids)}, got {degree!r}")
        _check_fractions(dropout, corrupt)
        self.ids = frozenset(ids)
        self.degree = degree
        self.seed = seed
        self.dropout = float(dropout)
        self.corrupt = float(corrupt)
        ring = sorted(ids, key=lambda u: hashlib.sha256(b"secagg/v2/graph|" + seed + u.to_bytes(4, "big")).digest())
        self.ring = tuple(ring)  # public: the order every party derives from the seed
        position = {u: i for i, u in enumerate(ring)}
        n, half = len(ring), degree // 2
        self._neighbours = {
            u: frozenset(ring[(position[u] + d) % n] for d in range(-half, half + 1) if d) for u in ring
        }

    def neighbours(self, u: int) -> frozenset[int]:
        return self._neighbours[u]
