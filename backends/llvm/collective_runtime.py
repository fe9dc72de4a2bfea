"""Loading code that reduces across processes: MPI's library made visible to the JIT before
loading, and the tables of handles (backends/llvm/collective.py) filled after it."""
from __future__ import annotations

from typing import Any

# The name of a module's table of handles: the module's name and this suffix.
TABLE_SUFFIX = "_mpi"


def prepare(graph: Any) -> None:
    """Makes MPI_Allreduce resolvable by JIT code, for a program that reduces across
    processes (before its code is compiled or loaded from the cache)."""
    from graphc.distributed.comm import library_path, world
    if world() is None:  # one process: its all_reduce nodes are removed by the optimizer
        return
    if any(n.op == "all_reduce" and n.attrs["ranks"] > 1 for n in graph.nodes()):
        import llvmlite.binding as llvm
        llvm.load_library_permanently(library_path())


def bind(handle: Any, parts: int) -> None:
    """Fills the tables of handles of loaded code (parts named graphc or graphc0..)."""
    from graphc.backends.llvm.jit import global_address
    names = ["graphc" + TABLE_SUFFIX] + [f"graphc{p}{TABLE_SUFFIX}" for p in range(parts)]
    addresses = [a for a in (global_address(handle, n) for n in names) if a]
    if not addresses:
        return
    import ctypes

    from graphc.distributed.comm import native_handles
    values = native_handles()
    for address in addresses:
        (ctypes.c_uint64 * len(values)).from_address(address)[:] = list(values)
