"""Elementwise kernels over different shapes merge when the second reads what the first
writes through an affine change of indices (graphc/schedule/respace.py): the ReLU mask
over an image and the transposed copy of it a weight gradient reads become one pass, with
the same values."""
from __future__ import annotations

import numpy as np

import graphc as gc
from graphc.schedule import ir, schedule_graph
from graphc.schedule.respace import axis_map


def test_a_transposed_read_is_affine_in_the_writers_indices():
    # written contiguously over (4, 3, 6); read as its transpose (3, 4, 6)
    amap = axis_map((4, 3, 6), (18, 6, 1), (3, 4, 6), (6, 18, 1))
    assert amap == ((((1, 1),), 0), (((0, 1),), 0), (((2, 1),), 0))
    # written over windows (2, 2, 3, 3) of a (6, 6) image, h = 3 * oh + kh: read as rows
    amap = axis_map((2, 3, 2, 3), (18, 6, 3, 1), (6, 6), (6, 1))
    assert amap == ((((0, 3), (1, 1)), 0), (((2, 3), (3, 1)), 0))


def test_a_reshape_that_carries_is_not_affine():
    assert axis_map((4, 6), (6, 1), (3, 8), (8, 1)) is None  # row j of 8 straddles rows of 6
    assert axis_map((4, 6), (6, 1), (4, 5), (5, 1)) is None  # other sizes
    assert axis_map((4, 6), (12, 1), (4, 6), (6, 1)) is None  # not dense


def _pool_relu_step(backend: str, x: np.ndarray, w: np.ndarray, options=None):
    xp = gc.placeholder(x.shape, name="x_respace")
    wp = gc.placeholder(w.shape, name="w_respace")
    bias = gc.constant(np.linspace(-0.5, 0.5, w.shape[0]).astype(x.dtype))
    bp = gc.reshape(bias, (1, w.shape[0], 1, 1))
    h = gc.relu(gc.nn.conv2d(xp, wp) + bp)
    loss = gc.sum(gc.nn.max_pool2d(h, 2) ** 2)
    # (no gradient for x, as for a first layer: the copy follows the mask, which the
    # bias's gradient reads too)
    f = gc.function([xp, wp], [loss, *gc.grad(loss, [wp, bias])], backend=backend,
                    backend_options=options)
    return f, f(x, w)


def test_the_pool_gradient_writes_the_transposed_copy_with_reference_values():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3, 2, 9, 9)).astype(np.float32)
    w = rng.normal(size=(4, 2, 2, 2)).astype(np.float32)
    _, want = _pool_relu_step("numpy", x.astype(np.float64), w.astype(np.float64))
    f, got = _pool_relu_step("llvm", x, w)
    _, kernels_mode = _pool_relu_step("numpy", x, w, {"mode": "kernels"})
    for g, k, r in zip(got, kernels_mode, want):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(k, r, rtol=1e-4, atol=1e-4)
    schedule = schedule_graph(f.graph)
    kernels = [k for k in schedule.kernels if isinstance(k, ir.Elementwise)]
    # relu's mask is the pool's first-maximum index's (graphc/passes/pool_grad.py): no
    # kernel masks the activation, and the pooling gradient writes the transposed copy the
    # weight gradient reads in its one pass; the bias's gradient sums the copy too, so the
    # gradient's own layout is not stored (twin_stores.py)
    assert not [k for k in kernels if "greater" in k.fused]
    (placing,) = [k for k in kernels if "windows_grad" in k.fused]
    assert "copy" in placing.fused and len(placing.stores) == 1
    dy = placing.stores[0].access.buffer
    assert any(dy in (k.a.buffer, k.b.buffer) for k in schedule.kernels
               if isinstance(k, ir.Gemm))
    assert any(k.op == "sum" and dy in k.reads() for k in schedule.kernels
               if isinstance(k, ir.Reduce))


def _around_a_product():
    x = gc.placeholder((32, 256), "float64", name="x_hoist")
    w = gc.placeholder((256, 64), "float64", name="w_hoist")
    product = gc.tanh(x) @ w  # tanh(x) stored for the GEMM
    after = gc.sigmoid(x) * 3.0 + gc.tanh(x)  # needs nothing of the GEMM's
    return [x, w], [product, after]


def test_an_elementwise_kernel_after_an_independent_gemm_joins_the_one_before():
    """An LSTM backward step's shape: gate kernel, GEMM, then a kernel that reads only what
    the gate kernel could compute. It merges into the gate kernel: one pass less."""
    from graphc.backends.llvm import LLVM_POLICY
    inputs, outputs = _around_a_product()
    f = gc.function(inputs, outputs, backend="llvm")
    kinds = [k.kind for k in schedule_graph(f.graph, policy=LLVM_POLICY).kernels]
    assert kinds == ["elementwise", "gemm"], kinds
    rng = np.random.default_rng(3)
    xv, wv = rng.normal(size=(32, 256)), rng.normal(size=(256, 64))
    got = f(xv, wv)
    np.testing.assert_allclose(got[0], np.tanh(xv) @ wv, rtol=1e-12)
    np.testing.assert_allclose(got[1], 3 / (1 + np.exp(-xv)) + np.tanh(xv), rtol=1e-12)


def test_a_kernel_reading_the_gemm_stays_after_it():
    x = gc.placeholder((32, 64), "float64", name="x_after")
    w = gc.placeholder((64, 64), "float64", name="w_after")
    y = gc.tanh(x) @ w
    f = gc.function([x, w], [y, gc.sigmoid(y) + gc.tanh(x)], backend="llvm")
    from graphc.backends.llvm import LLVM_POLICY
    kinds = [k.kind for k in schedule_graph(f.graph, policy=LLVM_POLICY).kernels]
    assert kinds == ["elementwise", "gemm", "elementwise"], kinds
    rng = np.random.default_rng(4)
    xv, wv = rng.normal(size=(32, 64)), rng.normal(size=(64, 64))
    want = np.tanh(xv) @ wv
    np.testing.assert_allclose(f(xv, wv)[1], 1 / (1 + np.exp(-want)) + np.tanh(xv),
                               rtol=1e-12)


def test_merges_stop_at_the_policys_buffer_limit():
    """A target that keeps a pointer per buffer in registers (CUDA) caps what one merged
    elementwise kernel touches; without a cap the same graph merges into fewer, wider
    kernels. Either way the values agree."""
    from graphc.schedule.policy import SchedulePolicy
    xs = [gc.placeholder((4, 3), "float32", name=f"x{i}") for i in range(12)]
    outs = [gc.exp(x) * 2.0 for x in xs]  # a kernel each, merged as neighbours
    f = gc.function(xs, outs, backend="numpy")

    def widest(policy: SchedulePolicy) -> int:
        kernels = schedule_graph(f.graph, policy=policy).kernels
        return max(len(k.reads() | k.writes()) for k in kernels
                   if isinstance(k, ir.Elementwise))

    assert widest(SchedulePolicy()) > 8
    assert widest(SchedulePolicy(max_kernel_buffers=8)) <= 8
    data = [np.full((4, 3), 0.1 * i, np.float32) for i in range(12)]
    want = f(*data)
    got = gc.function(xs, outs, backend="cuda", backend_options={"emulate": True})(*data)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5)
