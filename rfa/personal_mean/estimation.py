"""Robust personalised mean estimation in a Gaussian mixture: the problem, the server and the client.

Managoli, Prabhakaran and Diggavi, "Robust Federated Personalised Mean
Estimation for the Gaussian Mixture Model".  (k + c) m clients each hold one
sample of ``(1/k) sum_i N(mu_i, 1)``; each is corrupted with probability
c / (k + c), and an adversary who knows the means replaces the corrupted
samples.  The server runs ROBUST CLUSTERING (Algorithm 1) on every reported
sample and broadcasts (mean, quality) pairs; each honest client runs COMBINE
ESTIMATES (Algorithm 2) with its own sample x_v, which it knows to be genuine,
to estimate the mean of its own component.  The score is the honest clients'
average squared error.

This module owns the problem generator, both algorithms and the three
baselines; the adversaries are in ``rfa.personal_mean.adversaries`` and the
bounds in ``rfa.personal_mean.bounds``.  Notation: ``delta`` is the paper's
Delta (the filter radius; the components are at least 9 Delta apart) and
``backoff`` is the paper's delta (the slack against sampling error, 0 in the
asymptotic analysis).  The paper's components have unit variance; ``sigma``
(default 1) is a known common standard deviation: the algorithms run on
values / sigma, so Delta and every width are in units of sigma, and means come
back in data units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

import numpy as np
from scipy.special import ndtr, ndtri

from ..errors import PersonalMeanError


class ClusterSpacingError(PersonalMeanError):
    """ROBUST CLUSTERING formed no cluster (or, with no adversary, discarded one) because the filtered
    samples of different components merged: the component means are closer than 9 Delta sigma."""
from .bounds import combine_weight, median_error, rho


class Adversary(Protocol):
    """Chooses the corrupted clients' samples from the component means (section II)."""

    name: str

    def __call__(
        self, means: np.ndarray, count: int, c: float, delta: float, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """``count`` samples (about c m, m being one component's genuine count) and the
        component each one targets (the label it claims in section IV's relaxation)."""
        ...


@dataclass(frozen=True)
class Problem:
    """One draw of the problem: what the server sees and what only the score may use."""

    means: np.ndarray  # (k,) component means, D apart
    values: np.ndarray  # (n,) the reported samples, n = (k + c) m
    corrupted: np.ndarray  # (n,) bool, who the adversary controls
    labels: np.ndarray  # (n,) true component (honest) or targeted component (corrupted)
    k: int
    c: float
    m: int
    delta: float
    sigma: float = 1.0  # the components' standard deviation; delta is in units of it

    @cached_property
    def verified(self) -> np.ndarray:
        """The honest clients' own samples x_v: the sample each one also reported (section II)."""
        return self.values[~self.corrupted]

    @cached_property
    def honest_means(self) -> np.ndarray:
        return self.means[self.labels[~self.corrupted]]


def _check_sigma(sigma: float) -> float:
    if not (isinstance(sigma, (int, float, np.floating)) and math.isfinite(sigma) and sigma > 0):
        raise PersonalMeanError(f"sigma must be a positive finite scale, got {sigma!r}")
    return float(sigma)


def _check_sizes(k: int, c: float, m: int, delta: float) -> None:
    if not (isinstance(k, (int, np.integer)) and k >= 1):
        raise PersonalMeanError(f"k must be a positive integer, got {k!r}")
    if not (math.isfinite(c) and c >= 0):
        raise PersonalMeanError(f"c must be finite and non-negative, got {c!r}")
    if not (isinstance(m, (int, np.integer)) and m >= 1):
        raise PersonalMeanError(f"m must be a positive integer, got {m!r}")
    if not (math.isfinite(delta) and delta > 0):
        raise PersonalMeanError(f"Delta must be positive, got {delta!r}")


def make_problem(
    k: int, c: float, m: int, delta: float, adversary: Adversary | None, rng: np.random.Generator,
    separation: float | None = None, *, sigma: float = 1.0,
) -> Problem:
    """Section II: (k + c) m clients, means ``separation`` apart (default the minimum, 9 Delta), each
    client corrupted with probability c / (k + c); honest clients draw a uniform component and one
    N(mu_i, 1) sample, the adversary writes the corrupted ones.  ``sigma`` scales the whole draw
    (means, samples, attack) to N(mu_i, sigma^2) components; ``separation`` and Delta stay in units of sigma."""
    _check_sizes(k, c, m, delta)
    sigma = _check_sigma(sigma)
    separation = 9.0 * delta if separation is None else float(separation)
    if not separation >= 9.0 * delta:
        raise PersonalMeanError(f"the analysis needs separation D >= 9 Delta = {9 * delta}, got {separation}")
    if c > 0 and adversary is None:
        raise PersonalMeanError("c > 0 needs an adversary")
    means = separation * np.arange(k, dtype=float)
    n = int(round((k + c) * m))
    corrupted = rng.random(n) < c / (k + c)
    labels = rng.integers(k, size=n)
    values = means[labels] + rng.standard_normal(n)
    count = int(corrupted.sum())
    if count:
        assert adversary is not None
        bad_values, bad_labels = adversary(means, count, c, delta, rng)
        if bad_values.shape != (count,) or bad_labels.shape != (count,):
            raise PersonalMeanError(f"adversary {adversary.name!r} returned the wrong number of samples")
        values[corrupted] = bad_values
        labels[corrupted] = bad_labels
    return Problem(sigma * means, sigma * values, corrupted, labels, int(k), float(c), int(m), float(delta), sigma)


@dataclass(frozen=True)
class ServerOutput:
    """Algorithm 1's list L of (mean, quality) pairs, sorted by mean, with what produced each pair."""

    means: np.ndarray  # mu~_c, in data units
    qualities: np.ndarray  # eps~_c
    support: tuple[np.ndarray, ...]  # indices (into the input) of S_c, per cluster
    widths: np.ndarray  # l per cluster, in units of sigma
    m_h: float
    m1: float
    m2: float
    filtered: int  # |H'|
    discarded: int  # connected components of G that are not cliques
    sigma: float = 1.0  # the scale the server divided the samples by


def split_sizes(m: float, k: int, backoff: float) -> tuple[float, float, float]:
    """Algorithm 1 lines 2-4: m_h = (2 / delta^2) log(k / delta) and m1 = m2 = (m - m_h) / 2."""
    if not 0 < backoff < 1:
        raise PersonalMeanError(f"the backoff delta must be in (0, 1), got {backoff!r}")
    m_h = 2.0 / backoff**2 * math.log(k / backoff)
    if m_h >= m:
        raise PersonalMeanError(
            f"m = {m:g} clients per component is too few for delta = {backoff}: m_h = {m_h:.0f} must be below m"
        )
    m1 = (m - m_h) / 2
    return m_h, m1, m1


def quality_estimate(size: np.ndarray | int, width: np.ndarray | float, m2: float, delta: float, backoff: float) -> np.ndarray:
    """Algorithm 1 line 15 (garbled in the supplied text), derived from Lemma 3 and section V:

        eps~ = m~ / m2 - (Phi(l + Delta) - Phi(-Delta)) + delta.

    Derivation.  Measure mass in units of m2, the expected number of one
    component's genuine points in T2.  Let the clique's points span [a, b].
    The genuine points near the mean mu pass the filter on both sides of mu
    (with m_h -> oo some land there), so mu is in [a, b]; S_c is the T2 points
    within Delta of the clique, i.e. in [a - Delta, b + Delta], and
    l = max S_c - min S_c - 2 Delta <= b - a.  Writing t = mu - a in [0, l], the
    genuine mass of that interval is Phi(l - t + Delta) - Phi(-t - Delta),
    smallest at t = 0 or t = l, where it is Phi(l + Delta) - Phi(-Delta).  So
    the corrupted mass is at most m~ / m2 minus that, and delta covers the
    O(1/sqrt(m2)) sampling error of the counts: eps <= eps~ (Lemma 3's left
    inequality).  Lemma 3's right inequality follows the same way: the filter
    keeps only points within f^-1(rho - eps) of mu, and the genuine mass can
    exceed the minimum by at most Phi(s + Delta) - Phi(Delta) <= s phi(Delta)
    for s <= f^-1(rho - eps).  Section V: "counting the total number of points
    in the interval and subtracting the expected number of genuine points".
    """
    width = np.asarray(width, dtype=float)
    return np.asarray(size, dtype=float) / m2 - (ndtr(width + delta) - ndtr(-delta)) + backoff


def robust_clustering(
    values: np.ndarray, k: int, c: float, delta: float, backoff: float, rng: np.random.Generator,
    *, sigma: float = 1.0, allow_empty: bool = False,
) -> ServerOutput:
    """Algorithm 1, ROBUST CLUSTERING({y_i}, k, c, delta), with Delta = ``delta`` and delta = ``backoff``,
    on ``values / sigma``.

    When the filtered samples form runs but no clique, or (with c = 0, so no
    adversary) any run is discarded, the components' filtered samples have
    merged: the means are closer than the 9 Delta sigma the analysis needs, and
    ``ClusterSpacingError`` says so, naming that spacing.  An adversary who
    elongates every cluster causes the same (section V); ``allow_empty=True``
    then returns the empty list, so every client keeps its own sample
    (Algorithm 2 line 6).

    Line 9's "the set of cliques in G" is read as the connected components of G
    that are cliques: section V says points closer than 3 Delta belong to the
    same cluster and that an adversary can "elongate a cluster beyond 3 Delta
    and cause it to be discarded"; listing every maximal clique instead would
    turn an elongated cluster into overlapping windows, not discard it.  On a
    line, the components are the runs of sorted H' with gaps below 3 Delta, and
    a run is a clique when its span is below 3 Delta.
    """
    values = np.asarray(values, dtype=float)
    if values.ndim != 1 or not np.all(np.isfinite(values)):
        raise PersonalMeanError("the reported samples must be a finite 1-D array")
    _check_sizes(k, c, 1, delta)
    sigma = _check_sigma(sigma)
    values = values / sigma
    m = len(values) / (k + c)  # line 3
    m_h, m1, m2 = split_sizes(m, k, backoff)
    part = np.searchsorted(np.cumsum([m_h, m1]) / m, rng.random(len(values)), side="right")  # line 5: 0 H, 1 T1, 2 T2
    h = values[part == 0]
    t1 = np.sort(values[part == 1])
    t2_index = np.flatnonzero(part == 2)
    order = np.argsort(values[t2_index], kind="stable")
    t2_index, t2 = t2_index[order], values[t2_index[order]]

    # Lines 6-7: keep h with at least (rho - delta) m1 points of T1 strictly within Delta.
    near = np.searchsorted(t1, h + delta, side="left") - np.searchsorted(t1, h - delta, side="right")
    kept = np.sort(h[near >= (rho(delta) - backoff) * m1])

    # Lines 8-9: connected components of the 3 Delta graph; keep those that are cliques.
    starts = np.flatnonzero(np.diff(kept) >= 3 * delta) + 1
    runs = np.split(kept, starts) if len(kept) else []
    cliques = [run for run in runs if run[-1] - run[0] < 3 * delta]
    if runs and len(cliques) < len(runs) and (not cliques or c == 0) and not allow_empty:
        spans = sorted((float(run[-1] - run[0]) for run in runs if run[-1] - run[0] >= 3 * delta), reverse=True)
        raise ClusterSpacingError(
            f"{len(runs) - len(cliques)} of {len(runs)} runs of filtered samples span "
            f"{', '.join(f'{sigma * w:.3g}' for w in spans[:3])} (>= 3 Delta sigma = {3 * delta * sigma:.3g}) and "
            f"{len(cliques)} cluster(s) formed: ROBUST CLUSTERING needs component means at least "
            f"9 Delta sigma = {9 * delta * sigma:.3g} apart (Delta = {delta:g}, sigma = {sigma:g})"
        )

    means, qualities, widths, support = [], [], [], []
    for clique in cliques:
        # Line 11: S_c = T2 points within Delta of some clique point (a union of intervals, holes where gaps >= 2 Delta).
        cuts = np.flatnonzero(np.diff(clique) >= 2 * delta) + 1
        lo = np.array([piece[0] for piece in np.split(clique, cuts)]) - delta
        hi = np.array([piece[-1] for piece in np.split(clique, cuts)]) + delta
        first = np.searchsorted(t2, lo, side="right")
        last = np.searchsorted(t2, hi, side="left")
        members = np.concatenate([np.arange(a, b) for a, b in zip(first, last)])
        if len(members) == 0:  # a clique whose neighbourhood drew no T2 point says nothing about a mean
            continue
        s_c = t2[members]
        width = s_c[-1] - s_c[0] - 2 * delta  # line 12 (s_c is sorted)
        means.append(float(np.median(s_c)))  # line 14
        qualities.append(float(quality_estimate(len(s_c), width, m2, delta, backoff)))  # lines 13, 15
        widths.append(width)
        support.append(t2_index[members])
    order = np.argsort(means)
    return ServerOutput(
        means=sigma * np.asarray(means)[order], qualities=np.asarray(qualities)[order],
        support=tuple(support[i] for i in order), widths=np.asarray(widths)[order],
        m_h=m_h, m1=m1, m2=m2, filtered=len(kept), discarded=len(runs) - len(cliques), sigma=sigma,
    )


def _nearest(sorted_means: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Index of the nearest entry of a sorted, non-empty array, per x."""
    if len(sorted_means) == 1:
        return np.zeros(len(x), dtype=int)
    right = np.clip(np.searchsorted(sorted_means, x), 1, len(sorted_means) - 1)
    left = right - 1
    return np.where(np.abs(x - sorted_means[left]) <= np.abs(x - sorted_means[right]), left, right)


def combine_estimates(server: ServerOutput, verified: np.ndarray, delta: float) -> np.ndarray:
    """Algorithm 2, COMBINE ESTIMATES(L, x_v), for every honest client at once.

    The nearest server mean mu~ (line 2) is used if it is within 1.5 Delta sigma of
    x_v (line 3, sigma the server's scale): mu^ = (mu~ + g(eps~)^2 x_v) / (1 + g(eps~)^2) with Lemma 2's
    g (line 4); otherwise mu^ = x_v (line 6).  g = oo (the estimate may be
    arbitrarily bad) also gives x_v.
    """
    verified = np.asarray(verified, dtype=float)
    if len(server.means) == 0:
        return verified.copy()
    j = _nearest(server.means, verified)
    mu = server.means[j]
    weight = combine_weight(median_error(server.qualities, delta))[j]  # g(eps~)^2 / (1 + g(eps~)^2) on x_v
    combined = (1.0 - weight) * mu + weight * verified
    return np.where(np.abs(mu - verified) < 1.5 * delta * server.sigma, combined, verified)


def no_collaboration(verified: np.ndarray) -> np.ndarray:
    """Baseline: each client keeps its own sample (MSE 1)."""
    return np.asarray(verified, dtype=float).copy()


def plain_median(values: np.ndarray, verified: np.ndarray, delta: float, *, sigma: float = 1.0) -> np.ndarray:
    """Baseline without filtering or quality: cluster every reported sample by the 3 Delta sigma rule
    (runs of sorted samples with gaps below 3 Delta sigma), and each client adopts the median of the
    cluster whose median is nearest its own sample."""
    ordered = np.sort(np.asarray(values, dtype=float))
    runs = np.split(ordered, np.flatnonzero(np.diff(ordered) >= 3 * delta * _check_sigma(sigma)) + 1)
    medians = np.sort([np.median(run) for run in runs])
    return medians[_nearest(medians, np.asarray(verified, dtype=float))]


def label_oracle(problem: Problem, backoff: float) -> np.ndarray:
    """Baseline with section IV's relaxation: the server knows every sample's component label (the
    adversary labels its own), so it needs no clustering and knows each component's corrupted mass.

    Per component: the median of the samples labelled i, whose error under eps
    corrupted mass is at most g_o(eps) = Phi^-1((1 + eps) / 2) (the plain
    median's bound quoted after Lemma 2), with eps estimated as
    (count / m - 1) + delta; each honest client combines as in Algorithm 2 with
    g_o in place of g.
    """
    k, m = problem.k, len(problem.values) / (problem.k + problem.c)
    counts = np.bincount(problem.labels, minlength=k)
    # a component nobody claims has no honest client either, so its placeholder median is never used
    medians = np.array([np.median(problem.values[problem.labels == i]) if counts[i] else 0.0 for i in range(k)])
    eps = np.clip(counts / m - 1.0 + backoff, 0.0, None)
    with np.errstate(invalid="ignore"):
        g = np.where(eps >= 1.0, np.inf, ndtri(np.minimum((1.0 + eps) / 2.0, 1.0)))
    own = problem.labels[~problem.corrupted]
    weight = combine_weight(g)[own]
    return (1.0 - weight) * medians[own] + weight * problem.verified


def squared_errors(estimates: np.ndarray, problem: Problem) -> np.ndarray:
    """Each honest client's squared error (mu_i - mu^)^2 (in data units: sigma^2 times the paper's)."""
    return np.square(np.asarray(estimates, dtype=float) - problem.honest_means)


def mse(estimates: np.ndarray, problem: Problem) -> float:
    """Section II's objective: the honest clients' average squared error."""
    return float(np.mean(squared_errors(estimates, problem)))
