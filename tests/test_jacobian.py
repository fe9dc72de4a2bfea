"""gc.jacobian: against central differences and torch, shapes, graph size, errors."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.node import toposort

RNG = np.random.default_rng(2)
M = RNG.standard_normal((3, 4))


def _fd_jacobian(f, x, eps=1e-6):
    """Central differences (f(x + eps e_i) - f(x - eps e_i)) / 2 eps, shaped y + x."""
    y = f(x)
    out = np.zeros(y.shape + x.shape)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = eps
        out[(...,) + i] = (f(x + e) - f(x - e)) / (2 * eps)
    return out


FUNCTIONS = [
    ("elementwise", lambda x: gc.tanh(x) * x.sum(), (4,)),
    ("matmul", lambda x: gc.sigmoid(x @ gc.constant(M)), (2, 3)),
    ("softmax", lambda x: gc.softmax(x, axis=-1), (2, 3)),
    ("reductions", lambda x: gc.stack([x.max(axis=0), x.mean(axis=0)]) ** 2, (3, 2)),
    ("slices_concat", lambda x: gc.concatenate([x[1:], gc.exp(x[:2])]), (4,)),
    ("gather", lambda x: gc.take(x, gc.constant(np.array([2, 0, 2])), axis=0) * x[1], (3,)),
]


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
@pytest.mark.parametrize("name,fn,shape", FUNCTIONS, ids=[f[0] for f in FUNCTIONS])
def test_against_finite_differences(name, fn, shape, backend):
    x = gc.placeholder(shape, "float64")
    y = fn(x)
    jac = gc.jacobian(y, x)
    assert jac.shape == y.shape + x.shape and jac.dtype == np.float64
    f = gc.function([x], [y, jac], backend=backend)
    x0 = RNG.standard_normal(shape)
    np.testing.assert_allclose(f(x0)[1], _fd_jacobian(lambda v: f(v)[0], x0),
                               rtol=1e-6, atol=1e-8)


def test_float32():
    x = gc.placeholder((3,), "float32")
    jac = gc.jacobian(gc.sin(x) * x, x)
    assert jac.dtype == np.float32
    x0 = RNG.standard_normal(3).astype(np.float32)
    out = gc.function([x], jac)(x0)
    np.testing.assert_allclose(out, np.diag(np.cos(x0) * x0 + np.sin(x0)), rtol=1e-5,
                               atol=1e-6)


@pytest.mark.slow  # (importing torch)
def test_against_torch():
    torch = pytest.importorskip("torch")
    a = gc.placeholder((2, 3), "float64")
    b = gc.placeholder((3,), "float64")
    y = gc.log_softmax(a * b, axis=0) @ gc.exp(b)
    ja, jb = gc.jacobian(y, [a, b])
    a0, b0 = RNG.standard_normal((2, 3)), RNG.standard_normal(3)
    got = gc.function([a, b], [ja, jb], backend="numpy")(a0, b0)
    ref = torch.autograd.functional.jacobian(
        lambda s, t: torch.log_softmax(s * t, dim=0) @ torch.exp(t),
        (torch.tensor(a0), torch.tensor(b0)))
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r.numpy(), rtol=1e-12, atol=1e-12)


def test_graph_does_not_grow_with_y_size():
    def size(n):
        x = gc.placeholder((n,), "float64")
        return len(toposort([gc.jacobian(gc.softmax(gc.tanh(x) * 3), x).node]))

    assert size(3) == size(40)


def test_disconnected_and_empty():
    x = gc.placeholder((2,), "float64")
    z = gc.placeholder((3,), "float64")
    jz = gc.jacobian(x * 2, z)
    assert jz.shape == (2, 3)
    np.testing.assert_array_equal(gc.function([z], jz, backend="numpy")(np.ones(3)),
                                  np.zeros((2, 3)))
    empty = gc.placeholder((0,), "float64")
    assert gc.jacobian(empty * 2, x).shape == (0, 2)


def test_unknown_x_size():
    x = gc.placeholder((None,), "float64")
    y = gc.stack([gc.tanh(x).sum(), (x * x).sum()])
    jac = gc.jacobian(y, x)
    assert jac.shape == (2, None)
    f = gc.function([x], jac, backend="numpy")
    for n in (1, 4):
        x0 = RNG.standard_normal(n)
        np.testing.assert_allclose(f(x0), [1 / np.cosh(x0) ** 2, 2 * x0], rtol=1e-12)


def test_errors():
    x = gc.placeholder((2,), "float64")
    with pytest.raises(TypeError, match="y must be a Tensor"):
        gc.jacobian(np.ones(2), x)
    with pytest.raises(TypeError, match=r"x\[0\]"):
        gc.jacobian(x * 2, np.ones(2))
    with pytest.raises(gc.GradientError, match="float"):
        gc.jacobian(gc.argmax(x, axis=0), x)
    with pytest.raises(gc.GradientError, match="static shape"):
        gc.jacobian(gc.placeholder((None,), "float64") * 2, x)
    with pytest.raises(gc.GradientError, match="float inputs"):
        gc.jacobian(x * 2, gc.placeholder((2,), "int64"))
