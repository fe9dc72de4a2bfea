"""Deep GEMMs with a small output and both operands contiguous along the depth (a
convolution's weight gradient) take the dot-product path (backends/llvm/gemm_dot.py): the
same results as numpy for row, column and depth edges, alpha and a folded parameter update,
float32/float64, one thread and a team; square or shallow GEMMs keep the packed path."""
from __future__ import annotations

import re

import numpy as np
import pytest

import graphc as gc
from graphc.backends.llvm import gemm, gemm_bcast, gemm_dot
from graphc.schedule import ir

F32 = np.dtype(np.float32)


def _spec(m, n, k, a_strides, b_strides):
    kernel = ir.Gemm((1,), m, n, k, ir.Access(0, (0,) + a_strides), ir.Access(1, (0,) + b_strides),
                     ir.Access(2, (0, n, 1)), F32)
    return gemm._Spec.of(kernel)


def test_the_path_is_taken_by_weight_gradients_only():
    # dW (16, 144) = g (16, 50176) @ cols^T: both read along the depth
    assert gemm_dot.suitable(_spec(16, 144, 50176, (50176, 1), (1, 50176)))
    assert gemm_dot.suitable(_spec(8, 25, 36864, (36864, 1), (1, 36864)))
    # B stored (k, n): the packed path reads it as it lies
    assert not gemm_dot.suitable(_spec(16, 144, 50176, (50176, 1), (144, 1)))
    # a square GEMM, and a shallow one
    assert not gemm_dot.suitable(_spec(512, 512, 512, (512, 1), (1, 512)))
    assert not gemm_dot.suitable(_spec(16, 144, 300, (300, 1), (1, 300)))


def _check(m, n, k, dtype, tmp_path, seed=0):
    rng = np.random.default_rng(seed)
    av = rng.normal(size=(m, k)).astype(dtype)
    bv = rng.normal(size=(n, k)).astype(dtype)
    pv = rng.normal(size=(m, n)).astype(dtype)
    a, b = gc.placeholder((m, k), dtype, name="a"), gc.placeholder((n, k), dtype, name="b")
    p = gc.parameter(pv.copy(), name="p")
    # the product, its transpose scaled (alpha), and an SGD-like update folded into the GEMM
    f = gc.function([a, b], [a @ b.T, -0.5 * (b @ a.T)],
                    updates={p: p - 0.1 * ((a + 1.0) @ b.T)},
                    backend_options={"cache_dir": str(tmp_path)})
    gemms = [k for k in f.schedule().kernels if k.kind == "gemm"]
    assert all(gemm_dot.suitable(gemm._Spec.of(k)) for k in gemms)
    assert any(k.accumulate and abs(k.alpha + 0.1) < 1e-6 for k in gemms)  # folded update
    got, got_t = f(av, bv)
    want = av.astype(np.float64) @ bv.astype(np.float64).T
    want_p = pv - 0.1 * ((av.astype(np.float64) + 1.0) @ bv.astype(np.float64).T)
    tol = 2e-6 if dtype == np.float32 else 1e-13
    scale = np.abs(want).max()
    np.testing.assert_allclose(got, want, atol=tol * scale * 10, rtol=0)
    np.testing.assert_allclose(got_t, -0.5 * want.T, atol=tol * scale * 10, rtol=0)
    np.testing.assert_allclose(p.value, want_p, atol=tol * scale * 10, rtol=0)


def test_a_weight_gradient_shape_matches_numpy(tmp_path):
    _check(6, 9, 2053, np.float32, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("m, n, k, dtype", [
    (1, 1, 512, np.float32), (4, 4, 4096, np.float32), (7, 5, 1031, np.float64),
    (16, 144, 4000, np.float32), (33, 3, 2049, np.float32), (3, 33, 8191, np.float64)])
def test_edges_dtypes_and_threads_match_numpy(m, n, k, dtype, threads, monkeypatch, tmp_path):
    monkeypatch.setenv("GRAPHC_NUM_THREADS", str(threads))
    monkeypatch.setenv("GRAPHC_ADAPTIVE_THREADS", "0")  # the team from the first call on
    monkeypatch.setattr(gemm, "PARALLEL_MIN_MACS", 0)
    _check(m, n, k, dtype, tmp_path, seed=m + n)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("width, dtype", [
    (28, np.float32),  # W6's 16 channels: a whole vector and 12 elements a row
    (14, np.float32),  # W6's 32 channels: rows shorter than a vector
    (16, np.float32),  # one whole vector
    (32, np.float32),  # two whole vectors
    (14, np.float64),  # (8 lanes: a whole vector and 6 elements)
    (44, np.float32),  # 3 vectors less 4 elements
    (40, np.float32),  # half a vector past 2: read in pairs of rows (gemm_dot_pairs)
])
def test_a_weight_gradient_copies_each_chunk_of_rows(width, dtype, threads, monkeypatch):
    """An implicit B's rows of the depth (a convolution's output rows) are copied a chunk at
    a time, end to end into aligned scratch (A's rows and B's columns), by part_rows, whose
    multiply-adds read whole aligned vectors of that copy. Values as numpy's, alone and on
    a team, for rows shorter and longer than a vector and row ends inside a vector."""
    monkeypatch.setenv("GRAPHC_NUM_THREADS", str(threads))
    monkeypatch.setenv("GRAPHC_ADAPTIVE_THREADS", "0")
    monkeypatch.setattr(gemm, "PARALLEL_MIN_MACS", 0)
    _dot_only(monkeypatch)
    rng = np.random.default_rng(width)
    xs, ws = (6, 5, 8, width), (7, 5, 3, 3)  # m=7, n=45: edges of the 4x5 block
    x, w = gc.placeholder(xs, dtype, name="x"), gc.placeholder(ws, dtype, name="w")
    y = gc.nn.conv2d(x, w, padding=1)
    g = gc.placeholder(y.shape, dtype, name="g")
    f = gc.function([x, g], gc.grad(gc.sum(y * g), w), backend="llvm",
                    backend_options={"cache_dir": None})
    if width == 40:
        assert f"gemm_dot_{np.dtype(dtype).name}_part_pairs" in f.source
    else:
        assert f"gemm_dot_{np.dtype(dtype).name}_part_rows\"" in f.source
        part = re.search(r'define [^\n]*@"gemm_dot_[^"]*_part_rows"\(.*?\n}', f.source, re.S)
        assert part is not None and "llvm.prefetch.p0" in part.group(0)  # the next block's B
        assert "_dot_pack" in f.source  # the chunk's copy
    xv, gv = rng.normal(size=xs).astype(dtype), rng.normal(size=y.shape).astype(dtype)
    pad = np.pad(xv.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    want = np.zeros(ws)
    for i in range(3):
        for j in range(3):
            want[:, :, i, j] = np.einsum("nohw,nchw->oc", gv, pad[:, :, i:i + 8, j:j + width])
    tol = 1e-4 if dtype == np.float32 else 1e-11
    np.testing.assert_allclose(f(xv, gv), want, rtol=tol, atol=tol * np.abs(want).max())


def test_rows_read_past_their_end_only_where_b_holds_those_lanes():
    # rows 16 apart in the image, 14 long: a vector from each row's start ends inside the
    # next row (read whole, its 2 lanes past the row overwritten by the next row's copy)
    assert gemm_dot.overreads([0, 16, 32, 8192, 8208], 14, 16)
    assert gemm_dot.overreads([0, 30, 60], 28, 16)  # (4 lanes past, 30 apart)
    assert gemm_dot.overreads([0, 1, 2], 16, 16)  # (whole vectors: nothing past)
    assert not gemm_dot.overreads([0, 1, 2], 14, 16)  # overlapping rows: masked
    assert not gemm_dot.overreads([0, 16, 17], 13, 16)


def _dot_only(monkeypatch) -> None:
    """Weight gradients whose m fills its vectors take gemm_bcast.py: these tests are the
    dot-product path's (still taken where m does not: W5's six channels)."""
    monkeypatch.setattr(gemm_bcast, "suitable", lambda spec: False)


def _check_weight_gradient(xs: tuple, ws: tuple, seed: int) -> None:
    """A padded 3x3 convolution's weight gradient (rows of the depth: part_rows) against
    float64 numpy."""
    rng = np.random.default_rng(seed)
    x, w = gc.placeholder(xs, "float32", name="x"), gc.placeholder(ws, "float32", name="w")
    y = gc.nn.conv2d(x, w, padding=1)
    g = gc.placeholder(y.shape, "float32", name="g")
    f = gc.function([x, g], gc.grad(gc.sum(y * g), w), backend="llvm",
                    backend_options={"cache_dir": None})
    assert 'gemm_dot_float32_part_rows"' in f.source
    xv, gv = rng.normal(size=xs).astype(np.float32), rng.normal(size=y.shape).astype(np.float32)
    pad = np.pad(xv.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    want = np.zeros(ws)
    height, width = xs[2], xs[3]
    for i in range(3):
        for j in range(3):
            want[:, :, i, j] = np.einsum("nohw,nchw->oc", gv,
                                         pad[:, :, i:i + height, j:j + width])
    np.testing.assert_allclose(f(xv, gv), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("width", [14, 28])
def test_every_row_masked_where_rows_may_not_be_read_past_their_end(width, monkeypatch):
    """With the rows' whole-vector reads ruled out, every row of a chunk is copied with its
    last vector masked: the same values."""
    monkeypatch.setattr(gemm_dot, "overreads", lambda *args: False)
    _dot_only(monkeypatch)
    _check_weight_gradient((5, 6, 9, width), (9, 6, 3, 3), width)


@pytest.mark.parametrize("threads", [1, 2])
def test_more_rows_of_a_than_a_panel(threads, monkeypatch):
    """70 output channels: A's rows copied 64 (PANEL) at a time, then 6 (the last block of
    rows past m); the second panel's tiles land at their rows of the partial products."""
    monkeypatch.setenv("GRAPHC_NUM_THREADS", str(threads))
    monkeypatch.setenv("GRAPHC_ADAPTIVE_THREADS", "0")
    monkeypatch.setattr(gemm, "PARALLEL_MIN_MACS", 0)
    assert gemm_dot.PANEL == 64
    _dot_only(monkeypatch)
    _check_weight_gradient((8, 9, 10, 14), (70, 9, 3, 3), 70)  # m = 70, n = 81


def test_the_shared_functions_stay_small():
    # compile time follows the code: one branch a tile into the partials (not one per
    # output), zeroing by memset, the vector loop and finish's loops not unrolled
    # (72 blocks in part before, no loop metadata)
    a, b = gc.placeholder((6, 2053), "float32"), gc.placeholder((9, 2053), "float32")
    f = gc.function([a, b], [a @ b.T], backend_options={"cache_dir": None})
    got, = f(np.ones((6, 2053), np.float32), np.ones((9, 2053), np.float32))
    np.testing.assert_allclose(got, np.full((6, 9), 2053.0))
    code = {fn: re.search(r'define [^\n]*@"gemm_dot_float32_%s"\(.*?\n}' % fn, f.source, re.S)
            for fn in ("part", "finish")}
    part, finish = code["part"], code["finish"]
    assert part is not None and finish is not None
    blocks = re.findall(r"^\S+:", part.group(0), re.M)
    assert len(blocks) <= 32, len(blocks)
    assert "llvm.memset" in part.group(0)
    assert "llvm.loop" in part.group(0) and "llvm.loop" in finish.group(0)
    assert "optsize" in finish.group(0).splitlines()[0]
