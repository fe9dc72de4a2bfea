"""Loading code that reduces across processes: MPI's library and the table of handles
(backends/llvm/collective.py) made visible to the JIT before the code is loaded."""
from __future__ import annotations

from typing import Any

# The table of MPI handles that native all_reduce kernels read: a symbol this process
# defines (filled with its own handles) before any code that uses it is loaded.
TABLE_SYMBOL = "graphc_mpi_handles"
_table: Any = None


def prepare(graph: Any) -> None:
    """Makes MPI_Allreduce and the table of handles resolvable by JIT code, for a program
    that reduces across processes (before its code is compiled or loaded from the cache)."""
    global _table
    from graphc.distributed.comm import library_path, world
    if world() is None:  # one process: its all_reduce nodes are removed by the optimizer
        return
    if any(n.op == "all_reduce" and n.attrs["ranks"] > 1 for n in graph.nodes()):
        import ctypes

        import llvmlite.binding as llvm

        from graphc.distributed.comm import native_handles
        llvm.load_library_permanently(library_path())
        if _table is None:
            values = list(native_handles())
            _table = (ctypes.c_uint64 * len(values))(*values)
            llvm.add_symbol(TABLE_SYMBOL, ctypes.addressof(_table))
