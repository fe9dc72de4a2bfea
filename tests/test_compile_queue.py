"""The queue that compiling processes take units from: every unit is built by exactly one
process, whichever is free, and a compile in two processes builds each unit once."""
from __future__ import annotations

import os
import stat
import sys

import numpy as np
import pytest

import graphc as gc
from tanh_chain import tanh_chain

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork: Linux")


def _taken_by_a_child(queue) -> tuple[int, int]:
    """Forks a process that empties what it can of the queue; returns (pid, pipe) where
    its numbers come back."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read)
            got = []
            while (n := queue.take()) is not None:
                got.append(n)
            os.write(write, b"".join(n.to_bytes(4, "little") for n in got))
        finally:
            os._exit(0)
    os.close(write)
    return pid, read


def _read_all(fd: int) -> list[int]:
    with os.fdopen(fd, "rb") as pipe:
        data = pipe.read()
    return [int.from_bytes(data[i:i + 4], "little") for i in range(0, len(data), 4)]


def test_every_number_goes_to_exactly_one_reader():
    from graphc.backends.llvm.processes import _Queue
    numbers = list(range(3000))[::-1]
    queue = _Queue(numbers)
    assert queue.whole
    children = [_taken_by_a_child(queue) for _ in range(2)]
    mine = []
    while (n := queue.take()) is not None:
        mine.append(n)
    queue.close()
    taken = list(mine)
    for pid, fd in children:
        taken += _read_all(fd)
        os.waitpid(pid, 0)
    assert sorted(taken) == sorted(numbers)  # none lost, none twice


def _deep_step(folder):
    x, outs, rng = tanh_chain((48, 40, 56, 36, 60, 44, 52, 48), 32, 0.2, 3)
    step = gc.function([x], outs, backend_options={"cache_dir": str(folder)})
    reference = gc.function([x], outs, backend="numpy")
    xv = rng.normal(size=(32, 48)).astype(np.float32)
    for got, want in zip(step(xv), reference(xv)):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-5)
    return step


def test_two_processes_build_each_unit_once_and_agree(monkeypatch, tmp_path):
    monkeypatch.setenv("GRAPHC_COMPILE_JOBS", "2")
    step = _deep_step(tmp_path)
    times = step.compile_times
    assert times["parts"] == 2
    assert times["kernels compiled"] == times["kernels distinct"]
    from graphc.backends.llvm.codegen import plan_units
    units = plan_units(step._exe.last.schedule).units
    assert len(step._exe.last.ir_texts) == 1 + len(units)  # the entry's, then each unit's


def test_a_pipe_too_small_for_the_queue_compiles_here(monkeypatch, tmp_path):
    """A pipe that takes only part of the numbers (a user over the system's pipe limit)
    never blocks the compile: every unit is built in this process."""
    from graphc.backends.llvm import processes
    real_write = os.write

    def short(fd, data):  # pipes take one number; files (the cache) all of it
        return real_write(fd, data[:4] if stat.S_ISFIFO(os.fstat(fd).st_mode) else data)

    monkeypatch.setattr(processes.os, "write", short)
    monkeypatch.setenv("GRAPHC_COMPILE_JOBS", "2")
    step = _deep_step(tmp_path)
    assert step.compile_times["parts"] == 1
    assert step.compile_times["kernels compiled"] == step.compile_times["kernels distinct"]
