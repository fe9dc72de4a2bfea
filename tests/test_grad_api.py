"""The differentiation API: gc.grad / vjp / jvp / hessian / name, errors, dtypes and shapes,
labels and provenance in gc.show, gc.to_sympy, gc.elementwise_function, gc.check_grad, and
gradient steps on parameters."""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import graphc as gc
from graphc.errors import GradientError


def run(inputs, outputs, *args):
    return gc.function(inputs, outputs, backend="numpy")(*args)


RNG = np.random.default_rng(2024)

# ---------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------


def test_grad_of_non_scalar_output_suggests_vjp():
    x = gc.placeholder((None, 3), "float64", name="x")
    with pytest.raises(gc.GradientError) as info:
        gc.grad(gc.tanh(x), x)
    assert isinstance(info.value, ValueError)
    assert "vjp" in str(info.value)
    with pytest.raises(ValueError):
        gc.grad(gc.sum(x, axis=0), x)


def test_grad_of_integer_output_is_an_error():
    i = gc.placeholder((3,), "int64")
    x = gc.placeholder((3,), "float64")
    with pytest.raises(GradientError):
        gc.grad(gc.sum(i) + gc.sum(x).astype("int64"), x)


def test_grad_with_respect_to_int_placeholder():
    i = gc.placeholder((3,), "int64", name="i")
    y = gc.sum(i.astype("float64") * 2.0)
    with pytest.raises(gc.GradientError):
        gc.grad(y, i)
    with pytest.raises(ValueError):  # GradientError is a ValueError
        gc.grad(y, [i])
    with pytest.raises(GradientError):
        gc.grad(gc.sum(gc.placeholder((2,), "bool") * 1.0), gc.placeholder((2,), "bool"))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_disconnected_wrt_gives_zeros_of_its_shape_and_dtype(dtype):
    x = gc.placeholder((2, 3), "float64", name="x")
    w = gc.placeholder((4, 5), dtype, name="w")
    g = gc.grad(gc.sum(gc.sin(x)), w)
    assert g.shape == (4, 5) and g.dtype == np.dtype(dtype)
    out = run([x, w], g, np.ones((2, 3)), np.ones((4, 5)))
    assert out.shape == (4, 5) and out.dtype == np.dtype(dtype)
    assert np.all(out == 0)


def test_disconnected_wrt_with_run_time_sizes():
    x = gc.placeholder((3,), "float64")
    w = gc.placeholder((None, 2), "float32")
    g = gc.grad(gc.sum(x * x), w)
    assert g.shape == (None, 2) and g.dtype == np.float32
    out = run([x, w], g, np.ones(3), np.ones((5, 2), np.float32))
    assert out.shape == (5, 2) and out.dtype == np.float32 and not out.any()


def test_disconnected_raise():
    x = gc.placeholder((3,), "float64")
    w = gc.placeholder((3,), "float64")
    y = gc.sum(x * 2.0)
    with pytest.raises(GradientError):
        gc.grad(y, w, disconnected="raise")
    with pytest.raises(GradientError):
        gc.grad(y, [x, w], disconnected="raise")
    (gx,) = gc.grad(y, [x], disconnected="raise")  # connected: fine
    np.testing.assert_array_equal(run([x], gx, np.zeros(3)), [2.0, 2.0, 2.0])
    with pytest.raises(ValueError):
        gc.grad(y, w, disconnected="maybe")


def test_grad_through_stop_gradient_is_zero():
    x = gc.placeholder((4,), "float64")
    v = RNG.normal(size=4)
    g = gc.grad(gc.sum(gc.stop_gradient(gc.exp(x))), x)
    np.testing.assert_array_equal(run([x], g, v), np.zeros(4))
    # only the path outside stop_gradient counts: d/dx [sg(x) * x] = x
    g2 = gc.grad(gc.sum(gc.stop_gradient(x) * x), x)
    np.testing.assert_allclose(run([x], g2, v), v)
    # the forward value is untouched
    np.testing.assert_allclose(run([x], gc.stop_gradient(gc.exp(x)), v), np.exp(v))


def test_integer_paths_carry_no_gradient():
    x = gc.placeholder((5,), "float64")
    v = np.array([0.3, 2.5, -1.0, 1.7, 0.2])
    # take at indices computed from x (argmax): the gradient reaches only the gathered value
    y = gc.take(x, gc.argmax(x)) * 3.0
    np.testing.assert_array_equal(run([x], gc.grad(y, x), v), [0, 3.0, 0, 0, 0])
    # a round trip through integers is a step function: zero derivative
    y2 = gc.sum(gc.astype(gc.astype(x * 10.0, "int64"), "float64"))
    np.testing.assert_array_equal(run([x], gc.grad(y2, x), v), np.zeros(5))
    # comparisons and the argmax index itself carry nothing either
    y3 = gc.sum(gc.where(x > 0.5, 1.0, 0.0)) + gc.argmax(x).astype("float64")
    np.testing.assert_array_equal(run([x], gc.grad(y3, x), v), np.zeros(5))
    # an integer index tensor computed from x, used for gathering from another tensor
    w = gc.placeholder((5,), "float64")
    idx = gc.astype(gc.abs(x) * 1.5, "int64")
    y4 = gc.sum(gc.take(w, idx) ** 2)
    gx, gw = gc.grad(y4, [x, w])
    wv = RNG.normal(size=5)
    gxv, gwv = run([x, w], [gx, gw], v, wv)
    np.testing.assert_array_equal(gxv, np.zeros(5))
    expected = np.zeros(5)
    iv = (np.abs(v) * 1.5).astype(np.int64)
    np.add.at(expected, iv, 2 * wv[iv])
    np.testing.assert_allclose(gwv, expected)


# ---------------------------------------------------------------------------------------
# Shapes and dtypes of results
# ---------------------------------------------------------------------------------------


def test_results_have_wrt_shape_and_dtype():
    x32 = gc.placeholder((2, 3), "float32", name="x32")
    x64 = gc.placeholder((3,), "float64", name="x64")
    s = gc.placeholder((), "float64", name="s")
    y = gc.sum(gc.tanh(x32).astype("float64") * x64) * s
    g32, g64, gs = gc.grad(y, [x32, x64, s])
    assert (g32.shape, g32.dtype) == ((2, 3), np.float32)
    assert (g64.shape, g64.dtype) == ((3,), np.float64)
    assert (gs.shape, gs.dtype) == ((), np.float64)
    a = RNG.normal(size=(2, 3)).astype(np.float32)
    b = RNG.normal(size=3)
    r32, r64, rs = run([x32, x64, s], [g32, g64, gs], a, b, 1.5)
    assert r32.dtype == np.float32 and r64.dtype == np.float64 and rs.shape == ()
    t = np.tanh(a).astype(np.float64)  # tanh runs in float32, then casts
    np.testing.assert_allclose(r32, (1 - t ** 2) * b * 1.5, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r64, t.sum(axis=0) * 1.5, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(rs, np.sum(t * b), rtol=1e-6, atol=1e-7)


def test_results_keep_wrt_static_shape_when_rules_know_more_or_less():
    # a matmul whose inner size is None on one side: the rule for the other side cannot
    # see the size, and a reshape can pin down a None size; gradients keep wrt's shape
    a = gc.placeholder((1, 2), "float64", name="a")
    b = gc.placeholder((None,), "float64", name="b")
    c = gc.placeholder((None, 3), "float64", name="c")
    y = gc.sum(gc.abs(a @ b)) + gc.sum(gc.reshape(c, (1, 3)) ** 2)
    ga, gb, gc_ = gc.grad(y, [a, b, c])
    assert (ga.shape, gb.shape, gc_.shape) == ((1, 2), (None,), (None, 3))
    av, bv, cv = np.array([[1.0, -2.0]]), np.array([0.5, 3.0]), np.array([[1.0, 2.0, 3.0]])
    ra, rb, rc = run([a, b, c], [ga, gb, gc_], av, bv, cv)
    s = np.sign(av @ bv)
    np.testing.assert_allclose(ra, s[:, None] * bv[None, :])
    np.testing.assert_allclose(rb, (s[:, None] * av).sum(axis=0))
    np.testing.assert_allclose(rc, 2 * cv)
    # and vjp / jvp results
    t = gc.placeholder((None,), "float64")
    assert gc.jvp(a @ b, b, t).shape == (1,)
    assert gc.vjp(a @ b, [a, b], np.ones(1))[0].shape == (1, 2)


def test_grad_of_float32_loss():
    x = gc.placeholder((4,), "float32")
    g = gc.grad(gc.mean(gc.square(x)), x)
    assert g.dtype == np.float32
    v = np.array([1, 2, 3, 4], np.float32)
    out = run([x], g, v)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, v / 2)


def test_grad_single_and_list_forms():
    x = gc.placeholder((2,), "float64")
    y = gc.sum(x ** 2)
    assert isinstance(gc.grad(y, x), gc.Tensor)
    both = gc.grad(y, [x, x])
    assert isinstance(both, list) and len(both) == 2
    with pytest.raises(TypeError):
        gc.grad(y, np.ones(2))
    with pytest.raises(TypeError):
        gc.grad(np.ones(()), x)


def test_grad_with_respect_to_an_intermediate_tensor():
    x = gc.placeholder((3,), "float64")
    h = gc.tanh(x)
    y = gc.sum(h ** 2) + gc.sum(x)
    gh, gx = gc.grad(y, [h, x])
    v = RNG.normal(size=3)
    a, b = run([x], [gh, gx], v)
    np.testing.assert_allclose(a, 2 * np.tanh(v))
    np.testing.assert_allclose(b, 2 * np.tanh(v) * (1 - np.tanh(v) ** 2) + 1)


def test_grad_of_the_input_itself():
    x = gc.placeholder((), "float64")
    np.testing.assert_array_equal(run([x], gc.grad(x, x), 3.0), 1.0)


def test_vjp_cotangent_of_another_float_dtype_is_cast():
    x = gc.placeholder((3,), "float64")
    y = gc.sin(x) * x
    u32 = gc.placeholder((3,), "float32")
    g = gc.vjp(y, x, u32)
    assert g.dtype == np.float64
    v = RNG.normal(size=3)
    u = np.array([0.5, -1.0, 2.0], np.float32)
    np.testing.assert_allclose(run([x, u32], g, v, u), u * (np.cos(v) * v + np.sin(v)))
    # a float64 cotangent on a float32 output, as a numpy array
    x32 = gc.placeholder((3,), "float32")
    g32 = gc.vjp(x32 * 2.0, x32, np.array([1.0, 2.0, 3.0]))
    assert g32.dtype == np.float32
    np.testing.assert_allclose(run([x32], g32, np.zeros(3, np.float32)), [2.0, 4.0, 6.0])


def test_vjp_wrong_cotangent_shape_raises():
    x = gc.placeholder((3,), "float64")
    y = gc.exp(x)
    with pytest.raises(ValueError):
        gc.vjp(y, x, gc.placeholder((4,), "float64"))
    with pytest.raises(ValueError):
        gc.vjp(y, x, np.ones((3, 1)))
    with pytest.raises(ValueError):
        gc.vjp([y, y], x, [np.ones(3)])  # one cotangent for two outputs
    with pytest.raises(ValueError):
        gc.jvp(y, x, gc.placeholder((2,), "float64"))
    with pytest.raises(ValueError):
        gc.jvp(y, [x, x], [np.ones(3)])


def test_vjp_jvp_multiple_outputs_and_inputs():
    a = gc.placeholder((3, 2), "float64", name="a")
    b = gc.placeholder((2,), "float64", name="b")
    y1 = gc.tanh(a @ b)              # (3,)
    y2 = gc.sum(a * b, axis=0) ** 2  # (2,)
    av, bv = RNG.normal(size=(3, 2)), RNG.normal(size=2)
    u1, u2 = RNG.normal(size=3), RNG.normal(size=2)
    ta, tb = RNG.normal(size=(3, 2)), RNG.normal(size=2)
    c1, c2 = gc.placeholder((3,), "float64"), gc.placeholder((2,), "float64")
    pa, pb = gc.placeholder((3, 2), "float64"), gc.placeholder((2,), "float64")
    va, vb = gc.vjp([y1, y2], [a, b], [c1, c2])
    j1, j2 = gc.jvp([y1, y2], [a, b], [pa, pb])
    assert (va.shape, vb.shape, j1.shape, j2.shape) == ((3, 2), (2,), (3,), (2,))
    ins = [a, b, c1, c2, pa, pb]
    va_, vb_, j1_, j2_ = run(ins, [va, vb, j1, j2], av, bv, u1, u2, ta, tb)
    # <u, J t> == <J^T u, t>
    lhs = u1 @ j1_ + u2 @ j2_
    rhs = np.sum(va_ * ta) + vb_ @ tb
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12)
    # and both against numpy: J t by central differences of the numpy function
    def f(A, B):
        return np.tanh(A @ B), np.sum(A * B, axis=0) ** 2
    eps = 1e-6
    p, m = f(av + eps * ta, bv + eps * tb), f(av - eps * ta, bv - eps * tb)
    np.testing.assert_allclose(j1_, (p[0] - m[0]) / (2 * eps), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(j2_, (p[1] - m[1]) / (2 * eps), rtol=1e-6, atol=1e-9)


def test_jvp_of_output_independent_of_wrt_is_zero():
    x = gc.placeholder((None,), "float64")
    z = gc.placeholder((None,), "float64")
    t = gc.placeholder((None,), "float64")
    j = gc.jvp(gc.sin(z), x, t)
    out = run([x, z, t], j, np.ones(2), np.ones(4), np.ones(2))
    np.testing.assert_array_equal(out, np.zeros(4))


def test_jvp_with_broadcasting_and_run_time_sizes():
    # forward mode transposes rules that broadcast like their inputs (sum, slice)
    x = gc.placeholder((None, 1), "float64")
    w = gc.placeholder((1, 4), "float64")
    tx, tw = gc.placeholder((None, 1), "float64"), gc.placeholder((1, 4), "float64")
    y = gc.concatenate([x * w, gc.sin(x)[::-1]], axis=1)
    j = gc.jvp(y, [x, w], [tx, tw])
    xv, wv, txv, twv = RNG.normal(size=(3, 1)), RNG.normal(size=(1, 4)), \
        RNG.normal(size=(3, 1)), RNG.normal(size=(1, 4))
    out = run([x, w, tx, tw], j, xv, wv, txv, twv)
    ref = np.concatenate([txv * wv + xv * twv, (np.cos(xv) * txv)[::-1]], axis=1)
    np.testing.assert_allclose(out, ref)


def test_grad_of_grad_to_order_three():
    x = gc.placeholder((), "float64")
    y = x ** 5 + gc.sin(x)
    g1 = gc.grad(y, x)
    g2 = gc.grad(g1, x)
    g3 = gc.grad(g2, x)
    for v in (-1.3, 0.0, 0.7, 2.0):
        a, b, c = run([x], [g1, g2, g3], v)
        np.testing.assert_allclose(a, 5 * v ** 4 + np.cos(v), atol=1e-12)
        np.testing.assert_allclose(b, 20 * v ** 3 - np.sin(v), atol=1e-12)
        np.testing.assert_allclose(c, 60 * v ** 2 - np.cos(v), atol=1e-12)


def test_hessian_shape_and_errors():
    x = gc.placeholder((3,), "float64")
    H = gc.hessian(gc.sum(x ** 3) + x[0] * x[2], x)
    out = run([x], H, np.array([1.0, 2.0, 3.0]))
    ref = np.diag([6.0, 12.0, 18.0])
    ref[0, 2] = ref[2, 0] = 1.0
    np.testing.assert_allclose(out, ref)
    with pytest.raises(GradientError):
        gc.hessian(gc.sum(gc.placeholder((None,), "float64")), gc.placeholder((None,),
                                                                               "float64"))
    with pytest.raises(TypeError):
        gc.hessian(np.ones(()), x)


# ---------------------------------------------------------------------------------------
# Names and provenance in gc.show
# ---------------------------------------------------------------------------------------


def _mlp():
    X = gc.placeholder((None, 2), "float64", name="X")
    W1 = gc.parameter(RNG.normal(size=(2, 3)), name="W1")
    b1 = gc.parameter(np.zeros(3), name="b1")
    W2 = gc.parameter(RNG.normal(size=(3, 1)), name="W2")
    loss = gc.name(gc.mean(gc.square(gc.tanh(X @ W1 + b1) @ W2)), "loss")
    return X, W1, b1, W2, loss


def test_gradient_nodes_are_labelled_by_loss_and_parameter():
    X, W1, b1, W2, loss = _mlp()
    gW1, gb1, gW2, gX = gc.grad(loss, [W1, b1, W2, X])
    text = gc.show([gW1, gb1, gW2, gX])
    for label in ("%dloss/dW1", "%dloss/db1", "%dloss/dW2", "%dloss/dX"):
        assert label in text, text
    # the label names the node that computes the gradient (it is returned)
    assert gc.show(gW1).rstrip().splitlines()[-1] == "return %dloss/dW1"


def test_grad_does_not_rename_a_forward_node():
    # d exp(x)/dx is the node exp(x) itself: it keeps its own name
    x = gc.placeholder((), "float64", name="x")
    y = gc.name(gc.exp(x), "energy")
    g = gc.grad(y, x)
    assert "%energy" in gc.show(y) and "denergy" not in gc.show(y)
    g2 = gc.grad(g, x)
    assert "ddenergy" not in gc.show(g2)
    assert run([x], g2, 0.5) == pytest.approx(np.exp(0.5))


def test_name_returns_its_tensor_and_checks_arguments():
    x = gc.placeholder((2,), "float64", name="x")
    y = gc.sum(x * x)
    assert gc.name(y, "energy") is y
    assert "%denergy/dx" in gc.show(gc.grad(y, x))
    with pytest.raises(TypeError):
        gc.name(y, "")
    with pytest.raises(TypeError):
        gc.name(np.ones(2), "a")


def test_show_provenance_lists_the_derivative_rules():
    X, W1, b1, W2, loss = _mlp()
    gW1 = gc.grad(loss, W1)
    plain = gc.show(gW1)
    with_rules = gc.show(gW1, provenance=True)
    assert "dtanh/dx" not in plain
    assert "dtanh/dx" in with_rules
    assert "vjp of matmul" in with_rules
    assert "dsquare/dx" in with_rules
    # the tanh rule line holds the table's formula
    assert "1 - tanh(x)**2" in with_rules
    x = gc.placeholder((), "float64", name="x")
    assert "dsin/dx = cos(x)" in gc.show(gc.grad(gc.sin(x) * 2.0, x), provenance=True)


# ---------------------------------------------------------------------------------------
# gc.to_sympy of derivative graphs
# ---------------------------------------------------------------------------------------

XS, YS = sp.symbols("x y", real=True)

TO_SYMPY_CASES = [
    (lambda m, x, y: x * m.sin(y) + m.exp(x * y) / (1 + x ** 2)),
    (lambda m, x, y: m.log(1 + x ** 2) * m.tanh(y) - m.sqrt(2 + m.cos(x))),
    (lambda m, x, y: x ** y + 3 * x / y),
    (lambda m, x, y: m.tan(x) * m.sec(y) + m.cot(x) - m.csc(y)),
]


class _Sym:
    sin, cos, tan, exp, log, sqrt, tanh = sp.sin, sp.cos, sp.tan, sp.exp, sp.log, sp.sqrt, \
        sp.tanh
    sec, cot, csc = sp.sec, sp.cot, sp.csc


@pytest.mark.parametrize("case", range(len(TO_SYMPY_CASES)))
def test_to_sympy_of_derivative_graph_equals_sympy_diff(case):
    fn = TO_SYMPY_CASES[case]
    x = gc.placeholder((), "float64", name="x")
    y = gc.placeholder((), "float64", name="y")
    f = fn(gc, x, y)
    expr = fn(_Sym, XS, YS)
    assert sp.simplify(gc.to_sympy(f) - expr) == 0
    gx, gy = gc.grad(f, [x, y])
    for g, sym in ((gx, XS), (gy, YS)):
        got = _off_conventions(gc.to_sympy(g))
        assert got.free_symbols <= {XS, YS}
        assert sp.simplify(got - sp.diff(expr, sym)) == 0, (got, sp.diff(expr, sym))
    # second order too
    gxy = gc.grad(gx, y)
    assert sp.simplify(_off_conventions(gc.to_sympy(gxy)) - sp.diff(expr, XS, YS)) == 0


def _off_conventions(expr: sp.Expr) -> sp.Expr:
    """pow's derivatives carry graphc's convention at x = 0 or y = 0 as a Piecewise
    (docs/conventions.md); for x, y > 0 they are sympy.diff's."""
    positive = sp.Q.positive(XS) & sp.Q.positive(YS)
    return sp.refine(expr, positive) if expr.has(sp.Piecewise) else expr


def test_to_sympy_of_derivative_with_transcendental_constants():
    x = gc.placeholder((), "float64", name="x")
    for g_fn, s_fn in ((lambda t: gc.erf(t) * 3.0, lambda t: sp.erf(t) * 3),
                       (lambda t: 2.0 ** t, lambda t: 2 ** t),
                       (lambda t: gc.log(t, base=10.0), lambda t: sp.log(t) / sp.log(10))):
        got = gc.to_sympy(gc.grad(g_fn(x), x))
        want = sp.diff(s_fn(XS), XS)
        for v in (0.3, 1.1, 2.7):  # constants like 2/sqrt(pi) are floats in the graph
            assert float(got.subs(XS, v)) == pytest.approx(float(want.subs(XS, v)), rel=1e-12)


def test_to_sympy_of_piecewise_derivatives():
    x = gc.placeholder((), "float64", name="x")
    y = gc.placeholder((), "float64", name="y")
    cases = [gc.relu(x) * y, gc.maximum(x, y) * x, gc.where(x > y, x ** 2, y)]
    for f in cases:
        expr = gc.to_sympy(f)
        for g, sym in zip(gc.grad(f, [x, y]), (XS, YS)):
            got, want = gc.to_sympy(g), sp.diff(expr, sym)
            for xv, yv in ((0.7, -0.4), (-0.7, 0.4), (1.5, 2.5), (-2.0, -3.0)):
                pt = {XS: xv, YS: yv}
                assert float(got.subs(pt)) == pytest.approx(float(want.subs(pt))), (f, sym, pt)


def test_to_sympy_of_gradients_of_sums_over_scalars():
    # gc.grad(gc.sum(...)) over 0-d or one-element inputs: sums, broadcasts and the max
    # rule's tie count are identities on one element
    x = gc.placeholder((), "float64", name="x")
    y = gc.placeholder((), "float64", name="y")
    z = gc.placeholder((1,), "float64", name="z")
    zs = sp.Symbol("z", real=True)
    cases = [(gc.sum(gc.sin(x) * y), x, sp.sin(XS) * YS, XS),
             (gc.mean(x * x * y), y, XS ** 2 * YS, YS),
             (gc.sum(gc.exp(z) * 2.0), z, 2 * sp.exp(zs), zs),
             (gc.max(gc.tanh(x)), x, sp.tanh(XS), XS),
             ((x > y).astype("float64") * x ** 3, x,
              sp.Piecewise((XS ** 3, XS > YS), (0, True)), XS)]
    for f, w, expr, sym in cases:
        got = gc.to_sympy(gc.grad(f, w))
        want = sp.diff(expr, sym)
        for pt in ({XS: 0.7, YS: -0.3, zs: 0.2}, {XS: -1.2, YS: 0.5, zs: -2.0}):
            assert float(got.subs(pt)) == pytest.approx(float(want.subs(pt))), (f, got)


def test_to_sympy_rejects_non_elementwise_graphs():
    v = gc.placeholder((3,), "float64", name="v")
    with pytest.raises(ValueError):
        gc.to_sympy(gc.sin(v))
    s = gc.placeholder((), "float64", name="s")
    with pytest.raises(ValueError):
        gc.to_sympy(gc.sum(gc.broadcast_to(s, (3,))))
    with pytest.raises(TypeError):
        gc.to_sympy(sp.Symbol("x"))


# ---------------------------------------------------------------------------------------
# User-defined elementwise functions
# ---------------------------------------------------------------------------------------

_SOFTSIGN = {}


def softsign():
    if "fn" not in _SOFTSIGN:
        _SOFTSIGN["fn"] = gc.elementwise_function("softsign_gradapi",
                                                  lambda x: x / (1 + sp.Abs(x)))
    return _SOFTSIGN["fn"]


def _softsign_derivatives(order):
    t = sp.Symbol("t", real=True)
    d = sp.diff(t / (1 + sp.Abs(t)), t, order).replace(sp.DiracDelta, lambda *a: 0)
    return sp.lambdify(t, d, "numpy")


def test_elementwise_function_values_and_derivatives_to_second_order():
    ss = softsign()
    x = gc.placeholder((None,), "float64", name="x")
    y = ss(x)
    g1 = gc.grad(gc.sum(y), x)
    g2 = gc.grad(gc.sum(g1), x)
    v = np.concatenate([RNG.uniform(0.1, 4, 10), -RNG.uniform(0.1, 4, 10)])
    a, b, c = run([x], [y, g1, g2], v)
    np.testing.assert_allclose(a, v / (1 + np.abs(v)))
    np.testing.assert_allclose(b, 1 / (1 + np.abs(v)) ** 2)  # by hand
    np.testing.assert_allclose(b, _softsign_derivatives(1)(v))
    np.testing.assert_allclose(c, -2 * np.sign(v) / (1 + np.abs(v)) ** 3)
    np.testing.assert_allclose(c, _softsign_derivatives(2)(v))


def test_elementwise_function_prints_and_reads_back():
    ss = softsign()
    x = gc.placeholder((), "float64", name="x")
    assert "softsign_gradapi(%x)" in gc.show(ss(x))
    assert sp.simplify(gc.to_sympy(ss(x)) - XS / (1 + sp.Abs(XS))) == 0
    assert "dsoftsign_gradapi/dx" in gc.show(gc.grad(ss(x), x), provenance=True)


def test_elementwise_function_appears_in_the_table():
    softsign()
    from graphc import table
    assert "| `softsign_gradapi` |" in table.markdown()
    assert r"\texttt{softsign\_gradapi}" in table.latex()
    from graphc.derivatives import elementwise_ops
    assert "softsign_gradapi" in elementwise_ops()


def test_check_grad_passes_on_elementwise_function():
    ss = softsign()
    res = gc.check_grad(lambda a, b: gc.sum(ss(a) * gc.sin(b)), away_from_zero((3, 4)),
                        RNG.normal(size=(3, 4)))
    assert res, str(res)
    assert res.ok and len(res.names) == 2 and all(c == 12 for c in res.checked)
    assert max(res.max_abs_error) < 1e-6


def test_elementwise_function_with_two_arguments():
    f2 = _two_arg()
    a = gc.placeholder((None,), "float64")
    b = gc.placeholder((None,), "float64")
    ga, gb = gc.grad(gc.sum(f2(a, b)), [a, b])
    av, bv = RNG.normal(size=6), RNG.normal(size=6)
    x, y = run([a, b], [ga, gb], av, bv)
    np.testing.assert_allclose(x, np.cos(av) * bv ** 2)
    np.testing.assert_allclose(y, 2 * np.sin(av) * bv)


_TWO = {}

_MORE = {}


def _more_functions():
    if not _MORE:
        _MORE["cosh"] = gc.elementwise_function("cosh_gradapi", lambda x: sp.cosh(x) / 2)
        _MORE["window"] = gc.elementwise_function(
            "window_gradapi", lambda x: sp.Piecewise((x ** 2, (x > 0) & (x < 1)),
                                                     (x ** 3, sp.Not(x > -1) | (x > 2)),
                                                     (0, True)))
    return _MORE


def test_elementwise_function_whose_derivative_has_no_primitive():
    # d cosh = sinh: there is no sinh primitive; the rule is built from exp
    f = _more_functions()["cosh"]
    x = gc.placeholder((None,), "float64")
    g1 = gc.grad(gc.sum(f(x)), x)
    g2 = gc.grad(gc.sum(g1), x)
    v = np.linspace(-2, 2, 9)
    a, b = run([x], [g1, g2], v)
    np.testing.assert_allclose(a, np.sinh(v) / 2, atol=1e-15)
    np.testing.assert_allclose(b, np.cosh(v) / 2)


def test_elementwise_function_with_compound_piecewise_conditions():
    f = _more_functions()["window"]
    x = gc.placeholder((None,), "float64")
    g = gc.grad(gc.sum(f(x)), x)
    v = np.array([-2.0, -0.5, 0.25, 0.75, 1.5, 2.5])
    vals, grads = run([x], [f(x), g], v)
    np.testing.assert_allclose(vals, [-8.0, 0.0, 0.0625, 0.5625, 0.0, 15.625])
    np.testing.assert_allclose(grads, [12.0, 0.0, 0.5, 1.5, 0.0, 18.75])


def _two_arg():
    if "fn" not in _TWO:
        _TWO["fn"] = gc.elementwise_function("sinmul_gradapi", lambda p, q: sp.sin(p) * q ** 2)
    return _TWO["fn"]


def away_from_zero(shape):
    return RNG.uniform(0.2, 3, shape) * RNG.choice([-1.0, 1.0], shape)


# ---------------------------------------------------------------------------------------
# gc.check_grad: it passes on right gradients and can fail on wrong ones
# ---------------------------------------------------------------------------------------


def test_check_grad_passes_on_a_network_loss_with_parameters():
    X = gc.placeholder((5, 2), "float64", name="X")
    W = gc.parameter(RNG.normal(size=(2, 3)), name="W")
    loss = gc.sum(gc.tanh(X @ W) ** 2)
    before = W.value
    res = gc.check_grad(loss, wrt=[W, X], feed={X: RNG.normal(size=(5, 2))})
    assert res
    np.testing.assert_array_equal(W.value, before)  # restored after perturbing


def test_check_grad_fails_when_the_symbolic_gradient_is_wrong():
    # stop_gradient hides a path from gc.grad but not from the finite differences
    res = gc.check_grad(lambda a: gc.sum(a * gc.stop_gradient(a)), RNG.normal(size=5) + 3)
    assert not res
    assert not res.ok and "FAILED" in str(res)
    with pytest.raises(AssertionError):
        gc.check_grad(lambda a: gc.sum(a * gc.stop_gradient(a)), RNG.normal(size=5) + 3,
                      raise_on_failure=True)


def test_check_grad_honours_explicit_zero_tolerances():
    x = np.linspace(0.1, 1.0, 5)
    loss = lambda a: gc.sum(gc.sin(a))  # noqa: E731
    assert gc.check_grad(loss, x)
    assert gc.check_grad(loss, x, rtol=0, atol=1e-6)
    # differences are never exact for sin: with no tolerance at all the check fails
    assert not gc.check_grad(loss, x, rtol=0, atol=0)


def test_check_grad_catches_a_wrong_table_rule(monkeypatch):
    import graphc.autodiff as ad
    real = ad.partials
    x = sp.Symbol("x", real=True)

    def wrong(op):
        return (sp.sin(x),) if op == "sin" else real(op)  # d sin = sin: wrong

    monkeypatch.setattr(ad, "partials", wrong)
    res = gc.check_grad(lambda a: gc.sum(gc.sin(a) * 2.0), RNG.uniform(0.3, 1.2, 4))
    assert not res
    monkeypatch.undo()
    assert gc.check_grad(lambda a: gc.sum(gc.sin(a) * 2.0), RNG.uniform(0.3, 1.2, 4))


# ---------------------------------------------------------------------------------------
# Parameters and training steps
# ---------------------------------------------------------------------------------------


def test_gradient_of_parameters_and_a_training_step():
    target = np.array([1.0, -2.0, 0.5])
    p = gc.parameter(np.array([3.0, 0.0, -1.0]), name="p")
    assert p.dtype == np.float64
    loss = gc.sum((p - target) ** 2)
    g = gc.grad(loss, p)
    assert g.shape == (3,) and g.dtype == np.float64
    step = gc.function([], loss, updates={p: p - 0.1 * gc.grad(loss, p)}, backend="numpy")
    losses = []
    expected = np.array([3.0, 0.0, -1.0])
    for _ in range(20):
        losses.append(float(step()))
        expected = expected - 0.1 * 2 * (expected - target)
    assert all(b < a for a, b in zip(losses, losses[1:]))
    np.testing.assert_allclose(p.value, expected)
    np.testing.assert_allclose(losses[0], np.sum((np.array([3.0, 0.0, -1.0]) - target) ** 2))
    assert losses[-1] < 1e-2 * losses[0]


def test_least_squares_training_matches_numpy_gradient_descent():
    X = RNG.normal(size=(20, 3))
    w_true = np.array([0.5, -1.0, 2.0])
    Y = X @ w_true
    w = gc.parameter(np.zeros(3), name="w")
    b = gc.parameter(np.zeros(()), name="b")
    xs = gc.placeholder((None, 3), "float64", name="xs")
    ys = gc.placeholder((None,), "float64", name="ys")
    loss = gc.nn.mse(xs @ w + b, ys)
    gw, gb = gc.grad(loss, [w, b])
    step = gc.function([xs, ys], loss, updates={w: w - 0.1 * gw, b: b - 0.1 * gb},
                       backend="numpy")
    wn, bn = np.zeros(3), 0.0
    first = None
    for _ in range(50):
        lv = step(X, Y)
        first = lv if first is None else first
        r = X @ wn + bn - Y
        wn, bn = wn - 0.1 * 2 * X.T @ r / len(Y), bn - 0.1 * 2 * r.mean()
    np.testing.assert_allclose(w.value, wn, rtol=1e-10)
    np.testing.assert_allclose(b.value, bn, rtol=1e-10, atol=1e-14)
    assert float(lv) < 0.05 * float(first)


def test_float32_parameter_gradient_dtype():
    p = gc.parameter(np.ones((2, 2), np.float32), name="p32")
    x = gc.placeholder((2,), "float32")
    g = gc.grad(gc.sum(p @ x), p)
    assert g.dtype == np.float32
    out = run([x], g, np.array([1.0, 2.0], np.float32))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[1.0, 2.0], [1.0, 2.0]])


# ---------------------------------------------------------------------------------------
# Sizes given at call time that broadcast against each other
# ---------------------------------------------------------------------------------------


def test_gradient_when_a_run_time_size_broadcasts():
    """x: (None, 3) and y: (None, 3) fed (1, 3) and (4, 3): numpy broadcasting makes the sum
    (4, 3). The gradient for x must be x's shape (the sum over the broadcast axis), or the
    call must be refused; a (4, 3) array for a (1, 3) input is wrong."""
    x = gc.placeholder((None, 3), "float64", name="x")
    y = gc.placeholder((None, 3), "float64", name="y")
    gx = gc.grad(gc.sum((x + y) ** 2), x)
    f = gc.function([x, y], gx, backend="numpy")
    xv, yv = RNG.normal(size=(1, 3)), RNG.normal(size=(4, 3))
    try:
        out = f(xv, yv)
    except ValueError:  # refusing the call is fine (ShapeError is a ValueError)
        return
    assert out.shape == (1, 3), f"gradient for a (1, 3) input has shape {out.shape}"
    np.testing.assert_allclose(out, np.sum(2 * (xv + yv), axis=0, keepdims=True))


def test_gradients_of_an_unnamed_loss_take_the_loss_function_name():
    """An unnamed library loss labels its gradients by the function that built it (not by
    an internal op such as div); a name the user gives wins."""
    x = gc.placeholder((None, 4), name="x_unnamed_loss")
    y = gc.placeholder((None,), "int64", name="y_unnamed_loss")
    w = gc.parameter(np.zeros((4, 3), np.float32), name="W_unnamed_loss")
    t = gc.placeholder((None, 3), name="t_unnamed_loss")
    losses = {"cross_entropy": gc.nn.cross_entropy(x @ w, y), "mse": gc.nn.mse(x @ w, t),
              "huber": gc.nn.huber(x @ w, t),
              "binary_cross_entropy_with_logits":
                  gc.nn.binary_cross_entropy_with_logits(x @ w, t)}
    for fn, loss in losses.items():
        assert f"d{fn}/dW_unnamed_loss" in gc.show(gc.grad(loss, w)), fn
    named = gc.name(gc.nn.mse(x @ w * 2.0, t), "my_loss")
    assert "dmy_loss/dW_unnamed_loss" in gc.show(gc.grad(named, w))
