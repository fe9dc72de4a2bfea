"""Gradient bucketing: small all_reduce operands are packed into one flat buffer of at least
`bucket_bytes`, reduced by one call, and read back through views (Horovod's tensor fusion,
PyTorch DDP's buckets). Each reduction pays a fixed cost (a latency per step of the ring,
a call, a synchronisation): an MLP's biases and small weights then pay it once together."""
from __future__ import annotations

import numpy as np

from graphc.graph import Graph
from graphc.node import Node, carry_label, static_shape, toposort
from graphc.ops.registry import make, rebuild
from graphc.sizes import all_static

Key = tuple[int, str, str, int]


def _levels(order: list[Node]) -> dict[Node, int]:
    """How many all_reduce nodes lie on the longest path up to each node (itself included):
    two reductions of one level never depend on each other, so they can share a call."""
    level: dict[Node, int] = {}
    for n in order:
        below = max((level[i] for i in n.inputs), default=0)
        level[n] = below + (n.op == "all_reduce")
    return level


def _readiness(order: list[Node]) -> dict[Node, int]:
    """How many nodes each node needs computed first (its ancestors): in a backward pass,
    the last layer's gradients need the fewest, and are ready first."""
    index = {n: i for i, n in enumerate(order)}
    masks: dict[Node, int] = {}
    for n in order:
        m = 0
        for i in n.inputs:
            m |= masks[i] | (1 << index[i])
        masks[n] = m
    return {n: bin(m).count("1") for n, m in masks.items() if n.op == "all_reduce"}


def plan_buckets(graph: Graph, bucket_bytes: int,
                 first_bucket_bytes: int | None = None) -> list[list[Node]]:
    """The groups of all_reduce nodes to reduce together (two or more each): of one level,
    reduction, dtype and job, filled in the order their operands are ready (as DDP fills its
    buckets in reverse order of the parameters, so the first bucket can be reduced while the
    backward pass goes on) until they hold bucket_bytes (the first of each group:
    first_bucket_bytes, if smaller: DDP's small first bucket starts the reductions early). A
    tensor of that size or more is reduced alone, and closes the open bucket, so the tensors
    ready before it do not wait for those after."""
    order = graph.nodes()
    candidates = [n for n in order if n.op == "all_reduce" and n.attrs["ranks"] > 1
                  and all_static(n.shape)]
    if len(candidates) < 2:  # (most programs: nothing to plan)
        return []
    level = _levels(order)
    ready = _readiness(order)
    position = {n: i for i, n in enumerate(order)}
    open_: dict[Key, list[Node]] = {}
    sizes: dict[Key, int] = {}
    buckets: list[list[Node]] = []
    first = min(bucket_bytes, first_bucket_bytes or bucket_bytes)
    started: set[Key] = set()  # the groups whose first reduction is planned
    for n in sorted(candidates, key=lambda n: (level[n], ready[n], position[n])):
        nbytes = int(np.prod(static_shape(n.shape), dtype=np.int64)) * n.dtype.itemsize
        key = (level[n], n.attrs["reduction"], n.dtype.str, n.attrs["ranks"])
        limit = bucket_bytes if key in started else first
        if nbytes >= limit:  # big enough alone: reduced where it is, without a copy
            if key in open_:
                buckets.append(open_.pop(key))
                sizes[key] = 0
            started.add(key)
            continue
        open_.setdefault(key, []).append(n)
        sizes[key] = sizes.get(key, 0) + nbytes
        if sizes[key] >= limit:
            buckets.append(open_.pop(key))
            sizes[key] = 0
            started.add(key)
    buckets.extend(open_.values())
    return [b for b in buckets if len(b) > 1]


def bucket_all_reduce(graph: Graph, bucket_bytes: int,
                      first_bucket_bytes: int | None = None) -> Graph:
    """`graph` with the planned buckets' reductions fused (itself when there is none)."""
    buckets = plan_buckets(graph, bucket_bytes, first_bucket_bytes)
    if not buckets:
        return graph
    member = {n: i for i, bucket in enumerate(buckets) for n in bucket}
    memo: dict[Node, Node] = {}

    def rebuilt(root: Node) -> Node:
        for n in toposort([root]):
            if n in memo:
                continue
            if n in member:
                _fuse(buckets[member[n]], [rebuilt(m.inputs[0]) for m in buckets[member[n]]])
            else:
                memo[n] = carry_label(n, rebuild(n, [memo[i] for i in n.inputs])
                                      if n.inputs else n)
        return memo[root]

    def _fuse(bucket: list[Node], operands: list[Node]) -> None:
        first = bucket[0]
        flat = [make("reshape", x, shape=(-1,)) for x in operands]
        total = make("all_reduce", make("concatenate", *flat, axis=0),
                     reduction=first.attrs["reduction"], ranks=first.attrs["ranks"])
        start = 0
        for n, part in zip(bucket, flat):
            size = static_shape(part.shape)[0]
            piece = make("slice", total, slices=((start, start + size, 1),))
            memo[n] = carry_label(n, make("reshape", piece, shape=static_shape(n.shape)))
            start += size

    roots = [rebuilt(r) for r in graph.roots]
    n_out = len(graph.outputs)
    updates = tuple((p, v) for (p, _), v in zip(graph.updates, roots[n_out:]))
    return Graph(graph.inputs, tuple(roots[:n_out]), updates)
