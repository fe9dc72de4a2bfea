"""The kernel-IR contract: every kind and every core op has a lowering in every backend,
guarded views (pad, concatenate, slice gradients) need no copy kernel, the listing shows
everything (golden text), and the core lowering agrees with the reference interpreter."""
from __future__ import annotations

import re

import numpy as np
import pytest
import sympy as sp

import graphc as gc
from graphc.backends.llvm import scalar as llvm_scalar
from graphc.backends.llvm.codegen import ModuleWriter
from graphc.backends.numpy import scalar as numpy_scalar
from graphc.backends.numpy.kernels import KernelRunner
from graphc.frontends.tensor import Tensor
from graphc.ops import make
from graphc.schedule import ir, schedule_graph
from graphc.schedule.core_ops import CORE_OPS
from graphc.schedule.scalar import lower_expr

KERNELS = {"mode": "kernels"}


def test_every_kind_is_registered_once_with_its_facts():
    assert set(ir.KINDS) == set(ir.KERNEL_KINDS)
    for kind, cls in ir.KINDS.items():
        assert cls.kind == kind
        assert isinstance(cls.can_fail, bool)
        assert cls.combine in ir.ACCUMULATIONS + ("reduction",)
    assert {k for k, c in ir.KINDS.items() if c.can_fail} == {
        "gather", "scatter_add", "index_check", "value_check"}
    with pytest.raises(ValueError, match="registered twice"):
        ir.kernel_kind(type("Again", (), {"kind": "gemm"}))


def test_every_kind_has_a_lowering_in_every_backend():
    for kind in ir.KINDS:
        assert callable(getattr(ModuleWriter, f"emit_{kind}", None)), f"llvm: {kind}"
    # the numpy runner: one schedule with every kind, run kernel by kernel
    w = gc.placeholder((6, 4), "float64", name="w")
    idx = gc.placeholder((5,), "int64", name="idx")
    e = gc.placeholder((5,), "int64", name="e")
    loss = gc.sum(gc.take(w, idx, axis=0) @ gc.constant(np.ones((4, 2))))
    running, _ = gc.scan(lambda c, row: (c * 0.5 + row, None), w[0], w)  # a loop
    f = gc.function([w, idx, e], [loss, gc.grad(loss, w), idx ** e, gc.cumsum(w, axis=0),
                                  gc.argsort(w), running], backend="numpy")
    s = schedule_graph(f.graph)
    # (all_reduce runs in a job of several processes: tests/test_distributed.py)
    assert {k.kind for k in s.kernels} >= set(ir.KINDS) - {"index_check", "all_reduce"}
    runner = KernelRunner(s)
    runner.run([np.ones((6, 4)), np.arange(5), np.arange(5)])


def test_every_core_op_has_a_spelling_in_every_backend():
    assert set(llvm_scalar.TABLE) == set(CORE_OPS), set(llvm_scalar.TABLE) ^ set(CORE_OPS)
    assert set(numpy_scalar.TABLE) | {"cast"} == set(CORE_OPS)


def test_unknown_core_op_is_refused():
    bogus = ir.Apply("bogus", (ir.Const(1.0, np.dtype("float32")),), np.dtype("float32"))
    with pytest.raises(NotImplementedError, match="bogus"):
        numpy_scalar.evaluate(bogus, [np.float32(1)])


def test_lowered_bodies_hold_core_ops_only():
    x = gc.placeholder((3,), "float32", name="x")
    y = gc.sigmoid(x) + gc.softplus(x) * gc.relu(x) - gc.sign(x) / gc.maximum(x, 1.0)
    s = schedule_graph(gc.function([x], [y, x > 0], backend="numpy").graph)
    for k in s.kernels:
        for body in k.bodies():
            ops = ir.expr_ops(lower_expr(body))
            assert ops and set(ops) <= set(CORE_OPS), ops


@pytest.mark.parametrize("backend", [
    dict(backend="llvm"), dict(backend="numpy", backend_options=KERNELS),
    pytest.param(dict(backend="cuda", backend_options={"emulate": True}),
                 marks=pytest.mark.slow)])
def test_sympy_functions_through_core_ops(backend):
    """A user's primitive using SymPy functions no built-in uses (sinh, atan2, floor...)
    lowers to core ops and agrees with numpy on both kernel backends."""
    name = f"many_{backend['backend']}"
    many = gc.elementwise_function(name, lambda x, y: (
        sp.sinh(x) + sp.cosh(y) + sp.asinh(x) + sp.atan(y) + sp.atan2(x, y) + sp.floor(x)
        + sp.ceiling(y) + sp.asin(x / 4) + sp.acos(y / 4) + sp.atanh(x / 4) + sp.acosh(y + 2)
        + sp.Max(x, y) * sp.Min(x, 0) + sp.Abs(x) * sp.sign(y) + sp.cot(y) + sp.sec(x)))
    x = gc.placeholder((7,), "float64", name="x")
    y = gc.placeholder((7,), "float64", name="y")
    xv = np.linspace(-1.5, 1.5, 7)
    yv = np.linspace(0.3, 1.9, 7)
    want = (np.sinh(xv) + np.cosh(yv) + np.arcsinh(xv) + np.arctan(yv) + np.arctan2(xv, yv)
            + np.floor(xv) + np.ceil(yv) + np.arcsin(xv / 4) + np.arccos(yv / 4)
            + np.arctanh(xv / 4) + np.arccosh(yv + 2) + np.maximum(xv, yv) * np.minimum(xv, 0)
            + np.abs(xv) * np.sign(yv) + 1 / np.tan(yv) + 1 / np.cos(xv))
    got = gc.function([x, y], many(x, y), **backend)(xv, yv)
    np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("backend", [
    dict(backend="llvm"), dict(backend="numpy", backend_options=KERNELS),
    pytest.param(dict(backend="cuda", backend_options={"emulate": True}),
                 marks=pytest.mark.slow)])
def test_piecewise_conditions_with_and_or_not_lower_to_core_ops(backend):
    """Conditions joined by &, | and ~ (sympy's And, Or, Not) lower to core ops, as
    numpy evaluates them (the kernel backends raised NotImplementedError on them)."""
    name = f"window_{backend['backend']}"
    window = gc.elementwise_function(name, lambda x: sp.Piecewise(
        (x ** 2, (x > 0) & (x < 1)), (x ** 3, (x <= -1) | (x > 2)),
        (2 * x, (x > -0.6) & ~(x > -0.2)), (x + 5, sp.Not(sp.Eq(x, 1.5), evaluate=False)),
        (7, True)))
    x = gc.placeholder((None,), "float64", name="x")
    v = np.array([-2.0, -1.0, -0.5, -0.1, 0.25, 0.75, 1.5, 1.75, 2.5])
    f = gc.function([x], [window(x), gc.grad(gc.sum(window(x)), x)], **backend)
    values, slopes = f(v)
    np.testing.assert_allclose(values, [-8, -1, -1, 4.9, 0.0625, 0.5625, 7, 6.75, 15.625])
    np.testing.assert_allclose(slopes, [12, 3, 2, 1, 0.5, 1.5, 0, 1, 18.75])


def _kinds(f):
    (s,) = f._exe.cache.values()
    return s.schedule


def _kernels_of(out, *inputs_values):
    inputs = [v[0] for v in inputs_values]
    f = gc.function(inputs, out, backend="numpy", backend_options=KERNELS)
    got = f(*[v[1] for v in inputs_values])
    want = gc.function(inputs, out, backend="numpy")(*[v[1] for v in inputs_values])
    for g, w in zip(got if isinstance(got, list) else [got],
                    want if isinstance(want, list) else [want]):
        np.testing.assert_allclose(g, w, rtol=1e-12)
    llvm = gc.function(inputs, out)(*[v[1] for v in inputs_values])
    for g, w in zip(llvm if isinstance(llvm, list) else [llvm],
                    want if isinstance(want, list) else [want]):
        np.testing.assert_allclose(g, w, rtol=1e-12)
    (runner,) = f._exe.cache.values()
    return runner.schedule


X = gc.placeholder((2, 3), "float32", name="x")
Y = gc.placeholder((2, 2), "float32", name="y")
XV = np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5
YV = np.full((2, 2), -7.0, np.float32)


def test_pad_is_a_view():
    s = _kernels_of(Tensor(make("pad", X.node, pads=((1, 0), (0, 2)))) * 2, (X, XV))
    assert len(s.kernels) == 1 and s.kernels[0].fused == ("pad", "mul")
    assert s.listing().splitlines()[-3:-1] == [
        "  k0 elementwise [3,5]  # pad mul",
        "      b1<5,1> = mul((b0<3,1>-3 if 0<=i0-1<2 and 0<=i1<3 else 0.0), 2.0)"]


def test_concatenate_is_a_view():
    s = _kernels_of(gc.concatenate([X, Y, X], axis=1), (X, XV), (Y, YV))
    assert [k.fused for k in s.kernels] == [("concatenate",)]
    (store,) = s.kernels[0].stores
    assert [ld.access.buffer for ld in ir.expr_loads(store.value)] == [0, 1, 0]
    assert s.listing().splitlines()[-2] == (
        "      b2<8,1> = (b0<3,1> if 0<=i1<3 else (b1<2,1>-3 if 0<=i1-3<2 else "
        "(b0<3,1>-5 if 0<=i1-5<3 else 0.0)))")


def test_gradient_of_a_slice_is_a_view():
    g = gc.grad(gc.sum(X[:, 1:3] * X[:, ::-1][:, :2]), X)
    s = _kernels_of(g, (X, XV))
    assert not any(k.fused == ("zeros",) for k in s.kernels)
    text = s.listing()
    assert "(b0<3,1>+1 if 0<=i1<2 else 0.0)" in text, text  # x[:, 1:3]
    assert "if 0<=-i1+2<3 else 0.0" in text, text  # x[:, ::-1]


def test_strided_slice_gradient_still_works():
    g = gc.grad(gc.sum(gc.tanh(X[:, ::2])), X)
    s = _kernels_of(g, (X, XV))
    assert any(k.fused == ("zeros",) for k in s.kernels)  # a step of 2 is not a view


def test_empty_parts_and_empty_pads():
    e = gc.placeholder((2, 0), "float32", name="e")
    s = _kernels_of([gc.concatenate([e, X, e], axis=1),
                     Tensor(make("pad", e.node, pads=((1, 1), (2, 0))))],
                    (e, np.zeros((2, 0), np.float32)), (X, XV))
    assert len(s.kernels) == 2


def test_guarded_views_in_a_convolution_gradient():
    """conv2d with padding reads its input through a guard; values and gradients match."""
    x = gc.placeholder((2, 3, 5, 5), "float64", name="x")
    w = gc.parameter(np.random.default_rng(0).normal(size=(4, 3, 3, 3)), name="w")
    loss = gc.sum(gc.tanh(gc.nn.conv2d(x, w, padding=1)))
    xv = np.random.default_rng(1).normal(size=(2, 3, 5, 5))
    s = _kernels_of([loss, gc.grad(loss, w), gc.grad(loss, x)], (x, xv))
    assert any(ld.guard is not None for k in s.kernels for body in k.bodies()
               for ld in ir.expr_loads(body))


GOLDEN_MLP = """\
12 kernels, 15 buffers
  b0:input(x)[f32[4,3]]
  b1:input(labels)[i64[4]]
  b2:param(W)[f32[3,2]]
  b3:temp[f32[4,2]] @arena+0
  b4:param(c)[f32[2]]
  b5:temp[f32[4,2]] @arena+64
  b6:temp[f32[4,1]] @arena+128
  b7:temp[f32[4,1]] @arena+192
  b8:temp[f32[4,2]] @arena+0
  b9:temp[f32[4,2]] @arena+64
  b10:temp[f32[4]] @arena+128
  b11:temp[f32[]] @arena+192
  b12:temp[f32[4,2]] @arena+128
  b13:temp[f32[3,2]]
  b14:output(out0)[f32[]]
  k0 gemm batch=[] m=4 n=2 k=3 f32
      a b0<3,1> over [4,3]
      b b2<2,1> over [3,2]
      out b3<2,1> over [4,2]
  k1 elementwise [4,2]  # add
      b5<2,1> = add(b3<2,1>, b4<0,1>)
  k2 reduce/max [4,2] over axes [1] -> f32  # max
      b6<1,0> = max(b5<2,1>)
  k3 reduce/sum [4,2] over axes [1] -> f32  # sub exp sum
      b7<1,0> = sum(exp(sub(b5<2,1>, b6<1,0>)))
  k4 elementwise [4,2]  # log_softmax
      b8<2,1> = sub(sub(b5<2,1>, b6<1,0>), log(b7<1,0>))
  k5 index_check [4] in [0, 2)
      indices b1<1> over [4]
      raises IndexError: cross_entropy labels (indices from argument 'labels', built at HERE)
  k6 elementwise [4,2]  # one_hot
      b9<2,1> = cast<f32>(equal(b1<1,0>, i1))
  k7 reduce/sum [4,2] over axes [1] -> f32  # mul sum
      b10<1,0> = sum(mul(b8<2,1>, b9<2,1>))
  k8 reduce/sum [4] over axes [0] -> f32  # neg sum
      b11<0> = sum(neg(b10<1>))
  k9 elementwise [8]  # exp sub mul
      b12<1> = mul(-0.25, sub(b9<1>, exp(b8<1>)))
  k10 gemm batch=[] m=3 n=2 k=4 f32 alpha=-0.1 out+=
      a b0<1,3> over [3,4]
      b b12<2,1> over [4,2]
      out b2<2,1> over [3,2]
  k11 elementwise []  # mul
      b14<> = mul(b11<>, 0.25)
"""


def test_golden_listing_of_a_training_step():
    """The full listing of a small softmax-regression SGD step: iteration spaces, accesses
    with strides, bodies with shared parts let-bound, folded updates."""
    x = gc.placeholder((4, 3), name="x")
    labels = gc.placeholder((4,), "int64", name="labels")
    W = gc.parameter(np.zeros((3, 2), np.float32), name="W")
    c = gc.parameter(np.zeros(2, np.float32), name="c")
    loss = gc.nn.cross_entropy(x @ W + c, labels)
    gW = gc.grad(loss, W)
    f = gc.function([x, labels], loss, updates={W: W - 0.1 * gW}, backend="numpy",
                    backend_options=KERNELS)
    s = schedule_graph(f.graph)
    text = re.sub(r"built at [^)]*", "built at HERE", s.listing())
    assert text.split("memory plan")[0] == GOLDEN_MLP, text


def test_schedule_is_frozen():
    x = gc.placeholder((3,), "float64", name="x")
    s = schedule_graph(gc.function([x], x * 2, backend="numpy").graph)
    with pytest.raises(AttributeError):
        s.plan = None  # type: ignore[misc]
    assert isinstance(s.kernels, tuple)


def test_store_accumulation_is_checked():
    acc = ir.Access(0, (1,), 0)
    with pytest.raises(ValueError, match="accumulate"):
        ir.Store(acc, ir.Const(0, np.dtype("float32")), accumulate="sometimes")


def test_a_kernel_of_many_prefix_stores_walks_each_node_once(monkeypatch):
    """A long chain merged from many kernels keeps a store for each, every one a prefix of
    the next: its accesses walk the shared nodes once, not once a store (walking each alone
    made the 100,000-node chain's schedule quadratic in its length)."""
    f64 = np.dtype("float64")
    value: ir.Expr = ir.Load(ir.Access(0, (1,), 0), f64)
    stores = []
    for i in range(200):
        value = ir.Apply("add", (value, ir.Const(1.0, f64)), f64)
        stores.append(ir.Store(ir.Access(i + 1, (1,), 0), value))
    kernel = ir.Elementwise((4,), tuple(stores))
    visits = []
    monkeypatch.setattr(ir, "children", lambda e, real=ir.children: visits.append(e) or real(e))
    reads = [a for role, a, _ in kernel.accesses() if role == "in"]
    assert reads == [ir.Access(0, (1,), 0)]
    assert len(visits) <= 2 * (2 * 200 + 1)  # each Apply, Const and the load, about once


def test_overlapping_windows_accumulate_atomically():
    """max-pool windows that overlap: the gradient adds into one element from several
    iterations, and the kernel says so (a parallel target must add atomically)."""
    x = gc.placeholder((1, 1, 5, 5), "float64", name="x")
    loss = gc.sum(gc.nn.avg_pool2d(x, 3, stride=1))
    s = _kernels_of(gc.grad(loss, x), (x, np.random.default_rng(2).normal(size=(1, 1, 5, 5))))
    stores = [st for k in s.kernels if isinstance(k, ir.Elementwise) for st in k.stores]
    assert any(st.accumulate == "atomic" for st in stores)
    assert "+=" in s.listing()


def test_reshape_that_splits_axes_keeps_an_expression_unstored():
    """Splitting an axis of a fused expression (the convolution's pad -> windows -> reshape)
    reads the expression at the new indices: one im2col kernel, no stored intermediate."""
    x = gc.placeholder((2, 4, 5, 5), "float64", name="x")
    w = gc.parameter(np.random.default_rng(3).normal(size=(6, 2, 3, 3)), name="w")
    y = gc.nn.conv2d(x, w, padding=1, groups=2)
    s = _kernels_of(y, (x, np.random.default_rng(4).normal(size=(2, 4, 5, 5))))
    assert [k.kind for k in s.kernels][:2] == ["elementwise", "gemm"], s.listing()
    split = gc.reshape(gc.tanh(x), (2, 2, 2, 5, 5))  # splits axis 1: still one kernel
    assert len(_kernels_of(split, (x, np.ones((2, 4, 5, 5)))).kernels) == 1
    merged = gc.reshape(gc.tanh(x), (2, 2, 2, 25))  # merges axes 2 and 3: stored first
    assert len(_kernels_of(merged, (x, np.ones((2, 4, 5, 5)))).kernels) == 2


def test_split_map_refuses_merges():
    from graphc.schedule.reindex import split_map
    assert split_map((6, 4), (2, 3, 4)) == ((((0, 3), (1, 1)), 0), (((2, 1),), 0))
    assert split_map((6, 4), (24,)) is None
    assert split_map((1, 6), (6, 1)) == (((), 0), (((0, 1),), 0))


def test_schedule_names_a_bad_shape_argument():
    x = gc.placeholder((None, 3), name="x")
    f = gc.function([x], x * 2, backend="numpy")
    with pytest.raises(TypeError, match="'x' must be a tuple of sizes"):
        f.schedule({"x": (4, 3)})
    with pytest.raises(TypeError, match="'x'"):
        f.schedule((4, "3"))
    assert len(f.schedule((4, 3)).kernels) == 1
