"""The host side of the GPU runner (backends/cuda/gpu.py), run against a stand-in for CuPy
that records what would reach the device: the pointer table is uploaded again only when an
address changed, the status word is reset only after a step that left it nonzero, and
parameters changed on the host go up before a step and updated ones come back after it.
(The kernels themselves run on a real GPU in benchmarks/gpu_checks.sh.)"""
from __future__ import annotations

import sys
import types
from collections import Counter

import numpy as np
import pytest

import graphc as gc


class FakeArray:
    def __init__(self, array: np.ndarray, calls: Counter) -> None:
        self.a, self.calls = array, calls
        self.data = types.SimpleNamespace(ptr=array.ctypes.data)
        self.shape, self.dtype = array.shape, array.dtype

    def set(self, host: np.ndarray) -> None:
        self.calls["set"] += 1
        self.a[...] = host

    def fill(self, value: int) -> None:
        self.calls["fill"] += 1
        self.a.fill(value)

    def get(self, out: np.ndarray | None = None) -> np.ndarray:
        self.calls["get"] += 1
        if out is None:
            return self.a.copy()
        out[...] = self.a
        return out


def fake_cupy(calls: Counter, failing: set) -> types.ModuleType:
    """CuPy as GpuRunner uses it; `empty` hands back one array per shape, as a memory pool
    does for a step's outputs; a kernel named in `failing` sets the status word."""
    cp = types.ModuleType("cupy")
    pool: dict = {}

    def asarray(x):
        return x if isinstance(x, FakeArray) else FakeArray(np.array(x), calls)

    def kernel(name):
        def launch(grid, block, args):
            calls["launch"] += 1
            if name in failing:
                args[1].a[0] = 1
        return launch

    cp.asarray = asarray
    cp.ascontiguousarray = lambda x: x
    cp.asnumpy = lambda x: x.a.copy()
    cp.empty = lambda shape, dtype: pool.setdefault(
        (tuple(np.atleast_1d(shape)), np.dtype(dtype)),
        FakeArray(np.empty(shape, dtype), calls))
    cp.zeros = lambda n, dtype: FakeArray(np.zeros(n, dtype), calls)
    cp.uint8, cp.int32 = np.uint8, np.int32
    cp.RawModule = lambda path: types.SimpleNamespace(get_function=kernel)
    return cp


@pytest.fixture
def runner_parts(tmp_path):
    """A compiled step (layout, launches, parameter storages) from the emulated backend."""
    x = gc.placeholder((4,), "float32", name="x")
    w = gc.parameter(np.arange(4, dtype="float32"), name="w")
    f = gc.function([x], x * w, updates={w: w + x}, backend="cuda",
                    backend_options={"emulate": True, "cache_dir": str(tmp_path)})
    f(np.ones(4, "float32"))
    compiled = f._exe.last
    written = sorted({compiled.rendered.slots.slot[b] for k in compiled.schedule.kernels
                      for b in k.writes() if b in compiled.schedule.params})
    return compiled, f._exe._fingerprint[1], written, w


def _runner(monkeypatch, parts, failing=frozenset()):
    from graphc.backends.cuda.gpu import GpuRunner
    calls: Counter = Counter()
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(calls, set(failing)))
    compiled, storages, written, _ = parts
    runner = GpuRunner(b"", compiled.layout, compiled.launches, storages, written, "cupy")
    return runner, calls


def test_the_table_goes_up_again_only_when_an_address_changed(monkeypatch, runner_parts):
    runner, calls = _runner(monkeypatch, runner_parts)
    x = FakeArray(np.ones(4, "float32"), calls)
    runner.run([x])
    runner.run([x])
    assert calls["set"] == 1  # the first step's addresses (made before any was known)
    runner.run([FakeArray(np.ones(4, "float32"), calls)])  # another input array
    assert calls["set"] == 2
    assert calls["launch"] > 0 and calls["fill"] == 0  # the status word stayed zero


def test_the_status_word_is_reset_after_a_failed_step(monkeypatch, runner_parts):
    compiled = runner_parts[0]
    runner, calls = _runner(monkeypatch, runner_parts, {compiled.launches[0].name})
    x = FakeArray(np.ones(4, "float32"), calls)
    with pytest.raises((IndexError, ValueError)):
        runner.run([x])
    assert calls["fill"] == 0
    runner.functions = [(runner.module.get_function("never fails"), L, body)
                        for _, L, body in runner.functions]
    runner.run([x])  # the word is zeroed before this step's kernels
    assert calls["fill"] == 1
    runner.run([x])
    assert calls["fill"] == 1


def test_parameters_go_up_when_changed_and_come_back_updated(monkeypatch, runner_parts):
    runner, calls = _runner(monkeypatch, runner_parts)
    w = runner_parts[3]
    x = FakeArray(np.ones(4, "float32"), calls)
    (_, storage, dev, _), = runner.params
    dev.a[...] = 7  # what the step's kernels left on the device
    runner.run([x])
    np.testing.assert_array_equal(w.value, np.full(4, 7, "float32"))
    storage.array[...] = 3  # a change made on the host
    runner.run([x])
    assert calls["set"] >= 1 and dev.a[0] == 3
