"""gc.function semantics (API.md, "Compilation and running"): output structure, parameter
updates (computed from old values, stored together, after the outputs), fresh result
arrays, argument layouts, special values, empty batches, and the printable graph."""
from __future__ import annotations

import re

import numpy as np
import pytest

import graphc as gc


def fn(inputs, outputs, updates=None):
    return gc.function(inputs, outputs, updates=updates, backend="numpy")


# ---- outputs ----------------------------------------------------------------------------

def test_single_output_is_an_array():
    x = gc.placeholder((None, 3), "float32", name="x")
    f = fn([x], gc.exp(x) + 1.0)
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    result = f(a)
    assert isinstance(result, np.ndarray)
    assert result.dtype == np.float32
    np.testing.assert_allclose(result, np.exp(a.astype(np.float64)) + 1.0, rtol=1e-6)


def test_scalar_output_is_a_0d_array():
    x = gc.placeholder((3,), "float64")
    result = fn([x], gc.sum(x))(np.array([1.0, 2.0, 3.5]))
    assert isinstance(result, np.ndarray) and result.shape == () and result == 6.5


@pytest.mark.parametrize("container", [list, tuple])
def test_list_and_tuple_outputs_keep_their_structure(container):
    x = gc.placeholder((2,), "float64", name="x")
    outs = container([x + 1, x * 2, gc.sum(x)])
    result = fn([x], outs)(np.array([1.0, 3.0]))
    assert type(result) is container
    assert len(result) == 3
    np.testing.assert_array_equal(result[0], [2.0, 4.0])
    np.testing.assert_array_equal(result[1], [2.0, 6.0])
    assert result[2] == 4.0


@pytest.mark.parametrize("container", [list, tuple])
def test_one_element_list_stays_a_list(container):
    x = gc.placeholder((2,), "float64")
    result = fn([x], container([x * 3]))(np.array([1.0, 2.0]))
    assert type(result) is container and len(result) == 1
    np.testing.assert_array_equal(result[0], [3.0, 6.0])


def test_outputs_of_different_dtypes_and_shapes():
    x = gc.placeholder((None, 2), "float32")
    i = gc.placeholder((None,), "int32")
    result = fn([x, i], [x > 0, gc.argmax(x, axis=1), i * 2, gc.mean(i), x.T])(
        np.array([[1.0, -1.0], [-2.0, 3.0], [0.5, 0.25]], np.float32), np.array([1, 2], np.int32))
    assert [r.dtype for r in result] == [np.bool_, np.int64, np.int32, np.float64, np.float32]
    assert [r.shape for r in result] == [(3, 2), (3,), (2,), (), (2, 3)]
    np.testing.assert_array_equal(result[1], [0, 1, 0])
    assert result[3] == 1.5


def test_no_inputs():
    p = gc.parameter(np.array([1.0, 2.0], np.float32))
    f = fn([], [p * 2, gc.constant(3.0)])
    a, b = f()
    np.testing.assert_array_equal(a, [2.0, 4.0])
    assert b == 3.0 and b.dtype == np.float32


def test_function_can_be_called_repeatedly():
    x = gc.placeholder((None,), "float64")
    f = fn([x], x * x)
    for n in (3, 0, 5, 1):
        a = np.arange(n, dtype=np.float64)
        np.testing.assert_array_equal(f(a), a * a)


# ---- updates ----------------------------------------------------------------------------

def test_update_applies_and_accumulates():
    x = gc.placeholder((3,), "float32", name="x")
    w = gc.parameter(np.zeros(3, np.float32), name="w")
    f = fn([x], gc.sum(w * x), updates={w: w + x})
    a = np.array([1.0, 2.0, 3.0], np.float32)
    assert f(a) == 0.0                 # the output sees the old w
    np.testing.assert_array_equal(w.value, a)
    assert f(a) == np.dot(a, a)        # ... then the new one
    np.testing.assert_array_equal(w.value, 2 * a)


def test_swap_two_parameters_in_one_step():
    a = gc.parameter(np.array([1.0, 2.0]), name="a")
    b = gc.parameter(np.array([10.0, 20.0]), name="b")
    f = fn([], [], updates={a: b, b: a})
    f()
    np.testing.assert_array_equal(a.value, [10.0, 20.0])
    np.testing.assert_array_equal(b.value, [1.0, 2.0])
    f()
    np.testing.assert_array_equal(a.value, [1.0, 2.0])
    np.testing.assert_array_equal(b.value, [10.0, 20.0])


def test_updates_use_old_values_of_every_parameter():
    # Fibonacci step: (a, b) <- (b, a + b); both new values from the old pair.
    a = gc.parameter(np.array(0, np.int64), name="fa")
    b = gc.parameter(np.array(1, np.int64), name="fb")
    f = fn([], a, updates={a: b, b: a + b})
    seen = [int(f()) for _ in range(8)]
    assert seen == [0, 1, 1, 2, 3, 5, 8, 13]


def test_update_that_reads_itself_through_a_view():
    """A new value that is a view of its own parameter (reversal, transpose) must not be
    read while it is being written."""
    p = gc.parameter(np.arange(4.0), name="rev")
    m = gc.parameter(np.arange(9.0).reshape(3, 3), name="mat")
    f = fn([], [], updates={p: p[::-1], m: m.T})
    f()
    np.testing.assert_array_equal(p.value, [3.0, 2.0, 1.0, 0.0])
    np.testing.assert_array_equal(m.value, np.arange(9.0).reshape(3, 3).T)


def test_outputs_are_computed_before_updates():
    p = gc.parameter(np.array([1.0, 2.0], np.float32), name="p")
    f = fn([], [p, p * 10, gc.sum(p)], updates={p: p + 1})
    out_p, out_scaled, out_sum = f()
    np.testing.assert_array_equal(out_p, [1.0, 2.0])
    np.testing.assert_array_equal(out_scaled, [10.0, 20.0])
    assert out_sum == 3.0
    np.testing.assert_array_equal(p.value, [2.0, 3.0])


def test_update_value_cast_within_kind():
    p = gc.parameter(np.zeros(2, np.float32), name="p32")
    x = gc.placeholder((2,), "float64", name="x64")
    f = fn([x], [], updates={p: x * 2})
    f(np.array([0.1, 0.2]))
    assert p.value.dtype == np.float32
    np.testing.assert_allclose(p.value, [0.2, 0.4], rtol=1e-6)


def test_update_with_a_numpy_value():
    p = gc.parameter(np.zeros(3, np.float32), name="pn")
    f = fn([], [], updates={p: np.array([1.0, 2.0, 3.0])})
    f()
    np.testing.assert_array_equal(p.value, [1.0, 2.0, 3.0])


def test_two_functions_share_a_parameter():
    w = gc.parameter(np.array([1.0]), name="shared")
    inc = fn([], [], updates={w: w + 1})
    read = fn([], w * 1)
    inc()
    inc()
    assert read() == 3.0


# ---- fresh results, copies, in-place writes ---------------------------------------------

def test_returned_arrays_are_fresh():
    p = gc.parameter(np.array([1.0, 2.0, 3.0]), name="fresh")
    x = gc.placeholder((3,), "float64", name="x")
    c = gc.constant(np.array([7.0, 8.0, 9.0]))
    f = fn([x], [p, x, p.T, p[::2], p.reshape(3, 1), c, gc.stop_gradient(x),
                 gc.broadcast_to(p, (2, 3))])
    arg = np.array([4.0, 5.0, 6.0])
    results = f(arg)
    for r in results:
        assert r.flags.writeable
        r[...] = -1.0
    np.testing.assert_array_equal(p.value, [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(arg, [4.0, 5.0, 6.0])
    again = f(arg)
    np.testing.assert_array_equal(again[0], [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(again[5], [7.0, 8.0, 9.0])


def test_placeholder_output_does_not_alias_the_argument():
    x = gc.placeholder((None,), "float32", name="x")
    f = fn([x], x)
    arg = np.array([1.0, 2.0], np.float32)
    out = f(arg)
    assert not np.shares_memory(out, arg)
    out[0] = 99.0
    assert arg[0] == 1.0


def test_same_output_listed_twice_gives_independent_arrays():
    x = gc.placeholder((2,), "float64")
    y = x * 2
    first, second = fn([x], [y, y])(np.array([1.0, 2.0]))
    assert not np.shares_memory(first, second)
    first[0] = -5.0
    np.testing.assert_array_equal(second, [2.0, 4.0])


def test_returned_arrays_from_two_calls_are_independent():
    x = gc.placeholder((2,), "float64")
    f = fn([x], x + 1)
    a = f(np.zeros(2))
    b = f(np.zeros(2))
    a[0] = 50.0
    np.testing.assert_array_equal(b, [1.0, 1.0])


def test_value_returns_a_copy():
    init = np.array([1.0, 2.0], np.float32)
    p = gc.parameter(init, name="copied")
    init[0] = 100.0  # the parameter holds its own array
    v = p.value
    v[1] = 200.0
    np.testing.assert_array_equal(p.value, [1.0, 2.0])
    assert p.value is not p.value


def test_value_setter_writes_in_place_for_compiled_functions():
    p = gc.parameter(np.zeros((2, 2), np.float32), name="inplace")
    f = fn([], p + 0)  # compiled before the assignment
    new = np.array([[1.0, 2.0], [3.0, 4.0]], np.float64)
    p.value = new
    np.testing.assert_array_equal(f(), new)
    new[0, 0] = -7.0  # the setter copied: later changes to `new` do not leak in
    np.testing.assert_array_equal(p.value, [[1.0, 2.0], [3.0, 4.0]])
    p.value = np.asfortranarray(np.array([[5.0, 6.0], [7.0, 8.0]], np.float32))
    np.testing.assert_array_equal(f(), [[5.0, 6.0], [7.0, 8.0]])


def test_parameter_value_after_update_and_dtype():
    p = gc.parameter(np.array([1, 2], np.int32), name="ints")
    f = fn([], [], updates={p: p * 3})
    f()
    v = p.value
    assert v.dtype == np.int32
    np.testing.assert_array_equal(v, [3, 6])


def test_parameter_from_python_numbers():
    p = gc.parameter([1.5, 2.5])
    q = gc.parameter(3)
    assert p.dtype == np.float32 and q.dtype == np.int64
    a, b = fn([], [p * 2, q + 1])()
    np.testing.assert_array_equal(a, [3.0, 5.0])
    assert b == 4 and b.dtype == np.int64


# ---- argument layouts and values --------------------------------------------------------

def test_non_contiguous_and_fortran_arguments():
    x = gc.placeholder((None, 3), "float64", name="x")
    w = gc.placeholder((3, 2), "float64", name="w")
    f = fn([x, w], [x @ w, x * 2, gc.sum(x, axis=0), x[:, ::-1]])
    base = np.arange(24.0).reshape(4, 6)
    strided = base[:, ::2]                       # non-contiguous
    fortran = np.asfortranarray(np.arange(6.0).reshape(3, 2))
    transposed = np.arange(12.0).reshape(3, 4).T  # a transposed view
    reversed_ = np.arange(6.0).reshape(3, 2)[::-1]
    for xa, wa in ((strided, fortran), (transposed, reversed_), (np.asfortranarray(strided),
                                                                 fortran[::1])):
        mm, doubled, colsum, flipped = f(xa, wa)
        np.testing.assert_array_equal(mm, xa @ wa)
        np.testing.assert_array_equal(doubled, xa * 2)
        np.testing.assert_array_equal(colsum, xa.sum(axis=0))
        np.testing.assert_array_equal(flipped, xa[:, ::-1])


def test_broadcast_and_read_only_arguments():
    x = gc.placeholder((2, 3), "float32")
    f = fn([x], x + 1)
    ro = np.broadcast_to(np.arange(3, dtype=np.float32), (2, 3))  # zero strides, read-only
    np.testing.assert_array_equal(f(ro), ro + 1)
    frozen = np.ones((2, 3), np.float32)
    frozen.flags.writeable = False
    np.testing.assert_array_equal(f(frozen), frozen + 1)


def test_big_endian_argument():
    x = gc.placeholder((3,), "float64")
    f = fn([x], x * 2)
    be = np.array([1.0, 2.0, 3.0], dtype=">f8")
    np.testing.assert_array_equal(f(be), [2.0, 4.0, 6.0])


def test_nan_and_inf_propagate():
    x = gc.placeholder((None,), "float32", name="x")
    f = fn([x], [x * 2, gc.exp(x), gc.sum(x), gc.maximum(x, 0.0), gc.log(x), x / 0.0])
    a = np.array([np.nan, np.inf, -np.inf, 1.0, 0.0], np.float32)
    doubled, e, s, m, lg, q = f(a)
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(doubled, a * 2)
        np.testing.assert_array_equal(e, np.exp(a))
        assert np.isnan(s)
        np.testing.assert_array_equal(m, np.maximum(a, np.float32(0)))
        np.testing.assert_array_equal(lg, np.log(a))
        np.testing.assert_array_equal(q, a / np.float32(0.0))


def test_empty_batch():
    x = gc.placeholder((None, 3), "float32", name="x")
    w = gc.parameter(np.ones((3, 2), np.float32), name="w_empty")
    f = fn([x], [x @ w, gc.softmax(x), gc.sum(x, axis=0), x * 2, gc.sum(x)],
           updates={w: w - 0.1 * (x.T @ (x @ w))})
    mm, sm, colsum, doubled, total = f(np.zeros((0, 3), np.float32))
    assert mm.shape == (0, 2) and sm.shape == (0, 3) and doubled.shape == (0, 3)
    np.testing.assert_array_equal(colsum, np.zeros(3))
    assert total == 0.0
    np.testing.assert_array_equal(w.value, np.ones((3, 2)))


def test_python_numbers_as_arguments():
    s = gc.placeholder((), "float32", name="s")
    n = gc.placeholder((), "int64", name="n")
    v = gc.placeholder((3,), "float64", name="v")
    f = fn([s, n, v], [s * 2, n + 1, v * s])
    a, b, c = f(1.5, 4, [1, 2, 3])
    assert a.dtype == np.float32 and a == 3.0
    assert b.dtype == np.int64 and b == 5
    np.testing.assert_array_equal(c, [1.5, 3.0, 4.5])
    a, b, _ = f(2, True, (0.5, 1.0, 2))  # ints into a float placeholder, a bool into an int one
    assert a == 4.0 and b == 2
    a, _, _ = f(np.float64(0.25), np.int32(3), np.zeros(3))  # numpy scalars, within the kind
    assert a == 0.5


def test_lists_as_arguments():
    x = gc.placeholder((None, 2), "float32")
    np.testing.assert_array_equal(fn([x], x * 2)([[1, 2], [3.5, 4]]), [[2, 4], [7, 8]])


# ---- inspection -------------------------------------------------------------------------

def test_f_graph_printable_by_show():
    x = gc.placeholder((None, 3), "float32", name="inputs")
    w = gc.parameter(np.ones((3, 2), np.float32), name="weights")
    y = gc.relu(x @ w)
    f = fn([x], gc.sum(y), updates={w: w * 0.5})
    text = gc.show(f.graph)
    assert isinstance(text, str)
    for word in ("inputs", "weights", "matmul", "relu", "sum", "mul"):
        assert word in text, (word, text)
    assert "update" in text
    assert text == gc.show(f)  # a compiled function shows its graph


def test_show_lists_ops_shapes_and_dtypes():
    x = gc.placeholder((None, 3), "float32", name="xs")
    i = gc.placeholder((4,), "int64", name="idx")
    y = gc.exp(x) + 1.0
    z = gc.take(y, i, axis=0)
    text = gc.show(z)
    lines = text.splitlines()
    for word in ("xs", "idx", "exp", "add", "take", "constant"):
        assert word in text, (word, text)
    assert any("exp" in ln and "3" in ln for ln in lines)
    assert "f32" in text or "float32" in text
    assert "i64" in text or "int64" in text
    assert "?" in text or "None" in text  # the unknown batch size
    # one node a line: every node of the graph appears exactly once as a definition
    assert sum(1 for ln in lines if "exp(" in ln) == 1


def test_show_of_a_list_of_tensors():
    x = gc.placeholder((2,), "float64", name="a")
    text = gc.show([gc.sin(x), gc.cos(x)])
    assert "sin" in text and "cos" in text
    assert re.search(r"\ba\b", text)  # the placeholder, by its name


def test_to_dot():
    x = gc.placeholder((None, 3), "float32", name="xd")
    w = gc.parameter(np.ones((3, 2), np.float32), name="wd")
    y = gc.tanh(x @ w)
    dot = gc.to_dot(y)
    assert dot.strip().startswith("digraph") and dot.strip().endswith("}")
    for word in ("xd", "wd", "matmul", "tanh"):
        assert word in dot, (word, dot)
    assert "->" in dot
    assert "2" in dot and "3" in dot
    f = fn([x], y, updates={w: w + 1.0})
    assert "update" in gc.to_dot(f.graph)


def test_show_rejects_non_tensors():
    with pytest.raises(TypeError):
        gc.show("not a tensor")
    with pytest.raises(TypeError):
        gc.to_dot([1, 2])


def test_tensor_static_facts():
    x = gc.placeholder((None, 3, 4), "float64", name="t")
    assert x.shape == (None, 3, 4) and x.ndim == 3 and x.dtype == np.float64
    assert x.T.shape == (4, 3, None)
    assert x.sum(axis=1).shape == (None, 4)
    assert (x > 0).dtype == np.bool_
    assert gc.placeholder((2,), np.int32).dtype == gc.int32
    assert gc.placeholder((2,), gc.float32).dtype == np.float32
    assert gc.placeholder((2,), "bool").dtype == gc.bool_
