"""Numerics: float32 reductions over 10**7 elements against a float64 reference, and the
softmax family, cross-entropies, softplus and log-sigmoid (values and gradients) finite and
accurate for extreme inputs (+-1e4, +-80) in float32 and float64, on both CPU backends."""
from __future__ import annotations

import functools

import numpy as np
import pytest

import graphc as gc

BACKENDS = ("numpy", "llvm")
N = 10 ** 7


# ---- float32 sums and means over 10**7 elements ------------------------------------------

@functools.lru_cache(maxsize=None)
def big_vector(kind: str) -> np.ndarray:
    rng = np.random.default_rng(0)
    if kind == "uniform01":
        v = rng.uniform(0, 1, N)
    elif kind == "mixed_sign":  # about a quarter negative; the sum is well conditioned
        v = rng.uniform(-1, 3, N)
    elif kind == "mixed_sign_zero_mean":  # |sum| ~ 1e3 while sum(|x|) ~ 5e6: ill-conditioned
        rng.uniform(0, 1, N)  # (the draw the measurements were taken with)
        v = rng.uniform(-1, 1, N)
    else:
        raise ValueError(kind)
    return v.astype(np.float32)


@functools.lru_cache(maxsize=None)
def reducer(backend: str):
    x = gc.placeholder((None,), "float32", name="x")
    m = gc.placeholder((None, 1000), "float32", name="m")
    return (gc.function([x], [gc.sum(x), gc.mean(x), gc.sum(x, axis=0, keepdims=True)],
                        backend=backend),
            gc.function([m], [gc.sum(m, axis=0), gc.mean(m, axis=0)], backend=backend))


def rel(got, ref):
    return float(np.max(np.abs(np.asarray(got, np.float64) - ref) / np.abs(ref)))


@pytest.mark.parametrize("kind", ["uniform01", "mixed_sign"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_sum_and_mean_of_1e7_elements(backend, kind):
    v = big_vector(kind)
    ref = v.astype(np.float64).sum()
    total, mean, keep = reducer(backend)[0](v)
    assert total.dtype == mean.dtype == np.float32 and keep.shape == (1,)
    assert rel(total, ref) <= 1e-5, rel(total, ref)
    assert rel(mean, ref / N) <= 1e-5, rel(mean, ref / N)
    assert rel(keep, ref) <= 1e-5
    # down the columns of a (10**4, 1000) matrix: 10**4 terms each
    cols, col_means = reducer(backend)[1](v.reshape(-1, 1000))
    ref_cols = v.reshape(-1, 1000).astype(np.float64).sum(axis=0)
    assert rel(cols, ref_cols) <= 1e-5, rel(cols, ref_cols)
    assert rel(col_means, ref_cols / 10 ** 4) <= 1e-5


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_sum_of_1e7_zero_mean_elements_error_bound(backend):
    """Zero-mean data: the error measured against sum(|x|), the condition-aware bound of a
    good summation (float32 eps is 6e-8; both backends do far better than n * eps)."""
    v = big_vector("mixed_sign_zero_mean")
    total = reducer(backend)[0](v)[0]
    error = abs(float(total) - v.astype(np.float64).sum())
    assert error <= 1e-7 * np.abs(v).sum(dtype=np.float64), error


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_sum_of_1e7_zero_mean_elements_relative_to_the_sum(backend):
    v = big_vector("mixed_sign_zero_mean")
    ref = v.astype(np.float64).sum()
    total, mean, _ = reducer(backend)[0](v)
    assert rel(total, ref) <= 1e-5, rel(total, ref)
    assert rel(mean, ref / N) <= 1e-5, rel(mean, ref / N)


# ---- extreme inputs: the softmax family and the logistic losses ------------------------------

EXTREME = np.array([[1e4, -1e4, 0.25, 80.0, -80.0],
                    [-1e4, -1e4, -1e4, -1e4, -1e4],
                    [1e4, 1e4, 1e4, 1e4, 1e4],
                    [80.0, 80.0, -80.0, 1e4 - 1, 3.0],
                    [-80.0, -80.0, -80.0, -80.0, 80.0],
                    [0.5, -0.25, 1.0, 2.0, -3.0]])
LABELS = np.array([1, 0, 4, 3, 2, 0])
WEIGHTS = np.random.default_rng(1).uniform(-1, 1, EXTREME.shape)  # cotangents for gradients


def _lse(x):
    m = x.max(axis=-1, keepdims=True)
    return m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def _sigmoid(x):
    return np.where(x >= 0, 1 / (1 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) /
                    (1 + np.exp(-np.abs(x))))


def _softplus(x):
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def references():
    """name -> (build(x, w, y, p) -> (value, gradient wrt x), value and gradient in float64)."""
    x, w, y = EXTREME, WEIGHTS, LABELS
    logp = x - _lse(x)
    s = np.exp(logp)
    B = x.shape[0]
    onehot = np.eye(5)[y]
    probs = np.abs(WEIGHTS) / np.abs(WEIGHTS).sum(axis=1, keepdims=True)
    targets = (WEIGHTS > 0).astype(np.float64)
    sig = _sigmoid(x)
    return {
        "softmax": (lambda x, w, y, p, t: gc.softmax(x), s,
                    s * (w - (w * s).sum(axis=1, keepdims=True))),
        "log_softmax": (lambda x, w, y, p, t: gc.log_softmax(x), logp,
                        w - s * w.sum(axis=1, keepdims=True)),
        "logsumexp": (lambda x, w, y, p, t: gc.logsumexp(x, axis=1), _lse(x)[:, 0],
                      w[:, :1] * s),
        "log_of_softmax": (lambda x, w, y, p, t: gc.log(gc.softmax(x)), logp,
                           w - s * w.sum(axis=1, keepdims=True)),
        "cross_entropy_labels": (lambda x, w, y, p, t: gc.nn.cross_entropy(x, y),
                                 -(logp * onehot).sum() / B, (s - onehot) / B),
        "cross_entropy_probabilities": (lambda x, w, y, p, t: gc.nn.cross_entropy(x, p),
                                        -(logp * probs).sum() / B, (s - probs) / B),
        "bce_with_logits": (lambda x, w, y, p, t: gc.nn.binary_cross_entropy_with_logits(x, t),
                            np.mean(np.maximum(x, 0) - x * targets + np.log1p(np.exp(-abs(x)))),
                            (sig - targets) / x.size),
        "softplus": (lambda x, w, y, p, t: gc.softplus(x), _softplus(x), w * sig),
        "log_sigmoid": (lambda x, w, y, p, t: gc.log(gc.sigmoid(x)), -_softplus(-x),
                        w * (1 - sig)),
        "log_one_plus_exp": (lambda x, w, y, p, t: gc.log(1 + gc.exp(x)), _softplus(x),
                             w * sig),
        "sigmoid": (lambda x, w, y, p, t: gc.sigmoid(x), sig, w * sig * (1 - sig)),
        "tanh": (lambda x, w, y, p, t: gc.tanh(x), np.tanh(x), w * (1 - np.tanh(x) ** 2)),
    }, probs, targets


REFS, PROBS, TARGETS = references()


@pytest.mark.parametrize("name", list(REFS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_extreme_inputs_values_and_gradients(backend, dtype, name):
    build, ref_value, ref_grad = REFS[name]
    x = gc.placeholder(EXTREME.shape, dtype, name="x")
    w = gc.placeholder(EXTREME.shape, dtype, name="w")
    y = gc.placeholder(LABELS.shape, "int64", name="y")
    p = gc.placeholder(EXTREME.shape, dtype, name="p")
    t = gc.placeholder(EXTREME.shape, dtype, name="t")
    out = build(x, w, y, p, t)
    cotangent = w if out.shape == EXTREME.shape else (w[:, 0] if out.ndim == 1 else 1.0)
    loss = gc.sum(out * cotangent)
    f = gc.function([x, w, y, p, t], [out, gc.grad(loss, x)], backend=backend)
    value, grad = f(EXTREME, WEIGHTS, LABELS, PROBS, TARGETS)
    assert value.dtype == grad.dtype == np.dtype(dtype)
    assert np.isfinite(value).all(), value
    assert np.isfinite(grad).all(), grad
    # float64: rows of +-1e4 lose ~1e4 * eps to the max-subtraction (in the reference too)
    rtol, atol = (2e-5, 1e-6) if dtype == "float32" else (1e-9, 1e-12)
    np.testing.assert_allclose(value, ref_value, rtol=rtol,
                               atol=atol * max(1.0, float(np.abs(ref_value).max())))
    np.testing.assert_allclose(grad, ref_grad, rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_extreme_inputs_in_a_training_step_stay_finite(backend, dtype):
    """An MLP-style step whose logits reach +-1e4: the loss and the updated weights are
    finite (no inf - inf, no exp overflow in the softmax or its gradient)."""
    x = gc.placeholder((None, 5), dtype, name="x")
    y = gc.placeholder((None,), "int64", name="y")
    W = gc.parameter(np.eye(5, dtype=dtype), name="W_extreme")
    b = gc.parameter(np.zeros(5, dtype), name="b_extreme")
    logits = x @ W + b
    loss = gc.nn.cross_entropy(logits, y) + gc.nn.binary_cross_entropy_with_logits(
        logits, gc.one_hot(y, 5, dtype=dtype))
    dW, db = gc.grad(loss, [W, b])
    step = gc.function([x, y], loss, updates={W: W - 1e-3 * dW, b: b - 1e-3 * db},
                       backend=backend)
    for _ in range(3):
        value = step(EXTREME.astype(dtype), LABELS)
        assert np.isfinite(value), value
    assert np.isfinite(W.value).all() and np.isfinite(b.value).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_exp_overflow_is_inf_not_nan(backend):
    """Outside the stabilized forms, overflow behaves as IEEE says: exp(1e4) is inf,
    exp(-1e4) is 0, sigmoid saturates to exactly 0 and 1."""
    x = gc.placeholder((4,), "float32", name="x")
    f = gc.function([x], [gc.exp(x), gc.sigmoid(x)], backend=backend)
    e, s = f(np.array([1e4, -1e4, 88.0, 89.0], np.float32))
    assert e[0] == np.inf and e[1] == 0 and np.isfinite(e[2]) and e[3] == np.inf
    assert s[0] == 1 and s[1] == 0 and not np.isnan(s).any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_values_at_zero_logits(backend):
    """At logits exactly 0 (a zero-initialised model) the values are log 2 and log 5."""
    z = gc.placeholder((2, 5), "float64", name="z")
    y = gc.placeholder((2,), "int64", name="y")
    t = gc.placeholder((2, 5), "float64", name="t")
    f = gc.function([z, y, t], [gc.nn.binary_cross_entropy_with_logits(z, t),
                                gc.nn.cross_entropy(z, y), gc.softplus(z)], backend=backend)
    bce, ce, sp = f(np.zeros((2, 5)), np.array([0, 4]), np.eye(5)[[0, 4]])
    np.testing.assert_allclose([bce, ce, sp[0, 0]], [np.log(2), np.log(5), np.log(2)],
                               rtol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bce_with_logits_gradient_at_zero_logits(backend):
    z = gc.placeholder((4,), "float64", name="z")
    t = gc.placeholder((4,), "float64", name="t")
    f = gc.function([z, t], gc.grad(gc.nn.binary_cross_entropy_with_logits(z, t), z),
                    backend=backend)
    targets = np.array([0.0, 1.0, 0.5, 1.0])
    np.testing.assert_allclose(f(np.zeros(4), targets), (0.5 - targets) / 4, atol=1e-15)
