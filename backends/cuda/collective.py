"""The all_reduce kernel on the cuda backend: a host step between the launches, on the
buffer where the schedule put it. The emulator reduces its host buffers through MPI
(mpi4py, as the numpy kernel runner does); on a GPU, NCCL (cupy.cuda.nccl) reduces the device
buffer in place, ordered with the kernels through CUDA streams."""
from __future__ import annotations

import ctypes
import functools
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from graphc.schedule import ir as kir


@dataclass(frozen=True)
class Collective:
    """A reduction across the job's processes, run by the host in launch order: buffer
    `size` elements of `dtype` at `offset` bytes past the pointer of `slot`; `phase` and
    `request` as the AllReduce kernel's (the request names the reduction in flight)."""

    kernel: int  # the index of the IR kernel
    slot: int
    offset: int
    size: int
    dtype: str
    ranks: int
    phase: str
    request: int
    can_fail = False  # (as a Launch's: runners stop after a launch that failed)

    def meta(self) -> dict:
        return {"collective": [self.kernel, self.slot, self.offset, self.size, self.dtype,
                               self.ranks, self.phase, self.request]}

    @staticmethod
    def from_meta(meta: dict) -> "Collective":
        k, slot, offset, size, dtype, ranks, phase, request = meta["collective"]
        if phase not in kir.PHASES:
            raise ValueError(f"collective phase {phase!r}")
        return Collective(int(k), int(slot), int(offset), int(size), str(np.dtype(dtype)),
                          int(ranks), str(phase), int(request))


def emit_all_reduce(w: Any, index: int, k: kir.AllReduce, guard: bool
                    ) -> tuple[list[str], list[Any]]:
    """No CUDA C: a host step, at the buffer's place in the call layout (a temporary in the
    arena, at its offset)."""
    if k.size == 0:
        return [], []
    if w.schedule.buffers[k.buffer].role == "temp":
        slot, offset = w.slots.arena_slot, w.slots.offsets.get(k.buffer, 0)
    else:
        slot, offset = w.slots.slot[k.buffer], 0
    return [], [Collective(index, slot, offset, k.size, np.dtype(k.dtype).name, k.ranks,
                           k.phase, k.request)]


def host_array(address: int, c: Collective) -> np.ndarray:
    """The reduced buffer in host memory (the emulator's), as a numpy array over it."""
    dtype = np.dtype(c.dtype)
    raw = (ctypes.c_char * (c.size * dtype.itemsize)).from_address(address + c.offset)
    return np.frombuffer(memoryview(raw), dtype)


class HostReductions:
    """The emulator's reductions: MPI on host memory, requests kept between start and wait."""

    def __init__(self) -> None:
        self.requests: dict[int, Any] = {}

    def run(self, c: Collective, table: Any) -> None:
        from graphc.distributed import comm
        if c.phase == "test":
            comm.all_reduce_test(self.requests.get(c.request))
            return
        if c.phase == "wait":
            comm.all_reduce_wait(self.requests.pop(c.request, None))
            return
        flat = host_array(int(table[c.slot]), c)
        if c.phase == "start":
            self.requests[c.request] = comm.all_reduce_start(flat, c.ranks)
        else:
            comm.all_reduce_inplace(flat, c.ranks)


# -- NCCL, on a GPU --------------------------------------------------------------------------

def _nccl_type(nccl: Any, dtype: str) -> int:
    return {"float32": nccl.NCCL_FLOAT32, "float64": nccl.NCCL_FLOAT64,
            "int32": nccl.NCCL_INT32, "int64": nccl.NCCL_INT64}[dtype]


def use_local_device() -> None:
    """In a job, each process on a machine takes its own GPU: local rank modulo the count
    (as torch.cuda.set_device(local_rank)); before the process allocates anything there."""
    import cupy
    local = os.environ.get("OMPI_COMM_WORLD_LOCAL_RANK", os.environ.get("MPI_LOCALRANKID", ""))
    count = cupy.cuda.runtime.getDeviceCount()
    if local.isdigit() and count > 1:
        cupy.cuda.Device(int(local) % count).use()


@functools.lru_cache(maxsize=1)
def nccl_communicator(ranks: int) -> Any:
    """The job's NCCL communicator: rank 0 makes the unique id, MPI broadcasts it, every
    process joins (a collective call: the first step of every process makes it)."""
    from cupy.cuda import nccl

    from graphc.distributed.comm import check_ranks
    from graphc.distributed.watchdog import waiting
    comm = check_ranks(ranks)
    with waiting("the set-up of NCCL's communicator"):
        uid = nccl.get_unique_id() if comm.Get_rank() == 0 else None
        uid = comm.bcast(uid, root=0)
        return nccl.NcclCommunicator(comm.Get_size(), uid, comm.Get_rank())


class DeviceReductions:
    """NCCL on device buffers, in place. A blocking reduction runs on the compute stream, in
    order with the kernels; a start waits (an event) for the kernels before it, then runs on
    a stream of its own, so the kernels after it run meanwhile; its wait makes the compute
    stream wait for it. A test has nothing to do: NCCL progresses on the device."""

    def __init__(self, ranks: int) -> None:
        import cupy
        try:
            from cupy.cuda import nccl
        except ImportError as exc:
            raise RuntimeError("backend 'cuda': all_reduce across processes on GPUs needs "
                               "NCCL for CuPy (pip install 'graphc[nccl]'): "
                               f"{exc}") from None
        self.cp, self.nccl = cupy, nccl
        self.comm = nccl_communicator(ranks)
        self.side = cupy.cuda.Stream(non_blocking=True)
        self.done: dict[int, Any] = {}

    def run(self, c: Collective, table: Any) -> None:
        cp = self.cp
        compute = cp.cuda.get_current_stream()
        if c.phase == "test":
            return
        if c.phase == "wait":
            event = self.done.pop(c.request, None)
            if event is not None:
                compute.wait_event(event)
            return
        address = int(table[c.slot]) + c.offset
        stream = compute
        if c.phase == "start":
            stream = self.side
            stream.wait_event(compute.record())
        self.comm.allReduce(address, address, c.size, _nccl_type(self.nccl, c.dtype),
                            self.nccl.NCCL_SUM, stream.ptr)
        if c.phase == "start":
            self.done[c.request] = stream.record()
