"""The privacy-weight rule's arithmetic (rfa/privacy.py): the certificate, its smallest nu, the norm ball."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rfa.errors import CertificateViolation, PolicyError, UncertifiableBound
from rfa.privacy import PrivacyPolicy, certified_weight, into_ball, smallest_nu, weight_floor
from rfa.weiszfeld import weiszfeld_weights


def test_smallest_nu_with_max_weight_one_is_a_typed_error_not_a_zero_division():
    with pytest.raises(PolicyError, match="bounds nothing"):
        smallest_nu(1.0, 1.0, 1.0, 1.0, 10)


@pytest.mark.parametrize("norm_bound", [0.0, -1.0, math.inf, math.nan])
def test_smallest_nu_refuses_a_norm_bound_that_is_not_positive_and_finite(norm_bound):
    with pytest.raises(PolicyError, match="norm_bound"):
        smallest_nu(0.5, norm_bound, 1.0, 1.0, 10)


@pytest.mark.parametrize(
    "args, name",
    [((0.0, 1.0, 1.0, 1.0, 10), "max_weight"), ((0.5, 1.0, 0.0, 1.0, 10), "alpha_min"),
     ((0.5, 1.0, 2.0, 1.0, 10), "alpha_min"), ((0.5, 1.0, 1.0, 1.0, 0), "threshold")],
)
def test_smallest_nu_names_the_bad_parameter(args, name):
    with pytest.raises(PolicyError, match=name):
        smallest_nu(*args)


def test_threshold_one_certifies_nothing():
    with pytest.raises(UncertifiableBound):
        smallest_nu(0.99, 1.0, 1.0, 1.0, 1)


def test_a_broadcast_of_norm_zero_halves_the_distance_bound_and_the_smallest_nu():
    # One-step RFA broadcasts v = 0: ||v - w_i|| <= C, so nu* is half the 2C one.
    for s, c, lo, hi, t in [(0.2, 10.0, 1.0, 1.0, 12), (0.5, 3.0, 0.5, 2.0, 7)]:
        loose, tight = smallest_nu(s, c, lo, hi, t), smallest_nu(s, c, lo, hi, t, reach=c)
        assert tight == pytest.approx(loose / 2, rel=1e-12)
        assert certified_weight(tight, c, lo, hi, t, reach=c) <= s < certified_weight(tight * (1 - 1e-9), c, lo, hi, t, reach=c)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    n=st.integers(3, 15),
    nu_scale=st.floats(1e-4, 3.0),
    v_scale=st.floats(0.0, 1.0),
    c=st.floats(0.01, 100.0),
)
def test_realised_weight_never_exceeds_the_certificate_for_the_broadcasts_reach(seed, n, nu_scale, v_scale, c):
    """Clipped points, any accepted broadcast v, the certificate with D = ||v|| + C: never exceeded."""
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(n, 4)) * rng.uniform(0.01, 10.0, size=(n, 1)) * c
    v = into_ball(rng.normal(size=4) * c, v_scale * c)
    points[0] = v  # the most favoured client sits on the broadcast
    points[1:] = -points[1:] * 1e6  # the others as far as the ball allows
    points = into_ball(points, c)
    alpha = rng.uniform(1.0, 3.0, size=n)
    policy = PrivacyPolicy(nu_scale * c, c, 1.0, 3.0, None)
    beta = weiszfeld_weights(points, v, alpha, policy.nu)
    assert beta.max() / beta.sum() <= policy.certificate(n, v) * (1 + 1e-14)


def test_client_accepts_no_broadcast_above_c_not_even_by_a_relative_1e_13():
    policy = PrivacyPolicy(1e-3, 1.0, 1.0, 1.0, None)
    v = np.zeros(5)
    v[0] = 1.0 + 1e-13
    with pytest.raises(CertificateViolation, match="norm"):
        policy.client_check(v, 5, 1)
    v[0] = 1.0
    policy.client_check(v, 5, 1)


def test_certificate_is_attained_at_the_edge_of_the_ball_so_no_tolerance_on_c_is_safe():
    # t = n: one client on v, the rest at norm C opposite.  Any accepted ||v|| > C (the old
    # C(1 + 1e-12) tolerance) would push the realised weight above this certificate.
    c, n, nu = 1.0, 10, 1e-3
    v = np.zeros(3)
    v[0] = c
    points = np.tile(-v, (n, 1))
    points[0] = v
    policy = PrivacyPolicy(nu, c, 1.0, 1.0, None)
    cert = policy.client_check(v, n, 1)
    beta = weiszfeld_weights(points, v, None, nu)
    assert beta.max() / beta.sum() == pytest.approx(cert, rel=1e-15)
    assert cert == certified_weight(nu, c, 1.0, 1.0, n)  # D = 2C exactly here


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**20), radius=st.floats(1e-6, 1e6), d=st.integers(1, 50))
def test_into_ball_leaves_no_computed_norm_above_the_radius(seed, radius, d):
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(8, d)) * rng.uniform(0.0, 3.0, size=(8, 1)) * radius
    clipped = into_ball(rows, radius)
    assert np.all(np.linalg.norm(clipped, axis=1) <= radius)
    inside = np.linalg.norm(rows, axis=1) <= radius
    np.testing.assert_array_equal(clipped[inside], rows[inside])  # nothing inside moves
    for row in rows:
        assert np.linalg.norm(into_ball(row, radius)) <= radius


def test_weight_floor_is_the_certificate_at_and_beyond_the_reach():
    assert certified_weight(2.0, 1.0, 1.0, 2.0, 9) == pytest.approx(weight_floor(1.0, 2.0, 9))
    assert certified_weight(1.0, 1.0, 1.0, 2.0, 9, reach=1.0) == pytest.approx(weight_floor(1.0, 2.0, 9))
    assert certified_weight(0.5, 1.0, 1.0, 2.0, 9, reach=1.0) > weight_floor(1.0, 2.0, 9)
