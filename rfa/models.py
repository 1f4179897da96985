"""Numpy models with flat parameter vectors, and the local SGD of a client.

This module owns the models of the simulations and the client's local
training loop.  Every model keeps its parameters in one flat float64 vector,
so a client's update is a vector that any aggregation rule of ``rfa`` can
combine (Algorithm 1, line 9).

- ``LeastSquares``: the additive model of Sec. IV-A, loss 1/2 (y - w.phi(x))^2
  (equation (8)); features are used as given, phi(x) = x.
- ``LogisticRegression``: multinomial logistic regression, the "linear model"
  of Sec. V-A, with optional L2 regularisation of the weights (not the bias).
- ``MLP``: one hidden layer (tanh or ReLU) and a softmax output, the
  non-convex case.

``loss`` and ``grad`` are means over the rows of the batch.  ``local_sgd``
runs the tau local steps of Algorithm 1, lines 4-8, optionally with the tail
averaging of Sec. IV-A and the additive offset of Algorithm 4 (personalization).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Literal, Sequence

import numpy as np
from numpy.typing import ArrayLike

from .errors import InvalidArgument

__all__ = [
    "ClassificationModel",
    "LeastSquares",
    "LogisticRegression",
    "MLP",
    "Model",
    "draw_batch",
    "local_sgd",
]


def _check_positive_int(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InvalidArgument(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _check_non_negative(value: float, what: str) -> float:
    value = float(value)
    if not (np.isfinite(value) and value >= 0):
        raise InvalidArgument(f"{what} must be a finite non-negative number, got {value!r}")
    return value


class Model(ABC):
    """A model whose parameters are one flat float64 vector of length ``n_params``."""

    n_params: int

    @abstractmethod
    def init_params(self, rng: np.random.Generator) -> np.ndarray:
        """Initial parameters, drawn with ``rng`` where the model needs random symmetry breaking."""

    @abstractmethod
    def loss(self, params: ArrayLike, X: ArrayLike, y: ArrayLike) -> float:
        """Mean loss over the rows of (X, y), plus the regulariser if any."""

    @abstractmethod
    def grad(self, params: ArrayLike, X: ArrayLike, y: ArrayLike) -> np.ndarray:
        """Gradient of ``loss`` with respect to ``params``, a (n_params,) vector."""

    @abstractmethod
    def predict(self, params: ArrayLike, X: ArrayLike) -> np.ndarray:
        """Predictions for the rows of X."""

    def batch_losses(self, params: ArrayLike, batches: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """``loss`` on each (X, y) of ``batches``, a (len(batches),) array (the 2PRASHB voters' batches)."""
        return np.array([self.loss(params, X, y) for X, y in batches])

    def stacked_grads(self, params: ArrayLike, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``grad`` on each of m equal-sized batches, X (m, b, ...) and y (m, b): shape (m, n_params).

        RASHB's clients each take one gradient per round on b rows; a model may override this
        with one vectorised pass (the per-call overhead of 35 tiny gradients dominates otherwise).
        """
        return np.stack([self.grad(params, Xi, yi) for Xi, yi in zip(X, y)])

    def _params(self, params: ArrayLike) -> np.ndarray:
        p = np.asarray(params, dtype=np.float64)
        if p.shape != (self.n_params,):
            raise InvalidArgument(f"params must have shape ({self.n_params},), got {p.shape}")
        return p


class LeastSquares(Model):
    """Linear regression with loss 1/2 (y - w.x)^2 (equation (8), phi(x) = x; no intercept).

    Sec. IV-A takes centred features and outputs (E[y] = 0), so no bias term is needed.
    """

    def __init__(self, dim: int):
        self.dim = _check_positive_int(dim, "dim")
        self.n_params = self.dim

    def init_params(self, rng: np.random.Generator) -> np.ndarray:
        # The objective is convex, so w^(0) = 0 loses nothing; rng is part of the common interface.
        return np.zeros(self.n_params)

    def _data(self, X: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.dim or y.shape != (X.shape[0],) or X.shape[0] == 0:
            raise InvalidArgument(
                f"need X of shape (m, {self.dim}) with m >= 1 and y of shape (m,), got {X.shape}, {y.shape}"
            )
        return X, y

    def predict(self, params: ArrayLike, X: ArrayLike) -> np.ndarray:
        return np.asarray(X, dtype=np.float64) @ self._params(params)

    def loss(self, params: ArrayLike, X: ArrayLike, y: ArrayLike) -> float:
        X, y = self._data(X, y)
        r = y - X @ self._params(params)
        return float(0.5 * np.mean(r * r))

    def grad(self, params: ArrayLike, X: ArrayLike, y: ArrayLike) -> np.ndarray:
        X, y = self._data(X, y)
        r = y - X @ self._params(params)
        return -(X.T @ r) / X.shape[0]

    def mse(self, params: ArrayLike, X: ArrayLike, y: ArrayLike) -> float:
        """Mean squared error (y - w.x)^2, i.e. twice ``loss``."""
        return 2.0 * self.loss(params, X, y)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log softmax through the log-sum-exp with the row maximum subtracted (no overflow)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


class ClassificationModel(Model):
    """A model with a softmax output over ``n_classes`` and the multinomial logistic loss."""

    n_features: int
    n_classes: int
    l2: float

    @abstractmethod
    def _logits(self, params: np.ndarray, X: np.ndarray) -> np.ndarray:
        """(m, n_classes) scores."""

    def _data(self, X: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y)
        if X.ndim != 2 or X.shape[1] != self.n_features or y.shape != (X.shape[0],) or X.shape[0] == 0:
            raise InvalidArgument(
                f"need X of shape (m, {self.n_features}) with m >= 1 and y of shape (m,), got {X.shape}, {y.shape}"
            )
        if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= self.n_classes:
            raise InvalidArgument(f"labels must be integers in [0, {self.n_classes}), got dtype {y.dtype}")
        return X, y

    def _residual(self, params: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """d(mean loss)/d(logits) = (softmax - one_hot(y)) / m."""
        probs = np.exp(_log_softmax(self._logits(params, X)))
        probs[np.arange(y.shape[0]), y] -= 1.0
        return probs / y.shape[0]

    def predict_proba(self, params: ArrayLike, X: ArrayLike) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        return np.exp(_log_softmax(self._logits(self._params(params), X)))

    def predict(self, params: ArrayLike, X: ArrayLike) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        return self._logits(self._params(params), X).argmax(axis=1)

    def accuracy(self, params: ArrayLike, X: ArrayLike, y: ArrayLike) -> float:
        X, y = self._data(X, y)
        return float(np.mean(self.predict(params, X) == y))

    def _cross_entropy(self, params: np.ndarray, X: np.ndarray, y: np.ndarray) -> float:
        log_probs = _log_softmax(self._logits(params, X))
        return float(-np.mean(log_probs[np.arange(y.shape[0]), y]))

    @abstractmethod
    def _penalty(self, params: np.ndarray) -> float:
        """The regulariser added to the mean cross-entropy."""

    def loss(self, params: ArrayLike, X: ArrayLike, y: ArrayLike) -> float:
        p = self._params(params)
        X, y = self._data(X, y)
        return self._cross_entropy(p, X, y) + self._penalty(p)

    def batch_losses(self, params: ArrayLike, batches: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """All batches through one forward pass: the rows stacked, the mean cross-entropy per batch."""
        if not batches:
            return np.zeros(0)
        p = self._params(params)
        checked = [self._data(X, y) for X, y in batches]
        X = np.concatenate([b[0] for b in checked])
        y = np.concatenate([b[1] for b in checked])
        sizes = np.array([b[1].shape[0] for b in checked])
        nll = -_log_softmax(self._logits(p, X))[np.arange(y.shape[0]), y]
        return np.add.reduceat(nll, np.cumsum(sizes) - sizes) / sizes + self._penalty(p)


class LogisticRegression(ClassificationModel):
    """Multinomial logistic regression: softmax(x W + b), loss cross-entropy + (l2/2) ||W||^2.

    Layout of the flat vector: W (n_features x n_classes, row-major), then b (n_classes).
    """

    def __init__(self, n_features: int, n_classes: int, *, l2: float = 0.0):
        self.n_features = _check_positive_int(n_features, "n_features")
        self.n_classes = _check_positive_int(n_classes, "n_classes")
        if self.n_classes < 2:
            raise InvalidArgument("n_classes must be at least 2")
        self.l2 = _check_non_negative(l2, "l2")
        self.n_params = (self.n_features + 1) * self.n_classes

    def _split(self, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cut = self.n_features * self.n_classes
        return params[:cut].reshape(self.n_features, self.n_classes), params[cut:]

    def init_params(self, rng: np.random.Generator) -> np.ndarray:
        # Convex objective: zeros (uniform predictions) is a fine start; rng is part of the interface.
        return np.zeros(self.n_params)

    def _logits(self, params: np.ndarray, X: np.ndarray) -> np.ndarray:
        W, b = self._split(params)
        return X @ W + b

    def _penalty(self, params: np.ndarray) -> float:
        W, _ = self._split(params)
        return 0.5 * self.l2 * float(np.sum(W * W))

    def grad(self, params: ArrayLike, X: ArrayLike, y: ArrayLike) -> np.ndarray:
        p = self._params(params)
        X, y = self._data(X, y)
        W, _ = self._split(p)
        G = self._residual(p, X, y)
        return np.concatenate([(X.T @ G + self.l2 * W).ravel(), G.sum(axis=0)])


Activation = Literal["tanh", "relu"]


class MLP(ClassificationModel):
    """One hidden layer: softmax(act(x W1 + b1) W2 + b2), loss cross-entropy + (l2/2)(||W1||^2 + ||W2||^2).

    Layout of the flat vector: W1 (n_features x n_hidden), b1, W2 (n_hidden x n_classes), b2.
    """

    def __init__(
        self, n_features: int, n_hidden: int, n_classes: int, *, activation: Activation = "tanh", l2: float = 0.0
    ):
        self.n_features = _check_positive_int(n_features, "n_features")
        self.n_hidden = _check_positive_int(n_hidden, "n_hidden")
        self.n_classes = _check_positive_int(n_classes, "n_classes")
        if self.n_classes < 2:
            raise InvalidArgument("n_classes must be at least 2")
        if activation not in ("tanh", "relu"):
            raise InvalidArgument(f"activation must be 'tanh' or 'relu', got {activation!r}")
        self.activation: Activation = activation
        self.l2 = _check_non_negative(l2, "l2")
        d, h, k = self.n_features, self.n_hidden, self.n_classes
        self._sizes = (d * h, h, h * k, k)
        self.n_params = sum(self._sizes)

    def _split(self, params: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        W1, b1, W2, b2 = np.split(params, np.cumsum(self._sizes)[:-1])
        return (W1.reshape(self.n_features, self.n_hidden), b1, W2.reshape(self.n_hidden, self.n_classes), b2)

    def init_params(self, rng: np.random.Generator) -> np.ndarray:
        # Non-convex: random weights break the symmetry between hidden units.  The scale keeps the
        # pre-activation variance about 1 (fan-in 1 for tanh, 2 for ReLU, which zeroes half its inputs).
        gain = 2.0 if self.activation == "relu" else 1.0
        W1 = rng.normal(0.0, np.sqrt(gain / self.n_features), (self.n_features, self.n_hidden))
        W2 = rng.normal(0.0, np.sqrt(1.0 / self.n_hidden), (self.n_hidden, self.n_classes))
        return np.concatenate([W1.ravel(), np.zeros(self.n_hidden), W2.ravel(), np.zeros(self.n_classes)])

    def _hidden(self, params: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        W1, b1, _, _ = self._split(params)
        pre = X @ W1 + b1
        return pre, (np.tanh(pre) if self.activation == "tanh" else np.maximum(pre, 0.0))

    def _logits(self, params: np.ndarray, X: np.ndarray) -> np.ndarray:
        _, _, W2, b2 = self._split(params)
        return self._hidden(params, X)[1] @ W2 + b2

    def _penalty(self, params: np.ndarray) -> float:
        W1, _, W2, _ = self._split(params)
        return 0.5 * self.l2 * float(np.sum(W1 * W1) + np.sum(W2 * W2))

    def stacked_grads(self, params: ArrayLike, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Every batch's gradient in one pass: the backward pass of ``grad`` with a leading batch axis."""
        p = self._params(params)
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y)
        if X.ndim != 3 or X.shape[2] != self.n_features or y.shape != X.shape[:2] or X.shape[1] == 0:
            raise InvalidArgument(f"need X of shape (m, b, {self.n_features}) and y of shape (m, b), got {X.shape}, {y.shape}")
        self._data(X.reshape(-1, self.n_features), y.reshape(-1))  # the label checks
        W1, b1, W2, b2 = self._split(p)
        m, b = y.shape
        pre = X @ W1 + b1
        hidden = np.tanh(pre) if self.activation == "tanh" else np.maximum(pre, 0.0)
        G2 = np.exp(_log_softmax((hidden @ W2 + b2).reshape(m * b, -1))).reshape(m, b, -1)
        G2[np.arange(m)[:, None], np.arange(b)[None, :], y] -= 1.0
        G2 /= b
        back = G2 @ W2.T
        G1 = back * (1.0 - hidden * hidden) if self.activation == "tanh" else back * (pre > 0)
        return np.concatenate([
            (np.swapaxes(X, 1, 2) @ G1 + self.l2 * W1).reshape(m, -1), G1.sum(axis=1),
            (np.swapaxes(hidden, 1, 2) @ G2 + self.l2 * W2).reshape(m, -1), G2.sum(axis=1),
        ], axis=1)

    def grad(self, params: ArrayLike, X: ArrayLike, y: ArrayLike) -> np.ndarray:
        p = self._params(params)
        X, y = self._data(X, y)
        W1, _, W2, _ = self._split(p)
        pre, hidden = self._hidden(p, X)
        G2 = self._residual(p, X, y)
        back = G2 @ W2.T
        G1 = back * (1.0 - hidden * hidden) if self.activation == "tanh" else back * (pre > 0)
        return np.concatenate(
            [(X.T @ G1 + self.l2 * W1).ravel(), G1.sum(axis=0), (hidden.T @ G2 + self.l2 * W2).ravel(), G2.sum(axis=0)]
        )


def draw_batch(
    X: np.ndarray, y: np.ndarray, batch_size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``batch_size`` distinct rows of (X, y) drawn uniformly; all rows, without randomness, if there are no more."""
    m = X.shape[0]
    if batch_size >= m:
        return X, y
    rows = rng.choice(m, size=batch_size, replace=False)
    return X[rows], y[rows]


def local_sgd(
    model: Model,
    params: ArrayLike,
    X: ArrayLike,
    y: ArrayLike,
    *,
    steps: int,
    lr: float,
    batch_size: int,
    rng: np.random.Generator,
    tail_average: bool = False,
    offset: ArrayLike | None = None,
) -> np.ndarray:
    """Run ``steps`` = tau local SGD steps from ``params`` (Algorithm 1, lines 4-8); return a new vector.

    Step k draws ``batch_size`` distinct rows of (X, y) uniformly at random (line 6) and sets
    w_{k+1} = w_k - lr * grad (line 7, equation (2)); a batch size of at least the number of rows
    is full-batch gradient descent on F_i, without randomness.

    ``tail_average``: return the mean of the last ceil(tau/2) iterates w_{floor(tau/2)+1}, ..., w_tau
    instead of w_tau (Sec. IV-A, the tail averaging behind Theorem 4; for even tau this is exactly
    (2/tau) times the sum over the second half of the trajectory).

    ``offset``: evaluate each gradient at w_k + offset (Algorithm 4: the shared parameters step on the
    residual of the personalised ones, line 5, and the personalised ones on that of the shared ones,
    line 3).  The inputs are never modified.
    """
    steps = _check_positive_int(steps, "steps")
    batch_size = _check_positive_int(batch_size, "batch_size")
    lr = float(lr)
    if not (np.isfinite(lr) and lr > 0):
        raise InvalidArgument(f"lr must be a positive finite number, got {lr!r}")
    w = np.array(params, dtype=np.float64)  # a copy: the caller's vector stays as it was
    shift = np.zeros_like(w) if offset is None else np.asarray(offset, dtype=np.float64)
    if shift.shape != w.shape:
        raise InvalidArgument(f"offset must have the shape of params {w.shape}, got {shift.shape}")
    X = np.asarray(X)
    y = np.asarray(y)
    m = X.shape[0]
    if m == 0 or y.shape[0] != m:
        raise InvalidArgument(f"need at least one row and as many labels as rows, got {m} rows and {y.shape[0]} labels")
    tail_start = steps // 2
    tail_sum = np.zeros_like(w)
    for k in range(steps):
        w -= lr * model.grad(w + shift, *draw_batch(X, y, batch_size, rng))
        if tail_average and k >= tail_start:  # w is now w_{k+1}, with k + 1 > floor(tau/2)
            tail_sum += w
    return tail_sum / (steps - tail_start) if tail_average else w
