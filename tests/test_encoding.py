"""Fixed-point encoding of (beta * w, beta) into Z_M and back."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from secagg import EncodingOverflow, FixedPointEncoding, OutOfBounds, ParameterError


def encoded_sum(enc: FixedPointEncoding, vectors, weights) -> np.ndarray:
    """Sum the encodings mod M, as the protocol would (independently of the protocol)."""
    total = [0] * (len(vectors[0]) + 1)
    for v, w in zip(vectors, weights):
        for i, x in enumerate(enc.encode(np.asarray(v, dtype=np.float64), w).vector):
            total[i] = (total[i] + int(x)) % enc.modulus
    return np.array(total, dtype=np.uint64)


@pytest.mark.parametrize("modulus_bits", [64, 48, 32])
def test_sum_of_encodings_decodes_to_the_weighted_average_within_the_bound(modulus_bits):
    rng = np.random.default_rng(modulus_bits)
    enc = FixedPointEncoding.for_clients(64, modulus_bits=modulus_bits)
    n, d = 7, 10
    vectors = rng.normal(size=(n, d))
    weights = rng.uniform(0.05, 1.0, size=n)
    value, sum_weights, bound = enc.decode_average(encoded_sum(enc, vectors, weights), n)
    exact = np.average(vectors, axis=0, weights=weights)
    assert np.all(np.abs(value - exact) <= bound)
    # Not absurdly loose: within a small factor of the quantization step n * B / S.
    s_units = sum(round(2**enc.frac_bits * w) for w in weights)
    assert 0 < bound <= 3 * n * enc.value_bound / s_units
    assert sum_weights == pytest.approx(weights.sum(), rel=1e-6)


def test_negative_values_survive_twos_complement():
    enc = FixedPointEncoding(value_bound=10.0, frac_bits=20, modulus_bits=32)
    value, _, bound = enc.decode_average(encoded_sum(enc, [[-3.5, 2.0], [-1.5, -8.0]], [1.0, 1.0]), 2)
    assert np.all(np.abs(value - np.array([-2.5, -3.0])) <= bound)


@pytest.mark.parametrize("modulus_bits", [64, 32, 16, 12, 8])
@pytest.mark.parametrize("max_clients", [1, 10, 1024, 2000])
def test_for_clients_is_the_most_precise_encoding_that_cannot_wrap(modulus_bits, max_clients):
    try:
        enc = FixedPointEncoding.for_clients(max_clients, modulus_bits=modulus_bits)
    except EncodingOverflow:
        # Then even 0 fractional bits cannot hold max_clients inputs.
        assert max_clients * 1 >= 2 ** (modulus_bits - 1)
        return
    assert enc.max_clients() >= max_clients
    assert max_clients * 2**enc.frac_bits < enc.modulus // 2
    try:
        finer = FixedPointEncoding(frac_bits=enc.frac_bits + 1, modulus_bits=modulus_bits)
    except ParameterError:
        return  # already at the precision cap of float64
    assert finer.max_clients() < max_clients


def test_error_bound_holds_exactly_across_the_value_range():
    """Compare with the exact rational weighted average, values up to the bound, many trials."""
    rng = np.random.default_rng(2024)
    enc = FixedPointEncoding.for_clients(1024)
    for trial in range(300):
        n = int(rng.integers(2, 6))
        vectors = rng.uniform(-1000, 1000, size=(n, 4))
        vectors[0, 0] = 1000.0 * (1 if trial % 2 else -1)  # the bound itself
        weights = rng.uniform(0.01, 1.0, size=n)
        value, _, bound = enc.decode_average(encoded_sum(enc, vectors, weights), n)
        total_w = sum(Fraction(float(w)) for w in weights)
        for i in range(4):
            exact = sum(Fraction(float(w)) * Fraction(float(v[i])) for v, w in zip(vectors, weights)) / total_w
            assert abs(Fraction(float(value[i])) - exact) <= Fraction(bound), (trial, i)


def test_check_capacity_refuses_more_inputs_than_fit():
    enc = FixedPointEncoding(frac_bits=12, modulus_bits=16)
    assert enc.max_clients() * 2**12 < 2**15 <= (enc.max_clients() + 1) * 2**12
    enc.check_capacity(enc.max_clients())
    with pytest.raises(EncodingOverflow, match="wrap"):
        enc.check_capacity(enc.max_clients() + 1)


def test_for_clients_refuses_a_modulus_too_small_for_the_count():
    with pytest.raises(EncodingOverflow):
        FixedPointEncoding.for_clients(1000, modulus_bits=8)


def test_sum_at_capacity_with_extreme_values_does_not_wrap():
    enc = FixedPointEncoding(value_bound=1.0, frac_bits=10, modulus_bits=16)
    n = enc.max_clients()
    for sign in (+1.0, -1.0):
        vectors = [[sign, -sign]] * n
        value, _, bound = enc.decode_average(encoded_sum(enc, vectors, [1.0] * n), n)
        assert np.all(np.abs(value - np.array([sign, -sign])) <= bound)


def test_clipping_is_counted_and_applied_only_when_asked():
    enc = FixedPointEncoding(value_bound=2.0, weight_bound=0.5, frac_bits=30)
    e = enc.encode(np.array([5.0, -7.0, 1.0, 2.0]), 0.9, clip=True)
    assert e.clipped_values == 2 and e.clipped_weight and not e.underflow
    value, _, bound = enc.decode_average(e.vector, 1)
    assert np.all(np.abs(value - np.array([2.0, -2.0, 1.0, 2.0])) <= bound)
    plain = enc.encode(np.array([0.5, -0.5, 1.0, 2.0]), 0.5)
    assert plain.clipped_values == 0 and not plain.clipped_weight
    assert np.array_equal(plain.vector, enc.encode(np.array([0.5, -0.5, 1.0, 2.0]), 0.5, clip=True).vector)


def test_inputs_outside_the_bounds_are_refused_by_default():
    enc = FixedPointEncoding(value_bound=2.0, weight_bound=0.5, frac_bits=30)
    with pytest.raises(OutOfBounds) as weight:
        enc.encode(np.array([1.0]), 0.9, client=7)
    assert (weight.value.client, weight.value.quantity, weight.value.bound, weight.value.value) == (7, "weight", 0.5, 0.9)
    with pytest.raises(OutOfBounds) as value:
        enc.encode(np.array([1.0, -7.0, 5.0]), 0.5, client=3)
    assert (value.value.client, value.value.quantity, value.value.index, value.value.value) == (3, "value", 1, -7.0)
    assert isinstance(value.value, ParameterError)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_encode_refuses_non_finite_inputs_itself(bad):
    enc = FixedPointEncoding(frac_bits=20)
    with pytest.raises(ParameterError):
        enc.encode(np.array([0.0, bad]), 1.0, clip=True)
    with pytest.raises(ParameterError):
        enc.encode(np.array([0.0]), bad, clip=True)


@pytest.mark.parametrize("bound", [1e-300, 5e-324, float.fromhex("0x1p-974")])
def test_a_value_bound_that_makes_the_scale_infinite_is_refused(bound):
    # Regression: 2**50 / B overflowed to inf, 0 * inf = NaN reached the int64 cast.
    with pytest.raises(ParameterError, match="too small"):
        FixedPointEncoding(value_bound=bound, frac_bits=50)
    enc = FixedPointEncoding(value_bound=float.fromhex("0x1p-973"), frac_bits=50)  # the smallest B that works
    value, _, bound_ = enc.decode_average(enc.encode(np.array([0.0, enc.value_bound]), 1.0).vector, 1)
    assert np.all(np.abs(value - np.array([0.0, enc.value_bound])) <= bound_)


def test_non_finite_scaled_values_never_reach_the_integer_cast():
    enc = FixedPointEncoding(value_bound=1.0, frac_bits=50)
    object.__setattr__(enc, "value_bound", 1e-300)  # bypasses the constructor's check
    with pytest.raises(EncodingOverflow, match="not finite"):
        enc.encode(np.array([0.0, 1e-301]), 1.0)


def test_a_decoded_average_that_overflows_float64_is_an_error_not_inf():
    big = np.finfo(np.float64).max
    enc = FixedPointEncoding(value_bound=big, frac_bits=0, modulus_bits=8)
    # Three inputs at the bound: S = 3 and 3 * (B / 3) rounds above the float64 maximum.
    with pytest.raises(EncodingOverflow, match="overflows"):
        enc.decode_average(encoded_sum(enc, [[big]] * 3, [1.0] * 3), 3)


def test_a_weight_too_small_to_encode_is_an_underflow():
    enc = FixedPointEncoding(frac_bits=10)
    e = enc.encode(np.array([1.0]), 1e-6)
    assert e.underflow
    with pytest.raises(ParameterError):
        enc.decode_average(e.vector, 1)


def test_encoded_values_lie_in_z_m():
    enc = FixedPointEncoding(value_bound=1.0, frac_bits=8, modulus_bits=12)
    e = enc.encode(np.linspace(-1, 1, 21), 1.0)
    assert e.vector.dtype == np.uint64 and e.vector.shape == (22,)
    assert int(e.vector.max()) < 2**12


@pytest.mark.parametrize("bits", [8, 16, 32, 62, 64])
def test_signed_lifts_z_m_to_twos_complement(bits):
    enc = FixedPointEncoding(frac_bits=0, modulus_bits=bits)
    m = 2**bits
    raw = np.array([0, 1, m // 2 - 1, m // 2, m - 1], dtype=np.uint64)
    assert enc.signed(raw).tolist() == [0, 1, m // 2 - 1, -(m // 2), -1]


def test_signed_lifts_z_m_for_modulus_2_pow_63():
    enc = FixedPointEncoding(frac_bits=0, modulus_bits=63)
    raw = np.array([1, 2**62, 2**63 - 1], dtype=np.uint64)
    assert enc.signed(raw).tolist() == [1, -(2**62), -1]


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(value_bound=0.0),
        dict(value_bound=-1.0),
        dict(value_bound=math.inf),
        dict(value_bound=math.nan),
        dict(weight_bound=0.0),
        dict(weight_bound=math.nan),
        dict(modulus_bits=0),
        dict(modulus_bits=65),
        dict(frac_bits=53),
        dict(frac_bits=-1),
    ],
)
def test_invalid_encoding_parameters_raise_parameter_error(kwargs):
    with pytest.raises(ParameterError):
        FixedPointEncoding(**kwargs)
