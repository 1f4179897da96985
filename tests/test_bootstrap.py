"""The hello and parameters frames of the TCP bootstrap."""

from __future__ import annotations

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from secagg import MalformedMessage, PublicParams
from secagg.bootstrap import decode_bootstrap_reply, encode_params, params_to_wire
from secagg.keys import raw_public

IDS = (1, 2, 3, 4)


def malicious_params() -> PublicParams:
    keys = {u: raw_public(Ed25519PrivateKey.from_private_bytes(bytes([u]) * 32)) for u in IDS}
    return PublicParams.create(IDS, threshold=3, modulus=2**32, dim=4, malicious=True, identity_keys=keys, session_id=bytes(32))


def frame_with_key(u: int, key: bytes) -> bytes:
    body = msgpack.unpackb(encode_params(malicious_params(), round_timeout=1.0, join_seconds=1.0), strict_map_key=False)
    body["identity_keys"][u] = key
    return msgpack.packb(body, use_bin_type=True)


def test_a_parameters_frame_with_valid_identity_keys_is_accepted():
    info = decode_bootstrap_reply(frame_with_key(2, malicious_params().identity_keys[2]))
    assert params_to_wire(info.params) == params_to_wire(malicious_params())


@pytest.mark.parametrize(
    "weak", [(1).to_bytes(32, "little"), (2**255 - 20).to_bytes(32, "little"), (2**255 - 18).to_bytes(32, "little")],
    ids=["identity", "order-2", "identity-non-canonical"],
)
def test_a_parameters_frame_with_a_small_order_identity_key_is_refused(weak):
    # With the identity point as a key, (R = identity, S = 0) is a signature on every message.
    with pytest.raises(MalformedMessage, match=r"identity keys of \[2\]") as refused:
        decode_bootstrap_reply(frame_with_key(2, weak))
    assert refused.value.field == "params"
