"""The local key directory (the PKI of malicious-server mode)."""

from __future__ import annotations

import pytest

from secagg import ParameterError, SeededRandom
from secagg.keydir import generate_keys, load_private_key, load_public_keys
from secagg.keys import raw_public


def test_generated_keys_load_back(tmp_path):
    public = generate_keys(tmp_path, [1, 2, 3], SeededRandom(1))
    assert load_public_keys(tmp_path) == public
    assert raw_public(load_private_key(tmp_path, 2)) == public[2]


@pytest.mark.parametrize(
    "weak",
    [(1).to_bytes(32, "little"), bytes(32), (2**255 - 18).to_bytes(32, "little")],
    ids=["identity", "order-4", "identity-non-canonical"],
)
def test_a_small_order_or_non_canonical_public_key_in_the_directory_is_refused(tmp_path, weak):
    generate_keys(tmp_path, [1, 2, 3], SeededRandom(1))
    (tmp_path / "client-2.pub").write_text(weak.hex() + "\n")
    with pytest.raises(ParameterError, match="client-2.pub is not a canonical Ed25519 public key"):
        load_public_keys(tmp_path)
