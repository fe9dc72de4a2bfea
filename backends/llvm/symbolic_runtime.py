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
from graphc.backends.llvm import backend, codegen, gemm, jit, threads
from graphc.backends.llvm.adaptive import ThreadChooser, adaptive_enabled, first_setting
from graphc.backends.llvm.arena import Arena
from graphc.backends.llvm.binding_table import BindingTable
from graphc.backends.llvm.loop_vector import LoopTail
from graphc.backends.llvm.runtime import _joined, assembly_of, call_entry, data_pointer
from graphc.backends.llvm.symbolic_plan import (PlanFormatError, SymbolicPlan,
                                                symbol_places)
from graphc.collector import collector_paused
from graphc.errors import index_error_message
from graphc.program import Program
from graphc.runtime.cache import CompileCache, cache_key
from graphc.runtime.code_hash import code_hash
from graphc.runtime.errors import raise_for_status
from graphc.runtime.layout import Layout
from graphc.schedule import ir as kir
from graphc.schedule.ir import Schedule
from graphc.schedule.memory import lifetimes
from graphc.schedule.policy import SchedulePolicy
from graphc.schedule.symbolic import (NotSymbolic, check_columns, check_nodes,
                                      representative_binding, schedule_symbolic)
from graphc.specialize import bind_shapes

_ENTRY_TYPE = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p)
# Bindings kept (plan, arena, descriptors) before the oldest is dropped.
MAX_BINDINGS = 64


@dataclass
class _Binding:
    """What one binding of the sizes takes: the arena's size (each symbolic kernel's size
    values and GEMM descriptor, then the temporaries), the vectors' `words` (where
    `partial`, only those the sizes change: BindingTable.bind), the entry point's
    descriptor, the outputs."""

    arena_bytes: int
    partial: bool
    words: np.ndarray
    desc: np.ndarray
    outputs: list[tuple[int, tuple[int, ...], np.dtype]]
    values: Mapping[sizes.SizeVar, int]
    shapes: tuple
    work: int  # the temporaries' bytes (unshared): the thread chooser's measure of a call


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
        self.times.extra = {"fingerprint": fingerprint_seconds}
        self._schedule: Schedule | None = None
        self._ir_texts: list[str] | None = None
        check_nodes(program.raw_graph)  # (the optimizer may have removed what it checks)
        # a warm start reads what each binding's planning needs from the entry: no
        # optimizer, no scheduler, no LLVM (symbolic_plan.py)
        hit = self._cached(disk)
        self.cached = hit is not None
        if hit is not None:
            objects, self.plan = hit
            threads.openmp_available()  # registers the symbols cached code links against
            self.address, self.engine = jit.load_objects(objects, jit.ENTRY)
            self.times.extra["cache load"] = time.perf_counter() - t0
        else:
            try:
                if policy.implicit_gemm_or_specialize:
                    check_columns(program.raw_graph)
                with collector_paused():  # (as a specialised compile: many small objects)
                    self._compile(disk, t0)
            except (NotSymbolic, TypeError) as e:
                self._refuse(disk, e)
                raise
        plan = self.plan
        self.entry = _ENTRY_TYPE(self.address)
        self.table = (ctypes.c_void_p * (plan.slot_count + 1))()  # + the entry's descriptor
        self.table_address = ctypes.addressof(self.table)
        self.keep = []
        for slot, array in plan.consts:
            self.keep.append(array)
            self.table[slot] = array.ctypes.data
        for slot, number in plan.params:
            self.table[slot] = self.storages[number].array.ctypes.data
        self.input_slots = plan.input_slots
        # what each new binding evaluates, made once; written down as code with a compile
        # (a few ms: against a warm start's 40 ms, not written; the recipes run instead)
        self.recipe = BindingTable(plan, None if self.cached else self.representative)
        # where each symbol is read: (symbol, input, axis), its first place (bind_shapes)
        self.reads = [(var, i, axis) for var, (i, axis) in symbol_places(self.inputs).items()]
        self.bindings: dict[tuple, _Binding] = {}
        # one arena, as large as the largest binding so far needs (arena.py); it holds the
        # current binding's size values
        self.memory = Arena()
        self.table[plan.arena_slot] = data_pointer(self.memory.array)
        # the arena's first bytes as int64: the kernels' vectors (None until it is mapped;
        # dropped while it grows: a view held stops the mapping growing in place)
        self.words: np.ndarray | None = None
        written = self.recipe._words
        self.template = None if written is None else written.template
        self.places = None if written is None else written.places
        self.current: _Binding | None = None
        self.lock = threading.Lock()
        flags = plan.team_flags
        self.chooser = ThreadChooser([jit.global_address(self.engine, f) for f in flags],
                                     first_setting(self.times.extra)) \
            if flags and adaptive_enabled() else None

    def _compile(self, disk: CompileCache, t0: float) -> None:
        """Optimizes, schedules and compiles the program with symbolic sizes; its plan and
        code stored in `disk`. Raises NotSymbolic (or a TypeError: a size asked for a
        number) where it cannot be."""
        # (from the raw graph: schedule_symbolic optimizes it once its symbols are unified;
        # the program's own optimized graph first would run every pass twice, ~30 ms of W6's
        # cold start on one core)
        with sizes.representative(self.representative):
            self._schedule = schedule_symbolic(self.program.raw_graph, self.representative,
                                               self.optimize, self.policy)
        schedule = self._schedule
        t1 = time.perf_counter()
        self.times.extra["optimize and schedule"] = t1 - t0
        from graphc.backends.llvm import processes
        with sizes.representative(self.representative):
            units = codegen.plan_units(schedule)
            built = processes.compile_schedule(schedule, self.times, disk, plan=units)
        self._ir_texts = built.texts
        self.address, self.engine = built.address, built.engine
        gemms: dict[int, object] = {
            i: g for i, k in enumerate(schedule.kernels)
            if units.symbols[i] and isinstance(k, kir.Gemm)
            for g in [gemm.RuntimeGemm(k, self.representative)] if g.packed}
        gemms.update({i: LoopTail.of(k, len(units.symbols[i]), self.representative)
                      for i, k in enumerate(schedule.kernels)
                      if units.symbols[i] and isinstance(k, kir.Loop)})
        # (the schedule's plan holds its lifetimes: they do not depend on sizes)
        spans = schedule.plan.lifetimes if schedule.plan is not None else lifetimes(schedule)
        self.plan = SymbolicPlan.of(schedule, built.slots, units, self.storages, spans,
                                    gemms, built.flags)
        self._store(disk, built.objects)

    def _refuse(self, disk: CompileCache, error: Exception) -> None:
        """Stores why the program cannot have symbolic sizes, so that a warm start
        specialises at once instead of optimizing and lowering it again to find out (a
        CNN's implicit GEMM: the lowering's decision, by the program's structure)."""
        reason = str(error) if isinstance(error, NotSymbolic) \
            else f"{type(error).__name__}: {error}"
        disk.put(self.key, b"", {"not_symbolic": reason})

    def _store(self, disk: CompileCache, objects: list[bytes]) -> None:
        try:
            meta, blob = self.plan.to_meta(self.inputs)
        except PlanFormatError:
            return  # (a size not given by an input: not cached, made again next time)
        # (no fsync: it delayed the first call's result; a machine's crash may
        # leave the entry cut short, which its MAC turns into a miss, as for the kernels')
        disk.put(self.key, b"".join(objects) + blob,
                 {"object_lengths": [len(o) for o in objects], "plan": meta,
                  "representative": [list(s) for s in self.shapes]}, durable=False)

    def _cached(self, disk: CompileCache) -> tuple[list[bytes], SymbolicPlan] | None:
        """The code and plan stored under the key, or None; raises NotSymbolic where the
        entry says the program cannot have symbolic sizes (_refuse)."""
        hit = disk.get(self.key)
        if hit is None:
            return None
        payload, meta = hit
        refused = meta.get("not_symbolic")
        if isinstance(refused, str):
            raise NotSymbolic(refused)
        try:
            lengths = [int(n) for n in meta["object_lengths"]]
            objects, start = [], 0
            for n in lengths:
                objects.append(payload[start:start + n])
                start += n
            if not (lengths and start <= len(payload)
                    and all(jit.valid_object(o) for o in objects)):
                return None
            plan = SymbolicPlan.from_meta(meta["plan"], payload[start:], self.inputs,
                                          len(self.storages))
            shapes = tuple(tuple(int(d) for d in s) for s in meta["representative"])
            if len(shapes) != len(self.inputs):
                return None
        except (KeyError, TypeError, ValueError):  # (PlanFormatError is a ValueError)
            return None  # another format or a damaged entry: compiled again
        # the code's choices of speed were made with the binding that made it
        self.representative = representative_binding(bind_shapes(self.inputs, shapes))
        return objects, plan

    @property
    def arena(self) -> np.ndarray:
        """The scratch memory (a view: kept, it stops the mapping growing in place)."""
        return self.memory.array

    @property
    def schedule(self) -> Schedule:
        """The kernel plan (made on demand when the code came from the cache)."""
        if self._schedule is None:
            with sizes.representative(self.representative):
                self._schedule = schedule_symbolic(self.program.raw_graph, self.representative,
                                                   self.optimize, self.policy)
        return self._schedule

    # -- one binding ----------------------------------------------------------------------
    def _bind(self, shapes: tuple) -> _Binding:
        values = {var: shapes[i][axis] for var, i, axis in self.reads}
        planned = self.recipe.bind(values)
        if planned.arena_bytes >= 2 ** 62:  # (offsets must fit the descriptor's int64s)
            raise MemoryError(f"cannot allocate {planned.arena_bytes} bytes of scratch "
                              "memory for these shapes: too large")
        return _Binding(planned.arena_bytes, planned.partial, planned.words,
                        np.array(planned.desc or [0], np.int64), planned.outputs, values,
                        shapes, planned.work)

    def serves(self, shapes: tuple) -> bool:
        """Whether this program runs these shapes (their binding planned and kept); not
        where a packed GEMM would have an empty side."""
        with self.lock:
            try:
                self.binding(shapes)
            except NotSymbolic:
                return False
        return True

    def bound(self, shapes: tuple) -> _Binding | None:
        """These shapes' binding (planned and kept), or None where they need a module of
        their own: a call-time size of 0 (kernels skip work by their static shapes), or a
        packed GEMM with an empty side. (LLVMExecutable's path for new shapes.)"""
        for _, i, axis in self.reads:
            if not shapes[i][axis]:
                return None
        with self.lock:
            try:
                return self.binding(shapes)
            except NotSymbolic:
                return None

    def binding(self, shapes: tuple) -> _Binding:
        bound = self.bindings.get(shapes)
        if bound is None:
            if len(self.bindings) >= MAX_BINDINGS:
                self.bindings.pop(next(iter(self.bindings)))
            bound = self.bindings[shapes] = self._bind(shapes)
        return bound

    def _enter(self, bound: _Binding) -> None:
        """Makes `bound` the binding the next calls run with (under the lock)."""
        memory = self.memory
        if bound.arena_bytes > memory.array.nbytes:
            self.words = None
            memory.fit(bound.arena_bytes)  # (its pages kept, its address new)
            self.table[self.plan.arena_slot] = data_pointer(memory.array)
            self.words = memory.array[:self.recipe.vector_bytes].view(np.int64)
            if self.template is not None:
                self.words[:] = self.template  # (the words every binding shares)
        if bound.words.size:
            assert self.words is not None
            if bound.partial:
                self.words[self.places] = bound.words
            else:
                self.words[:] = bound.words
        self.table[self.plan.slot_count] = data_pointer(bound.desc)
        before = self.current
        self.current = bound
        self.shapes = bound.shapes
        if self.chooser is not None:
            self.chooser.rebind(None if before is None or not before.work
                                else bound.work / before.work)

    def run(self, args: Sequence[np.ndarray], bound: _Binding | None = None
            ) -> list[np.ndarray]:
        """Runs with the arguments' sizes. `bound`: their binding, where the caller keeps
        it (LLVMExecutable does, by shapes): a call at the current binding then costs what
        a specialised module's call costs."""
        with self.lock:
            if bound is None:
                bound = self.binding(tuple(a.shape for a in args))
            if bound is self.current:
                status, arrays, outs = call_entry(self, args, bound.outputs)
            else:
                self._enter(bound)
                status, arrays, outs = call_entry(self, args, bound.outputs)
                self.memory.ahead(bound.arena_bytes)
        if status:
            raise_for_status(status, self._error_layout(bound.values), arrays)
        return outs

    def _error_layout(self, values: Mapping[sizes.SizeVar, int]) -> Layout:
        """What raise_for_status needs, with this binding's sizes in the messages."""
        plan = self.plan
        errors = {i: e.message if e.size is None else index_error_message(
                      e.message, sizes.evaluate(e.size, values), e.negative)
                  for i, e in plan.errors.items()}
        layout = Layout(0, 0, 0, [], [], [], [], errors)
        layout.index_args = {i: (p, sizes.evaluate(n, values), neg)
                             for i, (p, n, neg) in plan.index_args.items()}
        layout.value_errors = list(plan.value_errors)
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
        return _joined(self.ir_texts)

    def assembly(self) -> str:
        return assembly_of(self.ir_texts)

