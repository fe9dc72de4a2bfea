"""Overlap of reductions with the kernels after them: a blocking all_reduce becomes a start
(MPI_Iallreduce) where it stood and a wait right before the first kernel that touches its
buffer, so the kernels between (the rest of the backward pass) run while it is in flight."""
from __future__ import annotations

import dataclasses
import heapq

import numpy as np

from graphc.schedule.ir import AllReduce, Buffer, Schedule


def _dependencies(kernels: tuple) -> list[set[int]]:
    """Per kernel, the earlier kernels it must follow: by buffer (read after write, write
    after read or write; buffers are not yet placed in the arena, so ids do not alias), and
    every kernel on either side of one that can fail (a check stays where it was, before the
    parameter updates that wait for it)."""
    deps: list[set[int]] = [set() for _ in kernels]
    writer: dict[int, int] = {}
    readers: dict[int, list[int]] = {}
    fence = -1
    for j, k in enumerate(kernels):
        if fence >= 0:
            deps[j].add(fence)
        if k.can_fail:
            deps[j].update(range(fence + 1, j))
            fence = j
        for b in k.reads():
            if b in writer:
                deps[j].add(writer[b])
        for b in k.writes():
            if b in writer:
                deps[j].add(writer[b])
            deps[j].update(readers.pop(b, []))
        for b in k.reads():
            readers.setdefault(b, []).append(j)
        for b in k.writes():
            writer[b] = j
        deps[j].discard(j)
    return deps


def _reads_reduced_late(kernels: tuple) -> list[int]:
    """The kernel order with every kernel that depends on a reduction (its readers, the
    updates they feed) placed after the kernels that do not, as far as dependencies allow:
    the reductions' waits then land after the rest of the backward pass."""
    deps = _dependencies(kernels)
    users: list[list[int]] = [[] for _ in kernels]
    for j, d in enumerate(deps):
        for i in d:
            users[i].append(j)
    tainted = [False] * len(kernels)
    for j, k in enumerate(kernels):
        tainted[j] = any(tainted[i] or (isinstance(kernels[i], AllReduce) and not k.can_fail)
                         for i in deps[j])
    left = [len(d) for d in deps]
    ready = [(tainted[j], j) for j in range(len(kernels)) if not left[j]]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        _, i = heapq.heappop(ready)
        order.append(i)
        for j in users[i]:
            left[j] -= 1
            if not left[j]:
                heapq.heappush(ready, (tainted[j], j))
    return order


def _wait_at(kernels: tuple, i: int, buffer: int) -> int:
    """Where the wait of the reduction at `i` goes: before the first later kernel that reads
    or writes `buffer`, or that can fail (its error must not leave a reduction in flight,
    as before), else at the end of the program."""
    for j in range(i + 1, len(kernels)):
        k = kernels[j]
        if buffer in k.reads() or buffer in k.writes() or k.can_fail:
            return j
    return len(kernels)


def overlap_reductions(lowered: Schedule) -> Schedule:
    """`lowered` (not yet planned) with the kernels that read reductions moved after the
    others, and each reduction that then has kernels to overlap with split into start and
    wait; one with none stays a blocking call (`lowered` itself without reductions)."""
    if not any(isinstance(k, AllReduce) for k in lowered.kernels):
        return lowered
    order = _reads_reduced_late(lowered.kernels)
    kernels = tuple(lowered.kernels[i] for i in order)
    nodes = tuple(lowered.kernel_nodes[i] for i in order) if lowered.kernel_nodes else ()
    buffers = dict(lowered.buffers)
    waits: dict[int, list[AllReduce]] = {}
    starts: dict[int, AllReduce] = {}
    for i, k in enumerate(kernels):
        if not isinstance(k, AllReduce) or k.phase:
            continue
        j = _wait_at(kernels, i, k.buffer)
        if j == i + 1:
            continue  # nothing to overlap with: MPI_Allreduce
        request = max(buffers) + 1
        buffers[request] = Buffer(request, np.dtype(np.int64), (1,), "temp", "mpi_request")
        starts[i] = dataclasses.replace(k, phase="start", request=request)
        waits.setdefault(j, []).append(dataclasses.replace(k, phase="wait", request=request))
    if not starts:
        return dataclasses.replace(lowered, kernels=kernels, kernel_nodes=nodes)
    out: list = []
    out_nodes: list = []
    start_nodes: dict[int, tuple] = {}
    for j in range(len(kernels) + 1):
        for w in waits.get(j, []):
            out.append(w)
            out_nodes.append(start_nodes.get(w.request, ()))
        if j == len(kernels):
            break
        out.append(starts.get(j, kernels[j]))
        out_nodes.append(nodes[j] if j < len(nodes) else ())
        if j in starts:
            start_nodes[starts[j].request] = out_nodes[-1]
    return dataclasses.replace(lowered, buffers=buffers, kernels=tuple(out),
                               kernel_nodes=tuple(out_nodes) if nodes else nodes)
