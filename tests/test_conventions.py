"""Conventions at ties, kinks and NaN (docs/conventions.md), on both backends and both float
dtypes, against PyTorch where it is installed and against the written-out rule otherwise."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc

BACKENDS = ["numpy", "llvm"]
# Importing torch takes seconds: its comparisons run in the full tier only (the fast tier
# checks the same conventions against the rules written out).
against_torch = pytest.mark.slow
DTYPES = ["float32", "float64"]


def run(inputs, outputs, arrays, backend):
    return gc.function(inputs, outputs, backend=backend)(*arrays)


def grads_of(fn, values, dtype, backend, weights=None):
    """gc.grad of sum(fn(*xs) * weights) at `values`, one array per argument."""
    xs = [gc.placeholder(np.shape(v), dtype, name=f"x{i}") for i, v in enumerate(values)]
    y = fn(*xs)
    w = np.ones(y.shape, dtype) if weights is None else weights.astype(dtype)
    gs = gc.grad(gc.sum(y * gc.constant(w)), xs)
    return run(xs, gs, [np.asarray(v, dtype) for v in values], backend)


def torch_grads(fn, values, dtype, weights=None):
    torch = pytest.importorskip("torch")
    ts = [torch.tensor(np.asarray(v, dtype), requires_grad=True) for v in values]
    y = fn(*ts)
    w = torch.ones_like(y) if weights is None else torch.tensor(weights.astype(dtype))
    (y * w).sum().backward()
    return [t.grad.numpy() for t in ts]


# ---- maximum / minimum: half the cotangent to each tied argument ---------------------------

A = np.array([1.0, 2.0, -3.0, 0.0, 5.0, -0.0])
B = np.array([1.0, 1.0, -1.0, 0.0, 5.0, 0.0])  # ties at 0, 3, 4 and 5 (-0.0 == 0.0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["maximum", "minimum"])
def test_maximum_minimum_split_ties_evenly(name, dtype, backend):
    got = grads_of(getattr(gc, name), [A, B], dtype, backend)
    tie = A == B
    first = np.where(tie, 0.5, (A > B) if name == "maximum" else (A < B))
    np.testing.assert_array_equal(got[0], first)
    np.testing.assert_array_equal(got[1], np.where(tie, 0.5, 1.0 - first))


@against_torch
@pytest.mark.parametrize("name", ["maximum", "minimum"])
def test_maximum_minimum_ties_match_torch(name):
    torch = pytest.importorskip("torch")
    got = grads_of(getattr(gc, name), [A, B], "float64", "numpy")
    want = torch_grads(getattr(torch, name), [A, B], "float64")
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


# ---- relu, abs, sign, leaky_relu at 0 ------------------------------------------------------

KINK = np.array([-2.0, -0.0, 0.0, 3.0])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_abs_sign_leaky_relu_derivatives_at_zero(dtype, backend):
    cases = {"relu": (gc.relu, [0, 0, 0, 1]), "abs": (gc.abs, [-1, 0, 0, 1]),
             "sign": (gc.sign, [0, 0, 0, 0]),
             "leaky_relu": (lambda t: gc.nn.leaky_relu(t, slope=0.2), [0.2, 0.2, 0.2, 1])}
    for name, (fn, want) in cases.items():
        (got,) = grads_of(fn, [KINK], dtype, backend)
        np.testing.assert_allclose(got, np.asarray(want, dtype), rtol=1e-6, err_msg=name)


@against_torch
def test_kink_derivatives_match_torch():
    torch = pytest.importorskip("torch")
    pairs = [(gc.relu, torch.relu), (gc.abs, torch.abs), (gc.sign, torch.sign),
             (lambda t: gc.nn.leaky_relu(t, slope=0.2),
              lambda t: torch.nn.functional.leaky_relu(t, 0.2))]
    for ours, theirs in pairs:
        (got,) = grads_of(ours, [KINK], "float64", "numpy")
        (want,) = torch_grads(theirs, [KINK], "float64")
        np.testing.assert_array_equal(got, want)


def test_leaky_relu_value_keeps_zero_and_nan():
    x = gc.placeholder((None,), "float64")
    got = run([x], gc.nn.leaky_relu(x, slope=0.1), [np.array([0.0, np.nan, -1.0])], "numpy")
    np.testing.assert_array_equal(got, [0.0, np.nan, -0.1])


# ---- max pooling: the first maximal entry of each window -----------------------------------

def _pool_input(dtype: str) -> np.ndarray:
    rng = np.random.default_rng(3)
    x = np.round(rng.uniform(-1, 1, (2, 2, 5, 5)) * 1.5).astype(dtype)  # many ties
    x[0, 0, 0, 0] = np.nan
    x[1, 1, 2, 3] = np.nan
    return x


def _pool_reference(x: np.ndarray, size: int, stride: int, w: np.ndarray):
    """Value and gradient of sum(max_pool2d(x) * w), the cotangent to each window's first
    maximal (or first NaN) entry in row-major order."""
    n, c, h, wd = x.shape
    oh, ow = (h - size) // stride + 1, (wd - size) // stride + 1
    out = np.zeros((n, c, oh, ow), x.dtype)
    grad = np.zeros_like(x)
    for idx in np.ndindex(n, c, oh, ow):
        i, j = idx[2] * stride, idx[3] * stride
        window = x[idx[0], idx[1], i:i + size, j:j + size].ravel()
        k = int(np.argmax(window))  # numpy's argmax: the first maximum, or the first NaN
        out[idx] = window[k]
        grad[idx[0], idx[1], i + k // size, j + k % size] += w[idx]
    return out, grad


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size,stride", [(2, 2), (3, 2)])
def test_max_pool_gives_the_cotangent_to_the_first_maximum(size, stride, dtype, backend):
    xv = _pool_input(dtype)
    x = gc.placeholder((None, 2, 5, 5), dtype, name="x")
    y = gc.nn.max_pool2d(x, size, stride)
    w = np.random.default_rng(4).normal(size=(2, 2) + y.shape[2:]).astype(dtype)
    g = gc.grad(gc.sum(y * gc.constant(w)), x)
    out, grad = run([x], [y, g], [xv], backend)
    want_out, want_grad = _pool_reference(xv, size, stride, w)
    np.testing.assert_array_equal(out, want_out)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-6)


@against_torch
@pytest.mark.parametrize("size,stride", [(2, 2), (3, 2)])
def test_max_pool_matches_torch(size, stride):
    torch = pytest.importorskip("torch")
    xv = _pool_input("float64")
    x = gc.placeholder((None, 2, 5, 5), "float64", name="x")
    y = gc.nn.max_pool2d(x, size, stride)
    w = np.random.default_rng(5).normal(size=(2, 2) + y.shape[2:])
    out, grad = run([x], [y, gc.grad(gc.sum(y * gc.constant(w)), x)], [xv], "numpy")
    tx = torch.tensor(xv, requires_grad=True)
    ty = torch.nn.functional.max_pool2d(tx, size, stride)
    (ty * torch.tensor(w)).sum().backward()
    np.testing.assert_array_equal(out, ty.detach().numpy())
    np.testing.assert_allclose(grad, tx.grad.numpy(), rtol=1e-12)


# ---- x ** y where it is locally constant ---------------------------------------------------

POW_X = np.array([0.0, 0.0, 0.0, 0.0, 2.0, 0.0, 1.0, 3.0])
POW_Y = np.array([0.0, 1.0, 2.5, -1.0, 0.0, 0.5, 0.0, 2.0])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_pow_derivatives_are_zero_where_pow_is_locally_constant(dtype, backend):
    gx, gy = grads_of(lambda a, b: a ** b, [POW_X, POW_Y], dtype, backend)
    # d/dx x**0 = 0 (also at x = 0); d/dy 0**y = 0 for y >= 0; d/dy 0**-1 = -inf (0**-1 = inf)
    np.testing.assert_array_equal(gx[[0, 4, 6]], [0, 0, 0])
    np.testing.assert_array_equal(gy[[0, 1, 2, 5]], [0, 0, 0, 0])
    assert gy[3] == -np.inf and gx[3] == -np.inf and gx[5] == np.inf
    np.testing.assert_allclose(gx[[1, 7]], [1.0, 6.0], rtol=1e-6)
    np.testing.assert_allclose(gy[[4, 7]], [np.log(2.0), 9 * np.log(3.0)], rtol=1e-6)


@against_torch
def test_pow_derivatives_match_torch():
    got = grads_of(lambda a, b: a ** b, [POW_X, POW_Y], "float64", "numpy")
    want = torch_grads(lambda a, b: a ** b, [POW_X, POW_Y], "float64")
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-12)


def test_pow_with_a_constant_exponent_zero_has_zero_derivative():
    x = gc.placeholder((None,), "float64")
    g = gc.grad(gc.sum(x ** 0.0), x)
    np.testing.assert_array_equal(run([x], g, [np.array([0.0, 2.0])], "numpy"), [0.0, 0.0])


# ---- domain edges and NaN ------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_log_and_sqrt_at_zero_and_below(dtype, backend):
    x = gc.placeholder((None,), dtype, name="x")
    outs = [gc.log(x), gc.sqrt(x), gc.grad(gc.sum(gc.log(x)), x),
            gc.grad(gc.sum(gc.sqrt(x)), x)]
    log, sqrt, dlog, dsqrt = run([x], outs, [np.array([0.0, -4.0, 4.0], dtype)], backend)
    np.testing.assert_array_equal(log[:2], [-np.inf, np.nan])
    np.testing.assert_array_equal(sqrt[:2], [0.0, np.nan])
    np.testing.assert_array_equal(dlog[:2], [np.inf, -0.25])
    np.testing.assert_array_equal(dsqrt[:2], [np.inf, np.nan])
    np.testing.assert_allclose([log[2], sqrt[2], dlog[2], dsqrt[2]],
                               [np.log(4.0), 2.0, 0.25, 0.25], rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_through_relu_and_maximum(dtype, backend):
    x = gc.placeholder((None,), dtype, name="x")
    v = np.array([np.nan, -0.0, 1.0], dtype)
    outs = [gc.relu(x), gc.maximum(x, 0.5), gc.minimum(x, 0.5), gc.abs(x), gc.sign(x),
            gc.grad(gc.sum(gc.relu(x)), x), gc.grad(gc.sum(gc.maximum(x, 0.5)), x),
            gc.grad(gc.sum(gc.abs(x)), x)]
    relu, mx, mn, ab, sg, drelu, dmax, dabs = run([x], outs, [v], backend)
    np.testing.assert_array_equal(relu, [np.nan, 0.0, 1.0])
    assert not np.signbit(relu[1])  # relu(-0.0) is +0.0
    np.testing.assert_array_equal(mx, [np.nan, 0.5, 1.0])
    np.testing.assert_array_equal(mn, [np.nan, -0.0, 0.5])
    np.testing.assert_array_equal(ab, [np.nan, 0.0, 1.0])
    np.testing.assert_array_equal(sg, [np.nan, 0.0, 1.0])
    np.testing.assert_array_equal(drelu, [0.0, 0.0, 1.0])
    np.testing.assert_array_equal(dmax, [0.0, 0.0, 1.0])
    np.testing.assert_array_equal(dabs, [np.nan, 0.0, 1.0])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_inputs_of_reductions(dtype, backend):
    x = gc.placeholder((2, 4), dtype, name="x")
    v = np.array([[1.0, np.nan, 3.0, np.nan], [1.0, 3.0, 3.0, 0.0]], dtype)
    outs = [gc.max(x, axis=1), gc.min(x, axis=1), gc.sum(x, axis=1), gc.argmax(x, axis=1),
            gc.grad(gc.sum(gc.max(x, axis=1)), x)]
    mx, mn, total, arg, dmax = run([x], outs, [v], backend)
    np.testing.assert_array_equal(mx, [np.nan, 3.0])
    np.testing.assert_array_equal(mn, [np.nan, 0.0])
    np.testing.assert_array_equal(total, [np.nan, 7.0])
    np.testing.assert_array_equal(arg, [1, 1])  # the first NaN; the first of tied maxima
    np.testing.assert_array_equal(dmax, [[0, 0, 0, 0], [0, 0.5, 0.5, 0]])


@pytest.mark.parametrize("backend", BACKENDS)
def test_where_keeps_nan_of_the_untaken_branch_out_of_the_value(backend):
    x = gc.placeholder((None,), "float64", name="x")
    naive = gc.where(x > 0, gc.sqrt(x), 0.0)
    guarded = gc.where(x > 0, gc.sqrt(gc.where(x > 0, x, 1.0)), 0.0)
    outs = [naive, gc.grad(gc.sum(naive), x), gc.grad(gc.sum(guarded), x)]
    value, dnaive, dguarded = run([x], outs, [np.array([-1.0, 4.0])], backend)
    np.testing.assert_array_equal(value, [0.0, 2.0])
    np.testing.assert_array_equal(dnaive, [np.nan, 0.25])  # 0 * sqrt'(-1): documented trap
    np.testing.assert_array_equal(dguarded, [0.0, 0.25])


@pytest.mark.parametrize("backend", BACKENDS)
def test_relu_gradient_selects_the_cotangent(backend):
    """Where relu is flat its derivative selects: a nan or inf cotangent there gives 0, as
    PyTorch's threshold_backward does (a product 0 * nan would give nan)."""
    x = gc.placeholder((None,), "float64", name="x")
    w = gc.placeholder((None,), "float64", name="w")
    (dx,) = [gc.grad(gc.sum(gc.relu(x) * w), x)]
    got = run([x, w], [dx], [np.array([-1.0, 0.0, 2.0]), np.array([np.nan, np.inf, 3.0])],
              backend)[0]
    np.testing.assert_array_equal(got, [0.0, 0.0, 3.0])
    torch = pytest.importorskip("torch")
    xt = torch.tensor([-1.0, 0.0, 2.0], dtype=torch.float64, requires_grad=True)
    (torch.relu(xt) * torch.tensor([np.nan, np.inf, 3.0], dtype=torch.float64)).sum().backward()
    np.testing.assert_array_equal(xt.grad.numpy(), got)
