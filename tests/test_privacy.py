"""What the server sees: uniform masked inputs, no plaintext, never both shares of one client."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chisquare

import secagg
from secagg import simulate
from secagg.messages import MaskedInput, UnmaskingShares


def masked_inputs(result):
    msgs = [secagg.decode(raw, result.params) for raw in result.transcript]
    return [m for m in msgs if isinstance(m, MaskedInput)]


@pytest.mark.parametrize(
    "malicious,dropouts",
    [
        (False, {}),
        (True, {"masked_input": [6], "unmasking": [2]}),
    ],
)
def test_masked_inputs_of_zero_vectors_are_uniform_on_z_m(malicious, dropouts):
    modulus, dim, n = 2**16, 4096, 6
    inputs = {u: np.zeros(dim, dtype=np.uint64) for u in range(1, n + 1)}
    result = simulate(inputs, threshold=4, modulus=modulus, dropouts=dropouts, malicious=malicious, seed=2024)
    seen = masked_inputs(result)
    assert sorted(m.sender for m in seen) == list(result.included)
    values = np.concatenate([m.masked.astype(np.int64) for m in seen])
    assert values.size == len(seen) * dim
    assert values.min() >= 0 and values.max() < modulus
    counts = np.bincount(values // (modulus // 256), minlength=256)
    assert counts.size == 256
    assert chisquare(counts).pvalue > 1e-4
    # Each client's vector on its own is uniform too (no client leaks through a weak mask).
    for m in seen:
        per_client = np.bincount(m.masked.astype(np.int64) // (modulus // 16), minlength=16)
        assert chisquare(per_client).pvalue > 1e-4
    # The protocol still computes the (zero) sum: the uniformity is masking, not garbage.
    assert not result.total.any()


def test_no_plaintext_input_appears_in_the_transcript():
    rng = np.random.default_rng(99)
    n, dim = 6, 12
    inputs = {u: rng.integers(2**60, 2**64, dim, dtype=np.uint64) for u in range(1, n + 1)}
    result = simulate(inputs, threshold=4, modulus=2**64, dropouts={"unmasking": [3]}, seed=5)
    blob = b"".join(result.transcript)
    assert len(blob) > n * dim * 8  # the masked inputs are in there
    for u, x in inputs.items():
        assert x.astype("<u8").tobytes() not in blob
        assert x.astype(">u8").tobytes() not in blob
        for value in x:
            assert int(value).to_bytes(8, "little") not in blob
            assert int(value).to_bytes(8, "big") not in blob
    # ...while the sum the server reveals is exactly right.
    expected = [sum(int(inputs[u][i]) for u in result.included) % 2**64 for i in range(dim)]
    assert [int(v) for v in result.total] == expected


@pytest.mark.parametrize("malicious", [False, True])
def test_server_never_receives_both_shares_of_one_client(malicious):
    inputs = {u: np.full(3, u, dtype=np.uint64) for u in range(1, 10)}
    dropouts = {"share_keys": [9], "masked_input": [7, 8], "unmasking": [1]}
    result = simulate(inputs, threshold=5, modulus=2**32, dropouts=dropouts, malicious=malicious, seed=8)
    included = set(result.included)
    assert included == {1, 2, 3, 4, 5, 6}
    b_revealed, s_revealed = set(), set()
    for raw in result.transcript:
        msg = secagg.decode(raw, result.params)
        if isinstance(msg, UnmaskingShares):
            b_revealed |= set(msg.b_shares)
            s_revealed |= set(msg.s_shares)
    assert b_revealed == included
    assert s_revealed == {7, 8}  # the clients that dropped after sharing, before masking
    assert not b_revealed & s_revealed


def test_masked_input_differs_between_sessions_for_the_same_input():
    inputs = {u: np.full(8, 1234, dtype=np.uint64) for u in range(1, 5)}
    a = masked_inputs(simulate(inputs, threshold=3, modulus=2**32, seed=1))
    b = masked_inputs(simulate(inputs, threshold=3, modulus=2**32, seed=2))
    for ma, mb in zip(a, b):
        assert ma.sender == mb.sender
        assert not np.array_equal(ma.masked, mb.masked)
        assert not np.any(ma.masked == 1234)
