"""The first-maximum index of max pooling's gradient (an integer min over each window) is
reduced with the output axis innermost (graphc/schedule/collapse.py windows_outside), with
the reference's values: ties go to the first entry, a NaN wins its window."""
from __future__ import annotations

import numpy as np

import graphc as gc
from graphc.schedule import ir, schedule_graph
from graphc.schedule.collapse import windows_outside


def _pool_grad(backend: str, x: np.ndarray, options=None):
    xp = gc.placeholder(x.shape, "float64", name="x_pool_index")
    y = gc.nn.max_pool2d(gc.relu(xp), 2)  # relu: windows of zeros, all tied
    f = gc.function([xp], gc.grad(gc.sum(y * y * 0.5 + y), xp), backend=backend,
                    backend_options=options)
    return f, f(x)


def test_pool_index_reduces_its_output_axis_innermost_with_reference_values():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(2, 3, 20, 20))
    x[0, 0, 0, 1] = np.nan
    x[1, 2, 4:6, 4:6] = 1.5  # a window of four equal maxima
    f, got = _pool_grad("llvm", x)
    _, want = _pool_grad("numpy", x)
    _, kernels_mode = _pool_grad("numpy", x, {"mode": "kernels"})
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(kernels_mode, want, rtol=1e-12, atol=1e-12)
    assert got[1, 2, 4, 4] == 2.5 and got[1, 2, 4:6, 4:6].sum() == 2.5  # the first one only
    index = [k for k in schedule_graph(f.graph).kernels
             if isinstance(k, ir.Reduce) and k.op == "min"]
    assert index and all(k.shape[-1] == 10 and k.shape[-1] not in k.axes for k in index)


def test_only_small_integer_windows_move():
    body = ir.Load(ir.Access(0, (48, 2, 24, 1), 0), np.dtype(np.int64))
    k = ir.Reduce((64, 12, 2, 2), (2, 3), "min", body, ir.Access(1, (12, 1, 0, 0), 0),
                  np.dtype(np.int64))
    moved = windows_outside(k)
    assert moved.shape == (64, 2, 2, 12) and moved.axes == (1, 2)
    assert moved.out.strides == (12, 0, 0, 1)
    assert windows_outside(ir.Reduce(k.shape, k.axes, "sum", body, k.out, k.out_dtype)) == \
        ir.Reduce(k.shape, k.axes, "sum", body, k.out, k.out_dtype)
    as_float = ir.Reduce(k.shape, k.axes, "max", ir.Load(body.access, np.dtype(np.float32)),
                         k.out, np.dtype(np.float32))
    assert windows_outside(as_float) == as_float
