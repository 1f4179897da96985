"""Adversaries for personalised mean estimation in a Gaussian mixture: they know the means and Delta.

Every adversary gets the component means mu_i, the number of corrupted
clients (about c m), c and Delta, and spends a mass eps_i on component i in
units of one component's genuine mass: sum_i eps_i = c, so a share eps_i / c
of its samples goes to component i (rounded by largest remainder).  Each also names the component
it targets, which is the label it claims in section IV's relaxation (used by
``rfa.personal_mean.label_oracle``).

* ``LowerBound`` (section IV): eps from the exact maximiser of the lower bound
  (about sqrt(2 pi) on each of c / sqrt(2 pi) components), samples from
  psi(x) = (f_eps(x - mu') - phi(x - mu)) / eps with mu' = mu - sqrt(2 pi) eps,
  so the component looks like a Gaussian split by a plateau of height
  1/sqrt(2 pi) and length sqrt(2 pi) eps, and mu is its right end.
* ``Concentrate``: all of c on ceil(c / per_component) components, as a point
  mass at mu_i + Delta, the edge of the filter window, where it moves the
  median most without lengthening the cluster.
* ``Elongate``: a point mass of eps = c / floor(c / e) >= e, with
  e = rho - f(3 Delta), at mu_i + 3 Delta on floor(c / e) components.  Its
  points pass the filter (eps + f(3 Delta) >= rho) and join the genuine points
  just right of mu_i, but lie 3 Delta or more from those just left of it, so
  the cluster is no clique and is discarded.
* ``FakeClusters``: a point mass of eps = c / floor(c / rho) >= rho (enough to
  pass the filter) at mu_i + 4 Delta on floor(c / rho) components, i.e. a fake
  cluster between mu_i and mu_i+1 (D >= 9 Delta), Delta further than the 3 Delta
  that would merge it with component i.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .estimation import Adversary
from .bounds import SQRT_2PI, lower_bound_exact, rho, window_mass


def _split(count: int, shares: np.ndarray) -> np.ndarray:
    """Integers proportional to ``shares`` that sum to ``count`` (largest remainder)."""
    exact = count * shares / shares.sum()
    whole = np.floor(exact).astype(int)
    whole[np.argsort(whole - exact)[: count - whole.sum()]] += 1
    return whole


def _point_masses(
    means: np.ndarray, count: int, c: float, per_target: float, offset: float, ceil: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Even split of c into point masses at mu_i + offset on the first j components,
    j = ceil or floor of c / per_target (at least 1, at most k)."""
    j = math.ceil(c / per_target) if ceil else math.floor(c / per_target)
    j = min(len(means), max(1, j))
    counts = _split(count, np.ones(j))
    labels = np.repeat(np.arange(j), counts)
    return means[labels] + offset, labels


def _plateau_samples(n: int, eps: float, rng: np.random.Generator) -> np.ndarray:
    """n draws of y = x - mu' from psi, by rejection from f_eps / (1 + eps) (acceptance eps / (1 + eps)).

    f_eps(y) = phi(y) for y <= 0, 1/sqrt(2 pi) on (0, L], phi(y - L) above, with
    L = sqrt(2 pi) eps; mu = mu' + L, so a proposal y is kept with probability
    1 - phi(y - L) / f_eps(y).
    """
    length = SQRT_2PI * eps
    out: list[np.ndarray] = []
    need = n
    while need > 0:
        batch = int(need * (1 + eps) / eps * 1.2) + 16
        region = rng.random(batch) * (1 + eps)
        z = np.abs(rng.standard_normal(batch))
        y = np.where(region < 0.5, -z, np.where(region < 0.5 + eps, rng.random(batch) * length, length + z))
        f_eps = np.where(y <= 0, np.exp(-0.5 * y * y), np.where(y <= length, 1.0, np.exp(-0.5 * (y - length) ** 2)))
        keep = rng.random(batch) * f_eps >= np.exp(-0.5 * (y - length) ** 2)
        out.append(y[keep][:need])
        need -= len(out[-1])
    return np.concatenate(out)


@dataclass(frozen=True)
class LowerBound:
    """Section IV's adversary, with the split that maximises (1/k) sum h(eps_i) exactly."""

    name: str = "lower-bound"

    def __call__(
        self, means: np.ndarray, count: int, c: float, delta: float, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        eps = lower_bound_exact(c, len(means)).allocation
        targets = np.flatnonzero(eps > 0)
        counts = _split(count, eps[targets])
        labels = np.repeat(targets, counts)
        values = np.empty(count)
        start = 0
        for i, n in zip(targets, counts):
            values[start:start + n] = means[i] - SQRT_2PI * eps[i] + _plateau_samples(n, eps[i], rng)
            start += n
        return values, labels


@dataclass(frozen=True)
class Concentrate:
    """A point mass at mu_i + Delta on ceil(c / per_component) components."""

    per_component: float = 1.0
    name: str = "concentrate"

    def __call__(
        self, means: np.ndarray, count: int, c: float, delta: float, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        return _point_masses(means, count, c, self.per_component, delta, ceil=True)


@dataclass(frozen=True)
class Elongate:
    """A point mass at mu_i + 3 Delta, at least rho - f(3 Delta) each: the cluster grows past 3 Delta and is dropped."""

    name: str = "elongate"

    def __call__(
        self, means: np.ndarray, count: int, c: float, delta: float, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        cost = rho(delta) - float(window_mass(3 * delta, delta))
        return _point_masses(means, count, c, cost, 3 * delta, ceil=False)


@dataclass(frozen=True)
class FakeClusters:
    """A point mass of at least rho at mu_i + 4 Delta: a cluster where no component is."""

    name: str = "fake-clusters"

    def __call__(
        self, means: np.ndarray, count: int, c: float, delta: float, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        return _point_masses(means, count, c, rho(delta), 4 * delta, ceil=False)


ADVERSARIES: dict[str, Adversary] = {a.name: a for a in (LowerBound(), Concentrate(), Elongate(), FakeClusters())}
