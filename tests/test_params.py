"""Public parameters: modulus, threshold and the collusion rules."""

from __future__ import annotations

import re
import warnings

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from secagg import (
    InsecureParameters,
    InsecureParametersWarning,
    ParameterError,
    PublicParams,
    SecAggError,
    max_colluding,
)
from secagg.keys import raw_public
from secagg.params import modulus_bits_of

IDS = list(range(1, 11))
SID = bytes(32)


def create(**kwargs):
    args = dict(threshold=7, modulus=2**32, dim=4, session_id=SID)
    args.update(kwargs)
    ids = args.pop("ids", IDS)
    return PublicParams.create(ids, **args)


def keys(ids=IDS):
    return {u: raw_public(Ed25519PrivateKey.from_private_bytes(bytes([u]) * 32)) for u in ids}


@pytest.mark.parametrize("modulus", [3, 6, 1000, 2**32 + 1, 2**64 - 1, 1, 0, -2, 2**65, 2**64 * 2])
def test_bad_modulus_is_refused_with_a_clear_message(modulus):
    with pytest.raises(ParameterError, match="power of two") as info:
        create(modulus=modulus)
    assert str(modulus) in str(info.value)


@pytest.mark.parametrize("modulus", [2.0, "65536", True, None])
def test_modulus_of_a_non_integer_type_is_refused(modulus):
    with pytest.raises(ParameterError, match="power of two"):
        create(modulus=modulus)


@pytest.mark.parametrize("k", [1, 2, 8, 16, 31, 32, 33, 63, 64])
def test_every_power_of_two_from_2_to_2_pow_64_is_accepted(k):
    p = create(modulus=2**k)
    assert p.modulus_bits == k and p.modulus == 2**k
    assert modulus_bits_of(2**k) == k
    assert 8 * p.element_bytes >= k and p.dtype.itemsize == p.element_bytes


@pytest.mark.parametrize("threshold", [0, -1, 11, 100, 2.5, "3", None])
def test_threshold_out_of_range_is_refused(threshold):
    with pytest.raises(ParameterError, match="threshold"):
        create(threshold=threshold)


@pytest.mark.parametrize("t", [1, 2, 5])
def test_malicious_mode_refuses_t_at_most_half_of_n(t):
    with pytest.raises(InsecureParameters, match="malicious"):
        create(threshold=t, malicious=True, identity_keys=keys())


def test_malicious_mode_threshold_equal_to_half_is_insecure():
    with pytest.raises(InsecureParameters):
        create(threshold=5, malicious=True, identity_keys=keys())


def test_malicious_mode_refusal_names_a_threshold_that_is_accepted():
    with pytest.raises(InsecureParameters) as info:
        create(threshold=4, malicious=True, identity_keys=keys())
    need = int(re.search(r"t >= (\d+)", str(info.value)).group(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        create(threshold=need, malicious=True, identity_keys=keys())
    with pytest.raises(InsecureParameters):
        create(threshold=need - 1, malicious=True, identity_keys=keys())


def test_malicious_mode_with_allow_insecure_warns_instead():
    with pytest.warns(InsecureParametersWarning, match="no guarantee"):
        p = create(threshold=4, malicious=True, identity_keys=keys(), allow_insecure=True)
    assert p.threshold == 4 and p.malicious


def test_malicious_mode_with_majority_threshold_is_accepted_silently():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = create(threshold=6, malicious=True, identity_keys=keys())
    assert p.malicious


def test_semi_honest_threshold_one_warns():
    with pytest.warns(InsecureParametersWarning, match="t=1"):
        create(threshold=1)


@pytest.mark.parametrize("malicious", [False, True])
def test_max_colluding_matches_the_papers_conditions(malicious):
    for n in range(2, 16):
        for t in range(1, n + 1):
            if malicious:
                # No two survivor lists can each gather t signatures: 2 (t - c) > n - c.
                ok = [c for c in range(n) if 2 * (t - c) > n - c]
            else:
                ok = [c for c in range(n) if c < t]
            if ok:
                assert max_colluding(n, t, malicious) == max(ok)
            else:
                assert max_colluding(n, t, malicious) < 0


def test_max_colluding_returns_minus_one_when_no_collusion_is_tolerated():
    assert max_colluding(3, 1, True) == -1


@pytest.mark.parametrize("malicious,t", [(False, 4), (False, 7), (True, 6), (True, 8)])
def test_colluding_beyond_the_bound_is_refused_and_at_the_bound_accepted(malicious, t):
    ident = keys() if malicious else None
    bound = max_colluding(10, t, malicious)
    create(threshold=t, malicious=malicious, identity_keys=ident, colluding=bound)
    with pytest.raises(InsecureParameters, match="colluding") as info:
        create(threshold=t, malicious=malicious, identity_keys=ident, colluding=bound + 1)
    need = int(re.search(r"t >= (\d+)", str(info.value)).group(1))
    create(threshold=need, malicious=malicious, identity_keys=ident, colluding=bound + 1)


def test_check_threshold_on_existing_params_refuses_excess_collusion():
    p = create(threshold=7)
    p.check_threshold(colluding=6)
    with pytest.raises(InsecureParameters):
        p.check_threshold(colluding=7)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(ids=[1]),
        dict(ids=[]),
        dict(ids=[0, 1, 2]),
        dict(ids=[1, 2, 2**31]),
        dict(ids=[1, 1, 2]),
        dict(ids=[True, 2, 3], threshold=2),
        dict(ids=["1", "2"], threshold=2),
        dict(dim=0),
        dict(dim=2**27 + 1),
        dict(dim=3.0),
        dict(session_id=b"short"),
        dict(session_id="x" * 32),
        dict(malicious=True, threshold=8),  # identity keys missing
        dict(malicious=True, threshold=8, identity_keys={u: b"k" * 31 for u in IDS}),
    ],
)
def test_other_invalid_parameters_raise_parameter_error(kwargs):
    with pytest.raises(ParameterError):
        create(**kwargs)


def test_params_direct_construction_requires_sorted_ids():
    with pytest.raises(ParameterError, match="sorted"):
        PublicParams(session_id=SID, client_ids=(2, 1, 3), threshold=2, modulus_bits=16, dim=1)


def test_create_sorts_ids_and_draws_a_fresh_session_id():
    a = PublicParams.create([3, 1, 2], threshold=2, modulus=2**16, dim=1)
    b = PublicParams.create([3, 1, 2], threshold=2, modulus=2**16, dim=1)
    assert a.client_ids == (1, 2, 3)
    assert len(a.session_id) == 32 and a.session_id != b.session_id


def test_default_graph_is_complete():
    p = create()
    for u in IDS:
        assert p.neighbours(u) == frozenset(IDS) - {u}


def test_error_hierarchy():
    assert issubclass(InsecureParameters, ParameterError)
    assert issubclass(ParameterError, SecAggError)
    assert issubclass(ParameterError, ValueError)
    assert issubclass(InsecureParametersWarning, UserWarning)


def test_direct_construction_also_refuses_an_insecure_malicious_threshold():
    with pytest.raises(InsecureParameters):
        PublicParams(session_id=SID, client_ids=tuple(IDS), threshold=5, modulus_bits=16, dim=1,
                     malicious=True, identity_keys=keys())
    with pytest.warns(InsecureParametersWarning):
        PublicParams(session_id=SID, client_ids=tuple(IDS), threshold=5, modulus_bits=16, dim=1,
                     malicious=True, identity_keys=keys(), allow_insecure=True)


P25519 = 2**255 - 19
# The eight points of small order on edwards25519 (canonical encodings), then
# non-canonical encodings: y >= p, and the sign bit set on a point with x = 0.
SMALL_ORDER = [
    (1).to_bytes(32, "little"),  # the identity: (R = identity, S = 0) verifies for every message
    (P25519 - 1).to_bytes(32, "little"),  # order 2
    bytes(32),  # order 4
    bytes(31) + b"\x80",  # order 4, the other sign
    bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),  # order 8
    bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa"),
    bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
    bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85"),
]
NON_CANONICAL = [
    (P25519 + 1).to_bytes(32, "little"),  # the identity again, y = p + 1
    (P25519 + 18).to_bytes(32, "little"),
    (1 | 1 << 255).to_bytes(32, "little"),  # x = 0 with the sign bit set
]


@pytest.mark.parametrize("weak", SMALL_ORDER + NON_CANONICAL, ids=lambda k: k.hex()[:8] + ".." + k.hex()[-4:])
def test_small_order_and_non_canonical_identity_keys_are_refused(weak):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from secagg.keys import verify_signature

    if weak == SMALL_ORDER[0]:  # why it matters: a forgery that needs no private key
        Ed25519PublicKey.from_public_bytes(weak).verify(weak + bytes(32), b"any message at all")  # OpenSSL accepts
        assert not verify_signature(weak, weak + bytes(32), b"any message at all")  # libsodium (keys.py) does not
    with pytest.raises(ParameterError, match=r"identity keys of \[3\]"):
        create(threshold=8, malicious=True, identity_keys={**keys(), 3: weak})


def test_identity_keys_of_the_wrong_type_or_length_are_refused():
    for bad in (bytes(31), bytes(33), "a" * 32, None):
        with pytest.raises(ParameterError, match="identity keys"):
            create(threshold=8, malicious=True, identity_keys={**keys(), 3: bad})
