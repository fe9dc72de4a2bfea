"""Lowering a group of sibling scan nodes to one Loop kernel: the body scheduled once."""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from graphc.errors import ShapeError
from graphc.graph import Graph
from graphc.node import Node, static_shape
from graphc.schedule import ir
from graphc.schedule.ir import Const
from graphc.schedule.loop_memory import body_plan

if TYPE_CHECKING:
    from graphc.schedule.lower import Lowering, Value


def _group_key(node: Node) -> tuple:
    """What sibling scan nodes share: everything but which result they are."""
    return node.inputs, tuple(sorted((k, v) for k, v in node.attrs.items() if k != "output"))


def siblings(low: Lowering, node: Node) -> dict[int, Node]:
    """The scan nodes of the lowered graph that are results of `node`'s loop, by result."""
    if low.loop_groups is None:
        low.loop_groups = {}
        for n in low.order:
            if n.op == "scan":
                low.loop_groups.setdefault(_group_key(n), {})[n.attrs["output"]] = n
    return low.loop_groups[_group_key(node)]


def whole_buffer(low: Lowering, node: Node) -> int:
    """A buffer holding exactly node's value, contiguous (in any shape of the same size):
    the node's own where it has one, else a copy (a broadcast, a transposed or sliced
    view)."""
    from graphc.schedule.lower import Lazy
    view = low.view_of(node)
    if view.offset == 0 and view.contiguous() and \
            low.buffers[view.buffer].size == ir._product(view.shape):
        return view.buffer  # (a reshape of it is the same memory: the loop needs no more)
    shape = static_shape(node.shape)
    copy = low.materialize(Lazy(low.expr_of(view, shape), shape, node.dtype, ("copy",), 1))
    return copy.buffer


def permuted_buffer(low: Lowering, node: Node) -> tuple[int, tuple[int, ...]] | None:
    """(buffer, perm) when node's value is a whole buffer read with its axes permuted (a
    transposed weight: an RNN's W_hh^T): buffer holds transpose(node, perm) contiguously.
    A loop then binds the buffer itself, and its body reads it transposed (no copy)."""
    view = low.view_of(node)
    shape = tuple(view.shape)
    if view.offset != 0 or view.contiguous() or 1 in shape or \
            low.buffers[view.buffer].size != ir._product(shape):
        return None
    perm = tuple(sorted(range(len(shape)), key=lambda a: -view.strides[a]))
    base = tuple(shape[a] for a in perm)
    if tuple(view.strides[a] for a in perm) != ir.contiguous_strides(base):
        return None
    return view.buffer, perm


def _with_permuted_inputs(graph: Graph, perms: dict[int, tuple[int, ...]]) -> Graph:
    """graph with each input i in perms replaced by a placeholder holding its transpose by
    perms[i] (contiguous), read through the inverse transpose."""
    from graphc.ops.leaves import placeholder_node
    from graphc.ops.registry import make
    from graphc.passes.scan_walk import substitute
    inputs = list(graph.inputs)
    mapping: dict[Node, Node] = {}
    for i, perm in perms.items():
        old = inputs[i]
        shape = static_shape(old.shape)
        inputs[i] = placeholder_node(tuple(shape[a] for a in perm), old.dtype, old.attrs["name"])
        inverse = tuple(int(a) for a in np.argsort(perm))
        mapping[old] = make("transpose", inputs[i], perm=inverse)
    roots = substitute(graph.roots, mapping)
    n_out = len(graph.outputs)
    return Graph(tuple(inputs), roots[:n_out],
                 tuple((p, v) for (p, _), v in zip(graph.updates, roots[n_out:])))


def _length(node: Node, symbolic: bool = False) -> int:
    num_carry, num_xs = node.attrs["num_carry"], node.attrs["num_xs"]
    length = node.inputs[num_carry].shape[0] if num_xs else node.attrs["length"]
    if symbolic and not isinstance(length, (int, np.integer)):
        from graphc.schedule.symbolic import NotSymbolic
        raise NotSymbolic("a scan over a call-time length is specialised per shape")
    if not isinstance(length, (int, np.integer)):
        raise ShapeError(f"schedule: scan of unknown length {length}; specialise the graph "
                         "to call-time shapes first")
    return int(length)


def body_schedule(low: Lowering, node: Node, outputs: list[int],
                  perms: dict[int, tuple[int, ...]] | None = None) -> ir.Schedule:
    """The body as a schedule of its own, its placeholders specialised to the shapes of
    the loop's values (a carry, a step of a sequence, an invariant), computing the body
    results `outputs` only (per-step outputs nobody reads are left out); the inputs in
    `perms` arrive transposed (permuted_buffer)."""
    from graphc.schedule.lower import Lowering
    from graphc.specialize import specialize_graph
    body = node.attrs["body"]
    num_carry, num_xs = node.attrs["num_carry"], node.attrs["num_xs"]
    shapes = [x.shape[1:] if num_carry <= i < num_carry + num_xs else x.shape
              for i, x in enumerate(node.inputs)]
    graph = specialize_graph(Graph(body.inputs, tuple(body.outputs[i] for i in outputs)),
                             shapes)
    if perms:
        graph = _with_permuted_inputs(graph, perms)
    lowered = Lowering(graph, low.policy, symbolic=low.symbolic).run()
    return dataclasses.replace(lowered, plan=body_plan(lowered), graph=graph)


def lower_scan_group(low: Lowering, node: Node) -> Value:
    """All results of node's loop: one Loop kernel writes them (double-buffered carries,
    stacked per-step outputs); length 0 gives the initial carries and empty outputs."""
    from graphc.schedule.lower import Lazy
    group = siblings(low, node)
    num_carry, num_xs = node.attrs["num_carry"], node.attrs["num_xs"]
    inits = node.inputs[:num_carry]
    xs = node.inputs[num_carry:num_carry + num_xs]
    invariants = node.inputs[num_carry + num_xs:]
    length = _length(node, low.symbolic)
    if length == 0:
        for i, sib in group.items():
            low.values[sib] = low.values[inits[i]] if i < num_carry else Lazy(
                Const(0, sib.dtype), static_shape(sib.shape), sib.dtype)
        return low.values[node]
    num_ys = len(node.attrs["body"].outputs) - num_carry
    used_ys = [j for j in range(num_ys) if num_carry + j in group]
    permuted = {num_carry + num_xs + m: found for m, v in enumerate(invariants)
                if (found := permuted_buffer(low, v)) is not None}
    body = body_schedule(low, node, list(range(num_carry)) + [num_carry + j for j in used_ys],
                         {i: perm for i, (_, perm) in permuted.items()})
    inside = body.inputs
    carries = []
    for i, init in enumerate(inits):
        shape, dtype = static_shape(init.shape), init.dtype
        final = low.new_buffer(dtype, shape, "temp")
        spare = low.new_buffer(dtype, shape, "temp")
        if i in group:
            low.creator[final] = group[i]
        carries.append(ir.LoopCarry(whole_buffer(low, init), final, spare, inside[i],
                                    body.outputs[i]))
    slices_in = [ir.LoopSlice(whole_buffer(low, x), inside[num_carry + k])
                 for k, x in enumerate(xs)]
    slices_out = []
    for n, j in enumerate(used_ys):
        sib = group[num_carry + j]
        ys = low.new_buffer(sib.dtype, static_shape(sib.shape), "temp")
        low.creator[ys] = sib
        slices_out.append(ir.LoopSlice(ys, body.outputs[num_carry + n]))
    binds = [ir.LoopBind(permuted[i][0] if (i := num_carry + num_xs + m) in permuted
                         else whole_buffer(low, v), inside[i])
             for m, v in enumerate(invariants)]
    for bid, storage in body.params.items():  # the body's parameters are the program's
        b = body.buffers[bid]
        binds.append(ir.LoopBind(low.param_buffer_of(storage, b.dtype, b.shape), bid))
    for bid, array in body.consts.items():
        b = body.buffers[bid]
        outer = low.new_buffer(b.dtype, b.shape, "const")
        low.consts[outer] = array
        binds.append(ir.LoopBind(outer, bid))
    arena = -1
    if body.plan is not None and not (isinstance(body.plan.arena_bytes, int)
                                      and body.plan.arena_bytes == 0):
        arena = low.new_buffer(np.dtype("uint8"), (body.plan.arena_bytes,), "temp")
    loop = ir.Loop(length, bool(node.attrs["reverse"]), body, tuple(carries),
                   tuple(slices_in), tuple(slices_out), tuple(binds), arena,
                   any(k.can_fail for k in body.kernels))
    low.kernels.append(loop)
    low.made[id(loop)] = frozenset(group.values())
    for i, sib in group.items():
        if i < num_carry:
            low.values[sib] = low.whole(carries[i].final)
        else:
            low.values[sib] = low.whole(slices_out[used_ys.index(i - num_carry)].outer)
    return low.values[node]
