"""The direct convolution's prefetch of the next work item's image lines
(backends/llvm/conv_direct.py): the offsets asked for touch every cache line the taps read,
and the kernels carry them (values are covered by tests/test_conv_direct.py)."""
from __future__ import annotations

import re

import numpy as np
import pytest

import graphc as gc
from conv_reference import conv_ref
from graphc.backends.llvm.conv_direct import _line_points

RNG = np.random.default_rng(7)


def _lines(offsets, line: int, base: int) -> set[int]:
    return {(base + o) // line for o in offsets}


@pytest.mark.parametrize("taps,span", [
    ([0, 1, 2, 16, 17, 18, 32, 33, 34], 14),  # W6's 32 channels: rows of 14, padded 16
    ([0, 1, 2, 30, 31, 32, 60, 61, 62], 28),  # W6's 16 channels: rows of 28, padded 30
    ([0, 2, 4, 26, 28, 30], 12),  # dilated taps
    ([0, 100], 1),  # far apart, one element each
    ([0, 1, 2, 3, 4], 47),  # a long row: several lines a span
    ([5], 16),  # exactly a line long
])
@pytest.mark.parametrize("base", [0, 3, 15, 16, 37])  # where the lines start
def test_every_line_the_taps_read_is_asked_for(taps, span, base):
    line = 16
    points = _line_points(taps, span, line)
    read = {o for t in taps for o in range(t, t + span)}
    assert _lines(points, line, base) == _lines(read, line, base)
    assert set(points) <= read  # nothing outside the reads
    assert len(points) == len(set(points))


@pytest.mark.parametrize("batch,prefetched", [(2, False), (64, True)])
def test_direct_kernels_prefetch_large_images(batch, prefetched, monkeypatch):
    """A padded image of 64 x 16 x 16 x 16 floats (1 MB) is prefetched, one of 2 images
    (32 KB: it stays in L2) is not. (conv_direct.py's: its 16 channels of rows of 14
    would otherwise be computed with the channels as vectors, conv_channels.py, which does
    not prefetch.)"""
    from graphc.backends.llvm import conv_channels
    monkeypatch.setattr(conv_channels, "suitable", lambda k: False)
    xs, ws = (batch, 16, 14, 14), (16, 16, 3, 3)
    x = gc.placeholder(xs, "float32", name="x")
    w = gc.placeholder(ws, "float32", name="w")
    f = gc.function([x, w], gc.nn.conv2d(x, w, padding=1), backend="llvm")
    xv, wv = RNG.normal(size=xs).astype(np.float32), RNG.normal(size=ws).astype(np.float32)
    np.testing.assert_allclose(f(xv, wv), conv_ref(xv, wv, 1, 1, 1), rtol=1e-4, atol=1e-4)
    parts = re.findall(r"define[^\n]*_direct_part\".*?^}", f.source, re.S | re.M)
    assert parts and all(("llvm.prefetch.p0" in p) == prefetched for p in parts)


@pytest.mark.parametrize("xs,ws,stride,padding,groups", [
    ((2, 3, 11, 13), (3, 3, 3, 3), 1, 2, 1),  # odd sizes
    ((2, 4, 12, 14), (6, 2, 3, 3), 1, 1, 2),  # groups
    ((2, 3, 17, 51), (4, 3, 3, 3), 2, 1, 1),  # stride 2 (where a policy takes it)
    ((2, 8, 12, 12), (16, 8, 5, 5), 1, 0, 1),  # rows of 8, two a vector
])
def test_prefetching_kernels_keep_their_values(xs, ws, stride, padding, groups, monkeypatch):
    """Every geometry with the prefetch on (threshold 0): the IR is valid and the values
    the reference's, float64."""
    import dataclasses

    from graphc.backends.llvm import LLVM_POLICY, conv_direct
    from graphc.backends.llvm.backend import LLVMBackend
    monkeypatch.setattr(conv_direct, "PREFETCH_MIN_BYTES", 0)
    monkeypatch.setattr(LLVMBackend, "policy",
                        dataclasses.replace(LLVM_POLICY, direct_conv_stride=2))
    monkeypatch.setenv("GRAPHC_CACHE", "0")
    x = gc.placeholder(xs, "float64", name="x")
    w = gc.placeholder(ws, "float64", name="w")
    f = gc.function([x, w], gc.nn.conv2d(x, w, stride=stride, padding=padding,
                                         groups=groups), backend="llvm")
    xv, wv = RNG.normal(size=xs), RNG.normal(size=ws)
    np.testing.assert_allclose(f(xv, wv), conv_ref(xv, wv, stride, padding, groups),
                               rtol=1e-10, atol=1e-10)
    assert "llvm.prefetch.p0" in f.source
