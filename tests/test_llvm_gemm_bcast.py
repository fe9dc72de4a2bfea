"""A convolution's weight gradient whose output channels fill their vectors (m = 16, 32,
...) is computed as outer products (backends/llvm/gemm_bcast.py): A's chunk transposed
pixel-major, each image element broadcast where it lies. The same values as float64
numpy for strides 1 and 2, odd and non-square sizes, m past one block's accumulators (the
blocks go over groups of A's vectors), m short of a whole vector (zeros in the lanes
past it), float32 and float64, one thread and a team, a call-time batch, alpha and a
folded parameter update; where m leaves a quarter of the lanes empty, the dot-product path
(gemm_dot.py) keeps the product."""
from __future__ import annotations

import re

import numpy as np
import pytest

import graphc as gc
from graphc.backends.llvm import gemm, gemm_bcast, gemm_dot
from graphc.schedule import ir


def _want(xv: np.ndarray, gv: np.ndarray, wshape: tuple, stride: int, pad: int
          ) -> np.ndarray:
    """dW[o, c, i, j] = sum over images and output pixels of g * the padded image."""
    xp = np.pad(xv.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = gv.shape[2:]
    want = np.zeros(wshape)
    for i in range(wshape[2]):
        for j in range(wshape[3]):
            window = xp[:, :, i:i + stride * (oh - 1) + 1:stride,
                        j:j + stride * (ow - 1) + 1:stride]
            want[:, :, i, j] = np.einsum("nohw,nchw->oc", gv.astype(np.float64), window)
    return want


def _gradient(xs: tuple, ws: tuple, stride: int, pad: int, dtype, options: dict,
              dilation: int = 1):
    x = gc.placeholder(xs, dtype, name="x")
    w = gc.placeholder(ws, dtype, name="w")
    y = gc.nn.conv2d(x, w, stride=stride, padding=pad, dilation=dilation)
    g = gc.placeholder((xs[0],) + tuple(y.shape[1:]), dtype, name="g")
    f = gc.function([x, w, g], gc.grad(gc.sum(y * g), w), backend="llvm",
                    backend_options=options)
    return f, tuple(y.shape[1:])


def _check(xs, ws, stride, pad, dtype, batches=None, options=None, seed=0):
    options = {"cache_dir": None, **(options or {})}
    f, out_shape = _gradient(xs, ws, stride, pad, dtype, options)
    for batch in batches or (xs[0],):
        rng = np.random.default_rng(seed + batch)
        xv = rng.normal(size=(batch,) + tuple(xs[1:])).astype(dtype)
        wv = rng.normal(size=ws).astype(dtype)
        gv = rng.normal(size=(batch,) + out_shape).astype(dtype)
        got = f(xv, wv, gv)
        want = _want(xv, gv, ws, stride, pad)
        tol = 2e-5 if np.dtype(dtype) == np.float32 else 1e-12
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())
    assert re.search(r'define [^\n]*@"gemm_bcast_\w+_part"', f.source)  # (deep enough)
    return f


def _spec(m: int, taps: tuple = (3, 3), dtype=np.float32, stride: int = 1):
    """W6-like: dW (m, 16 x taps) over 64 images of 28 x 28 output pixels, padded by 1."""
    kh, kw = taps
    width = 28 * stride + kw - 1
    b_strides = (0, 16 * width * width, width * stride, stride, width * width, width, 1)
    kernel = ir.Gemm((1,), m, 16 * kh * kw, 64 * 784,
                     ir.Access(0, (0, 64 * 784, 1)), ir.Access(1, b_strides),
                     ir.Access(2, (0, 16 * kh * kw, 1)), np.dtype(dtype),
                     b_split=((64, 28, 28), (16, kh, kw)))
    return gemm._Spec.of(kernel)


def test_the_path_is_taken_where_m_fills_its_vectors():
    for m in (16, 32, 64, 12):  # (12 of 16 lanes: three quarters)
        assert gemm_dot.suitable(_spec(m)) and gemm_bcast.suitable(_spec(m)), m
    assert gemm_bcast.suitable(_spec(16, stride=2))
    assert not gemm_bcast.suitable(_spec(6))  # W5's six channels: the dot products
    assert gemm_bcast.suitable(_spec(6, dtype=np.float64))  # (6 of 8 lanes)
    assert not gemm_bcast.suitable(_spec(16, taps=(7, 7)))  # 49 taps: too many accumulators
    # a materialised B (no sub-axes) is the dot path's
    kernel = ir.Gemm((1,), 16, 144, 50176, ir.Access(0, (0, 50176, 1)),
                     ir.Access(1, (0, 1, 50176)), ir.Access(2, (0, 144, 1)),
                     np.dtype(np.float32))
    assert gemm_dot.suitable(gemm._Spec.of(kernel))
    assert not gemm_bcast.suitable(gemm._Spec.of(kernel))


def test_blocks_of_columns_and_groups_of_vectors():
    g = gemm_bcast._Geometry(_spec(16))
    # 2 channels x 9 taps: 18 accumulators (3 would leave a block of 1: two loop bodies)
    assert (g.mv, g.group, g.per_block) == (1, 1, 2)
    g = gemm_bcast._Geometry(_spec(32))
    assert (g.mv, g.group, g.per_block) == (2, 2, 1)  # 2 vectors x 9 taps: 18
    g = gemm_bcast._Geometry(_spec(64))
    assert (g.mv, g.group, g.per_block) == (4, 2, 1)  # two groups of 2 vectors
    g = gemm_bcast._Geometry(_spec(16, stride=2))
    assert g.step == 2 and g.chunk_rows * g.run * 16 * 4 <= gemm_bcast.CHUNK_BYTES


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("xs, ws, stride, pad, dtype", [
    ((3, 16, 28, 28), (16, 16, 3, 3), 1, 1, np.float32),  # W6's: 8 blocks of 2
    ((3, 13, 28, 28), (16, 13, 3, 3), 1, 1, np.float32),  # 4 blocks of 3, then 1
    ((4, 5, 14, 14), (32, 5, 3, 3), 1, 1, np.float32),  # two vectors a pixel
    ((6, 3, 9, 13), (12, 3, 3, 3), 1, 1, np.float32),  # m short of a vector, odd widths
    ((8, 4, 10, 7), (64, 4, 3, 3), 1, 1, np.float32),  # groups of A's vectors
    ((15, 6, 11, 11), (16, 6, 3, 3), 2, 1, np.float32),  # stride 2: every other pixel
    ((24, 4, 13, 13), (16, 4, 3, 3), 3, 1, np.float32),  # stride 3: rows of 5
    ((4, 5, 12, 12), (8, 5, 3, 3), 1, 1, np.float64),  # 8 lanes
    ((7, 3, 12, 9), (14, 3, 2, 3), 1, 0, np.float64),  # non-square kernel, no padding
])
def test_values_match_numpy(xs, ws, stride, pad, dtype, threads, monkeypatch):
    monkeypatch.setenv("GRAPHC_NUM_THREADS", str(threads))
    monkeypatch.setenv("GRAPHC_ADAPTIVE_THREADS", "0")  # the team from the first call on
    monkeypatch.setattr(gemm, "PARALLEL_MIN_MACS", 0)
    _check(xs, ws, stride, pad, dtype, seed=ws[0])


@pytest.mark.parametrize("threads", [1, 2])
def test_a_call_time_batch(threads, monkeypatch):
    """One image, three (a thread's rows end inside an image), 64 (W6's batch)."""
    monkeypatch.setenv("GRAPHC_NUM_THREADS", str(threads))
    monkeypatch.setenv("GRAPHC_ADAPTIVE_THREADS", "0")
    monkeypatch.setattr(gemm, "PARALLEL_MIN_MACS", 0)
    f = _check((None, 16, 28, 28), (16, 16, 3, 3), 1, 1, np.float32,
               batches=(64, 1, 3), options={"sizes": "symbolic"})
    assert '@"gemm_bcast_' in f.source


def test_dilated_taps():
    """Dilation 2: the taps 2 apart in the image (constant offsets all the same)."""
    f, out_shape = _gradient((8, 6, 16, 16), (16, 6, 3, 3), 1, 2, np.float32,
                             {"cache_dir": None}, dilation=2)
    assert '@"gemm_bcast_' in f.source
    rng = np.random.default_rng(2)
    xv = rng.normal(size=(8, 6, 16, 16)).astype(np.float32)
    wv = rng.normal(size=(16, 6, 3, 3)).astype(np.float32)
    gv = rng.normal(size=(8,) + out_shape).astype(np.float32)
    wide = (16, 6, 5, 5)  # (the dilated kernel: taps at 0, 2, 4)
    want = _want(xv, gv, wide, 1, 2)[:, :, ::2, ::2]
    got = f(xv, wv, gv)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5 * np.abs(want).max())


def test_chunks_of_one_row(monkeypatch):
    """Chunks of a single row (the transposed chunk's size): each row's own chunk."""
    monkeypatch.setattr(gemm_bcast, "CHUNK_BYTES", 1)
    _check((5, 4, 6, 20), (16, 4, 3, 3), 1, 1, np.float32)


def test_alpha_and_a_folded_update(monkeypatch):
    """An SGD step folds into the product: w += -lr * dW (alpha, and += C)."""
    monkeypatch.setenv("GRAPHC_NUM_THREADS", "2")
    monkeypatch.setenv("GRAPHC_ADAPTIVE_THREADS", "0")
    rng = np.random.default_rng(5)
    wv = rng.normal(size=(32, 8, 3, 3)).astype(np.float32)
    w = gc.parameter(wv.copy(), name="w")
    x = gc.placeholder((4, 8, 16, 16), "float32", name="x")
    y = gc.nn.conv2d(x, w, padding=1)
    g = gc.placeholder(y.shape, "float32", name="g")
    step = gc.function([x, g], [], updates={w: w - 0.25 * gc.grad(gc.sum(y * g), w)},
                       backend="llvm", backend_options={"cache_dir": None})
    gemms = [k for k in step.schedule().kernels if k.kind == "gemm"]
    assert any(k.accumulate and abs(k.alpha + 0.25) < 1e-6 for k in gemms)
    assert '@"gemm_bcast_' in step.source
    xv = rng.normal(size=(4, 8, 16, 16)).astype(np.float32)
    gv = rng.normal(size=(4, 32, 16, 16)).astype(np.float32)
    step(xv, gv)
    want = wv - 0.25 * _want(xv, gv, wv.shape, 1, 1)
    np.testing.assert_allclose(w.value, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_products_of_one_shape_share_their_functions():
    """Two weight gradients of one shape call one part function, and every product of a
    module one transpose (compile time: its shuffles are most of a part's IR)."""
    xs = (8, 16, 12, 12)
    x = gc.placeholder(xs, "float32", name="x")
    w1 = gc.placeholder((16, 16, 3, 3), "float32", name="w1")
    w2 = gc.placeholder((16, 16, 3, 3), "float32", name="w2")
    w3 = gc.placeholder((32, 16, 3, 3), "float32", name="w3")
    h = gc.nn.conv2d(x, w1, padding=1)
    y = gc.sum(gc.nn.conv2d(h, w2, padding=1)) + gc.sum(gc.nn.conv2d(h, w3, padding=1) ** 2)
    f = gc.function([x, w1, w2, w3], gc.grad(y, [w1, w2, w3]), backend="llvm",
                    backend_options={"cache_dir": None})
    parts = set(re.findall(r'define [^\n]*@"(gemm_bcast_\w+_part)"', f.source))
    assert len(parts) == 2, parts  # 16 and 32 output channels
    assert len(re.findall(r'define [^\n]*@"gemm_bcast_float32_transpose"', f.source)) == 1
    # the loops over rows and pixels are not unrolled (compile time, code size)
    part = re.search(r'define [^\n]*@"gemm_bcast_\w+_part"\(.*?\n}', f.source, re.S)
    assert part is not None and "llvm.loop" in part.group(0)
