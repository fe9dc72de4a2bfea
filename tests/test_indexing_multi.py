"""Several integer tensors in one subscript (numpy's advanced indexing: broadcasting, where
the result's axes go) and boolean masks known at build time: values against numpy on every
backend and dtype, gradients against finite differences and PyTorch, clear errors."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from test_grad_rules import fd_check

RNG = np.random.default_rng(3)
I0 = np.array([[0, 2], [1, -1]])
I1 = np.array([3, -4])
I2 = np.array([4, 0])
M2 = np.array([[True, False, True, True], [False, False, True, False],
               [True, True, False, True]])
M1 = np.array([True, False, True, True, False])

KEYS = {
    "two_adjacent": (I0, I1),
    "split_by_slice": (I0, slice(None), I2),
    "after_slice": (slice(None), I1, I2),
    "int_between": (I0, 1, I2),
    "int_first": (1, I1, I2),
    "three": (I0, I1, I2),
    "lists_broadcast": ([0, 1], [[1], [2]], slice(None, None, -1)),
    "new_axes_between": (None, I0, None, I1),
    "new_axis_splits": (I0, None, I1),
    "ellipsis": (Ellipsis, I1, I2),
    "slice_then_int": (I0, slice(1, 3), 2),
    "mask_2d": (M2,),
    "mask_last": (slice(None), slice(None), M1),
    "mask_and_int_tensor": (np.array([1]), M2[0], np.array([4])),
    "mask_after_slice": (slice(None), RNG.random((4, 5)) > 0.4),
}
BACKENDS = [dict(backend="numpy"), dict(backend="llvm")]


@pytest.mark.parametrize("kw", BACKENDS, ids=["numpy", "llvm"])
@pytest.mark.parametrize("dtype", ["float32", "float64", "int64"])
def test_values_match_numpy(kw, dtype):
    xs = (RNG.standard_normal((3, 4, 5)) * 10).astype(dtype)
    x = gc.placeholder(xs.shape, dtype, name="x")
    f = gc.function([x], [x[key] for key in KEYS.values()], **kw)
    for name, got in zip(KEYS, f(xs)):
        want = xs[KEYS[name]]
        assert got.shape == want.shape, (name, got.shape, want.shape)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want, err_msg=name)


def test_constant_mask_tensor_and_run_time_indices():
    xs = RNG.standard_normal((3, 4, 5))
    x = gc.placeholder(xs.shape, "float64", name="x")
    a = gc.placeholder((2,), "int64", name="a")
    b = gc.placeholder((2, 1), "int32", name="b")
    f = gc.function([x, a, b], [x[gc.constant(M2)], x[a, :, b], x[1:, a, b]], backend="llvm")
    ai, bi = np.array([0, -1]), np.array([[4], [-5]], np.int32)
    got = f(xs, ai, bi)
    for g, want in zip(got, [xs[M2], xs[ai, :, bi], xs[1:, ai, bi]]):
        np.testing.assert_array_equal(g, want)


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_run_time_indices_out_of_their_axis_fail(backend):
    x = gc.placeholder((3, 4, 5), "float64", name="x")
    a = gc.placeholder((2,), "int64", name="a")
    b = gc.placeholder((2,), "int64", name="b")
    f = gc.function([x, a, b], x[a, :, b], backend=backend)
    xs = np.zeros((3, 4, 5))
    # 3 on axis 0 would land in a valid merged position if it were not checked on its axis
    for ai, bi, axis in [([0, 3], [0, 0], 0), ([0, 0], [5, 0], 2), ([0, 0], [-6, 0], 2)]:
        with pytest.raises(IndexError, match=f"axis {axis}"):
            f(xs, np.array(ai), np.array(bi))


def test_bad_indices_are_clear_errors():
    x = gc.placeholder((3, 4, 5), "float64", name="x")
    with pytest.raises(IndexError, match="out of bounds for axis 1 with size 4"):
        x[I0, np.array([0, 4])]
    with pytest.raises(IndexError, match="could not be broadcast"):
        x[np.array([0, 1, 2]), np.array([0, 1])]
    with pytest.raises(IndexError, match="boolean index did not match"):
        x[np.array([True, False])]
    with pytest.raises(TypeError, match="known when the graph is built"):
        x[x[:, 0, 0] > 0]
    with pytest.raises(TypeError, match="boolean scalar"):
        x[True]
    y = gc.placeholder((None, 4), "float64", name="y")
    with pytest.raises(ValueError, match="sizes"):
        y[np.array([0, 1]), np.array([1, 2])]


GRAD_KEYS = ["two_adjacent", "split_by_slice", "three", "mask_2d", "mask_last",
             "new_axis_splits", "lists_broadcast"]


@pytest.mark.parametrize("name", GRAD_KEYS)
def test_gradients_against_finite_differences(name):
    key = KEYS[name]
    fd_check(lambda t: t[key] * 1.0, [RNG.standard_normal((3, 4, 5))])


def test_gradient_with_run_time_indices_adds_repeats():
    xs = RNG.standard_normal((3, 4))
    fd_check(lambda t, a, b: t[a, b] ** 2, [xs, np.array([1, 1, 2]), np.array([0, 0, -1])])


@pytest.mark.slow  # (importing torch takes seconds)
@pytest.mark.parametrize("backend", ["numpy", "llvm"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gradients_match_pytorch(backend, dtype):
    torch = pytest.importorskip("torch")
    xs = RNG.standard_normal((3, 4, 5)).astype(dtype)
    x = gc.placeholder(xs.shape, dtype, name="x")
    loss = gc.sum(x[I0, :, I2] ** 2) + gc.sum(x[M2] * 3.0) + gc.sum(x[:, I1, I2] * x[1, I1, I2])
    got = gc.function([x], gc.grad(loss, x), backend=backend)(xs)
    t = torch.tensor(xs, requires_grad=True)
    ti = [torch.tensor(a) for a in (I0, I1, I2)]
    ref = ((t[ti[0], :, ti[2]] ** 2).sum() + (t[torch.tensor(M2)] * 3.0).sum()
           + (t[:, ti[1], ti[2]] * t[1, ti[1], ti[2]]).sum())
    ref.backward()
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(got, t.grad.numpy(), rtol=tol, atol=tol)
