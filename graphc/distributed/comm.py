"""The process group: rank and size from the MPI launcher, mpi4py's world communicator, and
the reductions on numpy arrays and the handles native code calls MPI with."""
from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np

# Set by mpirun/mpiexec (Open MPI, PMIx, MPICH's hydra, Slurm's PMI): without one of them the
# process runs alone and mpi4py is never imported (MPI_Init would cost time for nothing).
LAUNCH_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE")


def launched() -> bool:
    """Whether an MPI launcher started this process."""
    return any(v in os.environ for v in LAUNCH_VARIABLES)


def local_size() -> int:
    """How many processes of the job run on this machine, from the launcher (1 alone)."""
    for name in ("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"):
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


@functools.lru_cache(maxsize=1)
def world() -> Any:
    """mpi4py's COMM_WORLD, or None for a process not launched by mpirun."""
    if not launched():
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        raise ImportError("graphc.distributed: this process was started by an MPI launcher "
                          "but mpi4py is not installed: pip install 'graphc[distributed]'"
                          ) from None
    return MPI.COMM_WORLD


def rank() -> int:
    """This process's number in the job: 0 .. size() - 1 (0 without mpirun)."""
    comm = world()
    return 0 if comm is None else int(comm.Get_rank())


def size() -> int:
    """The number of processes in the job (1 without mpirun)."""
    comm = world()
    return 1 if comm is None else int(comm.Get_size())


def _mpi() -> Any:
    from mpi4py import MPI
    return MPI


def check_ranks(ranks: int) -> Any:
    """The communicator a reduction over `ranks` processes uses, checked against the job."""
    comm = world()
    have = 1 if comm is None else comm.Get_size()
    if have != ranks:
        raise RuntimeError(f"all_reduce: the graph was built for {ranks} processes, but this "
                           f"job has {have}: build the step in the process that runs it")
    return comm


def all_reduce_array(x: np.ndarray, op: str, ranks: int) -> np.ndarray:
    """The sum or mean of `x` over the job's processes (a new array)."""
    comm = check_ranks(ranks)
    if comm is None or ranks == 1:
        return np.array(x, copy=True)
    from graphc.distributed.watchdog import waiting
    out = np.empty_like(x)
    with waiting("all_reduce"):
        comm.Allreduce(np.ascontiguousarray(x), out, op=_mpi().SUM)
    if op == "mean":
        out /= out.dtype.type(ranks)
    return out


def all_reduce_inplace(buffer: np.ndarray, ranks: int) -> None:
    """buffer <- the sum of every process's buffer (a contiguous array)."""
    comm = check_ranks(ranks)
    if comm is None or ranks == 1:
        return
    from graphc.distributed.watchdog import waiting
    with waiting("all_reduce"):
        comm.Allreduce(_mpi().IN_PLACE, buffer, op=_mpi().SUM)


def all_reduce_start(buffer: np.ndarray, ranks: int) -> Any:
    """Starts buffer <- the sum of every process's buffer (MPI_Iallreduce, in place): the
    request to wait for (all_reduce_wait) before the buffer is read or written; None alone."""
    comm = check_ranks(ranks)
    if comm is None or ranks == 1:
        return None
    return comm.Iallreduce(_mpi().IN_PLACE, buffer, op=_mpi().SUM)


def all_reduce_test(request: Any) -> None:
    """Lets MPI advance the reductions in flight (MPI_Test: Open MPI progresses a
    non-blocking collective only inside MPI calls)."""
    if request is not None:
        request.Test()


def all_reduce_wait(request: Any) -> None:
    """Completes a reduction all_reduce_start began."""
    if request is None:
        return
    from graphc.distributed.watchdog import waiting
    with waiting("all_reduce"):
        request.Wait()


# Slots of the table of handles native code reads (backends/llvm/collective.py): what an
# MPI_Allreduce call needs, as this process's MPI library spells them.
HANDLE_SLOTS = ("comm", "in_place", "sum", "float32", "float64", "int32", "int64",
                "status_ignore")


@functools.lru_cache(maxsize=1)
def native_handles() -> tuple[int, ...]:
    """The handles of COMM_WORLD, MPI_IN_PLACE, MPI_SUM and the datatypes, as integers in
    HANDLE_SLOTS order (pointers in Open MPI, ints in MPICH: either fits in 64 bits)."""
    comm = world()
    if comm is None:
        raise RuntimeError("graphc.distributed: no MPI job (not launched by mpirun)")
    MPI = _mpi()
    values = {"comm": MPI._handleof(comm), "in_place": int(MPI.IN_PLACE),
              "sum": MPI._handleof(MPI.SUM), "float32": MPI._handleof(MPI.FLOAT),
              "float64": MPI._handleof(MPI.DOUBLE), "int32": MPI._handleof(MPI.INT32_T),
              "int64": MPI._handleof(MPI.INT64_T),
              # MPI_STATUS_IGNORE: (MPI_Status *) 0 in Open MPI and MPICH
              "status_ignore": 0}
    return tuple(int(values[k]) & 0xFFFFFFFFFFFFFFFF for k in HANDLE_SLOTS)


def library_path() -> str:
    """The MPI library mpi4py loaded (so native code calls the very same one)."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1]
                if "/libmpi.so" in path or "/libmpich.so" in path:
                    return path
    except OSError:
        pass
    import ctypes.util
    found = ctypes.util.find_library("mpi")
    if not found:
        raise RuntimeError("graphc.distributed: cannot find the MPI library mpi4py uses")
    return found
