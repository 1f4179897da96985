"""A directory of Ed25519 identity keys: the local PKI of malicious-server mode.

``client-<id>.pub`` holds a client's 32-byte public key and ``client-<id>.key``
its private key (mode 0600), both as one line of hex.  The server reads only
the ``.pub`` files; each client reads its own ``.key`` and every ``.pub``, and
refuses a session whose identity keys differ from the directory's.  A
``.pub`` that is not a canonical Ed25519 key of prime order is refused when
the directory is read (a small-order key verifies forged signatures).  Putting
all private keys in one directory is only sound for a simulation on one
machine: in a deployment each client keeps its own key and the public keys
come from a PKI the server does not control.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .keys import is_valid_identity_key, raw_public
from .errors import ParameterError
from .rng import RandomSource, SystemRandom

_PUB = re.compile(r"client-([1-9][0-9]{0,9})\.pub")


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    os.fchmod(fd, mode)  # O_CREAT's mode applies only to a new file: an old key file keeps its own
    with os.fdopen(fd, "w") as f:
        f.write(data.hex() + "\n")


def _read_hex(path: Path) -> bytes:
    try:
        data = bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError) as exc:
        raise ParameterError(f"cannot read a hex key from {path}: {exc}") from None
    if len(data) != 32:
        raise ParameterError(f"{path} must hold 32 bytes, found {len(data)}")
    return data


def generate_keys(directory: str | Path, client_ids: Iterable[int], rng: RandomSource | None = None) -> dict[int, bytes]:
    """Write a key pair per client; return the public keys."""
    rng = rng or SystemRandom()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    public = {}
    for u in client_ids:
        seed = rng.fork(f"identity-{u}").bytes(32)
        key = Ed25519PrivateKey.from_private_bytes(seed)
        _write(directory / f"client-{u}.key", seed, 0o600)
        public[u] = raw_public(key)
        _write(directory / f"client-{u}.pub", public[u], 0o644)
    return public


def load_public_keys(directory: str | Path) -> dict[int, bytes]:
    directory = Path(directory)
    if not directory.is_dir():
        raise ParameterError(f"identity directory {directory} does not exist")
    keys = {}
    for path in sorted(directory.iterdir()):
        m = _PUB.fullmatch(path.name)
        if m:
            key = _read_hex(path)
            if not is_valid_identity_key(key):
                raise ParameterError(f"{path} is not a canonical Ed25519 public key of prime order")
            keys[int(m.group(1))] = key
    if not keys:
        raise ParameterError(f"no client-<id>.pub files in {directory}")
    return keys


def load_private_key(directory: str | Path, client_id: int) -> Ed25519PrivateKey:
    directory = Path(directory)
    key = Ed25519PrivateKey.from_private_bytes(_read_hex(directory / f"client-{client_id}.key"))
    if raw_public(key) != _read_hex(directory / f"client-{client_id}.pub"):
        raise ParameterError(f"client-{client_id}.key does not match client-{client_id}.pub in {directory}")
    return key
