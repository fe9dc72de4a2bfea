"""A direct convolution's vectors that hold two rows' halves side by side (rows of 8 two to a
vector, rows of 24 two in three vectors: LeNet's) are read as two half-vector loads joined,
not as masked loads (backends/llvm/conv_direct.py), with the reference's values."""
from __future__ import annotations

import re

import numpy as np
import pytest

import graphc as gc
from conv_reference import conv_ref

RNG = np.random.default_rng(24)


def _direct_parts(source: str) -> list[str]:
    """The bodies of the direct convolutions' part functions in the generated IR."""
    return re.findall(r"define internal void @\"?[^ (]+_direct_part\"?\(.*?\n}\n", source, re.S)


@pytest.mark.parametrize("xs,ws", [((3, 8, 12, 12), (16, 8, 5, 5)),  # rows of 8
                                   ((3, 1, 28, 28), (8, 1, 5, 5)),  # rows of 24
                                   ((2, 2, 12, 10), (4, 2, 5, 3))])  # rows of 8, odd taps
def test_half_rows_are_joined_loads_with_reference_values(xs, ws):
    x = gc.placeholder(xs, "float32", name="x")
    w = gc.placeholder(ws, "float32", name="w")
    f = gc.function([x, w], gc.nn.conv2d(x, w))
    parts = _direct_parts(f.source)
    assert parts and all("masked.load" not in p for p in parts)
    xv, wv = RNG.normal(size=xs), RNG.normal(size=ws)
    np.testing.assert_allclose(f(xv, wv), conv_ref(xv, wv, 1, 0, 1), rtol=1e-5, atol=1e-4)
