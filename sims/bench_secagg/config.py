"""The benchmark's configurations: one session's n, d, dropouts, graph and mode, the grids and the goals."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from secagg.graph import SparseChoice
from secagg.params import element_bytes, sparse_choice

FULL_N = (10, 50, 100)
FULL_D = (10**3, 10**5)
QUICK_N = (10, 50)
QUICK_D = (10**3, 10**4)
DROPOUTS = (0.0, 0.1, 0.3)
# The loopback grid (--transport tcp / both).
TCP_N = (50, 100, 200)
TCP_D = (10**4, 10**5)
TCP_DROPOUTS = (0.0, 0.1)
QUICK_TCP_N = (10, 50)
QUICK_TCP_D = (10**3, 10**4)
DROP_ROUND = "masked_input"
GOAL_N, GOAL_D, GOAL_RATIO = 100, 10**5, 2.0
ROUNDS = ("advertise_keys", "share_keys", "masked_input", "unmasking")
MALICIOUS_ROUNDS = ("advertise_keys", "share_keys", "masked_input", "consistency_check", "unmasking")
ROUND_TIMEOUT = 600.0  # per TCP round: far above any round here, so no client drops by accident
STARTUP_TIMEOUT = 120.0  # for the server process to import and listen
BUDGET_SECONDS = 120.0  # grid configurations estimated above this are skipped (select them with --n/--d)
# The setting of Bonawitz et al. for which they report a 1.73x expansion.
PAPER_N, PAPER_D, PAPER_BITS, PAPER_EXPANSION = 2**10, 2**20, 16, 1.73


@dataclass(frozen=True)
class Config:
    n: int
    d: int
    dropout: float
    modulus_bits: int
    seeded: bool = False  # keys, masks and nonces from the seed too: both transports run the same session
    graph: str = "complete"  # or "sparse": SecAgg+ Harary graph sized for the tolerated fractions below
    tolerated_dropout: float = 0.1
    tolerated_corrupt: float = 0.05
    malicious: bool = False  # malicious-server mode: signed keys, the consistency round
    workers: int | None = None  # in-memory runs: processes for the clients (None: simulate's choice)

    @property
    def threshold(self) -> int:
        if self.graph == "sparse":
            return sized(self.n, self.tolerated_dropout, self.tolerated_corrupt, self.malicious).threshold
        return 2 * self.n // 3 + 1

    @property
    def degree(self) -> int:
        """Neighbours per client: k on the sparse graph, n - 1 on the complete one."""
        if self.graph == "sparse":
            return sized(self.n, self.tolerated_dropout, self.tolerated_corrupt, self.malicious).degree
        return self.n - 1

    def session_kwargs(self) -> dict:
        """The mode and graph arguments of setup_session / simulate."""
        mode = {"malicious": True} if self.malicious else {}
        if self.graph == "complete":
            return mode
        return dict(graph="sparse", tolerated_dropout=self.tolerated_dropout, tolerated_corrupt=self.tolerated_corrupt,
                    **mode)

    @property
    def dropped(self) -> list[int]:
        # Which clients drop does not change the cost, so take the first ids.
        return list(range(1, round(self.dropout * self.n) + 1))

    @property
    def element_bytes(self) -> int:
        return element_bytes(self.modulus_bits)

    @property
    def raw_bytes(self) -> int:
        return self.d * self.element_bytes

    @property
    def client_steps(self) -> int:
        """Client replies in one in-memory session (the calls of simulate's ``progress``): everyone's in the
        two key rounds, the survivors' from masked_input on."""
        rounds = len(MALICIOUS_ROUNDS if self.malicious else ROUNDS)
        return 2 * self.n + (rounds - 2) * (self.n - len(self.dropped))


@functools.lru_cache(maxsize=None)
def sized(n: int, dropout: float, corrupt: float, malicious: bool = False) -> SparseChoice:
    """The graph PublicParams.create builds (malicious mode also asks for MIN_GROUP honest inputs per sum)."""
    return sparse_choice(n, dropout=dropout, corrupt=corrupt, malicious=malicious)


def estimated_seconds(cfg: Config) -> float:
    """Rough seconds for one transport (fit by eye on a 2-core machine: n=200, d=1e5 takes ~10 s)."""
    return cfg.n * cfg.degree * (8e-5 + 3.5e-10 * cfg.raw_bytes)


MALICIOUS_GOAL_N, MALICIOUS_GOAL_RATIO = 1000, 2.0

POOL_GOAL_N, POOL_GOAL_D, POOL_GOAL_S = 10_000, 10**4, 25.0

