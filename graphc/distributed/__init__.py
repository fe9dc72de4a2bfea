"""Data-parallel training over MPI (mpi4py): rank, size, all_reduce as a graph primitive,
parameters broadcast from rank 0, and a deadline on waits for the other processes."""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from graphc.distributed.comm import rank, size, world
from graphc.distributed.guard import DistributedError
from graphc.distributed.watchdog import get_timeout, set_timeout
from graphc.function import Function
from graphc.frontends.distributed import all_reduce


def _storages(params: Any) -> list:
    """The parameter storages of a Module, a compiled Function, a dict or a list of them."""
    if hasattr(params, "named_parameters"):  # a gc.nn Module
        params = [p for _, p in params.named_parameters()]
    elif isinstance(params, Function):  # every parameter it holds
        return list({p.attrs["storage"] for p in params.raw_graph.parameters()})
    elif isinstance(params, dict):
        params = list(params.values())
    if not isinstance(params, Iterable):
        raise TypeError("broadcast_parameters: params must be a Module, a compiled function, "
                        f"or a list/dict of gc.parameter tensors; got {type(params).__name__}")
    out = []
    for p in params:
        storage = getattr(p, "storage", None)
        if storage is None and hasattr(p, "node"):
            storage = p.node.attrs.get("storage")
        if storage is None:
            raise TypeError(f"broadcast_parameters: {p!r} is not a gc.parameter")
        out.append(storage)
    return out


def broadcast_parameters(params: Any, root: int = 0) -> None:
    """Sets every process's parameters to the values process `root` holds (so all start
    from the same point, whatever each process's random initialisation). params: a Module,
    a compiled gc.function (every parameter it holds), or a list/dict of gc.parameter."""
    storages = sorted(_storages(params), key=lambda s: s.uid)
    comm = world()
    if comm is None or comm.Get_size() == 1:
        return
    if isinstance(root, bool) or not isinstance(root, int) or not 0 <= root < comm.Get_size():
        raise ValueError(f"broadcast_parameters: root must be a rank in [0, "
                         f"{comm.Get_size()}), got {root!r}")
    from graphc.distributed.guard import check_shapes
    from graphc.distributed.watchdog import waiting
    with waiting("broadcast_parameters"):
        check_shapes(comm, [(s.name, s.array.shape, s.array.dtype.str) for s in storages])
        for s in storages:
            with s.lock:
                buf = np.ascontiguousarray(s.array)
                comm.Bcast(buf, root=root)
                if buf is not s.array:
                    s.array[...] = buf


__all__ = ["rank", "size", "all_reduce", "broadcast_parameters", "set_timeout",
           "get_timeout", "DistributedError"]
