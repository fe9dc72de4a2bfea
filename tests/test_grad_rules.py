"""Every primitive's reverse-mode (vjp) and forward-mode (jvp) rule against central finite
differences in float64, with broadcasting; second and third derivatives; gc.hessian; and
gradients over inputs whose sizes are given only at call time."""
from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp

import graphc as gc
from graphc.frontends.tensor import Tensor
from graphc.ops import make

# ---------------------------------------------------------------------------------------
# The shared finite-difference harness
# ---------------------------------------------------------------------------------------


def _vdot(a, b) -> float:
    return float(np.sum(np.asarray(a, np.float64) * np.asarray(b, np.float64)))


def _norm(a) -> float:
    return float(np.sqrt(np.sum(np.asarray(a, np.float64) ** 2)))


def fd_check(build, arrays, *, shapes=None, eps=1e-6, rtol=1e-6, atol=1e-9, seed=0,
             directions=2):
    """Checks gc.vjp and gc.jvp of `build(*placeholders)` at `arrays` against central
    differences (f(x + eps t) - f(x - eps t)) / 2 eps along random directions t.

    vjp: for a random cotangent u and each float input i, <u, J_i t_i> (by differences)
    must equal <vjp_i(u), t_i>, and vjp_i must have input i's shape and dtype.
    jvp: J t for random tangents on all float inputs at once, compared elementwise.
    `shapes` overrides the placeholders' static shapes (None entries: sizes at call time)."""
    rng = np.random.default_rng(seed)
    arrays = [np.asarray(a) for a in arrays]
    shapes = shapes or [a.shape for a in arrays]
    phs = [gc.placeholder(s, a.dtype, name=f"in{i}") for i, (s, a) in
           enumerate(zip(shapes, arrays))]
    out = build(*phs)
    diff = [i for i, a in enumerate(arrays) if a.dtype.kind == "f"]
    assert diff, "nothing to differentiate"
    f = gc.function(phs, out, backend="numpy")
    y0 = np.asarray(f(*arrays))
    assert out.dtype.kind == "f"

    ct = gc.placeholder(tuple(None if d is None else d for d in out.shape), out.dtype,
                        name="ct")
    tans = [gc.placeholder(shapes[i], arrays[i].dtype, name=f"t{i}") for i in diff]
    wrt = [phs[i] for i in diff]
    vjps = gc.vjp(out, wrt, ct)
    jvp = gc.jvp(out, wrt, tans)
    assert jvp.dtype == out.dtype
    f_vjp = gc.function(phs + [ct], vjps, backend="numpy")
    f_jvp = gc.function(phs + tans, jvp, backend="numpy")

    def shifted(ts, sign):
        args = list(arrays)
        for i, t in zip(diff, ts):
            args[i] = (arrays[i].astype(np.float64) + sign * eps * t).astype(arrays[i].dtype)
        return np.asarray(f(*args), np.float64)

    for _ in range(directions):
        u = rng.standard_normal(y0.shape)
        ts = [rng.standard_normal(arrays[i].shape) for i in diff]
        got = f_vjp(*arrays, u.astype(y0.dtype))
        for k, i in enumerate(diff):
            g = np.asarray(got[k])
            assert g.shape == arrays[i].shape, (i, g.shape, arrays[i].shape)
            assert g.dtype == arrays[i].dtype, (i, g.dtype, arrays[i].dtype)
            only = [np.zeros_like(t) for t in ts]
            only[k] = ts[k]
            jt = (shifted(only, 1) - shifted(only, -1)) / (2 * eps)
            lhs, rhs = _vdot(u, jt), _vdot(g, ts[k])
            scale = _norm(u) * _norm(jt) + _norm(g) * _norm(ts[k])
            assert abs(lhs - rhs) <= rtol * scale + atol, (
                f"vjp for input {i}: <u, J t> = {lhs!r} by differences, "
                f"<J^T u, t> = {rhs!r} symbolically")
        jt_all = (shifted(ts, 1) - shifted(ts, -1)) / (2 * eps)
        jv = np.asarray(f_jvp(*arrays, *[t.astype(arrays[i].dtype) for i, t in zip(diff, ts)]))
        assert jv.shape == y0.shape
        np.testing.assert_allclose(jv, jt_all, rtol=50 * rtol,
                                   atol=50 * rtol * (np.max(np.abs(jt_all), initial=0) + 1)
                                   + atol)
    return y0


RNG = np.random.default_rng(12345)


def normal(*shape):
    return RNG.standard_normal(shape)


def uniform(lo, hi, *shape):
    return RNG.uniform(lo, hi, shape)


def away(lo, hi, *shape, gap=0.2):
    """Uniform on [lo, hi] but never within `gap` of 0 (kinks of abs, relu, sign)."""
    x = RNG.uniform(gap, max(abs(lo), abs(hi)), shape)
    return np.where(RNG.random(shape) < 0.5, -x, x).clip(lo, hi)


# ---------------------------------------------------------------------------------------
# Elementwise primitives, with numpy broadcasting
# ---------------------------------------------------------------------------------------

UNARY_CASES = {
    "neg": (lambda x: -x, lambda s: normal(*s)),
    "exp": (gc.exp, lambda s: uniform(-2, 2, *s)),
    "log": (gc.log, lambda s: uniform(0.3, 3, *s)),
    "sqrt": (gc.sqrt, lambda s: uniform(0.3, 3, *s)),
    "square": (gc.square, lambda s: normal(*s)),
    "abs": (gc.abs, lambda s: away(-3, 3, *s)),
    "sign": (gc.sign, lambda s: away(-3, 3, *s)),
    "sin": (gc.sin, lambda s: uniform(-3, 3, *s)),
    "cos": (gc.cos, lambda s: uniform(-3, 3, *s)),
    "tan": (gc.tan, lambda s: uniform(-1.2, 1.2, *s)),
    "cot": (gc.cot, lambda s: uniform(0.3, 2.8, *s)),
    "sec": (gc.sec, lambda s: uniform(-1.2, 1.2, *s)),
    "csc": (gc.csc, lambda s: uniform(0.3, 2.8, *s)),
    "tanh": (gc.tanh, lambda s: uniform(-3, 3, *s)),
    "sigmoid": (gc.sigmoid, lambda s: uniform(-5, 5, *s)),
    "softplus": (gc.softplus, lambda s: uniform(-5, 5, *s)),
    "relu": (gc.relu, lambda s: away(-3, 3, *s)),
    "erf": (gc.erf, lambda s: uniform(-2, 2, *s)),
    "log_base_2": (lambda x: gc.log(x, base=2.0), lambda s: uniform(0.3, 3, *s)),
    "number_pow": (lambda x: 2.5 ** x, lambda s: uniform(-2, 2, *s)),
    "pow_number": (lambda x: x ** 3, lambda s: normal(*s)),
    "pow_fraction": (lambda x: x ** 1.5, lambda s: uniform(0.3, 3, *s)),
    "pow_negative": (lambda x: x ** -2, lambda s: uniform(0.5, 3, *s)),
    "reciprocal": (lambda x: 1.0 / x, lambda s: away(-3, 3, *s, gap=0.5)),
    # more of numpy (issue #16)
    "sinh": (gc.sinh, lambda s: uniform(-2, 2, *s)),
    "cosh": (gc.cosh, lambda s: uniform(-2, 2, *s)),
    "arcsin": (gc.arcsin, lambda s: uniform(-0.8, 0.8, *s)),
    "arccos": (gc.arccos, lambda s: uniform(-0.8, 0.8, *s)),
    "arctan": (gc.arctan, lambda s: uniform(-3, 3, *s)),
    "arcsinh": (gc.arcsinh, lambda s: uniform(-3, 3, *s)),
    "arccosh": (gc.arccosh, lambda s: uniform(1.3, 4, *s)),
    "arctanh": (gc.arctanh, lambda s: uniform(-0.8, 0.8, *s)),
    "log1p": (gc.log1p, lambda s: uniform(-0.7, 3, *s)),
    "expm1": (gc.expm1, lambda s: uniform(-2, 2, *s)),
    "exp2": (gc.exp2, lambda s: uniform(-2, 2, *s)),
    "log2": (gc.log2, lambda s: uniform(0.3, 3, *s)),
    "log10": (gc.log10, lambda s: uniform(0.3, 3, *s)),
    # derivative 0 away from the steps (the samples keep 0.1 from every integer)
    "floor": (lambda x: gc.floor(x) * x, lambda s: RNG.integers(-3, 3, s) + uniform(.1, .9, *s)),
    "ceil": (lambda x: gc.ceil(x) * x, lambda s: RNG.integers(-3, 3, s) + uniform(.1, .9, *s)),
    "round": (lambda x: gc.round(x) * x, lambda s: RNG.integers(-3, 3, s) + uniform(.1, .4, *s)),
}


def test_unary_cases_cover_every_builtin_unary_primitive():
    from graphc.ops import OPS
    unary = {n for n, op in OPS.items() if op.sympy_def is not None and op.arity == 1
             and op.differentiable and not op.user_defined}
    assert unary <= set(UNARY_CASES), unary - set(UNARY_CASES)


@pytest.mark.parametrize("name", sorted(UNARY_CASES))
def test_unary_vjp_jvp(name):
    fn, sample = UNARY_CASES[name]
    fd_check(fn, [sample((3, 4))])


@pytest.mark.parametrize("name", ["exp", "sin", "tanh", "sigmoid"])
def test_unary_on_scalar(name):
    fn, sample = UNARY_CASES[name]
    fd_check(fn, [sample(())])


BINARY_CASES = {
    "add": (lambda a, b: a + b, normal, normal),
    "sub": (lambda a, b: a - b, normal, normal),
    "mul": (lambda a, b: a * b, normal, normal),
    "div": (lambda a, b: a / b, normal, lambda *s: away(-3, 3, *s, gap=0.5)),
    "pow": (lambda a, b: a ** b, lambda *s: uniform(0.3, 3, *s), lambda *s: uniform(-2, 2, *s)),
    "logb": (lambda a, b: gc.log(a, base=b), lambda *s: uniform(0.3, 3, *s),
             lambda *s: uniform(1.5, 4, *s)),
    "maximum": (gc.maximum, normal, normal),
    "minimum": (gc.minimum, normal, normal),
    "arctan2": (gc.arctan2, normal, lambda *s: away(-3, 3, *s, gap=0.5)),
    # a / b in (0.07, 0.87) and (-0.87, -0.07): away from the steps of floor(a / b)
    "mod": (gc.mod, lambda *s: away(-1.3, 1.3, *s), lambda *s: uniform(1.5, 3, *s)),
    "floor_divide": (lambda a, b: gc.floor_divide(a, b) * a + b,
                     lambda *s: away(-1.3, 1.3, *s), lambda *s: uniform(1.5, 3, *s)),
}

BROADCAST_SHAPES = [((3, 4), (3, 4)), ((3, 1), (1, 4)), ((), (2, 3)), ((2, 3), ()),
                    ((4,), (3, 4)), ((2, 1, 3), (4, 1))]


def test_binary_cases_cover_every_builtin_binary_primitive():
    from graphc.ops import OPS
    binary = {n for n, op in OPS.items() if op.sympy_def is not None and op.arity == 2
              and op.differentiable and not op.user_defined}
    assert binary <= set(BINARY_CASES), binary - set(BINARY_CASES)


@pytest.mark.parametrize("shapes", BROADCAST_SHAPES, ids=str)
@pytest.mark.parametrize("name", sorted(BINARY_CASES))
def test_binary_vjp_jvp_broadcasting(name, shapes):
    fn, sa, sb = BINARY_CASES[name]
    a, b = sa(*shapes[0]), sb(*shapes[1])
    if name in ("maximum", "minimum"):  # keep clear of ties, where the kink is
        full = np.broadcast_shapes(shapes[0], shapes[1])
        while np.min(np.abs(np.broadcast_to(a, full) - np.broadcast_to(b, full))) < 0.1:
            a, b = sa(*shapes[0]), sb(*shapes[1])
    fd_check(fn, [a, b])


@pytest.mark.parametrize("shapes", [((2, 3), (2, 3), (2, 3)), ((2, 3), (1, 3), (2, 1)),
                                    ((3,), (), (2, 3))], ids=str)
def test_where_vjp_jvp(shapes):
    cond = RNG.random(shapes[0]) < 0.5
    fd_check(lambda c, a, b: gc.where(c, a * 1.5, gc.sin(b)),
             [cond, normal(*shapes[1]), normal(*shapes[2])])
    # a constant condition too
    fd_check(lambda a, b: gc.where(cond, a, b), [normal(*shapes[1]), normal(*shapes[2])])


# ---------------------------------------------------------------------------------------
# Reductions
# ---------------------------------------------------------------------------------------

AXES = [None, 0, 1, -1, (0, 2), (0, 1, 2)]


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", AXES, ids=str)
@pytest.mark.parametrize("red", ["sum", "mean", "max", "min"])
def test_reductions(red, axis, keepdims):
    x = RNG.permutation(24).reshape(2, 3, 4) * 0.25 + normal(2, 3, 4) * 0.01  # no ties
    fn = getattr(gc, red)
    fd_check(lambda t: fn(gc.sin(t), axis=axis, keepdims=keepdims), [x])


@pytest.mark.parametrize("axis", [(1,), (0, 2), (1, 2)], ids=str)
def test_max_first_gradient(axis):
    """max_first (max pooling's reduction): a plain max's values; the whole cotangent to the
    first maximal entry, or the first nan, in row-major order over the reduced axes."""
    def max_first(t):
        return Tensor(make("max_first", t.node, axes=axis, keepdims=False))
    x = RNG.permutation(24).reshape(2, 3, 4) * 0.25 + normal(2, 3, 4) * 0.01  # no ties
    fd_check(lambda t: max_first(gc.sin(t)) * 1.0, [x])
    v = np.array([[[1.0, 3.0], [3.0, np.nan]], [[2.0, 2.0], [0.0, 2.0]]])
    t = gc.placeholder((2, 2, 2), "float64")
    for backend in ("numpy", "llvm"):
        value, grad = gc.function([t], [max_first(t), gc.grad(gc.sum(max_first(t)), t)],
                                  backend=backend)(v)
        np.testing.assert_array_equal(value, np.max(v, axis=axis))
        picked = np.zeros(v.size)
        flat = np.moveaxis(v, axis, [-k for k in range(len(axis), 0, -1)]).reshape(
            -1, int(np.prod([v.shape[a] for a in axis])))
        for row, vals in enumerate(flat):
            nan = np.flatnonzero(np.isnan(vals))
            first = nan[0] if nan.size else np.flatnonzero(vals == vals.max())[0]
            picked[row * flat.shape[1] + first] = 1.0
        want = np.moveaxis(picked.reshape(np.moveaxis(v, axis, [-k for k in range(
            len(axis), 0, -1)]).shape), [-k for k in range(len(axis), 0, -1)], axis)
        np.testing.assert_array_equal(grad, want, err_msg=backend)


def test_reduction_methods():
    x = normal(3, 4)
    fd_check(lambda t: t.sum(axis=1) * t.mean(axis=1) + t.max(axis=1) - t.min(axis=1), [x])


@pytest.mark.parametrize("red", ["max", "min"])
def test_extremum_gradient_at_ties_is_a_subgradient(red):
    # max over [1, 3, 3]: any convex split of the cotangent between the tied entries
    # is fine; the other entries get nothing, and the split sums to the cotangent.
    x = gc.placeholder((2, 3), "float64")
    v = np.array([[1.0, 3.0, 3.0], [0.0, 0.0, -2.0]])
    if red == "min":
        v = -v
    g = gc.function([x], gc.grad(getattr(gc, red)(x, axis=1).sum() * 2.0, x),
                    backend="numpy")(v)
    assert g[0, 0] == 0 and g[1, 2] == 0
    np.testing.assert_allclose(g.sum(axis=1), [2.0, 2.0])
    assert np.all(g >= 0)


# ---------------------------------------------------------------------------------------
# Linear algebra
# ---------------------------------------------------------------------------------------

MATMUL_SHAPES = [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((3, 4), (2, 4, 5)),
                 ((2, 1, 3, 4), (5, 4, 2)), ((4,), (4, 5)), ((3, 4), (4,)), ((4,), (4,)),
                 ((2, 3, 4), (4,)), ((4,), (2, 4, 3)), ((1, 1), (1, 3))]


@pytest.mark.parametrize("shapes", MATMUL_SHAPES, ids=str)
def test_matmul(shapes):
    a, b = normal(*shapes[0]), normal(*shapes[1])
    y = fd_check(lambda p, q: p @ q, [a, b])
    np.testing.assert_allclose(y, a @ b)


def test_matmul_function_form_and_chain():
    fd_check(lambda p, q, r: gc.tanh(gc.matmul(p, q)) @ r, [normal(3, 4), normal(4, 2),
                                                             normal(2, 5)])


# ---------------------------------------------------------------------------------------
# Shapes: reshape, transpose, broadcast, expand/squeeze, indexing, join, gather, cast
# ---------------------------------------------------------------------------------------

SHAPE_CASES = {
    "reshape_flat": (lambda x: x.reshape(-1), (2, 3, 4)),
    "reshape_2d": (lambda x: gc.reshape(x, (6, 4)), (2, 3, 4)),
    "reshape_3d": (lambda x: x.reshape(4, 1, 6), (2, 3, 4)),
    "reshape_scalar": (lambda x: x.reshape(()), (1, 1)),
    "transpose_perm": (lambda x: gc.transpose(x, (2, 0, 1)), (2, 3, 4)),
    "transpose_default": (lambda x: gc.transpose(x), (2, 3, 4)),
    "transpose_T": (lambda x: x.T, (3, 5)),
    "transpose_method": (lambda x: x.transpose(1, 0, 2), (2, 3, 4)),
    "broadcast_to": (lambda x: gc.broadcast_to(x, (2, 3, 4)), (3, 1)),
    "broadcast_scalar": (lambda x: gc.broadcast_to(x, (2, 2)), ()),
    "expand_dims_0": (lambda x: gc.expand_dims(x, 0), (3, 4)),
    "expand_dims_last": (lambda x: gc.expand_dims(x, -1), (3, 4)),
    "expand_dims_tuple": (lambda x: gc.expand_dims(x, (0, 2)), (3, 4)),
    "squeeze_all": (lambda x: gc.squeeze(x), (3, 1, 4, 1)),
    "squeeze_one": (lambda x: gc.squeeze(x, 1), (3, 1, 4, 1)),
    "index_int": (lambda x: x[1], (3, 4)),
    "index_neg_int": (lambda x: x[-1, 2], (3, 4)),
    "slice": (lambda x: x[:, 1:3], (3, 4)),
    "slice_reverse": (lambda x: x[::-1], (3, 4)),
    "slice_neg_step": (lambda x: x[::-2, 1], (5, 4)),
    "slice_neg_bounds": (lambda x: x[None, ..., 3:0:-1], (2, 3, 4)),
    "slice_mixed": (lambda x: x[-1, ::-1], (3, 4)),
    "slice_step_newaxis": (lambda x: x[1:4:2, None], (5, 2)),
    "slice_overlapping_use": (lambda x: x[1:] * x[:-1], (5, 3)),
    "slice_empty_and_more": (lambda x: gc.sum(x[2:2]) + x[0], (4, 3)),
    "gather_repeated": (lambda x: gc.take(x, np.array([0, 2, 2, 0, 1]), axis=0), (3, 4)),
    "gather_axis1": (lambda x: gc.take(x, np.array([3, 3, 1]), axis=1), (2, 4)),
    "gather_flat": (lambda x: gc.take(x, np.array([[5, 0], [5, 5]])), (2, 3)),
    "gather_negative": (lambda x: gc.take(x, np.array([-1, 0, -1]), axis=0), (3, 2)),
    "index_tensor": (lambda x: x[np.array([1, 1, 0])], (3, 2)),
    "index_tensor_axis1": (lambda x: x[:, np.array([2, 0, 2, 2])], (2, 3)),
}


@pytest.mark.parametrize("name", sorted(SHAPE_CASES))
def test_shape_ops(name):
    fn, shape = SHAPE_CASES[name]
    x = normal(*shape)
    fd_check(lambda t: fn(t) * 1.0, [x])


def test_take_repeated_indices_accumulate():
    # d/dx sum(w * x[idx]) = scatter-add of w at idx: repeated indices add up.
    x = gc.placeholder((4,), "float64")
    idx = np.array([1, 3, 1, 1, 0])
    w = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    g = gc.function([x], gc.grad(gc.sum(gc.take(x, idx) * w), x), backend="numpy")(
        np.zeros(4))
    expected = np.zeros(4)
    np.add.at(expected, idx, w)
    np.testing.assert_array_equal(g, expected)


def test_take_with_index_placeholder():
    idx = np.array([[2, 0], [2, 2]])
    x = normal(3, 4)
    fd_check(lambda t, i: gc.take(t, i, axis=0) ** 2, [x, idx])


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concatenate(axis):
    shapes = {0: [(2, 3), (4, 3), (1, 3)], 1: [(2, 1), (2, 3), (2, 2)],
              -1: [(2, 1), (2, 3), (2, 2)]}[axis]
    fd_check(lambda a, b, c: gc.concatenate([a, gc.sin(b), c * 2.0], axis=axis),
             [normal(*s) for s in shapes])


def test_concatenate_same_tensor_twice():
    fd_check(lambda a: gc.concatenate([a, a, a * a], axis=1), [normal(2, 3)])


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_stack(axis):
    fd_check(lambda a, b, c: gc.stack([a, b * b, c], axis=axis),
             [normal(2, 3), normal(2, 3), normal(2, 3)])


def test_cast_float64_through_float32():
    # A float32 stage in a float64 graph: the gradient flows through both casts.
    x = uniform(-1, 1, 3, 4)
    fd_check(lambda t: gc.sin(t.astype("float32")).astype("float64") * t,
             [x], eps=1e-3, rtol=2e-3, atol=1e-4)


def test_cast_float32_input_to_float64():
    x = uniform(-1, 1, 3, 4).astype(np.float32)
    fd_check(lambda t: gc.exp(t.astype(gc.float64)), [x], eps=1e-2, rtol=2e-3, atol=1e-4)


def test_cast_gradient_dtype_is_input_dtype():
    x = gc.placeholder((3,), "float32")
    g = gc.grad(gc.sum(x.astype("float64") ** 2), x)
    assert g.dtype == np.float32
    val = gc.function([x], g, backend="numpy")(np.array([1.0, -2.0, 0.5], np.float32))
    assert val.dtype == np.float32
    np.testing.assert_allclose(val, [2.0, -4.0, 1.0])


# ---------------------------------------------------------------------------------------
# Primitives that gradients are built from (they appear in derivative graphs, so grad of
# grad runs their rules): fed directly through graphc.ops.make
# ---------------------------------------------------------------------------------------


def _prim(op, *tensors, **attrs):
    from graphc.ops import make
    return gc.Tensor(make(op, *(t.node for t in tensors), **attrs))


INTERNAL_CASES = {
    # the reference input lends only its shape: its gradient must be 0
    "unslice": (lambda g, ref: _prim("unslice", g, ref, slices=((None, None, -2), (1, 3, 1))),
                [(2, 2), (4, 3)]),
    "scatter_add": (lambda ref, upd: _prim("scatter_add", ref, gc.constant(np.array([2, 0, 2])),
                                           upd, axis=1), [(2, 4), (2, 3)]),
    # windows_grad (col2im) of (1, 2, 2, 3, 2, 2) cotangents onto a (1, 2, 5, 4) input
    "windows_grad": (lambda g, ref: _prim("windows_grad", g, ref, axes=(2, 3), sizes=(2, 2),
                                          strides=(2, 1)), [(1, 2, 2, 3, 2, 2), (1, 2, 5, 4)]),
}


@pytest.mark.parametrize("axes,sizes,strides", [((2, 3), (2, 2), (2, 1)), ((1,), (3,), (2,)),
                                                ((0, 2), (1, 2), (1, 3))])
def test_windows(axes, sizes, strides):
    fd_check(lambda x: _prim("windows", x, axes=axes, sizes=sizes, strides=strides),
             [normal(2, 5, 6, 4)])


@pytest.mark.parametrize("pads", [((0, 0), (1, 2)), ((2, 0), (0, 1))])
def test_pad(pads):
    fd_check(lambda x: _prim("pad", x, pads=pads), [normal(3, 4)])


@pytest.mark.parametrize("name", sorted(INTERNAL_CASES))
def test_internal_primitives(name):
    fn, shapes = INTERNAL_CASES[name]
    fd_check(lambda a, b: fn(a, b) * 1.0, [normal(*s) for s in shapes])


def test_broadcast_to_a_symbolic_shape_and_back():
    """Broadcasting against call-time sizes, and its gradient (a sum over the new axes)."""
    fd_check(lambda x, ref: x * ref, [normal(3, 1), normal(2, 3, 4)],
             shapes=[(None, 1), (None, None, 4)])


@pytest.mark.parametrize("reverse", [False, True])
def test_scan(reverse):
    """A loop (carry, ys and a captured value), of a length given at call time; more cases
    in tests/test_scan_grad.py."""
    def build(x, h0, w):
        h, ys = gc.scan(lambda h, xt: (gc.tanh(h @ w + xt), h * xt), h0, x, reverse=reverse)
        return ys * h
    fd_check(build, [normal(4, 3), normal(3), normal(3, 3)], shapes=[(None, 3), (3,), (3, 3)])


COVERED = (set(UNARY_CASES) | set(BINARY_CASES) | set(INTERNAL_CASES) | {
    "where", "sum", "max", "min", "matmul", "reshape", "transpose", "broadcast_to",
    "expand_dims", "squeeze", "slice", "concatenate", "take", "cast", "log_softmax", "windows",
    "pad", "max_first"})
# checked in tests/test_scans_sort.py (against finite differences and PyTorch)
COVERED |= {"cumsum", "cumprod", "take_along_axis", "scatter_along_axis"}
# checked in tests/test_distributed.py (one process, and jobs of 2 and 4 under mpirun)
COVERED |= {"all_reduce"}
COVERED |= {"scan"}  # test_scan above


def test_every_differentiable_primitive_has_a_case_here():
    from graphc.ops import OPS
    missing = {n for n, op in OPS.items() if op.differentiable and not op.leaf
               and not op.user_defined} - COVERED
    assert not missing, f"primitives whose vjp/jvp no test here checks: {sorted(missing)}"


# ---------------------------------------------------------------------------------------
# Softmax family and losses
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("axis", [-1, 0])
def test_log_softmax(axis):
    x = normal(3, 4) * 2
    y = fd_check(lambda t: gc.log_softmax(t, axis=axis), [x])
    ref = x - np.log(np.sum(np.exp(x), axis=axis, keepdims=True))
    np.testing.assert_allclose(y, ref)


@pytest.mark.parametrize("axis", [-1, 0])
def test_softmax(axis):
    fd_check(lambda t: gc.softmax(t, axis=axis), [normal(3, 4)])


def test_softmax_of_large_logits():
    # shifted by 1000: the rule must not overflow
    fd_check(lambda t: gc.softmax(t + 1000.0), [normal(2, 5)])


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", [None, 0, 1, (0, 1)], ids=str)
def test_logsumexp(axis, keepdims):
    x = normal(3, 4)
    y = fd_check(lambda t: gc.logsumexp(t, axis=axis, keepdims=keepdims), [x])
    ax = axis
    np.testing.assert_allclose(y, np.log(np.sum(np.exp(x), axis=ax, keepdims=keepdims)))


def test_cross_entropy_integer_labels():
    labels = np.array([0, 3, 3, 1, 2])
    logits = normal(5, 4)
    y = fd_check(lambda t: gc.nn.cross_entropy(t, labels), [logits])
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(y, -logp[np.arange(5), labels].mean())


def test_cross_entropy_one_hot_and_probabilities():
    labels = np.array([1, 0, 2])
    fd_check(lambda t: gc.nn.cross_entropy(t, gc.one_hot(labels, 3, dtype="float64")),
             [normal(3, 3)])
    probs = RNG.dirichlet(np.ones(3), size=3)
    fd_check(lambda t, p: gc.nn.cross_entropy(t, p), [normal(3, 3), probs])


def test_mse():
    p, t = normal(4, 3), normal(4, 3)
    y = fd_check(gc.nn.mse, [p, t])
    np.testing.assert_allclose(y, np.mean((p - t) ** 2))


@pytest.mark.parametrize("delta", [1.0, 0.5])
def test_huber(delta):
    p = normal(6, 3)
    inside = np.arange(18).reshape(6, 3) % 2 == 0  # half the residuals in each regime,
    r = np.where(inside, uniform(0.05, delta - 0.1, 6, 3),  # none near |r| = delta
                 uniform(delta + 0.1, delta + 2, 6, 3)) * np.where(RNG.random((6, 3)) < .5, -1, 1)
    t = p - r
    y = fd_check(lambda a, b: gc.nn.huber(a, b, delta=delta), [p, t])
    ar = np.abs(p - t)
    ref = np.where(ar <= delta, 0.5 * ar ** 2, delta * (ar - 0.5 * delta)).mean()
    np.testing.assert_allclose(y, ref)
    assert np.any(np.abs(r) < delta) and np.any(np.abs(r) > delta)


# ---------------------------------------------------------------------------------------
# Inputs with sizes given at call time
# ---------------------------------------------------------------------------------------

DYNAMIC_CASES = {
    "elementwise": (lambda x, w: gc.tanh(x) * w + x / (1.5 + gc.sin(w)), [(5, 3), (1, 3)],
                    [(None, 3), (1, 3)]),
    "broadcast_row": (lambda x, w: x * w, [(4, 3), (3,)], [(None, 3), (3,)]),
    "mean_over_dynamic": (lambda x: gc.mean(x * x, axis=0), [(5, 3)], [(None, 3)]),
    "mean_all": (lambda x: gc.mean(gc.exp(x)), [(2, 4)], [(None, None)]),
    "matmul": (lambda x, w: x @ w, [(5, 3), (3, 2)], [(None, 3), (3, 2)]),
    "matmul_batch": (lambda x, w: x @ w, [(2, 5, 3), (3, 2)], [(None, None, 3), (3, 2)]),
    "reshape_one_unknown": (lambda x: x.reshape(-1, 6), [(4, 3)], [(None, 3)]),
    "reshape_flatten_two_unknown": (lambda x: x.reshape(-1) * 2.0, [(2, 3)], [(None, None)]),
    "slice": (lambda x: x[1::2, ::-1], [(5, 3)], [(None, 3)]),
    "index": (lambda x: x[-1], [(5, 3)], [(None, 3)]),
    "max": (lambda x: gc.max(x, axis=0), [(5, 3)], [(None, 3)]),
    "log_softmax": (lambda x: gc.log_softmax(x), [(4, 3)], [(None, None)]),
    "logsumexp": (lambda x: gc.logsumexp(x, axis=1), [(4, 3)], [(None, 3)]),
    "concat_one_unknown": (lambda x, y: gc.concatenate([y, x, y], axis=0), [(4, 3), (2, 3)],
                           [(None, 3), (2, 3)]),
    # every part of run-time size: the gradient slices at symbolic bounds, and
    # differentiating the gradient again checks those slices' own vjp and jvp
    "concat_all_unknown": (lambda x, y: gc.concatenate([x, gc.sin(y), x * y[0]], axis=0),
                           [(2, 3), (3, 3)], [(None, 3), (None, 3)]),
    "concat_all_unknown_second_order": (
        lambda x, y: gc.grad(gc.sum(gc.concatenate([x, gc.sin(y), x], axis=1) ** 3), [y])[0],
        [(3, 2), (3, 4)], [(3, None), (3, None)]),
    "take": (lambda x: gc.take(x, np.array([0, 0, 2]), axis=0), [(3, 2)], [(None, 2)]),
    "transpose": (lambda x: x.T @ x, [(4, 3)], [(None, 3)]),
    "expand_squeeze": (lambda x: gc.squeeze(gc.expand_dims(x, 1) * 2.0, 1), [(4, 3)],
                       [(None, 3)]),
    "mse": (lambda x, y: gc.nn.mse(x, y), [(4, 3), (4, 3)], [(None, 3), (None, 3)]),
}


@pytest.mark.parametrize("name", sorted(DYNAMIC_CASES))
def test_gradients_with_sizes_given_at_call_time(name):
    fn, shapes, static = DYNAMIC_CASES[name]
    arrays = [normal(*s) for s in shapes]
    if name == "max":
        arrays = [RNG.permutation(15).reshape(5, 3) + 0.0]
    fd_check(fn, arrays, shapes=static)


def test_gradient_of_dynamic_input_keeps_its_static_shape_and_follows_call_size():
    x = gc.placeholder((None, 3), "float64", name="x")
    w = gc.placeholder((3,), "float64", name="w")
    loss = gc.sum(gc.tanh(x * w))
    gx, gw = gc.grad(loss, [x, w])
    assert gx.shape == (None, 3) and gw.shape == (3,)
    f = gc.function([x, w], [gx, gw], backend="numpy")
    wv = normal(3)
    for n in (1, 2, 7):
        xv = normal(n, 3)
        a, b = f(xv, wv)
        d = 1 - np.tanh(xv * wv) ** 2
        np.testing.assert_allclose(a, d * wv)
        np.testing.assert_allclose(b, (d * xv).sum(axis=0))


# ---------------------------------------------------------------------------------------
# Higher order
# ---------------------------------------------------------------------------------------

SECOND_ORDER_UNARY = ["exp", "log", "sqrt", "square", "sin", "cos", "tan", "cot", "sec", "csc",
                      "tanh", "sigmoid", "softplus", "erf", "abs", "relu", "neg",
                      "log_base_2", "number_pow", "pow_number", "pow_fraction",
                      "pow_negative", "reciprocal"]


def _second_derivative_check(fn, arrays, eps=1e-5, rtol=1e-6):
    """grad of grad against differences of the (symbolic) gradient, for each pair of inputs
    of an elementwise function (so the second derivatives are elementwise too)."""
    phs = [gc.placeholder(a.shape, "float64") for a in arrays]
    y = gc.sum(fn(*phs))
    first = gc.grad(y, phs)
    f_first = gc.function(phs, first, backend="numpy")
    for i in range(len(phs)):
        second = gc.grad(gc.sum(first[i]), phs)
        f_second = gc.function(phs, second, backend="numpy")(*arrays)
        for j in range(len(phs)):
            plus, minus = list(arrays), list(arrays)
            plus[j] = arrays[j] + eps
            minus[j] = arrays[j] - eps
            fd = (f_first(*plus)[i] - f_first(*minus)[i]) / (2 * eps)
            np.testing.assert_allclose(f_second[j], fd, rtol=rtol,
                                       atol=rtol * (1 + np.max(np.abs(fd))),
                                       err_msg=f"d2/d{i}d{j}")


@pytest.mark.parametrize("name", SECOND_ORDER_UNARY)
def test_second_derivative_unary(name):
    fn, sample = UNARY_CASES[name]
    _second_derivative_check(fn, [sample((7,))])


@pytest.mark.parametrize("name", sorted(BINARY_CASES))
def test_second_derivative_binary(name):
    fn, sa, sb = BINARY_CASES[name]
    a, b = sa(8), sb(8)
    if name in ("maximum", "minimum"):
        b = np.where(np.abs(a - b) < 0.2, b + 0.5, b)
    _second_derivative_check(fn, [a, b])


def test_third_derivative_against_sympy():
    t = sp.Symbol("t", real=True)
    expr = sp.exp(sp.sin(t)) * t ** 3 / (1 + t ** 2) + sp.log(2 + sp.tanh(t))
    third = sp.lambdify(t, sp.diff(expr, t, 3), "numpy")
    x = gc.placeholder((), "float64", name="t")
    y = gc.exp(gc.sin(x)) * x ** 3 / (1 + x ** 2) + gc.log(2 + gc.tanh(x))
    d3 = gc.grad(gc.grad(gc.grad(y, x), x), x)
    f = gc.function([x], d3, backend="numpy")
    for v in np.linspace(-2.5, 2.5, 11):
        np.testing.assert_allclose(f(v), third(v), rtol=1e-10, atol=1e-10)


def test_third_derivative_elementwise_vector():
    t = sp.Symbol("t", real=True)
    expr = sp.sin(t) * sp.exp(-t ** 2 / 2)
    third = sp.lambdify(t, sp.diff(expr, t, 3), "numpy")
    x = gc.placeholder((None,), "float64")
    g = x
    y = gc.sin(x) * gc.exp(-(x ** 2) / 2)
    g = gc.grad(gc.sum(y), x)
    g = gc.grad(gc.sum(g), x)
    g = gc.grad(gc.sum(g), x)
    v = np.linspace(-3, 3, 13)
    np.testing.assert_allclose(gc.function([x], g, backend="numpy")(v), third(v),
                               rtol=1e-10, atol=1e-12)


def _mlp_loss(w, X, Y):
    """2-layer tanh MLP with weights packed in one vector w: 2->3->1 (13 numbers)."""
    W1 = w[0:6].reshape(2, 3)
    b1 = w[6:9]
    W2 = w[9:12].reshape(3, 1)
    b2 = w[12]
    hidden = gc.tanh(X @ W1 + b1)
    return gc.mean(gc.square(hidden @ W2 + b2 - Y))


def _mlp_loss_numpy(w, X, Y):
    h = np.tanh(X @ w[0:6].reshape(2, 3) + w[6:9])
    return np.mean((h @ w[9:12].reshape(3, 1) + w[12] - Y) ** 2)


def test_hessian_of_mlp_loss():
    X, Y = normal(6, 2), normal(6, 1)
    w0 = normal(13) * 0.7
    w = gc.placeholder((13,), "float64", name="w")
    loss = _mlp_loss(w, gc.constant(X, "float64"), gc.constant(Y, "float64"))
    H = gc.hessian(loss, w)
    assert H.shape == (13, 13) and H.dtype == np.float64
    f_loss, f_grad, f_hess = (gc.function([w], t, backend="numpy")
                              for t in (loss, gc.grad(loss, w), H))
    np.testing.assert_allclose(f_loss(w0), _mlp_loss_numpy(w0, X, Y))
    Hv = f_hess(w0)
    eps = 1e-5
    # columns by central differences of the symbolic gradient ...
    fd = np.stack([(f_grad(w0 + eps * e) - f_grad(w0 - eps * e)) / (2 * eps)
                   for e in np.eye(13)], axis=1)
    np.testing.assert_allclose(Hv, fd, rtol=1e-6, atol=1e-8)
    # ... and by second differences of the numpy loss, independent of graphc's gradient
    e2 = 1e-4
    fd2 = np.empty((13, 13))
    for i in range(13):
        for j in range(13):
            ei, ej = np.eye(13)[i] * e2, np.eye(13)[j] * e2
            fd2[i, j] = (_mlp_loss_numpy(w0 + ei + ej, X, Y) - _mlp_loss_numpy(w0 + ei - ej, X, Y)
                         - _mlp_loss_numpy(w0 - ei + ej, X, Y)
                         + _mlp_loss_numpy(w0 - ei - ej, X, Y)) / (4 * e2 * e2)
    np.testing.assert_allclose(Hv, fd2, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(Hv, Hv.T, atol=1e-12)
    # the MLP has W2-b2 blocks that are exactly zero in the second derivative
    assert Hv[12, 12] == pytest.approx(2.0)


def test_hessian_of_matrix_input_shape():
    x = gc.placeholder((2, 2), "float64")
    y = gc.sum(x ** 3) + gc.sum(x[0] * x[1])
    H = gc.function([x], gc.hessian(y, x), backend="numpy")(np.array([[1., 2.], [3., 4.]]))
    assert H.shape == (2, 2, 2, 2)
    ref = np.zeros((2, 2, 2, 2))
    v = np.array([[1., 2.], [3., 4.]])
    for i in range(2):
        for j in range(2):
            ref[i, j, i, j] = 6 * v[i, j]
    for j in range(2):
        ref[0, j, 1, j] += 1
        ref[1, j, 0, j] += 1
    np.testing.assert_allclose(H, ref)


def test_hessian_vector_product_by_jvp_of_grad():
    X, Y = normal(6, 2), normal(6, 1)
    w0 = normal(13) * 0.7
    w = gc.placeholder((13,), "float64")
    loss = _mlp_loss(w, gc.constant(X, "float64"), gc.constant(Y, "float64"))
    v = gc.placeholder((13,), "float64")
    hvp = gc.jvp(gc.grad(loss, w), w, v)
    vv = normal(13)
    got = gc.function([w, v], hvp, backend="numpy")(w0, vv)
    H = gc.function([w], gc.hessian(loss, w), backend="numpy")(w0)
    np.testing.assert_allclose(got, H @ vv, rtol=1e-10, atol=1e-12)


def test_math_sanity_of_harness():
    # the harness itself must reject a wrong derivative (stop_gradient hides one path)
    with pytest.raises(AssertionError):
        fd_check(lambda t: t * gc.stop_gradient(t), [normal(3)])
    assert math.isclose(_vdot([1, 2], [3, 4]), 11)
