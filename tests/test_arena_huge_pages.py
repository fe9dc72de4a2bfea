"""A symbolic program's arena in 2 MiB pages (backends/llvm/arena.py): after a binding's first
call the helper collapses the pages that call wrote, beside later calls. The bytes must stay
what they were, and a CNN step with BatchNorm (W6's kernel classes: im2col and col2im of a
stride-2 convolution, BatchNorm's reductions over a call-time batch) must give the numpy
backend's results at every batch while and after its arena's pages are collapsed."""
from __future__ import annotations

import ctypes
import mmap

import numpy as np
import pytest

import graphc as gc
from graphc.backends.llvm import arena as arena_module

MiB = 1 << 20


def _huge_kib(array: np.ndarray) -> int:
    """AnonHugePages of the mappings that hold `array` (/proc/self/smaps)."""
    lo_addr = array.ctypes.data
    hi_addr = lo_addr + array.nbytes
    total, inside = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(v, 16) for v in head.split("-"))
                inside = lo < hi_addr and hi > lo_addr
            elif inside and line.startswith("AnonHugePages:"):
                total += int(line.split()[1])
    return total


def _collapse_works() -> bool:
    """Whether this kernel collapses written pages into 2 MiB pages (MADV_COLLAPSE, 25:
    Linux 6.1, THP not off)."""
    memory = mmap.mmap(-1, 8 * MiB, flags=mmap.MAP_PRIVATE)
    array = np.frombuffer(memory, np.uint8)
    array[::4096] = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    start = array.ctypes.data + (-array.ctypes.data % (2 * MiB))
    ok = libc.madvise(start, 2 * MiB, 25) == 0 and \
        _huge_kib(array) > 0
    del array
    memory.close()
    return ok


def test_the_helper_collapses_a_bindings_written_pages_and_keeps_their_bytes():
    arena = arena_module.Arena()
    nbytes = 13 * MiB + 12345  # (not a whole number of 2 MiB pages)
    assert arena.fit(nbytes)
    base = arena.array.ctypes.data
    pattern = (np.arange(nbytes, dtype=np.int64) % 251).astype(np.uint8)
    arena.array[:nbytes] = pattern  # (the binding's call writes its bytes)
    arena.ahead(nbytes)
    job = arena._job
    assert job is not None and job.huge is not None and job.done.wait(30)
    first, last = job.huge
    # whole 2 MiB pages inside the written bytes, every one of them
    assert first % (2 * MiB) == 0 and last % (2 * MiB) == 0
    assert 0 <= first - base < 2 * MiB
    assert last <= base + nbytes < last + 2 * MiB
    np.testing.assert_array_equal(arena.array[:nbytes], pattern)
    if _collapse_works():
        assert _huge_kib(arena.array) >= (last - first) // 1024 // 2
    # the same binding again: nothing more to collapse, nothing to map within the room
    arena.ahead(nbytes)
    assert arena._job is job
    # a larger binding grows the mapping: its bytes are collapsed afresh, kept all the same
    assert arena.fit(3 * nbytes)
    arena.array[nbytes:3 * nbytes] = 9
    arena.ahead(3 * nbytes)
    assert arena._job is not job and arena._job.huge is not None
    assert arena._job.done.wait(30)
    np.testing.assert_array_equal(arena.array[:nbytes], pattern)
    assert (arena.array[nbytes:3 * nbytes] == 9).all()


def test_a_small_arena_stays_in_small_pages():
    arena = arena_module.Arena()
    nbytes = arena_module.MIN_HUGE - 4096
    arena.fit(nbytes)
    arena.array[:nbytes] = 1
    arena.ahead(nbytes)
    assert arena._job is None or arena._job.huge is None


def _bn(x, g, b):
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    var = ((x - mean) ** 2).mean(axis=(0, 2, 3), keepdims=True)
    return (x - mean) / gc.sqrt(var + 1e-5) * g.reshape(1, -1, 1, 1) + b.reshape(1, -1, 1, 1)


def _step(backend: str, options: dict | None):
    """A small W6: conv3x3 + BatchNorm + ReLU, a stride-2 conv3x3 + BatchNorm + ReLU, global
    average pool, dense, cross-entropy; the loss and every parameter's gradient."""
    rng = np.random.default_rng(3)
    x = gc.placeholder((None, 1, 28, 28), name="x")
    y = gc.placeholder((None,), "int64", name="y")
    w1 = gc.parameter((rng.normal(size=(8, 1, 3, 3)) * 0.5).astype(np.float32), name="w1")
    w2 = gc.parameter((rng.normal(size=(16, 8, 3, 3)) * 0.2).astype(np.float32), name="w2")
    g1, b1 = (gc.parameter(rng.normal(size=8).astype(np.float32), name=n) for n in "gb")
    g2, b2 = (gc.parameter(rng.normal(size=16).astype(np.float32), name=n + "2")
              for n in "gb")
    wd = gc.parameter((rng.normal(size=(16, 10)) * 0.3).astype(np.float32), name="wd")
    h = gc.relu(_bn(gc.nn.conv2d(x, w1, padding=1), g1, b1))
    h = gc.relu(_bn(gc.nn.conv2d(h, w2, stride=2, padding=1), g2, b2))
    loss = gc.nn.cross_entropy(h.mean(axis=(2, 3)) @ wd, y)
    params = [w1, g1, b1, w2, g2, b2, wd]
    return gc.function([x, y], [loss, *gc.grad(loss, params)], backend=backend,
                       backend_options=options)


def _data(batch: int):
    rng = np.random.default_rng(batch)
    return rng.normal(size=(batch, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, batch)


@pytest.mark.parametrize("threads", ["1", "2"])
def test_a_bn_cnn_step_is_right_on_a_collapsed_arena_at_every_batch(threads, monkeypatch):
    monkeypatch.setenv("GRAPHC_NUM_THREADS", threads)
    sym = _step("llvm", {"sizes": "symbolic", "cache_dir": None})
    ref = _step("numpy", None)
    collapsed = False
    for batch in (85, 1, 7, 85, 85):
        args = _data(batch)
        got = sym(*args)
        want = ref(*args)
        for u, v in zip(got, want):
            u, v = np.asarray(u), np.asarray(v)
            np.testing.assert_allclose(u, v, rtol=2e-4, atol=2e-4 * (1 + np.abs(v).max()))
        job = sym._exe.symbolic.memory._job
        if batch == 85 and job is not None and job.huge is not None:
            collapsed = True
            assert job.done.wait(30)  # (the next call at 85 runs on the collapsed pages)
    assert sym._exe.not_symbolic is None and sym._exe.compiled == {}
    assert collapsed  # (the arena at batch 85 is several MiB: its pages were collapsed)


@pytest.mark.skipif(not hasattr(__import__("os"), "SCHED_IDLE"), reason="Linux scheduling")
def test_the_helper_runs_at_idle_priority():
    """Its madvise calls (the kernel's compaction, where memory is fragmented) must take no
    core from the calls' thread teams."""
    import os
    arena = arena_module.Arena()
    arena.fit(8 * MiB)
    arena.array[::4096] = 1
    arena.ahead(8 * MiB)
    helper = arena_module._the_helper()
    if helper is None or helper.thread is None:
        pytest.skip("no madvise helper on this platform")
    assert arena._job is not None and arena._job.done.wait(10)
    assert os.sched_getscheduler(helper.thread.native_id) == os.SCHED_IDLE
