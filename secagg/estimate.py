"""What one in-memory session will cost, before it starts: memory and time from n, d and the graph.

Every client keeps a key agreement, a share and a ciphertext per neighbour, and
the server keeps every ciphertext it relays, so memory and time grow like
n * (k + 1) for k neighbours per client (k = n - 1 on the complete graph),
plus the vectors (n * d).  The constants are measured peaks of ``secagg
simulate`` (python 3.11, one core of a shared 2-core machine; complete graph
n = 300 and 400, sparse n = 2,000, d from 10 to 100,000): about 2 KB and
0.22 ms per client-neighbour pair, 16 bytes and 1 ns per coordinate of a pair's
mask.  They are rounded up: the estimate is for refusing a session that cannot
fit, and for saying how long one will take, not a benchmark.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

BASE_BYTES = 60e6  # the interpreter, numpy, cryptography and trio
PAIR_BYTES = 2_000.0
VECTOR_BYTES = 16.0  # per client and coordinate: the input and its masked copy
PAIR_SECONDS = 2.2e-4
MASK_SECONDS = 1e-9  # per client, neighbour and coordinate: expanding a pairwise mask


@dataclass(frozen=True)
class Estimate:
    """Peak memory in bytes and wall time in seconds of one session."""

    bytes: float
    seconds: float


def session_cost(n: int, dim: int, degree: int) -> Estimate:
    """The cost of a session of ``n`` clients with ``dim`` coordinates and ``degree`` neighbours each."""
    pairs = float(n) * (degree + 1)
    return Estimate(
        bytes=BASE_BYTES + PAIR_BYTES * pairs + VECTOR_BYTES * n * dim,
        seconds=PAIR_SECONDS * pairs + MASK_SECONDS * pairs * dim,
    )


def available_memory() -> float | None:
    """Bytes the kernel says a new process may use without swapping (MemAvailable), None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def human_bytes(value: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1000:
            return f"{value:.3g} {unit}"
        value /= 1000
    return f"{value:,.0f} TB"


def human_seconds(value: float) -> str:
    if value < 1:
        return "<1 s"
    if value < 90:
        return f"{value:.0f} s"
    if value < 5400:
        return f"{value / 60:.0f} min"
    if value < 48 * 3600:
        return f"{value / 3600:.0f} h"
    return f"{value / 86400:,.0f} days"
