"""The direct convolution's prefetch of the next work item's image lines
(backends/llvm/conv_direct.py): the offsets asked for touch every cache line the taps read,
and the kernels carry them (values are covered by tests/test_conv_direct.py)."""
from __future__ import annotations

import re

import numpy as np
import pytest

import graphc as gc
from graphc.backends.llvm.conv_direct import _line_points


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


def test_direct_kernels_prefetch_the_image():
    x = gc.placeholder((2, 16, 14, 14), "float32", name="x")
    w = gc.placeholder((16, 16, 3, 3), "float32", name="w")
    f = gc.function([x, w], gc.nn.conv2d(x, w, padding=1), backend="llvm")
    xv = np.ones((2, 16, 14, 14), np.float32)
    f(xv, np.ones((16, 16, 3, 3), np.float32))
    parts = re.findall(r"define[^\n]*_direct_part\".*?^}", f.source, re.S | re.M)
    assert parts and all("llvm.prefetch.p0" in p for p in parts)
