"""Compiling a schedule on every core: its distinct kernels, grouped in units
(codegen.plan_units), are looked up in the per-kernel cache (kernel_cache.py); the units
not found are built by processes, each writing and compiling modules (codegen.batches: a
unit of shared GEMM code alone, one-kernel units several to a module) to object files, and
writing each one's cache entries. They take the modules one at a time from a shared queue
(a pipe), packed GEMMs then the largest first, so a process that is given a slow one (or
less of the CPU) simply takes fewer: no estimate of each module's time needs to be right
for the processes to end together.

Threads would not help: llvmlite runs every LLVM call behind one process-wide lock. A child
made by fork() starts with everything the parent has (the schedule, llvmlite initialized),
renders its units, compiles them and sends the objects back through a pipe. There is one
child per process count: the parent writes and compiles only the entry point meanwhile (and
the runtime's thread touches the arena), so that the cycles IR writing leaves (llvmlite's
objects) are all in children, which exit without collecting them: in the parent, they were
a 20-80 ms collection after the compile, before the first call's result (W6). Whatever goes
wrong in a child (it dies, fork is refused, the data comes back short) the parent compiles
those units itself: the processes only make compiling faster, never less reliable.

GRAPHC_COMPILE_JOBS sets the process count (default: GRAPHC_NUM_THREADS, else the cores this
process may run on); 1 compiles in this process alone."""
from __future__ import annotations

import os
import pickle
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Callable

from graphc.backends.llvm import (codegen, elf_symbols, gemm_library, jit, kernel_cache,
                                  vector_abi)
from graphc.backends.llvm.threads import count_setting, num_threads
from graphc.collector import collector_paused
from graphc.runtime.cache import CompileCache
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
    texts: list[str] | None  # the entry point's IR, then each unit's (None: some were cached)
    slots: SlotMap
    errors: dict[int, str]
    objects: list[bytes]  # the entry point's, then each module's (loaded or built)
    flags: list[str]  # the units' thread flags
    address: int  # the entry point's
    engine: object  # keeps the code alive


# Shared GEMM functions of a module (gemm_library.py): the (key, name) of each its units
# need, of those compiled here, and their object (b"": none compiled)
Library = tuple[list[tuple[str, str]], list[tuple[str, str]], bytes]
# a module's units' texts, its object, seconds (writing, parse, optimize, emit), library
Built = tuple[list[str], bytes, tuple[float, float, float, float], Library]


class _Conflict(Exception):
    """Shared functions found in the cache that cannot be linked with what was built (a
    name defined under two keys, or a symbol a taken object needs defined by none): the
    schedule is compiled again without the cache."""


def _build_units(writer: codegen.ModuleWriter, modules: list[list[codegen.Unit]],
                 machine=None, found: kernel_cache.Lookup | None = None) -> list[Built]:
    """Modules (each of one or more units) written and compiled one after the other (one
    target machine for all). A packed GEMM unit's shared functions are looked up in
    `found` (this process's copy of the parent's lookup: the parent takes the same ones
    after) and those missing compiled as a module of their own."""
    machine = machine or jit._new_machine()
    out = []
    for units in modules:
        t0 = time.perf_counter()
        parts = [writer.unit_parts(unit) for unit in units]
        texts = [text for text, _ in parts]
        t1 = time.perf_counter()
        obj, parse, optimize, emit = jit._object_of(texts, machine)
        seconds = [t1 - t0, parse, optimize, emit]
        needed = [(kernel_cache.library_key(p.text), p) for _, pieces in parts for p in pieces]
        missing = [(key, p) for key, p in needed
                   if found is None or found.find(key, [p.name]) is None]
        if found is not None and found.defined.intersection(p.name for _, p in missing):
            missing = needed  # (the parent will not take both: it compiles again, _Conflict)
        library = b""
        if missing:
            t2 = time.perf_counter()
            text = gemm_library.module_text([p for _, p in missing], vector_abi.annotate)
            t3 = time.perf_counter()
            library, *more = jit._object_of(text, machine)
            seconds = [a + b for a, b in zip(seconds, [t3 - t2] + more)]
        out.append((texts, obj, (seconds[0], seconds[1], seconds[2], seconds[3]),
                    ([(key, p.name) for key, p in needed],
                     [(key, p.name) for key, p in missing], library)))
    return out


class _Queue:
    """Unit numbers in a pipe, written before any process starts and read 4 bytes at a time
    by every process (a read of one whole item from a pipe is never split between readers);
    an empty read: nothing is left."""

    # What a pipe holds without a reader (Linux's default): all of it is written at once.
    CAPACITY = 65536 // 4

    def __init__(self, numbers: list[int]) -> None:
        self.read_fd, write = os.pipe()
        data = b"".join(n.to_bytes(4, "little") for n in numbers)
        try:
            os.set_blocking(write, False)  # a smaller pipe (a user over their limit): no hang
            self.whole = os.write(write, data) == len(data)
        except BlockingIOError:
            self.whole = False
        finally:
            os.close(write)

    def take(self) -> int | None:
        data = os.read(self.read_fd, 4)
        return int.from_bytes(data, "little") if len(data) == 4 else None

    def close(self) -> None:
        os.close(self.read_fd)


# Writes a built module's cache entries (module number, what was built)
Store = Callable[[int, Built], object]


def _pull(writer: codegen.ModuleWriter, modules: list[list[codegen.Unit]], queue: _Queue,
          found: kernel_cache.Lookup | None = None,
          store: Store | None = None) -> list[tuple[int, Built]]:
    """Builds modules taken from the queue until it is empty; each with its number, its
    entries written (`store`) as soon as it is built."""
    machine = jit._new_machine()
    out = []
    while (n := queue.take()) is not None:
        for b in _build_units(writer, [modules[n]], machine, found):
            if store is not None:
                store(n, b)
            out.append((n, b))
    return out


class _Child:
    """A forked process building modules from the queue; result() is its answer (each
    module it built, by number), or None."""

    def __init__(self, writer: codegen.ModuleWriter, modules: list[list[codegen.Unit]],
                 queue: _Queue, found: kernel_cache.Lookup | None = None,
                 store: Store | None = None) -> None:
        self.pid = -1
        self.modules = modules
        self.forked_at = time.perf_counter()
        self.cpu_seconds = self.wall_seconds = 0.0  # (from fork to reaped: result())
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
                data = pickle.dumps(_pull(writer, modules, queue, found, store))
                with os.fdopen(write, "wb") as out:
                    out.write(data)
                status = 0
            finally:
                os._exit(status)
        os.close(write)
        self.read = read

    def busy(self) -> bool:
        """Whether the child is still building (it writes its answer only at the end)."""
        if self.pid <= 0:
            return False
        import select
        return not select.select([self.read], [], [], 0)[0]

    def result(self) -> list[tuple[int, Built]] | None:
        if self.pid <= 0:
            return None
        pid, self.pid = self.pid, -1
        try:
            with os.fdopen(self.read, "rb") as pipe:
                data = pipe.read()
        finally:
            _, status, usage = os.wait4(pid, 0)
            self.cpu_seconds = usage.ru_utime + usage.ru_stime
            self.wall_seconds = time.perf_counter() - self.forked_at
        if status != 0 or not data:
            return None
        try:
            built = pickle.loads(data)
        except Exception:  # cut short: compiled again here
            return None
        if not (isinstance(built, list) and all(
                isinstance(b, tuple) and len(b) == 2 and isinstance(b[0], int)
                and 0 <= b[0] < len(self.modules) and jit.valid_object(b[1][1])
                and len(b[1][0]) == len(self.modules[b[0]]) and _whole_library(b[1][3])
                for b in built)):
            return None
        return built

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


def _whole_library(library: object) -> bool:
    """Whether a child's Library came back whole (its object, where it compiled any)."""
    return isinstance(library, tuple) and len(library) == 3 and \
        isinstance(library[0], list) and isinstance(library[1], list) and \
        (not library[1] or jit.valid_object(library[2]))


def compile_schedule(schedule, times: jit.CompileTimes, disk: CompileCache | None = None,
                     jobs: int | None = None, plan: codegen.Plan | None = None,
                     while_waiting: Callable[[Callable[[], bool]], object] | None = None,
                     after_fork: Callable[[], object] | None = None) -> Compiled:
    """The schedule as native code: units found in `disk` loaded, the others built in up
    to `jobs` processes (and stored there). `plan`: its codegen.plan_units, where the
    caller has it already. `while_waiting(busy)`: work for this process once its own part
    is done (the entry point, and its share where a child could not be made), while
    children still compile (called only where there are any); it stops soon after
    `busy()` turns False (every child is done).
    `after_fork()`: called once the other processes are forked (only where there are
    any), before this one builds its share: where a thread may start (none may run while
    a process forks)."""
    # Writing IR makes many small objects: the cyclic collector's full passes over the
    # whole heap took a fifth of the rendering time, and in a forked child they would copy
    # every page they touch. Paused meanwhile.
    with collector_paused():
        try:
            return _compile_schedule(schedule, times, disk or CompileCache(None), jobs, plan,
                                     while_waiting, after_fork)
        except _Conflict:
            return _compile_schedule(schedule, times, CompileCache(None), jobs, plan,
                                     while_waiting)


def _store_module(disk: CompileCache, units: list[int], keys: list[str],
                  functions: list[list[str]], built: Built) -> None:
    """A built module's cache entries: its shared functions' object (where it compiled
    any) and its units' (`units`: their numbers; `keys`, `functions`: of every unit)."""
    module_texts, obj, _, (needed, compiled, library_obj) = built
    kernel_cache.store_library(disk, library_obj, compiled,
                               _library_needs(library_obj, needed, compiled))
    made = [(keys[n], functions[n], kernel_cache.team_flags(text))
            for n, text in zip(units, module_texts)]
    if len(made) == 1:
        kernel_cache.store_unit(disk, made[0][0], obj, made[0][2], made[0][1], needed)
    else:
        kernel_cache.store_batch(disk, obj, made, needed)


def _library_needs(obj: bytes, needed: list[tuple[str, str]],
                   compiled: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The shared functions (key, name) an object of `compiled` ones calls and does not
    define: those of `needed` its builder found in the cache."""
    if not compiled:
        return []
    calls = elf_symbols.symbols(obj)[1]
    own = {name for _, name in compiled}
    return [(key, name) for key, name in needed if name in calls and name not in own]


def _link_library(found: kernel_cache.Lookup, needed: list[tuple[str, str]],
                  compiled: list[tuple[str, str]], obj: bytes) -> None:
    """Takes a built module's shared functions: those its builder compiled (`obj`), and
    the others from the cache, as its builder found them (_Conflict where they are not)."""
    if compiled and not found.take(obj, [([name], [], key) for key, name in compiled]):
        raise _Conflict
    if any(found.find(key, [name]) is None for key, name in needed):
        raise _Conflict


def _compile_schedule(schedule, times: jit.CompileTimes, disk: CompileCache,
                      jobs: int | None, known: codegen.Plan | None = None,
                      while_waiting: Callable[[Callable[[], bool]], object] | None = None,
                      after_fork: Callable[[], object] | None = None) -> Compiled:
    jit._init()
    start = time.perf_counter()
    writer = codegen.ModuleWriter(schedule, known)
    plan = writer.plan
    units = list(plan.units)
    functions = [sorted({plan.functions[i] for i in u.members}) for u in units]
    keys = [kernel_cache.unit_key(u.text) for u in units]
    found = kernel_cache.Lookup(disk)
    flags: list[list[str] | None] = [found.find(key, functions[n]) for n, key in enumerate(keys)]
    # a unit missed before an object holding it was taken (a batch found for a later unit)
    flags = [f if f is not None else found.flags(functions[n]) for n, f in enumerate(flags)]
    todo = [n for n in range(len(units)) if flags[n] is None]
    if found.defined.intersection(f for n in todo for f in functions[n]):
        # part of a unit in a taken object (never written so): build everything instead
        found, todo, flags = kernel_cache.Lookup(CompileCache(None)), \
            list(range(len(units))), [None] * len(units)
    t_plan = time.perf_counter()
    jobs = (part_jobs() if jobs is None else jobs) if _can_fork() else 1
    modules = codegen.batches(units, todo, jobs)
    # as many processes as deal_out finds work for; the largest modules are taken first
    costs = [sum(units[n].cost for n in m) for m in modules]
    parts = max(codegen.deal_out(costs, jobs), default=0) + 1
    if len(modules) > _Queue.CAPACITY:
        parts = 1
    # A packed GEMM unit first: written and compiled with its shared functions it is the
    # largest module by far (W6: 0.95-1.15 s against 0.6-0.95 s for the next; its cost
    # estimate put it third, and the process that took it last ended 0.17-0.21 s after
    # the other), then the largest first.
    order = sorted(range(len(modules)),
                   key=lambda m: (not any(units[n].library for n in modules[m]), -costs[m], m))
    queue = _Queue(order) if parts > 1 else None
    if queue is not None and not queue.whole:  # built here, one after the other
        queue.close()
        queue, parts = None, 1
    as_units = [[units[n] for n in m] for m in modules]

    def store(m: int, b: Built) -> None:
        # in the process that built it: the entries of both processes written side by
        # side, not one after the other by this one at the end (W6: 104 entries, 40-130 ms)
        _store_module(disk, modules[m], keys, functions, b)
    children: list[_Child] = []
    built: dict[int, Built] = {}
    try:
        if queue is not None:
            # one child per part: the parent builds a share only for a child not made
            children = [_Child(writer, as_units, queue, found, store)
                        for _ in range(parts)]
            if after_fork is not None and any(child.pid > 0 for child in children):
                after_fork()
        t0 = time.perf_counter()
        entry_text = writer.entry_text()
        t1 = time.perf_counter()
        entry = jit._object_of(entry_text)
        entry_times = (t1 - t0,) + entry[1:]
        if queue is not None and sum(child.pid > 0 for child in children) < parts:
            built.update(_pull(writer, as_units, queue, found, store))
        if while_waiting is not None and any(child.pid > 0 for child in children):
            while_waiting(lambda: any(child.busy() for child in children))
        for child in children:
            built.update(child.result() or [])
        forked = [child for child in children if child.wall_seconds > 0]
        if forked:  # whether the cores were free (adaptive.first_setting)
            times.extra["compile cpu share"] = \
                sum(c.cpu_seconds for c in forked) / sum(c.wall_seconds for c in forked)
        # what no process built (all of it with one process; a failed child's share)
        missing = [m for m in order if m not in built]
        for m, b in zip(missing, _build_units(writer, [as_units[m] for m in missing],
                                              None, found)):
            store(m, b)
            built[m] = b
    finally:
        for child in children:
            child.abandon()
        if queue is not None:
            queue.close()
    texts: dict[int, str] = {}
    own = []
    library = [0, 0]  # shared GEMM functions compiled, found by the builders
    for m, (module_texts, obj, _, (needed, compiled, library_obj)) in built.items():
        _link_library(found, needed, compiled, library_obj)
        library[0] += len(compiled)
        library[1] += len(needed) - len(compiled)
        own.append(obj)
        for n, text in zip(modules[m], module_texts):
            texts[n], flags[n] = text, kernel_cache.team_flags(text)
        if needed:  # (the full text is rendered again where asked for: runtime.ir_texts)
            texts.pop(modules[m][0])
    objects = list(found.objects) + own
    # per phase, summed over the modules; "parts wall" is what it cost end to end
    seconds = [entry_times] + [b[2] for b in built.values()]
    times.extra["codegen"] = sum(s[0] for s in seconds)
    times.parse, times.optimize, times.jit = (sum(s[i] for s in seconds) for i in (1, 2, 3))
    times.extra["parts"] = parts
    times.extra["modules"] = len(modules)
    times.extra["kernel cache lookup"] = t_plan - start
    times.extra["parts wall"] = time.perf_counter() - t_plan
    times.extra["kernels"] = len(schedule.kernels)
    times.extra["kernels distinct"] = plan.distinct
    times.extra["kernels compiled"] = sum(len(units[n].members) for n in todo)
    times.extra["kernels loaded"] = plan.distinct - times.extra["kernels compiled"]
    times.extra["library compiled"] = library[0]
    times.extra["library loaded"] = library[1] + found.library_loaded
    linked = [entry[0]] + objects
    try:
        address, engine = jit.load_objects(linked, jit.ENTRY)
    except jit.UnresolvedSymbols:
        if not found.objects:
            raise  # (nothing from the cache: a fault of the code written here)
        raise _Conflict from None  # a cached object's needs not all taken: no cache
    all_texts = None if len(texts) < len(units) else \
        [entry_text] + [texts[n] for n in range(len(units))]
    return Compiled(all_texts, writer.slots, codegen.kernel_errors(schedule), linked,
                    [f for fl in flags for f in (fl or [])], address, engine)
