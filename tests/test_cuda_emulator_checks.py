"""Seeded mutations of generated CUDA kernels, each of which the emulator must catch by its
own checks (a divergent barrier, a shuffle reading an exited lane, an out-of-bounds access,
a shared-memory race left by a dropped __syncthreads or a dropped __syncwarp, two blocks
writing one element once an atomic add is made plain). The unmutated kernels pass the same
runs."""
from __future__ import annotations

import re

import numpy as np
import pytest

import graphc as gc
from graphc.backends.cuda.emulate import compile_library
from graphc.backends.cuda.render import render
from graphc.backends.cuda.runtime import EmulatedRunner
from graphc.fingerprint import graph_fingerprint
from graphc.runtime.layout import Layout
from graphc.schedule import schedule_graph

pytestmark = pytest.mark.slow  # each case compiles its program with the host C++ compiler

RNG = np.random.default_rng(4)
F64 = "float64"


def _program(kind: str):
    """(inputs, output, arguments) of a program whose main kernel is of `kind`."""
    if kind == "scatter":  # the gradient of a gather: 2000 adds over 8 blocks into 10 slots
        x, u = gc.placeholder((10,), F64, "x"), gc.placeholder((2000,), F64, "u")
        idx = RNG.integers(0, 10, size=2000)
        out = gc.grad(gc.sum(gc.take(x, idx) * u), x)
        return [x, u], out, [RNG.normal(size=10), RNG.normal(size=2000)]
    if kind == "gemm":  # k = 40: three 16-wide slices through shared memory
        a, b = gc.placeholder((70, 40), F64, "a"), gc.placeholder((40, 50), F64, "b")
        return [a, b], a @ b, [RNG.normal(size=(70, 40)), RNG.normal(size=(40, 50))]
    if kind == "warp_rows":  # rows of 100: a warp per row, shuffles
        x = gc.placeholder((9, 100), F64, "x")
        return [x], gc.sum(x, axis=1), [RNG.normal(size=(9, 100))]
    if kind.startswith("softmax_"):  # one fused kernel (backends/cuda/softmax.py)
        n = {"softmax_warp": 100, "softmax_block": 1500, "softmax_online": 5000}[kind]
        x = gc.placeholder((9, n), F64, "x")
        return [x], gc.softmax(x, axis=1), [RNG.normal(size=(9, n))]
    x = gc.placeholder((3, 2000), F64, "x")  # a block per row: shuffles, shared memory
    return [x], gc.sum(x, axis=1), [RNG.normal(size=(3, 2000))]


def _run(kind: str, mutate=None, seed: int = 0, zeros: bool = False):
    """The program's result with its CUDA source mutated by `mutate` (text -> text); with
    `zeros`, on zero arguments."""
    inputs, out, args = _program(kind)
    if zeros:
        args = [np.zeros_like(a) for a in args]
    f = gc.function(inputs, out, backend="numpy")
    schedule = schedule_graph(f.graph)
    rendered = render(schedule)
    source = rendered.source if mutate is None else mutate(rendered.source)
    assert mutate is None or source != rendered.source, "the mutation changed nothing"
    _, storages = graph_fingerprint(f.program.raw_graph)
    layout = Layout.of(schedule, rendered.slots, rendered.errors, storages, [])
    runner = EmulatedRunner(compile_library(source), layout, rendered.launches, storages, seed)
    (got,) = runner.run(args)
    return got, f(*args)


def _first(old: str, new: str):
    def mutate(source: str) -> str:
        return source.replace(old, new, 1)
    return mutate


@pytest.mark.parametrize("kind", ["gemm", "warp_rows", "block_rows", "scatter", "softmax_warp",
                                  "softmax_block", "softmax_online"])
def test_unmutated_kernels_pass_in_every_order(kind):
    for seed in (0, 1, 99):
        got, want = _run(kind, seed=seed)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())


def _drop_syncthreads(nth: int):
    def drop(source: str) -> str:  # the nth __syncthreads of the source
        parts = source.split("__syncthreads();")
        return "__syncthreads();".join(parts[:nth + 1]) + "/* dropped */" + \
            "__syncthreads();".join(parts[nth + 1:])
    return drop


@pytest.mark.parametrize("kind,nth", [("gemm", 0), ("gemm", 1), ("block_rows", 0),
                                      ("softmax_block", 0), ("softmax_block", 1),
                                      ("softmax_online", 0)])
def test_a_dropped_syncthreads_is_reported_as_a_race(kind, nth):
    for seed in (0, 7):
        with pytest.raises(RuntimeError, match="shared-memory race: thread [0-9]+ (reads|writes) "
                                               "a __shared__ word that"):
            _run(kind, _drop_syncthreads(nth), seed)


def _drop_syncwarp(nth: int):
    def drop(source: str) -> str:  # the nth __syncwarp of the source
        parts = source.split("__syncwarp();")
        return "__syncwarp();".join(parts[:nth + 1]) + "/* dropped */" + \
            "__syncwarp();".join(parts[nth + 1:])
    return drop


@pytest.mark.parametrize("nth", [0, 1])
def test_a_dropped_syncwarp_is_reported_as_a_race(nth):
    """The GEMM's lanes pass out's values through their warp's staging rows, a __syncwarp
    before the reads and one before the next writes: without either, lanes of one warp
    race (the unmutated kernel passes: its __syncwarps order the same accesses)."""
    for seed in (0, 7):
        with pytest.raises(RuntimeError, match="shared-memory race: thread [0-9]+ (reads|writes) "
                                               "a __shared__ word that thread [0-9]+"):
            _run("gemm", _drop_syncwarp(nth), seed)


def test_a_race_is_reported_when_the_result_happens_to_be_right():
    # zeros everywhere: the words read before their writers ran hold zeros all the same
    got, want = _run("block_rows", zeros=True)
    np.testing.assert_array_equal(got, want)
    with pytest.raises(RuntimeError, match="shared-memory race"):
        _run("block_rows", _drop_syncthreads(0), zeros=True)


def test_a_plain_add_in_place_of_an_atomic_one_is_reported():
    def plain(source: str) -> str:  # gc_atomic_add(&X, Y); -> X += Y;
        return re.sub(r"gc_atomic_add\(&(GC_GLOBAL\(.*\)), (GC_GLOBAL\(.*\))\);",
                      r"\1 += \2;", source)
    for seed in (0, 5):
        with pytest.raises(RuntimeError, match="conflicting writes: blocks [0-9]+ and [0-9]+ "
                                               "write one element of a global buffer"):
            _run("scatter", plain, seed)


def test_a_divergent_barrier_is_reported():
    # (every thread waits, at one of two barriers: no thread runs on to race)
    mutate = _first("__syncthreads();", "if (threadIdx.x < 128) __syncthreads(); "
                                        "else __syncthreads();")
    with pytest.raises(RuntimeError, match="wait at different __syncthreads"):
        _run("gemm", mutate)


def test_a_barrier_some_threads_skip_is_reported():
    mutate = _first("__syncthreads();", "if (threadIdx.x < 128) __syncthreads(); else return;")
    with pytest.raises(RuntimeError, match="__syncthreads not reached by every thread"):
        _run("block_rows", mutate)


@pytest.mark.parametrize("kind", ["warp_rows", "softmax_warp"])
def test_a_shuffle_reading_an_exited_lane_is_reported(kind):
    mutate = _first("  for (int d = 16;", "  if (lane >= 16) return;\n  for (int d = 16;")
    with pytest.raises(RuntimeError, match="inactive or exited lane"):
        _run(kind, mutate)


def test_a_shuffle_outside_its_mask_is_reported():
    mutate = _first("__shfl_down_sync(0xffffffffu", "__shfl_down_sync(0x0000ffffu")
    with pytest.raises(RuntimeError, match="outside its mask"):
        _run("warp_rows", mutate)


def test_an_out_of_bounds_access_is_reported():
    mutate = _first("(gr < 70 &&", "(gr < 71 &&")  # one row past the end of a
    with pytest.raises(RuntimeError, match="out-of-bounds access: element 2800 of a buffer "
                                           "of 2800"):
        _run("gemm", mutate)
