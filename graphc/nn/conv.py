"""Convolution and pooling (NCHW), as decompositions into padding, sliding windows and a
matrix product: their gradients come from those primitives' rules."""
from __future__ import annotations

from typing import Any

import numpy as np

import graphc.frontends as F
from graphc.frontends.convert import to_node
from graphc.sizes import all_static
from graphc.frontends.tensor import Tensor
from graphc.ops import make


def _pair(value: Any, what: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
        raise TypeError(f"{what}: expected an int or a pair of ints, got {value!r}")
    return pair


def _windows(x: Any, size: tuple[int, int], stride: tuple[int, int], what: str) -> Tensor:
    node = to_node(x, f"{what} input")
    if node.ndim != 4:
        raise ValueError(f"{what}: input must be NCHW (4 dimensions), got {node.type}")
    if min(stride) < 1 or min(size) < 1:
        raise ValueError(f"{what}: window sizes and strides must be >= 1")
    return Tensor(make("windows", node, axes=(2, 3), sizes=size, strides=stride))


def _dilated_windows(x: Any, size: tuple[int, int], stride: tuple[int, int],
                     dilation: tuple[int, int], what: str) -> Tensor:
    """Windows whose taps are `dilation` apart: the windows of the spanned size, read at
    every dilation-th offset (a strided view of a view: nothing is copied)."""
    if min(dilation) < 1:
        raise ValueError(f"{what}: dilation must be >= 1, got {dilation}")
    span = tuple(d * (k - 1) + 1 for k, d in zip(size, dilation))
    win = _windows(x, span, stride, what)  # type: ignore[arg-type]
    if dilation == (1, 1):
        return win
    return win[:, :, :, :, ::dilation[0], ::dilation[1]]


def conv2d(x: Any, w: Any, stride: Any = 1, padding: Any = 0, groups: int = 1,
           dilation: Any = 1) -> Tensor:
    """Cross-correlation of NCHW input `x` with OIHW weights `w` (PyTorch's conv2d):
    out[n, o, i, j] = sum_{c, kh, kw} x_pad[n, c, s*i + d*kh, s*j + d*kw] * w[o, c, kh, kw].
    groups > 1 splits channels into independent groups (groups == C: depthwise); dilation
    d spaces the kernel's taps d apart."""
    xs, ws = to_node(x, "conv2d input"), to_node(w, "conv2d weights")
    if ws.ndim != 4 or not all_static(ws.shape):
        raise ValueError(f"conv2d: weights must be OIHW with known sizes, got {ws.type}")
    sh, sw = _pair(stride, "conv2d stride")
    ph, pw = _pair(padding, "conv2d padding")
    dilation = _pair(dilation, "conv2d dilation")
    if min(ph, pw) < 0:
        raise ValueError(f"conv2d: padding must be >= 0, got {padding!r}")
    out_ch, cg, kh, kw = ws.shape
    if xs.ndim == 4 and not all_static(xs.shape[1:]):
        raise ValueError(f"conv2d: the input's channels, height and width must be known when "
                         f"the graph is built (only the batch size may be None), got {xs.type}")
    channels = xs.shape[1] if xs.ndim == 4 else None
    if not isinstance(groups, int) or groups < 1:
        raise ValueError(f"conv2d: groups must be an int >= 1, got {groups!r}")
    if channels is None or channels != cg * groups or out_ch % groups:
        raise ValueError(f"conv2d: input {xs.type} and weights {ws.type} do not fit "
                         f"groups={groups} (need C == weights.shape[1] * groups and O "
                         "divisible by groups)")
    if min(dilation) < 1:
        raise ValueError(f"conv2d: dilation must be >= 1, got {dilation}")
    if ph or pw:
        x = Tensor(make("pad", xs, pads=((0, 0), (0, 0), (ph, ph), (pw, pw))))
    if kh == kw == 1 and out_ch and cg and xs.ndim == 4:
        return _pointwise(Tensor(xs) if not (ph or pw) else x, w, (sh, sw), groups)
    win = _dilated_windows(x, (kh, kw), (sh, sw), dilation, "conv2d")  # (N, C, OH, OW, KH, KW)
    oh, ow = win.shape[2], win.shape[3]
    og = out_ch // groups
    if out_ch == 0 or cg * kh * kw == 0:  # no outputs, or sums of no terms: zeros
        if out_ch == 0:
            return F.sum(win, axis=(4, 5))[:, :0]  # (N, 0, OH, OW)
        zero = F.sum(win, axis=(1, 4, 5), keepdims=True)[:, :, :, :, 0, 0]  # (N, 1, OH, OW)
        return zero * F.constant(np.zeros((1, out_ch, 1, 1), xs.dtype))
    # columns: (G, Cg*KH*KW, N*OH*OW), weights: (G, Og, Cg*KH*KW). Columns in this order
    # are copied from the image a row of output pixels at a time (contiguous loads and
    # stores that vectorize), and the GEMM reads them without a transpose.
    cols = F.reshape(win, (-1, groups, cg, oh, ow, kh, kw))
    cols = F.transpose(cols, (1, 2, 5, 6, 0, 3, 4))  # (G, Cg, KH, KW, N, OH, OW)
    cols = F.reshape(cols, (groups, cg * kh * kw, -1))
    wmat = F.reshape(w, (groups, og, cg * kh * kw))
    out = F.matmul(wmat, cols)  # (G, Og, N*OH*OW)
    out = F.reshape(out, (groups, og, -1, oh, ow))
    out = F.transpose(out, (2, 0, 1, 3, 4))  # (N, G, Og, OH, OW)
    return F.reshape(out, (-1, out_ch, oh, ow))


def _pointwise(x: Tensor, w: Any, stride: tuple[int, int], groups: int) -> Tensor:
    """A 1x1 convolution as one matrix product per image, read where the image lies:
    (G, Og, Cg) @ (N, G, Cg, H*W) -> (N, G, Og, H*W), which is NCHW already. No im2col copy
    and no col2im: a stride is a strided slice, whose gradient is a view too."""
    if min(stride) < 1:
        raise ValueError(f"conv2d: window sizes and strides must be >= 1, got {stride}")
    if stride != (1, 1):
        x = x[:, :, ::stride[0], ::stride[1]]
    channels, h, wd = x.shape[1:]
    out_ch = to_node(w, "conv2d weights").shape[0]
    cols = F.reshape(x, (-1, groups, channels // groups, h * wd))
    wmat = F.reshape(w, (groups, out_ch // groups, channels // groups))
    return F.reshape(F.matmul(wmat, cols), (-1, out_ch, h, wd))


def _pool_input(x: Any, size: tuple[int, int], padding: Any, what: str,
                fill: str) -> Any:
    """x padded for pooling (PyTorch's rule: at most half the window on each side); `fill`
    "zero" pads zeros, "lowest" pads -inf (the lowest value of an integer dtype)."""
    ph, pw = _pair(padding, f"{what} padding")
    if min(ph, pw) < 0 or ph > size[0] // 2 or pw > size[1] // 2:
        raise ValueError(f"{what}: padding must be >= 0 and at most half the window "
                         f"{size}, got {padding!r}")
    if not (ph or pw):
        return x
    node = to_node(x, f"{what} input")
    if node.ndim != 4 or not all_static(node.shape[2:]):
        raise ValueError(f"{what}: padding needs an NCHW input with known height and width, "
                         f"got {node.type}")
    pads = ((0, 0), (0, 0), (ph, ph), (pw, pw))
    padded = Tensor(make("pad", node, pads=pads))
    if fill == "zero":
        return padded
    inside = Tensor(make("pad", to_node(np.ones((1, 1) + node.shape[2:], bool)), pads=pads))
    dtype = np.dtype(node.dtype)
    low = -np.inf if dtype.kind == "f" else np.iinfo(dtype).min
    return F.where(inside, padded, F.constant(np.asarray(low, dtype)))


def max_pool2d(x: Any, size: Any, stride: Any = None, padding: Any = 0) -> Tensor:
    """Maximum over size x size windows (stride defaults to the size); `padding` pads with
    -inf, so a window's maximum is always one of its input entries (PyTorch's rule)."""
    k = _pair(size, "max_pool2d size")
    s = _pair(stride if stride is not None else size, "max_pool2d stride")
    x = _pool_input(x, k, padding, "max_pool2d", "lowest")
    win = _windows(x, k, s, "max_pool2d")  # (N, C, OH, OW, KH, KW)
    # PyTorch's and JAX's convention: the cotangent goes to the first maximal entry of each
    # window in row-major order (a max reduction would split it among ties), or its first
    # NaN: the max_first reduction, whose backward pass alone looks for that entry.
    return Tensor(make("max_first", to_node(win, "max_pool2d input"), axes=(4, 5),
                       keepdims=False))


def avg_pool2d(x: Any, size: Any, stride: Any = None, padding: Any = 0) -> Tensor:
    """Mean over size x size windows (stride defaults to the size); `padding` pads zeros
    that count in the mean (PyTorch's default count_include_pad=True)."""
    k = _pair(size, "avg_pool2d size")
    s = _pair(stride if stride is not None else size, "avg_pool2d stride")
    x = _pool_input(x, k, padding, "avg_pool2d", "zero")
    return F.mean(_windows(x, k, s, "avg_pool2d"), axis=(4, 5))
