"""Calling generated code: one compiled module per set of input shapes, buffers handed over
as one array of pointers, arguments checked (by gc.function) before any pointer is made."""
from __future__ import annotations

import ctypes
import threading
import time
from typing import Sequence

import numpy as np

from pathlib import Path

from graphc.backends.llvm import codegen, jit
from graphc.backends.llvm.cache import CompileCache, cache_key, default_dir
from graphc.schedule import schedule_graph

_ENTRY_TYPE = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p)


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


def _aligned_empty(nbytes: int, align: int = 64) -> np.ndarray:
    raw = np.empty(nbytes + align, np.uint8)
    start = (-raw.ctypes.data) % align
    return raw[start:start + nbytes]


class CompiledShape:
    """The native code for one set of input shapes, with its arena and pointer table."""

    def __init__(self, graph, shapes: tuple, disk: CompileCache, optimize: bool = True
                 ) -> None:
        t0 = time.perf_counter()
        self.schedule = schedule_graph(graph, list(shapes), optimize=optimize)
        t1 = time.perf_counter()
        self.times = jit.CompileTimes()
        self.key = cache_key(codegen.schedule_fingerprint(self.schedule))
        self.slots = codegen.SlotMap(self.schedule)
        self._ir_text: str | None = None
        self.module = None
        hit = disk.get(self.key)
        self.cached = hit is not None
        if hit is not None:
            payload, meta = hit
            from graphc.backends.llvm.gemm import openmp_available
            openmp_available()  # registers the symbols cached code links against
            self.errors = {int(k): v for k, v in meta.get("errors", {}).items()}
            self.address, self.engine = jit.load_object(payload, codegen.ENTRY)
            self.times.extra = {"schedule": t1 - t0, "cache load": time.perf_counter() - t1}
        else:
            self._ir_text, _, self.errors = codegen.render(self.schedule)
            t2 = time.perf_counter()
            objects: list[bytes] = []
            self.address, self.module, self.engine = jit.compile_ir(
                self._ir_text, codegen.ENTRY, self.times, capture=objects)
            self.times.extra = {"schedule": t1 - t0, "codegen": t2 - t1}
            if objects:
                disk.put(self.key, objects[0], {"errors": self.errors})
        self.entry = _ENTRY_TYPE(self.address)
        s = self.schedule
        self.table = (ctypes.c_void_p * self.slots.count)()
        self.table_address = ctypes.addressof(self.table)
        self.arena = _aligned_empty(s.plan.arena_bytes if s.plan else 0)
        self.table[self.slots.arena_slot] = self.arena.ctypes.data
        self.keep = []
        for bid, array in s.consts.items():
            array = np.ascontiguousarray(array)
            self.keep.append(array)
            self.table[self.slots.slot[bid]] = array.ctypes.data
        for bid, storage in s.params.items():
            self.table[self.slots.slot[bid]] = storage.array.ctypes.data
        self.input_slots = [self.slots.slot[b] for b in s.inputs]
        self.outputs = [(self.slots.slot[b], s.buffers[b]) for b in s.outputs]
        self.lock = threading.Lock()  # one arena: one call at a time

    @property
    def ir_text(self) -> str:
        if self._ir_text is None:  # loaded from the cache: render it for people to read
            self._ir_text = codegen.render(self.schedule)[0]
        return self._ir_text

    def assembly(self) -> str:
        if self.module is None:
            import llvmlite.binding as llvm
            self.module = llvm.parse_assembly(self.ir_text)
            jit.optimize_module(self.module)
        return jit.assembly(self.module)

    def run(self, args: Sequence[np.ndarray]) -> list[np.ndarray]:
        with self.lock:
            table = self.table
            arrays = [a if a.flags.c_contiguous else np.ascontiguousarray(a) for a in args]
            for slot, a in zip(self.input_slots, arrays):
                table[slot] = data_pointer(a)
            outs = []
            for slot, buf in self.outputs:
                out = np.empty(buf.shape, buf.dtype)
                table[slot] = data_pointer(out)
                outs.append(out)
            status = self.entry(self.table_address)
        if status:
            raise IndexError(self.errors.get(status - 1, f"native kernel {status - 1} failed"))
        return outs


class LLVMExecutable:
    """The llvm backend's handle on a graph: compiles per input shapes, on first use."""

    def __init__(self, graph, options: dict) -> None:
        self.graph = graph
        self.options = options
        folder = options.get("cache_dir", default_dir())
        self.disk = CompileCache(Path(folder) if folder else None)
        self.compiled: dict[tuple, CompiledShape] = {}
        self.last: CompiledShape | None = None
        self._lock = threading.Lock()
        if None not in {d for p in graph.inputs for d in p.shape}:
            self.last = self._get(tuple(p.shape for p in graph.inputs))

    def _get(self, shapes: tuple) -> CompiledShape:
        compiled = self.compiled.get(shapes)
        if compiled is None:
            with self._lock:
                compiled = self.compiled.get(shapes)
                if compiled is None:
                    compiled = CompiledShape(self.graph, shapes, self.disk,
                                             self.options.get("optimize", True))
                    self.compiled[shapes] = compiled
        return compiled

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

    def run(self, args: Sequence[np.ndarray]) -> list[np.ndarray]:
        compiled = self._get(tuple(a.shape for a in args))
        self.last = compiled
        return compiled.run(args)
