"""Mask expansion: the PRG and the modular accumulation of masks.

PRG: HKDF-SHA256 turns a seed (a self-mask seed b_u or an X25519 shared
secret) and the session id into a 256-bit AES key; AES-256-CTR with a zero
counter block expands it.  Every key is used for exactly one stream, so the
fixed counter block is safe.  Keystream words of 1, 2, 4 or 8 bytes are read
little-endian; since M = 2**k divides 2**(8*width), reducing a uniform word
modulo M leaves it uniform on [0, M), and the arithmetic can run in the
word's own wrapping dtype and be reduced once at the end.
"""

from __future__ import annotations

import functools
import threading
from typing import Iterable

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .params import PublicParams

# One mode object for every stream: it only holds the (constant) counter block, and
# building it per stream was a fifth of the cipher setup.
_ZERO_COUNTER_MODE = modes.CTR(bytes(16))


def self_mask_label(u: int, call: int = 0) -> bytes:
    return b"secagg/v4/self-mask|" + u.to_bytes(4, "big") + call.to_bytes(4, "big")


def pair_mask_label(u: int, v: int) -> bytes:
    lo, hi = min(u, v), max(u, v)
    return b"secagg/v4/pair-mask|" + lo.to_bytes(4, "big") + hi.to_bytes(4, "big")


def prg_key(seed: bytes, session_id: bytes, label: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=session_id, info=label).derive(seed)


def pair_mask_keys(secret: bytes, session_id: bytes, u: int, v: int, calls: int) -> list[bytes]:
    """The PRG keys of the pair's masks in calls 0, ..., calls - 1 (protocol_spec.md 4.3, 16.2).

    The 32-byte blocks of one HKDF output: HKDF-Expand's block counter separates the calls,
    block l does not depend on ``calls``, and block 0 is ``prg_key(secret, sid, pair_mask_label)``.
    One derivation per pair for the whole session, not one per call.
    """
    okm = HKDF(algorithm=hashes.SHA256(), length=32 * calls, salt=session_id, info=pair_mask_label(u, v)).derive(secret)
    return [okm[32 * call:32 * (call + 1)] for call in range(calls)]


# Elements per block of the blocked expansion: the block of the value and of the
# keystream (2 x 256 KiB at 32-bit elements) stay in the L2 cache while every mask
# is added to them.  On this project's 2-core machine (2 MiB L2 per core), 65536
# made the n = 100, d = 10^5 masked_input round about 8% faster than 16384 (A/B of
# `python3 -m sims.bench_secagg --n 100 --d 100000 --repeat 5 --stat median --dropout 0`).
_BLOCK = 65536


@functools.lru_cache(maxsize=8)
def _zero_block(nbytes: int) -> memoryview:
    """CTR's all-zero input: immutable, so one per size serves every expansion in every thread."""
    return memoryview(bytes(nbytes))


_local = threading.local()


def _keystream_buffer(nbytes: int) -> bytearray:
    """A per-thread keystream scratch buffer (CTR's update_into wants room for one block more).

    Reused across accumulators, since a fresh one per accumulator (one per client and round)
    is a fresh allocation to fault in; add_masks never yields, so two expansions never share it.
    """
    buffer: bytearray | None = getattr(_local, "buffer", None)
    if buffer is None or len(buffer) < nbytes + 15:
        buffer = _local.buffer = bytearray(nbytes + 15)
    return buffer


class MaskAccumulator:
    """A vector in Z_M^d to which masks and inputs are added or subtracted in place."""

    def __init__(self, params: PublicParams, start: np.ndarray | None = None):
        self._params = params
        self._dtype = params.dtype
        if start is None:
            self.value = np.zeros(params.dim, dtype=self._dtype)
        else:
            self.value = start.astype(self._dtype, copy=True)

    def add_mask(self, seed: bytes, label: bytes, sign: int) -> None:
        """value += sign * PRG(seed, session, label) mod M, with sign in {+1, -1}."""
        self.add_masks([(seed, label, sign)])

    def add_masks(
        self, masks: Iterable[tuple[bytes, bytes, int]], keyed: Iterable[tuple[bytes, int]] = ()
    ) -> None:
        """value += sum of sign * PRG(seed, session, label) mod M over (seed, label, sign) triples,
        and over (PRG key, sign) pairs whose key is derived already (``pair_mask_keys``).

        Block by block: each stream's CTR state carries on from one block to the next, so the
        result is exactly that of expanding the streams whole, with a cache-sized working set.
        """
        keys = [(prg_key(seed, self._params.session_id, label), sign) for seed, label, sign in masks]
        streams = [
            (Cipher(algorithms.AES(key), _ZERO_COUNTER_MODE).encryptor(), np.add if sign > 0 else np.subtract)
            for key, sign in keys + list(keyed)
        ]
        width = self._params.element_bytes
        block = min(self._params.dim, _BLOCK)
        buffer = _keystream_buffer(block * width)
        for start in range(0, self._params.dim, _BLOCK):
            part = self.value[start:start + _BLOCK]
            zeros = _zero_block(block * width)[: part.size * width]
            stream = np.frombuffer(buffer, dtype=self._dtype, count=part.size)
            for encryptor, op in streams:
                encryptor.update_into(zeros, buffer)
                op(part, stream, out=part)

    def add_vector(self, vector: np.ndarray, sign: int) -> None:
        v = vector.astype(self._dtype, copy=False)
        if sign > 0:
            np.add(self.value, v, out=self.value)
        else:
            np.subtract(self.value, v, out=self.value)

    def wire(self) -> np.ndarray:
        """The value mod M in its own element dtype (the masked-input wire form), in place."""
        if self._params.modulus_bits < 8 * self._params.element_bytes:
            self.value &= self._dtype.type(self._params.modulus - 1)
        return self.value

    def reduced(self) -> np.ndarray:
        """The value mod M as uint64."""
        out = self.value.astype(np.uint64)
        if self._params.modulus_bits < 64:
            out &= np.uint64(self._params.modulus - 1)
        return out


def expand(seed: bytes, label: bytes, params: PublicParams) -> np.ndarray:
    """One PRG stream of the session ``params`` as uint64 values in [0, M) (for tests and audits)."""
    acc = MaskAccumulator(params)
    acc.add_mask(seed, label, +1)
    return acc.reduced()
