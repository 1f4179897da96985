"""The accountant against closed forms."""

import math

import dp_accounting
import pytest

from secagg.accounting import (
    PrivacyAccountant, gaussian_epsilon, noise_multiplier_for, zcdp_epsilon,
)


@pytest.mark.parametrize("z", [0.8, 2.0, 10.0])
def test_zcdp_of_a_gaussian_gives_the_gaussian_epsilon(z):
    # The Gaussian mechanism is exactly 1/(2 z^2)-zCDP at every order (Mironov 2017, Prop. 7).
    assert zcdp_epsilon(1 / (2 * z * z), 1e-5) == pytest.approx(gaussian_epsilon(z, 1e-5), rel=1e-9)


@pytest.mark.parametrize("rho,delta", [(0.01, 1e-5), (0.5, 1e-6), (3.0, 1e-5)])
def test_epsilon_lies_between_the_exact_gaussian_and_the_bun_steinke_bound(rho, delta):
    eps = zcdp_epsilon(rho, delta)
    assert eps <= rho + 2 * math.sqrt(rho * math.log(1 / delta)) + 1e-9  # Bun-Steinke 2016, Prop. 1.3
    # An RDP bound cannot beat the tight (PLD) epsilon of the Gaussian with the same rho.
    exact = dp_accounting.get_epsilon_gaussian(1 / math.sqrt(2 * rho), delta)
    assert exact <= eps <= 1.5 * exact + 0.05


def test_composition_adds_rho():
    assert zcdp_epsilon(0.02, 1e-5, count=50) == pytest.approx(zcdp_epsilon(1.0, 1e-5), rel=1e-9)
    acc = PrivacyAccountant(1e-5)
    for _ in range(10):
        acc.spend_zcdp(0.05, label="median")
    acc.spend_zcdp(0.5, label="mean")
    assert acc.epsilon() == pytest.approx(zcdp_epsilon(1.0, 1e-5), rel=1e-9)
    assert acc.epsilon(label="median") == pytest.approx(zcdp_epsilon(0.5, 1e-5), rel=1e-9)
    assert acc.epsilon(1e-3) < acc.epsilon(1e-7)


def test_xi_adds_to_every_order():
    # (xi, rho)-zCDP: epsilon grows by exactly xi (the additive term shifts every RDP order).
    assert zcdp_epsilon(0.1, 1e-5, xi=0.25) == pytest.approx(zcdp_epsilon(0.1, 1e-5) + 0.25, rel=1e-6)


@pytest.mark.parametrize("eps,calls", [(1.0, 1), (4.0, 30), (16.0, 120)])
def test_noise_multiplier_for_hits_the_target_from_below(eps, calls):
    z = noise_multiplier_for(eps, 1e-5, calls)
    got = zcdp_epsilon(1 / (2 * z * z), 1e-5, calls)
    assert got <= eps and got > 0.999 * eps
