"""Calling generated code: one compiled module per set of input shapes, buffers handed over
as one array of pointers, arguments checked (by gc.function) before any pointer is made."""
from __future__ import annotations

import ctypes
import dataclasses
import threading
import time
from typing import TYPE_CHECKING, Sequence

from pathlib import Path

import numpy as np

from graphc.backends.llvm import backend, collective_runtime as collective, jit, threads
from graphc.backends.llvm.adaptive import ThreadChooser, adaptive_enabled, first_setting
from graphc.program import Program
from graphc.runtime.cache import CompileCache, cache_key, default_dir
from graphc.runtime.code_hash import code_hash
from graphc.runtime.errors import raise_for_status
from graphc.runtime.layout import Layout
from graphc.schedule.policy import SchedulePolicy
from graphc.sizes import Size

if TYPE_CHECKING:
    from graphc.backends.llvm.symbolic_runtime import SymbolicProgram

_ENTRY_TYPE = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p)
# Input shapes remembered with what serves them before the memo starts again.
SERVED_MAX = 256


def _slow_pointer(array: np.ndarray) -> int:
    return array.__array_interface__["data"][0]


def _fast_pointer(array: np.ndarray) -> int:
    # ndarray's C struct starts with PyObject_HEAD (16 bytes on 64-bit CPython) and then
    # its data pointer: a 0.2 us read where .ctypes.data costs 1 us a call.
    return ctypes.c_void_p.from_address(id(array) + 16).value or 0


def _choose_pointer_reader():
    """The fast reader, if it gives the same answers as numpy's own on this build."""
    probes = [np.arange(7.0), np.zeros((3, 4), np.int32)[1:], np.empty(0)]
    if all(_fast_pointer(a) == _slow_pointer(a) for a in probes if a.size):
        return _fast_pointer
    return _slow_pointer


data_pointer = _choose_pointer_reader()


def call_entry(program, args: Sequence[np.ndarray], outputs) -> tuple[int, list, list]:
    """One call of a compiled program's entry point (the caller holds its lock): the
    arguments' and new outputs' pointers put in its table, the entry run (timed for its
    thread chooser, if any). Returns (status, the arguments as passed, the outputs)."""
    table = program.table
    arrays = [a if a.flags.c_contiguous else np.ascontiguousarray(a) for a in args]
    for slot, a in zip(program.input_slots, arrays):
        table[slot] = data_pointer(a)
    outs = []
    for slot, shape, dtype in outputs:
        out = np.empty(shape, dtype)
        table[slot] = data_pointer(out)
        outs.append(out)
    chooser = program.chooser
    if chooser is None:
        return program.entry(program.table_address), arrays, outs
    if chooser.quiet:  # (one thread, the flags set: nothing to time)
        chooser.quiet -= 1
        return program.entry(program.table_address), arrays, outs
    chooser.before_call()
    start = time.perf_counter()
    status = program.entry(program.table_address)
    chooser.after_call(time.perf_counter() - start)
    return status, arrays, outs


def _aligned_empty(nbytes: int, align: int = 64) -> np.ndarray:
    if nbytes + align >= 2 ** 63:  # numpy's own message would be about dimensions
        raise MemoryError(f"cannot allocate {nbytes} bytes of scratch memory for these "
                          "shapes: too large")
    raw = np.empty(nbytes + align, np.uint8)
    start = (-raw.ctypes.data) % align
    return raw[start:start + nbytes]


def _touched(memory: np.ndarray, busy=lambda: True) -> np.ndarray:
    """`memory` with each of its pages written once (the OS maps a page at its first write),
    a few MB at a time while `busy()`: the pages left are mapped by the first call."""
    for start in range(0, memory.nbytes, _TOUCH_CHUNK):
        if not busy():
            break
        memory[start:start + _TOUCH_CHUNK:4096] = 0
    return memory


_TOUCH_CHUNK = 4 << 20


class _ArenaToucher:
    """The arena's pages written once from a thread of this process while the compile's
    other processes work (started once they are forked), so that the first call finds
    them mapped. On this VM a first touch costs up to ~20 us a page (W6's 78 MB arena:
    0.3-0.5 s of CPU under load); done only by the parent once its share was built, it
    was left to the first call whenever a child finished first, after the compile instead
    of beside it. Stopped and joined before the arena is used (`done`)."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self.memory: np.ndarray | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.memory = memory = _aligned_empty(self.nbytes)
        self._thread = threading.Thread(
            target=lambda: _touched(memory, lambda: not self._stop.is_set()),
            name="graphc-arena-touch", daemon=True)
        self._thread.start()

    def done(self) -> np.ndarray | None:
        """The arena (None: never started), once the thread has stopped."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        return self.memory


def assembly_of(texts: list[str]) -> str:
    """The machine code of each module's IR, optimized as compiled, as one text (f.asm)."""
    import llvmlite.binding as llvm
    parts = []
    for text in texts:
        module = llvm.parse_assembly(text)
        light = jit.is_light([text])
        jit.optimize_module(module, light=light)
        parts.append(jit.assembly(module, light))
    return _joined(parts)


def _joined(texts: list[str]) -> str:
    """The modules' IR (the entry point's, then each unit's) as one text for people to
    read (f.source)."""
    if len(texts) == 1:
        return texts[0]
    return "\n".join(f"; ---- module {i} of {len(texts)} ----\n{t}"
                     for i, t in enumerate(texts))


class CompiledShape:
    """The native code for one set of input shapes, with its arena and pointer table.
    Looked up in the disk cache by the program's structural fingerprint and the shapes;
    only on a miss is the graph optimized, scheduled, rendered and compiled."""

    def __init__(self, program: Program, shapes: tuple, disk: CompileCache, optimize: bool,
                 fingerprint: tuple[str, list], policy: SchedulePolicy) -> None:
        t0 = time.perf_counter()
        self.program, self.shapes, self.optimize = program, shapes, optimize
        self.policy = policy
        self.times = jit.CompileTimes()
        structure, storages = fingerprint
        self.key = cache_key(structure, shapes, backend.target_id(),
                             code_hash("graphc.backends.llvm"),
                             (program.pass_names, optimize, threads.thread_config(), policy))
        self._schedule = None
        self._ir_texts: list[str] | None = None
        hit = disk.get(self.key)
        layout = None
        prepared: list[np.ndarray] = []  # the arena, where it was made while compiling
        if hit is not None:
            payload, meta = hit
            try:
                sizes = [int(n) for n in meta["object_lengths"]]
                objects, start = [], 0
                for n in sizes:
                    objects.append(payload[start:start + n])
                    start += n
                layout = Layout.from_meta(meta["layout"], payload[start:])
                if not (sizes and layout.fits(program.raw_graph, len(storages))
                        and all(jit.valid_object(o) for o in objects)):
                    layout = None
            except (KeyError, TypeError, ValueError):
                layout = None  # an entry of another format or a damaged one: rebuilt below
        self.cached = layout is not None
        if layout is not None:
            threads.openmp_available()  # registers the symbols cached code links against
            t1 = time.perf_counter()
            self.address, self.engine = jit.load_objects(objects, jit.ENTRY)
            self.times.extra = {"fingerprint": t1 - t0, "cache load": time.perf_counter() - t1}
        else:
            t1 = time.perf_counter()
            schedule = self.schedule
            t2 = time.perf_counter()
            from graphc.backends.llvm import processes  # (llvmlite.ir: only to compile)
            self.times.extra = {"fingerprint": t1 - t0, "optimize and schedule": t2 - t1}
            # The arena's pages, first touched while the other processes compile (no
            # longer): a first touch costs a few ms to (on a busy VM) hundreds of ms, then
            # off the first call
            toucher = _ArenaToucher(schedule.plan.arena_bytes if schedule.plan else 0)
            try:
                built = processes.compile_schedule(schedule, self.times, disk,
                                                   after_fork=toucher.start)
            finally:
                arena = toucher.done()
            if arena is not None:
                prepared.append(arena)
            self._ir_texts, objects = built.texts, built.objects
            self.address, self.engine = built.address, built.engine
            layout = Layout.of(schedule, built.slots, built.errors, storages, built.flags)
            meta, blob = layout.to_meta()
            disk.put(self.key, b"".join(objects) + blob,  # (no fsync: as symbolic_runtime's)
                     {"object_lengths": [len(o) for o in objects], "layout": meta},
                     durable=False)
        self.layout = layout
        self.errors = layout.errors
        self.entry = _ENTRY_TYPE(self.address)
        self.table = (ctypes.c_void_p * layout.slots)()
        self.table_address = ctypes.addressof(self.table)
        self.arena = prepared[0] if prepared and prepared[0].nbytes == layout.arena_bytes \
            else _aligned_empty(layout.arena_bytes)
        self.table[layout.arena_slot] = self.arena.ctypes.data
        self.keep = []
        for slot, array in layout.consts:
            self.keep.append(array)
            self.table[slot] = array.ctypes.data
        for slot, number in layout.params:
            self.table[slot] = storages[number].array.ctypes.data
        self.input_slots = layout.input_slots
        self.outputs = [(slot, shape, np.dtype(dtype)) for slot, shape, dtype in layout.outputs]
        self.lock = threading.Lock()  # one arena: one call at a time
        self.chooser = ThreadChooser([jit.global_address(self.engine, f)
                                      for f in layout.team_flags],
                                     first_setting(self.times.extra)) \
            if layout.team_flags and adaptive_enabled() else None

    def compile_times(self) -> dict:
        """Seconds per phase of making this code (see Function.compile_times)."""
        t = self.times
        out: dict = dict(t.extra)
        if not self.cached:
            out.update({"llvm parse": t.parse, "llvm optimize": t.optimize,
                        "llvm emit": t.jit})
        out["cached"] = self.cached
        return out

    @property
    def schedule(self):
        """The kernel plan (made on demand when the code came from the cache)."""
        if self._schedule is None:
            from graphc.schedule import schedule_graph
            self._schedule = schedule_graph(self.program.graph, list(self.shapes),
                                            optimize=self.optimize, policy=self.policy)
        return self._schedule

    @property
    def ir_texts(self) -> list[str]:
        """The LLVM IR of each part (rendered again, on demand, for code from the cache)."""
        if self._ir_texts is None:
            from graphc.backends.llvm import codegen
            self._ir_texts = codegen.render(self.schedule)[0]
        return self._ir_texts

    @property
    def ir_text(self) -> str:
        return _joined(self.ir_texts)

    def assembly(self) -> str:
        return assembly_of(self.ir_texts)

    def run(self, args: Sequence[np.ndarray], bound: object = None) -> list[np.ndarray]:
        with self.lock:
            status, arrays, outs = call_entry(self, args, self.outputs)
        if status:
            raise_for_status(status, self.layout, arrays)
        return outs


class LLVMExecutable:
    """The llvm backend's handle on a program: compiles per input shapes, on first use,
    scheduling with `policy`."""

    def __init__(self, program: Program, options: dict, policy: SchedulePolicy) -> None:
        self.program = program
        self.options = options
        self.policy = policy
        folder = options.get("cache_dir", default_dir())
        self.disk = CompileCache(Path(folder) if folder else None)
        self.compiled: dict[tuple, CompiledShape] = {}
        # what serves each input shapes seen: a module, or the symbolic program and its
        # binding for them; one dict look-up a call for both kinds (cleared past SERVED_MAX)
        self._served: dict[tuple, tuple[CompiledShape | SymbolicProgram, object]] = {}
        self.last: CompiledShape | None = None
        self._lock = threading.Lock()
        self._fingerprint: tuple[str, list] | None = None
        # sizes="symbolic": one program for every binding of the call-time sizes
        # (symbolic_runtime.py); "specialize": a module per set of input shapes; "auto":
        # symbolic, except a program whose convolutions' columns the GEMM could read in place
        # over call-time sizes other than the batch (implicit GEMM: it needs them as numbers)
        self.sizes = options.get("sizes", backend.default_sizes())
        self.symbolic = None
        self.not_symbolic: str | None = None  # why the program is specialised instead
        collective.prepare(program.raw_graph)
        inputs = program.raw_graph.inputs
        if all(isinstance(d, int) for p in inputs for d in p.shape):
            self.last = self._get(tuple(p.shape for p in inputs))

    def _get(self, shapes: tuple):
        compiled = self.compiled.get(shapes)
        if compiled is None and self.sizes != "specialize" and self.not_symbolic is None:
            symbolic = self.symbolic
            if symbolic is not None:  # (a new batch size's first call: one pass)
                if symbolic.bound(shapes) is not None:
                    return symbolic
            else:
                compiled = self._symbolic(shapes)
                if compiled is not None and not compiled.serves(shapes):
                    compiled = None  # (these shapes get a module of their own)
        if compiled is None:
            with self._lock:
                compiled = self.compiled.get(shapes)
                if compiled is None:
                    if self._fingerprint is None:  # the same for every input shape
                        from graphc.fingerprint import graph_fingerprint
                        self._fingerprint = graph_fingerprint(self.program.raw_graph)
                    compiled = CompiledShape(self.program, shapes, self.disk,
                                             self.options.get("optimize", True),
                                             self._fingerprint, self.policy)
                    self.compiled[shapes] = compiled
        return compiled

    def _symbolic(self, shapes: tuple):
        """The program with symbolic sizes (made at the first call), where it serves these
        shapes; None where they need a specialised module (a size of 0), or where the
        program cannot have symbolic sizes (not_symbolic says why)."""
        inputs = self.program.raw_graph.inputs
        if not any(isinstance(d, Size) for p in inputs for d in p.shape):
            self.not_symbolic = "every size is known"
            return None
        if any(isinstance(d, Size) and n == 0 for p, s in zip(inputs, shapes)
               for d, n in zip(p.shape, s)):
            return None  # empty inputs: kernels skip work by their static shapes
        if self.symbolic is None:
            with self._lock:
                if self.symbolic is None and self.not_symbolic is None:
                    from graphc.backends.llvm.symbolic_runtime import SymbolicProgram
                    from graphc.schedule.symbolic import NotSymbolic
                    t0 = time.perf_counter()
                    if self._fingerprint is None:
                        from graphc.fingerprint import graph_fingerprint
                        self._fingerprint = graph_fingerprint(self.program.raw_graph)
                    policy = self.policy
                    if self.sizes == "auto" and policy.implicit_gemm:
                        policy = dataclasses.replace(policy, implicit_gemm_or_specialize=True)
                    try:
                        self.symbolic = SymbolicProgram(
                            self.program, shapes, self.disk,
                            self.options.get("optimize", True), self._fingerprint,
                            policy, time.perf_counter() - t0)
                    except NotSymbolic as e:
                        self.not_symbolic = str(e)
                        return None
                    except Exception as e:  # noqa: BLE001 (specialising is always right)
                        # a part that needs a size as a number (TypeError), or one that
                        # cannot take symbols at all: the program is specialised per shape
                        self.not_symbolic = f"{type(e).__name__}: {e}"
                        return None
        return self.symbolic

    def _serve(self, shapes: tuple) -> tuple[CompiledShape | SymbolicProgram, object]:
        """What serves these new shapes: the symbolic program with their binding (planned
        by _get), else a module."""
        compiled = self._get(shapes)
        if compiled is self.symbolic and compiled is not None:
            return compiled, compiled.bindings.get(shapes)
        return compiled, None

    @property
    def source(self) -> str:
        if self.last is None:
            return "; not compiled yet: sizes given at call time (a module per input shapes)"
        return self.last.ir_text

    @property
    def asm(self) -> str:
        if self.last is None:
            return "; not compiled yet"
        return self.last.assembly()

    @property
    def compile_times(self) -> dict:
        return {} if self.last is None else self.last.compile_times()

    def run(self, args: Sequence[np.ndarray]) -> list[np.ndarray]:
        shapes = tuple(a.shape for a in args)
        served = self._served.get(shapes)
        if served is None:
            served = self._serve(shapes)
            if len(self._served) >= SERVED_MAX:
                self._served.clear()
            self._served[shapes] = served
        self.last = served[0]
        return served[0].run(args, served[1])


# Programs with symbolic sizes (sizes="auto", the default) run through symbolic_runtime:
# loaded with this module, so that a warm start pays no import (it imports names above).
from graphc.backends.llvm import symbolic_runtime  # noqa: E402,F401
