"""The runtime on a real GPU, through CuPy: the program compiled by NVRTC to machine code
for the device's architecture, parameters, constants and the arena kept on the device,
arguments numpy or CuPy arrays, the launches queued on the current stream and the status
word read once, after the step. Run on a GPU by benchmarks/gpu_checks.sh
(docs/cuda-backend.md, "On a GPU")."""
from __future__ import annotations

import functools
import os
import tempfile
import warnings
from typing import Any, NamedTuple, Sequence

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


class _Param(NamedTuple):
    """A parameter's slot, its storage (the host array users see), its array on the device,
    the host values last uploaded, and its place in the host copy of the device block."""

    slot: int
    storage: Any
    device: Any
    seen: np.ndarray
    host: np.ndarray


def same_bytes(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two arrays of one dtype and shape hold the same bytes: compared as unsigned
    integers of their width, 16 times faster than float equality with equal_nan (a NaN
    equals itself here too; -0.0 differs from 0.0, as a change to upload should)."""
    unit = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}.get(a.dtype.itemsize,
                                                                       np.uint8)
    return np.array_equal(np.ascontiguousarray(a).reshape(-1).view(unit),
                          np.ascontiguousarray(b).reshape(-1).view(unit))


def _packed(sizes: Sequence[int], align: int = 256) -> tuple[list[int], int]:
    """Offsets of blocks of these byte sizes placed one after another, each aligned (as
    cudaMalloc's are), and the bytes they take."""
    offsets, end = [], 0
    for n in sizes:
        end = -(-end // align) * align
        offsets.append(end)
        end += n
    return offsets, end


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
        # host change is uploaded before a step and updated values come back after it: in
        # one copy, the updated ones packed first in one device block (a copy a parameter
        # cost a synchronisation each)
        self.storages = storages
        self.written = set(written_slots)
        order = sorted(layout.params, key=lambda sn: sn[0] not in self.written)
        offsets, total = _packed([storages[n].array.nbytes for _, n in order])
        self.param_block = cupy.zeros(max(total, 1), cupy.uint8)
        self.param_host = np.zeros(max(total, 1), np.uint8)
        self.params: list[_Param] = []
        for (slot, n), start in zip(order, offsets):
            host = storages[n].array
            span = slice(start, start + host.nbytes)
            dev = self.param_block[span].view(host.dtype).reshape(host.shape)
            dev.set(host)
            self.params.append(_Param(slot, storages[n], dev, host.copy(),
                                      self.param_host[span].view(host.dtype).reshape(
                                          host.shape)))
            self.table[slot] = dev.data.ptr
        self.updated_bytes = max((offsets[i] + storages[n].array.nbytes
                                  for i, (slot, n) in enumerate(order)
                                  if slot in self.written), default=0)
        self.status = cupy.zeros(1, cupy.int32)
        self.status_clear = True  # zero now: reset only after a step that left it otherwise
        self.checked = True  # no check has run since the status was last read
        # the pointer table on the device, uploaded again only when an address changed (in
        # a training loop the same inputs and pooled outputs come back at the same addresses)
        self.slots = cupy.asarray(self.table)
        self.uploaded = self.table.copy()
        ranks = {L.ranks for L in launches if isinstance(L, Collective)}
        self.reductions: Any = DeviceReductions(ranks.pop()) if ranks else None
        # A step of plain launches is captured as a CUDA graph at its second call and
        # replayed after (one launch instead of one a kernel: the host's share of a small
        # step). The kernels read every address through the table, which stays put, so
        # the graph holds for any arguments. Loops and reductions between processes
        # decide on the host as they go, and keep launching one by one.
        self.graph: Any = None
        self.calls = 0
        self.capturable = all(body is None and not isinstance(L, Collective)
                              for _, L, body in self.functions)

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

    def _captured(self) -> Any:
        """The step's launches as a CUDA graph, captured on a stream of its own (nothing
        runs while it is captured); None, and launches one by one from then on, where
        this CuPy or driver cannot capture them."""
        stream = self.cp.cuda.Stream(non_blocking=True)
        try:
            with stream:
                stream.begin_capture()
                try:
                    self._launch(self.functions, self.slots, self.table)
                finally:
                    graph = stream.end_capture()
        except Exception as exc:  # (CuPy raises its own CUDA errors)
            warnings.warn(f"backend 'cuda': launching kernel by kernel, as the step could "
                          f"not be captured as a CUDA graph: {exc}", RuntimeWarning,
                          stacklevel=3)
            self.capturable = False
            return None
        return graph

    def run(self, args: Sequence[Any]) -> list[Any]:
        cp, layout, table = self.cp, self.layout, self.table
        for p in self.params:
            if not same_bytes(p.storage.array, p.seen):
                p.device.set(p.storage.array)
                p.seen[...] = p.storage.array
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
        self.calls += 1
        if self.capturable and self.graph is None and self.calls >= 2:
            self.graph = self._captured()
        if self.graph is not None:
            self.graph.launch(stream=cp.cuda.get_current_stream())
        else:
            self._launch(self.functions, self.slots, table)
        status = int(self.status.get()[0])  # the one synchronisation of the step
        self.status_clear = status == 0
        if self.updated_bytes:
            updated = slice(0, self.updated_bytes)
            self.param_block[updated].get(out=self.param_host[updated])
            for p in self.params:
                if p.slot in self.written:
                    p.storage.array[...] = p.host
                    p.seen[...] = p.host
        if status:
            raise_for_status(status, layout, [cp.asnumpy(a) for a in inputs])
        return [cp.asnumpy(o) for o in outs] if self.outputs_numpy else outs
