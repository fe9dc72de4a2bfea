"""A deep GEMM over a materialised B whose depth is a call-time size (a stride-3
convolution's weight gradient, its columns copied by im2col, over a call-time batch) takes
the dot-product path (backends/llvm/gemm_dot.py) in the symbolic program as it does in a
specialised module: its depth rules judged at the representative binding, its depth and
row strides read at each call, the team (or not) chosen from the call's depth. Values
against numpy for several batches, odd sizes, one thread and two. A stride-2 convolution's
weight gradient reads its padded image's rows at stride 2 in place instead (the implicit
B's rows copied a chunk at a time, every other element; or, where m fills its vectors,
each element broadcast where it lies: gemm_bcast.py)."""
from __future__ import annotations

import re

import numpy as np
import pytest

import graphc as gc
from graphc import sizes
from graphc.backends.llvm import gemm, gemm_dot
from graphc.schedule import implicit, ir

from conv_reference import conv_ref


def _weight_gradient(cin: int, cout: int, size: int, stride: int, options: dict):
    """dW of sum(conv(x, w, stride, padding 1) * g) over a call-time batch."""
    rng = np.random.default_rng(3)
    x = gc.placeholder((None, cin, size, size), "float32", name="x")
    w = gc.parameter((rng.normal(size=(cout, cin, 3, 3)) * 0.3).astype(np.float32),
                     name="w")
    y = gc.nn.conv2d(x, w, stride=stride, padding=1)
    g = gc.placeholder((None,) + tuple(y.shape[1:]), "float32", name="g")
    return gc.function([x, g], [gc.grad(gc.sum(y * g), w)], backend_options=options), w


def _want(xv: np.ndarray, gv: np.ndarray, cout: int, stride: int) -> np.ndarray:
    """dW[o, c, i, j] = sum over images and output pixels of g * the padded image."""
    x64 = xv.astype(np.float64)
    pad = np.pad(x64, ((0, 0), (0, 0), (1, 1), (1, 1)))
    side = gv.shape[-1]
    want = np.zeros((cout, xv.shape[1], 3, 3))
    for i in range(3):
        for j in range(3):
            window = pad[:, :, i:i + stride * (side - 1) + 1:stride,
                         j:j + stride * (side - 1) + 1:stride]
            want[:, :, i, j] = np.einsum("nohw,nchw->oc", gv.astype(np.float64), window)
    return want


def _materialised(monkeypatch) -> None:
    """A stride-3 convolution's columns stored by im2col: where m fills its vectors they
    are otherwise read in place as outer products (graphc.schedule.implicit.outer_product,
    the llvm backend's gemm_bcast.py); these tests are the materialised B's."""
    monkeypatch.setattr(implicit, "outer_product", lambda m, n_axes: False)


def _deep(f) -> list[ir.Gemm]:
    """The symbolic program's GEMMs over a materialised B whose depth is a call-time size."""
    return [k for k in f._exe.symbolic._schedule.kernels if isinstance(k, ir.Gemm)
            and k.b_split is None and not sizes.is_static(k.k)]


@pytest.mark.parametrize("threads", ["1", "2"])
@pytest.mark.parametrize("cin, cout, size", [(16, 32, 31), (5, 7, 13)])
def test_a_call_time_depth_matches_numpy_on_the_dot_path(cin, cout, size, threads,
                                                          monkeypatch):
    monkeypatch.setenv("GRAPHC_NUM_THREADS", threads)
    monkeypatch.setenv("GRAPHC_ADAPTIVE_THREADS", "0")  # the team from the first call on
    _materialised(monkeypatch)
    f, _ = _weight_gradient(cin, cout, size, 3, {"sizes": "symbolic", "cache_dir": None})
    side = (size - 1) // 3 + 1
    for batch in (64, 1, 3, 17, 65):  # (the first call's batch: the representative)
        rng = np.random.default_rng(batch)
        xv = rng.normal(size=(batch, cin, size, size)).astype(np.float32)
        gv = rng.normal(size=(batch, cout, side, side)).astype(np.float32)
        got, = f(xv, gv)
        want = _want(xv, gv, cout, 3)
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4 * np.abs(want).max())
    assert f._exe.not_symbolic is None and f._exe.compiled == {}  # one program
    deep = _deep(f)
    assert deep  # (the weight gradient's B: the strided convolution's columns, copied)
    with sizes.representative(f._exe.symbolic.representative):
        assert all(gemm._dot(k) for k in deep)
        assert not any(gemm.RuntimeGemm(k, f._exe.symbolic.representative).packed
                       for k in deep)
    assert '@"gemm_dot_float32_part"' in f.source


def test_the_reference_matches_a_direct_convolution():
    # (the test's own reference, against conv_reference's forward convolution: the
    # weight gradient is the forward convolution's derivative along w)
    rng = np.random.default_rng(0)
    xv = rng.normal(size=(2, 3, 9, 9))
    w0 = rng.normal(size=(4, 3, 3, 3))
    gv = rng.normal(size=(2, 4, 5, 5))
    want = _want(xv, gv, 4, 2)
    eps = 1e-6
    for idx in [(0, 0, 0, 0), (3, 2, 2, 1), (1, 1, 1, 2)]:
        plus, minus = w0.copy(), w0.copy()
        plus[idx] += eps
        minus[idx] -= eps
        numeric = ((conv_ref(xv, plus, 2, 1, 1) * gv).sum()
                   - (conv_ref(xv, minus, 2, 1, 1) * gv).sum()) / (2 * eps)
        assert abs(numeric - want[idx]) < 1e-5 * (1 + abs(want[idx]))


def test_the_depth_rules_read_the_representative_binding(monkeypatch):
    # the old rule: a materialised B with any symbolic size took the packed path
    _materialised(monkeypatch)
    f, _ = _weight_gradient(16, 32, 31, 3, {"sizes": "symbolic", "cache_dir": None})
    f(np.zeros((64, 16, 31, 31), np.float32), np.zeros((64, 32, 11, 11), np.float32))
    deep = _deep(f)
    assert deep
    for k in deep:
        spec = gemm._Spec.of(k)
        assert not isinstance(spec.k, int)
        with sizes.representative(f._exe.symbolic.representative):
            assert gemm_dot.suitable(spec)  # k = 121 * 64: deep enough
        symbol = next(iter(f._exe.symbolic.representative))
        with sizes.representative({symbol: 1}):  # k = 121: too shallow to choose it
            assert not gemm_dot.suitable(spec)


def test_a_small_call_runs_alone_and_a_large_one_on_the_team(monkeypatch):
    """The team is chosen at each call from the depth: the code holds both calls."""
    monkeypatch.setenv("GRAPHC_NUM_THREADS", "2")
    monkeypatch.setenv("GRAPHC_ADAPTIVE_THREADS", "0")
    f, _ = _weight_gradient(16, 32, 31, 3, {"sizes": "symbolic", "cache_dir": None})
    f(np.zeros((64, 16, 31, 31), np.float32), np.zeros((64, 32, 11, 11), np.float32))
    code = f.source
    if not gemm.openmp_available():  # (no OpenMP: every call alone, no team compiled)
        assert "GOMP_parallel" not in code
        return
    assert "GOMP_parallel" in code
    # the call's depth times m * n against gemm.PARALLEL_MIN_MACS, in the GEMM's code
    assert re.search(r'icmp sge i64 %"[^"]+", ' + str(gemm.PARALLEL_MIN_MACS), code)
    for batch in (1, 64):  # (batch 1: 32 * 144 * 121 multiply-adds, alone)
        rng = np.random.default_rng(batch)
        xv = rng.normal(size=(batch, 16, 31, 31)).astype(np.float32)
        gv = rng.normal(size=(batch, 32, 11, 11)).astype(np.float32)
        got, = f(xv, gv)
        want = _want(xv, gv, 32, 3)
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4 * np.abs(want).max())


@pytest.mark.parametrize("threads", ["1", "2"])
@pytest.mark.parametrize("cin, cout, size", [(16, 32, 28), (3, 5, 25)])
def test_a_stride_two_weight_gradient_reads_the_padded_image_at_stride_two(
        cin, cout, size, threads, monkeypatch):
    monkeypatch.setenv("GRAPHC_NUM_THREADS", threads)
    monkeypatch.setenv("GRAPHC_ADAPTIVE_THREADS", "0")
    f, _ = _weight_gradient(cin, cout, size, 2, {"sizes": "symbolic", "cache_dir": None})
    side = (size - 1) // 2 + 1
    for batch in (64, 1, 5):
        rng = np.random.default_rng(batch)
        xv = rng.normal(size=(batch, cin, size, size)).astype(np.float32)
        gv = rng.normal(size=(batch, cout, side, side)).astype(np.float32)
        got, = f(xv, gv)
        want = _want(xv, gv, cout, 2)
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4 * np.abs(want).max())
    implicit = [k for k in f._exe.symbolic._schedule.kernels if isinstance(k, ir.Gemm)
                and k.b_split is not None and not sizes.is_static(k.k)]
    # (B's strides: the batch's, then the depth's sub-axes', then the columns')
    assert [k.b.strides[len(k.batch) + len(k.b_split[0]) - 1] for k in implicit] == [2]
    # (32 output channels fill two vectors: outer products, gemm_bcast; 5 do not)
    path = "gemm_bcast_" if cout == 32 else "gemm_dot_float32_part_rows"
    assert f'@"{path}' in f.source
