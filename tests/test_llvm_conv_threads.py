"""Convolution kernels on both cores: an im2col copy (a leading axis of 1) and a col2im
(accumulating stores, one image's windows adding only into that image) are split over a
team where threads cannot write one element twice, and give the reference's results."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.backends.llvm import gemm, parallel
from graphc.schedule import ir

F32 = np.dtype(np.float32)


def _store(strides, accumulate="ordered", offset=0):
    return ir.Store(ir.Access(0, strides, offset), ir.Load(ir.Access(1, strides), F32),
                    accumulate=accumulate)


def _teams() -> bool:
    return gemm.num_threads() > 1 and gemm.openmp_available()


def test_the_split_axis_is_the_first_longer_than_one():
    assert parallel.split_axis(ir.Elementwise((1, 1, 16, 9, 4096), (), ())) == 2
    assert parallel.split_axis(ir.Elementwise((64, 16), (), ())) == 0
    assert parallel.split_axis(ir.Elementwise((1, 1), (), ())) == 0
    copy = ir.Elementwise((1, 16, 3, 3, 64, 28, 28), (ir.Store(
        ir.Access(0, (0, 451584, 150528, 50176, 784, 28, 1)),
        ir.Load(ir.Access(1, (0, 784, 28, 1, 12544, 28, 1)), F32)),), ("pad",))
    assert parallel.threads_for(copy) == (min(16, gemm.num_threads()) if _teams() else 1)


def test_accumulating_stores_split_only_into_disjoint_slabs():
    # col2im of 3x3 windows, stride 1, over 64 images of 16x30x30: image n adds only into
    # its own 14,400 elements
    col2im = ir.Elementwise((64, 16, 28, 3, 28, 3), (_store((14400, 900, 30, 30, 1, 1)),), ())
    assert parallel.threads_for(col2im) == (min(64, gemm.num_threads()) if _teams() else 1)
    # one channel of one image: the split axis is the window rows, whose slabs overlap
    rows = ir.Elementwise((1, 1, 28, 3, 28, 3), (_store((0, 0, 30, 30, 1, 1)),), ())
    assert parallel.threads_for(rows) == 1
    # nor when the kernel also reads the buffer it accumulates into
    reads = ir.Elementwise((64, 16, 28, 3, 28, 3), (ir.Store(
        ir.Access(0, (14400, 900, 30, 30, 1, 1)),
        ir.Load(ir.Access(0, (0, 900, 30, 30, 1, 1)), F32), accumulate="ordered"),), ())
    assert parallel.threads_for(reads) == 1


@pytest.mark.slow
@pytest.mark.parametrize("stride, padding, groups, dilation, size", [
    (1, 1, 1, 1, 29), (2, 1, 1, 1, 28), (1, 0, 2, 2, 27), (3, 2, 4, 1, 31)])
def test_threaded_conv_kernels_match_the_reference(stride, padding, groups, dilation, size,
                                                   monkeypatch, tmp_path):
    monkeypatch.setenv("GRAPHC_ADAPTIVE_THREADS", "0")  # the team from the first call on
    rng = np.random.default_rng(stride + 10 * groups)
    xv = rng.normal(size=(33, 4, size, size)).astype(np.float32)
    wv = rng.normal(size=(8, 4 // groups, 3, 3)).astype(np.float32)
    x = gc.placeholder(xv.shape, name="x")
    w = gc.placeholder(wv.shape, name="w")
    y = gc.nn.conv2d(x, w, stride=stride, padding=padding, groups=groups, dilation=dilation)
    loss = gc.sum(gc.tanh(y) * y)
    outs = [y, *gc.grad(loss, [x, w])]
    want = gc.function([x, w], outs, backend="numpy")(xv, wv)
    got = gc.function([x, w], outs, backend="llvm",
                      backend_options={"cache_dir": str(tmp_path)})(xv, wv)
    for g, r in zip(got, want):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-3 * float(np.abs(r).max()))


def test_reductions_over_outer_axes_share_their_outputs_out():
    k = ir.Reduce((64, 16, 784), (0, 2), "sum", ir.Load(ir.Access(1, (12544, 784, 1)), F32),
                  ir.Access(0, (0, 1, 0)), F32)
    assert parallel.reduce_threads(k, [16]) == (min(16, gemm.num_threads()) if _teams() else 1)
    small = ir.Reduce((4, 16, 8), (0, 2), "sum", ir.Load(ir.Access(1, (128, 8, 1)), F32),
                      ir.Access(0, (0, 1, 0)), F32)
    assert parallel.reduce_threads(small, [16]) == 1


@pytest.mark.slow
def test_threaded_batchnorm_statistics_are_those_of_one_thread(monkeypatch, tmp_path):
    """Each output is one thread's, summed in the same order: the same bits as alone."""
    rng = np.random.default_rng(5)
    xv = rng.normal(size=(33, 6, 19, 19)).astype(np.float32)  # 71,478 elements: a team
    x = gc.placeholder(xv.shape, name="x")
    mean = x.mean(axis=(0, 2, 3))
    outs = [mean, ((x - mean.reshape(1, -1, 1, 1)) ** 2).mean(axis=(0, 2, 3)),
            gc.max(x, axis=(0, 3)), gc.argmax(gc.reshape(x, (33, 6, -1)), axis=2)]
    results = []
    for threads in ("1", "2"):
        monkeypatch.setenv("GRAPHC_NUM_THREADS", threads)
        monkeypatch.setenv("GRAPHC_ADAPTIVE_THREADS", "0")
        f = gc.function([x], outs, backend_options={"cache_dir": str(tmp_path / threads)})
        results.append(f(xv))
    for alone, team in zip(*results):
        np.testing.assert_array_equal(alone, team)
    np.testing.assert_allclose(results[1][0], xv.mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(results[1][1], xv.var(axis=(0, 2, 3)), rtol=1e-4)
    np.testing.assert_array_equal(results[1][2], xv.max(axis=(0, 3)))
    np.testing.assert_array_equal(results[1][3], xv.reshape(33, 6, -1).argmax(axis=2))
