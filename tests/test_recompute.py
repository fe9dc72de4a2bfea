"""Cheap values recomputed by their readers instead of stored (graphc/schedule/recompute.py):
a BatchNorm's centered input and normalized value are no longer written in the forward
pass and read back in the backward pass, with values and gradients unchanged against the
numpy interpreter and finite differences; values whose sources change before a read, that
are read through a guard, that are costly, or that would make a reader load more large
buffers stay stored."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.backends.llvm import LLVM_POLICY
from graphc.backends.numpy.kernels import KernelExecutable
from graphc.schedule import SchedulePolicy, ir, lower, schedule_graph
from graphc.schedule.recompute import recompute_cheap

F32 = np.dtype("float32")


def _bn_step(conv: bool):
    """A conv (or dense) layer, training-mode BatchNorm, ReLU, a residual add and a loss:
    (inputs, [loss] + gradients of x, w, gamma, beta). The convolution's dY is stored for
    its weight gradient's GEMM and read by its data gradient's pad (twin_stores.py)."""
    if conv:
        x = gc.placeholder((2, 2, 10, 10), "float64", name="x_bn")
        w = gc.placeholder((4, 2, 3, 3), "float64", name="w_bn")
        h = gc.nn.conv2d(x, w, padding=1)
        axes, shape = (0, 2, 3), (1, -1, 1, 1)
    else:
        x = gc.placeholder((8, 5), "float64", name="x_bn")
        w = gc.placeholder((5, 4), "float64", name="w_bn")
        h = x @ w
        axes, shape = (0,), (1, -1)
    g = gc.placeholder((4,), "float64", name="g_bn")
    b = gc.placeholder((4,), "float64", name="b_bn")
    mean = h.mean(axis=axes, keepdims=True)
    var = ((h - mean) ** 2).mean(axis=axes, keepdims=True)
    y = gc.relu((h - mean) / gc.sqrt(var + 1e-5) * g.reshape(*shape) + b.reshape(*shape))
    loss = gc.sum(gc.tanh(y + h) * y)
    return [x, w, g, b], [loss] + gc.grad(loss, [x, w, g, b])


def _args(inputs, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=v.shape) for v in inputs]


def _large_stores(kernels, size: int) -> int:
    """Elementwise stores of at least `size` elements."""
    return sum(1 for k in kernels if isinstance(k, ir.Elementwise)
               for s in k.stores if int(np.prod(k.shape)) >= size)


@pytest.mark.parametrize("conv", [False, True])
def test_batch_norm_values_are_recomputed_not_stored(conv, monkeypatch):
    inputs, outputs = _bn_step(conv)
    args = _args(inputs, 3)
    f = gc.function(inputs, outputs, backend="llvm")
    size = 2 * 4 * 100 if conv else 8 * 4
    after = schedule_graph(f.graph, policy=LLVM_POLICY).kernels
    monkeypatch.setattr(lower, "recompute_cheap", lambda kernels, *rest: kernels)
    before = schedule_graph(f.graph, policy=LLVM_POLICY).kernels
    monkeypatch.undo()
    # the centered value is no longer stored in the forward pass (the normalized one, read
    # back by gamma's gradient before, is not read there since that sum shares the
    # centered value's product with the variance's: passes/sum_factors.py)
    assert _large_stores(after, size) <= _large_stores(before, size) - 1
    assert len(after) < len(before)
    want = gc.function(inputs, outputs, backend="numpy", optimize=False)(*args)
    runner = KernelExecutable(f.graph, policy=SchedulePolicy(implicit_gemm=True))
    for got in (f(*args), runner.run(args)):
        for w, g in zip(want, got):
            np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("conv", [False, True])
def test_batch_norm_gradients_match_finite_differences(conv):
    inputs, outputs = _bn_step(conv)
    args = _args(inputs, 4)
    f = gc.function(inputs, outputs, backend="llvm")
    loss = gc.function(inputs, outputs[:1], backend="llvm")
    grads = f(*args)[1:]
    eps = 1e-6
    for which, grad in enumerate(grads):
        for j in range(0, args[which].size, 3):
            up = [a.copy() for a in args]
            down = [a.copy() for a in args]
            up[which].reshape(-1)[j] += eps
            down[which].reshape(-1)[j] -= eps
            fd = (loss(*up)[0] - loss(*down)[0]) / (2 * eps)
            np.testing.assert_allclose(grad.reshape(-1)[j], fd, rtol=1e-5, atol=1e-6)


# ---- the pass on kernels made by hand ------------------------------------------------------

def _load(bid: int, strides=(4, 1), offset: int = 0) -> ir.Load:
    return ir.Load(ir.Access(bid, strides, offset), F32)


def _maker(value: ir.Expr, out: int = 2) -> ir.Elementwise:
    """(8, 4) = value, stored row-major into `out`."""
    return ir.Elementwise((8, 4), (ir.Store(ir.Access(out, (4, 1)), value),))


def _reader(load: ir.Load, shape=(8, 4), out: int = 5) -> ir.Elementwise:
    """out = 2 * load, row-major over `shape`."""
    return ir.Elementwise(shape, (ir.Store(ir.Access(out, ir.contiguous_strides(shape)),
                                           ir.Apply("mul", (load, ir.Const(2.0, F32)), F32)),))


def _centered() -> ir.Expr:
    """buffer 0 less a per-column value from buffer 1: x - mean."""
    return ir.Apply("sub", (_load(0), _load(1, (0, 1))), F32)


def _loads(k: ir.Kernel) -> set[int]:
    return {ld.access.buffer for body in k.bodies() for ld in ir.expr_loads(body)}


def test_a_reader_computes_the_value_through_permuted_axes():
    transposed = _reader(_load(2, (1, 4)), shape=(4, 8))  # reads buffer 2 transposed
    out = recompute_cheap([_maker(_centered()), transposed], temps={2, 5})
    assert _loads(out[1]) == {0, 1}
    (store,) = out[1].stores
    (x,) = [ld for ld in ir.expr_loads(store.value) if ld.access.buffer == 0]
    assert x.access.strides == (1, 4)  # buffer 0 read transposed too


def test_a_source_rewritten_before_the_read_keeps_the_store():
    update = ir.Elementwise((4,), (ir.Store(ir.Access(1, (1,)), ir.Const(0.0, F32)),))
    kernels = [_maker(_centered()), update, _reader(_load(2))]
    assert _loads(recompute_cheap(kernels, temps={2, 5})[2]) == {2}


def test_a_guarded_or_shifted_read_keeps_the_store():
    guard = ir.Guard((ir.Bound(((0, 1),), -1, 0, 8),), ir.Const(0.0, F32))
    guarded = ir.Load(ir.Access(2, (4, 1), -4), F32, guard)
    for load in (guarded, _load(2, (4, 1), 1)):
        kernels = [_maker(_centered()), _reader(load)]
        assert _loads(recompute_cheap(kernels, temps={2, 5})[1]) == {2}


def test_a_costly_value_or_one_of_two_large_sources_stays_stored():
    costly = ir.Apply("exp", (_load(0),), F32)
    two = ir.Apply("add", (_load(0), _load(3)), F32)
    for value in (costly, two):
        kernels = [_maker(value), _reader(_load(2))]
        assert _loads(recompute_cheap(kernels, temps={2, 5})[1]) == {2}
    # ...unless the reader loads the second large source already
    both = ir.Elementwise((8, 4), (ir.Store(ir.Access(5, (4, 1)), ir.Apply(
        "add", (_load(2), _load(3)), F32)),))
    assert _loads(recompute_cheap([_maker(two), both], temps={2, 5})[1]) == {0, 3}


def test_every_reader_or_none():
    """One reader that cannot recompute (a GEMM) keeps the store for all of them."""
    gemm = ir.Gemm((), 8, 2, 4, ir.Access(2, (4, 1)), ir.Access(6, (2, 1)),
                   ir.Access(7, (2, 1)), F32)
    kernels = [_maker(_centered()), _reader(_load(2)), gemm]
    assert _loads(recompute_cheap(kernels, temps={2, 5, 7})[1]) == {2}


def test_an_output_is_stored():
    kernels = [_maker(_centered()), _reader(_load(2))]
    assert _loads(recompute_cheap(kernels, temps={5})[1]) == {2}


def test_a_value_over_a_sibling_store_reads_the_sibling():
    """(dy * mask) * gamma beside dy * mask: the reader multiplies the stored sibling."""
    masked = ir.Apply("where", (ir.Apply("greater", (_load(0), ir.Const(0.0, F32)), F32),
                                _load(3), ir.Const(0.0, F32)), F32)
    scaled = ir.Apply("mul", (masked, _load(1, (0, 1))), F32)
    maker = ir.Elementwise((8, 4), (ir.Store(ir.Access(4, (4, 1)), masked),
                                    ir.Store(ir.Access(2, (4, 1)), scaled)))
    out = recompute_cheap([maker, _reader(_load(2))], temps={2, 4, 5})
    assert _loads(out[1]) == {4, 1}
    # the mask's buffer rewritten in between: the sibling no longer holds the value
    clobber = ir.Elementwise((8, 4), (ir.Store(ir.Access(4, (4, 1)), ir.Const(0.0, F32)),))
    out = recompute_cheap([maker, clobber, _reader(_load(2))], temps={2, 4, 5})
    assert _loads(out[2]) == {2}
