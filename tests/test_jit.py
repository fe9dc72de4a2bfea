"""gc.jit: values against numpy, retracing by signature, structures, errors."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc

BACKENDS = ["numpy", "llvm"]
DTYPES = [np.float32, np.float64]
RNG = np.random.default_rng(0)


def _tol(dtype):
    return {"rtol": 1e-5, "atol": 1e-5} if dtype == np.float32 else {"rtol": 1e-12, "atol": 0}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_values_match_numpy(backend, dtype):
    @gc.jit(backend=backend)
    def f(x, w):
        return gc.softmax(gc.tanh(x) @ w, axis=-1)

    x = RNG.standard_normal((4, 3)).astype(dtype)
    w = RNG.standard_normal((3, 5)).astype(dtype)
    z = np.tanh(x) @ w
    ref = np.exp(z - z.max(-1, keepdims=True))
    ref /= ref.sum(-1, keepdims=True)
    out = f(x, w)
    assert isinstance(out, np.ndarray) and out.dtype == dtype and out.shape == (4, 5)
    np.testing.assert_allclose(out, ref, **_tol(dtype))


def test_traces_once_per_signature():
    calls = []

    @gc.jit(backend="numpy")
    def f(x):
        calls.append(x.shape)
        return x * 2

    a = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(f(a), a * 2)
    np.testing.assert_array_equal(f(a + 1), (a + 1) * 2)
    assert f.traces == 1 and calls == [(2, 3)]
    f(np.ones((5, 3), np.float32))  # a new shape traces again (exact shapes, like JAX)
    f(np.ones((2, 3), np.float64))  # and so does a new dtype
    assert f.traces == 3 and calls == [(2, 3), (5, 3), (2, 3)]
    assert f(np.ones((2, 3), np.float64)).dtype == np.float64


def test_structures_in_and_out():
    @gc.jit(backend="numpy")
    def f(pair, scale):
        a, (b, c) = pair
        return (a + b) * scale, [c.sum(), a - c]

    a, b, c = (RNG.standard_normal(3) for _ in range(3))
    out = f((a, (b, c)), 2.0)
    assert isinstance(out, tuple) and isinstance(out[1], list)
    np.testing.assert_allclose(out[0], (a + b) * 2, rtol=1e-6)
    np.testing.assert_allclose(out[1][0], c.sum(), rtol=1e-12)
    np.testing.assert_allclose(out[1][1], a - c, rtol=1e-12)
    # a Python number is traced (not baked in): another value reuses the trace
    np.testing.assert_allclose(f((a, (b, c)), 3.0)[0], (a + b) * 3, rtol=1e-6)
    assert f.traces == 1


def test_static_argnums_retrace_on_value():
    @gc.jit(backend="numpy", static_argnums=1)
    def f(x, axis):
        return x.sum(axis=axis)

    x = RNG.standard_normal((2, 3))
    np.testing.assert_allclose(f(x, 0), x.sum(0))
    np.testing.assert_allclose(f(x, 1), x.sum(1))
    assert f.traces == 2


def test_parameters_are_captured_with_their_current_value():
    w = gc.parameter(np.array([1.0, 2.0]))
    f = gc.jit(lambda x: x * w, backend="numpy")
    x = np.array([3.0, 4.0])
    np.testing.assert_allclose(f(x), [3.0, 8.0])
    w.value = np.array([-1.0, 0.5])
    np.testing.assert_allclose(f(x), [-3.0, 2.0])


def test_identity_and_gradient_outputs():
    @gc.jit(backend="llvm")
    def f(x):
        loss = (gc.sin(x) ** 2).sum()
        return x, loss, gc.grad(loss, x)

    x = RNG.standard_normal(4)
    same, loss, g = f(x)
    np.testing.assert_array_equal(same, x)
    np.testing.assert_allclose(loss, (np.sin(x) ** 2).sum(), rtol=1e-12)
    np.testing.assert_allclose(g, 2 * np.sin(x) * np.cos(x), rtol=1e-12)


def test_jit_inside_a_traced_function_is_inlined():
    inner = gc.jit(lambda x: x + 1)
    x = gc.placeholder((2,))
    y = inner(x)
    assert isinstance(y, gc.Tensor) and inner.traces == 0


def test_compiled_gives_the_function():
    f = gc.jit(lambda x: gc.exp(x), backend="numpy")
    fn = f.compiled(np.zeros(3, np.float32))
    assert isinstance(fn, gc.Function) and f.traces == 1


def test_errors_name_the_problem():
    with pytest.raises(TypeError, match="must return a graphc Tensor.*ndarray"):
        gc.jit(lambda x: np.zeros(3), backend="numpy")(np.zeros(3))
    with pytest.raises(TypeError, match=r"got int \(output 1\)"):
        gc.jit(lambda x: (x, 1), backend="numpy")(np.zeros(3))
    with pytest.raises(TypeError, match="argument 1"):
        gc.jit(lambda x, y: x, backend="numpy")(np.zeros(3), "text")
    with pytest.raises(TypeError, match="positional arguments only"):
        gc.jit(lambda x: x, backend="numpy")(x=np.zeros(3))
    with pytest.raises(TypeError, match="callable"):
        gc.jit(3)
    with pytest.raises(TypeError, match="static argument 0 must be hashable"):
        gc.jit(lambda a: a, static_argnums=0)([1, 2])
    with pytest.raises(TypeError, match="returned no tensors"):
        gc.jit(lambda x: (), backend="numpy")(np.zeros(1))
