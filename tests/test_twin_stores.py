"""Reads of one of two stores of the same value moved to the other
(graphc/schedule/twin_stores.py): the new strides read the same elements (permuted axes,
offsets, slices), reads that no strides of the other layout express keep the store, and a
LeNet-like step's bias gradients sum the weight gradient's layout of dY, with values
unchanged against the numpy interpreter and finite differences."""
from __future__ import annotations

import numpy as np

import graphc as gc
from graphc.backends.llvm import LLVM_POLICY
from graphc.backends.numpy.kernels import KernelExecutable
from graphc.schedule import SchedulePolicy, ir, schedule_graph
from graphc.schedule.dead_stores import drop_dead_stores
from graphc.schedule.twin_stores import redirect_twin_reads

F32 = np.dtype("float32")


def _maker() -> ir.Elementwise:
    """(2, 3, 4) = exp(buffer 0), stored as it is into 1 and with axes 0, 1 swapped into 2."""
    value = ir.Apply("exp", (ir.Load(ir.Access(0, (12, 4, 1)), F32),), F32)
    return ir.Elementwise((2, 3, 4), (ir.Store(ir.Access(1, (12, 4, 1)), value),
                                      ir.Store(ir.Access(2, (4, 8, 1)), value)))


def _sum_of(access: ir.Access, shape: tuple[int, ...], out: int = 3) -> ir.Reduce:
    return ir.Reduce(shape, (0,), "sum", ir.Load(access, F32),
                     ir.Access(out, (0,) + ir.contiguous_strides(shape[1:])), F32)


def _run(kernels: list[ir.Kernel], buffers: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """The kernels' stores evaluated by index, in numpy (loads and exp: what these tests
    use)."""
    def evaluate(e: ir.Expr, load) -> np.ndarray:
        if isinstance(e, ir.Load):
            return load(e.access)
        assert isinstance(e, ir.Apply) and e.op == "exp"
        return np.exp(evaluate(e.args[0], load))

    out = {b: a.copy() for b, a in buffers.items()}

    def flat(acc: ir.Access, index: np.ndarray) -> np.ndarray:
        return acc.offset + np.tensordot(np.array(acc.strides), index, axes=1)

    for k in kernels:
        shape = k.shape  # type: ignore[attr-defined]
        index = np.indices(shape).reshape(len(shape), -1)

        def load(acc: ir.Access, index: np.ndarray = index) -> np.ndarray:
            return out[acc.buffer].reshape(-1)[flat(acc, index)]
        if isinstance(k, ir.Elementwise):
            for s in k.stores:
                out[s.access.buffer].reshape(-1)[flat(s.access, index)] = evaluate(s.value, load)
        else:
            assert isinstance(k, ir.Reduce)
            target = out[k.out.buffer].reshape(-1)
            target[:] = 0
            np.add.at(target, flat(k.out, index), evaluate(k.body, load))
    return out


def test_a_permuted_read_moves_and_the_unread_store_is_dropped():
    # the reader sums buffer 1 over axis 0, seen as (2, 3, 4): reads 1<12,4,1>
    kernels = [_maker(), _sum_of(ir.Access(1, (12, 4, 1)), (2, 3, 4))]
    moved = redirect_twin_reads(kernels, {1, 2, 3})
    assert isinstance(moved[1], ir.Reduce)
    assert moved[1].body == ir.Load(ir.Access(2, (4, 8, 1)), F32)
    kept = drop_dead_stores(moved, {1, 2, 3})
    assert [s.access.buffer for s in kept[0].stores] == [2]  # type: ignore[attr-defined]


def test_offsets_and_slices_read_the_same_elements_in_the_other_layout():
    rng = np.random.default_rng(0)
    x = rng.normal(size=24).astype(np.float32)
    buffers = {0: x, 1: np.zeros(24, F32), 2: np.zeros(24, F32), 3: np.zeros(4, F32)}
    # the reader sums rows 1..2 of each (i, ., l) with l in 0, 2 (a slice with offset 4)
    reader = _sum_of(ir.Access(1, (12, 4, 2), 4), (2, 2, 2), out=3)
    kernels = [_maker(), reader]
    moved = redirect_twin_reads(kernels, {1, 2, 3})
    assert isinstance(moved[1], ir.Reduce) and moved[1].body != reader.body
    want = _run(kernels, buffers)[3]
    got = _run(drop_dead_stores(moved, {1, 2, 3}), buffers)[3]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_reads_no_strides_express_or_templates_keep_both_stores():
    # reading buffer 1 as 24 elements in a row carries from one axis into the next
    flat = ir.Reduce((24,), (0,), "sum", ir.Load(ir.Access(1, (1,)), F32),
                     ir.Access(3, (0,)), F32)
    assert redirect_twin_reads([_maker(), flat], {1, 2, 3})[1] is flat
    # a GEMM reading it: no body whose strides could change
    gemm = ir.Gemm((), 6, 4, 1, ir.Access(1, (4, 1)), ir.Access(0, (1, 1)),
                   ir.Access(3, (1, 1)), F32)
    reader = _sum_of(ir.Access(1, (12, 4, 1)), (2, 3, 4))
    assert redirect_twin_reads([_maker(), gemm, reader], {1, 2, 3})[2] is reader
    # a buffer written again later, or not a temporary
    again = ir.Elementwise((24,), (ir.Store(ir.Access(2, (1,)), ir.Const(0.0, F32)),))
    assert redirect_twin_reads([_maker(), again, reader], {1, 2, 3})[2] is reader
    assert redirect_twin_reads([_maker(), reader], {1, 3})[1] is reader


def test_stores_of_zeros_of_other_signs_are_not_twins():
    load = ir.Load(ir.Access(0, (12, 4, 1)), F32)
    values = [ir.Apply("max", (load, ir.Const(z, F32)), F32) for z in (0.0, -0.0)]
    maker = ir.Elementwise((2, 3, 4), (ir.Store(ir.Access(1, (12, 4, 1)), values[0]),
                                       ir.Store(ir.Access(2, (4, 8, 1)), values[1])))
    reader = _sum_of(ir.Access(1, (12, 4, 1)), (2, 3, 4))
    assert redirect_twin_reads([maker, reader], {1, 2, 3})[1] is reader


def _lenet_step():
    x = gc.placeholder((3, 1, 10, 10), "float64", name="x")
    w1 = gc.placeholder((4, 1, 3, 3), "float64", name="w1")
    b1 = gc.placeholder((4,), "float64", name="b1")
    w2 = gc.placeholder((5, 4, 3, 3), "float64", name="w2")
    b2 = gc.placeholder((5,), "float64", name="b2")
    h = gc.relu(gc.nn.conv2d(x, w1) + b1.reshape(1, 4, 1, 1))
    h = gc.nn.max_pool2d(h, 2)
    h = gc.relu(gc.nn.conv2d(h, w2) + b2.reshape(1, 5, 1, 1))
    loss = gc.sum(gc.sin(h))
    params = [w1, b1, w2, b2]
    return [x] + params, [loss] + gc.grad(loss, params)


def test_a_conv_steps_bias_gradients_sum_the_weight_gradients_layout():
    inputs, outputs = _lenet_step()
    rng = np.random.default_rng(5)
    args = [rng.normal(size=v.shape) for v in inputs]
    f = gc.function(inputs, outputs, backend="llvm")
    kernels = schedule_graph(f.graph, policy=LLVM_POLICY).kernels
    gemm_a = {k.a.buffer for k in kernels if isinstance(k, ir.Gemm)}
    sums = [k for k in kernels if isinstance(k, ir.Reduce) and k.op == "sum"
            and k.axes == (0, 2)]
    # both bias gradients read the dY a weight-gradient GEMM reads, no copy of their own
    assert len(sums) == 2
    assert all(ld.access.buffer in gemm_a for k in sums for ld in ir.expr_loads(k.body))
    twins = [k for k in kernels if isinstance(k, ir.Elementwise)
             and len({s.value for s in k.stores}) < len(k.stores)]
    assert not twins
    want = gc.function(inputs, outputs, backend="numpy", optimize=False)(*args)
    runner = KernelExecutable(f.graph, policy=SchedulePolicy(implicit_gemm=True))
    for got in (f(*args), runner.run(args)):
        for w, g in zip(want, got):
            np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-9)


def test_bias_gradients_match_finite_differences():
    inputs, outputs = _lenet_step()
    rng = np.random.default_rng(6)
    args = [rng.normal(size=v.shape) for v in inputs]
    f = gc.function(inputs, outputs, backend="llvm")
    loss = gc.function(inputs, outputs[:1], backend="llvm")
    grads = f(*args)
    eps = 1e-6
    for which in (2, 4):  # b1, b2
        for j in range(args[which].size):
            up = [a.copy() for a in args]
            down = [a.copy() for a in args]
            up[which].reshape(-1)[j] += eps
            down[which].reshape(-1)[j] -= eps
            fd = (loss(*up)[0] - loss(*down)[0]) / (2 * eps)
            np.testing.assert_allclose(grads[which].reshape(-1)[j], fd, rtol=1e-6, atol=1e-7)


def _chain(depth: int, leaf: ir.Expr) -> ir.Expr:
    e = leaf
    for _ in range(depth):
        e = ir.Apply("exp", (e,), F32)
    return e


def test_two_stores_of_a_long_chain_do_not_exhaust_the_stack():
    """A chain fused into one body (the 100,000-node chain under the CUDA policy) stored
    twice: comparing the two values walks without recursion, and past its budget it says
    they differ (the kernel is kept as it is) instead of raising RecursionError."""
    from graphc.schedule.twin_stores import SAME_VALUE_BUDGET, same_value
    leaf = ir.Load(ir.Access(0, (1,)), F32)
    long_a, long_b = _chain(20_000, leaf), _chain(20_000, leaf)  # equal, not the same object
    assert not same_value(long_a, long_b)  # (over the budget: not worth comparing)
    short = SAME_VALUE_BUDGET // 2
    assert same_value(_chain(short, leaf), _chain(short, leaf))
    assert not same_value(_chain(short, leaf), _chain(short + 1, leaf))
    kernel = ir.Elementwise((4,), (ir.Store(ir.Access(1, (1,)), long_a),
                                   ir.Store(ir.Access(2, (1,)), long_b)))
    assert redirect_twin_reads([kernel], {1, 2}) == [kernel]


def test_constants_of_opposite_sign_are_not_the_same_value():
    from graphc.schedule.twin_stores import same_value
    assert not same_value(ir.Const(0.0, F32), ir.Const(-0.0, F32))
    assert same_value(ir.Const(1.5, F32), ir.Const(1.5, F32))


def test_a_guarded_read_before_the_buffer_moves_to_the_other_layout():
    """A pad of buffer 1 (one zero each side of the last axis: offset -1, a guard) reads
    the same elements of buffer 2, its first element still outside the guard."""
    guard = ir.Guard((ir.Bound(((2, 1),), -1, 0, 4),), ir.Const(0.0, F32))
    pad = ir.Elementwise((2, 3, 6), (ir.Store(ir.Access(4, (18, 6, 1)), ir.Load(
        ir.Access(1, (12, 4, 1), -1), F32, guard)),))
    moved = redirect_twin_reads([_maker(), pad], {1, 2, 4})
    (store,) = moved[1].stores  # type: ignore[attr-defined]
    assert store.value == ir.Load(ir.Access(2, (4, 8, 1), -1), F32, guard)
    x = np.random.default_rng(1).normal(size=24).astype(np.float32)
    twin = np.exp(x).reshape(2, 3, 4).transpose(1, 0, 2).reshape(-1)  # buffer 2's layout
    got = np.zeros((2, 3, 6), F32)
    for i, j, k in np.ndindex(2, 3, 6):
        if 0 <= k - 1 < 4:
            got[i, j, k] = twin[-1 + 4 * i + 8 * j + k]
    want = np.pad(np.exp(x).reshape(2, 3, 4), ((0, 0), (0, 0), (1, 1)))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # a read past the guard's reach stays: the shifted offset leaves buffer 2's axis
    wide = ir.Guard((ir.Bound(((2, 1),), -1, 0, 5),), ir.Const(0.0, F32))
    past = ir.Elementwise((2, 3, 6), (ir.Store(ir.Access(4, (18, 6, 1)), ir.Load(
        ir.Access(1, (12, 4, 1), -1), F32, wide)),))
    assert redirect_twin_reads([_maker(), past], {1, 2, 4})[1] is past


def test_a_read_along_axes_that_run_together_in_both_layouts_moves():
    """The maker's last two axes (2, 2) lie inside one another in both stores, so a reader
    stepping over their four elements as one axis reads the other layout the same way (a
    pool gradient's (OW, KW) axes, summed as one row by a bias gradient)."""
    value = ir.Apply("exp", (ir.Load(ir.Access(0, (12, 4, 2, 1)), F32),), F32)
    maker = ir.Elementwise((2, 3, 2, 2), (ir.Store(ir.Access(1, (12, 4, 2, 1)), value),
                                          ir.Store(ir.Access(2, (4, 8, 2, 1)), value)))
    reader = _sum_of(ir.Access(1, (12, 4, 1)), (2, 3, 4))
    moved = redirect_twin_reads([maker, reader], {1, 2, 3})
    assert isinstance(moved[1], ir.Reduce)
    assert moved[1].body == ir.Load(ir.Access(2, (4, 8, 1)), F32)
    rng = np.random.default_rng(1)
    buffers = {0: rng.normal(size=24).astype(np.float32), 1: np.zeros(24, F32),
               2: np.zeros(24, F32), 3: np.zeros(12, F32)}
    np.testing.assert_allclose(_run(drop_dead_stores(moved, {1, 2, 3}), buffers)[3],
                               _run([maker, reader], buffers)[3], rtol=1e-6)
