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

from .rng import RandomSource
from .shamir import SHARE_BYTES

NONCE_BYTES = 12
TAG_BYTES = 16
PLAINTEXT_BYTES = 2 * SHARE_BYTES
CIPHERTEXT_BYTES = NONCE_BYTES + PLAINTEXT_BYTES + TAG_BYTES
ROUND = "share_keys"


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
    b_share: int,
    s_share: int,
    rng: RandomSource,
) -> bytes:
    plaintext = b_share.to_bytes(SHARE_BYTES, "big") + s_share.to_bytes(SHARE_BYTES, "big")
    nonce = rng.bytes(NONCE_BYTES)
    aead = ChaCha20Poly1305(key)
    return nonce + aead.encrypt(nonce, plaintext, _associated_data(session_id, sender, receiver))


def decrypt_shares(
    key: bytes,
    session_id: bytes,
    sender: int,
    receiver: int,
    ciphertext: bytes,
) -> tuple[bytes, bytes] | None:
    """The two encoded shares, or ``None`` if authentication fails."""
    if len(ciphertext) != CIPHERTEXT_BYTES:
        return None
    aead = ChaCha20Poly1305(key)
    try:
        plaintext = aead.decrypt(
            ciphertext[:NONCE_BYTES], ciphertext[NONCE_BYTES:], _associated_data(session_id, sender, receiver)
        )
    except InvalidTag:
        return None
    return plaintext[:SHARE_BYTES], plaintext[SHARE_BYTES:]
