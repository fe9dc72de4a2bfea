"""Direct convolutions whose output channels fill the vectors better than their rows of
pixels do (rows of 14 or 28 against 32 or 16 channels) are computed with the channels as
vectors (backends/llvm/conv_channels.py): the same values as float64 references for
strides 1 and 2, channel counts past a vector and short of one, rows split into tiles,
float32 and float64, one thread and a team, a call-time batch, whole training steps'
gradients, and a parameter update folded into the convolution (alpha, += C)."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.backends.llvm import conv_channels, gemm
from graphc.schedule import ir

from conv_reference import conv_ref


def _direct(f) -> list[ir.Gemm]:
    return [k for k in f.schedule().kernels if isinstance(k, ir.Gemm) and k.direct]


def _forward(xs, ws, stride, dtype, dilation=1):
    x, w = gc.placeholder(xs, dtype, name="x"), gc.placeholder(ws, dtype, name="w")
    y = gc.nn.conv2d(x, w, stride=stride, padding=dilation, dilation=dilation)
    return gc.function([x, w], [y], backend="llvm", backend_options={"cache_dir": None})


def test_the_path_is_taken_where_channels_fill_more_lanes_than_rows():
    taken = {(32, 32, 14, 1): True,  # W6's 32 channels: rows of 14, 7/8 of 16 lanes
             (16, 16, 28, 1): True,  # 16 channels, rows of 28: 7/8 of 32
             (32, 16, 28, 2): True,  # stride 2: rows of 14
             (32, 32, 24, 1): False,  # two rows of 24 fill three vectors: the rows'
             (8, 32, 14, 1): False,  # 8 channels: half a vector
             (16, 1, 28, 1): False}  # depth 9 (W6's first): the transposes do not pay
    for (cout, cin, side, stride), want in taken.items():
        f = _forward((2, cin, side, side), (cout, cin, 3, 3), stride, "float32")
        got = [conv_channels.suitable(k) for k in _direct(f)]
        assert got == [want], (cout, cin, side, stride, got)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("xs, ws, stride, dtype", [
    ((2, 32, 14, 14), (32, 32, 3, 3), 1, "float32"),  # W6's: two blocks of channels
    ((2, 32, 14, 14), (64, 32, 3, 3), 1, "float32"),  # four blocks of channels
    ((2, 32, 14, 14), (48, 32, 3, 3), 1, "float32"),  # 48: three blocks
    ((3, 16, 28, 28), (16, 16, 3, 3), 1, "float32"),  # rows of 28: a tile of 16, one of 12
    ((2, 16, 30, 30), (32, 16, 3, 3), 2, "float32"),  # stride 2: rows of 15
    ((2, 32, 14, 14), (15, 32, 3, 3), 1, "float32"),  # 15 of 16 lanes: stores masked
    ((2, 32, 14, 14), (8, 32, 3, 3), 1, "float64"),  # 8 lanes: tiles of 8 and 6 pixels
])
@pytest.mark.parametrize("dilation", [1, 2])
def test_values_match_the_reference(xs, ws, stride, dtype, dilation, threads, monkeypatch):
    monkeypatch.setenv("GRAPHC_NUM_THREADS", str(threads))
    monkeypatch.setenv("GRAPHC_ADAPTIVE_THREADS", "0")
    monkeypatch.setattr(gemm, "PARALLEL_MIN_MACS", 0)
    f = _forward(xs, ws, stride, dtype, dilation)
    assert [conv_channels.suitable(k) for k in _direct(f)] == [True]
    rng = np.random.default_rng(ws[0])
    xv, wv = rng.normal(size=xs).astype(dtype), rng.normal(size=ws).astype(dtype)
    got, = f(xv, wv)
    # (dilation d: the taps d apart, a kernel of d * 2 + 1 with zeros between them)
    wide = np.zeros(ws[:2] + (2 * dilation + 1,) * 2)
    wide[:, :, ::dilation, ::dilation] = wv
    want = conv_ref(xv.astype(np.float64), wide, stride, dilation, 1)
    tol = 2e-6 if dtype == "float32" else 1e-13
    np.testing.assert_allclose(got, want, rtol=0, atol=tol * np.abs(want).max())


@pytest.mark.parametrize("threads", [1, 2])
def test_a_call_time_batch(threads, monkeypatch):
    monkeypatch.setenv("GRAPHC_NUM_THREADS", str(threads))
    monkeypatch.setenv("GRAPHC_ADAPTIVE_THREADS", "0")
    monkeypatch.setattr(gemm, "PARALLEL_MIN_MACS", 0)
    x = gc.placeholder((None, 32, 14, 14), "float32", name="x")
    w = gc.placeholder((32, 32, 3, 3), "float32", name="w")
    f = gc.function([x, w], [gc.nn.conv2d(x, w, padding=1)], backend="llvm",
                    backend_options={"sizes": "symbolic", "cache_dir": None})
    for batch in (5, 1, 64):
        rng = np.random.default_rng(batch)
        xv = rng.normal(size=(batch, 32, 14, 14)).astype(np.float32)
        wv = rng.normal(size=(32, 32, 3, 3)).astype(np.float32)
        got, = f(xv, wv)
        want = conv_ref(xv.astype(np.float64), wv.astype(np.float64), 1, 1, 1)
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * np.abs(want).max())
    assert "_channels_part" in f.source


def test_a_training_steps_gradients_match_the_reference():
    """Two 3x3 convolutions of 32 channels on 14 x 14 maps (forward and data gradients
    direct), their weights' and the input's gradients against the numpy interpreter."""
    rng = np.random.default_rng(7)
    x = gc.placeholder((4, 32, 14, 14), "float32", name="x")
    w1 = gc.placeholder((32, 32, 3, 3), "float32", name="w1")
    w2 = gc.placeholder((32, 32, 3, 3), "float32", name="w2")
    y = gc.nn.conv2d(gc.tanh(gc.nn.conv2d(x, w1, padding=1)), w2, padding=1)
    loss = gc.sum(gc.sin(y))
    outs = [loss] + gc.grad(loss, [x, w1, w2])
    f = gc.function([x, w1, w2], outs, backend="llvm", backend_options={"cache_dir": None})
    assert sum(conv_channels.suitable(k) for k in _direct(f)) >= 3  # forward twice, dx
    args = [rng.normal(size=(4, 32, 14, 14)), rng.normal(size=(32, 32, 3, 3)) * 0.1,
            rng.normal(size=(32, 32, 3, 3)) * 0.1]
    want = gc.function([x, w1, w2], outs, backend="numpy", optimize=False)(
        *[a.astype(np.float64) for a in args])
    for name, g, r in zip(("loss", "dx", "dw1", "dw2"), f(*[a.astype(np.float32)
                                                          for a in args]), want):
        np.testing.assert_allclose(g, r, rtol=0, atol=2e-5 * np.abs(r).max(), err_msg=name)


def test_an_update_folded_into_the_convolution():
    """An input image learnt by SGD: its gradient is a direct convolution (the data
    gradient), and the update x -= lr * dx folds into it (alpha = -lr, += C): one image,
    whose channel-major gradient is laid out as the image is."""
    rng = np.random.default_rng(3)
    xv = rng.normal(size=(1, 32, 14, 14)).astype(np.float32)
    wv = (rng.normal(size=(32, 32, 3, 3)) * 0.2).astype(np.float32)
    gv = rng.normal(size=(1, 32, 14, 14)).astype(np.float32)
    x = gc.parameter(xv.copy(), name="x")
    w, g = gc.placeholder(wv.shape, "float32", name="w"), gc.placeholder(gv.shape, "float32",
                                                                          name="g")
    loss = gc.sum(gc.nn.conv2d(x, w, padding=1) * g)
    step = gc.function([w, g], [], updates={x: x - 0.25 * gc.grad(loss, x)}, backend="llvm",
                       backend_options={"cache_dir": None})
    folded = [k for k in _direct(step) if k.accumulate]
    assert folded and abs(folded[0].alpha + 0.25) < 1e-6
    assert conv_channels.suitable(folded[0])
    step(wv, gv)
    # dL/dx = the convolution of g (padded) with w's taps turned, channels swapped
    flipped = np.transpose(wv[:, :, ::-1, ::-1], (1, 0, 2, 3)).astype(np.float64)
    want = xv - 0.25 * conv_ref(gv.astype(np.float64), flipped, 1, 1, 1)
    np.testing.assert_allclose(x.value, want, rtol=0, atol=2e-5 * np.abs(want).max())
