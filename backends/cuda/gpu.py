"""The runtime on a real GPU, through CuPy: the program compiled by NVRTC to machine code
for the device's architecture, parameters, constants and the arena kept on the device,
arguments numpy or CuPy arrays, the launches queued on the current stream and the status
word read once, after the step. Run on a GPU by benchmarks/gpu_checks.sh
(docs/cuda-backend.md, "On a GPU")."""
from __future__ import annotations

import functools
import os
import tempfile
from typing import Any, Sequence

import numpy as np

from graphc.runtime.errors import raise_for_status
from graphc.runtime.layout import Layout
from graphc.backends.cuda.collective import Collective, DeviceReductions
from graphc.backends.cuda.loop import AnyLaunch, LoopLaunch, step_tables


@functools.lru_cache(maxsize=1)
def device_arch() -> str:
    import cupy
    return f"sm_{cupy.cuda.Device().compute_capability}"  # (CuPy gives e.g. "90")


@functools.lru_cache(maxsize=1)
def target_id() -> str:
    """The GPU architecture, the CUDA driver and NVRTC versions: what the cubin depends on."""
    import cupy
    from graphc.backends.cuda.ptx import nvrtc_version
    return (f"cuda|{device_arch()}|driver {cupy.cuda.runtime.driverGetVersion()}|"
            f"nvrtc {nvrtc_version()}")


def compile_cubin(source: str) -> bytes:
    from graphc.backends.cuda.ptx import nvrtc_compile
    return nvrtc_compile(source, device_arch(), cubin=True)


class GpuRunner:
    """Calls one program's launches on the device."""

    def __init__(self, code: bytes, layout: Layout, launches: Sequence[AnyLaunch],
                 storages: list, written_slots: list[int], outputs: str) -> None:
        import cupy
        self.cp = cupy
        fd, path = tempfile.mkstemp(prefix="graphc-", suffix=".cubin")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(code)
            self.module = cupy.RawModule(path=path)
            self.functions = self._functions(launches)
        finally:
            os.unlink(path)
        self.layout, self.outputs_numpy = layout, outputs == "numpy"
        self.arena = cupy.empty(max(layout.arena_bytes, 1), cupy.uint8)
        self.table = np.zeros(layout.slots, np.uint64)
        self.table[layout.arena_slot] = self.arena.data.ptr
        self.consts = [(slot, cupy.asarray(a)) for slot, a in layout.consts]
        for slot, a in self.consts:
            self.table[slot] = a.data.ptr
        # parameters live on the device; the host copy is what users read and write, so a
        # host change is uploaded before a step and updated values come back after it
        self.storages = storages
        self.params = [(slot, storages[n], cupy.asarray(storages[n].array),
                        storages[n].array.copy()) for slot, n in layout.params]
        for slot, _, dev, _ in self.params:
            self.table[slot] = dev.data.ptr
        self.written = set(written_slots)
        self.status = cupy.zeros(1, cupy.int32)
        self.status_clear = True  # zero now: reset only after a step that left it otherwise
        self.checked = True  # no check has run since the status was last read
        # the pointer table on the device, uploaded again only when an address changed (in
        # a training loop the same inputs and pooled outputs come back at the same addresses)
        self.slots = cupy.asarray(self.table)
        self.uploaded = self.table.copy()
        ranks = {L.ranks for L in launches if isinstance(L, Collective)}
        self.reductions: Any = DeviceReductions(ranks.pop()) if ranks else None

    def _functions(self, launches: Sequence[Any]) -> list:
        """(function, launch), or (None, loop, the functions of its body)."""
        return [(None, L, self._functions(L.body)) if isinstance(L, LoopLaunch)
                else (None, L, None) if isinstance(L, Collective)
                else (self.module.get_function(L.name), L, None) for L in launches]

    def _launch(self, functions: list, slots: Any, table: np.ndarray) -> bool:
        """Queues `functions` with the device pointer table `slots` (its values `table`): a
        loop's body once per step, each step's table uploaded with the others at once.
        False when a check failed before a reduction (the step stops there)."""
        for fn, L, body in functions:
            if isinstance(L, Collective):
                # a check that failed must not send this process's stale buffer into the
                # others' sums: read the status first (a synchronisation) when one ran
                if L.phase in ("", "start") and not self.checked:
                    if int(self.status.get()[0]):
                        return False
                    self.checked = True
                self.reductions.run(L, table)
                continue
            if body is None:
                fn(L.grid, (L.block,), (slots, self.status))
                self.checked = self.checked and not L.can_fail
                continue
            rows = step_tables(L, table)
            device_rows = self.cp.asarray(rows)
            for step, row in enumerate(rows):
                if not self._launch(body, device_rows[step], row):
                    return False
        return True

    def run(self, args: Sequence[Any]) -> list[Any]:
        cp, layout, table = self.cp, self.layout, self.table
        for _slot, storage, dev, seen in self.params:
            if not np.array_equal(storage.array, seen, equal_nan=True):
                dev.set(storage.array)
                seen[...] = storage.array
        inputs = [cp.ascontiguousarray(cp.asarray(a)) for a in args]
        for slot, a in zip(layout.input_slots, inputs):
            table[slot] = a.data.ptr
        outs = []
        for slot, shape, dtype in layout.outputs:
            out = cp.empty(shape, dtype)
            table[slot] = out.data.ptr
            outs.append(out)
        if not np.array_equal(table, self.uploaded):
            self.slots.set(table)
            self.uploaded[...] = table
        if not self.status_clear:
            self.status.fill(0)
        self.status_clear = False
        self.checked = True
        self._launch(self.functions, self.slots, table)
        status = int(self.status.get()[0])  # the one synchronisation of the step
        self.status_clear = status == 0
        for slot, storage, dev, seen in self.params:
            if slot in self.written:
                dev.get(out=storage.array)
                seen[...] = storage.array
        if status:
            raise_for_status(status, layout, [cp.asnumpy(a) for a in inputs])
        return [cp.asnumpy(o) for o in outs] if self.outputs_numpy else outs
