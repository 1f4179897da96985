"""Who masks with whom: the neighbour graph of a session.

Bonawitz et al. pair every client with every other (the complete graph).
SecAgg+ (Bell et al., CCS 2020) uses a sparse k-regular graph instead.  The
state machines ask only ``graph.neighbours(u)``, both for whom to share
secrets with and for whom to mask against, so a sparse graph can be added as a
new class here without touching them.
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
