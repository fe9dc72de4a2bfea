"""The scheduler and the numpy kernel runner: running a schedule kernel by kernel
(backend_options={"mode": "kernels"}) gives what the graph interpreter gives, for every
primitive family, training steps with in-place updates, call-time sizes and random graphs;
plus structural checks of fusion, strided views, the buffer plan and the listing."""
from __future__ import annotations

import itertools
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphc as gc
from graphc.backends.numpy.kernels import KernelRunner
from graphc.ops import get_op
from graphc.schedule import ir, schedule_graph
from graphc.schedule.memory import ALIGN

KERNELS = {"mode": "kernels"}
ROOT = Path(__file__).resolve().parents[1]


def both(inputs, outputs, updates=None, optimize=True):
    graph_f = gc.function(inputs, outputs, updates=updates, backend="numpy", optimize=optimize)
    kern_f = gc.function(inputs, outputs, updates=updates, backend="numpy", optimize=optimize,
                         backend_options=KERNELS)
    return graph_f, kern_f


def assert_same(want, got, rtol=1e-10, atol=1e-12):
    if not isinstance(want, (list, tuple)):
        want, got = [want], [got]
    assert len(want) == len(got)
    for w, g in zip(want, got):
        w, g = np.asarray(w), np.asarray(g)
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, w.shape, g.dtype, w.dtype)
        if w.dtype.kind in "biu":
            np.testing.assert_array_equal(g, w)
        else:
            np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, equal_nan=True)


def run_both(inputs, outputs, args, **kw):
    graph_f, kern_f = both(inputs, outputs, **kw)
    with np.errstate(all="ignore"):
        want = graph_f(*args)
        got = kern_f(*args)
    assert_same(want, got)
    return kern_f


def schedules_of(f):
    return [r.schedule for r in f._exe.cache.values()]


RNG = np.random.default_rng(1234)
X = gc.placeholder((3, 4), "float64", name="x")
Y = gc.placeholder((3, 4), "float64", name="y")
A = gc.placeholder((2, 3, 4), "float64", name="a")
XV, YV = RNG.normal(size=(3, 4)), RNG.normal(size=(3, 4))
AV = RNG.normal(size=(2, 3, 4))
IDX = gc.placeholder((5,), "int64", name="i")
IV = np.array([0, 2, 1, 2, 2])
JDX = gc.placeholder((2, 3), "int64", name="j")
JV = np.array([[3, 0, 3], [1, 3, 2]])


def record(f):
    """Checks the buffer plan of every schedule a kernel-mode function made."""
    for s in schedules_of(f):
        check_memory_plan(s)
        check_listing(s)
    return f


# ---- every primitive family ---------------------------------------------------------------

def test_elementwise_family():
    outs = [gc.exp(gc.tanh(X)) * Y - gc.sin(X) / (gc.abs(Y) + 1), gc.sigmoid(X) + gc.relu(Y),
            gc.maximum(X, Y), gc.minimum(X, 0.25), gc.square(X) ** 0.5, gc.sqrt(gc.abs(X)),
            gc.log(gc.abs(X) + 1), gc.softplus(Y), gc.erf(X), gc.sign(Y), gc.cos(X) ** 3,
            gc.where(X > Y, X, Y * 2), gc.where(X <= 0, 1.0, X), X < Y, X >= 0.5,
            gc.equal(X, X), X.astype("float32"), X.astype("int32"), (X > 0).astype("float64"),
            -X, 2.0 ** X, X ** Y.astype("float64")]
    record(run_both([X, Y], outs, [XV, YV]))


@pytest.mark.parametrize("axis", [None, 0, 1, -1, (0, 1)])
@pytest.mark.parametrize("keepdims", [False, True])
def test_reductions(axis, keepdims):
    outs = [gc.sum(X, axis, keepdims), gc.max(X, axis, keepdims), gc.min(X, axis, keepdims),
            gc.mean(X * Y, axis, keepdims), gc.sum(gc.exp(X) * 2, axis, keepdims),
            gc.sum(X > 0, axis, keepdims)]
    if not isinstance(axis, tuple):
        outs += [gc.argmax(X, axis, keepdims), gc.argmax(-gc.abs(X), axis, keepdims)]
    record(run_both([X, Y], outs, [XV, YV]))


def test_reductions_3d_and_ties():
    ties = np.array([[[1.0, 3.0, 3.0, 0.0]] * 3] * 2)
    outs = [gc.sum(A, (0, 2)), gc.max(A, 1, keepdims=True), gc.argmax(A, 2), gc.argmax(A, 0),
            gc.min(A, (0, 1, 2))]
    record(run_both([A], outs, [AV]))
    record(run_both([A], outs, [ties]))


def test_matmul_family():
    b = gc.placeholder((4, 5), "float64", name="b")
    c = gc.placeholder((5, 4), "float64", name="c")
    d = gc.placeholder((1, 5, 4), "float64", name="d")
    v = gc.placeholder((4,), "float64", name="v")
    bv, cv, dv = RNG.normal(size=(4, 5)), RNG.normal(size=(5, 4)), RNG.normal(size=(1, 5, 4))
    vv = RNG.normal(size=4)
    outs = [A @ b, A @ c.T, A @ gc.transpose(d, (0, 2, 1)), gc.transpose(A, (0, 2, 1)) @ A,
            A[0] @ b, b.T @ A[1].T, A @ v, v @ b, v @ v, (A @ b) * 2 + 1,
            gc.tanh(A) @ gc.transpose(gc.exp(A), (0, 2, 1)), A[:, ::-1, :] @ b[::-1, 1:]]
    f = record(run_both([A, b, c, d, v], outs, [AV, bv, cv, dv, vv]))
    a = AV
    want = [a @ bv, a @ cv.T, a @ dv.transpose(0, 2, 1), a.transpose(0, 2, 1) @ a, a[0] @ bv,
            bv.T @ a[1].T, a @ vv, vv @ bv, vv @ vv, (a @ bv) * 2 + 1,
            np.tanh(a) @ np.exp(a).transpose(0, 2, 1), a[:, ::-1, :] @ bv[::-1, 1:]]
    for got, ref in zip(f(AV, bv, cv, dv, vv), want):
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
    kinds = [k.kind for s in schedules_of(f) for k in s.kernels]
    assert kinds.count("gemm") == len(outs) - 1  # A @ b is computed once for two outputs


def test_views_family():
    def views(a, x, m):
        return [a.reshape((6, 4)), a.transpose((2, 0, 1)), a[::-1, 1:, ::-2], a[:, None, 1],
                m.expand_dims(a, (0, 2)), m.squeeze(a[:, :1], 1),
                m.broadcast_to(a[:, :1], (5, 2, 3, 4)), a.transpose((1, 0, 2)).reshape((3, 8)),
                a[::-1].reshape((24,)), a[-1:0:-1, ::-1, 1::2] * 2,
                a[:, 2:0:-1].transpose((2, 1, 0)) + 1, m.broadcast_to(x[::-1, 0], (4, 3)).T,
                (m.exp(a)[:, ::-2]).reshape((2, 8)), a[1, 2, 3], a[..., -1], a[:, :0]]

    f = record(run_both([A, X], views(A, X, gc), [AV, XV]))
    for got, ref in zip(f(AV, XV), views(AV, XV, np)):
        np.testing.assert_array_equal(got, ref)


def test_concatenate():
    outs = [gc.concatenate([A, A * 2, A[:, :1]], axis=1), gc.concatenate([X, X.T.T + 1], axis=0),
            gc.stack([X, gc.tanh(X)], axis=1), gc.concatenate([X[:, ::-1], X[:, :0], X], axis=1)]
    record(run_both([A, X], outs, [AV, XV]))


def test_take_and_one_hot():
    outs = [gc.take(X, IDX, axis=0), gc.take(X, JDX, axis=1), gc.take(X, IDX), X[IDX],
            gc.one_hot(IDX, 4), gc.one_hot(JDX, 5, dtype="float64"),
            gc.take(gc.exp(X).T, IDX, axis=1) * 2, gc.take(X[::-1, ::-1], JDX, axis=1)]
    f = record(run_both([X, IDX, JDX], outs, [XV, IV, JV]))
    kinds = {k.kind for s in schedules_of(f) for k in s.kernels}
    assert "gather" in kinds


def test_scatter_add_through_gradient_of_take_with_repeated_indices():
    loss = (gc.sum(gc.take(X, IDX, axis=0) * gc.take(Y, IDX, axis=0))
            + gc.sum(gc.take(X, JDX, axis=1) ** 2))
    grads = gc.grad(loss, [X, Y])
    f = record(run_both([X, Y, IDX, JDX], grads, [XV, YV, IV, JV]))
    kinds = [k.kind for s in schedules_of(f) for k in s.kernels]
    assert "scatter_add" in kinds
    # and against numpy: row 2 is picked three times
    gy = np.zeros((3, 4))
    np.add.at(gy, IV, XV[IV])
    np.testing.assert_allclose(f(XV, YV, IV, JV)[1], gy)
    gx = np.zeros((3, 4))
    np.add.at(gx, IV, YV[IV])
    np.add.at(gx.T, JV, 2 * np.moveaxis(XV[:, JV], 0, -1))
    np.testing.assert_allclose(f(XV, YV, IV, JV)[0], gx)


def test_unslice_through_gradient_of_slicing():
    loss = gc.sum(A[::-1, 1:, ::-2] * 3) + gc.sum(A[0, :, 1:3] ** 2)
    f = record(run_both([A], gc.grad(loss, A), [AV]))
    want = np.zeros_like(AV)
    want[::-1, 1:, ::-2] += 3
    want[0, :, 1:3] += 2 * AV[0, :, 1:3]
    np.testing.assert_allclose(f(AV), want)


def test_softmax_family():
    outs = [gc.log_softmax(X), gc.softmax(X, 0), gc.logsumexp(X, 1), gc.logsumexp(X),
            gc.log_softmax(X * 2 + 1, 0), gc.softmax(A, 1), gc.log_softmax(A[:, ::-1], -1)]
    record(run_both([X, A], outs, [XV, AV]))
    big = np.array([[1e4, -1e4, 0, 1], [0, 0, 0, 0], [-1e4, -1e4, -1e4, 1e4]])
    record(run_both([X, A], outs, [big, AV]))


def test_cross_entropy_and_its_gradient():
    lab = gc.placeholder((3,), "int64", name="lab")
    ce = gc.nn.cross_entropy(X, lab)
    record(run_both([X, lab], [ce, gc.grad(ce, X)], [XV, np.array([0, 3, 2])]))
    ce2 = gc.nn.cross_entropy(X, gc.softmax(Y))
    record(run_both([X, Y], [ce2] + gc.grad(ce2, [X, Y]), [XV, YV]))


def test_outputs_that_are_inputs_constants_or_repeated():
    out = X * 2
    f = record(run_both([X], [X, out, out, gc.constant(np.arange(3.0)), gc.constant(1.5)],
                        [XV]))
    r = f(XV)
    assert r[1] is not r[2]
    r[1][0, 0] = 99.0
    assert r[2][0, 0] != 99.0


# ---- training steps with updates ----------------------------------------------------------

def mlp_program(seed, activation=gc.tanh, lr=0.1):
    rng = np.random.default_rng(seed)
    x = gc.placeholder((None, 5), "float64", name="x")
    t = gc.placeholder((None, 3), "float64", name="t")
    W1 = gc.parameter(rng.normal(size=(5, 8)) * 0.5, name="W1")
    b1 = gc.parameter(np.zeros(8), name="b1")
    W2 = gc.parameter(rng.normal(size=(8, 3)) * 0.5, name="W2")
    b2 = gc.parameter(np.zeros(3), name="b2")
    params = [W1, b1, W2, b2]
    h = activation(x @ W1 + b1)
    out = h @ W2 + b2
    loss = gc.nn.mse(out, t)
    grads = gc.grad(loss, params)
    updates = {p: p - lr * g for p, g in zip(params, grads)}
    return [x, t], loss, updates, params


def test_training_steps_match_the_interpreter():
    progs = [mlp_program(7) for _ in range(2)]
    fs = [gc.function(inp, loss, updates=upd, backend="numpy", backend_options=opts)
          for (inp, loss, upd, _), opts in zip(progs, [{}, KERNELS])]
    rng = np.random.default_rng(3)
    for _ in range(4):
        xv, tv = rng.normal(size=(6, 5)), rng.normal(size=(6, 3))
        assert_same(fs[0](xv, tv), fs[1](xv, tv))
        for p0, p1 in zip(progs[0][3], progs[1][3]):
            np.testing.assert_allclose(p1.value, p0.value, rtol=1e-12, atol=1e-14)
    record(fs[1])
    # the updates did something, and an in-place update kernel exists
    assert not np.allclose(progs[1][3][0].value, mlp_program(7)[3][0].value)
    (s,) = schedules_of(fs[1])
    params = {bid for bid, b in s.buffers.items() if b.role == "param"}
    assert any(k.writes() & params and k.writes() <= k.reads() for k in s.kernels)


def test_update_order_does_not_matter_for_values():
    """Every new value is computed from the old ones (outputs too) before any is stored."""
    def program():
        a = gc.parameter(np.arange(4.0), name="a")
        b = gc.parameter(np.arange(4.0) * 10, name="b")
        x = gc.placeholder((4,), "float64", name="x")
        return [x], [gc.sum(a * x), a + b], {a: b, b: a + x}, [a, b]

    (i0, o0, u0, p0), (i1, o1, u1, p1) = program(), program()
    f0 = gc.function(i0, o0, updates=u0, backend="numpy")
    f1 = gc.function(i1, o1, updates=u1, backend="numpy", backend_options=KERNELS)
    a_old, b_old = np.arange(4.0), np.arange(4.0) * 10
    rng = np.random.default_rng(0)
    for _ in range(3):
        xv = rng.normal(size=4)
        r0, r1 = f0(xv), f1(xv)
        assert_same(r0, r1)
        np.testing.assert_allclose(r1[0], np.sum(a_old * xv))
        a_old, b_old = b_old, a_old + xv
        for p, q, want in zip(p0, p1, (a_old, b_old)):
            np.testing.assert_array_equal(q.value, p.value)
            np.testing.assert_allclose(q.value, want)
    record(f1)


def test_swapping_parameters_is_not_done_in_place():
    def program():
        a = gc.parameter(np.arange(6.0).reshape(2, 3), name="a")
        b = gc.parameter(np.arange(6.0).reshape(3, 2) * 10, name="b")
        c = gc.parameter(np.arange(9.0).reshape(3, 3), name="c")
        x = gc.placeholder((), "float64", name="x")
        return [x], [a * x, c], {a: b.T, b: a.T * 2, c: c.T + x}, [a, b, c]

    (i0, o0, u0, p0), (i1, o1, u1, p1) = program(), program()
    f0 = gc.function(i0, o0, updates=u0, backend="numpy")
    f1 = gc.function(i1, o1, updates=u1, backend="numpy", backend_options=KERNELS)
    a, b, c = np.arange(6.0).reshape(2, 3), np.arange(6.0).reshape(3, 2) * 10, \
        np.arange(9.0).reshape(3, 3)
    for _ in range(3):
        r0, r1 = f0(1.5), f1(1.5)
        assert_same(r0, r1)
        np.testing.assert_array_equal(r1[1], c)
        a, b, c = b.T, a.T * 2, c.T + 1.5
        for p, q, want in zip(p0, p1, (a, b, c)):
            np.testing.assert_array_equal(q.value, p.value)
            np.testing.assert_array_equal(q.value, want)
    (s,) = schedules_of(record(f1))
    params = {bid: b.name for bid, b in s.buffers.items() if b.role == "param"}
    # a's new value reads b and b's reads a; c's reads c transposed: none may be written by
    # a kernel that computes it from another parameter (or a transposed self).
    for k in s.kernels:
        for bid in k.writes() & set(params):
            temps = {t for t, buf in s.buffers.items() if buf.role == "temp"}
            assert k.reads() - {bid} <= temps, params[bid]
            assert bid not in k.reads()


def test_parameter_output_and_update():
    def program():
        w = gc.parameter(np.ones(3), name="w")
        x = gc.placeholder((3,), "float64", name="x")
        return [x], [w, w * x], {w: w - x}, [w]

    (i0, o0, u0, _), (i1, o1, u1, p1) = program(), program()
    f0 = gc.function(i0, o0, updates=u0, backend="numpy")
    f1 = gc.function(i1, o1, updates=u1, backend="numpy", backend_options=KERNELS)
    w = np.ones(3)
    for step in range(3):
        xv = np.arange(3.0) + step
        r0, r1 = f0(xv), f1(xv)
        assert_same(r0, r1)
        np.testing.assert_array_equal(r1[0], w)
        np.testing.assert_array_equal(r1[1], w * xv)
        w = w - xv
        np.testing.assert_array_equal(p1[0].value, w)
    record(f1)


# ---- call-time sizes ----------------------------------------------------------------------

def test_none_dims_one_schedule_per_shape():
    inputs, loss, updates, params = mlp_program(11)
    x, t = inputs
    out = gc.tanh(x @ params[0] + params[1]).sum(axis=1)
    fg = gc.function(inputs, [loss, out], backend="numpy")
    fk = gc.function(inputs, [loss, out], backend="numpy", backend_options=KERNELS)
    rng = np.random.default_rng(5)
    sizes = [1, 4, 7, 4, 1, 0, 7]
    for n in sizes:
        xv, tv = rng.normal(size=(n, 5)), rng.normal(size=(n, 3))
        with np.errstate(all="ignore"):
            assert_same(fg(xv, tv), fk(xv, tv))
    assert len(fk._exe.cache) == len(set(sizes))
    assert set(fk._exe.cache) == {((n, 5), (n, 3)) for n in sizes}
    for s in schedules_of(fk):
        assert all(None not in n.shape for n in s.graph.nodes())
        check_memory_plan(s)


# ---- random graphs ------------------------------------------------------------------------

def _unary(name):
    return {
        "tanh": gc.tanh, "sin": gc.sin, "sigmoid": gc.sigmoid, "neg": lambda v: -v,
        "exp_tanh": lambda v: gc.exp(gc.tanh(v)), "square": gc.square, "abs": gc.abs,
        "relu": gc.relu, "scale": lambda v: v * 0.5 + 1, "cast32": lambda v: v.astype(
            "float32").astype("float64"), "where": lambda v: gc.where(v > 0.1, v, -v * 0.5),
    }[name]


UNARY_NAMES = ["tanh", "sin", "sigmoid", "neg", "exp_tanh", "square", "abs", "relu", "scale",
               "cast32", "where"]
SHAPE_OPS = ["transpose", "slice", "reshape_flat", "expand", "squeeze", "broadcast", "sum",
             "max", "min", "argmax", "matmul_self", "concat", "take", "log_softmax",
             "logsumexp"]


@st.composite
def schedule_programs(draw):
    steps = []
    n = 3
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["unary", "binary", "shape", "shape"]))
        a = draw(st.integers(0, n - 1))
        if kind == "unary":
            steps.append(("unary", draw(st.sampled_from(UNARY_NAMES)), a))
        elif kind == "binary":
            steps.append(("binary", draw(st.sampled_from(["add", "sub", "mul", "max"])), a,
                          draw(st.integers(0, n - 1))))
        else:
            steps.append(("shape", draw(st.sampled_from(SHAPE_OPS)), a,
                          draw(st.integers(0, 1000))))
        n += 1
    return steps, draw(st.integers(0, 2 ** 31))


def _apply_shape(op, v, k):
    nd = v.ndim
    axis = k % nd if nd else None
    if op == "transpose":
        perms = list(itertools.permutations(range(nd)))
        return gc.transpose(v, perms[k % len(perms)]) if nd else v
    if op == "slice":
        if not nd:
            return v
        step = [-1, 2, -2, 1][k % 4]
        key = [slice(None)] * nd
        key[axis] = slice(None, None, step) if k % 3 else slice(-1, None, -step)
        return v[tuple(key)] if v.shape[axis] else v
    if op == "reshape_flat":
        return v.reshape((-1,))
    if op == "expand":
        return gc.expand_dims(v, k % (nd + 1))
    if op == "squeeze":
        return gc.squeeze(v) if 1 in v.shape else v
    if op == "broadcast":
        return gc.broadcast_to(v, (2,) + tuple(v.shape))
    if op in ("sum", "max", "min"):
        if not nd or (op != "sum" and 0 in v.shape):
            return v
        return getattr(gc, op)(v, axis, keepdims=bool(k % 2))
    if op == "argmax":
        if not nd or 0 in v.shape:
            return v
        return gc.argmax(v, axis, keepdims=bool(k % 2)).astype("float64")
    if op == "matmul_self":
        if nd < 2:
            return v
        t = gc.transpose(v, tuple(range(nd - 2)) + (nd - 1, nd - 2))
        return (v @ t) * 0.3 if k % 2 else (t @ gc.tanh(v)) * 0.3
    if op == "concat":
        return gc.concatenate([v, gc.tanh(v)], axis=axis) if nd else v
    if op == "take":
        if not nd or not v.shape[axis]:
            return v
        idx = gc.constant(np.array([k % v.shape[axis], 0, v.shape[axis] - 1, 0]))
        return gc.take(v, idx, axis=axis)
    if op == "log_softmax":
        return gc.log_softmax(v, axis) if nd and v.shape[axis] else v
    if op == "logsumexp":
        return gc.logsumexp(v, axis, keepdims=bool(k % 2)) if nd and v.shape[axis] else v
    raise AssertionError(op)


def _binary(op, u, v):
    try:
        np.broadcast_shapes(u.shape, v.shape)
    except ValueError:
        v = gc.sum(v)
    return {"add": lambda: u + v, "sub": lambda: u - v, "mul": lambda: u * v,
            "max": lambda: gc.maximum(u, v)}[op]()


def build_schedule_program(steps):
    x = gc.placeholder((3, 4), "float64", name="x")
    y = gc.placeholder((4,), "float64", name="y")
    z = gc.placeholder((2, 3, 1), "float64", name="z")
    inputs = [x, y, z]
    pool = list(inputs)
    for step in steps:
        if step[0] == "unary":
            out = _unary(step[1])(pool[step[2]])
        elif step[0] == "binary":
            out = _binary(step[1], pool[step[2]], pool[step[3]])
        else:
            out = _apply_shape(step[1], pool[step[2]], step[3])
        if out.ndim > 4 or int(np.prod(out.shape)) > 400:
            out = gc.sum(out)
        pool.append(out)
    return inputs, pool[len(inputs):]


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(schedule_programs())
def test_random_graphs_kernels_equal_interpreter(program):
    steps, seed = program
    inputs, outs = build_schedule_program(steps)
    loss = sum(gc.sum(gc.sin(o) * (1 + 0.1 * k)) for k, o in enumerate(outs))
    grads = gc.grad(loss, inputs)
    fg, fk = both(inputs, outs + list(grads))
    rng = np.random.default_rng(seed)
    args = [rng.normal(size=p.shape) for p in inputs]
    with np.errstate(all="ignore"):
        want, got = fg(*args), fk(*args)
    assert_same(want, got, rtol=1e-9, atol=1e-11)
    record(fk)


# ---- structure: fusion, strided views ------------------------------------------------------

def tanh_mlp_schedule(batch=16):
    inputs, loss, updates, params = mlp_program(0)
    f = gc.function(inputs, loss, updates=updates, backend="numpy")
    return schedule_graph(f.graph, [(batch, 5), (batch, 3)])


def test_mlp_fuses_elementwise_chains():
    s = tanh_mlp_schedule()
    elementwise_nodes = [n for n in s.graph.nodes() if get_op(n.op).elementwise]
    elementwise_kernels = [k for k in s.kernels if k.kind == "elementwise"]
    assert len(elementwise_kernels) < len(elementwise_nodes)
    assert len(s.kernels) < len(elementwise_nodes)
    # x @ W1 + b1 then tanh: one kernel, reading the gemm result and the bias
    (fused,) = [k for k in elementwise_kernels if "tanh" in k.fused]
    assert "add" in fused.fused and len(fused.stores) == 1
    gemm_out = s.kernels[0].writes()
    assert s.kernels[0].kind == "gemm" and gemm_out <= fused.reads()
    # some kernel fuses three or more ops (the tanh derivative: square, sub, mul)
    assert any(len(k.fused) >= 3 for k in s.kernels if hasattr(k, "fused"))


def test_add_tanh_is_one_kernel():
    x = gc.placeholder((4, 6), "float64", name="x")
    b = gc.placeholder((6,), "float64", name="b")
    f = gc.function([x, b], gc.tanh(x + b) * 2 - 1, backend="numpy")
    s = schedule_graph(f.graph)
    assert len(s.kernels) == 1
    (k,) = s.kernels
    assert k.kind == "elementwise" and {"add", "tanh", "mul", "sub"} <= set(k.fused)
    assert s.buffers[next(iter(k.writes()))].role == "output"


def test_reduction_fuses_its_producers():
    x = gc.placeholder((4, 6), "float64", name="x")
    f = gc.function([x], gc.sum(gc.exp(x) * x, axis=1), backend="numpy")
    s = schedule_graph(f.graph)
    assert [k.kind for k in s.kernels] == ["reduce"]
    assert {"exp", "mul", "sum"} <= set(s.kernels[0].fused)


def _copy_kernels(s):
    return [k for k in s.kernels if k.kind == "elementwise" and k.fused == ("copy",)]


def test_transposes_feeding_matmul_are_strided_reads():
    s = tanh_mlp_schedule()
    gemms = [k for k in s.kernels if k.kind == "gemm"]
    assert len(gemms) == 5  # forward 2, backward 3: dh = g W2^T, dW2 = h^T g, dW1 = x^T dh
    writers = {bid: k for k in s.kernels for bid in k.writes()}
    for g in gemms:
        for acc in (g.a, g.b):
            maker = writers.get(acc.buffer)
            assert getattr(maker, "fused", None) != ("copy",), "a transpose was copied"
    transposed = [g for g in gemms
                  if g.a.strides[-2] < g.a.strides[-1] or g.b.strides[-2] < g.b.strides[-1]]
    # the three backward products read a transposed operand; GEMMs narrower than a vector
    # tile are also computed turned around (C^T = B^T A^T), which reads transposed too
    assert len(transposed) >= 3


def test_transposed_operands_need_no_copy():
    a = gc.placeholder((4, 3), "float64", name="a")
    b = gc.placeholder((5, 4), "float64", name="b")
    f = gc.function([a, b], a.T @ b.T, backend="numpy")
    s = schedule_graph(f.graph)
    assert [k.kind for k in s.kernels] == ["gemm"]
    (g,) = s.kernels
    assert g.a.strides == (1, 3) and g.b.strides == (1, 4)
    assert s.buffers[g.out.buffer].role == "output"
    av, bv = RNG.normal(size=(4, 3)), RNG.normal(size=(5, 4))
    np.testing.assert_allclose(KernelRunner(s).run([av, bv])[0], av.T @ bv.T)


def test_views_into_elementwise_are_strided_reads():
    a = gc.placeholder((3, 4), "float64", name="a")
    f = gc.function([a], a[::-1].T[1:] * 2 + gc.broadcast_to(a[0], (3, 4)).T[1:],
                    backend="numpy")
    s = schedule_graph(f.graph)
    assert len(s.kernels) == 1 and not _copy_kernels(s)
    av = RNG.normal(size=(3, 4))
    want = av[::-1].T[1:] * 2 + np.broadcast_to(av[0], (3, 4)).T[1:]
    np.testing.assert_allclose(KernelRunner(s).run([av])[0], want)


# ---- the buffer plan ----------------------------------------------------------------------

def lifetimes(s):
    spans = {}
    for i, k in enumerate(s.kernels):
        for bid in k.reads() | k.writes():
            spans[bid] = (spans.get(bid, (i, i))[0], i)
    return spans


def check_memory_plan(s):
    plan = s.plan
    spans = lifetimes(s)
    temps = [b for b in s.buffers.values() if b.role == "temp" and b.id in spans]
    assert set(plan.offsets) == {b.id for b in temps}
    for b in temps:
        assert plan.lifetimes[b.id] == spans[b.id]
        assert plan.offsets[b.id] % ALIGN == 0
        assert 0 <= plan.offsets[b.id] and plan.offsets[b.id] + b.nbytes <= plan.arena_bytes
    for p, q in itertools.combinations(temps, 2):
        (f1, l1), (f2, l2) = spans[p.id], spans[q.id]
        if l1 < f2 or l2 < f1 or not p.nbytes or not q.nbytes:
            continue
        o1, o2 = plan.offsets[p.id], plan.offsets[q.id]
        assert o1 + p.nbytes <= o2 or o2 + q.nbytes <= o1, (
            f"b{p.id} {spans[p.id]} @{o1}+{p.nbytes} overlaps b{q.id} {spans[q.id]} "
            f"@{o2}+{q.nbytes}")
    assert plan.arena_bytes <= plan.unshared_bytes
    assert plan.unshared_bytes >= sum(b.nbytes for b in temps)


def test_memory_plan_of_a_training_step():
    s = tanh_mlp_schedule(batch=64)
    check_memory_plan(s)
    assert s.plan.arena_bytes < s.plan.unshared_bytes  # some reuse happens
    assert sum(1 for b in s.buffers.values() if b.role == "temp") > 5


def test_memory_plan_reuse_is_safe_when_run():
    """Two runs of one schedule with a shared arena give the interpreter's values."""
    inputs, loss, updates, params = mlp_program(3)
    grads = gc.grad(loss, params)
    fg, fk = both(inputs, [loss] + list(grads))
    rng = np.random.default_rng(9)
    for _ in range(2):
        args = [rng.normal(size=(32, 5)), rng.normal(size=(32, 3))]
        assert_same(fg(*args), fk(*args))
    (s,) = schedules_of(fk)
    check_memory_plan(s)
    assert s.plan.arena_bytes < s.plan.unshared_bytes


# ---- kinds, runners, listing ---------------------------------------------------------------

def kernel_classes():
    """kind -> the ir class of that kind, for every kind the IR declares."""
    classes = {getattr(v, "kind", None): v for v in vars(ir).values() if isinstance(v, type)}
    return {kind: classes.get(kind) for kind in ir.KERNEL_KINDS}


def test_every_kernel_kind_has_a_class_and_a_runner():
    for kind, cls in kernel_classes().items():
        assert cls is not None, f"no kernel class of kind {kind!r}"
        assert callable(cls.reads) and callable(cls.writes)
    # one schedule holding every kind, run kernel by kernel
    w = gc.placeholder((6, 4), "float64", name="w")
    idx = gc.placeholder((5,), "int64", name="idx")
    m = gc.placeholder((4, 3), "float64", name="m")
    rows = gc.take(w, idx, axis=0)
    e = gc.placeholder((5,), "int64", name="e")
    loss = gc.sum(gc.tanh(rows @ m)) + gc.nn.cross_entropy(rows, idx)
    outs = [loss, gc.grad(loss, w), idx ** e]  # (an integer power checks its exponents)
    outs += [gc.cumsum(m, axis=0), gc.argsort(m)]  # (scan, sort)
    outs.append(gc.scan(lambda c, row: (c * 0.5 + row, None), m[0], m)[0])  # (loop)
    f = gc.function([w, idx, m, e], outs, backend="numpy")
    s = schedule_graph(f.graph)
    kinds = {k.kind for k in s.kernels}
    # (all_reduce runs in a job of several processes: tests/test_distributed.py)
    assert kinds == set(ir.KERNEL_KINDS) - {"all_reduce"}, set(ir.KERNEL_KINDS) ^ kinds
    wv, iv, mv = RNG.normal(size=(6, 4)), np.array([1, 1, 3, 0, 1]), RNG.normal(size=(4, 3))
    ev = np.array([0, 1, 2, 3, 1])
    got = KernelRunner(s).run([wv, iv, mv, ev])
    assert_same(f(wv, iv, mv, ev), got)


def test_failing_index_check_stores_no_update():
    """A call that raises (labels or take indices out of range) updates no parameter, as
    with the interpreter: updates are never placed before a kernel that checks indices."""
    for mode in ({}, KERNELS):
        x = gc.placeholder((None, 3), "float64", name="x")
        lab = gc.placeholder((None,), "int64", name="lab")
        W = gc.parameter(np.ones((3, 4)), name="W")
        E = gc.parameter(np.ones((4, 3)), name="E")
        c = gc.parameter(np.ones(2), name="c")
        rows = gc.take(E, lab, axis=0)
        loss = gc.nn.cross_entropy((x + rows) @ W, lab)
        gW, gE = gc.grad(loss, [W, E])
        f = gc.function([x, lab], loss, updates={W: W - 0.1 * gW, E: E - gE, c: c * 0.5},
                        backend="numpy", backend_options=mode)
        for bad in ([0, 7], [-1, 0]):
            with pytest.raises(IndexError):
                f(np.ones((2, 3)), np.array(bad))
            for p in (W, E, c):
                np.testing.assert_array_equal(p.value, np.ones(p.value.shape), err_msg=str(mode))
        f(np.ones((2, 3)), np.array([0, 3]))
        np.testing.assert_array_equal(c.value, [0.5, 0.5])
        assert not np.array_equal(W.value, np.ones((3, 4)))


def test_unknown_kernel_kind_is_refused():
    x = gc.placeholder((3,), "float64", name="x")
    s = schedule_graph(gc.function([x], x * 2, backend="numpy").graph)

    class Bogus:
        kind = "bogus"

    with pytest.raises(NotImplementedError):
        KernelRunner(s).run_kernel(Bogus())


def check_listing(s):
    """Each kernel has a block: a header naming its kind, then lines that name every buffer
    it reads and writes with its strides."""
    text = s.listing()
    lines = text.splitlines()
    assert lines[0] == f"{len(s.kernels)} kernels, {len(s.buffers)} buffers"
    heads = [i for i, ln in enumerate(lines) if ln.startswith("  k")]
    assert len(heads) == len(s.kernels)
    ends = heads[1:] + [len(lines) - (1 if s.plan is not None else 0)]
    for i, (start, end, k) in enumerate(zip(heads, ends, s.kernels)):
        head, block = lines[start], "\n".join(lines[start + 1:end])
        assert head.split()[0] == f"k{i}"
        assert k.kind in head.replace("reduce/", "reduce ")
        for bid in k.reads() | k.writes():
            assert f"b{bid}<" in block, (bid, block)
    assert lines[-1] == str(s.plan)


def test_listing_has_one_line_per_kernel():
    s = tanh_mlp_schedule()
    check_listing(s)
    assert "# add tanh" in s.listing()


def test_function_source_is_the_listing():
    f = gc.function([X], gc.tanh(X) * 2, backend="numpy", backend_options=KERNELS)
    assert "no schedule yet" in f.source
    f(XV)
    (s,) = schedules_of(f)
    assert f.source == s.listing()


# ---- the optimizer statistics script --------------------------------------------------------

@pytest.mark.slow
def test_optimizer_stats_script_runs():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "optimizer_stats.py"),
                           "--batch", "32", "--listing"], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout

    def numbers(pattern):
        m = re.search(pattern, out)
        assert m, f"no line matching {pattern!r} in:\n{out}"
        return [float(g.replace(",", "")) for g in m.groups()]

    raw, opt = numbers(r"graph nodes with a None batch size: (\d+) raw -> (\d+) optimized")
    assert 0 < opt <= raw
    raw, opt = numbers(r"specialised to batch 32: (\d+) raw -> (\d+) optimized")
    assert 0 < opt <= raw
    assert re.search(r"optimizer: \d+ -> \d+ nodes", out)
    before, after = numbers(r"kernels: (\d+) unoptimized -> (\d+)")
    assert 0 < after <= before
    kinds = re.search(r"kernel kinds: (.*)", out).group(1)
    assert sum(int(part.split()[0]) for part in kinds.split(", ")) == after
    assert "gemm" in kinds and "elementwise" in kinds
    unshared, arena = numbers(r"peak intermediate memory: ([\d,.]+) KiB without the buffer "
                              r"plan -> ([\d,.]+) KiB with it")
    assert 0 < arena <= unshared
    n_kernels, _ = numbers(r"(\d+) kernels, (\d+) buffers")
    assert n_kernels == after
    assert sum(1 for ln in out.splitlines() if ln.startswith("  k")) == after
    assert re.search(r"memory plan: \d+ temporaries, arena [\d,]+ B \(without reuse [\d,]+ B\)",
                     out)


def test_contiguous_axes_of_elementwise_kernels_collapse_into_one_loop():
    from graphc.schedule.collapse import collapse_elementwise
    w = gc.parameter(np.ones((64, 32), np.float32), name="w_collapse")
    g = gc.placeholder((64, 32), name="g")
    f = gc.function([g], gc.sum(g), updates={w: w - 0.5 * g}, backend="numpy")
    s = schedule_graph(f.graph)
    update = [k for k in s.kernels if k.kind == "elementwise" and "update" in k.fused]
    assert [k.shape for k in update] == [(2048,)]
    # a transposed read cannot merge: the kernel keeps its two axes
    x = gc.placeholder((8, 4), "float64", name="xc")
    s2 = schedule_graph(gc.function([x], gc.exp(x.T) + 1.0, backend="numpy").graph)
    assert any(k.kind == "elementwise" and len(k.shape) == 2 for k in s2.kernels)
    for k in s2.kernels:
        if k.kind == "elementwise":
            assert collapse_elementwise(k) == k
    np.testing.assert_allclose(
        gc.function([x], gc.exp(x.T) + 1.0, backend="numpy",
                    backend_options={"mode": "kernels"})(np.arange(32.0).reshape(8, 4) / 10),
        np.exp(np.arange(32.0).reshape(8, 4).T / 10) + 1.0)


# ---- neighbouring elementwise kernels merge ----------------------------------------------

def _relu_mlp_layer():
    """h = x @ w + b read twice (relu, and relu's gradient's mask h > 0)."""
    rng = np.random.default_rng(5)
    x = gc.placeholder((8, 5), "float64", name="x")
    w = gc.parameter(rng.normal(size=(5, 6)), name="w")
    b = gc.parameter(rng.normal(size=(6,)), name="b")
    v = gc.parameter(rng.normal(size=(6, 3)), name="v")
    loss = gc.sum(gc.relu(x @ w + b) @ v)
    grads = gc.grad(loss, [w, b, v])
    return [x], [loss, *grads], rng.normal(size=(8, 5))


def test_add_and_relu_read_twice_merge_into_one_kernel():
    inputs, outputs, x = _relu_mlp_layer()
    f = gc.function(inputs, outputs, backend="numpy")
    s = schedule_graph(f.graph)
    (both_ops,) = [k for k in s.kernels if k.kind == "elementwise"
                   and {"add", "relu"} <= set(k.fused)]
    # the relu alone: the pre-activation stored beside it only for the gradient's mask is
    # not stored, the mask reads relu > 0 instead (graphc/schedule/redirect.py)
    (relu,) = both_ops.stores
    # the relu is computed from the sum in the same iteration, not loaded back
    assert "add" in ir.expr_ops(relu.value)
    want = f(x)
    for backend, options in (("numpy", KERNELS), ("llvm", None)):
        got = gc.function(inputs, outputs, backend=backend, backend_options=options)(x)
        assert_same(want, got, rtol=1e-12, atol=1e-12)


def test_a_transposed_read_of_the_previous_kernel_does_not_merge():
    x = gc.placeholder((4, 4), "float64", name="x")
    y = gc.exp(x)  # read twice below: stored by a kernel of its own
    f = gc.function([x], [y * 2, y.T + y], backend="numpy")
    s = schedule_graph(f.graph)
    kernels = [k for k in s.kernels if k.kind == "elementwise"]
    assert not any(len(k.stores) > 1 and any(
        ld.access.strides == (1, 4) for st in k.stores for ld in ir.expr_loads(st.value))
        for k in kernels)
    data = np.arange(16.0).reshape(4, 4) / 10
    want = [np.exp(data) * 2, np.exp(data).T + np.exp(data)]
    for backend, options in (("numpy", KERNELS), ("llvm", None)):
        assert_same(want, gc.function([x], [y * 2, y.T + y], backend=backend,
                                      backend_options=options)(data), rtol=1e-12)


def test_merge_refuses_a_kernel_writing_what_the_first_reads():
    from graphc.schedule.merge import merge_elementwise
    shape, f64 = (4,), np.dtype("float64")
    acc = {b: ir.Access(b, (1,), 0) for b in range(3)}
    load = {b: ir.Load(acc[b], f64) for b in range(3)}
    first = ir.Elementwise(shape, (ir.Store(acc[1], ir.Apply("exp", (load[0],), f64)),))
    # writes buffer 0, which the first kernel reads: a merged loop would read new values
    second = ir.Elementwise(shape, (ir.Store(acc[0], ir.Apply("neg", (load[1],), f64)),))
    assert merge_elementwise([first, second]) == [first, second]
    third = ir.Elementwise(shape, (ir.Store(acc[2], ir.Apply("neg", (load[1],), f64)),))
    (merged,) = merge_elementwise([first, third])
    assert merged.stores[1].value.args[0] is first.stores[0].value


# ---- parameter updates folded into the GEMM that makes the gradient ----------------------

def _linear_sgd(batch: int, n_in: int, n_out: int, lr: float, rule=None):
    rng = np.random.default_rng(batch + n_in)
    x = gc.placeholder((batch, n_in), "float32", name="x")
    w = gc.parameter(rng.normal(size=(n_in, n_out)).astype(np.float32), name="w")
    b = gc.parameter(np.zeros(n_out, np.float32), name="b")
    loss = gc.mean((gc.tanh(x @ w + b) - 0.5) ** 2)
    gw, gb = gc.grad(loss, [w, b])
    rule = rule or (lambda p, g: p - lr * g)
    return x, [w, b], loss, {w: rule(w, gw), b: rule(b, gb)}, \
        rng.normal(size=(batch, n_in)).astype(np.float32)


def _steps(backend, options, batch, n_in, n_out, lr=0.05, rule=None, steps=3):
    x, params, loss, updates, data = _linear_sgd(batch, n_in, n_out, lr, rule)
    f = gc.function([x], loss, updates=updates, backend=backend, backend_options=options)
    losses = [float(f(data)) for _ in range(steps)]
    return losses, [p.value.copy() for p in params], f


@pytest.mark.parametrize("batch,n_in,n_out", [(32, 20, 12), (600, 40, 24), (5, 3, 2)],
                         ids=["packed", "several-k-slices", "loop"])
def test_sgd_update_folds_into_the_weight_gradient_gemm(batch, n_in, n_out):
    want_losses, want_params, f = _steps("numpy", None, batch, n_in, n_out)
    s = f.schedule((batch, n_in))
    folded = [k for k in s.kernels if k.kind == "gemm" and k.accumulate]
    assert len(folded) == 1 and folded[0].alpha == pytest.approx(-0.05)
    assert s.buffers[folded[0].out.buffer].role == "param"
    assert not any(k.kind == "elementwise" and k.fused == ("update",)
                   and folded[0].out.buffer in k.writes() for k in s.kernels)
    for backend, options in (("numpy", KERNELS), ("llvm", None)):
        losses, params, _ = _steps(backend, options, batch, n_in, n_out)
        np.testing.assert_allclose(losses, want_losses, rtol=1e-5)
        for got, want in zip(params, want_params):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_an_update_of_another_form_is_not_folded():
    decay = lambda p, g: p * 0.9 - 0.05 * g  # noqa: E731 (weight decay: p is scaled)
    want_losses, want_params, f = _steps("numpy", None, 32, 20, 12, rule=decay)
    s = f.schedule((32, 20))
    assert not any(k.kind == "gemm" and k.accumulate for k in s.kernels)
    losses, params, _ = _steps("llvm", None, 32, 20, 12, rule=decay)
    np.testing.assert_allclose(losses, want_losses, rtol=1e-5)


def test_a_gradient_also_returned_is_not_folded():
    x, params, loss, updates, data = _linear_sgd(16, 8, 4, 0.05)
    gw = gc.grad(loss, [params[0]])[0]
    f = gc.function([x], [loss, gw], updates=updates, backend="numpy")
    s = f.schedule((16, 8))
    assert not any(k.kind == "gemm" and k.accumulate for k in s.kernels)


def test_an_output_a_gemm_also_reads_is_computed_in_the_output_buffer():
    """A fused value that is an output and a GEMM's operand is written once, where the
    output goes (no copy kernel), as a scan body's per-step output is."""
    x = gc.placeholder((4, 3), "float64", "x")
    w = gc.placeholder((3, 2), "float64", "w")
    z = gc.tanh(x) * 2.0 + 1.0
    s = schedule_graph(gc.Graph((x.node, w.node), (z.node, (z @ w).node)))
    assert [k.fused for k in s.kernels if isinstance(k, ir.Elementwise)] == [
        ("tanh", "mul", "add")]
    graph_f, kern_f = both([x, w], [z, z @ w])
    args = (np.linspace(-1, 1, 12).reshape(4, 3), np.arange(6.0).reshape(3, 2))
    assert_same(graph_f(*args), kern_f(*args))
