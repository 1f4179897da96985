"""The PRG floor: the seconds AES-256-CTR takes to expand exactly the mask material a session must expand."""

from __future__ import annotations

import os
import time

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from secagg.params import PublicParams
from sims.bench_secagg.config import Config


def floor_streams(params: PublicParams, u2: frozenset[int], u3: frozenset[int]) -> tuple[int, int]:
    """Number of d-element streams (clients, server) the protocol expands on this session's graph.

    Each sender in U3 expands its self mask and one pairwise mask per neighbour in U2; the
    server expands every self mask of U3 and, per dropped client, one pairwise mask per
    surviving neighbour (on the complete graph: |U3| (1 + |U2| - 1) and |U3| + |U2 \\ U3| |U3|).
    """
    clients = sum(1 + len(params.neighbours(u) & u2) for u in u3)
    server = len(u3) + sum(len(params.neighbours(v) & u3) for v in u2 - u3)
    return clients, server


def prg_seconds(streams: int, nbytes: int) -> float:
    """Seconds for AES-256-CTR to expand ``streams`` streams of ``nbytes``, one fresh key each."""
    # Keys are drawn before the clock starts: the floor is the keystream, not the key source.
    keys = [os.urandom(32) for _ in range(streams)]
    zeros = bytes(nbytes)
    buffer = bytearray(nbytes + 15)  # update_into needs one spare block
    start = time.perf_counter()
    for key in keys:
        Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update_into(zeros, buffer)
    return time.perf_counter() - start


def measure_floor(cfg: Config, params: PublicParams, u2: frozenset[int], u3: frozenset[int]) -> tuple[float, float]:
    clients, server = floor_streams(params, u2, u3)
    nbytes = cfg.d * cfg.element_bytes
    return prg_seconds(clients, nbytes), prg_seconds(server, nbytes)
