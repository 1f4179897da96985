"""What a client accepts from the parameters a server announces, decided before it sends anything.

The server chooses the public parameters of a session; ``PublicParams`` only
checks that they are consistent with the graph's own stated fractions and the
threshold rule.  A server that announces a sparse graph sized for no
corrupted clients, or t = 2, gets parameters that pass those checks and sums
of two honest inputs.  ``ClientPolicy`` is the client's own floor, set by
whoever runs the client (``secagg client`` flags, a Flower node's config),
never by the server:

* ``min_group``: the fewest honest inputs in any sum the server can learn,
  with ``corrupt`` of the clients colluding with it (protocol_spec.md 8, 14.5).
  By default what the library itself builds: ``MIN_GROUP`` (10) on a sparse
  graph in malicious-server mode, where the server can split the list into
  groups, and 2 (never a single honest input) elsewhere, where one sum covers
  at least t inputs and ``min_threshold`` bounds t;
* ``corrupt``: the colluding fraction the parameters must tolerate (on a
  sparse graph the graph must be sized for at least this fraction);
* ``dropout``: on a sparse graph, the dropout fraction it must be sized for
  (its privacy bound assumes at most that many dropouts, 14.2);
* ``min_threshold``: on the complete graph, t as a fraction of n (on a sparse
  graph t is a per-neighbourhood threshold, and what protects a client there
  is the sizing for ``corrupt`` and ``dropout`` together with ``min_group``);
* ``max_clients``: the largest session it joins, which also bounds the size
  of the parameters frame it reads;
* ``max_calls``: the most oracle calls of one session it takes part in
  (protocol_spec.md 16): each call publishes one more sum over the same
  survivors, and each planned call costs a seed share per peer in share_keys.

``screen_wire`` runs on the decoded frame before any parameter is rebuilt,
so a frame this client would refuse costs it no more than reading it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import ParameterError, WeakParameters
from .graph import min_honest_group
from .params import MAX_CALLS, MIN_GROUP, PublicParams, max_colluding

# Per id in a parameters frame: the id (<= 5 bytes), its identity key (32 bytes + 2) and map overhead.
_FRAME_BYTES_PER_CLIENT = 48
_FRAME_OVERHEAD = 4096


@dataclass(frozen=True)
class ClientPolicy:
    min_group: int | None = None  # None: MIN_GROUP on a sparse graph in malicious mode, else 2
    corrupt: float = 0.05
    dropout: float = 0.1
    min_threshold: float = 0.5
    max_clients: int = 10_000
    max_calls: int = 8

    def __post_init__(self) -> None:
        if self.min_group is not None and (type(self.min_group) is not int or self.min_group < 1):
            raise ParameterError(f"min_group must be a positive integer, got {self.min_group!r}")
        for name in ("corrupt", "dropout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1:
                raise ParameterError(f"{name} must be a fraction in [0, 1), got {value!r}")
        if not isinstance(self.min_threshold, (int, float)) or isinstance(self.min_threshold, bool) or not (
            0 < self.min_threshold <= 1
        ):
            raise ParameterError(f"min_threshold must be a fraction in (0, 1], got {self.min_threshold!r}")
        if type(self.max_clients) is not int or self.max_clients < 2:
            raise ParameterError(f"max_clients must be an integer >= 2, got {self.max_clients!r}")
        if type(self.max_calls) is not int or not 1 <= self.max_calls <= MAX_CALLS:
            raise ParameterError(f"max_calls must be an integer in [1, {MAX_CALLS}], got {self.max_calls!r}")

    @property
    def frame_limit(self) -> int:
        """The largest parameters frame a session of ``max_clients`` can need."""
        return _FRAME_OVERHEAD + _FRAME_BYTES_PER_CLIENT * self.max_clients

    def group_floor(self, params: PublicParams) -> int:
        """The ``min_group`` that applies to these parameters (see the module docstring)."""
        if self.min_group is not None:
            return self.min_group
        return MIN_GROUP if params.sparse and params.malicious else 2

    def screen_wire(self, obj: Mapping[str, Any], *, size_only: bool = False) -> None:
        """Refuse from the raw frame what needs no parameters to judge: the session's size and,
        unless ``size_only`` (the caller waived every guarantee), a threshold below the smallest
        ``min_group`` (no sum holds more honest inputs than t)."""
        ids, t, calls = obj.get("client_ids"), obj.get("threshold"), obj.get("calls")
        if type(ids) is list and len(ids) > self.max_clients:
            raise WeakParameters("max-clients", f"a session of {len(ids)} clients, more than {self.max_clients}")
        if type(calls) is int and calls > self.max_calls:
            raise WeakParameters("max-calls", f"a session of {calls} oracle calls, more than {self.max_calls}")
        least = 2 if self.min_group is None else self.min_group
        if not size_only and type(t) is int and t < least:
            raise WeakParameters("min-group", f"t={t}: the server could learn a sum of fewer than {least} inputs")

    def check(self, params: PublicParams) -> int:
        """Raise ``WeakParameters`` naming the first item the parameters fail; return the
        fewest honest inputs in any sum the server can learn under this policy."""
        n, t = params.n, params.threshold
        if n > self.max_clients:
            raise WeakParameters("max-clients", f"a session of {n} clients, more than {self.max_clients}")
        if params.calls > self.max_calls:
            raise WeakParameters("max-calls", f"a session of {params.calls} oracle calls, more than {self.max_calls}")
        colluding = math.floor(self.corrupt * n)
        if params.sparse:
            graph = params.graph
            k = graph.degree  # type: ignore[union-attr]
            # The graph's bounds were computed for its own fractions; larger ones only weaken them.
            if graph.corrupt < self.corrupt:  # type: ignore[union-attr]
                raise WeakParameters(
                    "corrupt", f"the sparse graph is sized for corrupt={graph.corrupt}, below {self.corrupt}"  # type: ignore[union-attr]
                )
            if graph.dropout < self.dropout:  # type: ignore[union-attr]
                raise WeakParameters(
                    "dropout", f"the sparse graph is sized for dropout={graph.dropout}, below {self.dropout}"  # type: ignore[union-attr]
                )
            if params.malicious:  # sums over groups of at least t - c honest inputs (14.5)
                group = min_honest_group(n, k, t, graph.corrupt)  # type: ignore[union-attr]
            else:  # one sum over the survivors, at least n - D of them under the graph's assumption (14.4)
                group = n - math.floor(graph.dropout * n) - colluding  # type: ignore[union-attr]
        else:
            bound = max_colluding(n, t, params.malicious)
            if colluding > bound:
                tolerated = "no colluding client at all" if bound < 0 else f"{bound} colluding clients"
                raise WeakParameters(
                    "corrupt", f"t={t} of n={n} tolerates {tolerated}, not {colluding} ({self.corrupt:g} of n)"
                )
            need = math.ceil(self.min_threshold * n)
            if t < need:
                raise WeakParameters("min-threshold", f"t={t} of n={n} is below {self.min_threshold:g} of n ({need})")
            group = t - colluding  # one sum over at least t inputs (8.1, 8.2)
        floor = self.group_floor(params)
        if group < floor:
            raise WeakParameters("min-group", f"the server could learn a sum of {group} honest inputs, fewer than {floor}")
        return group
