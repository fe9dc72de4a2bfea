"""Elementwise functions and operators, run through gc.function(backend="numpy") and compared
with independently written numpy formulas: values, result dtypes (numpy's promotion rules,
NEP 50 weak Python scalars) and broadcasting (size-1 dims, 0-d, size-0 dims, None dims)."""
from __future__ import annotations

import math
import operator

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

import graphc as gc

F32, F64, I32, I64, BOOL = (np.dtype(d) for d in ("float32", "float64", "int32", "int64",
                                                    "bool"))
DTYPES = [F32, F64, I32, I64]
DTYPE_IDS = ["f32", "f64", "i32", "i64"]


# ---- helpers ----------------------------------------------------------------------------

# Every graph runs twice: through the whole optimizer pipeline and through none of it,
# so a rewrite that changes a value or a dtype shows up as a difference from numpy.
OPTIMIZE = [True]


@pytest.fixture(autouse=True, params=[True, False], ids=["opt", "noopt"])
def _optimize(request):
    OPTIMIZE[0] = request.param
    yield
    OPTIMIZE[0] = True


def compile_run(build, arrays, shapes=None):
    """Placeholders shaped like `arrays` (or `shapes`, which may hold None), the graph
    `build(*placeholders)`, compiled for numpy and called with `arrays`."""
    phs = [gc.placeholder(a.shape if shapes is None else shapes[i], a.dtype, name=f"arg{i}")
           for i, a in enumerate(arrays)]
    out = build(*phs)
    f = gc.function(phs, out, backend="numpy", optimize=OPTIMIZE[0])
    return f(*arrays), out


def tolerances(dtype):
    if dtype == F32:
        return dict(rtol=1e-5, atol=1e-6)
    return dict(rtol=1e-12, atol=1e-12)


def check(result, expected, dtype=None):
    """`result` is an ndarray of `expected`'s shape, dtype (or `dtype`) and values."""
    dtype = np.dtype(expected.dtype if dtype is None else dtype)
    assert isinstance(result, np.ndarray)
    assert result.dtype == dtype, (result.dtype, dtype)
    assert result.shape == np.shape(expected)
    if dtype.kind == "f":
        np.testing.assert_allclose(result, np.asarray(expected, np.float64), equal_nan=True,
                                   **tolerances(dtype))
    else:
        np.testing.assert_array_equal(result, expected)


def float_result_dtype(dtype):
    """The dtype numpy's float ufuncs give for an input dtype (ints -> float64)."""
    return np.sqrt(np.ones(1, dtype)).dtype


def sample(dtype, domain, shape=(3, 4), seed=0):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        lo, hi = {"any": (-3.0, 3.0), "pos": (0.1, 4.0), "trig": (0.2, 1.3)}[domain]
        x = rng.uniform(lo, hi, size=shape)
        if domain == "trig":  # both signs, away from the poles of tan/cot/sec/csc
            x = x * rng.choice([-1.0, 1.0], size=shape)
        return x.astype(dtype)
    lo, hi = {"any": (-5, 6), "pos": (1, 20), "trig": (1, 6)}[domain]
    x = rng.integers(lo, hi, size=shape)
    if domain == "trig":
        x = x * rng.choice([-1, 1], size=shape)
    return x.astype(dtype)


def _erf_ref(x):
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def _relu_ref(x):
    return np.where(x > 0, x, 0)


def _sigmoid_ref(x):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def _softplus_ref(x):
    with np.errstate(over="ignore"):
        return np.where(x > 30, x, np.log1p(np.exp(np.minimum(x, 30))))


# name, graphc function, numpy formula, input domain, keeps integer dtypes
UNARY = [
    ("exp", gc.exp, np.exp, "any", False),
    ("log", gc.log, np.log, "pos", False),
    ("sqrt", gc.sqrt, np.sqrt, "pos", False),
    ("square", gc.square, lambda x: x * x, "any", True),
    ("abs", gc.abs, np.abs, "any", True),
    ("builtin_abs", abs, np.abs, "any", True),
    ("sign", gc.sign, np.sign, "any", True),
    ("sin", gc.sin, np.sin, "any", False),
    ("cos", gc.cos, np.cos, "any", False),
    ("tan", gc.tan, lambda x: np.sin(x) / np.cos(x), "trig", False),
    ("cot", gc.cot, lambda x: np.cos(x) / np.sin(x), "trig", False),
    ("sec", gc.sec, lambda x: 1.0 / np.cos(x), "trig", False),
    ("csc", gc.csc, lambda x: 1.0 / np.sin(x), "trig", False),
    ("tanh", gc.tanh, np.tanh, "any", False),
    ("sigmoid", gc.sigmoid, _sigmoid_ref, "any", False),
    ("relu", gc.relu, _relu_ref, "any", True),
    ("softplus", gc.softplus, _softplus_ref, "any", False),
    ("erf", gc.erf, _erf_ref, "any", False),
    ("neg", operator.neg, lambda x: -x, "any", True),
    ("negative", gc.negative, lambda x: -x, "any", True),
]
UNARY_IDS = [u[0] for u in UNARY]


def unary_expected(ref, keeps_int, x):
    if keeps_int:
        return ref(x), x.dtype
    return ref(x.astype(np.float64)), float_result_dtype(x.dtype)


# ---- unary functions --------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name,fn,ref,domain,keeps_int", UNARY, ids=UNARY_IDS)
def test_unary_values_and_dtypes(name, fn, ref, domain, keeps_int, dtype):
    x = sample(dtype, domain)
    result, out = compile_run(fn, [x])
    expected, exp_dtype = unary_expected(ref, keeps_int, x)
    assert out.dtype == exp_dtype and out.shape == x.shape  # static type agrees
    check(result, expected, exp_dtype)


@pytest.mark.parametrize("shape,static", [
    ((), ()),
    ((0,), (0,)),
    ((2, 0, 3), (2, 0, 3)),
    ((1, 1), (1, 1)),
    ((5, 3), (None, 3)),
    ((0, 3), (None, 3)),
    ((2, 4), (None, None)),
], ids=["0d", "empty", "empty_mid", "ones", "none_dim", "none_dim_empty", "all_none"])
@pytest.mark.parametrize("name,fn,ref,domain,keeps_int", UNARY, ids=UNARY_IDS)
def test_unary_shapes(name, fn, ref, domain, keeps_int, shape, static):
    x = sample(F64, domain, shape=shape, seed=1)
    result, out = compile_run(fn, [x], shapes=[static])
    assert out.shape == static
    expected, exp_dtype = unary_expected(ref, keeps_int, x)
    check(result, expected, exp_dtype)


SPECIAL = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-30, 700.0, -700.0, 80.0, -80.0])


@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize("name,fn,ref", [
    ("exp", gc.exp, np.exp),
    ("tanh", gc.tanh, np.tanh),
    ("sigmoid", gc.sigmoid, _sigmoid_ref),
    ("softplus", gc.softplus, _softplus_ref),
    ("relu", gc.relu, lambda x: np.where(np.isnan(x), np.nan, np.where(x > 0, x, 0.0))),
    ("abs", gc.abs, np.abs),
    ("sign", gc.sign, np.sign),
    ("erf", gc.erf, _erf_ref),
    ("square", gc.square, lambda x: x * x),
], ids=lambda v: v if isinstance(v, str) else "")
def test_unary_special_values(name, fn, ref, dtype):
    """inf, nan, signed zeros and large arguments: no spurious nan, overflow only as numpy."""
    x = SPECIAL.astype(dtype)
    result, _ = compile_run(fn, [x])
    with np.errstate(over="ignore"):
        expected = ref(x.astype(np.float64)).astype(dtype)  # rounded like the result
    check(result, expected, dtype)


def test_known_values():
    """A few values from tables, not from any implementation."""
    x = np.array([0.0, 1.0, -1.0, 0.5], np.float64)
    result, _ = compile_run(lambda t: gc.stack([gc.erf(t), gc.sigmoid(t), gc.softplus(t)]), [x])
    np.testing.assert_allclose(result[0], [0.0, 0.8427007929497149, -0.8427007929497149,
                                           0.5204998778130465], rtol=1e-12)
    np.testing.assert_allclose(result[1], [0.5, 0.7310585786300049, 0.2689414213699951,
                                           0.6224593312018546], rtol=1e-12)
    np.testing.assert_allclose(result[2], [math.log(2), 1.3132616875182228, 0.31326168751822286,
                                           0.9740769841801067], rtol=1e-12)


@pytest.mark.parametrize("dtype,expected", [(F32, F32), (F64, F64), (I32, F64), (I64, F64)],
                         ids=DTYPE_IDS)
def test_float_functions_promote_ints_like_numpy(dtype, expected):
    x = gc.placeholder((3,), dtype)
    for fn in (gc.exp, gc.log, gc.sqrt, gc.sin, gc.tanh, gc.sigmoid, gc.softplus, gc.erf):
        assert fn(x).dtype == expected
    for fn in (gc.square, gc.abs, gc.sign, gc.relu, operator.neg):
        assert fn(x).dtype == dtype


def test_exp_of_int64_is_float64():
    x = np.array([0, 1, 2], np.int64)
    result, _ = compile_run(gc.exp, [x])
    assert result.dtype == np.float64
    np.testing.assert_allclose(result, [1.0, math.e, math.e ** 2], rtol=1e-15)


# ---- logarithms to a base ---------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("base", [2, 10.0, 0.5, math.e])
def test_log_base(dtype, base):
    x = sample(dtype, "pos")
    result, _ = compile_run(lambda t: gc.log(t, base=base), [x])
    expected = np.log(x.astype(np.float64)) / np.log(base)
    check(result, expected, float_result_dtype(dtype))


def test_log_base_none_is_natural_log():
    x = sample(F64, "pos")
    result, _ = compile_run(lambda t: gc.log(t, base=None), [x])
    check(result, np.log(x))


@pytest.mark.parametrize("xdtype,bdtype", [(F32, F32), (F64, F32), (F32, F64), (I32, F32)])
def test_log_base_tensor(xdtype, bdtype):
    x = sample(xdtype, "pos", shape=(3, 4))
    b = np.array([2.0, 3.0, 10.0, 0.25], bdtype)  # broadcasts along the last axis
    result, _ = compile_run(lambda t, u: gc.log(t, base=u), [x, b])
    expected_dtype = np.result_type(float_result_dtype(xdtype), bdtype)
    expected = np.log(x.astype(np.float64)) / np.log(b.astype(np.float64))
    check(result, expected, expected_dtype)


# ---- binary operators and functions -----------------------------------------------------

ARITH = [
    ("add", operator.add, np.add),
    ("sub", operator.sub, np.subtract),
    ("mul", operator.mul, np.multiply),
    ("truediv", operator.truediv, np.true_divide),
    ("pow", operator.pow, np.power),
    ("power", gc.power, np.power),
    ("maximum", gc.maximum, np.maximum),
    ("minimum", gc.minimum, np.minimum),
]
COMPARE = [
    ("lt", operator.lt, np.less),
    ("le", operator.le, np.less_equal),
    ("gt", operator.gt, np.greater),
    ("ge", operator.ge, np.greater_equal),
    ("equal", gc.equal, np.equal),
    ("not_equal", gc.not_equal, np.not_equal),
]
BINARY = ARITH + COMPARE
BINARY_IDS = [b[0] for b in BINARY]


def binary_operands(name, da, db, shape_a=(3, 4), shape_b=(3, 4), seed=0):
    """Operands in each op's domain: positive divisors, small non-negative int exponents."""
    rng = np.random.default_rng(seed)

    def draw(dtype, shape, role):
        if name in ("pow", "power"):
            if role == "b":
                vals = rng.integers(0, 4, size=shape)
            elif np.dtype(dtype).kind == "f":
                vals = rng.uniform(0.5, 2.0, size=shape)
            else:
                vals = rng.integers(-3, 4, size=shape)
        elif name == "truediv" and role == "b":
            vals = rng.integers(1, 5, size=shape) * rng.choice([-1, 1], size=shape)
            if np.dtype(dtype).kind == "f":
                vals = vals + rng.uniform(0, 0.9, size=shape)
        elif np.dtype(dtype).kind == "f":
            vals = np.round(rng.uniform(-4, 4, size=shape) * 2) / 2  # ties for comparisons
        else:
            vals = rng.integers(-4, 5, size=shape)
        return np.asarray(vals).astype(dtype)

    return draw(da, shape_a, "a"), draw(db, shape_b, "b")


@pytest.mark.parametrize("db", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("da", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name,op,ref", BINARY, ids=BINARY_IDS)
def test_binary_tensor_tensor(name, op, ref, da, db):
    a, b = binary_operands(name, da, db)
    result, out = compile_run(op, [a, b])
    expected = ref(a, b)  # numpy's own dtype promotion
    assert out.dtype == expected.dtype
    check(result, expected)


SCALARS = [2, -1, 1.5, 0.5, True]


# (integers to negative integer powers raise, in numpy too: tested on their own below)
SCALAR_CASES = [pytest.param(name, op, ref, dt, sc, id=f"{name}-{dt_id}-{sc!r}")
                for name, op, ref in BINARY
                for dt, dt_id in zip(DTYPES, DTYPE_IDS)
                for sc in SCALARS
                if not (name in ("pow", "power") and dt.kind == "i" and sc == -1)]


@pytest.mark.parametrize("name,op,ref,dtype,scalar", SCALAR_CASES)
def test_binary_with_python_scalar(name, op, ref, dtype, scalar):
    """Python numbers are weak (NEP 50): they adopt the tensor's dtype within its kind."""
    a, _ = binary_operands(name, dtype, dtype)
    result, out = compile_run(lambda t: op(t, scalar), [a])
    with np.errstate(invalid="ignore"):  # negative bases to fractional powers
        expected = ref(a, scalar)
    assert out.dtype == expected.dtype
    check(result, expected)


@pytest.mark.parametrize("scalar", SCALARS, ids=[repr(s) for s in SCALARS])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name,op,ref", [b for b in BINARY if b[0] not in ("power",)],
                         ids=[i for i in BINARY_IDS if i != "power"])
def test_binary_with_python_scalar_on_the_left(name, op, ref, dtype, scalar):
    if name == "truediv":
        a = sample(dtype, "pos", seed=3)
    elif name == "pow":
        a = sample(dtype, "pos", seed=3) % 4 if dtype.kind == "i" else sample(dtype, "any")
    else:
        a, _ = binary_operands(name, dtype, dtype)
    result, out = compile_run(lambda t: op(scalar, t), [a])
    with np.errstate(invalid="ignore"):  # negative bases to fractional powers
        expected = ref(scalar, a)
    assert out.dtype == expected.dtype
    check(result, expected)


@pytest.mark.parametrize("tensor_dtype,scalar,expected", [
    (F32, 1.5, F32),   # a Python float with a float32 tensor stays float32
    (F32, 2, F32),
    (F64, 2, F64),
    (I32, 1.5, F64),   # int32 tensor + Python float gives float64
    (I64, 1.5, F64),
    (I32, 2, I32),
    (I64, True, I64),
])
def test_weak_scalar_promotion_examples(tensor_dtype, scalar, expected):
    x = gc.placeholder((2,), tensor_dtype)
    assert (x + scalar).dtype == expected
    assert (scalar + x).dtype == expected
    assert (x * scalar).dtype == expected
    result = gc.function([x], x + scalar, backend="numpy")(np.array([1, 2], tensor_dtype))
    assert result.dtype == expected
    np.testing.assert_allclose(result, np.array([1, 2]) + scalar)


@pytest.mark.parametrize("da,db", [(I32, I32), (I64, I64), (I32, I64), (I64, I32)])
def test_int_divided_by_int_is_float64(da, db):
    a = np.array([7, -7, 1, 0], da)
    b = np.array([2, 2, 3, 5], db)
    result, out = compile_run(operator.truediv, [a, b])
    assert out.dtype == F64
    check(result, np.array([3.5, -3.5, 1 / 3, 0.0]), F64)


def test_int32_divided_by_python_int_is_float64():
    a = np.array([1, 3], np.int32)
    result, _ = compile_run(lambda t: t / 2, [a])
    check(result, np.array([0.5, 1.5]), F64)


def test_unary_minus_and_pos():
    a = np.array([[1.5, -2.0, 0.0]], np.float32)
    result, _ = compile_run(lambda t: [-t, +t, -(-t)], [a])  # noqa: B002 (neg of neg)
    check(result[0], -a)
    check(result[1], a)
    check(result[2], a)


# ---- general powers ---------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
def test_general_powers(dtype):
    u = sample(dtype, "pos", seed=4)
    v = sample(dtype, "any", seed=5)
    result, _ = compile_run(lambda s, t: [2.0 ** t, s ** t, s ** 0.5, s ** -1, s ** 2.5,
                                         gc.power(s, t)], [u, v])
    u64, v64 = u.astype(np.float64), v.astype(np.float64)
    for got, want in zip(result, [np.exp(v64 * np.log(2.0)), np.exp(v64 * np.log(u64)),
                                  np.sqrt(u64), 1.0 / u64, u64 * u64 * np.sqrt(u64),
                                  np.exp(v64 * np.log(u64))]):
        check(got, want, dtype)


def test_int_power_int_stays_int():
    a = np.array([-3, -1, 0, 2, 5], np.int64)
    result, _ = compile_run(lambda t: [t ** 3, 2 ** t[3:], t ** 0], [a])
    check(result[0], a * a * a)
    check(result[1], np.array([4, 32], np.int64))
    check(result[2], np.ones(5, np.int64))


INT_POW_BACKENDS = [("numpy", None), ("numpy", {"mode": "kernels"}), ("llvm", None),
                    pytest.param("cuda", {"emulate": True}, marks=pytest.mark.slow)]


@pytest.mark.parametrize("backend,options", INT_POW_BACKENDS,
                         ids=["interp", "kernels", "llvm", "cuda-emulated"])
def test_int_to_negative_int_power_raises_like_numpy(backend, options):
    optimize = OPTIMIZE[0]
    a = np.array([1, 2], np.int64)
    with pytest.raises(ValueError):
        np.power(a, -1)
    x = gc.placeholder((2,), "int64")
    f = gc.function([x], x ** -1, backend=backend, backend_options=options, optimize=optimize)
    with pytest.raises(ValueError, match="pow: integers to negative integer powers are not "
                                         r"allowed \(built at .*test_elementwise.py"):
        f(a)
    # exponents from data: checked at every call, the same words everywhere
    e = gc.placeholder((None, 3), "int32", name="e")
    g = gc.function([x, e], x[:, None] ** e, backend=backend,
                    backend_options=options, optimize=optimize)
    np.testing.assert_array_equal(g(a, np.array([[0, 1, 3], [2, 2, 2]], np.int32)),
                                  [[1, 1, 1], [4, 4, 4]])
    with pytest.raises(ValueError, match="negative integer powers"):
        g(a, np.array([[0, 1, 3], [2, -2, 2]], np.int32))


def test_a_failing_power_check_stores_no_update():
    x = gc.placeholder((3,), "int64", name="x")
    e = gc.placeholder((3,), "int64", name="e")
    p = gc.parameter(np.zeros(3, np.int64), name="p")
    f = gc.function([x, e], gc.sum(x ** e), updates={p: p + 1}, backend="llvm")
    assert int(f(np.array([1, 2, 3]), np.array([1, 1, 1]))) == 6 and p.value.tolist() == [1] * 3
    with pytest.raises(ValueError):
        f(np.array([1, 2, 3]), np.array([1, -1, 1]))
    assert p.value.tolist() == [1, 1, 1]  # the step raised before any update was stored


def test_float_powers_and_known_exponents_need_no_check():
    from graphc.schedule import schedule_graph
    x = gc.placeholder((4,), "float32")
    y = gc.placeholder((4,), "float32")
    n = gc.placeholder((4,), "int64")
    for out in (x ** y, n ** 3, n ** 0):
        f = gc.function([x, y, n], out, backend="numpy", optimize=OPTIMIZE[0])
        assert not any(k.kind == "value_check" for k in schedule_graph(f.graph).kernels)


# ---- where ------------------------------------------------------------------------------

@pytest.mark.parametrize("a_dt,b", [
    (F32, "f32"), (F32, "f64"), (I32, "i64"), (I32, 1.5), (F32, 0), (I64, 7), (F64, -2.5),
], ids=str)
def test_where_dtypes_and_values(a_dt, b):
    rng = np.random.default_rng(7)
    cond = rng.random((3, 4)) > 0.5
    a = rng.integers(-5, 5, size=(3, 4)).astype(a_dt)
    if isinstance(b, str):
        b_arr = rng.integers(-5, 5, size=(3, 4)).astype({"f32": F32, "f64": F64,
                                                         "i64": I64}[b])
        result, out = compile_run(gc.where, [cond, a, b_arr])
        expected = np.where(cond, a, b_arr)
    else:
        result, out = compile_run(lambda c, t: gc.where(c, t, b), [cond, a])
        expected = np.where(cond, a, b)
    assert out.dtype == expected.dtype
    check(result, expected)


def test_where_python_scalar_first_branch():
    cond = np.array([True, False, True])
    a = np.array([1.0, 2.0, 3.0], np.float32)
    result, _ = compile_run(lambda c, t: gc.where(c, 0.5, t), [cond, a])
    check(result, np.where(cond, np.float32(0.5), a))


@pytest.mark.parametrize("sc,sa,sb", [
    ((3, 1), (1, 4), ()),
    ((), (2, 3), (3,)),
    ((4,), (2, 1), (1,)),
    ((0, 3), (3,), ()),
    ((2, 1, 3), (1, 5, 1), (1, 3)),
])
def test_where_broadcasting(sc, sa, sb):
    rng = np.random.default_rng(8)
    cond = rng.random(sc) > 0.5
    a = rng.normal(size=sa)
    b = rng.normal(size=sb)
    result, _ = compile_run(gc.where, [cond, a, b])
    check(result, np.where(cond, a, b))


def test_where_numeric_condition_means_nonzero():
    c = np.array([0, 2, -1, 0], np.int32)
    a = np.arange(4.0)
    result, _ = compile_run(lambda s, t: gc.where(s, t, -t), [c, a])
    check(result, np.array([-0.0, 1.0, 2.0, -3.0]))


def test_where_of_comparison():
    x = np.array([-2.0, -0.5, 0.0, 0.5, 3.0])
    result, _ = compile_run(lambda t: gc.where(t > 0, t, 0.1 * t), [x])
    check(result, np.array([-0.2, -0.05, 0.0, 0.5, 3.0]))


# ---- comparisons ------------------------------------------------------------------------

def test_comparisons_give_bool_tensors():
    x = gc.placeholder((None, 2), "float32")
    y = gc.placeholder((2,), "int32")
    for t in (x < y, x <= 1, x > 1.5, x >= y, gc.equal(x, y), gc.not_equal(x, 0),
              1 < x, 2.5 >= x):
        assert t.dtype == BOOL
        assert t.shape == (None, 2)


def test_reflected_comparisons():
    a = np.array([0.0, 1.0, 2.0])
    result, _ = compile_run(lambda t: [1 < t, 1 <= t, 1 > t, 1 >= t], [a])
    check(result[0], 1 < a)
    check(result[1], 1 <= a)
    check(result[2], 1 > a)
    check(result[3], 1 >= a)


def test_comparisons_with_nan():
    a = np.array([np.nan, 1.0, np.nan])
    b = np.array([np.nan, np.nan, 1.0])
    result, _ = compile_run(lambda s, t: [s < t, s >= t, gc.equal(s, t), gc.not_equal(s, t)],
                            [a, b])
    check(result[0], a < b)
    check(result[1], a >= b)
    check(result[2], a == b)
    check(result[3], a != b)


def test_int_compared_with_python_float_is_exact():
    a = np.array([1, 2, 3], np.int64)
    result, _ = compile_run(lambda t: [t < 1.5, t >= 2.5, gc.equal(t, 2.0)], [a])
    check(result[0], np.array([True, False, False]))
    check(result[1], np.array([False, False, True]))
    check(result[2], np.array([False, True, False]))


def test_maximum_minimum_propagate_nan():
    a = np.array([np.nan, 1.0, -np.inf, 2.0])
    b = np.array([0.0, np.nan, 1.0, np.inf])
    result, _ = compile_run(lambda s, t: [gc.maximum(s, t), gc.minimum(s, t)], [a, b])
    check(result[0], np.array([np.nan, np.nan, 1.0, np.inf]))
    check(result[1], np.array([np.nan, np.nan, -np.inf, 2.0]))


# ---- broadcasting -----------------------------------------------------------------------

BROADCAST = [
    # static shape a, static shape b, run-time shape a, run-time shape b, static result
    ((3, 1), (1, 4), None, None, (3, 4)),
    ((), (2, 3), None, None, (2, 3)),
    ((2, 3), (), None, None, (2, 3)),
    ((), (), None, None, ()),
    ((4, 1, 3), (2, 1), None, None, (4, 2, 3)),
    ((0, 3), (3,), None, None, (0, 3)),
    ((0, 3), (1, 1), None, None, (0, 3)),
    ((2, 0), (2, 1), None, None, (2, 0)),
    ((1,), (0,), None, None, (0,)),
    ((0,), (), None, None, (0,)),
    ((5, 1, 0), (1, 3, 1), None, None, (5, 3, 0)),
    ((None, 3), (3,), (5, 3), (3,), (None, 3)),
    ((None, 3), (3,), (0, 3), (3,), (None, 3)),
    ((None, 1), (1, None), (3, 1), (1, 4), (None, None)),
    ((None,), (None,), (0,), (0,), (None,)),
    ((None,), (4,), (4,), (4,), (4,)),
    ((2, None), (), (2, 6), (), (2, None)),
]


@pytest.mark.parametrize("name,op,ref", [ARITH[0], ARITH[2], ARITH[3], ARITH[6], COMPARE[0]],
                         ids=["add", "mul", "truediv", "maximum", "lt"])
@pytest.mark.parametrize("sa,sb,ra,rb,static", BROADCAST, ids=[str(i) for i in range(len(
    BROADCAST))])
def test_broadcasting(name, op, ref, sa, sb, ra, rb, static):
    rng = np.random.default_rng(9)
    a = rng.uniform(1, 2, size=ra if ra is not None else sa).astype(np.float32)
    b = rng.uniform(1, 2, size=rb if rb is not None else sb)  # float64: promotes
    result, out = compile_run(op, [a, b], shapes=[sa, sb])
    assert out.shape == static
    expected = ref(a, b)
    assert result.shape == expected.shape
    check(result, expected)


@pytest.mark.parametrize("sa,sb", [((3,), (4,)), ((2, 3), (3, 2)), ((0,), (2,)),
                                   ((2, 1, 3), (4, 3, 1, 2))])
def test_incompatible_static_broadcast_raises_shape_error(sa, sb):
    a = gc.placeholder(sa)
    b = gc.placeholder(sb)
    for op in (operator.add, operator.truediv, gc.maximum, operator.lt):
        with pytest.raises(gc.ShapeError):
            op(a, b)


@pytest.mark.parametrize("sa,sb,ra,rb", [((None,), (None,), (1,), (4,)),
                                         ((None, None), (None,), (2, 1), (3,)),
                                         ((None,), (4,), (1,), (4,))])
def test_a_call_time_size_does_not_broadcast(sa, sb, ra, rb):
    """A size known only at call time is taken equal to the size it meets (checked once per
    call, as JAX's symbolic shapes do): size 1 there is an error, not a broadcast."""
    a = gc.placeholder(sa, name="a")
    b = gc.placeholder(sb, name="b")
    f = gc.function([a, b], a + b, backend="numpy")
    with pytest.raises(ValueError, match="must be equal"):
        f(np.ones(ra, np.float32), np.ones(rb, np.float32))


def test_incompatible_runtime_broadcast_raises_value_error():
    a = gc.placeholder((None,), name="a")
    b = gc.placeholder((None,), name="b")
    f = gc.function([a, b], a * b, backend="numpy")
    with pytest.raises(ValueError):
        f(np.ones(3, np.float32), np.ones(4, np.float32))
    with pytest.raises(ValueError, match="axis 0 of argument 'a' is 3 and axis 0 of argument "
                       "'b' is 1"):
        f(np.ones(3, np.float32), np.full(1, 2.0, np.float32))


@given(data=st.data(),
       shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3,
                                                min_side=0, max_side=3))
def test_broadcasting_property(data, shapes):
    """Random broadcastable shapes, with random dims left to call time (None)."""
    (sa, sb), result_shape = shapes.input_shapes, shapes.result_shape
    # (a size left to call time is not broadcast: None only where it equals the result's)
    static_a = tuple(None if d == result_shape[len(result_shape) - len(sa) + i]
                     and data.draw(st.booleans()) else d for i, d in enumerate(sa))
    static_b = tuple(None if d == result_shape[len(result_shape) - len(sb) + i]
                     and data.draw(st.booleans()) else d for i, d in enumerate(sb))
    a = data.draw(hnp.arrays(np.float64, sa, elements=st.floats(-10, 10)))
    b = data.draw(hnp.arrays(np.float64, sb, elements=st.floats(-10, 10)))
    result, out = compile_run(lambda s, t: [s + t, gc.maximum(s, t), s * t - 1.0],
                              [a, b], shapes=[static_a, static_b])
    for got, want in zip(result, [a + b, np.maximum(a, b), a * b - 1.0]):
        assert got.shape == result_shape
        check(got, want)
    for t in out:
        assert len(t.shape) == len(result_shape)
        assert all(s is None or s == r for s, r in zip(t.shape, result_shape))


@given(x=hnp.arrays(np.float32, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0,
                                                 max_side=4),
                    elements=st.floats(-20, 20, width=32)))
def test_composite_expression_property(x):
    """A chain of elementwise ops on float32 stays float32 and matches numpy."""
    result, out = compile_run(lambda t: gc.tanh(t) * 2.0 + gc.sigmoid(t) - gc.relu(-t) / 3.0,
                              [x])
    x64 = x.astype(np.float64)
    expected = np.tanh(x64) * 2.0 + _sigmoid_ref(x64) - np.maximum(-x64, 0) / 3.0
    assert out.dtype == F32
    check(result, expected, F32)
