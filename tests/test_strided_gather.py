"""Gradients that place values at strided positions, read by every position instead of
scattered after a zero fill: a strided col2im (windows_grad of overlapping windows with
stride >= 2) and a strided slice's gradient (unslice). Each stepped axis is iterated as
(u, p) pairs; on llvm rows of pairs are explicit vectors interleaved into contiguous
stores. Values against loops and numpy; a size not a multiple of the step keeps the
scatter."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import graphc as gc
from graphc import sizes as symbols
from graphc.ops import make
from graphc.backends.llvm import vector_loop
from graphc.schedule import ir


def _reference(g: np.ndarray, shape: tuple, sizes: tuple, strides: tuple) -> np.ndarray:
    """Each window's cotangent added onto the positions it read, one element at a time."""
    out = np.zeros(shape, np.float64)
    n, c, oh, ow = g.shape[:4]
    for b, ch, y, x in itertools.product(range(n), range(c), range(oh), range(ow)):
        for i, j in itertools.product(range(sizes[0]), range(sizes[1])):
            out[b, ch, y * strides[0] + i, x * strides[1] + j] += g[b, ch, y, x, i, j]
    return out


def _function(shape, sizes, strides, backend, batch=None):
    """windows_grad of cotangents given as columns (n, c, kh, kw, oh, ow), the layout a
    convolution's data-gradient GEMM writes them in; returns it and the columns' shape."""
    n, c, h, w = shape
    oh, ow = ((d - k) // s + 1 for d, k, s in zip((h, w), sizes, strides))
    cols = gc.placeholder((batch, c) + tuple(sizes) + (oh, ow), name="cols_windows")
    ref = gc.placeholder((batch, c, h, w), name="ref_windows")
    g = gc.transpose(cols, (0, 1, 4, 5, 2, 3))
    out = gc.Tensor(make("windows_grad", g.node, ref.node, axes=(2, 3), sizes=tuple(sizes),
                         strides=tuple(strides)))
    return gc.function([cols, ref], out, backend=backend), (n, c) + tuple(sizes) + (oh, ow)


def _windows(cols: np.ndarray) -> np.ndarray:
    return cols.transpose(0, 1, 4, 5, 2, 3)


CASES = [
    ((2, 3, 30, 30), (3, 3), (2, 2)),  # W6's stride-2 convolution's padded image
    ((2, 2, 9, 12), (3, 2), (3, 2)),   # strides differ by axis; rows of pairs of 6
    ((1, 2, 16, 40), (4, 4), (2, 2)),  # a row of 20 pairs: one whole vector and a rest
    ((2, 3, 15, 15), (5, 5), (3, 3)),  # triples: the scatter's order kept, gathered
    ((1, 2, 11, 8), (3, 3), (2, 2)),   # 11 rows: not a multiple of 2, the scatter stays
]


@pytest.mark.parametrize("backend", ["llvm", "numpy"])
@pytest.mark.parametrize("shape,sizes,strides", CASES)
def test_strided_windows_gradient_matches_a_loop_over_the_windows(backend, shape, sizes,
                                                                   strides):
    f, g_shape = _function(shape, sizes, strides, backend)
    rng = np.random.default_rng(7)
    g = rng.normal(size=g_shape).astype(np.float32)
    ref = np.zeros(shape, np.float32)
    np.testing.assert_allclose(f(g, ref), _reference(_windows(g), shape, sizes, strides),
                               rtol=1e-5, atol=1e-5)


def test_a_call_time_batch_is_gathered_too():
    shape, sizes, strides = (3, 2, 30, 30), (3, 3), (2, 2)
    f, g_shape = _function(shape, sizes, strides, "llvm", batch="N")
    rng = np.random.default_rng(8)
    for n in (3, 5):
        g = rng.normal(size=(n,) + g_shape[1:]).astype(np.float32)
        ref = np.zeros((n,) + shape[1:], np.float32)
        np.testing.assert_allclose(f(g, ref), _reference(_windows(g), ref.shape, sizes, strides),
                                   rtol=1e-5, atol=1e-5)


def _kernels(f, args):
    f(*args)
    return f._exe.last


def test_the_gather_writes_each_position_once_in_vectors():
    shape, sizes, strides = (2, 3, 30, 30), (3, 3), (2, 2)
    f, g_shape = _function(shape, sizes, strides, "llvm")
    program = _kernels(f, (np.zeros(g_shape, np.float32), np.zeros(shape, np.float32)))
    schedule = program.schedule
    kernels = schedule.kernels
    assert not any("zeros" in k.fused for k in kernels)  # no fill first
    (k,) = [k for k in kernels if "windows_grad" in k.fused]
    assert k.shape[1:] == (3, 15, 2, 15, 2)  # (the batch: a call-time size)
    assert all(not s.accumulate for s in k.stores)
    with symbols.representative(program.representative):
        assert vector_loop.vectorizable(k, schedule)


def test_a_size_not_a_multiple_of_the_stride_keeps_the_scatter():
    shape, sizes, strides = (1, 2, 11, 8), (3, 3), (2, 2)
    f, g_shape = _function(shape, sizes, strides, "llvm")
    kernels = _kernels(f, (np.zeros(g_shape, np.float32),
                           np.zeros(shape, np.float32))).schedule.kernels
    (k,) = [k for k in kernels if "windows_grad" in k.fused]
    assert [s.accumulate for s in k.stores] == ["atomic"]


def _slice_gradient(shape, index, backend, batch=None):
    """The gradient of sum(x[index] * w) with respect to x: w placed where x was read (w in
    a buffer of its own, as a GEMM's output is)."""
    x = gc.placeholder((batch,) + shape[1:], name="x_strided")
    w = gc.placeholder((batch,) + np.zeros(shape)[index].shape[1:], name="w_strided")
    loss = gc.sum(x[index] * w)
    return gc.function([x, w], gc.grad(loss, x), backend=backend)


SLICES = [
    ((2, 3, 28, 28), (slice(None), slice(None), slice(None, None, 2), slice(None, None, 2))),
    ((2, 3, 30, 12), (slice(None), slice(1, 3), slice(1, None, 3), slice(2, 10, 2))),
    ((1, 2, 8, 40), (slice(None), slice(None), slice(None), slice(1, None, 2))),
    ((1, 2, 9, 8), (slice(None), slice(None), slice(None, None, 2), slice(None))),  # 9 % 2
]


@pytest.mark.parametrize("backend", ["llvm", "numpy"])
@pytest.mark.parametrize("shape,index", SLICES)
def test_strided_slice_gradient_places_the_cotangent(backend, shape, index):
    rng = np.random.default_rng(9)
    x = rng.normal(size=shape).astype(np.float32)
    w = rng.normal(size=x[index].shape).astype(np.float32)
    want = np.zeros_like(x)
    want[index] = w
    np.testing.assert_array_equal(_slice_gradient(shape, index, backend)(x, w), want)


def test_a_strided_slice_gradient_is_one_pass_of_pairs():
    shape, index = SLICES[0]
    f = _slice_gradient(shape, index, "llvm", batch="N")
    program = _kernels(f, (np.zeros(shape, np.float32), np.zeros((2, 3, 14, 14), np.float32)))
    kernels = program.schedule.kernels
    assert not any("zeros" in k.fused for k in kernels)
    (k,) = [k for k in kernels if "unslice" in k.fused]
    assert k.shape[1:] == (3, 14, 2, 14, 2)
    with symbols.representative(program.representative):
        assert vector_loop.vectorizable(k, program.schedule)


def _every_other(shape, index, batch=None):
    x = gc.placeholder((batch,) + shape[1:], name="x_every_other")
    return gc.function([x], x[index] * 2.0 + 1.0, backend="llvm")


EVERY_OTHER = [
    ((2, 3, 28, 28), (slice(None), slice(None), slice(None, None, 2), slice(None, None, 2))),
    ((2, 3, 28, 28), (slice(None), slice(None), slice(1, None, 2), slice(1, None, 2))),
    ((2, 2, 6, 70), (slice(None), slice(None), slice(None), slice(3, None, 2))),  # 34 a row
]


@pytest.mark.parametrize("shape,index", EVERY_OTHER)
def test_rows_read_at_stride_two_are_vectors_of_even_lanes(shape, index):
    rng = np.random.default_rng(10)
    x = rng.normal(size=shape).astype(np.float32)
    f = _every_other(shape, index, batch="N")
    np.testing.assert_allclose(f(x), x[index] * 2 + 1, rtol=1e-6)
    np.testing.assert_allclose(f(x[:1]), x[:1][index] * 2 + 1, rtol=1e-6)
    program = f._exe.last
    (k,) = program.schedule.kernels
    with symbols.representative(program.representative):
        assert vector_loop.vectorizable(k, program.schedule)


def test_guarded_short_rows_at_stride_two_stay_scalar():
    """A stride-2 im2col's rows of 14 behind a guard: each row's guard costs more than its
    one vector saves, so they keep the scalar loop."""
    x = gc.placeholder((None, 3, 28, 28), name="x_guarded")
    padded = gc.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    f = gc.function([x], padded[:, :, :28:2, :28:2] * 2.0, backend="llvm")
    data = np.random.default_rng(11).normal(size=(2, 3, 28, 28)).astype(np.float32)
    want = np.pad(data, ((0, 0), (0, 0), (1, 1), (1, 1)))[:, :, :28:2, :28:2] * 2
    np.testing.assert_allclose(f(data), want, rtol=1e-6)
    program = f._exe.last
    (k,) = program.schedule.kernels
    assert k.shape[-1] == 14 and any(ld.guard is not None for s in k.stores
                                     for ld in ir.expr_loads(s.value))
    with symbols.representative(program.representative):
        assert not vector_loop.vectorizable(k, program.schedule)


def test_a_sum_over_rows_read_at_stride_two():
    """A float32 sum along a row read every other element takes the vector sum's loads."""
    x = gc.placeholder((None, 3, 80), name="x_sum_every_other")
    f = gc.function([x], gc.sum(x[:, :, 1::2], axis=2), backend="llvm")
    data = np.random.default_rng(12).normal(size=(4, 3, 80)).astype(np.float32)
    np.testing.assert_allclose(f(data), data[:, :, 1::2].sum(axis=2), rtol=1e-5, atol=1e-5)
    program = f._exe.last
    (k,) = program.schedule.kernels
    with symbols.representative(program.representative):
        assert vector_loop.vectorizable_sum(k, program.schedule)
