"""The geometric median as an iterative secure aggregate and its privacy rule."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import secagg
from rfa.errors import CertificateViolation, InvalidArgument, PolicyError, SurvivorSetChanged, UncertifiableBound
from rfa.privacy import PrivacyPolicy, certified_weight, smallest_nu, weight_floor
from rfa.secure import CohortSession, one_step_geometric_median, secure_geometric_median, secure_mean


def plain_step(points: np.ndarray, alpha: np.ndarray, v: np.ndarray, nu: float) -> np.ndarray:
    """Algorithm 2, lines 3-4, written out independently of the library."""
    beta = alpha / np.maximum(nu, np.sqrt(((points - v) ** 2).sum(axis=1)))
    return (beta[:, None] * points).sum(axis=0) / beta.sum()


def clipped(points: np.ndarray, c: float) -> np.ndarray:
    norms = np.linalg.norm(points, axis=1, keepdims=True)
    return points * np.minimum(1.0, c / norms)


def contaminated(seed: int, n: int = 24, d: int = 12, outliers: int = 8, shift: float = 50.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(n, d))
    points[:outliers] += shift
    return points


SpyOracle = secagg.SecureAverageOracle  # counts the calls and the protocol sessions that actually started


def test_each_secure_step_equals_the_plaintext_step_within_the_oracle_error_bound():
    points = contaminated(0)
    alpha = np.random.default_rng(1).uniform(0.5, 2.0, size=len(points))
    result = secure_geometric_median(points, alpha, rounds=4, norm_bound=400.0, nu=1e-3)
    assert [r.kind for r in result.rounds] == ["mean", "weiszfeld", "weiszfeld", "weiszfeld", "weiszfeld"]
    first = result.rounds[0]
    assert np.max(np.abs(first.output - alpha @ points / alpha.sum())) <= first.error_bound
    for record in result.rounds[1:]:
        expected = plain_step(points, alpha, record.broadcast, 1e-3)
        assert np.max(np.abs(record.output - expected)) <= record.error_bound


def test_secure_median_matches_plaintext_median_with_the_same_steps():
    points = contaminated(2)
    c = 100.0
    result = secure_geometric_median(points, rounds=3, norm_bound=c, nu=1e-6)
    pts = clipped(points, c)
    v = pts.mean(axis=0)
    for _ in range(3):
        v = plain_step(pts, np.ones(len(pts)), v, 1e-6)
    # Errors of earlier steps move later broadcasts; a Weiszfeld step is Lipschitz, so
    # the end-to-end gap stays within a small multiple of the per-step bounds.
    total_bound = sum(r.error_bound for r in result.rounds)
    assert np.max(np.abs(result.median - v)) <= 10 * total_bound
    assert total_bound < 1e-3 * c


def test_dropouts_in_the_first_call_pin_the_set_every_later_call_aggregates_until_the_next_dropout():
    points = contaminated(3)
    plans = [{"masked_input": [2, 5]}, None, {"unmasking": [9]}, None]
    result = secure_geometric_median(points, rounds=3, norm_bound=400.0, nu=1e-4, dropouts=plans)
    # 9's masked input arrived before it dropped: the third call's sum holds it.  9 never saw that
    # call's survivor list, so it refuses the fourth call, which stops before anything is unmasked.
    assert result.oracle_calls == 3 and "survivor set" in result.stopped
    pinned = result.rounds[0].included
    assert 2 not in pinned and 5 not in pinned
    assert all(r.included == pinned for r in result.rounds)
    idx = [u - 1 for u in pinned]
    for record in result.rounds[1:]:
        expected = plain_step(points[idx], np.ones(len(idx)), record.broadcast, 1e-4)
        assert np.max(np.abs(record.output - expected)) <= record.error_bound


def test_a_later_dropout_ends_the_median_at_the_last_completed_iterate():
    points = contaminated(3)
    plans = [None, None, {"masked_input": [7]}, None]
    oracle = SpyOracle(16, value_bound=400.0, weight_bound=1e4)
    result = secure_geometric_median(points, rounds=3, norm_bound=400.0, nu=1e-4, dropouts=plans, oracle=oracle)
    # One session for the median; its third call was stopped before unmasking.
    assert result.oracle_calls == 2 and oracle.calls == 3 and oracle.sessions == 1
    assert "survivor set" in result.stopped and "[7]" in result.stopped
    np.testing.assert_array_equal(result.median, result.rounds[-1].output)


def test_two_sums_at_one_broadcast_over_sets_differing_by_one_client_reveal_it_unless_pinned():
    points = clipped(contaminated(15), 50.0)
    v = np.zeros(points.shape[1])
    j = 4

    def call(session, dropouts=None):
        record = session.weiszfeld(v, dropouts)
        return record.output * record.sum_weights, record.sum_weights

    # Clients without memory across calls (two sessions on the same vectors): the attack works.
    s1, b1 = call(CohortSession(points, norm_bound=50.0, nu=1e-2))
    s2, b2 = call(CohortSession(points, norm_bound=50.0, nu=1e-2), {"masked_input": [j]})
    recovered = (s1 - s2) / (b1 - b2)
    assert np.max(np.abs(recovered - points[j - 1])) < 1e-6
    # One session: the first call pins the survivor set, and the clients refuse the second one.
    oracle = SpyOracle(16, value_bound=50.0, weight_bound=1e4)
    session = CohortSession(points, norm_bound=50.0, nu=1e-2, oracle=oracle, calls=2)
    call(session)
    with pytest.raises(SurvivorSetChanged) as info:
        call(session, {"masked_input": [j]})
    assert "every client" in info.value.party
    assert isinstance(info.value, CertificateViolation)
    # A client that missed the first call cannot join later either: it is not asked again.
    late = CohortSession(points, norm_bound=50.0, nu=1e-2, calls=2)
    late.weiszfeld(v, {"masked_input": [j]})
    assert j not in late.weiszfeld(v).included


def test_secure_median_resists_outliers_that_move_the_secure_mean():
    points = contaminated(4, shift=1e3)
    inliers = points[8:]
    radius = np.max(np.linalg.norm(inliers - inliers.mean(axis=0), axis=1))
    median = secure_geometric_median(points, rounds=20, norm_bound=5e3, nu=1e-6).median
    mean = secure_mean(points, norm_bound=5e3).median
    assert np.linalg.norm(median - inliers.mean(axis=0)) <= radius
    assert np.linalg.norm(mean - inliers.mean(axis=0)) > 10 * radius


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    above_floor=st.floats(0.01, 0.9),
    spread=st.floats(0.1, 100.0),
)
def test_realised_effective_weight_never_exceeds_the_certificate(seed, above_floor, spread):
    rng = np.random.default_rng(seed)
    n = 12
    floor = weight_floor(1.0, 3.0, 8)  # t = ceil(2/3 * 12) = 8
    s = floor + above_floor * (1 - floor)
    points = rng.normal(size=(n, 5)) * spread
    points[0] *= 50  # one far point: its beta is small, others' large
    alpha = rng.uniform(1.0, 3.0, size=n)
    c = float(np.linalg.norm(points, axis=1).max())
    result = secure_geometric_median(
        points, alpha, rounds=2, max_weight=s, nu="auto", alpha_range=(1.0, 3.0), norm_bound=c
    )
    for record in result.rounds:
        assert record.realised_max_weight <= record.included_weight_bound * (1 + 1e-12)
        assert record.included_weight_bound <= record.certified_weight <= s


def test_violated_certificate_stops_the_step_before_any_session_starts():
    oracle = SpyOracle(10, value_bound=100.0, weight_bound=1e6)
    with pytest.raises(CertificateViolation) as info:
        secure_geometric_median(contaminated(5), rounds=3, norm_bound=100.0, nu=1e-6, max_weight=0.2, oracle=oracle)
    assert info.value.party == "server"
    # The initial mean step is certifiable (its bound is the floor 1/10), the first Weiszfeld step is not.
    assert oracle.sessions == 1


def test_client_refuses_a_broadcast_outside_the_norm_ball_before_sending_anything():
    oracle = SpyOracle(10, value_bound=10.0, weight_bound=1e6)
    far = np.full(12, 10.0)  # norm 34.6 > C = 10
    with pytest.raises(CertificateViolation) as info:
        secure_geometric_median(contaminated(6), rounds=1, norm_bound=10.0, init=far, oracle=oracle)
    assert "client" in info.value.party
    assert oracle.sessions == 0


def test_uncertifiable_bound_is_refused_before_anything_is_sent():
    t = 10
    oracle = SpyOracle(t, value_bound=100.0, weight_bound=1e9)
    with pytest.raises(UncertifiableBound):
        secure_geometric_median(contaminated(7), rounds=3, norm_bound=100.0, nu="auto", max_weight=1 / t, oracle=oracle)
    assert oracle.sessions == 0


def test_auto_nu_is_the_smallest_nu_that_certifies_the_bound():
    for s, c, lo, hi, t in [(0.2, 10.0, 1.0, 1.0, 12), (0.05, 3.0, 0.5, 2.0, 100), (0.8, 1.0, 1.0, 4.0, 3)]:
        nu = smallest_nu(s, c, lo, hi, t)
        assert certified_weight(nu, c, lo, hi, t) <= s
        assert certified_weight(nu * (1 - 1e-9), c, lo, hi, t) > s


def test_certificate_falls_with_nu_down_to_the_mean_floor():
    nus = np.geomspace(1e-6, 1e3, 30)
    certs = [certified_weight(nu, 1.0, 1.0, 2.0, 20) for nu in nus]
    assert all(a >= b * (1 - 1e-15) for a, b in zip(certs, certs[1:]))
    assert certs[-1] == pytest.approx(weight_floor(1.0, 2.0, 20))
    assert weight_floor(1.0, 1.0, 20) == pytest.approx(1 / 20)


def test_mean_is_refused_when_its_floor_exceeds_the_bound():
    with pytest.raises(CertificateViolation):
        secure_mean(contaminated(8), norm_bound=100.0, max_weight=0.01, threshold=10)


def test_one_step_rfa_is_one_oracle_call_from_zero_and_matches_algorithm_3():
    points = contaminated(9)
    oracle = SpyOracle(12, value_bound=100.0, weight_bound=1e6)
    result = one_step_geometric_median(points, norm_bound=100.0, nu=1e-6, oracle=oracle)
    assert oracle.sessions == 1 and result.oracle_calls == 1 and oracle.calls == 1
    expected = plain_step(clipped(points, 100.0), np.ones(len(points)), np.zeros(points.shape[1]), 1e-6)
    assert np.max(np.abs(result.median - expected)) <= result.rounds[0].error_bound
    assert np.all(result.rounds[0].broadcast == 0)


def test_an_oracle_whose_encoding_would_clip_the_weights_is_refused():
    oracle = secagg.SecureAverageOracle(10, value_bound=100.0, weight_bound=1.0)
    with pytest.raises(InvalidArgument, match="clipping would distort"):
        secure_geometric_median(contaminated(10), rounds=1, norm_bound=100.0, nu=1e-3, oracle=oracle)


def test_weights_are_clipped_into_the_public_range_before_aggregation():
    points = contaminated(11, outliers=0)
    alpha = np.ones(len(points))
    alpha[0] = 1e6  # a client claiming an enormous weight
    result = secure_mean(points, alpha, norm_bound=100.0, alpha_range=(1.0, 2.0))
    capped = alpha.clip(1.0, 2.0)
    assert np.allclose(result.median, capped @ points / capped.sum(), atol=1e-9)
    assert result.rounds[0].realised_max_weight == pytest.approx(2.0 / capped.sum())


def test_policy_rejects_nonsense_parameters():
    with pytest.raises(ValueError, match="alpha_min"):
        PrivacyPolicy(1e-3, 1.0, 2.0, 1.0, None)
    with pytest.raises(ValueError, match="max_weight"):
        PrivacyPolicy(1e-3, 1.0, 1.0, 1.0, 1.5)
    with pytest.raises(InvalidArgument, match="max_weight"):
        secure_geometric_median(contaminated(12), nu="auto")


def test_secure_rules_run_through_the_oracle_and_match_their_plaintext_form():
    from rfa.aggregators import GeometricMedianRule, Mean, OneStepRule

    points = contaminated(13)
    alpha = np.random.default_rng(2).uniform(1.0, 2.0, size=len(points))
    for rule in (Mean(), GeometricMedianRule(rounds=2, nu=1e-3), OneStepRule(nu=1e-3)):
        oracle = SpyOracle(0.6, value_bound=1e3, weight_bound=2e3)
        result = rule.secure(points, alpha, oracle=oracle, norm_bound=1e3)
        assert oracle.calls == rule.oracle_calls == result.oracle_calls and oracle.sessions == 1
        bound = sum(r.error_bound for r in result.rounds)
        assert np.max(np.abs(result.median - rule(points, alpha))) <= 10 * bound


def test_plaintext_rules_refuse_to_run_securely():
    from rfa.aggregators import registry
    from rfa.errors import PlaintextOnly

    plaintext = [cls for cls in registry.values() if cls.mode == "plaintext"]
    assert len(plaintext) >= 7
    for cls in plaintext:
        with pytest.raises(PlaintextOnly, match=cls.name):
            cls().secure(contaminated(14), oracle=SpyOracle(0.6))


class ClipSpy(secagg.SecureAverageOracle):
    """Records the clip option of every call (one-call and multi-call sessions encode alike)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.clip_options = []

    def _encode(self, vectors, weights, dropouts, clip, on_refusal):
        self.clip_options.append(clip)
        return super()._encode(vectors, weights, dropouts, clip, on_refusal)


def test_every_secure_step_asks_the_oracle_to_clip_into_the_public_bounds():
    # Clipping to C and beta_max is part of rfa's privacy rule, so rfa asks for it
    # explicitly; the oracle refuses out-of-bound inputs by default (issue 16).
    points = contaminated(14)
    for run in (secure_geometric_median, one_step_geometric_median, secure_mean):
        oracle = ClipSpy(10, value_bound=100.0, weight_bound=1e6)
        run(points, norm_bound=100.0, oracle=oracle, **({} if run is secure_mean else {"nu": 1e-3}))
        assert oracle.clip_options and all(oracle.clip_options)


def test_a_coordinate_an_ulp_above_c_after_norm_clipping_does_not_stop_the_median():
    # x * (C / |x|) lands 1.4e-14 above C = 100: the oracle clips it, as the rule says.
    points = contaminated(15)
    points[0] = [float.fromhex("0x1.5fc7eebd15ba5p+9")] + [0.0] * (points.shape[1] - 1)
    result = secure_geometric_median(points, rounds=2, norm_bound=100.0, nu=1e-3)
    pts = clipped(points, 100.0)
    v = pts.mean(axis=0)
    for _ in range(2):
        v = plain_step(pts, np.ones(len(pts)), v, 1e-3)
    assert np.max(np.abs(result.median - v)) <= 10 * sum(r.error_bound for r in result.rounds)


def test_rfa_reports_its_own_bad_input_as_an_rfa_error_not_a_secagg_one():
    from rfa import RFAError

    with pytest.raises(RFAError) as info:
        secure_mean(np.ones((3, 2)), np.array([1.0, -1.0, 1.0]), norm_bound=10.0)
    assert not isinstance(info.value, secagg.SecAggError)


def test_one_step_certifies_with_distance_c_and_auto_nu_is_half_the_general_one():
    points, c, s = contaminated(16), 100.0, 0.3
    result = one_step_geometric_median(points, norm_bound=c, max_weight=s, nu="auto", threshold=12)
    lo = hi = 1.0
    assert result.policy.nu == smallest_nu(s, c, lo, hi, 12, reach=c)
    assert result.policy.nu == pytest.approx(smallest_nu(s, c, lo, hi, 12) / 2, rel=1e-12)
    record = result.rounds[0]
    assert record.certified_weight == certified_weight(result.policy.nu, c, lo, hi, 12, reach=c) <= s
    assert record.realised_max_weight <= record.certified_weight


def test_a_weiszfeld_step_is_certified_with_the_norm_of_its_broadcast():
    points, c = contaminated(17), 100.0
    result = secure_geometric_median(points, rounds=2, norm_bound=c, nu=5.0)
    for record in result.rounds[1:]:
        reach = float(np.linalg.norm(record.broadcast)) + c
        assert record.certified_weight == certified_weight(5.0, c, 1.0, 1.0, result.threshold, reach)
        assert record.certified_weight < certified_weight(5.0, c, 1.0, 1.0, result.threshold)


def test_the_bound_with_the_actual_count_is_the_certificate_for_the_survivors():
    points = contaminated(18)
    result = secure_geometric_median(
        points, rounds=1, norm_bound=400.0, nu=50.0, threshold=12, dropouts={"masked_input": [3, 4]}
    )
    for record in result.rounds:
        assert len(record.included) == 22 > result.threshold
        assert record.realised_max_weight <= record.included_weight_bound < record.certified_weight
    step = result.rounds[1]
    assert step.included_weight_bound == result.policy.certificate(22, step.broadcast)


@pytest.mark.parametrize("call", [secure_geometric_median, one_step_geometric_median, secure_mean])
def test_max_weight_without_a_public_norm_bound_is_refused(call):
    oracle = SpyOracle(10, value_bound=100.0, weight_bound=1e6)
    kwargs = {} if call is secure_mean else {"nu": "auto"}
    with pytest.raises(PolicyError, match="norm_bound"):
        call(contaminated(19), max_weight=0.5, oracle=oracle, **kwargs)
    assert oracle.sessions == 0


def test_zero_start_costs_no_call_and_matches_the_plaintext_median_from_zero():
    from rfa.weiszfeld import geometric_median

    points = contaminated(20)
    result = secure_geometric_median(points, rounds=2, norm_bound=400.0, nu=1e-3, init="zero")
    assert [r.kind for r in result.rounds] == ["weiszfeld", "weiszfeld"]
    assert not result.rounds[0].broadcast.any()
    plain = geometric_median(points, nu=1e-3, max_iter=2, tol=None, init=np.zeros(points.shape[1])).median
    assert np.max(np.abs(result.median - plain)) <= 10 * sum(r.error_bound for r in result.rounds)
