"""Every error path: shape errors while building (ValueError/gc.ShapeError naming the op, the
shapes and the user's file:line), dtype errors (TypeError), gc.function's checks of its
arguments and of each call, Parameter.value, backends, passes and placeholder shapes."""
from __future__ import annotations

import os
import re

import numpy as np
import pytest

import graphc as gc

THIS_FILE = os.path.basename(__file__)


def ph(shape, dtype="float32", name=None):
    return gc.placeholder(shape, dtype, name=name)


def shape_forms(shape):
    """The ways a message may spell a shape: graphc's f32[2,3] or numpy's (2, 3)."""
    dims = ["None" if d is None else str(d) for d in shape]
    short = ["?" if d is None else str(d) for d in shape]
    tup = "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"
    return {"[" + ",".join(short) + "]", tup}


def assert_names_shapes(message, shapes):
    for s in shapes:
        assert any(form in message for form in shape_forms(s)), (s, message)


# ---- shape errors while building --------------------------------------------------------

# id, builder (one line: its line is where the error must point), op names, shapes named
SHAPE_ERRORS = [
    ("add", lambda: ph((2, 3)) + ph((4, 3)), ("add",), [(2, 3), (4, 3)]),
    ("sub", lambda: ph((2, 3)) - ph((3, 2)), ("sub", "subtract"), [(2, 3), (3, 2)]),
    ("mul", lambda: ph((5,)) * ph((7,)), ("mul", "multiply"), [(5,), (7,)]),
    ("div", lambda: ph((5, 1)) / ph((2, 7)), ("div", "divide", "truediv"), [(5, 1), (2, 7)]),
    ("chained", lambda: ph((5, 1)) / ph((1, 7)) + ph((3,)), ("add",), [(5, 7), (3,)]),
    ("pow", lambda: ph((2, 3)) ** ph((4,)), ("pow", "power"), [(2, 3), (4,)]),
    ("maximum", lambda: gc.maximum(ph((2, 3)), ph((2, 2))), ("maximum",), [(2, 3), (2, 2)]),
    ("less", lambda: ph((6,)) < ph((4,)), ("less",), [(6,), (4,)]),
    ("where", lambda: gc.where(ph((2, 3)) > 0, ph((2, 3)), ph((4, 3))), ("where",),
     [(2, 3), (4, 3)]),
    ("matmul", lambda: ph((2, 3)) @ ph((4, 5)), ("matmul",), [(2, 3), (4, 5)]),
    ("matmul_batch", lambda: ph((2, 3, 4)) @ ph((3, 4, 5)), ("matmul",), [(2, 3, 4), (3, 4, 5)]),
    ("matmul_scalar", lambda: gc.matmul(ph(()), ph((3, 3))), ("matmul",), [(), (3, 3)]),
    ("reshape", lambda: ph((2, 3)).reshape(4, 2), ("reshape",), [(2, 3), (4, 2)]),
    ("reshape_minus1", lambda: gc.reshape(ph((2, 3)), (4, -1)), ("reshape",), [(2, 3)]),
    ("concatenate", lambda: gc.concatenate([ph((2, 3)), ph((2, 4))]), ("concatenate",),
     [(2, 3), (2, 4)]),
    ("concatenate_rank", lambda: gc.concatenate([ph((2, 3)), ph((3,))]), ("concatenate",),
     [(2, 3), (3,)]),
    ("stack", lambda: gc.stack([ph((2, 3)), ph((3, 2))]), ("stack",), [(2, 3), (3, 2)]),
    ("stack_axis", lambda: gc.stack([ph((2, 3)), ph((2, 3))], axis=3), ("stack",), [(2, 3)]),
    ("broadcast_to", lambda: gc.broadcast_to(ph((3,)), (4,)), ("broadcast_to",), [(3,), (4,)]),
    ("squeeze", lambda: gc.squeeze(ph((2, 3)), 0), ("squeeze",), [(2, 3)]),
    ("squeeze_axis", lambda: gc.squeeze(ph((1, 3)), 2), ("squeeze",), [(1, 3)]),
    ("transpose", lambda: gc.transpose(ph((2, 3, 4)), (0, 1)), ("transpose",), [(2, 3, 4)]),
    ("expand_dims", lambda: gc.expand_dims(ph((2, 3)), 5), ("expand_dims",), [(2, 3)]),
    ("sum_axis", lambda: gc.sum(ph((2, 3)), axis=2), ("sum",), [(2, 3)]),
    ("mean_axis", lambda: ph((2, 3)).mean(axis=-3), ("mean", "sum"), [(2, 3)]),
    ("max_axis", lambda: gc.max(ph((2, 3)), axis=(0, 0)), ("max",), [(2, 3)]),
    ("argmax_axis", lambda: gc.argmax(ph((2, 3)), axis=2), ("argmax",), [(2, 3)]),
    ("take_axis", lambda: gc.take(ph((2, 3)), np.array([0]), axis=2), ("take",), [(2, 3)]),
    ("softmax_axis", lambda: gc.softmax(ph((2, 3)), axis=2), ("log_softmax", "softmax"),
     [(2, 3)]),
    ("logsumexp_axis", lambda: gc.logsumexp(ph((2, 3)), axis=-3), ("logsumexp",), [(2, 3)]),
    ("none_dims", lambda: ph((None, 3)) + ph((None, 4)), ("add",), [(None, 3), (None, 4)]),
]


@pytest.mark.parametrize("build,ops,shapes", [c[1:] for c in SHAPE_ERRORS],
                         ids=[c[0] for c in SHAPE_ERRORS])
def test_build_time_shape_errors(build, ops, shapes):
    with pytest.raises(gc.ShapeError) as info:
        build()
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert any(re.search(rf"\b{op}\b", message) for op in ops), message
    assert_names_shapes(message, shapes)
    where = re.search(rf"{re.escape(THIS_FILE)}:(\d+)", message)
    assert where, message
    assert int(where.group(1)) == build.__code__.co_firstlineno, message


def test_shape_error_points_at_the_line_in_a_helper():
    def layer(x, w):
        return x @ w  # the line that builds the bad node

    line = layer.__code__.co_firstlineno + 1
    with pytest.raises(ValueError, match=rf"{re.escape(THIS_FILE)}:{line}\b"):
        layer(ph((8, 3)), ph((4, 2)))


def test_mse_shape_mismatch():
    with pytest.raises(ValueError):
        gc.nn.mse(ph((2, 3)), ph((3, 2)))


def test_cross_entropy_label_shape_errors():
    with pytest.raises(ValueError):
        gc.nn.cross_entropy(ph((4, 5)), ph((4, 2), "int64"))
    with pytest.raises(ValueError):
        gc.nn.cross_entropy(ph((4, 5)), ph((4, 6)))


# ---- dtype errors -----------------------------------------------------------------------

DTYPE_ERRORS = [
    ("take_float_indices", lambda: gc.take(ph((3,)), ph((2,), "float32"))),
    ("take_float_numpy", lambda: gc.take(ph((3,)), np.array([0.0]))),
    ("one_hot_float", lambda: gc.one_hot(ph((3,)), 4)),
    ("matmul_bool", lambda: gc.matmul(ph((2, 2), "bool"), ph((2, 2), "bool"))),
    ("neg_bool", lambda: -ph((2,), "bool")),
    ("exp_str", lambda: gc.exp("a")),
    ("add_str", lambda: ph((2,)) + "a"),
    ("radd_str", lambda: "a" + ph((2,))),
    ("add_none", lambda: ph((2,)) + None),
    ("add_complex", lambda: ph((2,)) * 1j),
    ("add_complex_array", lambda: ph((2,)) + np.ones(2, complex)),
    ("add_object", lambda: ph((2,)) + object()),
    ("where_str", lambda: gc.where(ph((2,), "bool"), "a", 1.0)),
    ("placeholder_float16", lambda: ph((2,), "float16")),
    ("placeholder_complex", lambda: ph((2,), np.complex64)),
    ("placeholder_not_dtype", lambda: ph((2,), "banana")),
    ("astype_complex", lambda: ph((2,)).astype("complex64")),
    ("astype_uint8", lambda: gc.astype(ph((2,)), np.uint8)),
    ("constant_complex", lambda: gc.constant(1j)),
    ("constant_str", lambda: gc.constant("abc")),
    ("constant_float16", lambda: gc.constant(np.ones(2, np.float16))),
    ("parameter_str", lambda: gc.parameter("abc")),
    ("parameter_complex", lambda: gc.parameter(np.ones(2, complex))),
    ("bool_of_tensor", lambda: bool(ph((2,)) > 0)),
    ("iterate_tensor", lambda: list(ph((2,)))),
]


@pytest.mark.parametrize("build", [c[1] for c in DTYPE_ERRORS], ids=[c[0] for c in DTYPE_ERRORS])
def test_dtype_errors_are_type_errors(build):
    with pytest.raises(TypeError):
        build()


def test_dtype_error_class():
    with pytest.raises(gc.DTypeError):
        gc.take(ph((3,)), ph((2,), "float64"))
    assert issubclass(gc.DTypeError, TypeError)
    assert issubclass(gc.ShapeError, ValueError)


# ---- gc.function: calls -----------------------------------------------------------------

@pytest.fixture
def f_float():
    x = ph((None, 3), "float32", name="xin")
    return gc.function([x], x * 2, backend="numpy")


@pytest.fixture
def f_int():
    i = ph((None,), "int32", name="iin")
    return gc.function([i], i + 1, backend="numpy")


@pytest.mark.parametrize("args", [(), (np.ones((2, 3)), np.ones((2, 3)))], ids=["0", "2"])
def test_wrong_argument_count(f_float, args):
    with pytest.raises(TypeError, match="xin"):
        f_float(*args)


@pytest.mark.parametrize("value", [np.ones(3), np.ones((2, 4)), np.ones((2, 3, 1)),
                                   np.ones(()), 1.0, [[1.0, 2.0]]],
                         ids=["rank1", "cols", "rank3", "0d", "number", "list"])
def test_wrong_shape(f_float, value):
    with pytest.raises(ValueError, match="xin"):
        f_float(value)


@pytest.mark.parametrize("value", [np.ones((2, 3), np.int64), np.ones((2, 3), np.int32),
                                   np.ones((2, 3), bool)], ids=["i64", "i32", "bool"])
def test_int_or_bool_array_into_float_placeholder(f_float, value):
    with pytest.raises(TypeError, match="xin"):
        f_float(value)


@pytest.mark.parametrize("value", [np.ones(2, np.float64), np.ones(2, np.float32),
                                   [1.5, 2.0], 2.5, np.ones(2, bool)],
                         ids=["f64", "f32", "float_list", "float", "bool_array"])
def test_float_or_bool_array_into_int_placeholder(value):
    i = ph((None,) if not isinstance(value, float) else (), "int32", name="iin")
    f = gc.function([i], i + 1, backend="numpy")
    with pytest.raises(TypeError, match="iin"):
        f(value)


def test_float64_into_float32_is_accepted(f_float):
    value = np.array([[1.0, 2.5, 1e-3]], np.float64)
    result = f_float(value)
    assert result.dtype == np.float32
    np.testing.assert_array_equal(result, (value.astype(np.float32) * 2))


def test_ints_within_the_int_kind_are_accepted(f_int):
    result = f_int(np.array([1, 2], np.int64))
    assert result.dtype == np.int32
    np.testing.assert_array_equal(result, [2, 3])
    x = ph((2,), "int64")
    g = gc.function([x], x * 2, backend="numpy")
    np.testing.assert_array_equal(g(np.array([3, -4], np.int32)), [6, -8])


def test_int64_values_that_do_not_fit_int32(f_int):
    with pytest.raises((TypeError, ValueError), match="iin"):
        f_int(np.array([2 ** 40], np.int64))


def test_python_numbers_cross_kinds():
    x = ph((), "float32", name="s")
    i = ph((), "int64", name="n")
    f = gc.function([x, i], [x * 2, i * 2], backend="numpy")
    a, b = f(3, True)
    assert a.dtype == np.float32 and a == 6.0
    assert b.dtype == np.int64 and b == 2
    with pytest.raises(TypeError, match="'n'"):
        f(1.0, 2.5)


@pytest.mark.parametrize("value", ["abc", b"abc", object(), None, 1j,
                                   np.ones((2, 3), complex), np.array([["a", "b", "c"]]),
                                   np.array([[None, None, None]]), [[1, 2], [3]],
                                   {"a": 1}, ph((2, 3))],
                         ids=["str", "bytes", "object", "None", "complex", "complex_array",
                              "str_array", "object_array", "ragged", "dict", "tensor"])
def test_unconvertible_arguments(f_float, value):
    with pytest.raises(TypeError, match="xin"):
        f_float(value)


def test_inconsistent_none_sizes_at_call_time():
    a = ph((None,), name="a")
    b = ph((None,), name="b")
    f = gc.function([a, b], a + b, backend="numpy")
    with pytest.raises(ValueError, match=re.escape(THIS_FILE)) as info:
        f(np.ones(3), np.ones(4))
    assert "add" in str(info.value)
    x = ph((None, 3), name="x")
    w = ph((None, 2), name="w")
    g = gc.function([x, w], x @ w, backend="numpy")
    with pytest.raises(ValueError):
        g(np.ones((4, 3)), np.ones((5, 2)))


def test_errors_leave_the_function_usable(f_float):
    for bad in ("a", np.ones(3), np.ones((1, 3), int)):
        with pytest.raises((TypeError, ValueError)):
            f_float(bad)
    np.testing.assert_array_equal(f_float(np.ones((1, 3))), np.full((1, 3), 2.0))


# ---- Parameter.value --------------------------------------------------------------------

def test_parameter_value_wrong_shape():
    p = gc.parameter(np.zeros((2, 3), np.float32), name="pp")
    for bad in (np.ones((3, 2)), np.ones(6), np.ones((1, 3)), np.ones((2, 3, 1))):
        with pytest.raises(ValueError, match="pp"):
            p.value = bad
    np.testing.assert_array_equal(p.value, np.zeros((2, 3)))  # unchanged


def test_parameter_value_wrong_kind():
    p = gc.parameter(np.zeros((2,), np.float32), name="pf")
    q = gc.parameter(np.zeros((2,), np.int64), name="qi")
    for target, bad in ((p, np.ones(2, np.int64)), (p, np.ones(2, complex)), (p, "ab"),
                        (q, np.ones(2)), (q, [1.5, 2.0]), (q, np.ones(2, bool))):
        with pytest.raises(TypeError):
            target.value = bad
    np.testing.assert_array_equal(p.value, [0, 0])
    np.testing.assert_array_equal(q.value, [0, 0])
    p.value = np.array([1.0, 2.0], np.float64)  # within the kind: fine
    q.value = [3, 4]  # Python ints: fine
    np.testing.assert_array_equal(p.value, [1, 2])
    np.testing.assert_array_equal(q.value, [3, 4])


# ---- gc.function: building --------------------------------------------------------------

def test_non_placeholder_inputs():
    x = ph((3,), name="x")
    p = gc.parameter(np.zeros(3, np.float32))
    for bad in (x * 2, gc.constant(np.ones(3, np.float32)), p, np.ones(3), "x"):
        with pytest.raises((TypeError, ValueError)):
            gc.function([bad], x, backend="numpy")


def test_inputs_must_be_a_list():
    x = ph((3,), name="x")
    with pytest.raises((TypeError, ValueError)):
        gc.function(x, x, backend="numpy")


def test_placeholder_missing_from_inputs():
    x = ph((3,), name="present")
    y = ph((3,), name="forgotten")
    with pytest.raises(ValueError, match="forgotten"):
        gc.function([x], x + y, backend="numpy")
    p = gc.parameter(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="forgotten"):
        gc.function([x], x, updates={p: p + y}, backend="numpy")


def test_placeholder_listed_twice():
    x = ph((3,), name="x")
    with pytest.raises(ValueError):
        gc.function([x, x], x, backend="numpy")


def test_outputs_must_be_tensors():
    x = ph((3,), name="x")
    for bad in ("x", None, [x, "y"], np.ones(3)):
        with pytest.raises(TypeError):
            gc.function([x], bad, backend="numpy")


def test_updates_to_non_parameters():
    x = ph((3,), name="x")
    p = gc.parameter(np.zeros(3, np.float32))
    for key in (x, x * 2, p * 1.0, gc.constant(np.zeros(3, np.float32))):
        with pytest.raises((TypeError, ValueError)):
            gc.function([x], x, updates={key: x}, backend="numpy")


def test_updates_with_wrong_shape():
    x = ph((3,), name="x")
    p = gc.parameter(np.zeros((2, 3), np.float32), name="wp")
    for value in (x, p[0], p.T, gc.sum(p), p.reshape(6)):
        with pytest.raises(ValueError, match="wp"):
            gc.function([x], x, updates={p: value}, backend="numpy")


def test_updates_with_wrong_kind():
    x = ph((3,), name="x")
    p = gc.parameter(np.zeros(3, np.float32), name="wk")
    with pytest.raises(TypeError):
        gc.function([x], x, updates={p: p > 0}, backend="numpy")
    with pytest.raises(TypeError):
        gc.function([x], x, updates={p: p.astype("int32")}, backend="numpy")


def test_update_with_wrong_run_time_shape_changes_nothing():
    """A None dim sized wrongly at call time: a ValueError, and no parameter is written
    (never a silent broadcast of a (1, 3) value into a (2, 3) parameter)."""
    x = ph((None, 3), name="x")
    p = gc.parameter(np.zeros((2, 3), np.float32), name="p_rt")
    q = gc.parameter(np.zeros((2, 3), np.float32), name="q_rt")
    f = gc.function([x], gc.sum(x), updates={q: q + 1.0, p: x}, backend="numpy")
    for rows in (1, 4):
        with pytest.raises(ValueError, match="p_rt"):
            f(np.ones((rows, 3), np.float32))
    np.testing.assert_array_equal(p.value, np.zeros((2, 3)))
    np.testing.assert_array_equal(q.value, np.zeros((2, 3)))
    f(np.full((2, 3), 5.0, np.float32))
    np.testing.assert_array_equal(p.value, np.full((2, 3), 5.0))
    np.testing.assert_array_equal(q.value, np.ones((2, 3)))


@pytest.mark.parametrize("backend", ["tensorflow", "NUMPY", "", None, 3])
def test_unknown_backend(backend):
    x = ph((3,))
    with pytest.raises(ValueError):
        gc.function([x], x, backend=backend)


@pytest.mark.parametrize("optimize", ["no-such-pass", ["no-such-pass"], ("bogus", "no-such-pass")],
                         ids=str)
def test_unknown_pass_name(optimize):
    x = ph((3,))
    with pytest.raises(ValueError, match="bogus|no-such-pass"):
        gc.function([x], x, backend="numpy", optimize=optimize)


@pytest.mark.parametrize("optimize", [True, False])
def test_optimize_flags_accepted(optimize):
    x = ph((3,))
    f = gc.function([x], x + 1, backend="numpy", optimize=optimize)
    np.testing.assert_array_equal(f(np.zeros(3)), np.ones(3))


# ---- placeholder shapes -----------------------------------------------------------------

@pytest.mark.parametrize("shape", [(-1, 3), (3, -2), (2.0, 3), (1.5,), ("a b", 2), (True, 3),
                                   ((2,), 3)], ids=str)
def test_bad_placeholder_shapes(shape):
    with pytest.raises((TypeError, ValueError)):
        gc.placeholder(shape)


@pytest.mark.parametrize("shape", [3.0, "abc", object()], ids=["float", "str", "object"])
def test_placeholder_shape_not_a_tuple(shape):
    with pytest.raises((TypeError, ValueError)):
        gc.placeholder(shape)


def test_good_placeholder_shapes():
    assert gc.placeholder(()).shape == ()
    assert gc.placeholder(3).shape == (3,)
    assert gc.placeholder([2, None, 0]).shape == (2, None, 0)
    assert gc.placeholder(("N", 3)).shape == ("N", 3)
    assert gc.placeholder((np.int64(4),)).shape == (4,)


def test_placeholder_name_must_be_a_string():
    with pytest.raises(TypeError):
        gc.placeholder((2,), name=3)


# ---- run-time errors --------------------------------------------------------------------

def test_run_time_errors_name_the_op_and_the_building_line():
    x = ph((None, 4), name="x")
    i = ph((None,), "int64", name="i")
    gathered = x[i]; line = gathered.node.source.lineno if gathered.node.source else None  # noqa: E702
    f = gc.function([x, i], gathered, backend="numpy")
    with pytest.raises(IndexError) as info:
        f(np.ones((2, 4), np.float32), np.array([0, 2]))
    message = str(info.value)
    assert "take" in message and THIS_FILE in message
    assert line is not None and f"{THIS_FILE}:{line}" in message


def test_reshape_run_time_size_mismatch():
    x = ph((None, 3), name="x")
    f = gc.function([x], x.reshape(-1, 2), backend="numpy")
    np.testing.assert_array_equal(f(np.ones((2, 3))), np.ones((3, 2)))
    with pytest.raises(ValueError):
        f(np.ones((3, 3)))


@pytest.mark.parametrize("backend,options", [("numpy", None), ("numpy", {"mode": "kernels"}),
                                             ("llvm", None)])
@pytest.mark.parametrize("optimize", [True, False])
def test_an_int_index_past_a_run_time_size_is_an_index_error(backend, options, optimize):
    x = gc.placeholder((None, 3), name="x")
    data = np.arange(6, dtype=np.float32).reshape(2, 3)
    for index, expected in ((1, data[1]), (-2, data[0])):
        f = gc.function([x], x[index], backend=backend, backend_options=options,
                        optimize=optimize)
        np.testing.assert_array_equal(f(data), expected)
    for index in (2, 5, -3):
        f = gc.function([x], x[index] * 2.0, backend=backend, backend_options=options,
                        optimize=optimize)
        with pytest.raises(IndexError, match=f"index {index} is out of bounds for axis 0"):
            f(data)
