"""Reductions, matmul, shape functions, gather, indexing, casts, the softmax family,
stop_gradient and the gc.nn losses, run through gc.function(backend="numpy") and compared
with independently written numpy expressions."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

import graphc as gc

F32, F64, I32, I64, BOOL = (np.dtype(d) for d in ("float32", "float64", "int32", "int64",
                                                    "bool"))
DTYPES = [F32, F64, I32, I64]
DTYPE_IDS = ["f32", "f64", "i32", "i64"]


# Every graph runs twice: through the whole optimizer pipeline and through none of it,
# so a rewrite that changes a value or a dtype shows up as a difference from numpy.
OPTIMIZE = [True]


@pytest.fixture(autouse=True, params=[True, False], ids=["opt", "noopt"])
def _optimize(request):
    OPTIMIZE[0] = request.param
    yield
    OPTIMIZE[0] = True


def compile_run(build, arrays, shapes=None):
    phs = [gc.placeholder(a.shape if shapes is None else shapes[i], a.dtype, name=f"arg{i}")
           for i, a in enumerate(arrays)]
    out = build(*phs)
    return gc.function(phs, out, backend="numpy", optimize=OPTIMIZE[0])(*arrays), out


def check(result, expected, dtype=None, rtol=None):
    dtype = np.dtype(expected.dtype if dtype is None else dtype)
    assert isinstance(result, np.ndarray)
    assert result.dtype == dtype, (result.dtype, dtype)
    assert result.shape == np.shape(expected), (result.shape, np.shape(expected))
    if dtype.kind == "f":
        tol = dict(rtol=1e-5, atol=1e-6) if dtype == F32 else dict(rtol=1e-12, atol=1e-12)
        if rtol is not None:
            tol["rtol"] = rtol
        np.testing.assert_allclose(result, np.asarray(expected, np.float64), equal_nan=True,
                                   **tol)
    else:
        np.testing.assert_array_equal(result, expected)


def data(dtype, shape, seed=0):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.normal(size=shape).astype(dtype)
    if np.dtype(dtype).kind == "b":
        return rng.random(shape) > 0.5
    return rng.integers(-9, 10, size=shape).astype(dtype)


# ---- reductions -------------------------------------------------------------------------

AXES = [None, 0, 1, 2, -1, -3, (0, 2), (-1, 0), (0, 1, 2), ()]


@pytest.mark.parametrize("keepdims", [False, True], ids=["flat", "keep"])
@pytest.mark.parametrize("axis", AXES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", ["sum", "mean", "max", "min"])
def test_reductions(name, dtype, axis, keepdims):
    x = data(dtype, (2, 3, 4))
    ref = {"sum": np.sum, "mean": np.mean, "max": np.max, "min": np.min}[name]
    expected = np.asarray(ref(x, axis=axis, keepdims=keepdims))
    fn = getattr(gc, name)
    result, out = compile_run(lambda t: fn(t, axis=axis, keepdims=keepdims), [x])
    assert out.shape == expected.shape and out.dtype == expected.dtype
    check(result, expected)
    method, _ = compile_run(lambda t: getattr(t, name)(axis=axis, keepdims=keepdims), [x])
    check(method, expected)


@pytest.mark.parametrize("dtype,expected", [(I32, I64), (BOOL, I64), (I64, I64), (F32, F32),
                                            (F64, F64)])
def test_sum_dtype_follows_numpy(dtype, expected):
    x = data(dtype, (3, 5), seed=2)
    assert np.sum(x).dtype == expected  # the rule itself
    result, out = compile_run(lambda t: [gc.sum(t), gc.sum(t, axis=0)], [x])
    assert out[0].dtype == expected
    check(result[0], np.asarray(np.sum(x)), expected)
    check(result[1], np.sum(x, axis=0), expected)


def test_sum_of_int32_does_not_overflow_int32():
    x = np.full((4,), 2 ** 30, np.int32)
    result, _ = compile_run(gc.sum, [x])
    check(result, np.asarray(4 * 2 ** 30, np.int64))


def test_bool_reductions():
    x = np.array([[True, False, True], [False, False, True]])
    result, _ = compile_run(lambda t: [gc.sum(t, axis=1), gc.max(t, axis=0), gc.min(t),
                                       gc.mean(t)], [x])
    check(result[0], np.array([2, 1], np.int64))
    check(result[1], np.array([True, False, True]))
    check(result[2], np.asarray(False))
    check(result[3], np.asarray(np.mean(x)))  # float64, like numpy


@pytest.mark.parametrize("axis", [None, 0, 1, -1, (0, 1)], ids=str)
def test_reductions_with_none_dims(axis):
    x = data(F32, (5, 3), seed=3)
    result, out = compile_run(lambda t: [gc.sum(t, axis), gc.mean(t, axis), gc.max(t, axis),
                                         gc.min(t, axis, keepdims=True)],
                              [x], shapes=[(None, 3)])
    expected = [np.sum(x, axis), np.mean(x, axis), np.max(x, axis),
                np.min(x, axis, keepdims=True)]
    for got, want in zip(result, expected):
        check(got, np.asarray(want))


def test_reductions_over_empty_axes():
    x = np.zeros((0, 3), np.float64)
    result, _ = compile_run(lambda t: [gc.sum(t, axis=0), gc.sum(t), gc.max(t, axis=1),
                                       gc.mean(t, axis=1)], [x], shapes=[(None, 3)])
    check(result[0], np.zeros(3))
    check(result[1], np.asarray(0.0))
    check(result[2], np.zeros((0,)))
    check(result[3], np.zeros((0,)))
    with np.errstate(invalid="ignore"):
        mean, _ = compile_run(lambda t: gc.mean(t, axis=0), [x], shapes=[(None, 3)])
    check(mean, np.full(3, np.nan))  # 0/0, as numpy's mean


def test_max_over_empty_axis_errors():
    with pytest.raises(ValueError):
        gc.max(gc.placeholder((0, 3)), axis=0)  # known statically
    x = gc.placeholder((None, 3))
    f = gc.function([x], gc.max(x, axis=0), backend="numpy")
    with pytest.raises(ValueError):
        f(np.zeros((0, 3), np.float32))


@pytest.mark.parametrize("keepdims", [False, True], ids=["flat", "keep"])
@pytest.mark.parametrize("axis", [None, 0, 1, 2, -1, -2], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_argmax(dtype, axis, keepdims):
    x = data(dtype, (3, 4, 5), seed=4)
    expected = np.asarray(np.argmax(x, axis=axis, keepdims=keepdims))
    result, out = compile_run(lambda t: gc.argmax(t, axis=axis, keepdims=keepdims), [x])
    assert out.dtype == I64 and out.shape == expected.shape
    check(result, expected.astype(np.int64))
    method, _ = compile_run(lambda t: t.argmax(axis=axis, keepdims=keepdims), [x])
    check(method, expected.astype(np.int64))


def test_argmax_ties_pick_the_first():
    x = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]])
    result, _ = compile_run(lambda t: [gc.argmax(t, axis=1), gc.argmax(t)], [x])
    check(result[0], np.array([1, 0], np.int64))
    check(result[1], np.asarray(1, np.int64))


def test_argmax_with_none_dims():
    x = data(F64, (6, 3), seed=5)
    result, _ = compile_run(lambda t: [gc.argmax(t, axis=0), gc.argmax(t)], [x],
                            shapes=[(None, 3)])
    check(result[0], np.argmax(x, axis=0).astype(np.int64))
    check(result[1], np.asarray(np.argmax(x), np.int64))


# ---- matmul -----------------------------------------------------------------------------

MATMUL = [
    # static a, static b, run-time a, run-time b
    ((4,), (4,), None, None),
    ((4,), (4, 3), None, None),
    ((2, 4), (4,), None, None),
    ((2, 4), (4, 3), None, None),
    ((5, 2, 4), (4, 3), None, None),
    ((2, 4), (5, 4, 3), None, None),
    ((5, 2, 4), (5, 4, 3), None, None),
    ((2, 1, 3, 4), (5, 4, 2), None, None),
    ((4,), (2, 4, 3), None, None),
    ((2, 3, 4), (4,), None, None),
    ((0, 4), (4, 3), None, None),
    ((2, 0), (0, 3), None, None),
    ((None, 4), (4, 3), (6, 4), None),
    ((None, None), (None, 2), (3, 5), (5, 2)),
    ((None,), (None,), (7,), (7,)),
    ((None, 2, 3), (3, None), (4, 2, 3), (3, 5)),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("sa,sb,ra,rb", MATMUL, ids=[str(i) for i in range(len(MATMUL))])
def test_matmul(sa, sb, ra, rb, dtype):
    a = data(dtype, ra or sa, seed=6)
    b = data(dtype, rb or sb, seed=7)
    expected = np.matmul(a, b)
    result, out = compile_run(lambda s, t: [s @ t, gc.matmul(s, t)], [a, b], shapes=[sa, sb])
    assert out[0].ndim == expected.ndim
    assert all(d is None or d == e for d, e in zip(out[0].shape, expected.shape))
    check(result[0], expected)
    check(result[1], expected)


def test_matmul_mixed_dtypes_promote():
    a = data(F32, (2, 3))
    b = data(F64, (3, 2))
    c = data(I32, (3, 2))
    result, _ = compile_run(lambda s, t, u: [s @ t, s @ u], [a, b, c])
    check(result[0], a @ b)
    check(result[1], a @ c)  # float32 with int32: float64, as numpy


def test_matmul_with_numpy_operand():
    w = data(F64, (3, 2), seed=8)
    a = data(F64, (4, 3))
    result, _ = compile_run(lambda t: [t @ w, w.T @ t.T], [a])
    check(result[0], a @ w)
    check(result[1], w.T @ a.T)


@pytest.mark.parametrize("sa,sb", [((2, 3), (4, 5)), ((3,), (4,)), ((2, 3), (2,)),
                                   ((2, 3, 4), (3, 4, 5)), ((3,), ()), ((), (3,)),
                                   ((4, 2, 3), (2, 3, 6))])
def test_matmul_shape_mismatch(sa, sb):
    with pytest.raises(gc.ShapeError):
        gc.placeholder(sa) @ gc.placeholder(sb)


def test_matmul_runtime_mismatch():
    a = gc.placeholder((None, None), name="a")
    b = gc.placeholder((None, 2), name="b")
    f = gc.function([a, b], a @ b, backend="numpy")
    with pytest.raises(ValueError):
        f(np.ones((2, 3), np.float32), np.ones((4, 2), np.float32))


# ---- reshape, transpose, broadcast_to, expand_dims, squeeze -----------------------------

@pytest.mark.parametrize("static,runtime,target", [
    ((2, 3, 4), None, (6, 4)),
    ((2, 3, 4), None, (-1,)),
    ((2, 3, 4), None, (4, -1)),
    ((2, 3, 4), None, (2, -1, 2)),
    ((2, 3, 4), None, (24, 1)),
    ((1,), None, ()),
    ((), None, (1, 1)),
    ((0, 3), None, (3, 0)),
    ((0, 3), None, (-1, 3)),
    ((None, 3), (4, 3), (-1,)),
    ((None, 3), (4, 3), (-1, 6)),
    ((None, 3), (4, 3), (2, -1)),
    ((None, 3), (4, 3), (12,)),
    ((None, None), (2, 5), (5, -1)),
    ((None, 3), (0, 3), (-1, 3)),
])
def test_reshape(static, runtime, target):
    x = data(F32, runtime or static)
    expected = x.reshape(target)
    result, out = compile_run(lambda t: [gc.reshape(t, target), t.reshape(target),
                                         t.reshape(*target) if target else t.reshape(())],
                              [x], shapes=[static])
    for got in result:
        check(got, expected)
    assert all(d is None or d == e for d, e in zip(out[0].shape, expected.shape))


def test_reshape_static_shape_with_minus_one():
    x = gc.placeholder((2, 3, 4))
    assert x.reshape(4, -1).shape == (4, 6)
    assert gc.placeholder((None, 3)).reshape(-1, 6).shape == (None, 6)


@pytest.mark.parametrize("target", [(5, 5), (-1, 5), (-1, -1), (7,), (-2, 12)])
def test_reshape_errors(target):
    with pytest.raises(ValueError):
        gc.reshape(gc.placeholder((2, 3, 4)), target)


@pytest.mark.parametrize("axes", [None, (0, 1, 2), (2, 0, 1), (1, 0, 2), (-1, 0, -2)],
                         ids=str)
def test_transpose(axes):
    x = data(F64, (2, 3, 4))
    expected = np.transpose(x, axes)
    result, out = compile_run(lambda t: [gc.transpose(t, axes), t.transpose(axes),
                                         t.transpose() if axes is None else t.transpose(*axes)],
                              [x])
    for got in result:
        check(got, expected)
    assert out[0].shape == expected.shape


@pytest.mark.parametrize("static,runtime", [((2, 3), None), ((4,), None), ((), None),
                                            ((None, 3), (5, 3)), ((2, 3, 4), None)])
def test_dot_T(static, runtime):
    x = data(I64, runtime or static)
    result, out = compile_run(lambda t: t.T, [x], shapes=[static])
    check(result, x.T)
    assert out.shape == tuple(reversed(static))


@pytest.mark.parametrize("axes", [(0, 0, 1), (0, 1), (0, 1, 3)], ids=str)
def test_transpose_bad_axes(axes):
    with pytest.raises(ValueError):
        gc.transpose(gc.placeholder((2, 3, 4)), axes)


@pytest.mark.parametrize("static,runtime,target", [
    ((3,), None, (2, 3)),
    ((1, 3), None, (4, 2, 3)),
    ((), None, (2, 2)),
    ((2, 1), None, (2, 5)),
    ((1,), None, (0,)),
    ((None,), (4,), (3, 4)),
    ((None, 1), (2, 1), (2, 3)),
])
def test_broadcast_to(static, runtime, target):
    x = data(F32, runtime or static)
    result, out = compile_run(lambda t: gc.broadcast_to(t, target), [x], shapes=[static])
    check(result, np.broadcast_to(x, target))
    assert out.shape == target
    assert result.flags.writeable  # a fresh array, not numpy's read-only view


@pytest.mark.parametrize("shape,target", [((3,), (4,)), ((2, 3), (3,)), ((2, 3), (3, 3)),
                                          ((3,), (3, 2))])
def test_broadcast_to_errors(shape, target):
    with pytest.raises(gc.ShapeError):
        gc.broadcast_to(gc.placeholder(shape), target)


@pytest.mark.parametrize("axis", [0, 1, 2, -1, -3, (0, 1), (0, 3), (-1, 0)], ids=str)
def test_expand_dims(axis):
    x = data(F64, (2, 3))
    expected = np.expand_dims(x, axis)
    result, out = compile_run(lambda t: gc.expand_dims(t, axis), [x])
    check(result, expected)
    assert out.shape == expected.shape


@pytest.mark.parametrize("axis", [3, -4, (0, 0)], ids=str)
def test_expand_dims_bad_axis(axis):
    with pytest.raises(ValueError):
        gc.expand_dims(gc.placeholder((2, 3)), axis)


@pytest.mark.parametrize("axis", [None, 0, 2, -1, (0, 2), (0, -1)], ids=str)
def test_squeeze(axis):
    x = data(F32, (1, 3, 1, 1))
    expected = np.squeeze(x, axis)
    result, out = compile_run(lambda t: [gc.squeeze(t, axis), t.squeeze(axis)], [x])
    check(result[0], expected)
    check(result[1], expected)
    assert out[0].shape == expected.shape


def test_squeeze_none_dim_of_size_one_at_call_time():
    x = data(F32, (1, 3))
    result, out = compile_run(lambda t: gc.squeeze(t, 0), [x], shapes=[(None, 3)])
    check(result, x[0])
    assert out.shape == (3,)


@pytest.mark.parametrize("axis", [1, (0, 1), 5], ids=str)
def test_squeeze_errors(axis):
    with pytest.raises(gc.ShapeError):
        gc.squeeze(gc.placeholder((1, 3)), axis)


# ---- concatenate, stack -----------------------------------------------------------------

@pytest.mark.parametrize("axis", [0, 1, 2, -1, -3])
def test_concatenate(axis):
    shapes = [[2, 3, 4], [2, 3, 4], [2, 3, 4]]
    for k, s in enumerate(shapes):
        s[axis] = k + 1
    arrays = [data(F64, s, seed=k) for k, s in enumerate(shapes)]
    expected = np.concatenate(arrays, axis=axis)
    result, out = compile_run(lambda *ts: gc.concatenate(list(ts), axis=axis), arrays)
    check(result, expected)
    assert out.shape == expected.shape
    tup, _ = compile_run(lambda *ts: gc.concatenate(ts, axis=axis), arrays)
    check(tup, expected)


def test_concatenate_mixed_dtypes_and_numpy_operands():
    a = data(F32, (2, 3))
    b = data(F64, (1, 3))
    c = data(I32, (2, 3))
    const = np.ones((1, 3), np.float32)
    result, _ = compile_run(lambda s, t, u: [gc.concatenate([s, t]), gc.concatenate([s, u]),
                                             gc.concatenate([s, const])], [a, b, c])
    check(result[0], np.concatenate([a, b]))
    check(result[1], np.concatenate([a, c]))
    check(result[2], np.concatenate([a, const]))


def test_concatenate_with_none_dims():
    a = data(F32, (2, 3))
    b = data(F32, (4, 3))
    result, out = compile_run(lambda s, t: [gc.concatenate([s, t]), gc.concatenate([s, s], 1)],
                              [a, b], shapes=[(None, 3), (None, 3)])
    check(result[0], np.concatenate([a, b]))
    check(result[1], np.concatenate([a, a], 1))
    assert out[0].shape == (None, 3) and out[1].shape == (None, 6)


def test_concatenate_empty_parts():
    a = data(F64, (0, 3))
    b = data(F64, (2, 3))
    result, _ = compile_run(lambda s, t: gc.concatenate([s, t, s]), [a, b])
    check(result, b)


@pytest.mark.parametrize("shapes,axis", [([(2, 3), (2, 4)], 0), ([(2, 3), (3,)], 0),
                                         ([(2, 3), (2, 3)], 2), ([(), ()], 0)])
def test_concatenate_errors(shapes, axis):
    with pytest.raises(gc.ShapeError):
        gc.concatenate([gc.placeholder(s) for s in shapes], axis=axis)


@pytest.mark.parametrize("axis", [0, 1, 2, -1, -2, -3])
def test_stack(axis):
    arrays = [data(F32, (2, 3), seed=k) for k in range(3)]
    expected = np.stack(arrays, axis=axis)
    result, out = compile_run(lambda *ts: gc.stack(list(ts), axis=axis), arrays)
    check(result, expected)
    assert out.shape == expected.shape


def test_stack_scalars_and_none_dims():
    a = np.float64(1.5) * np.ones(())
    b = np.asarray(-2.0)
    result, _ = compile_run(lambda s, t: gc.stack([s, t, s]), [a, b])
    check(result, np.array([1.5, -2.0, 1.5]))
    x = data(F32, (4, 2))
    result, out = compile_run(lambda t: gc.stack([t, 2.0 * t], axis=1), [x],
                              shapes=[(None, 2)])
    check(result, np.stack([x, 2.0 * x], axis=1))
    assert out.shape == (None, 2, 2)


@pytest.mark.parametrize("shapes,axis", [([(2, 3), (3, 2)], 0), ([(2, 3), (2, 3)], 3),
                                         ([(2, 3), (2,)], 0)])
def test_stack_errors(shapes, axis):
    with pytest.raises(gc.ShapeError):
        gc.stack([gc.placeholder(s) for s in shapes], axis=axis)


# ---- take, one_hot ----------------------------------------------------------------------

@pytest.mark.parametrize("idx_dtype", [I32, I64], ids=["i32", "i64"])
@pytest.mark.parametrize("axis,indices", [
    (0, [2, 0, -1, -3]),
    (1, [[0, -1], [3, 1]]),
    (-1, [4, -5, 0]),
    (2, 3),
    (None, [0, 59, -1, -60, 17]),
    (0, np.zeros((0,), int)),
], ids=["ax0", "ax1_2d", "ax-1", "scalar_idx", "flat", "empty"])
def test_take(axis, indices, idx_dtype):
    x = data(F64, (3, 4, 5))
    idx = np.asarray(indices, idx_dtype)
    expected = np.take(x, idx, axis=axis)
    result, out = compile_run(lambda t, i: gc.take(t, i, axis=axis), [x, idx])
    check(result, expected)
    assert out.shape == expected.shape
    # Indices given as a numpy literal instead of a placeholder.
    const, _ = compile_run(lambda t: gc.take(t, idx, axis=axis), [x])
    check(const, expected)


@pytest.mark.parametrize("axis,bad", [(0, 3), (0, -4), (1, 4), (None, 60), (None, -61)])
def test_take_out_of_range_raises_index_error_at_call_time(axis, bad):
    x = gc.placeholder((3, 4), name="x")
    i = gc.placeholder((None,), "int64", name="i")
    f = gc.function([x, i], gc.take(x, i, axis=axis), backend="numpy")
    xv = data(F32, (3, 4))
    f(xv, np.array([0, -1]))  # in range: fine
    with pytest.raises(IndexError):
        f(xv, np.array([0, bad]))


def test_take_with_none_dims():
    x = data(F32, (6, 2))
    idx = np.array([5, 0, -6])
    result, out = compile_run(lambda t, i: gc.take(t, i, axis=0), [x, idx],
                              shapes=[(None, 2), (None,)])
    check(result, x[idx])
    assert out.shape == (None, 2)


@pytest.mark.parametrize("dtype", [F32, F64, I32, I64, BOOL], ids=DTYPE_IDS + ["bool"])
@pytest.mark.parametrize("labels,depth", [([0, 3, 1, 3], 4), ([[2, 0, 1], [1, 1, 0]], 3),
                                          (2, 5), (np.zeros((0,), int), 2)],
                         ids=["1d", "2d", "0d", "empty"])
def test_one_hot(labels, depth, dtype):
    lab = np.asarray(labels, np.int64)
    expected = np.eye(depth, dtype=dtype)[lab]
    result, out = compile_run(lambda t: gc.one_hot(t, depth, dtype=dtype), [lab])
    check(result, expected)
    assert out.shape == lab.shape + (depth,)


def test_one_hot_default_dtype_and_int32_labels():
    lab = np.array([1, 0, 2], np.int32)
    result, _ = compile_run(lambda t: gc.one_hot(t, 3), [lab], shapes=[(None,)])
    check(result, np.eye(3, dtype=np.float32)[lab])


# ---- indexing ---------------------------------------------------------------------------

IDX = np.array([[2, 0], [1, -1]])
KEYS = [
    1, -1, -3, (0, 2), (-1, -4, 4), (1, 2, 3),
    slice(None), slice(1, None), slice(None, -1), slice(None, None, 2), slice(None, None, -1),
    slice(-1, 0, -2), slice(5, -7, -1), slice(10, 20), slice(-100, 100, 3),
    (slice(None), slice(1, 3)), (slice(None), slice(None, None, -2), slice(4, 0, -3)),
    None, (None, 1), (1, None, slice(None)), (slice(None), None, None, 2),
    Ellipsis, (Ellipsis, 0), (0, Ellipsis), (Ellipsis, None), (1, Ellipsis, slice(None, None, -1)),
    (None, Ellipsis, None), (slice(None), Ellipsis, 2, None),
    IDX, [2, 0, 1], (slice(None), [3, -1]), (Ellipsis, np.array([0, 4, -5])),
    (0, slice(None), IDX), (IDX, slice(None), 1), (slice(None), IDX, 0), (1, IDX),
    (IDX, None), (None, IDX), (0, None, [1, 2]), (slice(None), 0, Ellipsis, IDX),
    (slice(None, None, -1), 1, IDX), (IDX, slice(1, None, 2)), (slice(None), np.array(3)),
]


@pytest.mark.parametrize("key", KEYS, ids=[str(i) for i in range(len(KEYS))])
def test_indexing_matches_numpy(key):
    x = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    expected = x[key]
    result, out = compile_run(lambda t: t[key], [x])
    check(result, np.asarray(expected))
    assert out.shape == np.shape(expected)


@pytest.mark.parametrize("key", [0, -1, slice(None, None, -1), (slice(1, None), 1),
                                 (Ellipsis, -2), (None, slice(None), slice(None, None, 2)),
                                 ([0, -1], 0), (slice(None), [2, 0, 1])],
                         ids=str)
def test_indexing_with_none_dims(key):
    x = np.arange(15, dtype=np.int64).reshape(5, 3)
    result, _ = compile_run(lambda t: t[key], [x], shapes=[(None, 3)])
    check(result, np.asarray(x[key]))


@pytest.mark.parametrize("idx_shape", [(), (3,), (2, 2)], ids=str)
def test_indexing_with_integer_tensor(idx_shape):
    x = data(F64, (4, 4))
    idx = np.random.default_rng(1).integers(-4, 4, size=idx_shape).astype(np.int32)
    result, out = compile_run(lambda t, i: [t[i], t[:, i], t[i, 1:], t[-1, i]], [x, idx])
    check(result[0], x[idx])
    check(result[1], x[:, idx])
    check(result[2], x[idx, 1:])
    check(result[3], x[-1, idx])


def test_index_tensor_out_of_range_raises_at_call_time():
    x = gc.placeholder((4, 3), name="x")
    i = gc.placeholder((None,), "int64", name="i")
    f = gc.function([x, i], x[i], backend="numpy")
    with pytest.raises(IndexError):
        f(data(F32, (4, 3)), np.array([1, 4]))


@pytest.mark.parametrize("key", [3, -4, (0, 5), (0, -6), (slice(None), 7)], ids=str)
def test_out_of_range_int_index_on_known_dim_raises_at_build_time(key):
    x = gc.placeholder((3, 5))
    with pytest.raises(IndexError):
        x[key]


@pytest.mark.parametrize("key", [(0, 0, 0), (Ellipsis, 0, 0, 0), (Ellipsis, Ellipsis)],
                         ids=str)
def test_bad_index_count(key):
    with pytest.raises(IndexError):
        gc.placeholder((3, 5))[key]


@pytest.mark.parametrize("make_key", [
    lambda: True,
    lambda: False,
    lambda: (0, True),
    lambda: gc.placeholder((3,), "bool"),
    lambda: gc.placeholder((3, 5)) > 0,
], ids=["True", "False", "tuple_bool", "bool_tensor", "mask"])
def test_boolean_index_raises_type_error(make_key):
    # (masks whose values are known when the graph is built work: tests/test_indexing_multi.py)
    x = gc.placeholder((3, 5))
    with pytest.raises(TypeError):
        x[make_key()]


@pytest.mark.parametrize("key", [1.5, "a", (0, 1.0), slice(0.5, 2)], ids=str)
def test_non_integer_index_raises(key):
    with pytest.raises((TypeError, IndexError)):
        gc.placeholder((3, 5))[key]


# ---- astype -----------------------------------------------------------------------------

@pytest.mark.parametrize("target", [F32, F64, I32, I64, BOOL], ids=DTYPE_IDS + ["bool"])
@pytest.mark.parametrize("source", [F32, F64, I32, I64, BOOL], ids=DTYPE_IDS + ["bool"])
def test_astype(source, target):
    x = np.array([[1.7, -1.7, 0.0], [2.5, -0.5, 3.0]]) if np.dtype(source).kind == "f" else \
        np.array([[1, -1, 0], [2, 0, 3]])
    x = x.astype(source)
    result, out = compile_run(lambda t: [t.astype(target), gc.astype(t, target),
                                         t.astype(str(target))], [x])
    assert out[0].dtype == target
    for got in result:
        check(got, x.astype(target))


# ---- softmax family ---------------------------------------------------------------------

def _log_softmax_ref(x, axis):
    x = x.astype(np.float64)
    m = np.max(x, axis=axis, keepdims=True)
    return x - m - np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))


def _logsumexp_ref(x, axis, keepdims=False):
    x = x.astype(np.float64)
    m = np.max(x, axis=axis, keepdims=True)
    out = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis)


LOGITS = {
    "normal": np.random.default_rng(11).normal(size=(4, 5)) * 3,
    "extreme": np.array([[1e4, -1e4, 0.0, 1e4 - 1, 5.0], [-1e4, -1e4, -1e4, -1e4, -1e4],
                         [1e4, 1e4, 1e4, 1e4, 1e4], [3.0, -1e4, 1e4, 2.0, -3.0]]),
}


@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize("kind", list(LOGITS))
@pytest.mark.parametrize("axis", [-1, 0, 1, -2])
def test_softmax_and_log_softmax(kind, axis, dtype):
    x = LOGITS[kind].astype(dtype)
    result, out = compile_run(lambda t: [gc.softmax(t, axis=axis), gc.log_softmax(t, axis=axis)],
                              [x])
    logp = _log_softmax_ref(x, axis)
    assert np.isfinite(result[0]).all() and np.isfinite(result[1]).all()
    check(result[0], np.exp(logp), dtype)
    check(result[1], logp, dtype)
    np.testing.assert_allclose(result[0].sum(axis=axis), 1.0, rtol=1e-5)


def test_softmax_default_axis_is_last_and_int_input_is_float64():
    x = np.array([[1, 2, 3], [0, 0, 0]], np.int32)
    result, out = compile_run(lambda t: [gc.softmax(t), gc.log_softmax(t), gc.logsumexp(t)],
                              [x])
    assert [o.dtype for o in out] == [F64, F64, F64]
    check(result[0], np.exp(_log_softmax_ref(x, -1)), F64)
    check(result[1], _log_softmax_ref(x, -1), F64)
    check(result[2], np.asarray(_logsumexp_ref(x, None)), F64)


@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize("kind", list(LOGITS))
@pytest.mark.parametrize("keepdims", [False, True], ids=["flat", "keep"])
@pytest.mark.parametrize("axis", [None, 0, 1, -1, (0, 1)], ids=str)
def test_logsumexp(axis, keepdims, kind, dtype):
    x = LOGITS[kind].astype(dtype)
    result, out = compile_run(lambda t: gc.logsumexp(t, axis=axis, keepdims=keepdims), [x])
    expected = np.asarray(_logsumexp_ref(x, axis, keepdims))
    assert np.isfinite(result).all()
    assert out.shape == expected.shape
    check(result, expected, dtype)


def test_logsumexp_of_all_minus_inf_is_minus_inf():
    x = np.array([[-np.inf, -np.inf], [0.0, -np.inf]])
    result, _ = compile_run(lambda t: gc.logsumexp(t, axis=1), [x])
    check(result, np.array([-np.inf, 0.0]))


def test_softmax_with_none_dims_and_empty_batch():
    x = LOGITS["normal"].astype(np.float32)
    f_out, _ = compile_run(lambda t: gc.softmax(t), [x], shapes=[(None, 5)])
    check(f_out, np.exp(_log_softmax_ref(x, -1)), F32)
    empty = np.zeros((0, 5), np.float32)
    e_out, _ = compile_run(lambda t: [gc.softmax(t), gc.logsumexp(t, axis=1)], [empty],
                           shapes=[(None, 5)])
    check(e_out[0], empty)
    check(e_out[1], np.zeros((0,), np.float32))


def test_stop_gradient_forward_is_identity():
    x = data(F32, (3, 2))
    i = data(I64, (4,))
    result, out = compile_run(lambda t, u: [gc.stop_gradient(t), gc.stop_gradient(u) * 2,
                                            gc.stop_gradient(t * 3.0)], [x, i])
    check(result[0], x)
    check(result[1], i * 2)
    check(result[2], x * np.float32(3.0))
    assert out[0].shape == (3, 2) and out[0].dtype == F32


# ---- losses -----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", [(5,), (4, 3), (2, 3, 2), ()], ids=str)
def test_mse(shape, dtype):
    p = data(dtype, shape, seed=1)
    t = data(dtype, shape, seed=2)
    result, out = compile_run(gc.nn.mse, [p, t])
    p64, t64 = p.astype(np.float64), t.astype(np.float64)
    check(result, np.asarray(np.mean((p64 - t64) ** 2)), dtype)
    assert out.shape == ()


def test_mse_broadcasts_target_and_takes_numpy_target():
    p = data(F64, (4, 3))
    t = data(F64, (3,))
    result, _ = compile_run(lambda s: gc.nn.mse(s, t), [p])
    check(result, np.asarray(np.mean((p - t) ** 2)))


def _huber_ref(p, t, delta):
    r = np.abs(p.astype(np.float64) - t.astype(np.float64))
    return np.mean(np.where(r <= delta, 0.5 * r * r, delta * (r - 0.5 * delta)))


@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize("delta", [1.0, 0.5, 2.0, 1e-3])
def test_huber(delta, dtype):
    rng = np.random.default_rng(3)
    p = (rng.normal(size=(6, 4)) * 2).astype(dtype)
    t = (rng.normal(size=(6, 4)) * 2).astype(dtype)
    result, _ = compile_run(lambda s, u: gc.nn.huber(s, u, delta=delta), [p, t])
    check(result, np.asarray(_huber_ref(p, t, delta)), dtype)


def test_huber_default_delta_and_both_regimes():
    p = np.array([0.0, 0.5, 1.0, 3.0, -4.0])
    t = np.zeros(5)
    result, _ = compile_run(gc.nn.huber, [p, t])
    # 1/2 r^2 for |r| <= 1: 0, .125, .5; |r| - 1/2 beyond: 2.5, 3.5
    check(result, np.asarray((0 + 0.125 + 0.5 + 2.5 + 3.5) / 5))


def _cross_entropy_ref(logits, probs):
    return np.mean(-np.sum(_log_softmax_ref(logits, -1) * probs, axis=-1))


@pytest.mark.parametrize("label_dtype", [I32, I64], ids=["i32", "i64"])
@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize("kind", list(LOGITS))
def test_cross_entropy_integer_labels(kind, dtype, label_dtype):
    logits = LOGITS[kind].astype(dtype)
    labels = np.array([0, 2, 4, 1], label_dtype)
    result, out = compile_run(gc.nn.cross_entropy, [logits, labels], shapes=[(None, 5), (None,)])
    logp = _log_softmax_ref(logits, -1)
    expected = np.mean(-logp[np.arange(4), labels])
    assert out.shape == () and out.dtype == dtype
    assert np.isfinite(result)
    check(result, np.asarray(expected), dtype)


@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
def test_cross_entropy_one_hot_and_probability_labels(dtype):
    logits = LOGITS["normal"].astype(dtype)
    labels = np.array([3, 0, 0, 4])
    onehot = np.eye(5, dtype=dtype)[labels]
    probs = np.random.default_rng(5).dirichlet(np.ones(5), size=4).astype(dtype)
    result, _ = compile_run(lambda s, a, b: [gc.nn.cross_entropy(s, a),
                                             gc.nn.cross_entropy(s, b)],
                            [logits, onehot, probs])
    logp = _log_softmax_ref(logits, -1)
    check(result[0], np.asarray(np.mean(-logp[np.arange(4), labels])), dtype)
    check(result[1], np.asarray(_cross_entropy_ref(logits, probs)), dtype)


def test_cross_entropy_one_hot_equals_integer_labels():
    logits = LOGITS["extreme"]
    labels = np.array([1, 0, 3, 2])
    result, _ = compile_run(lambda s, i: [gc.nn.cross_entropy(s, i),
                                          gc.nn.cross_entropy(s, gc.one_hot(i, 5, "float64"))],
                            [logits, labels])
    np.testing.assert_allclose(result[0], result[1], rtol=1e-12)
    # -log softmax by hand: row 0 has two large logits 1 apart, rows 1 and 2 are uniform,
    # row 3's label holds the one dominant logit.
    np.testing.assert_allclose(result[0], np.mean([2e4 + np.log1p(np.exp(-1.0)), np.log(5),
                                                   np.log(5), 0.0]), rtol=1e-12)


@given(x=hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=3, min_side=1,
                                                 max_side=4),
                    elements=st.floats(-50, 50)),
       data_=st.data())
def test_reductions_property(x, data_):
    """Random shapes and axis sets: sum/max/logsumexp match numpy, keepdims or not."""
    axes = data_.draw(st.lists(st.integers(-x.ndim, x.ndim - 1), unique_by=lambda a: a % x.ndim,
                               max_size=x.ndim))
    axis = tuple(axes)
    keep = data_.draw(st.booleans())
    result, _ = compile_run(lambda t: [gc.sum(t, axis, keep), gc.max(t, axis, keep),
                                       gc.logsumexp(t, axis, keep)], [x])
    check(result[0], np.asarray(np.sum(x, axis=axis, keepdims=keep)))
    check(result[1], np.asarray(np.max(x, axis=axis, keepdims=keep)))
    m = np.max(x, axis=axis, keepdims=True)
    lse = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    check(result[2], lse if keep else lse.reshape(np.sum(x, axis=axis).shape))


@pytest.mark.parametrize("backend,options", [("numpy", None), ("numpy", {"mode": "kernels"}),
                                             ("llvm", None)], ids=["interp", "kernels", "llvm"])
@pytest.mark.parametrize("axis", [0, -1])
def test_gradient_of_concatenate_of_parts_sized_at_run_time(backend, options, axis):
    """Every part's size along the axis known only at call time (one of them empty): each
    part's gradient is found at its run-time place (concat_part), to second order too."""
    def shape(n):
        return (n, 3) if axis == 0 else (3, n)
    a, b, c = (gc.placeholder(shape(None), "float64", name=n) for n in "abc")
    y = gc.concatenate([gc.sin(a), b * b, c], axis=axis)
    loss = gc.sum(y * y)
    ga, gb, gc_ = gc.grad(loss, [a, b, c])
    ga2, gb2 = gc.grad(gc.sum(ga), [a, b])  # d/da sum(sin(2a)) = 2 cos(2a); b: none
    f = gc.function([a, b, c], [ga, gb, gc_, ga2, gb2], backend=backend,
                    backend_options=options)
    rng = np.random.default_rng(7)
    for sizes in ((4, 2, 1), (1, 0, 3)):
        av, bv, cv = (rng.normal(size=shape(n)) for n in sizes)
        got = f(av, bv, cv)
        want = [2 * np.sin(av) * np.cos(av), 4 * bv ** 3, 2 * cv, 2 * np.cos(2 * av),
                np.zeros_like(bv)]
        for g, w in zip(got, want):
            assert g.shape == w.shape
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)
