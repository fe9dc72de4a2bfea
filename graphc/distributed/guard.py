"""Wraps a compiled step that holds collectives: the processes first agree that they run the
same program with the same reductions (or all fail with the difference), then every call
waits under the watchdog's deadline."""
from __future__ import annotations

import hashlib
from typing import Any, Sequence

import numpy as np

from graphc.dtypes import short_name
from graphc.graph import Graph


class DistributedError(RuntimeError):
    """The processes of a job disagree (a different program or different reductions)."""


def collectives(graph: Graph) -> list[str]:
    """The step's reductions, in graph order: op, dtype and shape (? for call-time sizes)."""
    out = []
    for n in graph.nodes():
        if n.op == "all_reduce":
            dims = ",".join(str(d) for d in n.shape)
            out.append(f"all_reduce/{n.attrs['reduction']} {short_name(n.dtype)}[{dims}]")
    return out


def signature(graph: Graph) -> tuple[str, list[str]]:
    """A digest of the whole program (its structural fingerprint) and its reductions."""
    from graphc.fingerprint import graph_fingerprint
    structure, _ = graph_fingerprint(graph)
    return hashlib.sha256(structure.encode()).hexdigest()[:16], collectives(graph)


def check_agreement(graph: Graph, comm: Any) -> None:
    """Exchanges every process's signature (once, before the first reduction) and raises
    DistributedError on every process if any differs."""
    from graphc.distributed.watchdog import waiting
    mine = signature(graph)
    with waiting("the check that every process runs the same step"):
        everyone = comm.allgather(mine)
    if all(s == everyone[0] for s in everyone):
        return
    lines = []
    for r, (digest, reductions) in enumerate(everyone):
        lines.append(f"  rank {r}: program {digest}, {len(reductions)} reduction(s): "
                     + "; ".join(reductions))
    what = "reductions" if any(s[1] != everyone[0][1] for s in everyone) else "programs"
    raise DistributedError(
        f"gc.distributed: the processes disagree about the step's {what} (every process "
        "must build the same program, with the same shapes and dtypes); rank "
        f"{comm.Get_rank()} sees:\n" + "\n".join(lines))


class CollectiveExecutable:
    """A backend's executable, run by a process of a job of several."""

    def __init__(self, exe: Any, graph: Graph, comm: Any) -> None:
        self._exe = exe
        self._graph = graph
        self._comm = comm
        self._agreed = False

    def __getattr__(self, name: str) -> Any:  # source, asm, compile_times, ...
        return getattr(self._exe, name)

    def run(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        from graphc.distributed.watchdog import waiting
        if not self._agreed:
            check_agreement(self._graph, self._comm)
            self._agreed = True
        with waiting("a step with all_reduce"):
            return self._exe.run(arrays)


def wrap(exe: Any, graph: Graph) -> Any:
    """`exe` itself in a process alone or for a program without collectives, else wrapped."""
    from graphc.distributed.comm import world
    comm = world()
    if comm is None or comm.Get_size() == 1:
        return exe
    if not any(n.op == "all_reduce" for n in graph.nodes()):
        return exe
    return CollectiveExecutable(exe, graph, comm)


def check_shapes(comm: Any, described: list) -> None:
    """Raises DistributedError on every process unless all describe the same arrays."""
    everyone = comm.allgather(described)
    if all(d == everyone[0] for d in everyone):
        return
    lines = [f"  rank {r}: " + ", ".join(f"{n} {tuple(s)} {d}" for n, s, d in desc)
             for r, desc in enumerate(everyone)]
    raise DistributedError("gc.distributed.broadcast_parameters: the processes hold different "
                           "parameters (names, shapes or dtypes):\n" + "\n".join(lines))
