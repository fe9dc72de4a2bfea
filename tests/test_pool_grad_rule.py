"""relu's gradient mask under a max pool's gradient moved to the pool's first-maximum
index (graphc/passes/pool_grad.py): windows whose maximum is not positive pick no entry.
Values against the unoptimized numpy interpreter, with ties, all-negative windows, zeros
and nans; the rule's scope; and a LeNet-like step's schedule, where the mask kernel over
the first activation is gone and the pool gradient writes the weight gradient's layout."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.backends.llvm import LLVM_POLICY
from graphc.schedule import ir, schedule_graph


def _pool_step(shape, dtype: str = "float64", pool=None):
    """loss = sum(sin(max_pool2d(relu(x * w)))) and its gradient by x and w."""
    pool = pool or (lambda h: gc.nn.max_pool2d(h, 2))
    x = gc.placeholder(shape, dtype, name="x_pool")
    w = gc.placeholder((1, shape[1], 1, 1), dtype, name="w_pool")
    h = gc.relu(x * w)
    loss = gc.sum(gc.sin(pool(h)))
    return [x, w], [loss] + gc.grad(loss, [x, w])


def _awkward_input(shape, rng) -> np.ndarray:
    """Windows with ties at the maximum (positive and zero), all-negative windows, zeros
    and a nan: every case the mask and the first maximum must agree on."""
    x = rng.normal(size=shape)
    x[0, 0, 0:2, 0:2] = 1.5  # a positive tie: the first entry takes it all
    x[0, 0, 0:2, 2:4] = -1.0  # all negative: relu makes a tie at zero, masked out
    x[0, 0, 2:4, 0:2] = [[0.0, -2.0], [0.0, 0.0]]  # a tie at zero
    x[0, 1, 2, 3] = np.nan  # a nan: the window's cotangent goes to it, masked out
    return x


def _fired(f) -> int:
    return sum(p.fired.get("relu_mask_through_max_pool", 0) for p in f.report.passes)


@pytest.mark.parametrize("backend,options", [("llvm", {"sizes": "specialize"}),
                                             ("llvm", {"sizes": "symbolic"}),
                                             ("numpy", None)])
def test_gradients_agree_with_the_unoptimized_graph(backend, options):
    shape = (2, 3, 6, 8)
    inputs, outputs = _pool_step(shape)
    rng = np.random.default_rng(11)
    args = [_awkward_input(shape, rng), rng.normal(size=(1, 3, 1, 1))]
    args[1][0, 2] = -0.5  # one channel's activations flipped: other windows negative
    want = gc.function(inputs, outputs, backend="numpy", optimize=False)(*args)
    f = gc.function(inputs, outputs, backend=backend, backend_options=options)
    got = f(*args)
    assert _fired(f) == 1
    for g, r in zip(got, want):
        np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-12)


def test_float32_gradient_matches_finite_differences():
    shape = (2, 2, 4, 4)
    inputs, outputs = _pool_step(shape, "float32")
    rng = np.random.default_rng(12)
    # distinct values 0.1 apart, none near zero: no kink within eps
    x = ((rng.permutation(64) - 31.5) * 0.1).reshape(shape).astype(np.float32)
    w = np.array([1.0, -1.0], np.float32).reshape(1, 2, 1, 1)
    f = gc.function(inputs, outputs, backend="llvm")
    loss = gc.function(inputs, outputs[:1], backend="llvm")
    grad_x = f(x, w)[1]
    assert 0 < np.count_nonzero(grad_x) <= 16  # at most one entry of each window
    eps = 1e-2
    for j in range(x.size):
        up, down = x.copy(), x.copy()
        up.reshape(-1)[j] += eps
        down.reshape(-1)[j] -= eps
        fd = (loss(up, w)[0] - loss(down, w)[0]) / (2 * eps)
        np.testing.assert_allclose(grad_x.reshape(-1)[j], fd, rtol=2e-2, atol=2e-3)


def test_overlapping_windows_and_other_masks_keep_their_values():
    shape = (2, 2, 7, 7)
    rng = np.random.default_rng(13)
    args = [_awkward_input(shape, rng), rng.normal(size=(1, 2, 1, 1))]
    cases = [(lambda h: gc.nn.max_pool2d(h, 3, stride=2), 1),  # overlapping: still exact
             (lambda h: gc.nn.max_pool2d(h, 2, padding=1), 0),  # a pad between: not matched
             (lambda h: gc.nn.avg_pool2d(h, 2), 0)]  # no maximum: not matched
    for pool, fires in cases:
        inputs, outputs = _pool_step(shape, pool=pool)
        want = gc.function(inputs, outputs, backend="numpy", optimize=False)(*args)
        f = gc.function(inputs, outputs, backend="llvm")
        got = f(*args)
        assert _fired(f) == fires
        for g, r in zip(got, want):
            np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-12)


def test_a_mask_of_another_value_is_not_moved():
    x = gc.placeholder((2, 2, 4, 4), "float64", name="x_other")
    h = gc.relu(x)
    pooled = gc.nn.max_pool2d(h, 2)
    # relu of a different value masks the pool's gradient: the rule must not fire
    loss = gc.sum(gc.sin(pooled)) + gc.sum(gc.relu(x - 0.25) * 0.0)
    f = gc.function([x], [loss] + gc.grad(loss, [x]), backend="llvm")
    rng = np.random.default_rng(14)
    arg = rng.normal(size=(2, 2, 4, 4))
    want = gc.function([x], [loss] + gc.grad(loss, [x]), backend="numpy",
                       optimize=False)(arg)
    for g, r in zip(f(arg), want):
        np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-12)


def _lenet_step():
    x = gc.placeholder((4, 1, 14, 14), "float32", name="x")
    w1 = gc.placeholder((4, 1, 3, 3), "float32", name="w1")
    w2 = gc.placeholder((6, 4, 3, 3), "float32", name="w2")
    h = gc.nn.max_pool2d(gc.relu(gc.nn.conv2d(x, w1)), 2)
    h = gc.nn.max_pool2d(gc.relu(gc.nn.conv2d(h, w2)), 2)
    loss = gc.sum(gc.sin(h))
    return [x, w1, w2], [loss] + gc.grad(loss, [w1, w2])


def test_a_lenet_step_has_no_mask_kernel_over_its_activations():
    inputs, outputs = _lenet_step()
    f = gc.function(inputs, outputs, backend="llvm")
    kernels = schedule_graph(f.graph, policy=LLVM_POLICY).kernels
    # each pool gradient's kernel writes the layout its weight gradient's GEMM reads; no
    # kernel applies relu's mask to an activation or copies one into that layout
    placing = [k for k in kernels if isinstance(k, ir.Elementwise)
               and "windows_grad" in k.fused and "equal" in k.fused]
    gemm_reads = {k.a.buffer for k in kernels if isinstance(k, ir.Gemm)}
    assert len(placing) == 2
    assert all({s.access.buffer for s in k.stores} <= gemm_reads for k in placing)
    assert not [k for k in kernels if isinstance(k, ir.Elementwise) and "greater" in k.fused]
    placed = {s.access.buffer for k in placing for s in k.stores}
    assert not [k for k in kernels if isinstance(k, ir.Elementwise) and k.fused == ("copy",)
                and placed & set(k.reads())]
    rng = np.random.default_rng(15)
    args = [rng.normal(size=v.shape).astype(np.float32) for v in inputs]
    want = gc.function(inputs, outputs, backend="numpy", optimize=False)(*args)
    for g, r in zip(f(*args), want):
        np.testing.assert_allclose(g, r, rtol=2e-4, atol=2e-5)
