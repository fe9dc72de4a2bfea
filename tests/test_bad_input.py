"""Bad input, case by case, each run in a child interpreter so a crash (segfault, abort) or a
hang shows as a failed case instead of taking pytest down: argument count, shape, rank and
dtype errors naming the placeholder; odd memory layouts, NaN/inf and empty batches (which must
work); out-of-range indices; allocations that cannot fit; parameters set wrongly; mixed dtypes;
damaged checkpoints and compile-cache entries. docs/reliability.md lists every case with its
outcome.

The cases are ordinary functions in this file; `python tests/test_bad_input.py BACKEND NAME...`
runs some of them and prints one JSON line per case. Each pytest case asserts one of those
lines; the child processes are started once per group (see `outcomes`), not once per case.
"""
from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
import tempfile
import traceback
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # each case in a child interpreter

BACKENDS = ("numpy", "llvm")
CHILD_TIMEOUT = 120  # seconds for one child process; a case still running then is a hang


@dataclass(frozen=True)
class Case:
    name: str
    fn: Callable[[str], object]
    raises: tuple[str, ...] | None  # exception class names (any in the MRO); None: returns
    mentions: tuple[str, ...]  # regexes the message must match (the argument's name...)
    backends: tuple[str, ...]
    xfail: str | None = None  # a known, reported defect (strict: the fix must remove it)
    timeout: float | None = None  # run alone, in a child of its own, with this time limit


CASES: dict[str, Case] = {}


def case(name: str, raises: str | tuple[str, ...] | None = None, mentions=(),
         backends=BACKENDS, xfail: dict[str, str] | None = None, timeout: float | None = None):
    """Registers a case. `xfail`: {backend: reason} for defects that were reported."""
    def register(fn):
        for be in backends:
            key = f"{be}:{name}"
            CASES[key] = Case(name, fn, (raises,) if isinstance(raises, str) else raises,
                              (mentions,) if isinstance(mentions, str) else tuple(mentions),
                              backends, (xfail or {}).get(be), timeout)
        return fn
    return register


# ---- helpers the cases use (run in the child) --------------------------------------------

def _gc():
    import graphc as gc
    return gc


def same(a, b, what=""):
    """Equal arrays (NaN equal to NaN, dtype and shape compared too)."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype, f"{what}: dtype {a.dtype} != {b.dtype}"
    assert a.shape == b.shape, f"{what}: shape {a.shape} != {b.shape}"
    np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-6, equal_nan=True, err_msg=what)


def same_all(got, ref, what=""):
    assert len(got) == len(ref)
    for i, (g, r) in enumerate(zip(got, ref)):
        same(g, r, f"{what}[{i}]")


@functools.lru_cache(maxsize=None)
def classifier(be: str):
    """f(feat: f32[?,3], labels: i64[?]) -> [feat * 2, cross_entropy(feat @ W, labels)]."""
    gc = _gc()
    x = gc.placeholder((None, 3), "float32", name="feat")
    lab = gc.placeholder((None,), "int64", name="labels")
    W = gc.parameter(np.arange(12, dtype=np.float32).reshape(3, 4) / 10, name="W_cls")
    return gc.function([x, lab], [x * 2, gc.nn.cross_entropy(x @ W, lab)], backend=be)


GOOD_X = np.arange(6, dtype=np.float32).reshape(2, 3)
GOOD_LAB = np.array([0, 3], np.int64)


def call_classifier(be, x=GOOD_X, lab=GOOD_LAB):
    return classifier(be)(x, lab)


@functools.lru_cache(maxsize=None)
def layout_fn(be: str):
    """A mix of kernels whose inputs are read through strides: matmul, elementwise,
    reductions, softmax, gather; the reference is the numpy backend on contiguous copies."""
    gc = _gc()
    x = gc.placeholder((None, 3), "float32", name="x")
    w = gc.placeholder((3, 2), "float32", name="w")
    outs = [x @ w, x * 2 + 1, gc.sum(x, axis=0), gc.mean(x), gc.softmax(x), x[:, ::-1],
            gc.take(w, [2, 0]), gc.grad(gc.sum(gc.tanh(x @ w)), w)]
    return gc.function([x, w], outs, backend=be)


LX = (np.arange(48, dtype=np.float32).reshape(8, 6) - 20) / 7
LW = (np.arange(6, dtype=np.float32).reshape(3, 2) - 2.5) / 3


def check_layout(be, xa, wa):
    xa_before, wa_before = np.array(xa), np.array(wa)
    got = layout_fn(be)(xa, wa)
    ref = layout_fn("numpy")(np.ascontiguousarray(xa), np.ascontiguousarray(wa))
    same_all(got, ref, "layout")
    np.testing.assert_array_equal(xa, xa_before)  # arguments are never written to
    np.testing.assert_array_equal(wa, wa_before)


# ---- argument count, shape, rank ----------------------------------------------------------

@case("argc_zero", "TypeError", ["feat", "labels", "2 arguments"])
def _(be):
    classifier(be)()


@case("argc_one_missing", "TypeError", ["labels", "got 1"])
def _(be):
    classifier(be)(GOOD_X)


@case("argc_extra", "TypeError", ["feat", "got 3"])
def _(be):
    classifier(be)(GOOD_X, GOOD_LAB, GOOD_LAB)


@case("shape_wrong_columns", "ValueError", ["'feat'", r"\[2, ?4\]|\(2, 4\)"])
def _(be):
    call_classifier(be, x=np.ones((2, 4), np.float32))


@case("rank_too_low", "ValueError", ["'feat'"])
def _(be):
    call_classifier(be, x=np.ones(3, np.float32))


@case("rank_too_high", "ValueError", ["'feat'"])
def _(be):
    call_classifier(be, x=np.ones((2, 3, 1), np.float32))


@case("rank_zero_python_number", "ValueError", ["'feat'"])
def _(be):
    call_classifier(be, x=1.5)


@case("labels_rank_too_high", "ValueError", ["'labels'"])
def _(be):
    call_classifier(be, lab=np.zeros((2, 1), np.int64))


@case("none_sizes_disagree", "ValueError", [r"\bmul\b", r"'feat' is 2", r"'labels' is 3"])
def _(be):
    call_classifier(be, lab=np.zeros(3, np.int64))  # 2 rows of features, 3 labels


@case("none_sizes_disagree_names_the_building_line", "ValueError", [r"test_bad_input\.py:\d+"])
def _(be):
    call_classifier(be, lab=np.zeros(3, np.int64))


@case("ragged_list", "TypeError", ["'feat'"])
def _(be):
    call_classifier(be, x=[[1.0, 2.0, 3.0], [4.0]])


# ---- dtype kinds ----------------------------------------------------------------------

@case("float_array_into_int_placeholder", "TypeError", ["'labels'"])
def _(be):
    call_classifier(be, lab=np.array([0.0, 1.0]))


@case("float_list_into_int_placeholder", "TypeError", ["'labels'"])
def _(be):
    call_classifier(be, lab=[0.5, 1.0])


@case("bool_array_into_int_placeholder", "TypeError", ["'labels'"])
def _(be):
    call_classifier(be, lab=np.array([True, False]))


@case("int_array_into_float_placeholder", "TypeError", ["'feat'"])
def _(be):
    call_classifier(be, x=np.ones((2, 3), np.int64))


@case("bool_array_into_float_placeholder", "TypeError", ["'feat'"])
def _(be):
    call_classifier(be, x=np.ones((2, 3), bool))


@case("complex_array", "TypeError", ["'feat'"])
def _(be):
    call_classifier(be, x=np.ones((2, 3), np.complex64))


@case("string", "TypeError", ["'feat'"])
def _(be):
    call_classifier(be, x="1.0")


@case("bytes", "TypeError", ["'feat'"])
def _(be):
    call_classifier(be, x=b"\x00" * 24)


@case("string_array", "TypeError", ["'labels'"])
def _(be):
    call_classifier(be, lab=np.array(["0", "1"]))


@case("object_array_of_floats", "TypeError", ["'feat'"])
def _(be):
    call_classifier(be, x=np.ones((2, 3), dtype=object))


@case("object_array_of_nones", "TypeError", ["'feat'"])
def _(be):
    call_classifier(be, x=np.full((2, 3), None, dtype=object))


@case("none", "TypeError", ["'feat'"])
def _(be):
    call_classifier(be, x=None)


@case("dict", "TypeError", ["'labels'"])
def _(be):
    call_classifier(be, lab={0: 1})


@case("datetime64_array", "TypeError", ["'labels'"])
def _(be):
    call_classifier(be, lab=np.array(["2020-01-01", "2021-01-01"], "datetime64[D]"))


@case("graph_tensor_as_argument", "TypeError", ["'feat'"])
def _(be):
    call_classifier(be, x=_gc().placeholder((2, 3)))


@case("uint64_labels_too_big", ("TypeError", "ValueError"), ["'labels'"])
def _(be):
    call_classifier(be, lab=np.array([0, 2 ** 63], np.uint64))


@case("int64_into_int32_overflow", ("TypeError", "ValueError"), ["'ids'"])
def _(be):
    gc = _gc()
    i = gc.placeholder((None,), "int32", name="ids")
    gc.function([i], i + 1, backend=be)(np.array([1, 2 ** 40], np.int64))


@case("float16_into_float32_converts")
def _(be):
    got = call_classifier(be, x=GOOD_X.astype(np.float16))
    same_all(got, call_classifier(be), "float16")


@case("int32_labels_convert")
def _(be):
    got = call_classifier(be, lab=GOOD_LAB.astype(np.int32))
    same_all(got, call_classifier(be), "int32 labels")


@case("nested_python_lists_convert")
def _(be):
    got = call_classifier(be, x=GOOD_X.tolist(), lab=GOOD_LAB.tolist())
    same_all(got, call_classifier(be), "lists")


@case("numpy_scalar_and_0d_for_scalar_placeholder")
def _(be):
    gc = _gc()
    s = gc.placeholder((), "float64", name="s")
    f = gc.function([s], s * 3, backend=be)
    for v in (np.float32(2), np.array(2.0), 2, True):
        same(f(v), np.float64(6.0 if v is not True else 3.0), repr(v))


@case("masked_array_subclass")
def _(be):
    """An ndarray subclass is read as its plain data (the mask is not graphc's business)."""
    gc = _gc()
    x = gc.placeholder((None, 2), "float64", name="x")
    f = gc.function([x], [x @ np.eye(2), gc.sum(x, axis=1)], backend=be)
    got = f(np.ma.masked_array(np.ones((2, 2)), mask=[[0, 1], [0, 0]]))
    same_all(got, [np.ones((2, 2)), np.full(2, 2.0)], "masked")


@case("matrix_subclass")
def _(be):
    gc = _gc()
    x = gc.placeholder((None, 2), "float64", name="x")
    f = gc.function([x], [x * x, gc.sum(x, axis=1)], backend=be)
    m = np.array([[1.0, 2.0], [3.0, 4.0]])
    same_all(f(np.asmatrix(m)), [m * m, m.sum(axis=1)], "matrix")


# ---- memory layouts: must work, same as a contiguous copy ---------------------------------

@case("layout_column_slice")
def _(be):
    check_layout(be, LX[:, ::2], LW)


@case("layout_fortran_order")
def _(be):
    check_layout(be, np.asfortranarray(LX[:, :3]), np.asfortranarray(LW))


@case("layout_negative_strides")
def _(be):
    check_layout(be, LX[::-1, ::-2], LW[::-1, ::-1])


@case("layout_transposed_view")
def _(be):
    check_layout(be, LX.T[:3].T, LW.T.copy().T)


@case("layout_broadcast_stride_0")
def _(be):
    check_layout(be, np.broadcast_to(LX[0, :3], (5, 3)), np.broadcast_to(LW[:1], (3, 2)))


@case("layout_stride_0_scalar_broadcast")
def _(be):
    check_layout(be, np.broadcast_to(np.float32(1.5), (4, 3)), LW)


@case("layout_big_endian")
def _(be):
    check_layout(be, LX[:, :3].astype(">f4"), LW.astype(">f8"))


@case("layout_unaligned")
def _(be):
    xa = np.frombuffer(bytearray(4 * 24 + 1), np.float32, 24, offset=1).reshape(8, 3)
    xa[...] = LX[:, :3]
    assert not xa.flags.aligned
    check_layout(be, xa, LW)


@case("layout_read_only")
def _(be):
    xa, wa = LX[:, :3].copy(), LW.copy()
    xa.flags.writeable = wa.flags.writeable = False
    check_layout(be, xa, wa)


@case("layout_float64_strided_converts")
def _(be):
    check_layout(be, LX.astype(np.float64)[1::2, 1:4], LW.astype(np.float64).T.copy().T)


# ---- NaN / inf and empty batches ---------------------------------------------------------

@case("nan_inf_propagate")
def _(be):
    gc = _gc()
    x = gc.placeholder((None, 3), "float32", name="x")
    lab = gc.placeholder((None,), "int64", name="lab")
    W = gc.parameter(np.ones((3, 3), np.float32), name="W_nan")
    loss = gc.nn.cross_entropy(x @ W, lab)
    outs = [x * 2, gc.exp(x), gc.log(x), gc.sqrt(x), gc.tanh(x), gc.sigmoid(x), gc.relu(x),
            gc.softplus(x), gc.sum(x, axis=1), gc.max(x, axis=1), gc.argmax(x, axis=1),
            gc.softmax(x), gc.logsumexp(x, axis=1), x @ W, loss, gc.grad(loss, W),
            gc.grad(gc.sum(gc.sigmoid(x)), x)]
    f = gc.function([x, lab], outs, backend=be)
    ref = gc.function([x, lab], outs, backend="numpy")
    v = np.array([[np.nan, 1, 2], [np.inf, 0, -1], [-np.inf, 3, 1], [1, np.inf, -np.inf],
                  [0.0, -0.0, 5], [1, 2, 3]], np.float32)
    lab_v = np.array([0, 1, 2, 0, 1, 2])
    got = f(v, lab_v)
    same_all(got, ref(v, lab_v), "nan/inf")
    assert np.isnan(got[0][0, 0]) and got[0][1, 0] == np.inf  # propagated, not zeroed
    assert np.isfinite(got[0][5]).all()


@case("nan_in_a_training_step_is_stored_not_fatal")
def _(be):
    gc = _gc()
    x = gc.placeholder((None, 2), "float32", name="x")
    W = gc.parameter(np.ones((2, 1), np.float32), name="W_nanstep")
    loss = gc.sum((x @ W) ** 2)
    step = gc.function([x], loss, updates={W: W - 0.1 * gc.grad(loss, W)}, backend=be)
    out = step(np.array([[np.nan, 1.0]], np.float32))
    assert np.isnan(out) and np.isnan(W.value).all()
    W.value = np.ones((2, 1), np.float32)  # recoverable
    assert step(np.ones((1, 2), np.float32)) == 4.0


@case("empty_batch")
def _(be):
    gc = _gc()
    x = gc.placeholder((None, 3), "float32", name="x")
    i = gc.placeholder((None,), "int64", name="i")
    W = gc.parameter(np.ones((3, 2), np.float32), name="W_empty")
    outs = [x * 2, x @ W, gc.sum(x), gc.sum(x, axis=0), gc.softmax(x), gc.tanh(x @ W),
            gc.take(W, i, axis=0), gc.grad(gc.sum(x @ W), W),
            gc.mean(x, axis=1)]
    f = gc.function([x, i], outs, backend=be)
    got = f(np.zeros((0, 3), np.float32), np.zeros(0, np.int64))
    expected_shapes = [(0, 3), (0, 2), (), (3,), (0, 3), (0, 2), (0, 2), (3, 2), (0,)]
    assert [g.shape for g in got] == expected_shapes, [g.shape for g in got]
    assert got[2] == 0 and (got[3] == 0).all() and (got[7] == 0).all()


@case("empty_batch_mean_is_nan")
def _(be):
    """The mean over zero rows is 0/0: NaN, as in numpy (no crash, no exception)."""
    gc = _gc()
    x = gc.placeholder((None, 3), "float32", name="x")
    lab = gc.placeholder((None,), "int64", name="lab")
    f = gc.function([x, lab], [gc.mean(x), gc.nn.cross_entropy(x, lab)], backend=be)
    m, ce = f(np.zeros((0, 3), np.float32), np.zeros(0, np.int64))
    assert np.isnan(m) and np.isnan(ce), (m, ce)


@case("empty_batch_max_raises", "ValueError", [r"\bmax\b|empty|zero-size|size 0"])
def _(be):
    gc = _gc()
    x = gc.placeholder((None, 3), "float32", name="x")
    gc.function([x], gc.max(x, axis=0), backend=be)(np.zeros((0, 3), np.float32))


@case("empty_batch_training_step")
def _(be):
    """A step on an empty batch: the gradient of a sum over no rows is 0, W is unchanged."""
    gc = _gc()
    x = gc.placeholder((None, 3), "float32", name="x")
    W = gc.parameter(np.ones((3, 2), np.float32), name="W_emptystep")
    loss = gc.sum(gc.tanh(x @ W))
    step = gc.function([x], loss, updates={W: W - 0.5 * gc.grad(loss, W)}, backend=be)
    assert step(np.zeros((0, 3), np.float32)) == 0
    np.testing.assert_array_equal(W.value, np.ones((3, 2), np.float32))


# ---- integer indices out of range -----------------------------------------------------

@functools.lru_cache(maxsize=None)
def gather_fns(be):
    gc = _gc()
    x = gc.placeholder((None, 3), "float32", name="x")
    idx = gc.placeholder((None,), "int64", name="idx")
    return {"take0": gc.function([x, idx], gc.take(x, idx, axis=0), backend=be),
            "take1": gc.function([x, idx], gc.take(x, idx, axis=1), backend=be),
            "gather": gc.function([x, idx], x[idx], backend=be),
            "take_grad": gc.function([x, idx], gc.grad(gc.sum(x[idx] ** 2), x), backend=be)}


def index_case(be, kind, bad):
    f = gather_fns(be)[kind]
    xs = np.ones((4, 3), np.float32)
    try:
        f(xs, np.array([0, bad, 1], np.int64))
    finally:  # the function still works after the failed call
        f(xs, np.array([0, -1], np.int64))


for _kind, _bad in (("take0", 4), ("take0", -5), ("take1", 3), ("take1", -4),
                    ("gather", 10 ** 12), ("gather", -2 ** 62), ("take_grad", 4),
                    ("take_grad", -5)):
    case(f"index_{_kind}_{_bad}".replace("-", "minus"), "IndexError",
         [r"\btake\b|\bgather\b", "out of (range|bounds)", "size (4|3)"])(
        functools.partial(lambda be, kind, bad: index_case(be, kind, bad), kind=_kind,
                          bad=_bad))


@case("index_argument_is_named_out_of_range", "IndexError", ["'idx'"])
def _(be):
    index_case(be, "take0", 7)


@case("index_message_gives_the_index_and_the_line", "IndexError",
      [r"\b7\b", r"test_bad_input\.py:\d+"])
def _(be):
    index_case(be, "take0", 7)


@case("index_embedding", "IndexError", [r"\btake\b|embedding|\bgather\b", "size 5"])
def _(be):
    gc = _gc()
    ids = gc.placeholder((None, 2), "int64", name="ids")
    emb = gc.nn.Embedding(5, 4, seed=0)
    f = gc.function([ids], gc.sum(emb(ids)), backend=be)
    f(np.array([[0, 1], [2, 7]]))


@case("index_embedding_training_step_changes_nothing", "IndexError", [r"\btake\b|embedding"])
def _(be):
    gc = _gc()
    ids = gc.placeholder((None,), "int64", name="ids")
    emb = gc.nn.Embedding(5, 4, seed=0)
    (table,) = emb.parameters()
    before = table.value
    loss = gc.sum(emb(ids) ** 2)
    step = gc.function([ids], loss, updates={table: table - 0.1 * gc.grad(loss, table)},
                       backend=be)
    try:
        step(np.array([0, 1, -6]))
    finally:
        np.testing.assert_array_equal(table.value, before)  # no partial update


@case("index_cross_entropy_label", "IndexError", [r"cross_entropy", r"\[0, 4\)"])
def _(be):
    call_classifier(be, lab=np.array([0, 4]))


@case("index_cross_entropy_negative_label", "IndexError", [r"cross_entropy|\btake\b|label"])
def _(be):
    call_classifier(be, lab=np.array([-1, 0]))


@case("index_negative_in_range_wraps")
def _(be):
    f = gather_fns(be)["take0"]
    xs = np.arange(12, dtype=np.float32).reshape(4, 3)
    same(f(xs, np.array([-1, -4])), xs[[-1, -4]])


@case("index_empty_indices")
def _(be):
    f = gather_fns(be)["gather"]
    assert f(np.ones((4, 3), np.float32), np.zeros(0, np.int64)).shape == (0, 3)


@case("index_into_empty_table", "IndexError", [r"\btake\b|\bgather\b"])
def _(be):
    gather_fns(be)["take0"](np.ones((0, 3), np.float32), np.array([0]))


@case("one_hot_out_of_range_is_zero_row")
def _(be):
    """one_hot of an index outside [0, n) is an all-zero row (as in JAX), never a crash."""
    gc = _gc()
    i = gc.placeholder((None,), "int64", name="i")
    got = gc.function([i], gc.one_hot(i, 3), backend=be)(np.array([0, 3, -1, 2]))
    expected = np.zeros((4, 3), np.float32)
    expected[0, 0] = expected[3, 2] = 1
    if got.dtype != np.float32:
        expected = expected.astype(got.dtype)
    same(got, expected)


# ---- allocations that cannot fit ------------------------------------------------------

BIG = {"raises": ("MemoryError", "ValueError"), "mentions": [r"allocate|too (big|large)|bytes"]}


@case("alloc_output_12_TiB", **BIG)
def _(be):
    gc = _gc()
    x = gc.placeholder((None, 3), "float32", name="x")
    gc.function([x], x * 2, backend=be)(np.broadcast_to(np.float32(1), (2 ** 40, 3)))


@case("alloc_intermediate_16_TiB", **BIG)
def _(be):
    gc = _gc()
    a = gc.placeholder((None,), "float32", name="a")
    c = gc.placeholder((None, 2), "float32", name="c")
    n = 2 ** 21
    f = gc.function([a, c], gc.sum(gc.exp(a[:, None] * a[None, :]) @ c), backend=be)
    f(np.ones(n, np.float32), np.ones((n, 2), np.float32))


@case("alloc_near_the_address_space_limit", **BIG)
def _(be):
    """A stride-0 argument of 2**59 x 3 float32 (6 EiB as a dense array, about the largest
    numpy can describe); the function is unaffected afterwards."""
    gc = _gc()
    x = gc.placeholder((None, 3), "float32", name="x")
    f = gc.function([x], [x * 2, gc.sum(x)], backend=be)
    try:
        f(np.broadcast_to(np.float32(1), (2 ** 59, 3)))
    finally:
        same(f(np.ones((1, 3), np.float32))[0], np.full((1, 3), 2, np.float32))


@case("alloc_exabytes_of_intermediates", **BIG)
def _(be):
    gc = _gc()
    x = gc.placeholder((None, None), "float32", name="x")
    f = gc.function([x], gc.sum(gc.exp(gc.exp(x) @ gc.exp(x).T) @ gc.exp(x)), backend=be)
    f(np.broadcast_to(np.float32(0), (2 ** 30, 2 ** 30)))


@case("alloc_reduction_of_a_12_TiB_broadcast", **BIG, timeout=20)
def _(be):
    gc = _gc()
    x = gc.placeholder((None, 3), "float32", name="x")
    gc.function([x], gc.sum(x), backend=be)(np.broadcast_to(np.float32(1), (2 ** 40, 3)))


@case("alloc_failure_leaves_function_usable")
def _(be):
    gc = _gc()
    x = gc.placeholder((None, 3), "float32", name="x")
    W = gc.parameter(np.ones((3, 3), np.float32), name="W_alloc")
    step = gc.function([x], gc.sum(x @ W), updates={W: W + 1}, backend=be)
    try:
        step(np.broadcast_to(np.float32(1), (2 ** 40, 3)))
    except MemoryError:
        pass
    else:
        raise AssertionError("12 TiB allocated?")
    np.testing.assert_array_equal(W.value, np.ones((3, 3)))  # no update stored
    assert step(np.ones((2, 3), np.float32)) == 18
    np.testing.assert_array_equal(W.value, np.full((3, 3), 2.0))


# ---- parameters set wrongly -----------------------------------------------------------

def _param_and_fn(be, dtype=np.float32):
    gc = _gc()
    p = gc.parameter(np.arange(6, dtype=dtype).reshape(2, 3), name="pw")
    x = gc.placeholder((3,), dtype, name="x")
    return gc, p, gc.function([x], p @ x, backend=be)


def _param_set_raises(be, value, dtype=np.float32):
    gc, p, f = _param_and_fn(be, dtype)
    before = f(np.ones(3, dtype))
    try:
        p.value = value
    finally:
        same(p.value, np.arange(6, dtype=dtype).reshape(2, 3))  # unchanged
        same(f(np.ones(3, dtype)), before)


@case("param_wrong_shape", "ValueError", ["'pw'", r"\(3, 2\)|\[3, ?2\]"])
def _(be):
    _param_set_raises(be, np.ones((3, 2), np.float32))


@case("param_wrong_rank", "ValueError", ["'pw'"])
def _(be):
    _param_set_raises(be, np.ones(6, np.float32))


@case("param_broadcastable_shape_is_not_broadcast", "ValueError", ["'pw'"])
def _(be):
    _param_set_raises(be, np.ones((1, 3), np.float32))


@case("param_int_into_float", "TypeError", ["'pw'"])
def _(be):
    _param_set_raises(be, np.ones((2, 3), np.int64))


@case("param_float_into_int", "TypeError", ["'pw'"])
def _(be):
    _param_set_raises(be, np.ones((2, 3)), dtype=np.int64)


@case("param_string", "TypeError", ["'pw'"])
def _(be):
    _param_set_raises(be, "abc")


@case("param_none", "TypeError", ["'pw'"])
def _(be):
    _param_set_raises(be, None)


@case("param_object_array", "TypeError", ["'pw'"])
def _(be):
    _param_set_raises(be, np.ones((2, 3), dtype=object))


@case("param_float64_converts_and_reaches_compiled_code")
def _(be):
    gc, p, f = _param_and_fn(be)
    p.value = np.full((2, 3), 0.5)  # float64 -> float32, strided and Fortran views too
    same(f(np.ones(3, np.float32)), np.full(2, 1.5, np.float32))
    p.value = np.asfortranarray(np.full((2, 3), 2.0))[:, ::-1]
    same(f(np.ones(3, np.float32)), np.full(2, 6.0, np.float32))
    p.value = np.broadcast_to(np.float32(1), (2, 3))
    same(f(np.ones(3, np.float32)), np.full(2, 3.0, np.float32))
    assert p.value.dtype == np.float32


@case("param_nan_value_propagates")
def _(be):
    gc, p, f = _param_and_fn(be)
    p.value = np.full((2, 3), np.nan, np.float32)
    assert np.isnan(f(np.ones(3, np.float32))).all()


# ---- mixed dtypes ---------------------------------------------------------------------

MIXES = [("float32", "float64"), ("int32", "float32"), ("int64", "float32"), ("int32", "int64"),
         ("bool", "float32"), ("bool", "int32"), ("int32", "float64"), ("bool", "bool")]


@case("mixed_dtypes_follow_numpy_promotion")
def _(be):
    gc = _gc()
    a_v = {"float32": np.array([1.5, -2.0], np.float32), "float64": np.array([0.25, 3.0]),
           "int32": np.array([3, -4], np.int32), "int64": np.array([7, 2], np.int64),
           "bool": np.array([True, False])}
    for da, db in MIXES:
        a = gc.placeholder((2,), da, name="a")
        b = gc.placeholder((2,), db, name="b")
        outs = [a + b, a * b, gc.maximum(a, b), gc.where(a_v["bool"], a, b)]
        if "bool" not in (da, db):
            outs.append(a - b)
        f = gc.function([a, b], outs, backend=be)
        got = f(a_v[da], a_v[db])
        ref = [a_v[da] + a_v[db], a_v[da] * a_v[db], np.maximum(a_v[da], a_v[db]),
               np.where(a_v["bool"], a_v[da], a_v[db])] + (
            [a_v[da] - a_v[db]] if "bool" not in (da, db) else [])
        for g, r in zip(got, ref):
            same(g, r, f"{da} with {db}")


@case("mixed_dtypes_matmul_and_reductions")
def _(be):
    gc = _gc()
    a = gc.placeholder((2, 3), "float32", name="a")
    b = gc.placeholder((3, 2), "float64", name="b")
    i = gc.placeholder((3,), "int32", name="i")
    f = gc.function([a, b, i], [a @ b, gc.sum(i), gc.mean(i), a @ i.astype("float32"),
                                gc.sum(a) + gc.sum(b), i / 2, i * 2],
                    backend=be)
    av = np.arange(6, dtype=np.float32).reshape(2, 3)
    bv = np.arange(6.0).reshape(3, 2) / 3
    iv = np.array([1, 2, 4], np.int32)
    got = f(av, bv, iv)
    ref = [av @ bv, np.sum(iv), np.mean(iv), av @ iv.astype(np.float32),
           np.sum(av) + np.sum(bv), iv / 2, iv * 2]
    for k, (g, r) in enumerate(zip(got, ref)):
        assert g.dtype == r.dtype, (k, g.dtype, r.dtype)
        same(g, r, f"output {k}")


@case("mixed_dtypes_python_scalars_are_weak")
def _(be):
    gc = _gc()
    a = gc.placeholder((2,), "float32", name="a")
    i = gc.placeholder((2,), "int32", name="i")
    got = gc.function([a, i], [a * 0.5, a + 1, i + 1, i * 2.5], backend=be)(
        np.array([1.0, 2.0], np.float32), np.array([1, 2], np.int32))
    assert [g.dtype for g in got][:3] == [np.float32, np.float32, np.int32]
    assert got[3].dtype.kind == "f"


@case("mixed_dtypes_grad_of_float64_through_float32")
def _(be):
    gc = _gc()
    a = gc.placeholder((2,), "float32", name="a")
    w = gc.parameter(np.array([1.0, 2.0]), name="w64")
    loss = gc.sum(a * w)  # float32 * float64 -> float64
    g = gc.function([a], gc.grad(loss, w), backend=be)(np.array([3.0, 4.0], np.float32))
    assert g.dtype == np.float64
    same(g, np.array([3.0, 4.0]))


# ---- damaged checkpoints --------------------------------------------------------------

def _checkpoint(tmp):
    gc = _gc()
    params = [gc.parameter(np.arange(12, dtype=np.float32).reshape(3, 4), name="W"),
              gc.parameter(np.ones(4), name="b")]
    path = Path(tmp) / "model.npz"
    gc.train.save(path, params, extra={"epoch": 1})
    return gc, params, path


def _expect_load_fails(params, path):
    gc = _gc()
    before = [p.value for p in params]
    try:
        gc.train.load(path, params)
    finally:
        for p, v in zip(params, before):
            np.testing.assert_array_equal(p.value, v)  # nothing half-loaded


def _rewrite_npz(path, members_edit):
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    members_edit(members)
    with zipfile.ZipFile(path, "w") as zf:
        for n, data in members.items():
            zf.writestr(n, data)


def _npy_bytes(array):
    import io
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, allow_pickle=False)
    return buf.getvalue()


def _edit_manifest(path, edit):
    import io

    def members_edit(members):
        key = "__graphc_checkpoint__.npy"
        manifest = json.loads(np.lib.format.read_array(io.BytesIO(members[key])).tobytes())
        edit(manifest)
        members[key] = _npy_bytes(np.frombuffer(json.dumps(manifest).encode(), np.uint8))
    _rewrite_npz(path, members_edit)


def checkpoint_case(name, damage, raises=("ValueError",), mentions=("model.npz",)):
    def run(be):
        with tempfile.TemporaryDirectory() as tmp:
            gc, params, path = _checkpoint(tmp)
            for p in params:
                p.value = p.value + 1
            damage(path)
            _expect_load_fails(params, path)
    case(f"checkpoint_{name}", raises, list(mentions), backends=("numpy",))(run)


checkpoint_case("truncated_half",
                lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]))
checkpoint_case("truncated_last_byte", lambda p: p.write_bytes(p.read_bytes()[:-1]))
checkpoint_case("empty_file", lambda p: p.write_bytes(b""))
checkpoint_case("not_a_zip", lambda p: p.write_text("W,b\n1,2\n"))
checkpoint_case("random_bytes", lambda p: p.write_bytes(np.random.default_rng(0).bytes(4096)))
checkpoint_case("plain_numpy_npz",
                lambda p: np.savez(p, W=np.zeros((3, 4), np.float32), b=np.zeros(4)),
                mentions=("model.npz", "not a graphc checkpoint"))
checkpoint_case("manifest_not_json", lambda p: _rewrite_npz(p, lambda m: m.update(
    {"__graphc_checkpoint__.npy": _npy_bytes(np.frombuffer(b"{not json", np.uint8))})))
checkpoint_case("manifest_wrong_type", lambda p: _rewrite_npz(p, lambda m: m.update(
    {"__graphc_checkpoint__.npy": _npy_bytes(np.frombuffer(b"[1, 2, 3]", np.uint8))})))
checkpoint_case("manifest_float_array", lambda p: _rewrite_npz(p, lambda m: m.update(
    {"__graphc_checkpoint__.npy": _npy_bytes(np.ones(3))})))
checkpoint_case("manifest_missing", lambda p: _rewrite_npz(
    p, lambda m: m.pop("__graphc_checkpoint__.npy")))
checkpoint_case("manifest_newer_version", lambda p: _edit_manifest(
    p, lambda m: m.update(version=99)), mentions=("model.npz", "newer"))
checkpoint_case("manifest_entries_garbage", lambda p: _edit_manifest(
    p, lambda m: m.update(entries="garbage")))
checkpoint_case("hash_mismatch", lambda p: _edit_manifest(
    p, lambda m: m["entries"][0].update(sha256="0" * 64)), mentions=("model.npz", "SHA-256"))
checkpoint_case("array_bytes_changed", lambda p: _rewrite_npz(p, lambda m: m.update(
    {"W.npy": _npy_bytes(np.zeros((3, 4), np.float32))})), mentions=("model.npz", "'W'"))
checkpoint_case("missing_array", lambda p: _rewrite_npz(p, lambda m: m.pop("b.npy")),
                mentions=("model.npz", "'b'"))
checkpoint_case("wrong_shape_in_file", lambda p: _rewrite_npz(p, lambda m: m.update(
    {"W.npy": _npy_bytes(np.zeros((4, 3), np.float32))})), mentions=("model.npz", "'W'"))
checkpoint_case("manifest_says_other_shape", lambda p: _edit_manifest(
    p, lambda m: m["entries"][0].update(shape=[4, 3])), mentions=("model.npz", "'W'"))
checkpoint_case("pickled_object_member", lambda p: _rewrite_npz(p, lambda m: m.update(
    {"W.npy": _npy_bytes_pickled()})), mentions=("model.npz",))
checkpoint_case("a_directory", lambda p: (p.unlink(), p.mkdir()),
                raises=("ValueError", "IsADirectoryError"), mentions=("model.npz",))
checkpoint_case("missing_file", lambda p: p.unlink(), raises=("FileNotFoundError",),
                mentions=("model.npz",))


def _npy_bytes_pickled():
    import io
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    return buf.getvalue()


@case("checkpoint_wrong_shape_for_parameter", "ValueError", ["model.npz", "'W'"],
      backends=("numpy",))
def _(be):
    with tempfile.TemporaryDirectory() as tmp:
        gc, params, path = _checkpoint(tmp)
        other = [gc.parameter(np.zeros((4, 3), np.float32), name="W"), params[1]]
        _expect_load_fails(other, path)


@case("checkpoint_wrong_dtype_for_parameter", "ValueError", ["model.npz", "'b'"],
      backends=("numpy",))
def _(be):
    with tempfile.TemporaryDirectory() as tmp:
        gc, params, path = _checkpoint(tmp)
        other = [params[0], gc.parameter(np.zeros(4, np.float32), name="b")]
        _expect_load_fails(other, path)


# ---- damaged compile-cache entries: detected, rebuilt, correct results --------------------

def _cache_fn(folder, times=None):
    """A fresh compiled function whose compile cache is `folder`: (outputs, loaded from the
    cache?); its compile_times go into `times` if given."""
    gc = _gc()
    x = gc.placeholder((8, 4), "float32", name="x")
    w = gc.parameter(np.linspace(-1, 1, 12).reshape(4, 3).astype(np.float32), name="w")
    y = gc.tanh(x @ w)
    f = gc.function([x], [y, gc.grad(gc.sum(y), w)], backend="llvm",
                    backend_options={"cache_dir": str(folder)})
    out = f(np.linspace(-2, 2, 32).reshape(8, 4).astype(np.float32))
    if times is not None:
        times.update(f.compile_times)
    return out, f._exe.last.cached


def _entries(folder, kind):
    """The whole-program entry ("program") or the per-kernel ones ("kernels") in folder."""
    from graphc.runtime.cache import CompileCache
    field = "object_lengths" if kind == "program" else "functions"
    return [p for p in sorted(Path(folder).glob("*.gco"))
            if field in (CompileCache(Path(folder)).get(p.stem) or ("", {}))[1]]


def _split_entry(data):
    """(magic, header, digest line, payload) of a cache entry."""
    from graphc.runtime.cache import MAGIC
    end = data.index(b"\n", len(MAGIC))
    digest_end = data.index(b"\n", end + 1)
    return MAGIC, json.loads(data[len(MAGIC):end]), data[end + 1:digest_end], \
        data[digest_end + 1:]


def _join_entry(magic, header, payload, digest=None):
    """An entry's bytes; `digest` None: a MAC that matches, signed with this user's key (as
    graphc writes it: a consistent entry, whose deeper checks are then under test)."""
    from graphc.runtime.cache import entry_mac
    from graphc.runtime.cache_secret import load_secret
    header_line = json.dumps(header).encode()
    if digest is None:
        digest = entry_mac(load_secret().key, header_line, payload)
    return magic + header_line + b"\n" + digest + b"\n" + payload


def _rehash(entry, edit_header=None, edit_payload=None, redigest=True):
    """Rewrites an entry with its header or payload edited; `redigest`: with a digest that
    matches the edit (a consistent entry), else the old one (damage on disk)."""
    magic, header, digest, payload = _split_entry(entry.read_bytes())
    if edit_payload:
        payload = edit_payload(payload)
        header.update(length=len(payload))
    if edit_header:
        edit_header(header)
    entry.write_bytes(_join_entry(magic, header, payload, None if redigest else digest))


def _with_header(entry, header_line: bytes):
    magic, _, digest, payload = _split_entry(entry.read_bytes())
    entry.write_bytes(magic + header_line + b"\n" + digest + b"\n" + payload)


def cache_case(name, damage, rebuilt=True, reused=True, xfail=None, kernels=True):
    """A fresh cache folder; a first compile fills it; the whole program's entry is damaged;
    the next compile must not crash, must give the same numbers and (if `rebuilt`) must have
    ignored and rebuilt the entry, which a third compile then loads. In process: a crash in
    the loader kills the child, which the parent reports. With `kernels`, a second case
    does the same to every per-kernel entry (the program's entry removed, so that the
    kernels are needed): none may be loaded (if `rebuilt`), each is compiled again."""
    def run(be):
        with tempfile.TemporaryDirectory() as tmp:
            first, cached = _cache_fn(tmp)
            assert cached is False
            (entry,) = _entries(tmp, "program")
            damage(entry)
            again, cached = _cache_fn(tmp)
            same_all(again, first, "after the damage")
            assert cached is (not rebuilt), f"loaded from the cache: {cached}"
            if reused:
                assert _cache_fn(tmp)[1] is True, "the rebuilt entry is not reused"
    case(f"cache_{name}", backends=("llvm",), xfail=xfail)(run)

    def run_kernels(be):
        with tempfile.TemporaryDirectory() as tmp:
            cold: dict = {}
            first, _ = _cache_fn(tmp, cold)
            units = _entries(tmp, "kernels")
            assert units and cold["kernels compiled"] == cold["kernels distinct"]
            for entry in _entries(tmp, "program"):
                entry.unlink()
            for entry in units:
                damage(entry)
            times: dict = {}
            again, cached = _cache_fn(tmp, times)
            same_all(again, first, "after the damage")
            assert cached is False
            loaded = times["kernels loaded"]
            assert (loaded == 0) if rebuilt else (loaded > 0), f"kernels loaded: {loaded}"
            if reused:
                for entry in _entries(tmp, "program"):
                    entry.unlink()
                times = {}
                _cache_fn(tmp, times)
                assert times["kernels loaded"] == times["kernels distinct"], \
                    "the rebuilt kernel entries are not reused"
    if kernels:
        case(f"cache_kernel_{name}", backends=("llvm",), xfail=xfail)(run_kernels)


cache_case("truncated_object", lambda e: e.write_bytes(e.read_bytes()[:-200]))
cache_case("truncated_in_header", lambda e: e.write_bytes(e.read_bytes()[:30]))
cache_case("empty_file", lambda e: e.write_bytes(b""))
cache_case("payload_bit_flip", lambda e: e.write_bytes(
    e.read_bytes()[:-50] + bytes([e.read_bytes()[-50] ^ 1]) + e.read_bytes()[-49:]))
cache_case("garbage_header", lambda e: _with_header(e, b"{garbage"))
cache_case("header_json_list", lambda e: _with_header(e, b"[1, 2]"))
cache_case("header_not_utf8", lambda e: _with_header(e, b"\xff\xfe{}"))
cache_case("header_wrong_key", lambda e: _rehash(e, lambda hd: hd.update(key="0" * 64)))
cache_case("header_wrong_length", lambda e: _rehash(e, lambda hd: hd.update(length=7)))
cache_case("wrong_magic", lambda e: e.write_bytes(b"GRAPHC-OBJECT-0" + e.read_bytes()[15:]))
cache_case("entry_is_a_directory", lambda e: (e.unlink(), e.mkdir()), reused=False)
cache_case("stray_temporary_file", lambda e: (e.parent / ".tmp-x.partial").write_bytes(
    b"half"), rebuilt=False)
cache_case("meta_garbage_with_valid_hash",
           lambda e: _rehash(e, lambda hd: hd.update(meta="garbage")))
cache_case("meta_errors_garbage_with_valid_hash",
           lambda e: _rehash(e, lambda hd: hd.update(meta={"errors": [1, 2]})))


def _edit_layout(edit):
    """Edits the buffer layout stored in an entry's header, as a bit flip in the header's
    digits would (the digest, which covers header and code, left as it was)."""
    def damage(entry):
        def edit_header(header):
            layout = header.get("meta", {}).get("layout")
            assert isinstance(layout, dict), "the entry format changed: update this test"
            edit(layout)
        _rehash(entry, edit_header, redigest=False)
    return damage


cache_case("header_output_rows_bit_flip",  # "[8, 3]" -> "[0, 3]" is one bit ('8' -> '0')
           _edit_layout(lambda lay: lay["outputs"][0][1].__setitem__(0, 0)), kernels=False)
cache_case("header_arena_bytes_bit_flip",
           _edit_layout(lambda lay: lay.update(arena_bytes=lay["arena_bytes"] // 16)),
           kernels=False)
cache_case("header_input_slot_changed",
           _edit_layout(lambda lay: lay.update(input_slots=[lay["arena_slot"]])),
           kernels=False)
# A consistent entry (digest recomputed) whose object code is cut short: caught by the
# loader's check of the object file itself, which LLVM would otherwise trust.
cache_case("consistent_header_truncated_object",
           lambda e: _rehash(e, edit_payload=lambda p: p[: len(p) // 2]))
# A consistent entry whose layout points an input at the arena's slot: caught by the
# layout's own checks.
cache_case("consistent_header_input_slot_on_the_arena",
           lambda e: _rehash(e, lambda h: h["meta"]["layout"].update(
               input_slots=[h["meta"]["layout"]["arena_slot"]])), kernels=False)


# ---- the child process ----------------------------------------------------------------

def child_main(backend: str, names: list[str]) -> None:
    for name in names:
        print(json.dumps({"start": name}), flush=True)
        c = CASES[f"{backend}:{name}"]
        try:
            c.fn(backend)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which judges
            result = {"status": "raised", "type": type(exc).__name__,
                      "mro": [k.__name__ for k in type(exc).__mro__],
                      "message": str(exc), "traceback": traceback.format_exc()[-3000:]}
        else:
            result = {"status": "returned"}
        print(json.dumps({"case": name, **result}), flush=True)


# ---- the parent: run each group's cases in children, restart after a crash ----------------

GROUPS = {be: [c.name for k, c in CASES.items() if k.startswith(be + ":")
               and not c.name.startswith(("checkpoint_", "cache_"))] for be in BACKENDS}
GROUPS["checkpoint"] = [c.name for k, c in CASES.items() if c.name.startswith("checkpoint_")]
GROUPS["cache"] = [c.name for k, c in CASES.items() if c.name.startswith("cache_")]
GROUP_BACKEND = {"numpy": "numpy", "llvm": "llvm", "checkpoint": "numpy", "cache": "llvm"}


@functools.lru_cache(maxsize=None)
def outcomes(group: str) -> dict[str, dict]:
    """Every case of `group`, run in as few child processes as possible: a case that kills
    its child is recorded as a crash (exit status, stderr) and the rest run in a new one."""
    backend = GROUP_BACKEND[group]
    results: dict[str, dict] = {}
    timed = [n for n in GROUPS[group] if CASES[f"{backend}:{n}"].timeout]
    for name in timed:
        results.update(_run_children(backend, [name], CASES[f"{backend}:{name}"].timeout))
    pending = [n for n in GROUPS[group] if n not in timed]
    results.update(_run_children(backend, pending, CHILD_TIMEOUT))
    return results


def _run_children(backend: str, pending: list[str], timeout: float) -> dict[str, dict]:
    results: dict[str, dict] = {}
    while pending:
        proc = subprocess.Popen([sys.executable, __file__, backend, *pending],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
            hung = False
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
            hung = True
        running = None
        for line in stdout.splitlines():
            if not line.startswith("{"):
                continue
            record = json.loads(line)
            if "start" in record:
                running = record["start"]
            else:
                results[record["case"]] = record
                running = None
        if running is None and (hung or proc.returncode != 0):
            running = next((n for n in pending if n not in results), None)
        if running is not None:
            results[running] = {"case": running, "status": "hung" if hung else "crashed",
                                "returncode": proc.returncode, "stderr": stderr[-3000:]}
        left = [n for n in pending if n not in results]
        if len(left) == len(pending):  # no progress at all: report, never loop
            for n in left:
                results[n] = {"case": n, "status": "crashed", "returncode": proc.returncode,
                              "stderr": stderr[-3000:]}
            left = []
        pending = left
    return results


def _params():
    import pytest
    out = []
    for group in ("numpy", "llvm", "checkpoint", "cache"):
        for name in GROUPS[group]:
            c = CASES[f"{GROUP_BACKEND[group]}:{name}"]
            marks = [pytest.mark.xfail(strict=True, reason=c.xfail)] if c.xfail else []
            out.append(pytest.param(group, name, id=f"{group}-{name}", marks=marks))
    return out


def _judge(group: str, name: str) -> None:
    c = CASES[f"{GROUP_BACKEND[group]}:{name}"]
    got = outcomes(group)[name]
    assert got["status"] not in ("crashed", "hung"), \
        f"{name}: the child process {got['status']} (exit status {got.get('returncode')})" \
        f"\n{got.get('stderr', '')}"
    if c.raises is None:
        assert got["status"] == "returned", \
            f"{name}: expected it to work, got {got.get('type')}: {got.get('message')}\n" \
            f"{got.get('traceback', '')}"
        return
    assert got["status"] == "raised", f"{name}: expected {c.raises}, but it returned"
    assert set(c.raises) & set(got["mro"]), \
        f"{name}: expected {c.raises}, got {got['type']}: {got['message']}\n{got['traceback']}"
    for pattern in c.mentions:
        assert re.search(pattern, got["message"]), \
            f"{name}: the message does not match {pattern!r}: {got['message']}"


if __name__ == "__main__":
    child_main(sys.argv[1], sys.argv[2:])
else:
    import pytest

    @pytest.mark.parametrize("group,name", _params())
    def test_bad_input(group, name):
        _judge(group, name)
