"""Calling the generated CUDA: one compiled program per set of input shapes, looked up in
the shared disk cache first; its launches run by the emulator (on the CPU) or by the CuPy
runtime (gpu.py). The status word is read after the step and raised as the other backends
raise it."""
from __future__ import annotations

import ctypes
import hashlib
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from graphc.program import Program
from graphc.runtime.cache import CompileCache, cache_key, default_dir
from graphc.runtime.code_hash import code_hash
from graphc.runtime.errors import raise_for_status
from graphc.runtime.layout import Layout
from graphc.schedule.policy import SchedulePolicy
from graphc.backends.cuda.collective import Collective, HostReductions
from graphc.backends.cuda.loop import (AnyLaunch, LoopLaunch, launch_meta, launches_from,
                                       step_tables)

_HERE = Path(__file__).parent
# The non-Python files the code depends on (code_hash covers the Python ones).
_TEXTS = hashlib.sha256(b"".join((_HERE / name).read_bytes() for name in (
    "prelude.cuh", "emulator.h", "emulator.cpp"))).hexdigest()


def _aligned_empty(nbytes: int, align: int = 256) -> np.ndarray:
    raw = np.empty(nbytes + align, np.uint8)
    start = (-raw.ctypes.data) % align
    return raw[start:start + nbytes]


def _launch_meta(launches: Sequence[AnyLaunch]) -> list[list]:
    return launch_meta(launches)


def _launches_from(meta: list[list]) -> tuple[AnyLaunch, ...]:
    return launches_from(meta)


class CompiledShape:
    """The program for one set of input shapes: its code (from the disk cache, or rendered
    and compiled on a miss), call layout and launches, and the runner that calls them."""

    def __init__(self, program: Program, shapes: tuple, disk: CompileCache,
                 options: dict, fingerprint: tuple[str, list], policy: SchedulePolicy) -> None:
        self.program, self.shapes, self.policy = program, shapes, policy
        self.optimize = options.get("optimize", True)
        self.emulate = bool(options.get("emulate", False))
        structure, storages = fingerprint
        self._schedule = None
        self._rendered = None
        if self.emulate:
            from graphc.backends.cuda.emulate import compiler_id
            target = f"cuda-emulated|{compiler_id()}"
        else:
            from graphc.backends.cuda.gpu import target_id
            target = target_id()
        self.key = cache_key(structure, shapes, target, code_hash("graphc.backends.cuda"),
                             (program.pass_names, self.optimize, policy, _TEXTS))
        hit = disk.get(self.key)
        layout = None
        if hit is not None:
            payload, meta = hit
            try:
                n = int(meta["code_length"])
                code, blob = payload[:n], payload[n:]
                layout = Layout.from_meta(meta["layout"], blob)
                launches = _launches_from(meta["launches"])
                written = [int(s) for s in meta["written_slots"]]
                if not layout.fits(program.raw_graph, len(storages)):
                    layout = None
            except (KeyError, TypeError, ValueError):
                layout = None  # another format or a damaged entry: rebuilt below
        self.cached = layout is not None
        if layout is None:
            rendered = self.rendered
            code = self._build(rendered.source)
            layout = Layout.of(self.schedule, rendered.slots, rendered.errors, storages, [])
            launches = rendered.launches
            slot = rendered.slots.slot
            written = sorted({slot[b] for k in self.schedule.kernels for b in k.writes()
                              if b in self.schedule.params})
            meta, blob = layout.to_meta()
            disk.put(self.key, code + blob, {"code_length": len(code), "layout": meta,
                                             "launches": _launch_meta(launches),
                                             "written_slots": written})
        self.layout, self.launches = layout, launches
        self.lock = threading.Lock()  # one arena: one call at a time
        if self.emulate:
            self.runner: Any = EmulatedRunner(code, layout, launches, storages,
                                              int(options.get("seed", 0)))
        else:
            from graphc.backends.cuda.gpu import GpuRunner
            self.runner = GpuRunner(code, layout, launches, storages, written,
                                    options.get("outputs", "cupy"))

    def _build(self, source: str) -> bytes:
        if self.emulate:
            from graphc.backends.cuda.emulate import compile_library
            return compile_library(source)
        from graphc.backends.cuda.gpu import compile_cubin
        return compile_cubin(source)

    @property
    def schedule(self):
        if self._schedule is None:
            from graphc.schedule import schedule_graph
            self._schedule = schedule_graph(self.program.graph, list(self.shapes),
                                            optimize=self.optimize, policy=self.policy)
        return self._schedule

    @property
    def rendered(self):
        """The CUDA C and launches (rendered again, on demand, for code from the cache)."""
        if self._rendered is None:
            from graphc.backends.cuda.render import render
            self._rendered = render(self.schedule)
        return self._rendered

    def run(self, args: Sequence[Any]) -> list[Any]:
        with self.lock:
            return self.runner.run(args)


class EmulatedRunner:
    """Runs the launches on the CPU through the emulation library."""

    def __init__(self, code: bytes, layout: Layout, launches: Sequence[AnyLaunch],
                 storages: list, seed: int) -> None:
        from graphc.backends.cuda.emulate import Library
        self.lib = Library(code)
        self.layout, self.seed = layout, seed
        self.calls = self._calls(launches)
        self.reductions = HostReductions()
        self.table = (ctypes.c_void_p * layout.slots)()
        self.arena = _aligned_empty(max(layout.arena_bytes, 1))
        self.table[layout.arena_slot] = self.arena.ctypes.data
        self.keep = [a for _, a in layout.consts]
        for slot, array in layout.consts:
            self.table[slot] = array.ctypes.data
        self.storages = storages
        self.status = ctypes.c_int(0)

    def _calls(self, launches: Sequence[AnyLaunch]) -> list:
        """(function address, launch), or (None, loop, the calls of its body)."""
        return [(None, L, self._calls(L.body)) if isinstance(L, LoopLaunch)
                else (None, L, None) if isinstance(L, Collective)
                else (self.lib.kernel(L.name), L, None) for L in launches]

    def _launch(self, calls: list, table_address: int, table: np.ndarray,
                status_address: int) -> bool:
        """Runs `calls` with the pointer table at `table_address` (its values `table`);
        False once a kernel has failed."""
        for address, L, body in calls:
            if isinstance(L, Collective):  # (host buffers: reduced by MPI in place)
                self.reductions.run(L, table)
                continue
            if body is not None:  # a loop: its body's launches at each step
                rows = step_tables(L, table)
                for row in rows:
                    if not self._launch(body, row.ctypes.data, row, status_address):
                        return False
                continue
            if self.lib.launch(address, L.grid[0], L.grid[1], L.grid[2], L.block,
                               int(L.sync), table_address, status_address, self.seed):
                raise RuntimeError(f"cuda emulator: kernel {L.name}: "
                                   f"{self.lib.error().decode()}")
            if L.can_fail and self.status.value:
                return False
        return True

    def run(self, args: Sequence[np.ndarray]) -> list[np.ndarray]:
        table, layout = self.table, self.layout
        arrays = [np.ascontiguousarray(a) for a in args]
        for slot, a in zip(layout.input_slots, arrays):
            table[slot] = a.ctypes.data
        for slot, number in layout.params:  # (the storage's array, as it is now)
            table[slot] = self.storages[number].array.ctypes.data
        outs = []
        for slot, shape, dtype in layout.outputs:
            out = np.empty(shape, dtype)
            table[slot] = out.ctypes.data
            outs.append(out)
        from graphc.backends.cuda.emulate import LAUNCH_LOCK
        self.status.value = 0
        status_address = ctypes.addressof(self.status)
        table_address = ctypes.addressof(table)
        values = np.array([table[i] or 0 for i in range(layout.slots)], np.uint64)
        with LAUNCH_LOCK:
            self._launch(self.calls, table_address, values, status_address)
        if self.status.value:
            raise_for_status(self.status.value, layout, arrays)
        return outs


class CudaExecutable:
    """The cuda backend's handle on a program: compiles per input shapes, on first use."""

    def __init__(self, program: Program, options: dict, policy: SchedulePolicy) -> None:
        self.program, self.options, self.policy = program, options, policy
        folder = options.get("cache_dir", default_dir())
        self.disk = CompileCache(Path(folder) if folder else None)
        self.compiled: dict[tuple, CompiledShape] = {}
        self.last: CompiledShape | None = None
        self._lock = threading.Lock()
        self._fingerprint: tuple[str, list] | None = None
        inputs = program.raw_graph.inputs
        if all(isinstance(d, int) for p in inputs for d in p.shape):
            self.last = self._get(tuple(p.shape for p in inputs))

    def _get(self, shapes: tuple) -> CompiledShape:
        with self._lock:
            compiled = self.compiled.get(shapes)
            if compiled is None:
                if self._fingerprint is None:
                    from graphc.fingerprint import graph_fingerprint
                    self._fingerprint = graph_fingerprint(self.program.raw_graph)
                compiled = self.compiled[shapes] = CompiledShape(
                    self.program, shapes, self.disk, self.options, self._fingerprint,
                    self.policy)
        return compiled

    @property
    def source(self) -> str:
        """The CUDA C of the last compiled shapes."""
        if self.last is None:
            return "// not compiled yet: sizes given at call time (a program per input shapes)"
        return self.last.rendered.source

    @property
    def ptx(self) -> str:
        """The PTX the source compiles to (NVRTC, or nvcc; no GPU needed)."""
        if self.last is None:
            return "// not compiled yet"
        from graphc.backends.cuda.ptx import to_ptx
        return to_ptx(self.last.rendered.source)

    def run(self, args: Sequence[Any]) -> list[Any]:
        compiled = self._get(tuple(a.shape for a in args))
        self.last = compiled
        return compiled.run(args)
