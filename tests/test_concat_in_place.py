"""Concatenation written in place (schedule/concat_in_place.py): the kernels that make the
pieces store them into the concatenation; values equal numpy's."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.schedule import ir, schedule_graph

RNG = np.random.default_rng(3)


def _guarded(schedule: ir.Schedule) -> int:
    """How many kernels read through guards (a concatenation that still copies)."""
    return sum(any(ld.guard is not None for body in k.bodies() for ld in ir.expr_loads(body))
               for k in schedule.kernels)


def _check(inputs, outputs, args, want, guarded: int) -> None:
    schedule = schedule_graph(gc.function(inputs, outputs, backend="numpy").graph)
    assert _guarded(schedule) == guarded
    for backend, options in (("llvm", {}), ("numpy", {"mode": "kernels"})):
        got = gc.function(inputs, outputs, backend=backend, backend_options=options)(*args)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)


def test_the_gradients_of_gate_slices_are_stored_into_one_array():
    """An LSTM's gates: the gradient of z (N, 4H) is four slices' gradients, put together."""
    n, h = 6, 5
    z = gc.placeholder((n, 4 * h), "float64", name="z")
    c = gc.placeholder((n, h), "float64", name="c")
    i, f, g, o = (z[:, k * h:(k + 1) * h] for k in range(4))
    c2 = gc.sigmoid(f) * c + gc.sigmoid(i) * gc.tanh(g)
    loss = gc.sum(gc.sigmoid(o) * gc.tanh(c2))
    zv, cv = RNG.standard_normal((n, 4 * h)), RNG.standard_normal((n, h))
    grad = gc.grad(loss, z)
    eps, want = 1e-6, np.zeros_like(zv)
    f_loss = gc.function([z, c], loss, backend="numpy")
    for idx in np.ndindex(*zv.shape):
        d = np.zeros_like(zv)
        d[idx] = eps
        want[idx] = (f_loss(zv + d, cv) - f_loss(zv - d, cv)) / (2 * eps)
    schedule = schedule_graph(gc.function([z, c], [grad], backend="numpy").graph)
    assert _guarded(schedule) == 0
    for backend, options in (("llvm", {}), ("numpy", {"mode": "kernels"})):
        got = gc.function([z, c], [grad], backend=backend, backend_options=options)(zv, cv)
        np.testing.assert_allclose(got[0], want, rtol=1e-7, atol=1e-8)


def test_concatenate_of_computed_pieces():
    a = gc.placeholder((4, 3), "float64", name="a")
    b = gc.placeholder((4, 5), "float64", name="b")
    out = gc.concatenate([gc.exp(a), gc.sin(b) * 2.0], axis=1)
    av, bv = RNG.standard_normal((4, 3)), RNG.standard_normal((4, 5))
    _check([a, b], [out], [av, bv], [np.concatenate([np.exp(av), np.sin(bv) * 2], 1)], 0)


@pytest.mark.parametrize("case", ["piece_is_an_output", "gap"])
def test_not_in_place_where_it_is_not_legal(case):
    a = gc.placeholder((4, 3), "float64", name="a")
    b = gc.placeholder((4, 5), "float64", name="b")
    av, bv = RNG.standard_normal((4, 3)), RNG.standard_normal((4, 5))
    if case == "piece_is_an_output":  # (the piece is read by the program's output too)
        pa = gc.exp(a)
        outs = [gc.concatenate([pa, gc.sin(b)], axis=1), pa * 3.0]
        want = [np.concatenate([np.exp(av), np.sin(bv)], 1), np.exp(av) * 3]
    else:  # zeros between the pieces
        outs = [gc.pad(gc.concatenate([gc.exp(a), gc.sin(b)], axis=1), ((0, 0), (0, 2)))]
        want = [np.pad(np.concatenate([np.exp(av), np.sin(bv)], 1), ((0, 0), (0, 2)))]
    schedule = schedule_graph(gc.function([a, b], outs, backend="numpy").graph)
    for backend, options in (("llvm", {}), ("numpy", {"mode": "kernels"})):
        got = gc.function([a, b], outs, backend=backend, backend_options=options)(av, bv)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)
    assert _guarded(schedule) == 1  # (the concatenation still reads its pieces)
