"""Corruptions of the simulations: who is corrupted, and what corrupted clients do.

This module owns the corruption model of Sec. III-B: the choice of the corrupted
set C with corruption level rho measured by weight (equation (5)), static data
poisoning of a client's local data before training (Sec. III-B a), Sec. V-A a),
and update poisoning (equation (4)), where a corrupted client sends an arbitrary
function of the round's honest updates.

Update corruptions share one signature,
``fn(updates (n, d), weights (n,) or None, corrupted (n,) bool, rng, **params) -> (n, d)``,
and are registered by name in ``UPDATE_CORRUPTIONS`` (``corrupt_updates`` looks
them up).  Every function returns a new array whose honest rows are bit-identical
copies of the input's; inputs are never modified.  Statistics "of the honest
updates" are alpha-weighted, matching the weighted aggregation (3); with equal
weights they are the plain means of the source papers.
"""

from __future__ import annotations

import dataclasses
from statistics import NormalDist
from types import MappingProxyType
from typing import Any, Callable, Literal, Mapping

import numpy as np
from numpy.typing import ArrayLike

from .data import FederatedDataset
from .errors import InvalidArgument
from .weiszfeld import check_points, check_weights

__all__ = [
    "DATA_CORRUPTIONS",
    "UPDATE_CORRUPTIONS",
    "a_little_is_enough",
    "alie_z",
    "choose_corrupted",
    "corrupt_updates",
    "flip_labels",
    "gaussian",
    "inner_product_manipulation",
    "negate_images",
    "omniscient",
    "poison_clients",
    "replay_previous",
    "sign_flip",
]


# --- The corrupted set (equation (5)) --------------------------------------------------------------


def choose_corrupted(weights: ArrayLike, rho: float, rng: np.random.Generator) -> np.ndarray:
    """A boolean mask of C whose weight fraction sum_C alpha_i / sum_i alpha_i is the largest <= rho.

    ``weights`` must be positive integers, e.g. the sample counts N_i (alpha_i ∝ N_i, Sec. V-A):
    the closest achievable fraction is then found exactly, as a subset sum over the integers
    up to floor(rho * N) (time O(n * rho * N), memory O(rho * N)).  Among the subsets reaching
    that sum, the one returned depends on a random order of the clients drawn from ``rng``;
    with equal weights it is a uniformly random set of floor(rho * n) clients.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or w.shape[0] == 0:
        raise InvalidArgument(f"weights must be a non-empty 1-D array, got shape {w.shape}")
    if not (np.all(np.isfinite(w)) and np.all(w >= 1) and np.all(w == np.round(w))):
        raise InvalidArgument(
            "weights must be positive integers (pass the sample counts N_i, not the normalised alpha_i) "
            "so that the closest achievable corrupted fraction can be found exactly"
        )
    rho = float(rho)
    if not 0.0 <= rho <= 1.0:
        raise InvalidArgument(f"rho must be in [0, 1], got {rho!r}")
    counts = w.astype(np.int64)
    total = int(counts.sum())
    # The largest integer target with target / total <= rho, checked in the same float arithmetic
    # a caller uses to compute the fraction.
    target = min(total, int(np.floor(rho * total)))
    while target > 0 and target / total > rho:
        target -= 1
    while target < total and (target + 1) / total <= rho:
        target += 1

    order = rng.permutation(counts.shape[0])
    reachable = np.zeros(target + 1, dtype=bool)
    reachable[0] = True
    # first[s] = position in `order` of the client whose inclusion first made sum s reachable; the
    # sum s - N_client was reachable strictly earlier, so following `first` back never reuses a client.
    first = np.full(target + 1, -1, dtype=np.int64)
    for pos, client in enumerate(order):
        c = int(counts[client])
        if c > target:
            continue
        new = np.flatnonzero(reachable[: target + 1 - c] & ~reachable[c:]) + c
        first[new] = pos
        reachable[new] = True
        if reachable[target]:
            break
    mask = np.zeros(counts.shape[0], dtype=bool)
    s = int(np.flatnonzero(reachable).max())
    while s > 0:
        client = int(order[first[s]])
        mask[client] = True
        s -= int(counts[client])
    return mask


# --- Static data poisoning (Sec. III-B a), Sec. V-A a)) ----------------------------------------------


def negate_images(X: ArrayLike) -> np.ndarray:
    """x -> 1 - x for pixels in [0, 1]: the negative image of Sec. V-A a) (labels unchanged)."""
    X = np.asarray(X, dtype=np.float64)
    if X.size and (X.min() < 0.0 or X.max() > 1.0):
        raise InvalidArgument("negate_images expects pixels in [0, 1]")
    return 1.0 - X


def flip_labels(y: ArrayLike, n_classes: int) -> np.ndarray:
    """y -> n_classes - 1 - y (the label flip of Sec. V-A a), generalised from the binary case)."""
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.integer) or (y.size and (y.min() < 0 or y.max() >= n_classes)):
        raise InvalidArgument(f"labels must be integers in [0, {n_classes})")
    return (n_classes - 1) - y


DataCorruption = Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]]

DATA_CORRUPTIONS: Mapping[str, DataCorruption] = MappingProxyType(
    {
        "negate": lambda X, y, n_classes: (negate_images(X), y.copy()),
        "label_flip": lambda X, y, n_classes: (X.copy(), flip_labels(y, n_classes)),
    }
)


def poison_clients(dataset: FederatedDataset, corrupted: ArrayLike, name: str) -> FederatedDataset:
    """A new dataset whose corrupted clients' training data went through ``DATA_CORRUPTIONS[name]``.

    Static data poisoning: applied once, before training.  Honest clients keep their very arrays
    and the test set is untouched; the input dataset is not modified.
    """
    if name not in DATA_CORRUPTIONS:
        raise InvalidArgument(f"unknown data corruption {name!r}; known: {sorted(DATA_CORRUPTIONS)}")
    mask = _check_mask(corrupted, dataset.n_clients)
    if name == "label_flip" and dataset.n_classes is None:
        raise InvalidArgument("label_flip needs a classification dataset (n_classes is None)")
    poison = DATA_CORRUPTIONS[name]
    new_X, new_y = list(dataset.client_X), list(dataset.client_y)
    for i in np.flatnonzero(mask):
        new_X[i], new_y[i] = poison(dataset.client_X[i], dataset.client_y[i], dataset.n_classes or 0)
    return dataclasses.replace(dataset, client_X=tuple(new_X), client_y=tuple(new_y))


# --- Update poisoning (equation (4)) ---------------------------------------------------------------


def _check_mask(corrupted: ArrayLike, n: int) -> np.ndarray:
    mask = np.asarray(corrupted)
    if mask.dtype != bool or mask.shape != (n,):
        raise InvalidArgument(
            f"corrupted must be a boolean mask of shape ({n},), got dtype {mask.dtype}, shape {mask.shape}"
        )
    return mask


def _prepare(
    updates: ArrayLike, weights: ArrayLike | None, corrupted: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated (updates as a fresh float64 copy, alpha, mask)."""
    points = np.array(check_points(updates), copy=True)
    alpha = check_weights(weights, points.shape[0])
    return points, alpha, _check_mask(corrupted, points.shape[0])


def _honest_mean(points: np.ndarray, alpha: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, float]:
    """(alpha-weighted mean of the honest rows, their total weight)."""
    honest_weight = float(alpha[~mask].sum())
    if honest_weight <= 0:
        raise InvalidArgument("this corruption needs honest updates with positive total weight")
    return alpha[~mask] @ points[~mask] / honest_weight, honest_weight


def gaussian(
    updates: ArrayLike,
    weights: ArrayLike | None,
    corrupted: ArrayLike,
    rng: np.random.Generator,
    *,
    reference: ArrayLike | None = None,
    sigma: float | None = None,
) -> np.ndarray:
    """Corrupted client i sends its own vector plus zeta_i ~ N(0, sigma_i^2 I) (Sec. V-A b)).

    sigma_i^2 is the variance across the components of client i's update w_{i,tau} - w^(t), as in
    the paper.  Footnote 4 says the aggregated vectors are those updates (differences from the
    server model), so by default the rows are taken to be updates; pass ``reference`` = w^(t) when
    the rows are models.  ``sigma`` overrides the rule with one fixed standard deviation.
    """
    points, _, mask = _prepare(updates, weights, corrupted)
    own = points[mask]
    if sigma is None:
        deltas = own if reference is None else own - np.asarray(reference, dtype=np.float64)
        std = np.sqrt(np.var(deltas, axis=1))
    else:
        if not (np.isfinite(sigma) and sigma >= 0):
            raise InvalidArgument(f"sigma must be a finite non-negative number, got {sigma!r}")
        std = np.full(own.shape[0], float(sigma))
    points[mask] = own + std[:, None] * rng.standard_normal(own.shape)
    return points


def omniscient(
    updates: ArrayLike,
    weights: ArrayLike | None,
    corrupted: ArrayLike,
    rng: np.random.Generator,
    *,
    target: Literal["honest", "all"] = "honest",
) -> np.ndarray:
    """Corrupted clients all send v, chosen so that the weighted mean of all n rows is -m (Sec. V-A c)).

    m is the alpha-weighted mean of the honest rows (``target="honest"``), or of all rows as given,
    i.e. the mean "without the corruption" in the paper's words (``target="all"``).  With W the
    total weight, W_c that of C and S_h = sum_{i not in C} alpha_i w_i, the mean is
    (S_h + W_c v) / W, which equals -m iff v = -(W m + S_h) / W_c; for ``"honest"``,
    S_h = W_h m and v = -m (W + W_h) / W_c.  ``rng`` is unused (deterministic attack).
    """
    points, alpha, mask = _prepare(updates, weights, corrupted)
    if not mask.any():
        return points
    corrupted_weight = float(alpha[mask].sum())
    if corrupted_weight <= 0:
        raise InvalidArgument("corrupted clients with zero total weight cannot move the weighted mean")
    honest_sum = alpha[~mask] @ points[~mask]
    if target == "honest":
        m, _ = _honest_mean(points, alpha, mask)
    elif target == "all":
        m = alpha @ points / alpha.sum()
    else:
        raise InvalidArgument(f"target must be 'honest' or 'all', got {target!r}")
    points[mask] = -(alpha.sum() * m + honest_sum) / corrupted_weight
    return points


def sign_flip(
    updates: ArrayLike,
    weights: ArrayLike | None,
    corrupted: ArrayLike,
    rng: np.random.Generator,
    *,
    scale: float = 1.0,
) -> np.ndarray:
    """Corrupted client i sends -scale * (its own update) (sign flipping, Yi et al. Sec. 5 "SF")."""
    points, _, mask = _prepare(updates, weights, corrupted)
    points[mask] *= -float(scale)
    return points


def inner_product_manipulation(
    updates: ArrayLike,
    weights: ArrayLike | None,
    corrupted: ArrayLike,
    rng: np.random.Generator,
    *,
    epsilon: float = 0.1,
) -> np.ndarray:
    """Corrupted clients send -epsilon * (mean of the honest updates): inner-product manipulation.

    "Fall of empires" (Xie, Koyejo and Gupta, PMLR 115; Yi et al. Sec. 5 "Empire").
    A small epsilon keeps the corrupted vectors close to the honest ones, so distance-based rules
    keep them, while their inner product with the true mean is negative.
    """
    points, alpha, mask = _prepare(updates, weights, corrupted)
    if not mask.any():
        return points
    m, _ = _honest_mean(points, alpha, mask)
    points[mask] = -float(epsilon) * m
    return points


def alie_z(n: int, f: int) -> float:
    """z_max of "A little is enough" (Baruch et al., NeurIPS 2019): Phi^{-1}((n - s) / n), s = floor(n/2 + 1) - f.

    s is the number of honest clients the f corrupted ones must win over to form a majority; z_max
    is the largest shift for which that many honest coordinates are expected to lie farther from
    the mean than the corrupted ones.  Defined for 0 < f < floor(n/2) + 1.
    """
    s = (n // 2 + 1) - f
    if not (0 < f and 0 < s < n):
        raise InvalidArgument(f"z_max is defined for 0 < f <= n/2 corrupted clients, got n={n}, f={f}; pass z explicitly")
    return NormalDist().inv_cdf((n - s) / n)


def a_little_is_enough(
    updates: ArrayLike,
    weights: ArrayLike | None,
    corrupted: ArrayLike,
    rng: np.random.Generator,
    *,
    z: float | None = None,
) -> np.ndarray:
    """Corrupted clients send mu - z * sigma, coordinate-wise mean and std of the honest updates.

    "A little is enough" (Baruch et al., NeurIPS 2019; Yi et al. Sec. 5 "SV"): a shift within the
    honest spread in every coordinate, small enough to pass as honest.  mu and sigma are
    alpha-weighted over the honest rows (population std).  By default z = ``alie_z(n, f)`` with n
    rows and f corrupted rows (counts, as in that paper).
    """
    points, alpha, mask = _prepare(updates, weights, corrupted)
    if not mask.any():
        return points
    mu, honest_weight = _honest_mean(points, alpha, mask)
    sigma = np.sqrt(alpha[~mask] @ (points[~mask] - mu) ** 2 / honest_weight)
    shift = alie_z(points.shape[0], int(mask.sum())) if z is None else float(z)
    points[mask] = mu - shift * sigma
    return points


def replay_previous(
    updates: ArrayLike,
    weights: ArrayLike | None,
    corrupted: ArrayLike,
    rng: np.random.Generator,
    *,
    previous: ArrayLike | None = None,
) -> np.ndarray:
    """Corrupted clients send ``previous``, the server's previous aggregate (public after each round).

    None stands for the aggregate before the first round: the zero update.

    Aimed at a Weiszfeld start point that is the previous aggregate: at distance 0
    from it their beta_i = alpha_i / nu dominates, so a warm-started step stays
    where it started and the stale update repeats.  ``rng`` is unused.
    """
    points, _, mask = _prepare(updates, weights, corrupted)
    start = np.zeros(points.shape[1]) if previous is None else np.asarray(previous, dtype=np.float64)
    if start.shape != (points.shape[1],) or not np.all(np.isfinite(start)):
        raise InvalidArgument(f"previous must be a finite vector of shape ({points.shape[1]},), got shape {start.shape}")
    points[mask] = start
    return points


UpdateCorruption = Callable[..., np.ndarray]

UPDATE_CORRUPTIONS: Mapping[str, UpdateCorruption] = MappingProxyType(
    {
        "gaussian": gaussian,
        "omniscient": omniscient,
        "sign_flip": sign_flip,
        "ipm": inner_product_manipulation,
        "alie": a_little_is_enough,
        "replay": replay_previous,
        # The names of Yi et al.'s Table 1 for the same two attacks: "Empire" (fall of empires) is
        # inner-product manipulation, "SV" (scaled variance) is "a little is enough".
        "empire": inner_product_manipulation,
        "sv": a_little_is_enough,
    }
)


def corrupt_updates(
    name: str,
    updates: ArrayLike,
    weights: ArrayLike | None,
    corrupted: ArrayLike,
    rng: np.random.Generator,
    **params: Any,
) -> np.ndarray:
    """Apply the update corruption ``UPDATE_CORRUPTIONS[name]`` with its keyword ``params``."""
    if name not in UPDATE_CORRUPTIONS:
        raise InvalidArgument(f"unknown update corruption {name!r}; known: {sorted(UPDATE_CORRUPTIONS)}")
    return UPDATE_CORRUPTIONS[name](updates, weights, corrupted, rng, **params)
