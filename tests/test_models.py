"""The numpy models: gradients against finite differences, losses against their formulas, local SGD."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import log_loss

from rfa.data import digits
from rfa.models import MLP, LeastSquares, LogisticRegression, local_sgd


def _classification_batch(rng, m=30, d=6, k=4):
    return rng.normal(size=(m, d)), rng.integers(0, k, m)


def _models_and_batches():
    rng = np.random.default_rng(0)
    X_reg = rng.normal(size=(25, 7))
    y_reg = X_reg @ rng.normal(size=7) + rng.normal(size=25)
    X_cls, y_cls = _classification_batch(rng)
    return {
        "least_squares": (LeastSquares(7), X_reg, y_reg),
        "logistic": (LogisticRegression(6, 4), X_cls, y_cls),
        "logistic_l2": (LogisticRegression(6, 4, l2=0.3), X_cls, y_cls),
        "mlp_tanh": (MLP(6, 5, 4, activation="tanh", l2=0.1), X_cls, y_cls),
        "mlp_relu": (MLP(6, 5, 4, activation="relu"), X_cls, y_cls),
    }


CASES = _models_and_batches()


def _random_params(model, rng):
    # Random, not the initialisation: zeros would hide errors in terms that vanish at zero.
    return rng.normal(scale=0.5, size=model.n_params)


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradient_matches_central_finite_differences(name):
    model, X, y = CASES[name]
    rng = np.random.default_rng(1)
    params = _random_params(model, rng)
    h = 1e-6
    eye = np.eye(model.n_params)
    numeric = np.array(
        [(model.loss(params + h * e, X, y) - model.loss(params - h * e, X, y)) / (2 * h) for e in eye]
    )
    analytic = model.grad(params, X, y)
    assert analytic.shape == (model.n_params,)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7)


def test_least_squares_loss_is_half_mean_squared_residual():
    rng = np.random.default_rng(2)
    X, w, y = rng.normal(size=(10, 3)), rng.normal(size=3), rng.normal(size=10)
    model = LeastSquares(3)
    expected = 0.5 * np.mean((y - X @ w) ** 2)
    assert model.loss(w, X, y) == pytest.approx(expected)
    assert model.mse(w, X, y) == pytest.approx(2 * expected)


@pytest.mark.parametrize("model", [LogisticRegression(6, 4), MLP(6, 5, 4)])
def test_unregularised_loss_equals_sklearn_log_loss(model):
    rng = np.random.default_rng(3)
    X, y = _classification_batch(rng)
    params = _random_params(model, rng)
    probs = model.predict_proba(params, X)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert model.loss(params, X, y) == pytest.approx(log_loss(y, probs, labels=range(4)))


def test_l2_penalty_covers_weights_but_not_biases():
    rng = np.random.default_rng(4)
    X, y = _classification_batch(rng)
    plain, ridge = LogisticRegression(6, 4), LogisticRegression(6, 4, l2=2.0)
    params = _random_params(plain, rng)
    W = params[: 6 * 4]
    assert ridge.loss(params, X, y) - plain.loss(params, X, y) == pytest.approx(0.5 * 2.0 * np.sum(W**2))


def test_softmax_stays_finite_for_huge_logits():
    rng = np.random.default_rng(5)
    X, y = _classification_batch(rng)
    model = LogisticRegression(6, 4)
    params = 1e4 * _random_params(model, rng)  # logits of order 1e4: a naive exp overflows
    assert np.isfinite(model.loss(params, X, y))
    assert np.all(np.isfinite(model.grad(params, X, y)))
    assert np.all(np.isfinite(model.predict_proba(params, X)))


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_few_sgd_steps_reduce_the_loss(name):
    model, X, y = CASES[name]
    rng = np.random.default_rng(6)
    start = model.init_params(rng)
    trained = local_sgd(model, start, X, y, steps=20, lr=0.05, batch_size=len(y), rng=rng)
    assert model.loss(trained, X, y) < model.loss(start, X, y)


def test_local_sgd_leaves_its_inputs_unchanged():
    model, X, y = CASES["mlp_tanh"]
    rng = np.random.default_rng(7)
    params = model.init_params(rng)
    copies = params.copy(), X.copy(), y.copy()
    local_sgd(model, params, X, y, steps=5, lr=0.1, batch_size=4, rng=rng)
    for before, after in zip(copies, (params, X, y)):
        np.testing.assert_array_equal(before, after)


def test_full_batch_local_sgd_is_gradient_descent_and_tail_average_is_second_half_mean():
    model, X, y = CASES["least_squares"]
    rng = np.random.default_rng(8)
    w0 = rng.normal(size=model.n_params)
    iterates = [w0]
    for _ in range(6):
        iterates.append(iterates[-1] - 0.1 * model.grad(iterates[-1], X, y))
    final = local_sgd(model, w0, X, y, steps=6, lr=0.1, batch_size=len(y), rng=rng)
    tail = local_sgd(model, w0, X, y, steps=6, lr=0.1, batch_size=len(y), rng=rng, tail_average=True)
    np.testing.assert_allclose(final, iterates[6])
    np.testing.assert_allclose(tail, np.mean(iterates[4:7], axis=0))  # w_4, w_5, w_6: the last tau/2


def test_tail_average_of_odd_steps_averages_the_last_ceil_half():
    model, X, y = CASES["least_squares"]
    w0 = np.zeros(model.n_params)
    iterates = [w0]
    for _ in range(5):
        iterates.append(iterates[-1] - 0.1 * model.grad(iterates[-1], X, y))
    tail = local_sgd(model, w0, X, y, steps=5, lr=0.1, batch_size=100, rng=np.random.default_rng(0), tail_average=True)
    np.testing.assert_allclose(tail, np.mean(iterates[3:6], axis=0))


def test_offset_evaluates_gradients_at_the_shifted_point():
    # Algorithm 4: stepping w on the residual of u is plain descent on w + u, shifted back by u.
    model, X, y = CASES["logistic_l2"]
    rng = np.random.default_rng(9)
    w, u = rng.normal(size=model.n_params), rng.normal(size=model.n_params)
    kwargs = dict(steps=4, lr=0.2, batch_size=len(y), rng=rng)
    shifted = local_sgd(model, w, X, y, offset=u, **kwargs)
    np.testing.assert_allclose(shifted, local_sgd(model, w + u, X, y, **kwargs) - u)


def test_same_seed_gives_same_minibatch_trajectory():
    model, X, y = CASES["mlp_relu"]
    params = model.init_params(np.random.default_rng(10))
    runs = [
        local_sgd(model, params, X, y, steps=10, lr=0.1, batch_size=5, rng=np.random.default_rng(11)) for _ in range(2)
    ]
    np.testing.assert_array_equal(runs[0], runs[1])


def test_mlp_initialisation_breaks_symmetry_and_depends_on_the_seed():
    model = MLP(6, 5, 4)
    a, b = model.init_params(np.random.default_rng(0)), model.init_params(np.random.default_rng(1))
    W1 = a[: 6 * 5].reshape(6, 5)
    assert len({tuple(col) for col in W1.T}) == 5  # hidden units start different
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("bad", [dict(steps=0), dict(lr=0.0), dict(batch_size=0), dict(offset=np.zeros(3))])
def test_local_sgd_rejects_invalid_settings(bad):
    model, X, y = CASES["least_squares"]
    kwargs = dict(steps=2, lr=0.1, batch_size=4, rng=np.random.default_rng(0)) | bad
    with pytest.raises(ValueError):
        local_sgd(model, np.zeros(model.n_params), X, y, **kwargs)


def test_models_reject_wrong_parameter_length_and_labels():
    model = LogisticRegression(6, 4)
    X, y = _classification_batch(np.random.default_rng(12))
    with pytest.raises(ValueError):
        model.loss(np.zeros(model.n_params + 1), X, y)
    with pytest.raises(ValueError):
        model.loss(np.zeros(model.n_params), X, y + 4)


def _train_centrally(model, data, rng, steps):
    X, y = data.pooled()
    params = local_sgd(model, model.init_params(rng), X, y, steps=steps, lr=0.5, batch_size=64, rng=rng)
    return model.accuracy(params, data.X_test, data.y_test)


def test_logistic_regression_trained_centrally_on_digits_exceeds_90_percent():
    rng = np.random.default_rng(13)
    data = digits(5, rng=rng)
    assert _train_centrally(LogisticRegression(64, 10, l2=1e-4), data, rng, steps=1500) > 0.90


def test_mlp_trained_centrally_on_digits_exceeds_90_percent():
    rng = np.random.default_rng(14)
    data = digits(5, rng=rng)
    assert _train_centrally(MLP(64, 32, 10, activation="relu"), data, rng, steps=1500) > 0.90


def test_tail_averaged_sgd_approaches_the_least_squares_solution():
    rng = np.random.default_rng(15)
    X = rng.normal(size=(400, 5))
    w_true = rng.normal(size=5)
    y = X @ w_true + 0.1 * rng.normal(size=400)
    model = LeastSquares(5)
    w_hat = local_sgd(
        model, model.init_params(rng), X, y, steps=2000, lr=0.02, batch_size=1, rng=rng, tail_average=True
    )
    w_ls = np.linalg.lstsq(X, y, rcond=None)[0]
    # The tail average removes most of the SGD noise: the gap to the empirical minimiser is far below
    # the scale of the parameters (||w_true|| ~ 2) and of the noise level 0.1.
    assert np.linalg.norm(w_hat - w_ls) < 0.02


@pytest.mark.parametrize("model", [LogisticRegression(5, 3, l2=0.1), MLP(5, 4, 3, l2=0.1)], ids=["logreg", "mlp"])
def test_batch_losses_equal_the_loss_of_each_batch(model):
    rng = np.random.default_rng(0)
    params = model.init_params(rng) + rng.normal(size=model.n_params)
    batches = [(rng.normal(size=(k, 5)), rng.integers(0, 3, size=k)) for k in (1, 4, 7)]
    expected = [model.loss(params, X, y) for X, y in batches]
    np.testing.assert_allclose(model.batch_losses(params, batches), expected, rtol=1e-12)
    np.testing.assert_allclose(LeastSquares(5).batch_losses(np.ones(5), [(X, y * 1.0) for X, y in batches]),
                               [LeastSquares(5).loss(np.ones(5), X, y * 1.0) for X, y in batches])


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_mlp_stacked_grads_equal_each_batch_own_gradient(activation):
    rng = np.random.default_rng(4)
    model = MLP(6, 5, 3, activation=activation, l2=0.01)
    w = model.init_params(rng)
    X, y = rng.normal(size=(7, 3, 6)), rng.integers(0, 3, size=(7, 3))
    stacked = model.stacked_grads(w, X, y)
    assert stacked.shape == (7, model.n_params)
    assert np.allclose(stacked, [model.grad(w, Xi, yi) for Xi, yi in zip(X, y)], rtol=1e-12, atol=1e-14)
    # the base class loops over grad: same answer for a model without its own vectorised pass
    lr = LogisticRegression(6, 3)
    assert np.allclose(lr.stacked_grads(np.ones(lr.n_params), X, y), [lr.grad(np.ones(lr.n_params), a, b) for a, b in zip(X, y)])
