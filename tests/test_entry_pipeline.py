"""The entry point's module (one loop over constant tables) is compiled with the light
pipeline and the level-0 code generator: it says so in its first line, runs every kernel in
order with its status checked, and f.asm shows the code it was compiled to."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.backends.llvm import jit


def _step(backend: str):
    x = gc.placeholder((None, 5), name="x")
    w = gc.parameter(np.linspace(-1, 1, 15, dtype=np.float32).reshape(5, 3), name="w")
    loss = gc.tanh(x @ w).sum()
    return gc.function([x], [loss, gc.grad(loss, [w])[0]], backend=backend)


def test_the_entry_module_is_light_and_runs_every_kernel_in_order():
    f, ref = _step("llvm"), _step("numpy")
    xv = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32)
    for got, want in zip(f(xv), ref(xv)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    entry = f.source.split("; ---- module 1 of")[0].split("\n", 1)[-1] \
        if f.source.startswith("; ---- module 0 of") else f.source
    assert entry.startswith(jit.LIGHT) and jit.ENTRY in entry
    assert jit.ENTRY in f.asm


def test_the_entry_still_reports_a_failing_kernel():
    """A kernel's status (an index out of range) goes through the light entry's check."""
    table = gc.parameter(np.arange(12, dtype=np.float32).reshape(4, 3), name="table")
    idx = gc.placeholder((None,), "int64", name="idx")
    f = gc.function([idx], table[idx].sum(), backend="llvm")
    assert f(np.array([0, 3], np.int64)) == pytest.approx(0 + 1 + 2 + 9 + 10 + 11)
    with pytest.raises(IndexError):
        f(np.array([0, 4], np.int64))
