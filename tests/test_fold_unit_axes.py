"""A parameter update folds into the GEMM that makes its gradient also when the parameter has
axes of size 1 (a convolution's weights [8, 1, 5, 5], one input channel), whose strides
the update and the GEMM write differently (graphc/schedule/epilogue.py)."""
from __future__ import annotations

import numpy as np

import graphc as gc
from graphc.schedule import ir, schedule_graph


def _step(backend: str, x: np.ndarray, w0: np.ndarray):
    w = gc.parameter(w0.copy(), name="w_unit")
    xp = gc.placeholder(x.shape, "float64", name="x_unit")
    loss = gc.sum(gc.tanh(gc.nn.conv2d(xp, w)))
    f = gc.function([xp], loss, updates={w: w - 0.1 * gc.grad(loss, w)}, backend=backend)
    f(x)
    return f, w.value


def test_update_of_a_weight_with_a_unit_axis_folds_into_its_gradient_gemm():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, 1, 9, 9))
    w0 = rng.normal(size=(3, 1, 3, 3)) * 0.3
    f, got = _step("llvm", x, w0)
    _, want = _step("numpy", x, w0)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert not np.allclose(got, w0)
    kernels = schedule_graph(f.graph).kernels
    assert any(isinstance(k, ir.Gemm) and k.accumulate and k.alpha == -0.1 for k in kernels)
    assert not any(isinstance(k, ir.Elementwise) and "update" in k.fused for k in kernels)
