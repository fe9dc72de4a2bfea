"""A copy of a value into another layout stored by the kernel that makes the value
(graphc/schedule/copy_forward.py): the store's strides follow the copy's permutation, the
copy kernel disappears only where nothing in between touches its target, and a
convolution step's weight gradient no longer copies dY, with values unchanged."""
from __future__ import annotations

import numpy as np

import graphc as gc
from graphc.backends.llvm import LLVM_POLICY
from graphc.backends.numpy.kernels import KernelExecutable
from graphc.schedule import SchedulePolicy, ir, schedule_graph
from graphc.schedule.copy_forward import forward_copies

F32 = np.dtype("float32")


def _maker(out: int = 1) -> ir.Elementwise:
    """buffer out (2, 3, 4) = exp(buffer 0), contiguous."""
    value = ir.Apply("exp", (ir.Load(ir.Access(0, (12, 4, 1)), F32),), F32)
    return ir.Elementwise((2, 3, 4), (ir.Store(ir.Access(out, (12, 4, 1)), value),))


def _copy(source: int = 1, target: int = 2) -> ir.Elementwise:
    """buffer target (3, 2, 4) = source with its first two axes swapped."""
    load = ir.Load(ir.Access(source, (4, 12, 1)), F32)
    return ir.Elementwise((3, 2, 4), (ir.Store(ir.Access(target, (8, 4, 1)), load),),
                          ("copy",))


def test_the_copy_becomes_a_second_store_of_the_maker():
    nodes = [frozenset({"m"}), frozenset({"c"})]
    (k,) = forward_copies([_maker(), _copy()], {1, 2}, nodes)
    assert isinstance(k, ir.Elementwise) and len(k.stores) == 2
    first, second = k.stores
    # maker index (i, j, l) is the copy's (j, i, l): the target's strides permuted
    assert second.access == ir.Access(2, (4, 8, 1)) and second.value == first.value
    assert nodes == [frozenset({"m", "c"})]


def test_the_copy_stays_where_its_target_is_touched_between_or_not_a_temporary():
    between = ir.Elementwise((3, 2, 4), (ir.Store(ir.Access(2, (8, 4, 1)),
                                                  ir.Const(0.0, F32)),))
    assert len(forward_copies([_maker(), between, _copy()], {1, 2})) == 3
    assert len(forward_copies([_maker(), _copy()], {1})) == 2  # target 2: a parameter
    # a copy that reads only part of what the maker wrote (a slice) keeps its kernel
    part = ir.Elementwise((3, 1, 4), (ir.Store(ir.Access(2, (4, 4, 1)), ir.Load(
        ir.Access(1, (4, 12, 1)), F32)),))
    assert len(forward_copies([_maker(), part], {1, 2})) == 2


def _two_conv_step():
    x = gc.placeholder((2, 3, 10, 12), "float64", name="x")
    w1 = gc.placeholder((4, 3, 3, 3), "float64", name="w1")
    w2 = gc.placeholder((5, 4, 3, 3), "float64", name="w2")
    h = gc.tanh(gc.nn.conv2d(x, w1, padding=1))
    loss = gc.sum(gc.sin(gc.nn.conv2d(h, w2, padding=1)) * gc.tanh(h).sum())
    return [x, w1, w2], [loss] + gc.grad(loss, [x, w1, w2])


def test_a_conv_step_has_no_pure_copy_of_dy_and_the_same_values():
    inputs, outputs = _two_conv_step()
    rng = np.random.default_rng(3)
    args = [rng.normal(size=v.shape) for v in inputs]
    want = gc.function(inputs, outputs, backend="numpy", optimize=False)(*args)
    f = gc.function(inputs, outputs, backend="llvm")
    kernels = schedule_graph(f.graph, policy=LLVM_POLICY).kernels
    # dY of the first convolution, made by an elementwise kernel, is read as images (the
    # data gradient) and as (C, N*H*W) rows (the weight gradient): one kernel writes both
    both = [k for k in kernels if isinstance(k, ir.Elementwise) and "copy" in k.fused
            and len(k.fused) > 1]
    assert both
    runner = KernelExecutable(f.graph, policy=SchedulePolicy(implicit_gemm=True))
    for got in (f(*args), runner.run(args)):
        for w, g in zip(want, got):
            np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-9)


def test_a_copy_reading_merged_axes_is_split_into_the_makers():
    """The maker writes (2, 3, 2) contiguously; the copy reads it as (2, 6) rows and writes
    them transposed, (6, 2): its axis of 6 runs over the maker's last two (a pool
    gradient's (OW, KW) read back as one row), so the second store splits it."""
    value = ir.Apply("exp", (ir.Load(ir.Access(0, (6, 2, 1)), F32),), F32)
    maker = ir.Elementwise((2, 3, 2), (ir.Store(ir.Access(1, (6, 2, 1)), value),))
    copy = ir.Elementwise((2, 6), (ir.Store(ir.Access(2, (1, 2)), ir.Load(
        ir.Access(1, (6, 1)), F32)),), ("copy",))
    (k,) = forward_copies([maker, copy], {1, 2})
    # maker index (i, j, l) is row i, column 2j + l of the copy: target (2j + l) * 2 + i
    assert isinstance(k, ir.Elementwise) and k.stores[1].access == ir.Access(2, (1, 4, 2))
    # a copy of only the first half (6 of 12 elements) keeps its kernel
    half = ir.Elementwise((6,), (ir.Store(ir.Access(2, (1,)), ir.Load(
        ir.Access(1, (1,)), F32)),), ("copy",))
    assert len(forward_copies([maker, half], {1, 2})) == 2


def test_merged_copies_are_forwarded_one_store_at_a_time():
    """Two copies merged into one kernel (two maps a weight gradient reads as rows), each
    folded into its own maker; one whose maker is not an elementwise kernel stays."""
    second_maker = ir.Elementwise((2, 3, 4), (ir.Store(ir.Access(3, (12, 4, 1)), ir.Apply(
        "sin", (ir.Load(ir.Access(0, (12, 4, 1)), F32),), F32)),))
    copies = ir.Elementwise((3, 2, 4), _copy(1, 2).stores + _copy(3, 4).stores, ("copy",))
    got = forward_copies([_maker(), second_maker, copies], {1, 2, 3, 4})
    assert len(got) == 2 and all(len(k.stores) == 2 for k in got)
    assert got[0].stores[1].access == ir.Access(2, (4, 8, 1))
    assert got[1].stores[1].access == ir.Access(4, (4, 8, 1))
    # buffer 3 made by a GEMM: its copy stays, alone in the copy kernel
    gemm_made = ir.Gemm(batch=(), m=2, n=12, k=1, a=ir.Access(0, (1, 1)),
                        b=ir.Access(0, (12, 1)),
                        out=ir.Access(3, (12, 1)), dtype=F32)
    got = forward_copies([_maker(), gemm_made, copies], {1, 2, 3, 4})
    assert len(got) == 3 and got[2].stores == _copy(3, 4).stores
    # a store reading what another writes: the kernel is left whole
    chained = ir.Elementwise((3, 2, 4), _copy(1, 2).stores + _copy(2, 4).stores, ("copy",))
    assert len(forward_copies([_maker(), chained], {1, 2, 4})) == 2


def test_a_copy_merged_with_other_work_is_forwarded_and_the_work_stays():
    """A kernel that computes a value (buffer 5) and also copies another kernel's value
    (1 -> 2): the copy becomes the maker's second store, the computed store stays where it
    was; a copy whose target the kernel's other store reads stays too."""
    work = ir.Store(ir.Access(5, (8, 4, 1)), ir.Apply("sin", (ir.Load(
        ir.Access(0, (4, 12, 1)), F32),), F32))
    mixed = ir.Elementwise((3, 2, 4), (work,) + _copy(1, 2).stores, ("sin", "copy"))
    nodes = [frozenset({"m"}), frozenset({"w"})]
    got = forward_copies([_maker(), mixed], {1, 2, 5}, nodes)
    assert len(got) == 2
    assert got[0].stores[1].access == ir.Access(2, (4, 8, 1))
    assert got[0].fused == ("copy",)  # (the maker's own ops, and the copy: not "sin")
    assert got[1].stores == (work,) and got[1].fused == ("sin", "copy")
    assert nodes == [frozenset({"m", "w"}), frozenset({"w"})]
    reads_target = ir.Store(ir.Access(5, (8, 4, 1)), ir.Load(ir.Access(2, (8, 4, 1)), F32))
    kept = ir.Elementwise((3, 2, 4), _copy(1, 2).stores + (reads_target,), ("copy",))
    assert forward_copies([_maker(), kept], {1, 2, 5})[1] == kept


def test_a_batchnorm_step_copies_no_map_and_keeps_its_values():
    """Conv, BatchNorm (batch statistics), ReLU twice: no kernel computes one map and
    copies another over (the copy is the ReLU gradient's kernel's second store), and the
    values are the reference's."""
    rng = np.random.default_rng(5)
    x = gc.placeholder((4, 3, 10, 10), "float64", name="x")
    w1 = gc.placeholder((8, 3, 3, 3), "float64", name="w1")
    w2 = gc.placeholder((8, 8, 3, 3), "float64", name="w2")
    g1 = gc.placeholder((8,), "float64", name="g1")

    def bn(t, gamma):
        mean = gc.mean(t, axis=(0, 2, 3), keepdims=True)
        var = gc.mean(gc.square(t - mean), axis=(0, 2, 3), keepdims=True)
        return (t - mean) / gc.sqrt(var + 1e-5) * gc.reshape(gamma, (1, 8, 1, 1))

    h = gc.relu(bn(gc.nn.conv2d(x, w1, padding=1), g1))
    y = gc.relu(gc.nn.conv2d(h, w2, padding=1) + h)
    loss = gc.sum(y * y)
    inputs = [x, w1, w2, g1]
    outputs = [loss] + gc.grad(loss, [w1, w2, g1])
    args = [rng.normal(size=v.shape) for v in inputs]
    want = gc.function(inputs, outputs, backend="numpy", optimize=False)(*args)
    f = gc.function(inputs, outputs, backend="llvm")
    kernels = schedule_graph(f.graph, policy=LLVM_POLICY).kernels
    # (before: the BatchNorm gradient's kernel also copied the ReLU gradient's map)
    mixed = [k for k in kernels if isinstance(k, ir.Elementwise) and len(k.stores) > 1
             and any(isinstance(s.value, ir.Load) and s.value.guard is None
                     for s in k.stores)
             and not all(isinstance(s.value, ir.Load) for s in k.stores)]
    assert not mixed, [k.header() for k in mixed]
    for w, g in zip(want, f(*args)):
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-9)
