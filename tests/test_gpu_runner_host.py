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

    def __getitem__(self, key) -> "FakeArray":
        return FakeArray(self.a[key], self.calls)

    def view(self, dtype) -> "FakeArray":
        return FakeArray(self.a.view(dtype), self.calls)

    def reshape(self, shape) -> "FakeArray":
        return FakeArray(self.a.reshape(shape), self.calls)

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
    v = gc.parameter(np.ones((2, 3), "float64"), name="v")  # read, never written
    w = gc.parameter(np.arange(4, dtype="float32"), name="w")
    f = gc.function([x], x * w * gc.sum(v), updates={w: w + x}, backend="cuda",
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
    before = calls["set"]  # (the parameters' first upload)
    runner.run([x])
    runner.run([x])
    assert calls["set"] - before == 1  # the first step's addresses (not known before it)
    runner.run([FakeArray(np.ones(4, "float32"), calls)])  # another input array
    assert calls["set"] - before == 2
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
    written, read = runner.params  # the updated one first in the device block
    assert written.slot in runner.written and read.slot not in runner.written
    assert written.device.data.ptr % 256 == read.device.data.ptr % 256  # (both aligned)
    written.device.a[...] = 7  # what the step's kernels left on the device
    read.device.a[...] = 5  # (never copied back: the step does not write it)
    gets = calls["get"]
    runner.run([x])
    assert calls["get"] - gets == 2  # the status word, and every update in one copy
    np.testing.assert_array_equal(w.value, np.full(4, 7, "float32"))
    np.testing.assert_array_equal(read.storage.array, np.ones((2, 3)))
    sets = calls["set"]
    written.storage.array[...] = 3  # a change made on the host goes up before the step
    runner.run([x])
    assert calls["set"] == sets + 1 and written.device.a[0] == 3
