"""benchmarks/bench_winograd.py's Winograd F(2x2, 3x3) convolution (what the W6 note's
"Winograd: measured, not faster" rests on) equals a 3x3 convolution with padding 1, on the
numpy and llvm backends."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import graphc as gc
from conv_reference import conv_ref

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import bench_winograd  # noqa: E402


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
@pytest.mark.parametrize("n,c,k,h", [(2, 3, 4, 6), (1, 5, 2, 8)])
def test_winograd_conv_equals_a_padded_3x3_convolution(backend, n, c, k, h):
    rng = np.random.default_rng(n + c + k + h)
    x = gc.placeholder((n, c, h, h), "float64", name="x")
    w = gc.placeholder((k, c, 3, 3), "float64", name="w")
    f = gc.function([x, w], bench_winograd.winograd_conv(x, w, n, c, k, h), backend=backend)
    xv, wv = rng.normal(size=(n, c, h, h)), rng.normal(size=(k, c, 3, 3))
    np.testing.assert_allclose(f(xv, wv), conv_ref(xv, wv, 1, 1, 1), rtol=1e-10, atol=1e-10)
