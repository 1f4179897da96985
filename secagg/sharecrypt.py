"""Authenticated encryption of Shamir shares between two clients, via the server.

The key for the direction u -> v is HKDF-SHA256 of the X25519 agreement of
u's and v's encryption keys, with the session id as salt and both ids, in
order, in the info: it is unique to this session and direction.  A client
computes the agreement with each peer once, in share_keys, and derives both
directions' keys there (``channel_keys``).  The cipher is
ChaCha20-Poly1305 with a random 96-bit nonce, and the associated data binds
the session id, the round, the sender and the receiver, so the server can
neither read a ciphertext nor deliver it to anyone else, in another direction,
round or session without the receiver noticing.
"""

from __future__ import annotations

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from typing import Sequence

from .rng import RandomSource
from .shamir import SHARE_BYTES

NONCE_BYTES = 12
TAG_BYTES = 16
ROUND = "share_keys"


def ciphertext_bytes(calls: int) -> int:
    """One sender's shares for one receiver: a self-mask seed share per call and the s_sk share."""
    return NONCE_BYTES + (calls + 1) * SHARE_BYTES + TAG_BYTES


CIPHERTEXT_BYTES = ciphertext_bytes(1)  # a single-call session


def _direction_key(shared: bytes, session_id: bytes, sender: int, receiver: int) -> bytes:
    info = b"secagg/v1/share-key|" + sender.to_bytes(4, "big") + receiver.to_bytes(4, "big")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=session_id, info=info).derive(shared)


def channel_keys(shared: bytes, session_id: bytes, me: int, peer: int) -> tuple[bytes, bytes]:
    """(key for me -> peer, key for peer -> me) from one X25519 agreement."""
    return _direction_key(shared, session_id, me, peer), _direction_key(shared, session_id, peer, me)


def _associated_data(session_id: bytes, sender: int, receiver: int) -> bytes:
    return msgpack.packb([session_id, ROUND, sender, receiver])


def encrypt_shares(
    key: bytes,
    session_id: bytes,
    sender: int,
    receiver: int,
    b_shares: Sequence[int],
    s_share: int,
    rng: RandomSource,
) -> bytes:
    """The shares of b^(0), ..., b^(L-1) and of s_sk, in that order."""
    plaintext = b"".join(y.to_bytes(SHARE_BYTES, "big") for y in (*b_shares, s_share))
    nonce = rng.bytes(NONCE_BYTES)
    aead = ChaCha20Poly1305(key)
    return nonce + aead.encrypt(nonce, plaintext, _associated_data(session_id, sender, receiver))


def decrypt_shares(
    key: bytes,
    session_id: bytes,
    sender: int,
    receiver: int,
    ciphertext: bytes,
    calls: int,
) -> tuple[list[bytes], bytes] | None:
    """The encoded shares (one per call's seed, then s_sk's), or ``None`` if authentication fails."""
    if len(ciphertext) != ciphertext_bytes(calls):
        return None
    aead = ChaCha20Poly1305(key)
    try:
        plaintext = aead.decrypt(
            ciphertext[:NONCE_BYTES], ciphertext[NONCE_BYTES:], _associated_data(session_id, sender, receiver)
        )
    except InvalidTag:
        return None
    shares = [plaintext[i:i + SHARE_BYTES] for i in range(0, len(plaintext), SHARE_BYTES)]
    return shares[:-1], shares[-1]
