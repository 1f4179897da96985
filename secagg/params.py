"""Public parameters of one session and the rules on the threshold.

Everything here is known to every party before the first message: the session
id, the client ids, the threshold ``t``, the modulus ``M = 2**modulus_bits``,
the vector length ``d``, the mode, the identity keys (malicious mode) and the
neighbour graph.  ``max_colluding`` states the condition under which the
paper's guarantee holds; ``PublicParams.create`` refuses or warns when ``t``
gives no guarantee.
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
import warnings
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np

from .errors import InsecureParameters, ParameterError
from .graph import (
    CompleteGraph,
    HararyGraph,
    NeighbourGraph,
    SparseChoice,
    min_honest_group,
    sparse_bounds,
    sparse_parameters,
)
from .keys import is_valid_identity_key
from .rng import RandomSource, SystemRandom

SESSION_ID_BYTES = 32
MAX_CLIENT_ID = 2**31 - 1
MAX_DIM = 2**27
SECURITY_BITS = 40  # sparse graphs: privacy failure at most 2**-40 over the graph
CORRECTNESS_BITS = 20  # sparse graphs: abort for too few holders at most 2**-20
MIN_GROUP = 10  # sparse graphs, malicious server: default fewest honest inputs in a sum it can learn
MAX_CALLS = 64  # oracle calls one session can plan (each adds a self-mask seed share per peer to share_keys)


class InsecureParametersWarning(UserWarning):
    """The threshold gives a weaker guarantee than a deployment would want."""


def max_colluding(n: int, t: int, malicious: bool) -> int:
    """Largest number of colluding clients for which the guarantee holds (-1: none).

    Honest-but-curious server (Bonawitz et al. 2017, Thm. 6.3): the server
    together with ``n_c`` clients learns nothing beyond the sum of the honest
    survivors' inputs iff ``n_c < t``.

    Malicious server (Thm. 6.5): the server can show different survivor lists
    to two groups of honest clients and collect the self-mask share from one
    and the mask-key share from the other.  The consistency check stops this
    iff no two lists can each gather ``t`` signatures, i.e. iff
    ``2 (t - n_c) > n - n_c``, that is ``n_c < 2t - n``.
    """
    return max(2 * t - n - 1, -1) if malicious else t - 1


def element_bytes(modulus_bits: int) -> int:
    """Bytes per vector element on the wire and in the PRG: 1, 2, 4 or 8."""
    for width in (1, 2, 4, 8):
        if modulus_bits <= 8 * width:
            return width
    raise ParameterError(f"modulus 2**{modulus_bits} is larger than 2**64")


@dataclass(frozen=True)
class PublicParams:
    session_id: bytes
    client_ids: tuple[int, ...]
    threshold: int
    modulus_bits: int
    dim: int
    malicious: bool = False
    identity_keys: Mapping[int, bytes] = field(default_factory=dict)
    graph: NeighbourGraph | None = None
    allow_insecure: bool = False  # downgrade the refusal of an insecure t to a warning
    calls: int = 1  # L: the oracle calls of this session, each a masked_input and an unmasking (spec 16)

    def __post_init__(self) -> None:
        if not isinstance(self.session_id, bytes) or len(self.session_id) != SESSION_ID_BYTES:
            raise ParameterError(f"session id must be {SESSION_ID_BYTES} bytes")
        ids = self.client_ids
        if len(ids) < 2:
            raise ParameterError("secure aggregation needs at least 2 clients")
        # C-speed passes over the ids: a parameters frame can list a few hundred thousand (bench_frames).
        if not isinstance(ids, tuple) or set(map(type, ids)) != {int} or not 1 <= min(ids) <= max(ids) <= MAX_CLIENT_ID:
            raise ParameterError(f"client ids must be integers in [1, {MAX_CLIENT_ID}]")
        if not all(map(operator.lt, ids, itertools.islice(ids, 1, None))):
            raise ParameterError("client ids must be sorted and distinct")
        if not isinstance(self.threshold, int) or not 1 <= self.threshold <= len(ids):
            raise ParameterError(f"threshold must be in [1, n={len(ids)}], got {self.threshold!r}")
        if not isinstance(self.modulus_bits, int) or not 1 <= self.modulus_bits <= 64:
            raise ParameterError(f"modulus must be 2**k with 1 <= k <= 64, got k={self.modulus_bits!r}")
        if not isinstance(self.dim, int) or not 1 <= self.dim <= MAX_DIM:
            raise ParameterError(f"vector length must be in [1, {MAX_DIM}], got {self.dim!r}")
        if type(self.calls) is not int or not 1 <= self.calls <= MAX_CALLS:
            raise ParameterError(f"calls must be an integer in [1, {MAX_CALLS}], got {self.calls!r}")
        if self.malicious:
            missing = [i for i in ids if i not in self.identity_keys]
            if missing:
                raise ParameterError(f"malicious-server mode needs identity keys; missing for {missing[:5]}")
            weak = [i for i in ids if not is_valid_identity_key(self.identity_keys[i])]
            if weak:
                # A small-order key verifies a forged signature on every message (keys.py).
                raise ParameterError(
                    f"identity keys of {weak[:5]} are not canonical 32-byte Ed25519 keys of prime order"
                )
        if self.graph is None:
            object.__setattr__(self, "graph", CompleteGraph(ids))
        elif isinstance(self.graph, HararyGraph):
            self._check_sparse(self.graph)
        elif not isinstance(self.graph, CompleteGraph):
            raise ParameterError(f"unknown neighbour graph {type(self.graph).__name__}")
        # Here, not only in create(): no way of building parameters skips the rule.
        self.check_threshold(allow_insecure=self.allow_insecure)

    def _check_sparse(self, graph: HararyGraph) -> None:
        """A SecAgg+ graph must be this session's and meet the bounds it was sized for (graph.py)."""
        if graph.seed != self.session_id or graph.ids != self.id_set:
            raise ParameterError("the sparse graph must be drawn over this session's ids from its session id")
        if self.threshold > graph.degree:
            raise ParameterError(f"threshold {self.threshold} exceeds the {graph.degree} holders of a client's shares")
        bounds = sparse_bounds(self.n, graph.degree, self.threshold, graph.dropout, graph.corrupt)
        problems = []
        if bounds.privacy > 2.0**-SECURITY_BITS or bounds.too_few_holders > 2.0**-CORRECTNESS_BITS:
            problems.append(
                f"privacy fails with probability <= {bounds.privacy:.2g} (need 2^-{SECURITY_BITS}), "
                f"correctness with <= {bounds.too_few_holders:.2g} (need 2^-{CORRECTNESS_BITS})"
            )
        if self.malicious:
            group = min_honest_group(self.n, graph.degree, self.threshold, graph.corrupt, SECURITY_BITS)
            if group < 2:
                problems.append(f"a malicious server could learn a sum of {max(group, 1)} honest input (14.5)")
            dropped = math.floor(graph.dropout * self.n)
            if self.n - dropped < self.consistency_quorum:
                problems.append(
                    f"{dropped} tolerated dropouts leave fewer than the {self.consistency_quorum} consistency "
                    "signatures every session needs"
                )
        if problems:
            message = (
                f"sparse graph k={graph.degree}, t={self.threshold} on n={self.n} with dropout={graph.dropout}, "
                f"corrupt={graph.corrupt} gives no guarantee: {'; '.join(problems)}; use graph.sparse_parameters"
            )
            if not self.allow_insecure:
                raise InsecureParameters(message)
            warnings.warn(message, InsecureParametersWarning, stacklevel=4)

    @classmethod
    def create(
        cls,
        client_ids: Iterable[int],
        *,
        threshold: int | None = None,
        modulus: int,
        dim: int,
        malicious: bool = False,
        identity_keys: Mapping[int, bytes] | None = None,
        session_id: bytes | None = None,
        rng: RandomSource | None = None,
        colluding: int | None = None,
        allow_insecure: bool = False,
        graph: str = "complete",
        dropout: float | None = None,
        corrupt: float | None = None,
        min_group: int | None = None,
        calls: int = 1,
    ) -> "PublicParams":
        """Validate and build the parameters; draw a fresh session id.

        ``colluding`` is the number of clients the deployment assumes may
        collude with the server; it is refused if ``t`` does not cover it.
        In malicious mode a ``t`` that covers no collusion at all
        (``t <= n/2``) is refused unless ``allow_insecure`` is set, which
        downgrades the refusal to an ``InsecureParametersWarning``.

        ``graph="sparse"`` builds a SecAgg+ Harary graph sized by
        ``graph.sparse_parameters`` for the tolerated ``dropout`` and ``corrupt``
        fractions (both required); ``threshold`` then defaults to the one chosen
        there, and a given one is checked against the same bounds.  With
        ``malicious=True`` the graph is also sized so that every sum a cheating
        server can learn covers at least ``min_group`` honest inputs (default
        ``MIN_GROUP``; protocol_spec.md section 14.5).
        ``calls`` is L, the oracle calls the session runs over one cohort (section 16).
        """
        ids = tuple(sorted(client_ids))
        sid = session_id if session_id is not None else (rng or SystemRandom()).bytes(SESSION_ID_BYTES)
        neighbour_graph: NeighbourGraph | None = None
        if graph == "sparse":
            if dropout is None or corrupt is None:
                raise ParameterError("a sparse graph needs the tolerated dropout and corrupt fractions")
            choice = sparse_choice(len(ids), dropout=dropout, corrupt=corrupt, malicious=malicious, min_group=min_group)
            if threshold is None:
                threshold = choice.threshold
            elif malicious:
                wanted = MIN_GROUP if min_group is None else min_group
                if min_honest_group(len(ids), choice.degree, threshold, corrupt, SECURITY_BITS) < wanted:
                    raise InsecureParameters(
                        f"threshold {threshold} on k={choice.degree} lets a malicious server learn sums of fewer than "
                        f"{wanted} honest inputs; leave the threshold to sparse_parameters"
                    )
            neighbour_graph = HararyGraph(ids, choice.degree, sid, dropout=dropout, corrupt=corrupt)
        elif graph != "complete":
            raise ParameterError(f"graph must be 'complete' or 'sparse', got {graph!r}")
        elif dropout is not None or corrupt is not None or min_group is not None:
            raise ParameterError("dropout, corrupt and min_group size a sparse graph; the complete graph takes none")
        if threshold is None:
            raise ParameterError("the complete graph needs a threshold")
        params = cls(
            session_id=sid,
            client_ids=ids,
            graph=neighbour_graph,
            threshold=threshold,
            modulus_bits=modulus_bits_of(modulus),
            dim=dim,
            malicious=malicious,
            identity_keys=dict(identity_keys or {}),
            allow_insecure=allow_insecure,
            calls=calls,
        )
        if colluding is not None:
            params.check_threshold(colluding=colluding, allow_insecure=allow_insecure)
        return params

    @property
    def sparse(self) -> bool:
        return not isinstance(self.graph, CompleteGraph)

    @property
    def consistency_quorum(self) -> int:
        """Signatures on one survivor list a client needs before it reveals anything (malicious mode).

        Two lists with q signatures each share at least 2q - n signers; with
        2q - n > n_c one of them is honest, and an honest client signs once,
        so at most one list is ever accepted (protocol_spec.md 8.2).  Complete
        graph: q = t (the rule of [BIK+17]).  Sparse graph: t is a local
        threshold, so q = floor((n + C)/2) + 1 for the C = floor(corrupt * n)
        corrupted clients the graph was sized for (14.5).
        """
        if not self.sparse:
            return self.threshold
        return (self.n + math.floor(self.graph.corrupt * self.n)) // 2 + 1  # type: ignore[union-attr]

    @property
    def max_liars(self) -> int:
        """The most responders assumed to lie about one secret's shares (the collusion bound).

        Complete graph: ``max_colluding``.  Sparse graph: fewer than t corrupted
        holders per neighbourhood, the event graph.py bounds.
        """
        if self.sparse:
            return self.threshold - 1
        return max(max_colluding(self.n, self.threshold, self.malicious), 0)

    def check_threshold(self, *, colluding: int | None = None, allow_insecure: bool = False) -> None:
        if self.sparse:
            if colluding is not None and colluding > math.floor(self.graph.corrupt * self.n):  # type: ignore[union-attr]
                raise InsecureParameters(
                    f"the sparse graph was sized for {self.graph.corrupt} corrupted clients, not {colluding}"  # type: ignore[union-attr]
                )
            return
        n, t = self.n, self.threshold
        bound = max_colluding(n, t, self.malicious)
        mode = "malicious-server" if self.malicious else "honest-but-curious"
        if colluding is not None and colluding > bound:
            need = (n + colluding) // 2 + 1 if self.malicious else colluding + 1
            raise InsecureParameters(
                f"{mode} mode with n={n}, t={t} tolerates at most {max(bound, 0)} colluding clients, "
                f"not {colluding}; use t >= {need}"
            )
        if bound < 0:
            message = (
                f"{mode} mode with n={n}, t={t} gives no guarantee: a malicious server can split "
                f"the honest clients and unmask one of them; use t >= {n // 2 + 1}"
            )
            if not allow_insecure:
                raise InsecureParameters(message)
            warnings.warn(message, InsecureParametersWarning, stacklevel=4)
        elif t == 1 and colluding is None:
            warnings.warn(
                f"{mode} mode with t=1: a revealed sum may contain a single client's input",
                InsecureParametersWarning,
                stacklevel=4,
            )

    @property
    def n(self) -> int:
        return len(self.client_ids)

    @functools.cached_property
    def id_set(self) -> frozenset[int]:
        """The client ids as a set, built once: decoding checks every id against it (O(1), not O(n))."""
        return frozenset(self.client_ids)

    @property
    def modulus(self) -> int:
        return 1 << self.modulus_bits

    @property
    def element_bytes(self) -> int:
        return element_bytes(self.modulus_bits)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(f"<u{self.element_bytes}")

    def neighbours(self, u: int) -> frozenset[int]:
        assert self.graph is not None
        return self.graph.neighbours(u)


def sparse_choice(
    n: int, *, dropout: float, corrupt: float, malicious: bool = False, min_group: int | None = None
) -> SparseChoice:
    """The SecAgg+ graph ``PublicParams.create(graph="sparse")`` builds for n clients.

    ``sparse_parameters`` at this module's security and correctness bits; in
    malicious-server mode every learnable sum must also cover ``min_group``
    honest inputs (default ``MIN_GROUP``, protocol_spec.md 14.5).
    """
    if not malicious and min_group is not None:
        raise ParameterError("min_group bounds what a malicious server learns: it needs malicious=True")
    if malicious and min_group is None:
        min_group = MIN_GROUP
    return sparse_parameters(n, dropout=dropout, corrupt=corrupt, min_group=min_group,
                             security_bits=SECURITY_BITS, correctness_bits=CORRECTNESS_BITS)


def modulus_bits_of(modulus: int) -> int:
    """k for M = 2**k, refusing anything that is not a power of two in [2, 2**64]."""
    if isinstance(modulus, bool) or not isinstance(modulus, (int, np.integer)):
        raise ParameterError(f"modulus must be an integer power of two, got {modulus!r}")
    modulus = int(modulus)
    if modulus < 2 or modulus > 2**64 or modulus & (modulus - 1):
        raise ParameterError(f"modulus must be a power of two in [2**1, 2**64], got {modulus}")
    return modulus.bit_length() - 1
