"""Who masks with whom: the neighbour graph of a session.

Bonawitz et al. pair every client with every other (the complete graph),
the only graph implemented.  SecAgg+ (Bell et al., CCS 2020) uses a sparse
k-regular graph instead.  The state machines already ask ``graph.neighbours(u)``
for whom to share secrets with, whom to mask against, which ciphertexts to
forward and which shares a responder must hold.  What a sparse graph would
still need (protocol_spec.md, section 2): survivor lists and thresholds per
neighbourhood instead of the global U3 and t, and a consistency check signed
per neighbourhood.
"""

from __future__ import annotations

from typing import Iterable, Protocol


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
