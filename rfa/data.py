"""Federated datasets for the simulations: per-client data, a test set, and their generators.

This module owns ``FederatedDataset`` (each client's (X, y), a held-out test set,
and the weights alpha_i = N_i / N of Sec. III-A), the partitions of a labelled
pool across clients (i.i.d. or label-skewed Dirichlet), and two generators:

- ``synthetic_least_squares``: the heterogeneous least-squares setting of
  Sec. IV-A, with knobs that set the heterogeneity measures Omega_X
  (equation (9)) and Omega_Y|X (equation (10)) exactly; ``omega_x`` and
  ``omega_y_given_x`` compute them from the true parameters.
- ``digits``: scikit-learn's handwritten digits (8x8 images, 10 classes,
  shipped with the library), pixels scaled to [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
from numpy.typing import ArrayLike

from .errors import InvalidArgument

__all__ = [
    "FederatedDataset",
    "LeastSquaresTruth",
    "digits",
    "dirichlet_partition",
    "empirical_hessians",
    "iid_partition",
    "omega_x",
    "omega_y_given_x",
    "synthetic_least_squares",
]


@dataclass(frozen=True)
class LeastSquaresTruth:
    """The true parameters of a synthetic least-squares federation (Sec. IV-A, assumption (c)).

    ``w_star``: (n, d), client i's optimum w_i^*, with y = x.w_i^* + N(0, noise^2).
    ``hessians``: (n, d, d), H_i = E[x x^T] on client i (the Hessian of F_i).
    """

    w_star: np.ndarray
    hessians: np.ndarray
    noise: float

    @property
    def w_opt(self) -> np.ndarray:
        """The minimiser w^* = H^{-1} (1/n) sum_j H_j w_j^* of F = (1/n) sum_i F_i (equation (7))."""
        H = self.hessians.mean(axis=0)
        return np.linalg.solve(H, np.einsum("nij,nj->i", self.hessians, self.w_star) / self.w_star.shape[0])


@dataclass(frozen=True)
class FederatedDataset:
    """Each client's training data, a test set, and (for synthetic data) the truth behind them.

    ``client_indices``/``test_indices`` are the rows of the source pool each client / the test set
    holds (for ``digits``: rows of ``load_digits``); None for generated data.
    """

    client_X: tuple[np.ndarray, ...]
    client_y: tuple[np.ndarray, ...]
    X_test: np.ndarray
    y_test: np.ndarray
    n_classes: int | None = None
    truth: LeastSquaresTruth | None = None
    client_indices: tuple[np.ndarray, ...] | None = None
    test_indices: np.ndarray | None = None

    def __post_init__(self) -> None:
        if len(self.client_X) != len(self.client_y) or not self.client_X:
            raise InvalidArgument("need at least one client and as many label arrays as input arrays")
        for i, (X, y) in enumerate(zip(self.client_X, self.client_y)):
            if X.ndim != 2 or y.shape != (X.shape[0],) or X.shape[0] == 0:
                raise InvalidArgument(f"client {i}: need X of shape (m, d) with m >= 1 and y of shape (m,)")

    @property
    def n_clients(self) -> int:
        return len(self.client_X)

    @property
    def sample_counts(self) -> np.ndarray:
        """N_i, the number of training rows of each client."""
        return np.array([X.shape[0] for X in self.client_X], dtype=np.int64)

    @property
    def weights(self) -> np.ndarray:
        """alpha_i = N_i / N (Sec. III-A and V-A: a device weighs in proportion to its data)."""
        counts = self.sample_counts
        return counts / counts.sum()

    def client(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.client_X[i], self.client_y[i]

    def pooled(self) -> tuple[np.ndarray, np.ndarray]:
        """All clients' training rows stacked, for centralised training or evaluation."""
        return np.concatenate(self.client_X), np.concatenate(self.client_y)


def _positive_int(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InvalidArgument(f"{what} must be a positive integer, got {value!r}")
    return int(value)


# --- Sec. IV-A: heterogeneity measures ------------------------------------------------------------


def omega_x(hessians: ArrayLike) -> float:
    """Omega_X = max_i lambda_max(H^{-1/2} H_i H^{-1/2}), H = (1/n) sum_i H_i (equation (9))."""
    Hs = np.asarray(hessians, dtype=np.float64)
    if Hs.ndim != 3 or Hs.shape[1] != Hs.shape[2]:
        raise InvalidArgument(f"hessians must have shape (n, d, d), got {Hs.shape}")
    evals, evecs = np.linalg.eigh(Hs.mean(axis=0))
    if evals.min() <= 0:
        raise InvalidArgument("the mean covariance H is singular: Omega_X is undefined")
    inv_sqrt = (evecs / np.sqrt(evals)) @ evecs.T
    return float(np.linalg.eigvalsh(inv_sqrt @ Hs @ inv_sqrt).max())


def omega_y_given_x(w_star: ArrayLike) -> float:
    """Omega_Y|X = max_{i,j} ||w_i^* - w_j^*|| (equation (10))."""
    W = np.asarray(w_star, dtype=np.float64)
    if W.ndim != 2:
        raise InvalidArgument(f"w_star must have shape (n, d), got {W.shape}")
    # One vectorised row of distances per client: exact differences (no Gram-matrix cancellation)
    # in O(n d) memory.
    return float(max(np.linalg.norm(W - w, axis=1).max() for w in W))


def empirical_hessians(dataset: FederatedDataset) -> np.ndarray:
    """(n, d, d): (1/N_i) X_i^T X_i, the Hessian of client i's empirical least-squares loss."""
    return np.stack([X.T @ X / X.shape[0] for X in dataset.client_X])


def _random_rotation(dim: int, rng: np.random.Generator) -> np.ndarray:
    """A Haar-random orthogonal matrix (QR of a Gaussian matrix with the signs of R's diagonal fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    return q * np.sign(np.diag(r))


def _psd_sqrt(M: np.ndarray) -> np.ndarray:
    evals, evecs = np.linalg.eigh(M)
    return (evecs * np.sqrt(np.maximum(evals, 0.0))) @ evecs.T


def synthetic_least_squares(
    n_clients: int,
    samples_per_client: int,
    dim: int,
    *,
    omega_x: float = 1.0,
    omega_y: float = 0.0,
    noise: float = 0.1,
    test_samples_per_client: int = 100,
    rng: np.random.Generator,
) -> FederatedDataset:
    """Heterogeneous linear regression (Sec. IV-A) with Omega_X and Omega_Y|X set exactly.

    Marginals (equation (9)).  With a random rotation Q and H = I, client i gets
    H_i = Q diag(s_i) Q^T.  Coordinate k of the rotated basis is "boosted" on one client
    (k mod n, over a random order of the clients): s_ik = omega_x there and
    (n - omega_x)/(n - 1) on the others, so (1/n) sum_i s_ik = 1, H = I and
    Omega_X = max_i max_k s_ik = omega_x.  Needs 1 <= omega_x < n_clients (omega_x = n would
    leave some H_i singular, i.e. F_i not strongly convex); omega_x = 1 gives H_i = I for all i.

    Conditionals (equation (10)).  w_i^* = w_0 + delta_i with w_0 ~ N(0, I/d); two random clients
    get delta = +-(omega_y/2) u for a random unit u, the others a uniform point of the ball of
    radius omega_y/2, so the largest distance is exactly the antipodal pair's, omega_y.

    Training inputs are moment-matched: client i's X_i satisfies (1/N_i) X_i^T X_i = H_i exactly
    (Gaussian rows whitened by their own second moment, then coloured by H_i^{1/2}; needs
    samples_per_client >= dim), so the Omega_X of the clients' empirical losses is omega_x too.
    Outputs are y = X w_i^* + N(0, noise^2).  The test set holds ``test_samples_per_client`` fresh
    Gaussian rows x ~ N(0, H_i) of each client (the mixture of Sec. IV-A), with the same noise.
    All clients have the same N_i, so alpha_i = 1/n as in Sec. IV-A.
    """
    n = _positive_int(n_clients, "n_clients")
    N = _positive_int(samples_per_client, "samples_per_client")
    d = _positive_int(dim, "dim")
    n_test = _positive_int(test_samples_per_client, "test_samples_per_client")
    ox, oy, sigma = float(omega_x), float(omega_y), float(noise)
    if N < d:
        raise InvalidArgument(f"samples_per_client ({N}) must be at least dim ({d}) to match the second moments")
    if not (ox == 1.0 or 1.0 < ox < n):
        raise InvalidArgument(f"omega_x must be in [1, n_clients) = [1, {n}), got {omega_x!r}")
    if not (np.isfinite(oy) and oy >= 0) or (oy > 0 and n < 2):
        raise InvalidArgument(f"omega_y must be finite, >= 0, and 0 for a single client, got {omega_y!r}")
    if not (np.isfinite(sigma) and sigma >= 0):
        raise InvalidArgument(f"noise must be a finite non-negative standard deviation, got {noise!r}")

    # Marginals: per-client spectra s (n, d) in a shared random basis Q.
    spectra = np.full((n, d), (n - ox) / (n - 1) if n > 1 else 1.0)
    spectra[rng.permutation(n)[np.arange(d) % n], np.arange(d)] = ox
    Q = _random_rotation(d, rng)
    hessians = np.einsum("ik,nk,jk->nij", Q, spectra, Q)

    # Conditionals: client optima on a ball of diameter omega_y with one antipodal pair.
    u = rng.standard_normal((n, d))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    radius = rng.random(n) ** (1.0 / d)  # uniform in the unit ball
    pair = rng.permutation(n)[:2]
    if n >= 2:
        u[pair[1]] = -u[pair[0]]
        radius[pair] = 1.0
    w_star = rng.normal(0.0, 1.0 / np.sqrt(d), d) + (oy / 2.0) * radius[:, None] * u

    client_X, client_y, test_X, test_y = [], [], [], []
    for i in range(n):
        colour = Q @ (np.sqrt(spectra[i])[:, None] * Q.T)  # H_i^{1/2}
        Z = rng.standard_normal((N, d))
        whiten = np.linalg.inv(_psd_sqrt(Z.T @ Z / N))
        X = Z @ whiten @ colour
        client_X.append(X)
        client_y.append(X @ w_star[i] + sigma * rng.standard_normal(N))
        Xt = rng.standard_normal((n_test, d)) @ colour
        test_X.append(Xt)
        test_y.append(Xt @ w_star[i] + sigma * rng.standard_normal(n_test))
    return FederatedDataset(
        client_X=tuple(client_X),
        client_y=tuple(client_y),
        X_test=np.concatenate(test_X),
        y_test=np.concatenate(test_y),
        truth=LeastSquaresTruth(w_star=w_star, hessians=hessians, noise=sigma),
    )


# --- Partitions -----------------------------------------------------------------------------------


def iid_partition(
    n_samples: int, n_clients: int, *, rng: np.random.Generator, min_samples: int = 1
) -> list[np.ndarray]:
    """A uniformly random split of range(n_samples) into n_clients parts whose sizes differ by at most 1."""
    n, k = _positive_int(n_samples, "n_samples"), _positive_int(n_clients, "n_clients")
    if n // k < min_samples:
        raise InvalidArgument(f"{n} samples cannot give each of {k} clients {min_samples}")
    return np.array_split(rng.permutation(n), k)


def dirichlet_partition(
    labels: ArrayLike, n_clients: int, *, alpha: float, rng: np.random.Generator, min_samples: int = 1
) -> list[np.ndarray]:
    """Label-skewed split: each class's rows are divided among clients in proportions ~ Dir(alpha 1_n).

    Every row goes to exactly one client.  Minimum rule: while some client has fewer than
    ``min_samples`` rows, it receives rows drawn at random from the client that currently has
    the most (never taking that donor below ``min_samples``).  This always terminates when
    len(labels) >= n_clients * min_samples and disturbs the label skew only by the rows moved.
    Small alpha concentrates each class on few clients; large alpha approaches the i.i.d. split.
    """
    y = np.asarray(labels)
    k = _positive_int(n_clients, "n_clients")
    min_samples = _positive_int(min_samples, "min_samples")
    alpha = float(alpha)
    if not (np.isfinite(alpha) and alpha > 0):
        raise InvalidArgument(f"alpha must be a positive finite number, got {alpha!r}")
    if y.ndim != 1 or y.shape[0] < k * min_samples:
        raise InvalidArgument(f"{y.shape[0]} samples cannot give each of {k} clients {min_samples}")

    parts: list[list[np.ndarray]] = [[] for _ in range(k)]
    for c in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == c))
        cuts = (np.cumsum(rng.dirichlet(np.full(k, alpha)))[:-1] * rows.shape[0]).astype(np.int64)
        for i, share in enumerate(np.split(rows, cuts)):
            parts[i].append(share)
    clients = [np.concatenate(p) for p in parts]

    sizes = np.array([c.shape[0] for c in clients])
    for needy in np.flatnonzero(sizes < min_samples):
        while sizes[needy] < min_samples:
            donor = int(np.argmax(sizes))
            moved = min(min_samples - sizes[needy], sizes[donor] - min_samples)
            take = rng.choice(sizes[donor], size=moved, replace=False)
            keep = np.ones(sizes[donor], dtype=bool)
            keep[take] = False
            clients[needy] = np.concatenate([clients[needy], clients[donor][take]])
            clients[donor] = clients[donor][keep]
            sizes[needy] += moved
            sizes[donor] -= moved
    # Within a client the rows were grouped by class; shuffle so any prefix is a fair sample.
    return [rng.permutation(c) for c in clients]


def digits(
    n_clients: int,
    *,
    split: Literal["iid", "dirichlet"] = "iid",
    alpha: float = 0.5,
    test_fraction: float = 0.2,
    min_samples: int = 10,
    rng: np.random.Generator,
) -> FederatedDataset:
    """scikit-learn's handwritten digits (1797 images of 8x8 pixels, 10 classes) across n_clients.

    Pixels are divided by 16, so they lie in [0, 1] (the range the negation 1 - x of Sec. V-A
    expects).  A uniformly random ``test_fraction`` of the rows (rounded) is held out; the rest is
    split with ``iid_partition`` or ``dirichlet_partition(alpha)``, each client getting at least
    ``min_samples`` rows (ValueError if the training rows cannot cover that).  The same rng seed
    gives the same dataset.
    """
    from sklearn.datasets import load_digits  # only this generator needs scikit-learn

    source = load_digits()
    X = source.data.astype(np.float64) / 16.0
    y = source.target.astype(np.int64)
    frac = float(test_fraction)
    if not 0.0 < frac < 1.0:
        raise InvalidArgument(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    order = rng.permutation(y.shape[0])
    n_test = int(round(frac * y.shape[0]))
    test_rows, train_rows = order[:n_test], order[n_test:]
    if split == "iid":
        local: Sequence[np.ndarray] = iid_partition(train_rows.shape[0], n_clients, rng=rng, min_samples=min_samples)
    elif split == "dirichlet":
        local = dirichlet_partition(y[train_rows], n_clients, alpha=alpha, rng=rng, min_samples=min_samples)
    else:
        raise InvalidArgument(f"split must be 'iid' or 'dirichlet', got {split!r}")
    rows = tuple(train_rows[part] for part in local)
    return FederatedDataset(
        client_X=tuple(X[r] for r in rows),
        client_y=tuple(y[r] for r in rows),
        X_test=X[test_rows],
        y_test=y[test_rows],
        n_classes=10,
        client_indices=rows,
        test_indices=test_rows,
    )
