"""Compiling a schedule on every core: its kernels are dealt out to parts (codegen.plan_parts),
and each part is written and compiled to an object file in a process of its own.

Threads would not help: llvmlite runs every LLVM call behind one process-wide lock. A child
made by fork() starts with everything the parent has (the schedule, llvmlite initialized),
renders its part, compiles it and sends the object back through a pipe; the parent does
part 0 (the one with the entry point) meanwhile. Whatever goes wrong in a child (it dies,
fork is refused, the data comes back short) the parent compiles that part itself: the
processes only make compiling faster, never less reliable.

GRAPHC_COMPILE_JOBS sets the process count (default: GRAPHC_NUM_THREADS, else the cores this
process may run on); 1 compiles in this process alone."""
from __future__ import annotations

import gc
import os
import pickle
import sys
import time
import warnings
from dataclasses import dataclass

from graphc.backends.llvm import codegen, jit
from graphc.backends.llvm.threads import count_setting, num_threads
from graphc.runtime.slots import SlotMap


def compile_jobs() -> int:
    """GRAPHC_COMPILE_JOBS, else the thread count generated code runs with."""
    jobs = count_setting("GRAPHC_COMPILE_JOBS")
    return num_threads() if jobs is None else jobs


def _can_fork() -> bool:
    # fork() is only safe to rely on where it is the platform's own way (Linux); macOS's
    # system libraries may not survive it.
    return hasattr(os, "fork") and sys.platform.startswith("linux")


def part_jobs() -> int:
    """How many parts a schedule is written in: one per process that compiles."""
    return compile_jobs() if _can_fork() else 1


@dataclass
class Compiled:
    texts: list[str]  # each part's LLVM IR, part 0 first
    slots: SlotMap
    errors: dict[int, str]
    objects: list[bytes]
    address: int  # the entry point's
    engine: object  # keeps the code alive


def _build_part(schedule, parts: int, part: int) -> tuple[str, dict[int, str], bytes,
                                                           tuple[float, float, float, float]]:
    t0 = time.perf_counter()
    text, errors = codegen.render_part(schedule, parts, part)
    t1 = time.perf_counter()
    obj, parse, optimize, emit = jit._object_of(text)
    return text, errors, obj, (t1 - t0, parse, optimize, emit)


class _Child:
    """A forked process building one part; result() is its answer, or None."""

    def __init__(self, schedule, parts: int, part: int) -> None:
        self.pid = -1
        read, write = os.pipe()
        try:
            with warnings.catch_warnings():  # (Python 3.12+ warns of fork in threaded code)
                warnings.simplefilter("ignore", DeprecationWarning)
                # No other thread may be inside LLVM while the child's copy is made.
                with jit.llvm_lock():
                    self.pid = os.fork()
        except OSError:
            os.close(read)
            os.close(write)
            return
        if self.pid == 0:  # the child: never returns into the caller's code
            status = 1
            try:
                os.close(read)
                data = pickle.dumps(_build_part(schedule, parts, part))
                with os.fdopen(write, "wb") as out:
                    out.write(data)
                status = 0
            finally:
                os._exit(status)
        os.close(write)
        self.read = read

    def result(self):
        if self.pid <= 0:
            return None
        pid, self.pid = self.pid, -1
        try:
            with os.fdopen(self.read, "rb") as pipe:
                data = pipe.read()
        finally:
            _, status = os.waitpid(pid, 0)
        if status != 0 or not data:
            return None
        try:
            text, errors, obj, times = pickle.loads(data)
        except Exception:  # cut short: compiled again here
            return None
        return (text, errors, obj, times) if jit.valid_object(obj) else None

    def abandon(self) -> None:
        """Ends a child whose result() was never asked for (the parent failed first)."""
        if self.pid > 0:
            import signal
            pid, self.pid = self.pid, -1
            os.close(self.read)
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass


def compile_schedule(schedule, times: jit.CompileTimes, jobs: int | None = None) -> Compiled:
    """The schedule as native code, its parts built in up to `jobs` processes."""
    # Writing IR makes many small objects: the cyclic collector's full passes over the
    # whole heap (sympy, numpy, the user's objects) took a fifth of the rendering time,
    # and in a forked child they would copy every page they touch. Paused meanwhile.
    paused = gc.isenabled()
    gc.disable()
    try:
        return _compile_schedule(schedule, times, jobs)
    finally:
        if paused:
            gc.enable()


def _compile_schedule(schedule, times: jit.CompileTimes, jobs: int | None) -> Compiled:
    jit._init()
    jobs = part_jobs() if jobs is None else jobs
    parts = codegen.part_count(schedule, jobs) if _can_fork() else 1
    start = time.perf_counter()
    children = [_Child(schedule, parts, p) for p in range(1, parts)]
    results = []
    try:
        results.append(_build_part(schedule, parts, 0))
        for p, child in enumerate(children, start=1):
            results.append(child.result() or _build_part(schedule, parts, p))
    finally:
        for child in children:
            child.abandon()
    texts = [r[0] for r in results]
    errors = {k: v for r in results for k, v in r[1].items()}
    objects = [r[2] for r in results]
    # per phase, summed over the parts; "parts wall" is what it cost end to end
    times.extra["codegen"] = sum(r[3][0] for r in results)
    times.parse, times.optimize, times.jit = (sum(r[3][i] for r in results) for i in (1, 2, 3))
    times.extra["parts"] = parts
    times.extra["parts wall"] = time.perf_counter() - start
    address, engine = jit.load_objects(objects, jit.ENTRY)
    return Compiled(texts, SlotMap(schedule), errors, objects, address, engine)
