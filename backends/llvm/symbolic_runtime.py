"""One native program for every binding of the call-time sizes: the kernels read their sizes
from data, so a new batch size costs its memory plan, its arena and the call, never a
compile. Each binding's plan, descriptors and arena are made once, in Python, and kept."""
from __future__ import annotations

import ctypes
import threading
import time
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from graphc import sizes
from graphc.backends.llvm import backend, codegen, entry, gemm, jit, threads
from graphc.backends.llvm.adaptive import ThreadChooser, adaptive_enabled
from graphc.errors import index_error_message
from graphc.program import Program
from graphc.runtime.cache import CompileCache, cache_key
from graphc.runtime.code_hash import code_hash
from graphc.runtime.errors import raise_for_status
from graphc.runtime.layout import Layout, index_arguments
from graphc.schedule import ir as kir
from graphc.schedule.memory import lifetimes
from graphc.schedule.policy import SchedulePolicy
from graphc.schedule.symbolic import (NotSymbolic, check_nodes, plan_for,
                                      representative_binding, schedule_symbolic)
from graphc.specialize import bind_shapes

_ENTRY_TYPE = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p)
# Bindings kept (plan, arena, descriptors) before the oldest is dropped.
MAX_BINDINGS = 64


@dataclass
class _Binding:
    """What one binding of the sizes takes: the arena's size (temporaries, then from
    `start` each symbolic kernel's size values and GEMM descriptor: `words`), the entry
    point's descriptor, the outputs."""

    arena_bytes: int
    start: int
    words: np.ndarray
    desc: np.ndarray
    outputs: list[tuple[int, tuple[int, ...], np.dtype]]
    values: Mapping[sizes.SizeVar, int]


def symbolic_key(fingerprint: str, shapes: Sequence[tuple], options: tuple) -> str:
    """The disk cache key of a symbolic program: its structure and which input sizes are
    symbols (never their values)."""
    pattern = tuple(tuple(d if isinstance(d, int) else "?" for d in s) for s in shapes)
    return cache_key(fingerprint, ("symbolic", pattern), backend.target_id(),
                     code_hash("graphc.backends.llvm"), options)


class SymbolicProgram:
    """Native code whose sizes are symbols, made at the first call (`shapes`: its shapes,
    the representative binding for choices of speed) and run for any later shapes."""

    def __init__(self, program: Program, shapes: tuple, disk: CompileCache, optimize: bool,
                 fingerprint: tuple[str, list], policy: SchedulePolicy,
                 fingerprint_seconds: float = 0.0) -> None:
        t0 = time.perf_counter()
        self.shapes = shapes  # of the last call (gc.explore shows the kernels for them)
        self.program, self.optimize, self.policy = program, optimize, policy
        self.inputs = program.raw_graph.inputs
        self.representative = representative_binding(bind_shapes(self.inputs, shapes))
        self.times = jit.CompileTimes()
        structure, self.storages = fingerprint
        options = (program.pass_names, optimize, threads.thread_config(), policy)
        self.key = symbolic_key(structure, [p.shape for p in self.inputs], options)
        # the schedule is needed for every binding's plan: made here even on a cache hit
        # (Python only: no LLVM)
        check_nodes(program.raw_graph)  # (the optimizer may have removed what it checks)
        with sizes.representative(self.representative):
            self.schedule = schedule_symbolic(program.graph, self.representative, optimize,
                                              policy)
            self.units = codegen.plan_units(self.schedule)
        t1 = time.perf_counter()
        self.times.extra = {"fingerprint": fingerprint_seconds,
                            "optimize and schedule": t1 - t0}
        self._ir_texts: list[str] | None = None
        objects = self._cached(disk)
        self.cached = objects is not None
        if objects is not None:
            threads.openmp_available()  # registers the symbols cached code links against
            self.address, self.engine = jit.load_objects(objects, jit.ENTRY)
            self.times.extra["cache load"] = time.perf_counter() - t1
            from graphc.runtime.slots import SlotMap
            slots = SlotMap(self.schedule)
            errors = codegen.kernel_errors(self.schedule)
            flags = [str(f) for f in self._meta.get("team_flags", [])]
        else:
            from graphc.backends.llvm import processes
            with sizes.representative(self.representative):
                built = processes.compile_schedule(self.schedule, self.times, disk)
            self._ir_texts = built.texts
            self.address, self.engine = built.address, built.engine
            slots, errors, flags = built.slots, built.errors, built.flags
            disk.put(self.key, b"".join(built.objects),
                     {"object_lengths": [len(o) for o in built.objects],
                      "team_flags": list(flags)})
        self.slots = slots
        self.errors = errors
        self.entry = _ENTRY_TYPE(self.address)
        self.table = (ctypes.c_void_p * (slots.count + 1))()  # + the entry's descriptor
        self.table_address = ctypes.addressof(self.table)
        self.keep = []
        for bid, array in self.schedule.consts.items():
            array = np.ascontiguousarray(array)
            self.keep.append(array)
            self.table[slots.slot[bid]] = array.ctypes.data
        for bid, storage in self.schedule.params.items():
            self.table[slots.slot[bid]] = storage.array.ctypes.data
        self.input_slots = [slots.slot[b] for b in self.schedule.inputs]
        self.output_slots = [slots.slot[b] for b in self.schedule.outputs]
        self.bindings: dict[tuple, _Binding] = {}
        self.spans = lifetimes(self.schedule)  # the same for every binding
        self.gemms: dict[int, gemm.RuntimeGemm] = {}
        # one arena, as large as the largest binding so far needs; it holds the current
        # binding's size values
        self.arena = _aligned_empty(8)
        self.current: _Binding | None = None
        self.lock = threading.Lock()
        self.chooser = ThreadChooser([jit.global_address(self.engine, f) for f in flags]) \
            if flags and adaptive_enabled() else None

    def _cached(self, disk: CompileCache) -> list[bytes] | None:
        self._meta: dict = {}
        hit = disk.get(self.key)
        if hit is None:
            return None
        payload, meta = hit
        try:
            lengths = [int(n) for n in meta["object_lengths"]]
            objects, start = [], 0
            for n in lengths:
                objects.append(payload[start:start + n])
                start += n
            if not (lengths and start == len(payload)
                    and all(jit.valid_object(o) for o in objects)):
                return None
        except (KeyError, TypeError, ValueError):
            return None  # another format or a damaged entry: compiled again
        self._meta = meta
        return objects

    # -- one binding ----------------------------------------------------------------------
    def _bind(self, shapes: tuple) -> _Binding:
        values = bind_shapes(self.inputs, shapes)
        schedule = self.schedule
        plan = plan_for(schedule, values, self.spans)
        if plan.arena_bytes >= 2 ** 62:  # (offsets must fit the descriptor's int64s)
            raise MemoryError(f"cannot allocate {plan.arena_bytes} bytes of scratch memory "
                              "for these shapes: too large")
        vectors: list[list[int]] = []
        for i, k in enumerate(schedule.kernels):
            used = self.units.symbols[i]
            vector = [values[v] for v in used]
            if used and isinstance(k, kir.Gemm):
                if i not in self.gemms:
                    self.gemms[i] = gemm.RuntimeGemm(k, self.representative)
                vector += self.gemms[i].descriptor(values)
            vectors.append(vector)
        start = -(-plan.arena_bytes // 64) * 64
        extra: list[int | None] = []
        at = start
        for vector in vectors:
            extra.append(at if vector else None)
            at += 8 * len(vector)
        words = np.array([v for vector in vectors for v in vector], np.int64)
        desc = np.array(entry.descriptor(schedule, self.slots, self.units.buffers,
                                         plan.offsets, extra) or [0], np.int64)
        outputs = [(slot, tuple(sizes.evaluate(d, values)
                                for d in schedule.buffers[b].shape),
                    np.dtype(schedule.buffers[b].dtype))
                   for slot, b in zip(self.output_slots, schedule.outputs)]
        return _Binding(max(at, 8), start, words, desc, outputs, values)

    def serves(self, shapes: tuple) -> bool:
        """Whether this program runs these shapes (their binding planned and kept); not
        where a packed GEMM would have an empty side."""
        with self.lock:
            try:
                self.binding(shapes)
            except NotSymbolic:
                return False
        return True

    def binding(self, shapes: tuple) -> _Binding:
        bound = self.bindings.get(shapes)
        if bound is None:
            if len(self.bindings) >= MAX_BINDINGS:
                self.bindings.pop(next(iter(self.bindings)))
            bound = self.bindings[shapes] = self._bind(shapes)
        return bound

    def _enter(self, bound: _Binding) -> None:
        """Makes `bound` the binding the next calls run with (under the lock)."""
        if self.arena.nbytes < bound.arena_bytes:
            self.arena = _aligned_empty(bound.arena_bytes)
        if bound.words.size:
            end = bound.start + 8 * bound.words.size
            self.arena[bound.start:end].view(np.int64)[:] = bound.words
        self.table[self.slots.arena_slot] = self.arena.ctypes.data
        self.table[self.slots.count] = bound.desc.ctypes.data
        self.current = bound

    def run(self, args: Sequence[np.ndarray]) -> list[np.ndarray]:
        from graphc.backends.llvm.runtime import data_pointer
        shapes = tuple(a.shape for a in args)
        self.shapes = shapes
        with self.lock:
            bound = self.binding(shapes)
            table = self.table
            if bound is not self.current:
                self._enter(bound)
            arrays = [a if a.flags.c_contiguous else np.ascontiguousarray(a) for a in args]
            for slot, a in zip(self.input_slots, arrays):
                table[slot] = data_pointer(a)
            outs = []
            for slot, shape, dtype in bound.outputs:
                out = np.empty(shape, dtype)
                table[slot] = data_pointer(out)
                outs.append(out)
            chooser = self.chooser
            if chooser is None:
                status = self.entry(self.table_address)
            else:
                chooser.before_call()
                start = time.perf_counter()
                status = self.entry(self.table_address)
                chooser.after_call(time.perf_counter() - start)
        if status:
            raise_for_status(status, self._error_layout(bound.values), arrays)
        return outs

    def _error_layout(self, values: Mapping[sizes.SizeVar, int]) -> Layout:
        """What raise_for_status needs, with this binding's sizes in the messages."""
        errors = {}
        for i, k in enumerate(self.schedule.kernels):
            error = k.error()
            if error is None:
                continue
            checked = k.checked_indices()
            errors[i] = error[1] if checked is None else index_error_message(
                error[1], sizes.evaluate(checked[2], values), checked[3])
        layout = Layout(0, 0, 0, [], [], [], [], errors)
        layout.index_args = {i: (p, sizes.evaluate(n, values), neg) for i, (p, n, neg)
                             in index_arguments(self.schedule, errors).items()}
        layout.value_errors = [i for i, k in enumerate(self.schedule.kernels)
                               if k.can_fail and (k.error() or (None,))[0] is ValueError]
        return layout

    # -- what Function shows ----------------------------------------------------------------
    def compile_times(self) -> dict:
        t = self.times
        out: dict = dict(t.extra)
        if not self.cached:
            out.update({"llvm parse": t.parse, "llvm optimize": t.optimize,
                        "llvm emit": t.jit})
        out["cached"] = self.cached
        out["symbolic"] = True
        out["bindings"] = len(self.bindings)
        return out

    @property
    def ir_texts(self) -> list[str]:
        if self._ir_texts is None:
            with sizes.representative(self.representative):
                self._ir_texts = codegen.render(self.schedule)[0]
        return self._ir_texts

    @property
    def ir_text(self) -> str:
        from graphc.backends.llvm.runtime import _joined
        return _joined(self.ir_texts)

    def assembly(self) -> str:
        import llvmlite.binding as llvm
        from graphc.backends.llvm.runtime import _joined
        parts = []
        for text in self.ir_texts:
            module = llvm.parse_assembly(text)
            jit.optimize_module(module)
            parts.append(jit.assembly(module))
        return _joined(parts)


def _aligned_empty(nbytes: int) -> np.ndarray:
    from graphc.backends.llvm.runtime import _aligned_empty as aligned
    return aligned(nbytes)
