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
