"""Injected randomness: the only place secret randomness comes from.

The state machines never call a global RNG; they are handed a ``RandomSource``.
``SystemRandom`` reads libsodium's ``randombytes`` (the operating system's
CSPRNG, through pynacl) and is the default.
``SeededRandom`` is a ChaCha20 keystream keyed by a hash of a seed, for
reproducible tests and simulations only: anyone who knows the seed knows every
key and mask.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

import nacl.utils
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms


class RandomSource(Protocol):
    def bytes(self, n: int) -> bytes:
        """Return ``n`` uniformly random bytes."""

    def fork(self, label: str) -> "RandomSource":
        """Return an independent source for a sub-party (e.g. one client)."""


class SystemRandom:
    """libsodium's ``randombytes_buf``: the operating system's CSPRNG."""

    def bytes(self, n: int) -> bytes:
        return nacl.utils.random(n)

    def fork(self, label: str) -> "SystemRandom":
        return self


class SeededRandom:
    """Deterministic CSPRNG: ChaCha20 keyed by SHA-256(seed). Tests only."""

    def __init__(self, seed: int | bytes | str):
        if isinstance(seed, int):
            seed = seed.to_bytes((seed.bit_length() + 8) // 8, "big", signed=True)
        elif isinstance(seed, str):
            seed = seed.encode()
        self._key = hashlib.sha256(b"secagg/v1/seeded-rng|" + seed).digest()
        self._stream = Cipher(algorithms.ChaCha20(self._key, bytes(16)), mode=None).encryptor()

    def bytes(self, n: int) -> bytes:
        return self._stream.update(bytes(n))

    def fork(self, label: str) -> "SeededRandom":
        return SeededRandom(self._key + b"|" + label.encode())


def random_below(rng: RandomSource, bound: int) -> int:
    """Uniform integer in [0, bound) by rejection sampling (no modulo bias)."""
    if bound < 1:
        raise ValueError("bound must be positive")
    nbits = (bound - 1).bit_length()
    nbytes = (nbits + 7) // 8
    mask = (1 << nbits) - 1
    while True:
        value = int.from_bytes(rng.bytes(nbytes), "big") & mask
        if value < bound:
            return value


def fresh_stream(source: RandomSource) -> SeededRandom:
    """A ChaCha20 keystream keyed by 32 fresh secret bytes of ``source``: bulk randomness for one party.

    As strong as ``source`` (the key never leaves the party), but one system call
    instead of one per draw: the DP noise of a vector needs thousands of draws.
    """
    return SeededRandom(source.bytes(32))
