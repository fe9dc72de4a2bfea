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


class FakeGraph:
    def __init__(self, captured: list, calls: Counter) -> None:
        self.captured, self.calls = captured, calls

    def launch(self, stream=None) -> None:
        self.calls["graph launch"] += 1
        for run in self.captured:
            run()


class FakeStream:
    """A stream whose capture records launches instead of running them."""

    def __init__(self, cp: types.ModuleType, calls: Counter, refuse: bool) -> None:
        self.cp, self.calls, self.refuse = cp, calls, refuse

    def __enter__(self) -> "FakeStream":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def begin_capture(self) -> None:
        if self.refuse:
            raise RuntimeError("cudaErrorStreamCaptureUnsupported")
        self.cp.capturing = []

    def end_capture(self) -> FakeGraph:
        graph = FakeGraph(self.cp.capturing, self.calls)
        self.cp.capturing = None
        return graph


def fake_cupy(calls: Counter, failing: set, refuse_capture: bool = False) -> types.ModuleType:
    """CuPy as GpuRunner uses it; `empty` hands back one array per shape, as a memory pool
    does for a step's outputs; a kernel named in `failing` sets the status word."""
    cp = types.ModuleType("cupy")
    cp.capturing = None
    pool: dict = {}

    def asarray(x):
        return x if isinstance(x, FakeArray) else FakeArray(np.array(x), calls)

    def kernel(name):
        def run(args):
            calls["launch"] += 1
            if name in failing:
                args[1].a[0] = 1

        def launch(grid, block, args):
            calls["python launch"] += 1
            if cp.capturing is not None:
                cp.capturing.append(lambda: run(args))
            else:
                run(args)
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
    cp.cuda = types.SimpleNamespace(
        Stream=lambda non_blocking=False: FakeStream(cp, calls, refuse_capture),
        get_current_stream=lambda: None)
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


def _runner(monkeypatch, parts, failing=frozenset(), refuse_capture=False):
    from graphc.backends.cuda.gpu import GpuRunner
    calls: Counter = Counter()
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(calls, set(failing), refuse_capture))
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
    runner.graph = None  # (captured again with the kernels that do not fail)
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


def test_the_second_call_captures_a_graph_that_later_calls_replay(monkeypatch, runner_parts):
    compiled = runner_parts[0]
    runner, calls = _runner(monkeypatch, runner_parts)
    kernels = len(compiled.launches)
    x = FakeArray(np.ones(4, "float32"), calls)
    runner.run([x])
    assert (calls["launch"], calls["python launch"], calls["graph launch"]) == (kernels,) * 2 + (0,)
    runner.run([x])  # captured (nothing runs), then run once as a graph
    assert (calls["launch"], calls["python launch"], calls["graph launch"]) == (
        2 * kernels, 2 * kernels, 1)
    runner.run([FakeArray(np.ones(4, "float32"), calls)])  # new addresses: the same graph
    assert (calls["launch"], calls["python launch"], calls["graph launch"]) == (
        3 * kernels, 2 * kernels, 2)


def test_a_step_that_cannot_be_captured_launches_kernel_by_kernel(monkeypatch, runner_parts):
    runner, calls = _runner(monkeypatch, runner_parts, refuse_capture=True)
    kernels = len(runner_parts[0].launches)
    x = FakeArray(np.ones(4, "float32"), calls)
    runner.run([x])
    with pytest.warns(RuntimeWarning, match="could not be captured as a CUDA graph"):
        runner.run([x])
    runner.run([x])
    assert calls["launch"] == 3 * kernels and calls["graph launch"] == 0
    assert not runner.capturable


def test_steps_with_a_loop_are_never_captured(monkeypatch, tmp_path):
    """A scan's loop decides its steps' tables on the host as it goes."""
    x = gc.placeholder((5, 3), "float32", name="x")
    h, _ = gc.scan(lambda c, xt: (c * 0.5 + xt, c), gc.zeros((3,), "float32"), x)
    f = gc.function([x], h, backend="cuda",
                    backend_options={"emulate": True, "cache_dir": str(tmp_path)})
    f(np.ones((5, 3), "float32"))
    compiled = f._exe.last
    runner, calls = _runner(monkeypatch, (compiled, [], [], None))
    assert not runner.capturable


@pytest.mark.parametrize("a, b, same", [
    (np.array([1.0, np.nan]), np.array([1.0, np.nan]), True),
    (np.array([0.0], "float32"), np.array([-0.0], "float32"), False),  # a change to upload
    (np.float64(2.5) * np.ones(()), np.float64(2.5) * np.ones(()), True),  # 0-d
    (np.array([[1, 2], [3, 4]], "int16"), np.array([[1, 2], [3, 5]], "int16"), False),
    (np.array([True, False]), np.array([True, False]), True),
    (np.array([1 + 2j], "complex128"), np.array([1 + 3j], "complex128"), False),
])
def test_parameters_are_compared_by_their_bytes(a, b, same):
    from graphc.backends.cuda.gpu import same_bytes
    assert same_bytes(a, b) is same
