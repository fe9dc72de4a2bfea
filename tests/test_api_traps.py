"""Small API traps that used to give a wrong number or a puzzling error: cross_entropy's label
forms, gc.hessian over a list, f.report.table(), pickling a Function, and numpy or Python
conversions of a symbolic tensor."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

import graphc as gc

BACKENDS = ["numpy", "llvm"]


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


# ---- cross_entropy label forms -------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cross_entropy_integer_and_probability_labels(dtype, backend):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(4, 4)).astype(dtype)  # N == number of classes: the old trap
    idx = np.array([0, 3, 1, 1])
    probs = rng.dirichlet(np.ones(4), size=4).astype(dtype)
    logits = gc.placeholder((None, 4), dtype, name="logits")
    ints = gc.placeholder((None,), "int64", name="labels")
    rows = gc.placeholder((None, 4), dtype, name="probs")
    f = gc.function([logits, ints, rows], [gc.nn.cross_entropy(logits, ints),
                                           gc.nn.cross_entropy(logits, rows)], backend=backend)
    a, b = f(z, idx, probs)
    logp = _log_softmax(z.astype(np.float64))
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(a, -logp[np.arange(4), idx].mean(), rtol=tol)
    np.testing.assert_allclose(b, -(probs * logp).sum(axis=-1).mean(), rtol=tol)


@pytest.mark.parametrize("labels,error,words", [
    # float labels shaped like class indices: used to broadcast into a wrong number
    (((4,), "float32"), ValueError, ["labels (4,) float32", "astype('int64')", "(4, 4)"]),
    (((3,), "float32"), ValueError, ["labels (3,) float32", "probability rows", "(4, 4)"]),
    (((4, 2), "int64"), ValueError, ["labels (4, 2) int64", "class indices of shape (4,)"]),
    (((3,), "int64"), ValueError, ["labels (3,) int64", "class indices of shape (4,)"]),
    (((4,), "bool"), TypeError, ["labels (4,) bool", "dtype"]),
])
def test_cross_entropy_rejects_labels_it_cannot_read(labels, error, words):
    logits = gc.placeholder((4, 4), "float32")
    with pytest.raises(error) as info:
        gc.nn.cross_entropy(logits, gc.placeholder(*labels))
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    assert "mul" not in str(info.value)


def test_cross_entropy_float_labels_with_call_time_batch():
    logits = gc.placeholder((None, 3), "float64")
    with pytest.raises(ValueError, match="astype"):
        gc.nn.cross_entropy(logits, gc.placeholder((None,), "float64"))


# ---- gc.hessian over several inputs ---------------------------------------------------------

def test_hessian_of_a_list_gives_the_blocks():
    x = gc.placeholder((2,), "float64", name="x")
    w = gc.placeholder((3,), "float64", name="w")
    y = gc.sum(gc.sin(x)) * gc.sum(w * w) + gc.sum(x) * gc.sum(w ** 3)
    blocks = gc.hessian(y, [x, w])
    assert [[b.shape for b in row] for row in blocks] == [[(2, 2), (2, 3)], [(3, 2), (3, 3)]]
    xv, wv = np.array([0.3, -0.7]), np.array([1.0, 2.0, -0.5])
    got = gc.function([x, w], [b for row in blocks for b in row], backend="numpy")(xv, wv)
    s, q, t = np.sum(wv * wv), np.sum(np.sin(xv)), np.sum(xv)
    want = [np.diag(-np.sin(xv)) * s, np.outer(np.cos(xv), 2 * wv) + 3 * wv ** 2,
            (np.outer(np.cos(xv), 2 * wv) + 3 * wv ** 2).T, 2 * q * np.eye(3) + np.diag(6 * t * wv)]
    for g, h in zip(got, want):
        np.testing.assert_allclose(g, h, rtol=1e-12, atol=1e-12)
    # the diagonal blocks are gc.hessian of each input alone
    hx = gc.function([x, w], gc.hessian(y, x), backend="numpy")(xv, wv)
    np.testing.assert_allclose(hx, got[0], rtol=1e-12)


def test_hessian_names_what_is_wrong():
    x = gc.placeholder((2,), "float64")
    with pytest.raises(TypeError, match="y must be a scalar Tensor"):
        gc.hessian(3.0, x)
    with pytest.raises(TypeError, match="x must be a Tensor or a list"):
        gc.hessian(gc.sum(x), {"x": x})
    with pytest.raises(TypeError, match=r"hessian x\[1\]"):
        gc.hessian(gc.sum(x), [x, 2.0])


# ---- compiled functions ---------------------------------------------------------------------

def test_report_table_is_the_report_text():
    x = gc.placeholder((3,), "float64")
    f = gc.function([x], gc.exp(gc.log(x)) * 1.0, backend="numpy")
    text = f.report.table()
    assert text == str(f.report) and "canonicalize" in text and "optimizer:" in text
    assert "f.report.table()" in gc.Function.report.__doc__


@pytest.mark.parametrize("backend", BACKENDS)
def test_pickling_a_function_is_refused_with_what_to_do(backend):
    x = gc.placeholder((3,), "float32")
    f = gc.function([x], x * 2.0, backend=backend)
    with pytest.raises(TypeError, match="cannot be pickled") as info:
        pickle.dumps(f)
    assert "gc.function" in str(info.value) and "p.value" in str(info.value)


# ---- a symbolic tensor has no values ------------------------------------------------------

@pytest.mark.parametrize("convert", [np.asarray, np.array, float, int, complex,
                                     lambda t: [1, 2, 3][t], lambda t: range(t)])
def test_converting_a_symbolic_tensor_to_numbers_says_why_not(convert):
    x = gc.placeholder((), "float32")
    with pytest.raises(TypeError, match="no values yet.*gc.function"):
        convert(x)


def test_numpy_operands_still_combine_with_tensors():
    x = gc.placeholder((2,), "float64")
    f = gc.function([x], [np.ones(2) + x, np.float64(2.0) * x], backend="numpy")
    a, b = f(np.array([1.0, 2.0]))
    np.testing.assert_array_equal(a, [2.0, 3.0])
    np.testing.assert_array_equal(b, [2.0, 4.0])
