"""DP training and DP robust aggregation (rfa.dp) on small federations."""

import math

import numpy as np
import pytest

from rfa.aggregators import GeometricMedianRule, Mean, OneStepRule
from rfa.data import digits
from rfa.dp import RobustDP, step_noise_bound
from rfa.errors import InvalidArgument
from rfa.models import LogisticRegression
from rfa.secure import secure_geometric_median
from rfa.training import TrainingConfig, train
from secagg import SecureAverageOracle
from secagg.accounting import zcdp_epsilon
from secagg.dp import DistributedDiscreteGaussian

MODEL = LogisticRegression(64, 10)


def _config(**kw):
    base = dict(rounds=3, clients_per_round=12, local_steps=2, lr=0.5, secure=True, transport="sum",
                norm_bound=2.0, seed=0)
    return TrainingConfig(**{**base, **kw})


@pytest.mark.parametrize("rule", [Mean(), GeometricMedianRule(rounds=2, init="previous"), OneStepRule()])
def test_a_run_spends_its_target_epsilon_round_by_round(rule):
    data = digits(12, rng=np.random.default_rng(0))
    dp = RobustDP(epsilon=8.0)
    result = train(MODEL, data, rule, _config(eval_every=1), dp=dp)
    spent = [r.epsilon for r in result.history]
    assert spent == sorted(spent) and spent[0] > 0
    assert 0.95 * 8.0 < spent[-1] <= 8.0
    assert dp.accountant.calls == 3 * rule.oracle_calls
    # Every call is one (xi, rho)-zCDP event with rho <= 1 / (2 z^2): the run is within the zCDP composition.
    z = dp.noise_multiplier
    assert spent[-1] <= zcdp_epsilon(1 / (2 * z * z), 1e-5, dp.accountant.calls) * (1 + 1e-9) + 1e-6
    # One aggregate (one round's calls) spends less than the run, more than one call.
    assert dp.per_aggregate(1) <= dp.per_aggregate(rule.oracle_calls) < spent[-1]


def test_dp_needs_secure_aggregation_and_one_of_epsilon_or_z():
    data = digits(12, rng=np.random.default_rng(0))
    with pytest.raises(InvalidArgument):
        train(MODEL, data, Mean(), _config(secure=False), dp=RobustDP(epsilon=1.0))
    with pytest.raises(InvalidArgument):
        RobustDP()
    with pytest.raises(InvalidArgument):
        RobustDP(epsilon=1.0, noise_multiplier=2.0)


def test_each_median_step_gets_noise_for_its_own_weight_bound():
    rng = np.random.default_rng(1)  # test data, not noise
    n, d, c = 16, 40, 1.0
    points = rng.normal(size=(n, d)) * 0.05 + 0.3 / np.sqrt(d)
    mech = DistributedDiscreteGaussian(l2_clip=c, noise_multiplier=0.5, max_clients=n)
    nu = 0.5
    oracle = SecureAverageOracle(n, value_bound=c, weight_bound=1 / nu, max_clients=n, dp=mech, seed=5)
    agg = secure_geometric_median(points, rounds=2, nu=nu, norm_bound=c, oracle=oracle, threshold=n)
    assert [r.kind for r in agg.rounds] == ["mean", "weiszfeld", "weiszfeld"]
    mean_step = agg.rounds[0]
    # The mean step is scaled to its own bound alpha_max = 1 (not 1/nu): noise ~ z sqrt(2) C / n.
    assert mean_step.noise_std == pytest.approx(0.5 * math.sqrt(2) * c / n, rel=0.1)
    for step in agg.rounds:
        bound = step_noise_bound(agg.policy if step.kind != "mean" else
                                 type(agg.policy)(None, c, 1.0, 1.0, None), n, 0.5)
        assert 0 < step.noise_std <= 1.1 * bound
    assert mech.accountant.calls == 3
