"""The llvm backend against the numpy reference: every primitive on every dtype where it
means something, gradients, training steps with updates, random graphs, call-time sizes,
bad input and the generated text. Each graph is compiled twice, backend="numpy" (the
interpreter) and backend="llvm", and their results must agree: same structure, dtype and
shape; ints and bools exactly, float64 to ~1e-12 and float32 to ~1e-5 relative."""
from __future__ import annotations

import functools
import itertools
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, strategies as st

import graphc as gc

F32, F64, I32, I64, BOOL = (np.dtype(d) for d in ("float32", "float64", "int32", "int64",
                                                    "bool"))
FLOATS = [F32, F64]
INTS = [I32, I64]
NUMERIC = FLOATS + INTS
ALL = NUMERIC + [BOOL]
ID = {F32: "f32", F64: "f64", I32: "i32", I64: "i64", BOOL: "bool"}
RTOL = {F32: 1e-5, F64: 1e-12}


def ids(dtypes):
    return [ID[d] for d in dtypes]


# ---- the shared helper ------------------------------------------------------------------

def mismatches(got, ref, what="out", rtol=None, atol=None, labels=None) -> list[str]:
    """Every way `got` differs from the reference `ref` (nested lists/tuples of arrays);
    `labels` name the top-level outputs in the messages."""
    if isinstance(ref, (list, tuple)):
        if type(got) is not type(ref) or len(got) != len(ref):
            return [f"{what}: structure {type(got).__name__}[{len(got)}] != "
                    f"{type(ref).__name__}[{len(ref)}]"]
        names = [f"{what}[{i}]" + (f" ({labels[i]})" if labels else "") for i in range(len(ref))]
        return [m for name, g, r in zip(names, got, ref)
                for m in mismatches(g, r, name, rtol, atol)]
    if not isinstance(got, np.ndarray):
        return [f"{what}: got a {type(got).__name__}, not an ndarray"]
    if got.dtype != ref.dtype or got.shape != ref.shape:
        return [f"{what}: {got.dtype}{got.shape} != reference {ref.dtype}{ref.shape}"]
    try:
        if ref.dtype.kind == "f":
            tol = RTOL[ref.dtype] if rtol is None else rtol
            np.testing.assert_allclose(got, ref, rtol=tol, atol=tol if atol is None else atol,
                                       equal_nan=True)
        else:
            np.testing.assert_array_equal(got, ref)
    except AssertionError as exc:
        return [f"{what}: {exc}"]
    return []


def assert_same(got, ref, rtol=None, atol=None, labels=None) -> None:
    bad = mismatches(got, ref, rtol=rtol, atol=atol, labels=labels)
    assert not bad, "llvm differs from numpy:\n" + "\n".join(bad)


def check(inputs, outputs, *args, rtol=None, atol=None, labels=None):
    """Compiles `outputs` for both backends, calls both with `args`, compares; returns the
    llvm Function (and leaves the reference result in f.reference)."""
    ref = gc.function(inputs, outputs, backend="numpy")(*args)
    f = gc.function(inputs, outputs, backend="llvm")
    got = f(*args)
    assert_same(got, ref, rtol, atol, labels)
    f.reference = ref
    return f


def check_table(inputs, table, *args, rtol=None, atol=None):
    """`table`: (label, tensor) pairs compiled into one function (one LLVM module)."""
    labels = [label for label, _ in table]
    return check(inputs, [t for _, t in table], *args, rtol=rtol, atol=atol, labels=labels)


def sample(dtype, shape, lo=-3.0, hi=3.0, seed=0):
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype == BOOL:
        return rng.random(shape) < 0.5
    if dtype.kind == "i":
        return rng.integers(int(lo), int(hi) + 1, size=shape).astype(dtype)
    return rng.uniform(lo, hi, size=shape).astype(dtype)


SPECIALS = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30, -1e30, 88.0, -100.0, 0.5, 1e-310, 710.0]


def with_specials(a: np.ndarray) -> np.ndarray:
    """`a` with special values at every third entry (so that some land in vector lanes and
    some in remainder loops): nan, +-inf, signed zeros, huge/tiny/subnormal values for
    floats; the extremes, 0 and -1 for ints."""
    a = a.copy()
    flat = a.reshape(-1)
    if a.dtype.kind == "f":
        with np.errstate(over="ignore"):
            values = np.array(SPECIALS, np.float64).astype(a.dtype)
    elif a.dtype.kind == "i":
        info = np.iinfo(a.dtype)
        values = np.array([info.min, info.max, 0, -1, 1, info.min + 1], a.dtype)
    else:
        return a
    picked = flat[::3]
    picked[:] = np.resize(values, picked.shape)
    return a


# ---- elementwise: unary -----------------------------------------------------------------

def _log_base(x):
    return gc.log(x, base=3.0)


UNARY = [  # name, function, sample range, dtypes it takes
    ("neg", lambda x: -x, (-3, 3), NUMERIC),
    ("exp", gc.exp, (-5, 5), ALL),
    ("log", gc.log, (0, 6), ALL),
    ("log_base", _log_base, (0, 6), ALL),
    ("sqrt", gc.sqrt, (0, 6), ALL),
    ("square", gc.square, (-4, 4), ALL),
    ("abs", gc.abs, (-4, 4), ALL),
    ("sign", gc.sign, (-4, 4), ALL),
    ("sin", gc.sin, (-4, 4), ALL),
    ("cos", gc.cos, (-4, 4), ALL),
    ("tan", gc.tan, (-1.4, 1.4), ALL),
    ("cot", gc.cot, (0.1, 3), ALL),
    ("sec", gc.sec, (-1.4, 1.4), ALL),
    ("csc", gc.csc, (0.1, 3), ALL),
    ("tanh", gc.tanh, (-6, 6), ALL),
    ("sigmoid", gc.sigmoid, (-20, 20), ALL),
    ("softplus", gc.softplus, (-30, 30), ALL),
    ("relu", gc.relu, (-3, 3), ALL),
    ("erf", gc.erf, (-3, 3), ALL),
    ("stop_gradient", gc.stop_gradient, (-3, 3), ALL),
    ("square_op", lambda x: x ** 2, (-3, 3), NUMERIC),
    ("cube_op", lambda x: x ** 3, (-3, 3), NUMERIC),
    ("recip_op", lambda x: 1.0 / x, (0.5, 3), FLOATS),
    ("rsqrt_op", lambda x: x ** -0.5, (0.5, 3), FLOATS),
    ("pow_frac", lambda x: x ** 1.7, (0, 3), FLOATS),
    ("exp2_op", lambda x: 2.0 ** x, (-3, 3), FLOATS),
]


UNARY_CASES = [(name, fn, domain, d) for name, fn, domain, dtypes in UNARY for d in dtypes]


@pytest.mark.parametrize("name,fn,domain,dtype", UNARY_CASES,
                         ids=[f"{c[0]}-{ID[c[3]]}" for c in UNARY_CASES])
def test_unary(name, fn, domain, dtype):
    """37 columns: vectorized loops (libmvec variants for transcendentals) and their scalar
    remainders both run; the second input holds special values."""
    x = gc.placeholder((None, 37), dtype, name="x")
    s = gc.placeholder((None, 37), dtype, name="s")
    check_table([x, s], [("sample", fn(x)), ("specials", fn(s))],
                sample(dtype, (3, 37), *domain, seed=1),
                with_specials(sample(dtype, (2, 37), *domain, seed=2)))


# ---- elementwise: binary, comparisons, where ----------------------------------------------

BINARY = [
    ("add", lambda a, b: a + b),
    ("sub", lambda a, b: a - b),
    ("mul", lambda a, b: a * b),
    ("div", lambda a, b: a / b),
    ("maximum", gc.maximum),
    ("minimum", gc.minimum),
    ("less", lambda a, b: a < b),
    ("less_equal", lambda a, b: a <= b),
    ("greater", lambda a, b: a > b),
    ("greater_equal", lambda a, b: a >= b),
    ("equal", gc.equal),
    ("not_equal", gc.not_equal),
    ("logb", gc.log),
    ("where_gt", lambda a, b: gc.where(a > b, a, b)),
    ("add_scalar", lambda a, b: a + 3),
    ("rsub_scalar", lambda a, b: 2 - b),
    ("mul_scalar", lambda a, b: a * 2.5),
]


def _binary_args(dtype):
    """Operands that broadcast ((3,1,5) with (4,5)), with ties, zeros (b) and negatives."""
    if dtype == BOOL:
        return sample(BOOL, (3, 1, 5), seed=3), sample(BOOL, (4, 5), seed=4)
    if dtype.kind == "i":
        a, b = sample(dtype, (3, 1, 5), -4, 4, seed=3), sample(dtype, (4, 5), -4, 4, seed=4)
        return a, np.where(b == 0, 1, b).astype(dtype)  # numpy's int/0 warns; keep it defined
    a, b = sample(dtype, (3, 1, 5), -3, 3, seed=3), sample(dtype, (4, 5), 0.2, 3, seed=4)
    a[0, 0, :2] = b[0, :2]  # ties for the comparisons and maximum/minimum
    return a, b


@pytest.mark.parametrize("dtype", ALL, ids=ids(ALL))
def test_binary_and_comparisons(dtype):
    a, b = _binary_args(dtype)
    x = gc.placeholder((3, 1, 5), dtype, name="x")
    y = gc.placeholder((None, 5), dtype, name="y")
    table = [(name, fn(x, y)) for name, fn in BINARY]
    check_table([x, y], table, a, b)


@pytest.mark.parametrize("dtype", FLOATS, ids=ids(FLOATS))
def test_binary_on_special_values(dtype):
    """nan and inf on either side: maximum/minimum propagate nan like numpy, comparisons
    with nan are False (not_equal True)."""
    vals = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -2.0], dtype)
    pairs = np.array(list(itertools.product(vals, vals)), dtype)
    a, b = pairs[:, 0], pairs[:, 1]  # every pair (strided columns: copied on the way in)
    x = gc.placeholder((None,), dtype, name="x")
    y = gc.placeholder((None,), dtype, name="y")
    table = [(name, fn(x, y)) for name, fn in BINARY]
    table += [("pow", x ** y), ("relu_y", gc.relu(y))]
    check_table([x, y], table, a, b)


@pytest.mark.parametrize("dtype", ALL, ids=ids(ALL))
def test_power(dtype):
    """Float powers (negative bases give nan), integer powers by squaring (exact, with
    numpy's wrap-around on overflow), bool powers in int64."""
    if dtype == BOOL:
        a, b = sample(BOOL, (6, 7), seed=5), sample(BOOL, (6, 7), seed=6)
    elif dtype.kind == "i":
        a = sample(dtype, (6, 7), -7, 7, seed=5)
        b = sample(dtype, (6, 7), 0, 9, seed=6)
        a[0, :3], b[0, :3] = [3, -2, 7], [40, 63, 31]  # wraps around in both backends
    else:
        a = sample(dtype, (6, 7), -2, 3, seed=5)
        b = sample(dtype, (6, 7), -3, 3, seed=6)
        b[1] = np.round(b[1])  # integral exponents of negative bases are real
    x = gc.placeholder(a.shape, dtype, name="x")
    y = gc.placeholder(b.shape, dtype, name="y")
    check_table([x, y], [("x**y", x ** y), ("x**3", x ** 3), ("x**0", x ** 0),
                         ("x**1", x ** 1), ("x**5", x ** 5), ("power", gc.power(x, y))], a, b)


@pytest.mark.parametrize("dtype", ALL, ids=ids(ALL))
def test_where(dtype):
    c = sample(BOOL, (4, 1), seed=7)
    a, b = sample(dtype, (4, 3), seed=8), sample(dtype, (3,), seed=9)
    cond = gc.placeholder((None, 1), "bool", name="cond")
    x = gc.placeholder((None, 3), dtype, name="x")
    y = gc.placeholder((3,), dtype, name="y")
    check_table([cond, x, y], [("where", gc.where(cond, x, y)),
                               ("where_nonbool_cond", gc.where(x, y, x)),
                               ("where_scalar", gc.where(cond, x, 0))], c, a, b)


# ---- user-defined elementwise primitives ------------------------------------------------

USER_DEFS = {
    "llvmtest_softsign": lambda x: x / (1 + sp.Abs(x)),
    "llvmtest_gauss": lambda a, b: a * sp.exp(-b ** 2) + sp.cos(a * b),
    "llvmtest_select": lambda c, a, b: sp.Piecewise((a, c > 0), (b * a, True))
    + sp.log(1 + a ** 2),
    "llvmtest_powers": lambda x: sp.Abs(x) ** sp.Rational(3, 2) + x ** 7 - 3 * x ** -2
    + sp.sqrt(sp.pi) + sp.E,
    "llvmtest_trig": lambda x: sp.tan(x) * sp.sec(x) - sp.cot(x) + sp.tanh(2 * x),
    "llvmtest_erf": lambda x: sp.erf(x) * 2 + x,
    "llvmtest_hyperbolic": lambda x: sp.sinh(x) + sp.cosh(x / 2) + sp.atan(x) + sp.asinh(x),
    "llvmtest_maxmin": lambda a, b: sp.Max(a, 0) - sp.Min(a, b),
}


@functools.lru_cache(maxsize=None)
def user_op(name):
    """Registered when a test first needs it (not at import: other test files parametrize
    over every registered primitive at collection time)."""
    return gc.elementwise_function(name, USER_DEFS[name])


@pytest.mark.parametrize("dtype", FLOATS, ids=ids(FLOATS))
@pytest.mark.parametrize("name", list(USER_DEFS), ids=[n[9:] for n in USER_DEFS])
def test_user_defined_elementwise(name, dtype):
    """A primitive from a SymPy expression compiles like a built-in, and so does its
    derivative (built from sympy.diff)."""
    fn = user_op(name)
    arity = USER_DEFS[name].__code__.co_argcount
    phs = [gc.placeholder((None, 4), dtype, name=f"u{i}") for i in range(arity)]
    args = [sample(dtype, (3, 4), -1.2, 1.2, seed=10 + i) for i in range(arity)]
    out = fn(*phs)
    table = [("value", out), ("grad", gc.grad(gc.sum(out), phs[0]))]
    check_table(phs, table, *args)


# ---- casts --------------------------------------------------------------------------------

def _cast_sources(src):
    """(data every target can hold exactly, data for float/bool targets only)."""
    if src == BOOL:
        a = np.array([True, False, True, True, False])
        return a, a
    if src.kind == "i":
        a = np.array([0, 1, -1, 7, -128, 255, 2 ** 31 - 1, -2 ** 31], src)
        if src == I64:
            a = np.concatenate([a, np.array([2 ** 40 + 5, -2 ** 33 - 1, 2 ** 62 + 1], I64)])
        return a, a
    a = np.array([0.0, -0.0, 0.4, -0.6, 2.5, -3.99, 1e5, -2.1e9, 7.0, 123456.75], src)
    b = np.array([np.nan, np.inf, -np.inf, 1e-45, 3e38, -0.0, 0.25, 1e300], np.float64)
    with np.errstate(over="ignore"):
        return a, b.astype(src)


@pytest.mark.parametrize("src", ALL, ids=ids(ALL))
def test_casts_between_all_dtypes(src):
    clean, special = _cast_sources(src)
    x = gc.placeholder((None,), src, name="x")
    s = gc.placeholder((None,), src, name="s")
    table = []
    for dst in ALL:
        table.append((f"{ID[dst]}", x.astype(dst)))
        if dst.kind in "fb":  # float -> int of nan/inf/huge values is undefined in numpy
            table.append((f"{ID[dst]} specials", s.astype(dst)))
    table.append(("roundtrip", x.astype(F64).astype(src)))
    check_table([x, s], table, clean, special)


# ---- reductions ---------------------------------------------------------------------------

AXES = [None, 0, 1, 2, -1, (0, 1), (0, 2), (1, 2), (0, 1, 2), ()]


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ALL, ids=ids(ALL))
@pytest.mark.parametrize("op", ["sum", "max", "min", "mean"])
def test_reductions_over_every_axis_combination(op, dtype):
    a = sample(dtype, (2, 3, 4), -5, 5, seed=11)
    x = gc.placeholder((2, 3, None), dtype, name="x")
    reduce = getattr(gc, op)
    table = [(f"axis={axis} keepdims={kd}", reduce(x, axis=axis, keepdims=kd))
             for axis in AXES for kd in (False, True)]
    # a fused body: the elementwise ops feeding a reduction run inside its loop
    if dtype != BOOL:
        table += [(f"fused axis={axis}", reduce(x * 2 + 1, axis=axis)) for axis in (0, 2)]
    check_table([x], table, a, rtol=None if dtype.kind != "f" else RTOL[dtype],
                atol=None if dtype.kind != "f" else 10 * RTOL[dtype])


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ALL, ids=ids(ALL))
def test_argmax_over_every_axis(dtype):
    a = sample(dtype, (3, 4, 5), -2, 2, seed=12)  # small ints: many ties, first one wins
    x = gc.placeholder((None, 4, 5), dtype, name="x")
    table = [(f"axis={axis} keepdims={kd}", gc.argmax(x, axis=axis, keepdims=kd))
             for axis in (None, 0, 1, 2, -1) for kd in (False, True)]
    table.append(("method", x.argmax(axis=1)))
    check_table([x], table, a)


@pytest.mark.parametrize("dtype", FLOATS, ids=ids(FLOATS))
def test_reductions_with_nan_and_inf(dtype):
    """numpy semantics: sum/max/min propagate nan, argmax gives the first nan; inf wins
    max, -inf-only slices give -inf."""
    a = sample(dtype, (4, 3, 5), seed=13)
    a[0, 1, 2] = np.nan
    a[0, 2, 4] = np.nan
    a[1, :, 3] = -np.inf
    a[2, 0, :] = np.inf
    a[2, 1, 0] = np.nan
    a[3, 2, 2] = -np.inf
    x = gc.placeholder((None, 3, 5), dtype, name="x")
    table = []
    for op in ("sum", "max", "min"):
        for axis in (None, 0, 1, 2, (0, 2), (1, 2)):
            table.append((f"{op} axis={axis}", getattr(gc, op)(x, axis=axis)))
    for axis in (None, 0, 1, 2):
        table.append((f"argmax axis={axis}", gc.argmax(x, axis=axis)))
    table.append(("argmax -x", gc.argmax(-x, axis=2)))
    check_table([x], table, a)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [F32, F64, I32], ids=ids([F32, F64, I32]))
def test_reductions_on_larger_arrays(dtype):
    """Vectorized accumulation (several partial sums) and its remainder loops; in the second
    input a few nan/inf (floats) or extreme values (ints) at scattered positions."""
    a = sample(dtype, (5, 67, 33), -3, 3, seed=27)
    b = sample(dtype, (5, 67, 33), -3, 3, seed=28)
    rng = np.random.default_rng(29)
    spots = tuple(rng.integers(0, n, size=12) for n in b.shape)
    if dtype.kind == "f":
        b[spots] = np.array([np.nan, np.inf, -np.inf] * 4, dtype)
    else:
        b[spots] = np.array([np.iinfo(dtype).max, np.iinfo(dtype).min] * 6, dtype)
    x = gc.placeholder((None, 67, 33), dtype, name="x")
    y = gc.placeholder((None, 67, 33), dtype, name="y")
    table = [(f"{op}(x, {axis})", getattr(gc, op)(x, axis=axis))
             for axis in (None, 0, 1, 2, (0, 2)) for op in ("sum", "max", "min")]
    table += [(f"argmax(x, {axis})", gc.argmax(x, axis=axis)) for axis in (None, 2)]
    table.append(("sum(x * 2 + 1, 1)", gc.sum(x * 2 + 1, axis=1)))
    table += [(f"{op}(y, {axis})", getattr(gc, op)(y, axis=axis))
              for axis in (1, 2) for op in ("max", "min", "argmax")]
    if dtype.kind == "f":  # summation order differs: tolerance relative to sum(|x|)
        scale = float(np.sum(np.abs(a)))
        check_table([x, y], table, a, b, rtol=RTOL[dtype], atol=RTOL[dtype] * scale)
    else:
        check_table([x, y], table, a, b)


# ---- matmul -------------------------------------------------------------------------------

MATMUL_SHAPES = [
    ((2, 3), (3, 4)),
    ((1, 1), (1, 1)),
    ((5, 1), (1, 3)),
    ((3,), (3, 2)),
    ((2, 3), (3,)),
    ((4,), (4,)),
    ((2, 2, 3), (3, 4)),
    ((2, 3), (2, 3, 5)),
    ((1, 2, 3), (4, 3, 2)),
    ((2, 1, 3, 2), (3, 2, 2)),
    ((3, 0), (0, 2)),
    ((0, 3), (3, 2)),
    ((7, 9), (9, 6)),
    ((17, 33), (33, 65)),      # beyond one vector / block in every dimension
    ((3, 9, 31), (31, 20)),
]


@pytest.mark.slow
@pytest.mark.parametrize("dtype", NUMERIC, ids=ids(NUMERIC))
def test_matmul_small_shapes(dtype):
    args, phs, table = [], [], []
    for k, (sa, sb) in enumerate(MATMUL_SHAPES):
        a, b = sample(dtype, sa, -3, 3, seed=20 + k), sample(dtype, sb, -3, 3, seed=40 + k)
        pa, pb = gc.placeholder(sa, dtype, name=f"a{k}"), gc.placeholder(sb, dtype, name=f"b{k}")
        phs += [pa, pb]
        args += [a, b]
        table.append((f"{sa}@{sb}", pa @ pb))
    a, b = sample(dtype, (3, 4), seed=60), sample(dtype, (5, 4), seed=61)
    pa, pb = gc.placeholder((3, 4), dtype, name="ta"), gc.placeholder((5, 4), dtype, name="tb")
    phs += [pa, pb]
    args += [a, b]
    table += [("a@b.T", pa @ pb.T), ("b@a.T", gc.matmul(pb, pa.T)),
              ("sliced", pa[::-1, 1:] @ pb[:, 1:].T), ("fused", (pa * 2 + 1) @ gc.transpose(pb))]
    check_table(phs, table, *args)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", FLOATS, ids=ids(FLOATS))
def test_matmul_packed_and_threaded_paths(dtype):
    """Float GEMMs big enough for the packed (and multi-threaded) kernels, with row/column
    edges, transposed, sliced and broadcast operands, and the gradient's GEMMs."""
    a = sample(dtype, (2, 70, 90), seed=62)
    b = sample(dtype, (90, 75), seed=63)
    c = sample(dtype, (77, 41), seed=64)
    pa = gc.placeholder((None, 70, 90), dtype, name="pa")
    pb = gc.placeholder((90, 75), dtype, name="pb")
    pc = gc.placeholder((77, 41), dtype, name="pc")
    table = [("batched", pa @ pb),
             ("A transposed", pa[0].T[:, ::-1].T @ pb),
             ("B transposed", pa[1] @ pa[0].T[:, 5:]),
             ("both transposed", pb.T @ pa[0].T),
             ("sliced", pc[::-2, 1:] @ pc[1:41, ::-1]),
             ("broadcast batch", gc.expand_dims(pc, 0)[:, :, :40] @ pa[:, :40, :]),
             *zip(("grad A", "grad B"), gc.grad(gc.sum(gc.tanh(pa @ pb) * 0.5), [pa, pb]))]
    check_table([pa, pb, pc], table, a, b, c, atol=RTOL[dtype] * 100)


# ---- shapes, views, gathers ---------------------------------------------------------------

def _shape_table(x, idx):
    return [
        ("reshape", x.reshape(4, 6)),
        ("reshape -1", gc.reshape(x, (-1, 2))),
        ("reshape of transpose", x.T.reshape(-1)),
        ("transpose", x.transpose(1, 0, 2)),
        ("transpose all", gc.transpose(x)),
        ("T", x[0].T),
        ("slices", x[1:, ::2, 1:3]),
        ("negative steps", x[::-1, ::-2, 3:0:-1]),
        ("negative step whole", x[:, :, ::-1]),
        ("int and None", x[-1, None, 1, ...]),
        ("ellipsis", x[..., 2]),
        ("expand_dims", gc.expand_dims(x, (0, 3))),
        ("squeeze", gc.squeeze(x[:, :1, None], (1, 2))),
        ("broadcast_to", gc.broadcast_to(x[:, :1], (3, 2, 3, 4))),
        ("concatenate", gc.concatenate([x, x[:, ::-1], x[:, :1]], axis=1)),
        ("concatenate last", gc.concatenate([x[..., :1], x], axis=-1)),
        ("stack", gc.stack([x[0], x[1], x[1]], axis=0)),
        ("stack last", gc.stack([x[0], x[1]], axis=-1)),
        ("take axis 0", gc.take(x, idx, axis=0)),
        ("take axis 1", gc.take(x, idx, axis=1)),
        ("take axis -1", gc.take(x, idx, axis=-1)),
        ("take flat", gc.take(x, idx)),
        ("take 2-d indices", gc.take(x, gc.reshape(idx, (2, 2)), axis=2)),
        ("gather index", x[:, idx]),
        ("take of a view", gc.take(x[::-1].T, idx, axis=0)),
    ]


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ALL, ids=ids(ALL))
def test_shape_ops(dtype):
    a = sample(dtype, (2, 3, 4), -9, 9, seed=14)
    x = gc.placeholder((None, 3, 4), dtype, name="x")
    idx = gc.placeholder((4,), "int64", name="idx")
    check_table([x, idx], _shape_table(x, idx), a, np.array([1, -1, 0, -2]))


@pytest.mark.parametrize("idx_dtype", INTS, ids=ids(INTS))
def test_take_and_one_hot_index_dtypes(idx_dtype):
    x = gc.placeholder((5, 3), "float64", name="x")
    idx = gc.placeholder((None,), idx_dtype, name="idx")
    labels = np.array([4, 0, -5, 2, -1, 4], idx_dtype)
    table = [("take", gc.take(x, idx, axis=0)),
             ("one_hot f32", gc.one_hot(idx, 5)),
             ("one_hot i64", gc.one_hot(idx, 5, dtype="int64")),
             ("one_hot bool", gc.one_hot(idx, 5, dtype="bool")),
             ("one_hot f64 3", gc.one_hot(idx, 3, dtype="float64"))]
    check_table([x, idx], table, sample(F64, (5, 3), seed=15), labels)


# ---- softmax family and losses -----------------------------------------------------------

@pytest.mark.parametrize("dtype", FLOATS, ids=ids(FLOATS))
def test_softmax_family(dtype):
    a = sample(dtype, (4, 5), -4, 4, seed=16)
    a[1] = -np.inf  # an all -inf row: logsumexp -inf
    a[2, 1] = 80.0  # would overflow exp without the shift
    b = sample(dtype, (4, 5), -50, 50, seed=17)
    x = gc.placeholder((None, 5), dtype, name="x")
    y = gc.placeholder((None, 5), dtype, name="y")
    table = [
        ("log_softmax", gc.log_softmax(y)),
        ("log_softmax axis 0", gc.log_softmax(y, axis=0)),
        ("softmax", gc.softmax(y)),
        ("softmax axis 0", gc.softmax(y, axis=0)),
        ("softmax of expr", gc.softmax(gc.tanh(y) * 3)),
        ("logsumexp", gc.logsumexp(y)),
        ("logsumexp axis 1", gc.logsumexp(y, axis=1)),
        ("logsumexp axis 0 keepdims", gc.logsumexp(y, axis=0, keepdims=True)),
        ("logsumexp -inf", gc.logsumexp(x, axis=1)),
        ("softmax big", gc.softmax(x[2:])),
    ]
    check_table([x, y], table, a, b)


@pytest.mark.parametrize("dtype", FLOATS, ids=ids(FLOATS))
def test_losses(dtype):
    logits = sample(dtype, (6, 4), -3, 3, seed=18)
    labels = np.array([0, 3, 1, 1, 2, 3])
    probs = np.eye(4, dtype=dtype)[labels[::-1]] * 0.7 + 0.075
    target = sample(dtype, (6, 4), -3, 3, seed=19)
    x = gc.placeholder((None, 4), dtype, name="x")
    lab = gc.placeholder((None,), "int64", name="lab")
    lab32 = gc.placeholder((None,), "int32", name="lab32")
    p = gc.placeholder((None, 4), dtype, name="p")
    t = gc.placeholder((None, 4), dtype, name="t")
    table = [("cross_entropy", gc.nn.cross_entropy(x, lab)),
             ("cross_entropy int32", gc.nn.cross_entropy(x, lab32)),
             ("cross_entropy probs", gc.nn.cross_entropy(x, p)),
             ("mse", gc.nn.mse(x, t)),
             ("huber", gc.nn.huber(x, t)),
             ("huber delta", gc.nn.huber(x, t, delta=0.3))]
    check_table([x, lab, lab32, p, t], table, logits, labels, labels.astype(np.int32), probs,
                target)


def test_losses_of_int_data():
    """mse and huber of integer tensors average in float64, like numpy's mean."""
    a = sample(I32, (5, 3), -6, 6, seed=30)
    b = sample(I32, (5, 3), -6, 6, seed=31)
    x = gc.placeholder((None, 3), "int32", name="x")
    t = gc.placeholder((None, 3), "int32", name="t")
    check_table([x, t], [("mse", gc.nn.mse(x, t)), ("huber", gc.nn.huber(x, t, delta=2.0))],
                a, b)


# ---- gradients ----------------------------------------------------------------------------

def _mlp(dtype, seed=0, prefix=""):
    rng = np.random.default_rng(seed)
    shapes = {"W1": (6, 8), "b1": (8,), "W2": (8, 8), "b2": (8,), "W3": (8, 3)}
    return {k: gc.parameter((rng.normal(size=s) * 0.5).astype(dtype), name=prefix + k)
            for k, s in shapes.items()}


def _mlp_loss(p, x, labels):
    h = gc.tanh(x @ p["W1"] + p["b1"])
    h = gc.relu(h @ p["W2"] + p["b2"])
    return gc.nn.cross_entropy(h @ p["W3"], labels)


def test_mlp_gradient():
    p = _mlp(F64)
    x = gc.placeholder((None, 6), "float64", name="x")
    labels = gc.placeholder((None,), "int64", name="labels")
    loss = _mlp_loss(p, x, labels)
    grads = gc.grad(loss, list(p.values()))
    f = check([x, labels], [loss] + grads, sample(F64, (10, 6), seed=21),
              np.arange(10) % 3)
    assert all(np.any(g != 0) for g in f.reference[1:])  # every gradient is exercised


def test_cnn_like_gradient_with_reshapes():
    """Patches by reshape/transpose, a shared patch filter, pooling by max over patches,
    slices with negative steps and concatenation, softmax cross entropy."""
    rng = np.random.default_rng(22)
    K = gc.parameter(rng.normal(size=(4, 5)) * 0.5, name="K")
    c = gc.parameter(rng.normal(size=(5,)) * 0.1, name="c")
    W = gc.parameter(rng.normal(size=(20, 3)) * 0.3, name="Wout")
    x = gc.placeholder((None, 4, 4), "float64", name="img")
    labels = gc.placeholder((None,), "int64", name="y")
    n = 7
    patches = x.reshape(n, 2, 2, 2, 2).transpose(0, 1, 3, 2, 4).reshape(n, 4, 4)
    feat = gc.relu(patches @ K + c)                      # (n, 4 patches, 5)
    pooled = gc.max(feat, axis=1)                        # (n, 5)
    flipped = feat[:, ::-1, ::-2].reshape(n, -1)         # (n, 12)
    both = gc.concatenate([pooled, flipped, gc.mean(feat, axis=1)[:, :3]], axis=1)  # (n, 20)
    loss = gc.nn.cross_entropy(gc.sigmoid(both) @ W, labels) + 0.01 * gc.sum(K * K)
    grads = gc.grad(loss, [K, c, W, x])
    check([x, labels], [loss] + grads, rng.normal(size=(n, 4, 4)), np.arange(n) % 3)


def test_embedding_gradient_with_repeated_indices():
    """take's gradient is a scatter_add: repeated (and negative) indices accumulate."""
    rng = np.random.default_rng(23)
    E = gc.parameter(rng.normal(size=(6, 4)), name="E")
    W = gc.parameter(rng.normal(size=(4, 2)), name="Wemb")
    ids_ = gc.placeholder((None, 5), "int64", name="ids")
    target = gc.placeholder((None, 2), "float64", name="target")
    emb = gc.take(E, ids_, axis=0)                       # (n, 5, 4)
    pooled = gc.sum(emb, axis=1) + gc.max(emb, axis=1)
    loss = gc.nn.mse(pooled @ W, target) + gc.nn.huber(E[ids_[:, 0]], 0.5)
    grads = gc.grad(loss, [E, W])
    tokens = np.array([[1, 1, 1, 2, -1], [0, 5, 5, -6, 3], [2, 2, 2, 2, 2]])
    f = check([ids_, target], [loss] + grads, tokens, rng.normal(size=(3, 2)))
    dE = f.reference[1]
    assert np.all(dE[4] == 0) and np.any(dE[1] != 0)  # row 4 unused, row 1 repeated


@pytest.mark.slow
def test_hessian_jvp_vjp_and_a_deep_chain():
    """Second derivatives, forward and reverse mode, and a chain longer than one fused
    kernel body (the scheduler stores and reloads it)."""
    x = gc.placeholder((4,), "float64", name="x")
    v = gc.placeholder((4,), "float64", name="v")
    z = gc.placeholder((None,), "float64", name="z")
    y = gc.sum(gc.tanh(x) ** 3 * gc.sigmoid(x) + gc.softplus(x * x))
    deep = z
    for k in range(60):
        deep = gc.sin(deep) * 0.9 + 0.05 * (k % 3) if k % 2 else gc.tanh(deep * 1.1 + z)
    outs = [gc.hessian(y, x), gc.grad(gc.grad(y, x)[1], x),
            gc.jvp(gc.tanh(x) * x, x, v), gc.vjp(gc.sin(x) * x, x, v),
            deep, gc.grad(gc.sum(deep), z)]
    check([x, v, z], outs, np.linspace(-2, 2, 4), np.linspace(1, -1, 4),
          np.linspace(-3, 3, 37), rtol=1e-10, atol=1e-10)


# ---- training steps with updates -------------------------------------------------------

def _train(backend, steps, data):
    p = _mlp(F64, seed=3, prefix=backend)
    x = gc.placeholder((None, 6), "float64", name="x")
    labels = gc.placeholder((None,), "int64", name="labels")
    loss = _mlp_loss(p, x, labels)
    grads = gc.grad(loss, list(p.values()))
    updates = {w: w - 0.1 * g for w, g in zip(p.values(), grads)}
    step = gc.function([x, labels], loss, updates=updates, backend=backend)
    losses = [step(*data[i % len(data)]) for i in range(steps)]
    return losses, {k: w.value for k, w in p.items()}


def test_training_steps_give_the_same_parameters():
    rng = np.random.default_rng(24)
    data = [(rng.normal(size=(n, 6)), rng.integers(0, 3, size=n)) for n in (9, 4, 9, 1)]
    ref_losses, ref = _train("numpy", 8, data)
    got_losses, got = _train("llvm", 8, data)
    assert_same(got_losses, ref_losses, rtol=1e-10, atol=1e-10)
    for k in ref:
        assert_same(got[k], ref[k], rtol=1e-10, atol=1e-10)
    assert ref_losses[-1] < ref_losses[0]


def _update_cases(backend):
    a = gc.parameter(np.array([1.0, 2.0, 3.0]), name=f"{backend}a")
    b = gc.parameter(np.array([10.0, 20.0, 30.0]), name=f"{backend}b")
    m = gc.parameter(np.arange(9.0).reshape(3, 3), name=f"{backend}m")
    r = gc.parameter(np.arange(5.0), name=f"{backend}r")
    i = gc.parameter(np.array([0, 1], np.int64), name=f"{backend}i")
    x = gc.placeholder((3,), "float64", name="x")
    z = gc.parameter(np.zeros(2, np.float32), name=f"{backend}z")
    outs = [a, b * 1, gc.sum(m), r, z]
    updates = {a: b, b: a + gc.sum(b) * x, m: m.T + a, r: r[::-1] + r[0], i: i[::-1] + i,
               z: np.array([7.0, 8.0])}
    f = gc.function([x], outs, updates=updates, backend=backend)
    return f, [a, b, m, r, i, z]


def test_updates_that_read_other_parameters_and_views_of_themselves():
    """Swap, cross reads, a transpose and a reversal of the parameter being written: new
    values all come from the old ones; outputs see the old values."""
    f_ref, p_ref = _update_cases("numpy")
    f_got, p_got = _update_cases("llvm")
    for step in range(3):
        xv = np.array([0.5, -1.0, 2.0]) * (step + 1)
        assert_same(f_got(xv), f_ref(xv))
        assert_same([p.value for p in p_got], [p.value for p in p_ref])


def test_update_swap_in_float32_and_int():
    for dtype in (F32, I32):
        a = gc.parameter(np.arange(4).astype(dtype), name=f"sa{ID[dtype]}")
        b = gc.parameter(np.arange(4, 8).astype(dtype), name=f"sb{ID[dtype]}")
        f = gc.function([], a + b, updates={a: b, b: a}, backend="llvm")
        np.testing.assert_array_equal(f(), np.arange(4, 12, 2))
        np.testing.assert_array_equal(a.value, np.arange(4, 8))
        np.testing.assert_array_equal(b.value, np.arange(4))
        f()
        np.testing.assert_array_equal(a.value, np.arange(4))


def test_shared_parameter_value_setter_and_scalar_inputs():
    """Two llvm functions share a parameter (one updates it, the other sees it); p.value = ...
    between calls is seen by compiled code; 0-d placeholders take Python numbers."""
    w = gc.parameter(np.array([1.0, 2.0, 3.0]), name="shared_w")
    lr = gc.placeholder((), "float64", name="lr")
    k = gc.placeholder((), "int64", name="k")
    step = gc.function([lr], gc.sum(w), updates={w: w * (1 - lr)}, backend="llvm")
    read = gc.function([k], [w * k, gc.sum(w) + k], backend="llvm")
    assert step(0.5) == 6.0
    assert_same(read(2), [np.array([1.0, 2.0, 3.0]), np.array(5.0)])
    w.value = np.array([4.0, 5.0, 6.0])
    assert_same(read(True), [np.array([4.0, 5.0, 6.0]), np.array(16.0)])
    assert step(np.float64(0.25)) == 15.0
    np.testing.assert_array_equal(w.value, [3.0, 3.75, 4.5])


def test_optimize_false_runs_no_passes():
    """API.md: optimize=False runs none of the passes. log(exp(x)) is then computed as
    written (inf at x=1000), as the numpy backend does; the stabilize pass would make it x."""
    x = gc.placeholder((3,), "float64", name="x")
    a = np.array([1.0, 1000.0, -1000.0])
    ref = gc.function([x], gc.log(gc.exp(x)), optimize=False, backend="numpy")(a)
    got = gc.function([x], gc.log(gc.exp(x)), optimize=False, backend="llvm")(a)
    assert ref[1] == np.inf
    assert_same(got, ref)


# ---- random graphs --------------------------------------------------------------------------

SHAPES = [(3, 4), (4,), (3, 1), (1, 4), ()]
UNARY_SAFE = [gc.tanh, gc.sin, gc.sigmoid, gc.abs, gc.relu, lambda t: -t, gc.square,
              lambda t: t[::-1] if t.ndim == 2 else t, lambda t: t[:, ::-1] if t.ndim == 2 else t]
BINARY_SAFE = [lambda a, b: a + b, lambda a, b: a - b, lambda a, b: a * b, gc.maximum,
               gc.minimum, lambda a, b: gc.where(a > b, a, b * 0.5)]


@st.composite
def random_graph(draw, leaves, w, depth=0):
    """A tree over `leaves` whose every node broadcasts to (3, 4); matmuls with w (4, 4)."""
    kind = draw(st.sampled_from(["leaf", "const", "unary", "binary", "binary", "reduce",
                                 "matmul"] if depth < 4 else ["leaf", "const"]))
    if kind == "leaf":
        return draw(st.sampled_from(leaves))
    if kind == "const":
        return gc.constant(draw(st.floats(-2, 2, allow_nan=False, width=32)), "float64")
    sub = random_graph(leaves, w, depth + 1)
    if kind == "unary":
        return draw(st.sampled_from(UNARY_SAFE))(draw(sub))
    if kind == "binary":
        return draw(st.sampled_from(BINARY_SAFE))(draw(sub), draw(sub))
    if kind == "matmul":
        a = gc.broadcast_to(draw(sub), (3, 4))
        return gc.tanh(a @ draw(st.sampled_from([w, gc.transpose(w)])))
    t = gc.broadcast_to(draw(sub), (3, 4))
    op = draw(st.sampled_from([gc.sum, gc.max, gc.min, gc.mean]))
    return op(t, axis=draw(st.sampled_from([0, 1])), keepdims=True)


@pytest.mark.slow
@given(st.data())
def test_random_graphs(data):
    phs = [gc.placeholder(s, "float64", name=f"leaf{i}") for i, s in enumerate(SHAPES)]
    w = gc.placeholder((4, 4), "float64", name="w")
    leaves = phs + [w]
    out = data.draw(random_graph(phs, w))
    out = gc.broadcast_to(out, (3, 4))
    total = gc.sum(out * gc.sin(phs[0]))
    outs = [out, total]
    grad_wrt = [p for p in phs if p.ndim]
    if data.draw(st.booleans()):
        outs += gc.grad(total, grad_wrt)
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 16)))
    args = [rng.uniform(-2, 2, size=s) for s in SHAPES] + [rng.uniform(-1, 1, size=(4, 4))]
    ref = gc.function(leaves, outs, backend="numpy")(*args)
    got = gc.function(leaves, outs, backend="llvm")(*args)
    scale = 1 + max(float(np.max(np.abs(r), initial=0, where=np.isfinite(r))) for r in ref)
    assert_same(got, ref, rtol=1e-9, atol=1e-9 * scale)


# ---- call-time sizes --------------------------------------------------------------------

def test_none_dims_one_module_per_shape_and_empty_batches():
    x = gc.placeholder((None, 3), "float64", name="x")
    labels = gc.placeholder((None,), "int64", name="labels")
    w = gc.parameter(np.arange(6.0).reshape(3, 2) / 6, name="w_none")
    logits = x @ w
    outs = [x * 2 + 1, gc.sum(x, axis=0), gc.sum(x), gc.mean(x, axis=0), logits,
            gc.log_softmax(logits), gc.max(x, axis=1), gc.argmax(x, axis=1),
            gc.nn.cross_entropy(logits, labels), gc.take(x, labels, axis=1), x[::-1, 1:],
            gc.concatenate([x, x], axis=0), x.T @ x, gc.grad(gc.sum(gc.tanh(logits)), w)]
    f_ref = gc.function([x, labels], outs, backend="numpy")
    f = gc.function([x, labels], outs, backend="llvm")
    assert f._exe.compiled == {}  # nothing to compile before the sizes are known
    rng = np.random.default_rng(25)
    for n in (4, 1, 0, 4, 7, 0):
        args = rng.normal(size=(n, 3)), rng.integers(0, 2, size=n)
        assert_same(f(*args), f_ref(*args))
    shapes = sorted(f._exe.compiled)
    assert shapes == [((0, 3), (0,)), ((1, 3), (1,)), ((4, 3), (4,)), ((7, 3), (7,))]


def test_static_shapes_compile_once_at_construction():
    x = gc.placeholder((2, 3), "float32", name="x")
    f = gc.function([x], gc.tanh(x) * 2.0, backend="llvm")
    assert list(f._exe.compiled) == [((2, 3),)]
    a = sample(F32, (2, 3), seed=26)
    for _ in range(3):
        assert_same(f(a), np.tanh(a) * np.float32(2.0))
    assert len(f._exe.compiled) == 1


def test_empty_dims_everywhere():
    x = gc.placeholder((None, None), "float32", name="x")
    outs = [gc.exp(x), gc.sum(x, axis=1), gc.sum(x), gc.mean(x, axis=0), x.T, x @ x.T,
            gc.softmax(x, axis=0), gc.reshape(x, (-1,))]
    check([x], outs, np.zeros((3, 0), np.float32))
    check([x], outs, np.zeros((0, 5), np.float32))


def test_reduction_over_an_empty_axis_raises_like_numpy():
    x = gc.placeholder((None, 3), "float64", name="x")
    for op in (gc.max, gc.min, gc.argmax):
        f_ref = gc.function([x], op(x, axis=0), backend="numpy")
        f = gc.function([x], op(x, axis=0), backend="llvm")
        with pytest.raises(ValueError):
            f_ref(np.zeros((0, 3)))
        with pytest.raises(ValueError):
            f(np.zeros((0, 3)))
        assert_same(f(np.ones((2, 3))), f_ref(np.ones((2, 3))))


# ---- bad input ------------------------------------------------------------------------------

def run_isolated(code: str, env: dict | None = None) -> str:
    """Runs `code` in a fresh interpreter: a crash (segfault) fails the test instead of
    taking pytest down."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, **(env or {})))
    assert proc.returncode == 0, f"exit status {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.mark.slow
def test_out_of_range_indices_raise_index_error():
    out = run_isolated("""
        import numpy as np, graphc as gc
        x = gc.placeholder((None, 3), "float64", name="x")
        idx = gc.placeholder((None,), "int64", name="idx")
        lab = gc.placeholder((None,), "int32", name="lab")
        E = gc.parameter(np.ones((4, 2)), name="E")
        cases = {
            "take": gc.function([x, idx], gc.take(x, idx, axis=1), backend="llvm"),
            "take axis 0": gc.function([x, idx], gc.take(x, idx, axis=0), backend="llvm"),
            "gather": gc.function([x, idx], x[idx], backend="llvm"),
            "embedding grad": gc.function(
                [idx], gc.grad(gc.sum(gc.take(E, idx, axis=0) ** 2), E), backend="llvm"),
            "cross_entropy": gc.function([x, lab], gc.nn.cross_entropy(x, lab),
                                         backend="llvm"),
            "cross_entropy grad": gc.function(
                [x, lab], gc.grad(gc.nn.cross_entropy(x, lab), x), backend="llvm"),
            "take grad axis 1": gc.function(
                [x, idx], gc.grad(gc.sum(gc.take(x, idx, axis=1)), x), backend="llvm"),
        }
        xs = np.ones((4, 3))
        bad = {"take": [3, -4, 10 ** 12, -2 ** 62], "take axis 0": [4, -5],
               "gather": [4, -5], "embedding grad": [4, -5, 2 ** 40],
               "cross_entropy": [3, -1], "cross_entropy grad": [3, -1],
               "take grad axis 1": [3, -4]}
        for name, f in cases.items():
            for v in bad[name]:
                if "cross" in name:
                    args = (xs, np.array([0, 1, v, 2], np.int32))
                elif name == "embedding grad":
                    args = (np.array([0, v, 1], np.int64),)
                else:
                    args = (xs, np.array([0, v], np.int64))
                try:
                    f(*args)
                except IndexError as exc:
                    assert str(exc), name
                else:
                    raise AssertionError(f"{name}: index {v} accepted")
            # the function still works after a failed call
            if "cross" in name:
                f(xs, np.array([0, 1, 2, 2], np.int32))
            elif name == "embedding grad":
                f(np.array([0, -4, 3], np.int64))
            else:
                f(xs, np.array([0, -3], np.int64))
        # a training step that fails on a label stores no update at all
        W = gc.parameter(np.ones((3, 3)), name="W")
        b = gc.parameter(np.zeros(3), name="b")
        loss = gc.nn.cross_entropy(gc.take(x @ W, idx, axis=0) + b, lab) + gc.sum(b * b)
        dW, db = gc.grad(loss, [W, b])
        step = gc.function([x, idx, lab], loss, updates={W: W - dW, b: b - db},
                           backend="llvm")
        for i, l in (([0, 9], [0, 1]), ([0, 1], [0, 3]), ([-5, 1], [-1, 0])):
            try:
                step(xs, np.array(i), np.array(l, np.int32))
            except IndexError:
                pass
            else:
                raise AssertionError(f"step: indices {i} / labels {l} accepted")
            assert (W.value == 1).all() and (b.value == 0).all(), "partial update stored"
        step(xs, np.array([0, 1]), np.array([0, 2], np.int32))
        assert not (W.value == 1).all()
        print("OK")
    """)
    assert out.strip() == "OK"


def test_wrong_shapes_and_dtypes_name_the_placeholder():
    x = gc.placeholder((None, 3), "float32", name="feat")
    lab = gc.placeholder((None,), "int64", name="lab")
    f = gc.function([x, lab], gc.nn.cross_entropy(x, lab), backend="llvm")
    good_x, good_lab = np.ones((2, 3), np.float32), np.array([0, 2])
    cases = [
        ((np.ones((2, 4), np.float32), good_lab), ValueError, "feat"),
        ((np.ones((2, 3, 1), np.float32), good_lab), ValueError, "feat"),
        ((np.ones(3, np.float32), good_lab), ValueError, "feat"),
        ((good_x, np.array([[0, 1]])), ValueError, "lab"),
        ((good_x, np.array([0.0, 1.0])), TypeError, "lab"),
        ((np.ones((2, 3), np.int64), good_lab), TypeError, "feat"),
        ((np.ones((2, 3), np.complex64), good_lab), TypeError, "feat"),
        ((good_x, np.array(["a", "b"])), TypeError, "lab"),
        ((good_x, np.array([0, 2 ** 40], np.uint64)), TypeError, "lab"),
    ]
    for args, exc, name in cases:
        with pytest.raises(exc, match=name):
            f(*args)
    with pytest.raises(TypeError):
        f(good_x)
    with pytest.raises(TypeError):
        f(good_x, good_lab, good_lab)
    # two None dims that must agree but do not (a call-time size never broadcasts, not
    # even from 1): an error naming both, not a crash
    y = gc.placeholder((None, 3), "float32", name="other")
    g = gc.function([x, y], [x + y, x @ y.T], backend="llvm")
    for rows in (4, 1):
        with pytest.raises(ValueError, match="'feat'.*'other'"):
            g(good_x, np.ones((rows, 3), np.float32))
    other = np.ones(good_x.shape, np.float32)
    assert_same(g(good_x, other),
                gc.function([x, y], [x + y, x @ y.T], backend="numpy")(good_x, other))
    # labels of another int kind convert within the kind; float64 data to float32
    assert_same(f(good_x.astype(np.float64), good_lab.astype(np.int32)), f(good_x, good_lab))


def test_non_contiguous_fortran_and_odd_layouts():
    x = gc.placeholder((None, 3), "float64", name="x")
    w = gc.placeholder((3, 2), "float64", name="w")
    outs = [x @ w, x * 2, gc.sum(x, axis=0), x[:, ::-1], gc.softmax(x), gc.take(w, [2, 0])]
    f_ref = gc.function([x, w], outs, backend="numpy")
    f = gc.function([x, w], outs, backend="llvm")
    base = np.arange(24.0).reshape(4, 6) / 7
    wbase = np.arange(6.0).reshape(3, 2) - 2.5
    raw = np.zeros(8 * 12 + 1, np.uint8)
    unaligned = np.frombuffer(raw.data, np.float64, 12, offset=1).reshape(4, 3)
    unaligned = unaligned.copy() if unaligned.flags.aligned else unaligned
    layouts = [
        (base[:, ::2], np.asfortranarray(wbase)),
        (base.reshape(6, 4).T[:, :3], wbase[::-1]),
        (np.asfortranarray(base[:, :3]), np.broadcast_to(wbase[:1], (3, 2))),
        (base[::-2, ::2], wbase.astype(">f8")),
        (unaligned, wbase),
    ]
    for xa, wa in layouts:
        xa_copy, wa_copy = np.array(xa), np.array(wa)
        assert_same(f(xa, wa), f_ref(xa_copy, wa_copy))
        np.testing.assert_array_equal(xa, xa_copy)  # arguments are not written to


def test_results_are_fresh_arrays():
    x = gc.placeholder((None, 2), "float64", name="x")
    p = gc.parameter(np.array([1.0, 2.0]), name="fresh_p")
    total = gc.sum(x, axis=0)
    f = gc.function([x], [x, x, x * 1, p, gc.constant(np.array([3.0, 4.0])), total, total],
                    backend="llvm")
    a = np.ones((2, 2))
    r1 = f(a)
    for k in (0, 3, 4, 5):
        r1[k][...] = 100.0
    assert a[0, 0] == 1.0 and r1[1][0, 0] == 1.0 and r1[6][0] == 2.0
    r2 = f(a)
    assert_same(r2, [a, a, a, np.array([1.0, 2.0]), np.array([3.0, 4.0]), a.sum(0), a.sum(0)])
    np.testing.assert_array_equal(p.value, [1.0, 2.0])


def test_nan_and_inf_propagate():
    x = gc.placeholder((None,), "float32", name="x")
    w = gc.placeholder((None, 2), "float32", name="w")
    v = np.array([np.nan, np.inf, -np.inf, 1.0, 0.0, -0.0], np.float32)
    m = np.array([[1, 0], [np.nan, 1], [0, 0], [1, np.inf], [2, 2], [3, -1]], np.float32)
    check([x, w], [x * 2, gc.exp(x), gc.sum(x), gc.maximum(x, 0.0), gc.log(x), x / 0.0,
                   gc.relu(x), gc.tanh(x), gc.sigmoid(x), gc.softplus(x), x @ w,
                   gc.max(x), gc.min(x), gc.argmax(x), gc.softmax(w), gc.logsumexp(w, axis=1),
                   gc.where(x > 0, x, -x), gc.sqrt(x), x ** 2.0], v, m)


@pytest.mark.slow
def test_compile_cache_knows_user_defined_op_definitions(tmp_path):
    """Two processes define an elementwise op of one name with different formulas: the
    second must not be served the first one's cached code."""
    program = """
        import numpy as np, sympy as sp, graphc as gc
        f = gc.elementwise_function("llvmtest_redefined", lambda x: {})
        x = gc.placeholder((3,), "float64", name="x")
        print(gc.function([x], f(x), backend="llvm")(np.array([1.0, 2.0, 3.0])).tolist())
    """
    env = {"GRAPHC_CACHE_DIR": str(tmp_path)}
    assert run_isolated(program.format("x ** 2"), env).strip() == "[1.0, 4.0, 9.0]"
    assert run_isolated(program.format("x ** 3"), env).strip() == "[1.0, 8.0, 27.0]"


# ---- the generated text -------------------------------------------------------------------

def test_source_and_asm():
    x = gc.placeholder((None, 3), "float32", name="x")
    f = gc.function([x], gc.tanh(x) * 2.0, backend="llvm")
    f(np.ones((2, 3), np.float32))
    assert isinstance(f.source, str) and "define" in f.source
    assert "graphc_main" in f.source
    asm = f._exe.asm
    assert isinstance(asm, str) and asm.strip()
    assert "graphc_main" in asm


def test_compile_times_say_where_the_compile_went(tmp_path):
    def build():
        x = gc.placeholder((None, 3), "float32", name="x")
        return gc.function([x], gc.tanh(x) * 2.0, backend="llvm",
                           backend_options={"cache_dir": str(tmp_path)})
    f = build()
    assert f.compile_times == {}  # nothing compiled yet (sizes come with the call)
    f(np.ones((2, 3), np.float32))
    cold = f.compile_times
    assert cold["cached"] is False and cold["parts"] >= 1
    phases = ("fingerprint", "optimize and schedule", "codegen", "llvm parse",
              "llvm optimize", "llvm emit", "parts wall")
    assert all(cold[p] > 0 for p in phases)
    assert cold["parts wall"] >= cold["llvm emit"] / cold["parts"]
    g = build()
    g(np.ones((2, 3), np.float32))
    warm = g.compile_times
    assert warm["cached"] is True and warm["cache load"] > 0 and "llvm optimize" not in warm
    with pytest.raises(AttributeError, match="numpy backend reports no compile times"):
        y = gc.placeholder((2,), name="y")
        _ = gc.function([y], y * 2, backend="numpy").compile_times


# ---- alias scopes: distinct scopes only for buffers whose memory is disjoint ----------------

def _scheduled(step, *shapes):
    from graphc.schedule import schedule_graph
    return schedule_graph(step.graph, list(shapes))


def test_alias_scopes_never_separate_overlapping_memory():
    from graphc.backends.llvm.codegen import ModuleWriter
    rng = np.random.default_rng(0)
    x = gc.placeholder((None, 1, 12, 12), name="x")
    labels = gc.placeholder((None,), "int64", name="labels")
    w = gc.parameter(rng.normal(size=(4, 1, 3, 3)).astype(np.float32), name="w")
    v = gc.parameter(rng.normal(size=(4 * 5 * 5, 10)).astype(np.float32), name="v")
    h = gc.nn.max_pool2d(gc.relu(gc.nn.conv2d(x, w)), 2).reshape(-1, 100)
    h = gc.tanh(gc.exp(gc.sin(h @ v)) * 2.0)  # a chain: temporaries die and are reused
    loss = gc.nn.cross_entropy(h, labels)
    gw, gv = gc.grad(loss, [w, v])
    step = gc.function([x, labels], loss, updates={w: w - 0.1 * gw, v: v - 0.1 * gv},
                       backend="numpy")
    schedule = _scheduled(step, (8, 1, 12, 12), (8,))
    writer = ModuleWriter(schedule)
    checked = 0
    for index, kernel in enumerate(schedule.kernels):
        writer._kernel_index = index
        marks = writer._alias_scopes(kernel)
        for a in marks:
            for b in marks:
                if a < b and marks[a][0] is not marks[b][0]:
                    checked += 1
                    ra, rb = schedule.buffers[a], schedule.buffers[b]
                    if ra.role == "temp" and rb.role == "temp":
                        oa, ob = schedule.plan.offsets[a], schedule.plan.offsets[b]
                        size_a = ra.size * max(1, ra.dtype.itemsize)
                        size_b = rb.size * max(1, rb.dtype.itemsize)
                        assert oa + size_a <= ob or ob + size_b <= oa, (index, a, b)
    assert checked > 10
