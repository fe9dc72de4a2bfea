"""Overlap of reductions with the kernels after them: a blocking all_reduce becomes a start
(MPI_Iallreduce) as soon as its inputs are ready, tests (MPI_Test) between the kernels that
follow, and a wait right before the first kernel that touches its buffer, so the kernels
between (the rest of the backward pass) run while it is in flight."""
from __future__ import annotations

import bisect
import dataclasses
import heapq

import numpy as np

from graphc.schedule.ir import AllReduce, Buffer, Gemm, Schedule


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


def _ancestors(deps: list[set[int]]) -> list[int]:
    """Per kernel, the set of kernels it depends on, directly or not, as a bit mask."""
    masks: list[int] = []
    for d in deps:
        m = 0
        for i in d:
            m |= masks[i] | (1 << i)
        masks.append(m)
    return masks


def _work(k) -> int:
    """A kernel's work, roughly: multiply-adds for a GEMM, else the elements it touches."""
    if isinstance(k, Gemm):
        return int(np.prod(k.batch, dtype=np.int64)) * k.m * k.n * k.k
    return max((int(np.prod(shape, dtype=np.int64)) for _, _, shape in k.accesses()),
               default=1)


def _bits(mask: int) -> list[int]:
    """The set bits of `mask`, ascending."""
    out = []
    while mask:
        low = mask & -mask
        out.append(low.bit_length() - 1)
        mask ^= low
    return out


def _reductions_early(kernels: tuple) -> list[int]:
    """The kernel order with each reduction started as soon as the kernels it needs have run:
    repeatedly the reduction that needs the least work not yet placed goes next, after
    them (in a backward pass: the last layer's gradients first, as DDP's buckets in reverse
    order of the parameters); then the kernels that do not depend on a reduction, then those
    that do (its readers, the updates they feed), as far as dependencies allow: the waits
    land after the rest of the backward pass."""
    deps = _dependencies(kernels)
    ancestors = _ancestors(deps)
    reductions = [j for j, k in enumerate(kernels) if isinstance(k, AllReduce)]
    # per reduction, the work of the kernels it needs (a row per reduction, numpy: a step
    # with a reduction per tensor has hundreds)
    n = len(kernels)
    needs = np.stack([np.unpackbits(np.frombuffer(ancestors[j].to_bytes(n // 8 + 1, "little"),
                                                  np.uint8), bitorder="little")[:n]
                      for j in reductions]).astype(bool)
    work = np.array([_work(k) for k in kernels], np.float64)
    left = np.ones(len(reductions), bool)
    placed = 0
    order: list[int] = []
    while left.any():
        unplaced = np.frombuffer(placed.to_bytes(n // 8 + 1, "little"), np.uint8)
        pending = needs & ~np.unpackbits(unplaced, bitorder="little")[:n].astype(bool)
        cost = np.where(left, pending @ work, np.inf)
        r = reductions[int(np.argmin(cost))]  # (the first of equals)
        need = (ancestors[r] & ~placed) | (1 << r)
        for i in _bits(need):
            order.append(i)
        placed |= need
        left &= np.array([not placed >> j & 1 for j in reductions], bool)
    users: list[list[int]] = [[] for _ in kernels]
    for j, d in enumerate(deps):
        for i in d:
            users[i].append(j)
    tainted = [False] * len(kernels)
    for j, k in enumerate(kernels):
        tainted[j] = any(tainted[i] or (isinstance(kernels[i], AllReduce) and not k.can_fail)
                         for i in deps[j])
    # a reader of reductions goes in the order they started (the first is the likeliest
    # done): after the readers of those that started before the last one it reads
    started = {r: pos for pos, r in enumerate(i for i in order
                                               if isinstance(kernels[i], AllReduce))}
    latest: list[int] = []
    for d in deps:
        latest.append(max((max(latest[i], started.get(i, -1)) for i in d), default=-1))

    def key(j: int) -> tuple[bool, int, int]:
        return tainted[j], latest[j], j

    waiting = [len([i for i in d if not placed >> i & 1]) for d in deps]
    ready = [key(j) for j in range(len(kernels)) if not waiting[j] and not placed >> j & 1]
    heapq.heapify(ready)
    while ready:
        i = heapq.heappop(ready)[2]
        order.append(i)
        for j in users[i]:
            waiting[j] -= 1
            if not waiting[j]:
                heapq.heappush(ready, key(j))
    return order


def _waits_at(kernels: tuple) -> dict[int, int]:
    """Where the wait of each reduction goes, by its index: before the first later kernel
    that reads or writes its buffer, or that can fail (its error must not leave a reduction
    in flight, as before), else at the end of the program (len(kernels))."""
    touching: dict[int, list[int]] = {}
    fails: list[int] = []
    for j, k in enumerate(kernels):
        for b in k.reads() | k.writes():
            touching.setdefault(b, []).append(j)
        if k.can_fail:
            fails.append(j)
    out = {}
    for i, k in enumerate(kernels):
        if isinstance(k, AllReduce) and not k.phase:
            uses = touching[k.buffer]
            later = [uses[bisect.bisect_right(uses, i)]] if uses[-1] > i else []
            if fails and fails[-1] > i:
                later.append(fails[bisect.bisect_right(fails, i)])
            out[i] = min(later, default=len(kernels))
    return out


def overlap_reductions(lowered: Schedule, progress: bool = True) -> Schedule:
    """`lowered` (not yet planned) with each reduction placed as early as its inputs allow
    and the kernels that read reductions after the others, and each reduction that then has
    kernels to overlap with split into start and wait, with a test (progress) after each
    kernel between them unless `progress` is False; one with none stays a blocking call
    (`lowered` itself without reductions)."""
    if not any(isinstance(k, AllReduce) for k in lowered.kernels):
        return lowered
    order = _reductions_early(lowered.kernels)
    kernels = tuple(lowered.kernels[i] for i in order)
    nodes = tuple(lowered.kernel_nodes[i] for i in order) if lowered.kernel_nodes else ()
    buffers = dict(lowered.buffers)
    waits: dict[int, list[AllReduce]] = {}
    starts: dict[int, AllReduce] = {}
    for i, j in _waits_at(kernels).items():
        k = kernels[i]
        assert isinstance(k, AllReduce)
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
    flying: list[AllReduce] = []  # started, not yet waited for: the newest last
    for j in range(len(kernels) + 1):
        for w in waits.get(j, []):
            out.append(w)
            out_nodes.append(start_nodes.get(w.request, ()))
            flying = [f for f in flying if f.request != w.request]
        if j == len(kernels):
            break
        out.append(starts.get(j, kernels[j]))
        out_nodes.append(nodes[j] if j < len(nodes) else ())
        if j in starts:
            start_nodes[starts[j].request] = out_nodes[-1]
            flying.append(starts[j])
        elif progress and flying and not isinstance(kernels[j], AllReduce):
            # MPI moves a non-blocking reduction on only inside MPI calls (Open MPI's pip
            # build runs no progress thread): a test after each kernel makes its rounds
            # advance while the kernels run. One test progresses every operation in flight
            # (the progress engine is global); the newest is the last to complete.
            out.append(dataclasses.replace(flying[-1], phase="test"))
            out_nodes.append(start_nodes[flying[-1].request])
    return dataclasses.replace(lowered, buffers=buffers, kernels=tuple(out),
                               kernel_nodes=tuple(out_nodes) if nodes else nodes)
