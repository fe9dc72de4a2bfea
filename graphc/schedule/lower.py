"""The scheduler: an optimized graph with static shapes becomes an ordered list of kernels.
Elementwise and broadcast ops fuse into one scalar expression per kernel (and into the
reductions they feed); views (transpose, broadcast, slice, expand/squeeze, contiguous
reshape) cost nothing, they only change the strides of later accesses; everything else is
a template kernel (gemm, gather, scatter_add)."""
from __future__ import annotations

import dataclasses
import itertools
import typing
from dataclasses import dataclass
from typing import Union

import numpy as np

from graphc.errors import ShapeError
from graphc.sizes import Dim, all_static, hint
from graphc.graph import Graph
from graphc.node import Node, consumers, static_shape
from graphc.ops import get_op
from graphc.ops.elementwise import NEGATIVE_POWER
from graphc.schedule import ir
from graphc.schedule.collapse import collapse
from graphc.schedule.epilogue import fold_updates
from graphc.schedule.concat_in_place import concat_in_place
from graphc.schedule.dead_stores import drop_dead_stores
from graphc.schedule.tiles import tile_transposed
from graphc.schedule.copy_forward import forward_copies
from graphc.schedule.merge import merge_elementwise
from graphc.schedule.recompute import recompute_cheap
from graphc.schedule.redirect import redirect_relu_masks
from graphc.schedule.twin_stores import redirect_twin_reads
from graphc.schedule.unit_batch import unit_batch_strides
from graphc.schedule.ir import (Access, Apply, Buffer, Const, Expr, Index, Load, Schedule,
                                Store)
from graphc.schedule.direct_conv import choose_direct
from graphc.schedule.implicit import (Grouped, b_operand, deep, group_axes, only_images,
                                      outer_columns, reads_as_b, window_chain)
from graphc.schedule.policy import DEFAULT_POLICY, SchedulePolicy
from graphc.schedule.reindex import (AxisMap, axis, broadcast_map, remap_expr, remap_view,
                                     reshape_strides, split_map)


@dataclass(frozen=True)
class View:
    """A node's value held in a buffer, read through strides (over the node's own shape)."""

    buffer: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    offset: int
    dtype: np.dtype

    def contiguous(self) -> bool:
        want = ir.contiguous_strides(self.shape)
        return all(s == w or d == 1 for s, w, d in zip(self.strides, want, self.shape))


@dataclass(frozen=True)
class Lazy:
    """A node's value not yet stored anywhere: an expression over the node's own shape."""

    expr: Expr
    shape: tuple[int, ...]
    dtype: np.dtype
    fused: tuple[str, ...] = ()
    depth: int = 0  # longest chain of ops in expr
    nodes: frozenset = frozenset()  # the graph nodes whose values expr computes




Value = Union[View, Lazy, Grouped]  # Grouped: only matmul's B (graphc/schedule/implicit.py)


def _dims(node: Node | _Keep) -> tuple[int, ...]:
    """A node's shape, every size known: Lowering refuses a graph with unknown sizes."""
    return static_shape(node.shape)


def _symbolic_slice(s: tuple) -> tuple[int, None, int]:
    """start and step of a slice of a symbolic axis, where they do not depend on its size
    (a non-negative start, a positive step; its shape rule gave the length)."""
    start, _, step = (tuple(s) + (None, None, None))[:3]
    start, step = start or 0, step or 1
    if not (isinstance(start, int) and isinstance(step, int) and start >= 0 and step > 0):
        raise TypeError(f"a slice {s} of a size known at call time")
    return start, None, step


def _trivial(expr: Expr) -> bool:
    return not isinstance(expr, Apply)


class Lowering:
    def __init__(self, graph: Graph, policy: SchedulePolicy = DEFAULT_POLICY,
                 symbolic: bool = False) -> None:
        for n in graph.nodes():
            if not symbolic and not all_static(n.shape):
                raise ShapeError(f"schedule: {n.op} has unknown sizes {n.type}; specialise "
                                 "the graph to call-time shapes first")
        self.graph = graph
        self.policy = policy
        self.symbolic = symbolic  # (a loop's body is lowered the same way)
        self.order = graph.nodes()
        self.position = {n: i for i, n in enumerate(self.order)}
        self.users = consumers(self.order)
        self.values: dict[Node, Value] = {}
        self.buffers: dict[int, Buffer] = {}
        self.kernels: list[ir.Kernel] = []
        self.params: dict[int, object] = {}
        self.consts: dict[int, np.ndarray] = {}
        self.param_buffers: dict[object, int] = {}
        self.creator: dict[int, Node | _Keep] = {}
        self.made: dict[int, frozenset] = {}  # id of a kernel -> the graph nodes it computes
        self.output_nodes = set(graph.outputs) | {new for _, new in graph.updates}
        # scan nodes by their sibling group (one loop each), made on the first scan met
        self.loop_groups: dict[tuple, dict[int, Node]] | None = None

    # -- buffers ------------------------------------------------------------------------
    def new_buffer(self, dtype: np.dtype, shape: tuple[int, ...], role: str,
                   name: str = "") -> int:
        bid = len(self.buffers)
        self.buffers[bid] = Buffer(bid, np.dtype(dtype), tuple(shape), role, name)
        return bid

    def whole(self, bid: int) -> View:
        b = self.buffers[bid]
        return View(bid, b.shape, ir.contiguous_strides(b.shape), 0, b.dtype)

    # -- values -------------------------------------------------------------------------
    def expr_of(self, value: Value, shape: tuple[int, ...]) -> Expr:
        """The value read at each index of `shape` (numpy broadcasting)."""
        if isinstance(value, Grouped):
            value = self.materialize(value)
        amap = broadcast_map(value.shape, shape)
        if isinstance(value, View):
            v = remap_view(value.strides, value.offset, amap, len(shape))
            return Load(Access(value.buffer, *v), value.dtype)
        return remap_expr(value.expr, amap, len(shape))

    def materialize(self, value: Value, role: str = "temp", name: str = "") -> View:
        if isinstance(value, View) and role == "temp":
            return value
        if isinstance(value, Grouped):
            return self.materialize_grouped(value, role, name)
        bid = self.new_buffer(value.dtype, value.shape, role, name)
        view = self.whole(bid)
        store = Store(Access(bid, view.strides, 0), self.expr_of(value, value.shape))
        fused = value.fused if isinstance(value, Lazy) else ("copy",)
        kernel = ir.Elementwise(value.shape, (store,), fused)
        self.made[id(kernel)] = value.nodes if isinstance(value, Lazy) else frozenset()
        self.kernels.append(kernel)
        return view

    def materialize_grouped(self, g: Grouped, role: str = "temp", name: str = "") -> View:
        """The im2col copy an implicit GEMM avoids, for any other reader: the sub-axes
        read in order are the new buffer's elements in order."""
        bid = self.new_buffer(g.dtype, g.shape, role, name)
        sizes, strides = g.flat()
        store = Store(Access(bid, ir.contiguous_strides(sizes), 0),
                      Load(Access(g.buffer, strides, g.offset), g.dtype))
        kernel = ir.Elementwise(sizes, (store,), ("copy",))
        self.made[id(kernel)] = frozenset()
        self.kernels.append(kernel)
        return self.whole(bid)

    def view_of(self, node: Node) -> View:
        value = self.values[node]
        view = self.materialize(value)
        if view is not value:  # node's own buffer: an output's, if it is one (no copy)
            self.creator[view.buffer] = node
        self.values[node] = view
        return view

    # -- the walk -----------------------------------------------------------------------
    def run(self) -> Schedule:
        inputs = []
        for ph in self.graph.inputs:
            bid = self.new_buffer(ph.dtype, _dims(ph), "input", ph.attrs["name"])
            self.values[ph] = self.whole(bid)
            inputs.append(bid)
        for node in self.order:
            if node not in self.values:
                self.values[node] = self.traced(node)
                value = self.values[node]
                if (isinstance(value, Lazy) and not _trivial(value.expr)
                        and len(self.users[node]) > 1):
                    self.view_of(node)  # computed once, read by several kernels
        outputs = self.store_outputs()
        self.store_updates()
        temps = {bid for bid, b in self.buffers.items() if b.role == "temp"}
        made = [self.made.get(id(k), frozenset()) for k in self.kernels]
        kernels = merge_elementwise(fold_updates(self.kernels, temps, made), made,
                                    self.policy.max_kernel_buffers)
        kernels = forward_copies(kernels, temps, made)
        kernels = redirect_twin_reads(redirect_relu_masks(kernels, temps), temps)
        kernels = recompute_cheap(kernels, temps, made, self.policy.max_kernel_buffers)
        kernels = drop_dead_stores(kernels, temps, made)
        kernels = [tile_transposed(k) for k in collapse(concat_in_place(kernels, temps, made))]
        kernels = [unit_batch_strides(k) for k in choose_direct(kernels, self.policy)]
        return Schedule(self.buffers, tuple(kernels), tuple(inputs), tuple(outputs),
                        self.params, self.consts,
                        kernel_nodes=tuple(tuple(sorted(m, key=self.position.__getitem__))
                                           for m in made))

    def traced(self, node: Node) -> Value:
        """node lowered, with the graph nodes each new kernel computes: a materialized value
        its fused nodes (set by materialize), any other kernel the node itself and the
        values it fused; a lazy value carries its nodes to the kernel that computes it."""
        start = len(self.kernels)  # lowering one node only appends kernels
        value = self.lower(node)
        shape_only = set(get_op(node.op).shape_only(len(node.inputs)))
        fused = frozenset().union(*(v.nodes for i, v in
                                    ((i, self.values[x]) for i, x in enumerate(node.inputs))
                                    if isinstance(v, Lazy) and i not in shape_only))
        for k in self.kernels[start:]:
            if id(k) not in self.made:
                self.made[id(k)] = fused | {node}
        if isinstance(value, Lazy):
            value = dataclasses.replace(value, nodes=value.nodes | fused | {node})
        return value

    def store_outputs(self) -> list[int]:
        outputs: list[int] = []
        used: set[int] = set()
        for i, node in enumerate(self.graph.outputs):
            value = self.values[node]
            bid = value.buffer if isinstance(value, View) else None
            if (bid is not None and self.buffers[bid].role == "temp" and bid not in used
                    and self.creator.get(bid) is node and value == self.whole(bid)):
                # the kernel that made it writes the output directly
                b = self.buffers[bid]
                self.buffers[bid] = Buffer(bid, b.dtype, b.shape, "output", f"out{i}")
            else:
                bid = self.materialize(value, "output", f"out{i}").buffer
            used.add(bid)
            outputs.append(bid)
        return outputs

    def store_updates(self) -> None:
        """New parameter values are written after every output; in place where that is safe
        (each element read back only at its own index, and no other update reads it)."""
        pending = []
        for param, new in self.graph.updates:
            target = self.param_buffer(param)
            pending.append((target, self.expr_of(self.values[new], _dims(param)), new))
        readers: dict[int, int] = {}
        for _, expr, _ in pending:
            for ld in ir.expr_loads(expr):
                readers[ld.access.buffer] = readers.get(ld.access.buffer, 0) + 1
        identity = {t: ir.contiguous_strides(self.buffers[t].shape) for t, _, _ in pending}
        direct: list[tuple[int, Expr, Node]] = []
        staged: list[tuple[int, Expr, Node]] = []
        for target, expr, new in pending:
            own_reads = [ld for ld in ir.expr_loads(expr) if ld.access.buffer == target]
            safe = all(ld.access.strides == identity[target] and ld.access.offset == 0
                       for ld in own_reads)
            others_read = readers.get(target, 0) - (1 if own_reads else 0)
            (direct if safe and others_read == 0 else staged).append((target, expr, new))
        copies = []
        for target, expr, new in staged:
            tmp = self.materialize(Lazy(expr, self.buffers[target].shape,
                                        self.buffers[target].dtype, ("update",),
                                        nodes=self.nodes_of(new)))
            copies.append((target, Load(Access(tmp.buffer, tmp.strides, 0), tmp.dtype)))
        updates = []
        for target, expr, new in direct:
            shape = self.buffers[target].shape
            kernel = ir.Elementwise(shape, (Store(Access(target, identity[target], 0), expr),),
                                    ("update",))
            self.made[id(kernel)] = self.nodes_of(new)
            updates.append(kernel)
        self.hoist(updates)
        for target, load in copies:
            shape = self.buffers[target].shape
            store = Store(Access(target, identity[target], 0), load)
            kernel = ir.Elementwise(shape, (store,), ("update",))
            self.made[id(kernel)] = frozenset()
            self.kernels.append(kernel)

    def nodes_of(self, node: Node) -> frozenset:
        """The nodes a kernel that reads `node`'s value computes on the way."""
        value = self.values[node]
        return value.nodes if isinstance(value, Lazy) else frozenset()

    def hoist(self, updates: list[ir.Elementwise]) -> None:
        """Places each in-place update right after the last kernel that needs the
        parameter's old value or makes what the update reads, so its gradient buffer dies
        early; never before a kernel that can raise (bad indices), so a failing call stores
        nothing. (Direct updates neither read nor write each other's parameters, so each
        place depends on the other kernels alone: one pass over them, not one per update;
        updates placed after the same kernel go in reverse order, as inserting them one
        by one did.)"""
        touched: dict[int, int] = {}  # buffer -> the last kernel reading or writing it
        written: dict[int, int] = {}  # buffer -> the last kernel writing it
        failing = -1
        for i, k in enumerate(self.kernels):
            writes = k.writes()
            for bid in k.reads() | writes:
                touched[bid] = i
            for bid in writes:
                written[bid] = i
            if k.can_fail:
                failing = i
        after: dict[int, list[ir.Kernel]] = {}
        for update in updates:
            (target,) = update.writes()
            needs = update.reads() - {target}
            at = max([failing, touched.get(target, -1)] + [written.get(b, -1) for b in needs])
            after.setdefault(at, []).insert(0, update)
        kernels = list(after.get(-1, []))
        for i, k in enumerate(self.kernels):
            kernels.append(k)
            kernels += after.get(i, [])
        self.kernels = kernels

    def param_buffer(self, node: Node) -> int:
        return self.param_buffer_of(node.attrs["storage"], node.dtype, _dims(node))

    def param_buffer_of(self, storage, dtype: np.dtype, shape: tuple[int, ...]) -> int:
        """The buffer of a parameter (one per storage)."""
        if storage not in self.param_buffers:
            bid = self.new_buffer(dtype, shape, "param", storage.name)
            self.params[bid] = storage
            self.param_buffers[storage] = bid
        return self.param_buffers[storage]

    # -- one node -----------------------------------------------------------------------
    def lower(self, node: Node) -> Value:
        op = node.op
        method = getattr(self, f"lower_{op}", None)
        if method is not None:
            return method(node)
        if get_op(op).sympy_def is not None:
            return self.lower_elementwise(node)
        raise NotImplementedError(f"schedule: no lowering for the primitive {op!r}")

    def lower_elementwise(self, node: Node) -> Value:
        for i in node.inputs:
            v = self.values[i]
            if isinstance(v, Lazy) and v.depth >= self.policy.max_fused_depth:
                self.view_of(i)
        args = tuple(self.expr_of(self.values[i], _dims(node)) for i in node.inputs)
        fused: tuple[str, ...] = ()
        depth = 0
        for i in node.inputs:
            v = self.values[i]
            if isinstance(v, Lazy):
                fused += tuple(f for f in v.fused if f not in fused)
                depth = max(depth, v.depth)
        return Lazy(Apply(node.op, args, node.dtype), _dims(node), node.dtype,
                    fused + ((node.op,) if node.op not in fused else ()), depth + 1)

    def lower_pow(self, node: Node) -> Value:
        """An integer power checks its exponents first: numpy raises ValueError for a
        negative one, and so does generated code (instead of giving 0)."""
        exponent = node.inputs[1]
        v = self.values[exponent]
        known_nonnegative = (isinstance(v, Lazy) and isinstance(v.expr, Const)
                             and v.expr.value >= 0)
        if np.dtype(node.dtype).kind == "i" and not known_nonnegative:
            view = self.view_of(exponent)
            where = f" (built at {node.source})" if node.source is not None else ""
            self.kernels.append(ir.ValueCheck(
                view.shape, Access(view.buffer, view.strides, view.offset),
                f"pow: {NEGATIVE_POWER}{where}"))
        return self.lower_elementwise(node)

    def lower_cast(self, node: Node) -> Lazy:
        (x,) = node.inputs
        v = self.values[x]
        fused = v.fused if isinstance(v, Lazy) else ()
        if isinstance(v, Lazy) and v.depth >= self.policy.max_fused_depth:
            v = self.view_of(x)
            fused = ()
        depth = v.depth if isinstance(v, Lazy) else 0
        return Lazy(Apply("cast", (self.expr_of(v, _dims(x)),), node.dtype), _dims(node),
                    node.dtype, fused + ("cast",), depth + 1)

    def lower_parameter(self, node: Node) -> View:
        return self.whole(self.param_buffer(node))

    def lower_constant(self, node: Node) -> Value:
        array = node.attrs["value"].array
        if array.size == 1:
            return Lazy(Const(array.reshape(()).item(), node.dtype), _dims(node), node.dtype)
        bid = self.new_buffer(node.dtype, _dims(node), "const")
        self.consts[bid] = array
        return self.whole(bid)

    def lower_dim_size(self, node: Node) -> Lazy:
        # a size known at call time: a constant whose value the code reads with the sizes
        return Lazy(Const(node.attrs["size"], node.dtype), (), node.dtype)

    def lower_iota(self, node: Node) -> Lazy:
        return Lazy(Index(0, node.dtype), _dims(node), node.dtype, ("iota",))

    def lower_one_hot(self, node: Node) -> Lazy:
        """(labels[i...] == k) cast: the labels read along the leading axes, k the index of
        the last one; an elementwise expression that fuses into its readers."""
        (x,) = node.inputs
        v = self.values[x]
        labels = self._view(node, tuple(axis(k) for k in range(x.ndim)))
        hit = Apply("equal", (self.expr_of(labels, _dims(node)), Index(x.ndim, x.dtype)),
                    np.dtype(bool))
        fused = v.fused if isinstance(v, Lazy) else ()
        depth = v.depth if isinstance(v, Lazy) else 0
        return Lazy(Apply("cast", (hit,), node.dtype), _dims(node), node.dtype,
                    fused + ("one_hot",), depth + 2)

    def lower_size_of(self, node: Node) -> Lazy:
        shape = node.inputs[0].shape
        n = int(np.prod([shape[a] for a in node.attrs["axes"]]))
        return Lazy(Const(np.asarray(n, node.dtype).item(), node.dtype), (), node.dtype)

    def lower_check_index(self, node: Node) -> Value:
        v = self.view_of(node.inputs[0])
        self.kernels.append(ir.IndexCheck(v.shape, Access(v.buffer, v.strides, v.offset),
                                          node.attrs["size"],
                                          describe_indices(node.attrs["what"], node,
                                                           node.inputs[0])))
        return v

    def lower_sum_to_like(self, node: Node) -> Value:
        g, ref = node.inputs
        lead = g.ndim - ref.ndim
        axes = tuple(range(lead)) + tuple(lead + i for i, d in enumerate(ref.shape)
                                          if d == 1 and g.shape[lead + i] != 1)
        v = self.values[g]
        if not axes:
            return v
        keep = tuple(1 if a in axes else d for a, d in enumerate(_dims(g)))
        total = self._reduce(_Keep(node, keep), "sum", axes, v)
        return View(total.buffer, _dims(node), ir.contiguous_strides(_dims(node)), 0,
                    node.dtype)

    def lower_random_uniform(self, node: Node) -> Lazy:
        """hash(seed, flat index): the flat index is built from the iteration indices."""
        seed = self.expr_of(self.values[node.inputs[0]], _dims(node))
        i64 = np.dtype("int64")
        flat: Expr = Const(0, i64)
        for axis_, stride in enumerate(ir.contiguous_strides(_dims(node))):
            term: Expr = Index(axis_, i64)
            if stride != 1:
                term = Apply("mul", (term, Const(stride, i64)), i64)
            flat = term if isinstance(flat, Const) else Apply("add", (flat, term), i64)
        return Lazy(Apply("random_uniform", (seed, flat), node.dtype), _dims(node), node.dtype,
                    ("random_uniform",), 1)

    def lower_all_reduce(self, node: Node) -> Value:
        """Reduced in place, in the buffer that made the value when nothing else reads it
        (a gradient's GEMM output), else in a copy; a mean divides where it is read."""
        (x,) = node.inputs
        ranks = node.attrs["ranks"]
        v = self.values[x]
        if ranks == 1:  # (optimize=False: the passes would have removed it)
            return v
        shape = _dims(node)
        reuse = (isinstance(v, View) and self.buffers[v.buffer].role == "temp"
                 and self.creator.get(v.buffer) is x and v == self.whole(v.buffer)
                 and len(self.users[x]) == 1)
        if isinstance(v, View) and reuse:
            bid = v.buffer
        elif x.op == "concatenate" and x.ndim == 1 and len(self.users[x]) == 1:
            # a bucket (graphc.schedule.buckets): each part copied into its range by a
            # kernel of its own, a plain contiguous loop (read through the concatenation's
            # guards, every element would test every part's range)
            bid = self.new_buffer(node.dtype, shape, "temp")
            start = 0
            for part in x.inputs:
                n = _dims(part)[0]
                pv = self.values[part]
                store = Store(Access(bid, (1,), start), self.expr_of(pv, (n,)))
                self.kernels.append(ir.Elementwise((n,), (store,), (
                    pv.fused if isinstance(pv, Lazy) else ("copy",)) + ("bucket",)))
                start += n
        else:
            bid = self.new_buffer(node.dtype, shape, "temp")
            self.kernels.append(ir.Elementwise(shape, (Store(Access(
                bid, ir.contiguous_strides(shape), 0), self.expr_of(v, shape)),),
                v.fused if isinstance(v, Lazy) else ("copy",)))
        self.creator[bid] = node
        size = int(np.prod(shape, dtype=np.int64)) if shape else 1
        self.kernels.append(ir.AllReduce(bid, size, node.dtype, ranks))
        total = self.whole(bid)
        if node.attrs["reduction"] == "sum":
            return total
        mean = Apply("div", (self.expr_of(total, shape), Const(float(ranks), node.dtype)),
                     node.dtype)
        return Lazy(mean, shape, node.dtype, ("all_reduce",), 1)

    def lower_stop_gradient(self, node: Node) -> Value:
        return self.values[node.inputs[0]]

    # views: a new way to read the same data
    def _view(self, node: Node, amap: AxisMap) -> Value:
        v = self.values[node.inputs[0]]
        rank = len(node.shape)
        if isinstance(v, Grouped):
            v = self.materialize(v)
        if isinstance(v, View):
            strides, offset = remap_view(v.strides, v.offset, amap, rank)
            return View(v.buffer, _dims(node), strides, offset, v.dtype)
        return Lazy(remap_expr(v.expr, amap, rank), _dims(node), v.dtype, v.fused, v.depth)

    def lower_transpose(self, node: Node) -> Value:
        perm = node.attrs["perm"]
        v = self.values[node.inputs[0]]
        if isinstance(v, Grouped):
            return v.permuted(tuple(perm))
        where = {p: a for a, p in enumerate(perm)}
        return self._view(node, tuple(axis(where[j]) for j in range(len(perm))))

    def lower_broadcast_to(self, node: Node) -> Value:
        return self._view(node, broadcast_map(_dims(node.inputs[0]), _dims(node)))

    lower_broadcast_like = lower_broadcast_to

    def lower_expand_dims(self, node: Node) -> Value:
        axes = set(node.attrs["axes"])
        kept = [a for a in range(node.ndim) if a not in axes]
        return self._view(node, tuple(axis(k) for k in kept))

    def lower_squeeze(self, node: Node) -> Value:
        axes = set(node.attrs["axes"])
        amap, out = [], 0
        for j in range(node.inputs[0].ndim):
            if j in axes:
                amap.append(axis(None))
            else:
                amap.append(axis(out))
                out += 1
        return self._view(node, tuple(amap))

    def lower_slice(self, node: Node) -> Value:
        x = node.inputs[0]
        amap = []
        for j, (s, d) in enumerate(zip(node.attrs["slices"], _dims(x))):
            start, _, step = slice(*s).indices(d) if isinstance(d, int) else _symbolic_slice(s)
            amap.append(axis(j, step, start))
        return self._view(node, tuple(amap))

    def lower_concat_part(self, node: Node) -> Value:
        """A view of the cotangent: the sizes of the parts before this one are known now."""
        axis_, index = node.attrs["axis"], node.attrs["index"]
        start = sum(p.shape[axis_] for p in node.inputs[1:1 + index])
        return self._view(node, tuple(axis(j, 1, start if j == axis_ else 0)
                                      for j in range(node.ndim)))

    def lower_reshape(self, node: Node) -> Value:
        if self.policy.implicit_gemm:
            grouped = self.implicit_columns(node)
            if grouped is not None:
                return grouped
        v = self.values[node.inputs[0]]
        if isinstance(v, Grouped):
            v = self.materialize(v)
        if isinstance(v, View):
            strides = reshape_strides(v.shape, v.strides, _dims(node))
            if strides is not None:  # the same elements in the same order: a view
                return View(v.buffer, _dims(node), strides, v.offset, v.dtype)
        else:
            amap = split_map(v.shape, _dims(node))
            if amap is not None:  # axes split: the expression read at new indices
                return Lazy(remap_expr(v.expr, amap, node.ndim), _dims(node), v.dtype, v.fused,
                            v.depth)
        if not (isinstance(v, View) and v.contiguous()):
            v = self.materialize(v if isinstance(v, Lazy) else
                                 Lazy(self.expr_of(v, v.shape), v.shape, v.dtype, ("copy",)))
        return View(v.buffer, _dims(node), ir.contiguous_strides(_dims(node)), v.offset, v.dtype)

    lower_reshape_like = lower_reshape

    def implicit_columns(self, node: Node) -> Grouped | None:
        """A convolution's columns (a reshape of windows) that only matrix products read
        as B: read where the image lies (ir.Gemm.b_split). A lazy image (padded, or an
        activation fused into it) is stored once first, at the image's size rather than
        its columns', where the columns then read as an implicit B (b_operand)."""
        x = node.inputs[0]
        if node.op != "reshape" or not reads_as_b(node, self.users, self.output_nodes):
            return None
        if any(isinstance(d, int) and d == 0 for d in _dims(node) + _dims(x)):
            return None
        v = self.values[x]
        if isinstance(v, View):
            # (a reshape that strides express is a plain view: packed as any B is)
            if reshape_strides(v.shape, v.strides, _dims(node)) is not None:
                return None
            return self._grouped(node)
        chain = window_chain(node, self.values)
        if chain is None:
            return None
        saved = {n: self.values[n] for n in chain}
        base = chain[0]
        # first as if the image were stored (a buffer id no kernel uses): would it pay?
        dims = _dims(base)
        self.values[base] = View(-1, dims, ir.contiguous_strides(dims), 0, base.dtype)
        trial = self._relowered(node, chain)
        self.values.update(saved)
        if trial is None or not _pays(trial, self.policy):
            return None
        self.view_of(base)
        grouped = self._relowered(node, chain)
        if grouped is None:  # (cannot happen: the same views of another buffer)
            self.values.update({n: v for n, v in saved.items() if n is not base})
        return grouped

    def _relowered(self, node: Node, chain: list[Node]) -> Grouped | None:
        """The views of chain[1:] lowered again from chain[0]'s value, and node's columns
        grouped from them; None (and nothing changed) where that takes a copy."""
        saved, start = {n: self.values[n] for n in chain[1:]}, len(self.kernels)
        buffers = len(self.buffers)
        for n in chain[1:]:
            self.values[n] = self.lower(n)
        grouped = self._grouped(node) if len(self.kernels) == start else None
        if grouped is None:  # (ids count up: the new buffers are the last ones)
            del self.kernels[start:]
            for bid in range(buffers, len(self.buffers)):
                del self.buffers[bid]
                self.creator.pop(bid, None)
            self.values.update(saved)
        return grouped

    def _grouped(self, node: Node) -> Grouped | None:
        v = self.values[node.inputs[0]]
        if not isinstance(v, View):
            return None
        axes = group_axes(v.shape, v.strides, _dims(node))
        g = None if axes is None else Grouped(v.buffer, _dims(node), axes, v.offset, v.dtype)
        # call-time sizes only in the image index: kernels take the image count at run time
        if g is not None and (all_static(g.shape) or only_images(g)):
            return g
        if self.policy.implicit_gemm_or_specialize and not all_static(_dims(node)):
            # (other call-time sizes: the grouping needs them as numbers)
            from graphc.schedule.symbolic import IMPLICIT_GEMM, NotSymbolic
            raise NotSymbolic(IMPLICIT_GEMM)
        return None

    # reductions: the elementwise ops feeding them fuse into the body
    def _reduce(self, node: Node | _Keep, op: str, axes: tuple[int, ...], source: Value,
                body: Expr | None = None, fused: tuple[str, ...] = ()) -> View:
        shape = source.shape
        keep_shape = tuple(1 if a in axes else d for a, d in enumerate(shape))
        bid = self.new_buffer(node.dtype, _dims(node), "temp")
        self.creator[bid] = node
        strides = list(ir.contiguous_strides(keep_shape))
        for a in axes:
            strides[a] = 0
        if body is None:
            body = self.expr_of(source, shape)
            fused = source.fused if isinstance(source, Lazy) else ()
        if op != "argmax" and body_dtype(body) != node.dtype:
            body = Apply("cast", (body,), node.dtype)
        self.kernels.append(ir.Reduce(shape, axes, op, body, Access(bid, tuple(strides), 0),
                                      node.dtype, fused + (op,)))
        return self.whole(bid)

    def lower_sum(self, node: Node) -> View:
        return self._reduce(node, "sum", node.attrs["axes"], self.values[node.inputs[0]])

    def lower_max(self, node: Node) -> View:
        return self._reduce(node, "max", node.attrs["axes"], self.values[node.inputs[0]])

    lower_max_first = lower_max  # (the same values; only its gradient differs)

    def lower_min(self, node: Node) -> View:
        return self._reduce(node, "min", node.attrs["axes"], self.values[node.inputs[0]])

    def lower_argmax(self, node: Node) -> View:
        return self._reduce(node, "argmax", (node.attrs["axis"],), self.values[node.inputs[0]])

    def lower_log_softmax(self, node: Node) -> Lazy:
        """max, then sum of exp(x - max), then x - max - log(sum): two reductions and an
        epilogue that fuses into whatever reads it."""
        x = node.inputs[0]
        v = self.values[x]
        if isinstance(v, Lazy) and not _trivial(v.expr):
            v = self.view_of(x)
        axis = node.attrs["axis"]
        keep = tuple(1 if a == axis else d for a, d in enumerate(_dims(x)))
        m = _Keep(node, keep)
        top = self._reduce(m, "max", (axis,), v)
        top_k = View(top.buffer, keep, ir.contiguous_strides(keep), 0, node.dtype)
        shifted = Apply("sub", (self.expr_of(v, _dims(x)), self.expr_of(top_k, _dims(x))),
                        node.dtype)
        total = self._reduce(m, "sum", (axis,), v, Apply("exp", (shifted,), node.dtype),
                             ("sub", "exp"))
        total_k = View(total.buffer, keep, ir.contiguous_strides(keep), 0, node.dtype)
        out = Apply("sub", (shifted, Apply("log", (self.expr_of(total_k, _dims(x)),),
                                           node.dtype)), node.dtype)
        return Lazy(out, _dims(node), node.dtype, ("log_softmax",), 4)

    # templates
    def lower_matmul(self, node: Node) -> View:
        a, b = node.inputs
        batch = _dims(node)[:-2]
        m, n, k = _dims(node)[-2], _dims(node)[-1], _dims(a)[-1]
        narrow = self.policy.narrow_gemm
        turn = narrow is not None and hint(n) < narrow and hint(m) > hint(n)
        gb, implicit = self.values[b], None
        # (turned, B would be A: not packed so; but a product deep enough to be read along
        # its depth keeps its side, a narrow n costing it nothing: a one-channel
        # convolution's weight gradient reads the image in place, no im2col copy)
        outer = self.policy.implicit_outer_gemm
        if isinstance(gb, Grouped) and (not turn or self.policy.implicit_deep_gemm and
                                        _deep_columns(gb, batch, m, n, k, outer)):
            implicit = b_operand(gb, batch, m if self.policy.implicit_deep_gemm else None,
                                 self.policy.direct_conv_depth,
                                 self.policy.direct_conv_stride, outer)
            turn = turn and implicit is None
        if implicit is None and isinstance(gb, Grouped) and b.op == "transpose":
            # the columns stored as the forward product would read them; B a view of them
            self.view_of(b.inputs[0])
            self.values[b] = self.lower(b)
        va = self.view_of(a)
        if implicit is not None:
            acc_b, split = implicit
        else:
            acc_b, split = self._batched(self.view_of(b), batch, (k, n)), None
        acc_a = self._batched(va, batch, (m, k))
        bid = self.new_buffer(node.dtype, _dims(node), "temp")
        self.creator[bid] = node
        out = Access(bid, ir.contiguous_strides(_dims(node)), 0)
        if split is not None:
            self.kernels.append(ir.Gemm(batch, m, n, k, acc_a, acc_b, out, node.dtype,
                                        b_split=split))
            return self.whole(bid)
        if turn:
            # C = A B with few columns is computed as C^T = B^T A^T: the long side becomes
            # the wide one that vector tiles cover (strides only: nothing is copied).
            acc_a, acc_b, out = _swapped(acc_b), _swapped(acc_a), _swapped(out)
            m, n = n, m
        self.kernels.append(ir.Gemm(batch, m, n, k, acc_a, acc_b, out, node.dtype))
        return self.whole(bid)

    def _batched(self, v: View, batch: tuple[int, ...], tail: tuple[int, int]) -> Access:
        amap = broadcast_map(v.shape, batch + tail)
        strides, offset = remap_view(v.strides, v.offset, amap, len(batch) + 2)
        return Access(v.buffer, strides, offset)

    def lower_scan(self, node: Node) -> Value:
        """A group of sibling scan nodes (one loop, one node per result): one Loop kernel
        (graphc/schedule/loop.py)."""
        from graphc.schedule.loop import lower_scan_group
        return lower_scan_group(self, node)

    def lower_take(self, node: Node) -> View:
        x, idx = node.inputs
        vx, vi = self.view_of(x), self.view_of(idx)
        bid = self.new_buffer(node.dtype, _dims(node), "temp")
        self.creator[bid] = node
        self.kernels.append(ir.Gather(
            _dims(x), Access(vx.buffer, vx.strides, vx.offset), _dims(idx),
            Access(vi.buffer, vi.strides, vi.offset), node.attrs["axis"],
            Access(bid, ir.contiguous_strides(_dims(node)), 0), node.dtype,
            describe_indices("take", node, idx)))
        return self.whole(bid)

    def lower_scatter_add(self, node: Node) -> View:
        _, idx, upd = node.inputs
        vi, vu = self.view_of(idx), self.view_of(upd)
        bid = self.new_buffer(node.dtype, _dims(node), "temp")
        self.creator[bid] = node
        self.kernels.append(ir.ScatterAdd(
            _dims(node), Access(bid, ir.contiguous_strides(_dims(node)), 0), _dims(idx),
            Access(vi.buffer, vi.strides, vi.offset), Access(vu.buffer, vu.strides, vu.offset),
            node.attrs["axis"], node.dtype, describe_indices("scatter_add", node, idx)))
        return self.whole(bid)

    # running sums and products, sorting, and gathers/scatters along an axis
    def _scan(self, node: Node, op: str) -> View:
        (x,) = node.inputs
        v = self.values[x]
        if isinstance(v, Lazy) and v.depth >= self.policy.max_fused_depth:
            v = self.view_of(x)
        bid = self.new_buffer(node.dtype, _known(node.shape), "temp")
        self.creator[bid] = node
        fused = v.fused if isinstance(v, Lazy) else ()
        shape = _known(node.shape)
        self.kernels.append(ir.Scan(shape, node.attrs["axis"], op, node.attrs["reverse"],
                                    self.expr_of(v, shape),
                                    Access(bid, ir.contiguous_strides(shape), 0),
                                    node.dtype, fused + (node.op,)))
        return self.whole(bid)

    def lower_cumsum(self, node: Node) -> View:
        return self._scan(node, "sum")

    def lower_cumprod(self, node: Node) -> View:
        return self._scan(node, "prod")

    def lower_argsort(self, node: Node) -> View:
        (x,) = node.inputs
        vx = self.view_of(x)
        axis_ = node.attrs["axis"]
        # two rows of indices: a merge sort's passes go from one to the other
        scratch = self.new_buffer(np.dtype("int64"), (2 * _known(node.shape)[axis_],), "temp")
        bid = self.new_buffer(node.dtype, _known(node.shape), "temp")
        self.creator[bid] = node
        shape = _known(node.shape)
        self.kernels.append(ir.Sort(shape, axis_, Access(vx.buffer, vx.strides, vx.offset),
                                    Access(bid, ir.contiguous_strides(shape), 0), scratch,
                                    x.dtype))
        return self.whole(bid)

    def _along_index(self, node: Node, idx: Node, strides: tuple[int, ...], offset: int
                     ) -> View:
        """The flat element positions that x[..., idx[i], ...] along the node's axis reads
        (or its scatter writes) in a buffer with `strides`, after checking the indices
        (argsort's need no check)."""
        axis_ = node.attrs["axis"]
        n = node.inputs[0].shape[axis_]
        vi = self.view_of(idx)
        if idx.op != "argsort":
            self.kernels.append(ir.IndexCheck(_known(idx.shape), Access(vi.buffer, vi.strides,
                                                                vi.offset),
                                              n, describe_indices(node.op, node, idx)))
        i64 = np.dtype("int64")
        flat: Expr = Const(offset, i64)
        for k, s in enumerate(strides):
            term: Expr = self.expr_of(vi, _known(idx.shape)) if k == axis_ else Index(k, i64)
            if k == axis_ and idx.dtype != i64:
                term = Apply("cast", (term,), i64)
            if s == 0:
                continue
            if s != 1:
                term = Apply("mul", (term, Const(s, i64)), i64)
            flat = Apply("add", (flat, term), i64)
        return self.materialize(Lazy(flat, _known(idx.shape), i64, (node.op,), len(strides)))

    def lower_take_along_axis(self, node: Node) -> View:
        x, idx = node.inputs
        vx = self.view_of(x)
        size = self.buffers[vx.buffer].size
        flat = self._along_index(node, idx, vx.strides, vx.offset)
        bid = self.new_buffer(node.dtype, _known(node.shape), "temp")
        self.creator[bid] = node
        self.kernels.append(ir.Gather(
            (size,), Access(vx.buffer, (1,), 0), _known(idx.shape),
            Access(flat.buffer, flat.strides, flat.offset), 0,
            Access(bid, ir.contiguous_strides(_known(node.shape)), 0), node.dtype,
            describe_indices(node.op, node, idx)))
        return self.whole(bid)

    def lower_scatter_along_axis(self, node: Node) -> View:
        _, idx, upd = node.inputs
        vu = self.view_of(upd)
        strides = ir.contiguous_strides(_known(node.shape))
        flat = self._along_index(node, idx, strides, 0)
        bid = self.new_buffer(node.dtype, _known(node.shape), "temp")
        self.creator[bid] = node
        size = self.buffers[bid].size
        self.kernels.append(ir.ScatterAdd(
            (size,), Access(bid, (1,), 0), _known(idx.shape),
            Access(flat.buffer, flat.strides, flat.offset),
            Access(vu.buffer, vu.strides, vu.offset), 0, node.dtype,
            describe_indices(node.op, node, idx)))
        return self.whole(bid)

    def _region_store(self, bid: int, region: list[tuple[int, int]], value: Value) -> Store:
        """A store of `value` into the part of buffer `bid` where axis j runs
        start_j, start_j + step_j, ... (region = [(start, step)] per axis)."""
        base = ir.contiguous_strides(self.buffers[bid].shape)
        strides = tuple(s * step for s, (_, step) in zip(base, region))
        offset = sum(s * start for s, (start, _) in zip(base, region))
        return Store(Access(bid, strides, offset), self.expr_of(value, value.shape))

    def _placed(self, x: Node, region: list[tuple[int, int]], shape: tuple[int, ...],
                otherwise: Expr) -> Expr:
        """x read where axis j of the result runs start_j, start_j + step_j, ... (step +-1),
        `otherwise` elsewhere: a guarded load, over the result's iteration space."""
        v = self.view_of(x)
        strides, offset, bounds = [], v.offset, []
        for j, ((start, step), s, n) in enumerate(zip(region, v.strides, _dims(x))):
            # result index i reads x at p = step * (i - start), inside when 0 <= p < n
            strides.append(s * step)
            offset -= s * step * start
            if not (start == 0 and step == 1 and n == shape[j]):
                bounds.append(ir.Bound(((j, step),), -step * start, 0, n))
        guard = ir.Guard(tuple(bounds), otherwise) if bounds else None
        return Load(Access(v.buffer, tuple(strides), offset), v.dtype, guard)

    def lower_unslice(self, node: Node) -> Value:
        g, ref = node.inputs
        region = []
        for s, d in zip(node.attrs["slices"], _dims(ref)):
            start, _, step = slice(*s).indices(d) if isinstance(d, int) else _symbolic_slice(s)
            region.append((start, step))
        zero = Const(0, node.dtype)
        if 0 in g.shape:
            return Lazy(zero, _dims(node), node.dtype)
        if all(abs(step) == 1 for _, step in region):  # a view: zeros outside the slice
            return Lazy(self._placed(g, region, _dims(node), zero), _dims(node), node.dtype,
                        ("unslice",), 1)
        gathered = self._unslice_gathered(node, region)
        if gathered is not None:
            return gathered
        bid = self.new_buffer(node.dtype, _dims(node), "temp")
        self.creator[bid] = node
        fill = Store(Access(bid, ir.contiguous_strides(_dims(node)), 0), zero)
        self.kernels.append(ir.Elementwise(_dims(node), (fill,), ("zeros",)))
        v = self.values[g]
        self.kernels.append(ir.Elementwise(_dims(g), (self._region_store(bid, region, v),),
                                           (v.fused if isinstance(v, Lazy) else ())
                                           + ("unslice",)))
        return self.whole(bid)

    def _unslice_gathered(self, node: Node, region: list[tuple[int, int]]) -> View | None:
        """A strided slice's gradient (zeros but where the slice read) written in one pass
        that reads, for every position, the element the slice took from it, if any: an
        axis of step s >= 2 and size H = s * U iterated as (u, p), position s * u + p,
        which the slice read when p == start % s (its element u - start // s). Every
        position written once: no zero fill and scattered stores after it (a 1x1
        stride-2 convolution's data gradient). None (the fill and scatter then) where a
        step is negative, or a stepped axis's size not a multiple of its step, or the
        cotangent is not in a buffer."""
        g = node.inputs[0]
        dims = _dims(node)
        if any(step < 1 or step > 1 and (not isinstance(dims[j], int) or dims[j] % step
                                         or not isinstance(g.shape[j], int))
               for j, (_, step) in enumerate(region)):
            return None
        v = self._in_buffer(g)
        if v is None:
            return None
        loop, place = _pairs_split(dims, {j: step for j, (_, step) in enumerate(region)
                                          if step > 1})
        amap: list = []
        bounds = []
        for j, ((start, step), d, count) in enumerate(zip(region, dims, _dims(g))):
            ax = place[j]
            if step == 1:  # (read at i - start, inside 0 <= i - start < count)
                amap.append((((ax, 1),), -start))
                if not (start == 0 and count == d):
                    bounds.append(ir.Bound(((ax, 1),), -start, 0, count))
                continue
            first, phase = divmod(start, step)
            amap.append((((ax, 1),), -first))
            bounds.append(ir.Bound(((ax + 1, 1),), -phase, 0, 1))
            if first > 0 or d // step > count:
                bounds.append(ir.Bound(((ax, 1),), -first, 0, count))
        strides, offset = remap_view(v.strides, v.offset, tuple(amap), len(loop))
        value = Load(Access(v.buffer, strides, offset), v.dtype,
                     ir.Guard(tuple(bounds), Const(0, node.dtype)))
        return self._placing(node, loop, value, "unslice")

    def _in_buffer(self, g: Node) -> View | None:
        """g's value as a view of a buffer (columns stored first), None where it is an
        expression (a gathering kernel reads its elements through guards)."""
        v = self.values[g]
        if isinstance(v, Grouped):
            v = self.materialize(v)
        return v if isinstance(v, View) else None

    def _placing(self, node: Node, loop: list[Dim], value: Expr, fused: str) -> View:
        """node's buffer written whole, in order, by one kernel over `loop` (its axes, the
        stepped ones split in (u, p) pairs: _pairs_split) storing `value`."""
        dims = _dims(node)
        bid = self.new_buffer(node.dtype, dims, "temp")
        self.creator[bid] = node
        shape = typing.cast(tuple[int, ...], tuple(loop))
        store = Access(bid, ir.contiguous_strides(shape), 0)
        self.kernels.append(ir.Elementwise(shape, (Store(store, value),), (fused,)))
        return self.whole(bid)

    def lower_pad(self, node: Node) -> Value:
        """Zeros around x, read through a guard: no buffer, no copy."""
        (x,) = node.inputs
        zero = Const(0, node.dtype)
        if 0 in x.shape:
            return Lazy(zero, _dims(node), node.dtype)
        region = [(before, 1) for before, _ in node.attrs["pads"]]
        return Lazy(self._placed(x, region, _dims(node), zero), _dims(node), node.dtype,
                    ("pad",), 1)

    def _window_map(self, node: Node, ndim: int) -> AxisMap:
        """windows: input axis a reads stride * (window index) + (offset in the window)."""
        axes, strides = node.attrs["axes"], node.attrs["strides"]
        amap = []
        for j in range(ndim):
            if j in axes:
                i = axes.index(j)
                amap.append((((j, strides[i]), (ndim + i, 1)), 0))
            else:
                amap.append(axis(j))
        return tuple(amap)

    def lower_windows(self, node: Node) -> Value:
        return self._view(node, self._window_map(node, node.inputs[0].ndim))

    def lower_windows_grad(self, node: Node) -> View:
        g, ref = node.inputs
        bid = self.new_buffer(node.dtype, _dims(node), "temp")
        self.creator[bid] = node
        base = ir.contiguous_strides(_dims(node))
        axes, sizes, strides = (node.attrs[k] for k in ("axes", "sizes", "strides"))
        # Windows that do not overlap write each element at most once: a plain store (which
        # vectorizes and runs on threads); zeros first only where they leave gaps.
        disjoint = all(s >= k for k, s in zip(sizes, strides))
        if not disjoint and 0 not in g.shape:
            gathered = self._windows_gathered(node)
            if gathered is not None:
                return gathered
        covered = disjoint and all(g.shape[a] * s == ref.shape[a] and s == k
                                   for a, k, s in zip(axes, sizes, strides))
        if not covered:
            zero = Store(Access(bid, base, 0), Const(0, node.dtype))
            self.kernels.append(ir.Elementwise(_dims(node), (zero,), ("zeros",)))
        if 0 not in g.shape:
            strides_, offset = remap_view(base, 0, self._window_map(node, ref.ndim), g.ndim)
            v = self.values[g]
            store = Store(Access(bid, strides_, offset), self.expr_of(v, _dims(g)),
                          accumulate="" if disjoint else "atomic")
            self.kernels.append(ir.Elementwise(_dims(g), (store,),
                                               (v.fused if isinstance(v, Lazy) else ())
                                               + ("windows_grad",)))
        return self.whole(bid)

    def _windows_gathered(self, node: Node) -> View | None:
        """Overlapping strided windows' gradient read by every input position from the
        windows that hold it, in one pass that writes each position once (no zeros first,
        no read-modify-write of scattered elements). Each window axis of size H = s * U is
        iterated as (u, p), position s * u + p: the windows' offsets there are p + s * t,
        their indices u - t, for t < ceil(k / s), so ceil(k / s) guarded reads an axis (a
        3x3 stride-2 convolution's data gradient: 4 reads an element, where the scatter
        added 9 windows' elements one at a time, 2.25 a position, plus the zero fill).
        None (the scatter then) where some window axis is not a multiple of its stride
        or has stride 1, or the cotangent is not in a buffer."""
        g, ref = node.inputs
        axes, sizes, strides = (node.attrs[k] for k in ("axes", "sizes", "strides"))
        dims = _dims(node)
        if any(s < 2 or not isinstance(dims[a], int) or dims[a] % s
               or not isinstance(g.shape[a], int) for a, s in zip(axes, strides)):
            return None
        v = self._in_buffer(g)
        if v is None:
            return None
        loop, place = _pairs_split(dims, dict(zip(axes, strides)))
        zero = Const(0, node.dtype)
        value: Expr | None = None
        for taps in itertools.product(*(range(-(-k // s)) for k, s in zip(sizes, strides))):
            amap: list = []
            bounds = []
            for j in range(len(dims)):
                if j not in axes:
                    amap.append(axis(place[j]))
                    continue
                i = axes.index(j)
                t, count = taps[i], typing.cast(int, g.shape[j])  # (checked above)
                amap.append((((place[j], 1),), -t))  # the window's index u - t
                if t > 0 or loop[place[j]] > count:
                    bounds.append(ir.Bound(((place[j], 1),), -t, 0, count))
            for i, j in enumerate(axes):
                k, s, t = sizes[i], strides[i], taps[i]
                amap.append((((place[j] + 1, 1),), s * t))  # its offset p + s * t
                if s * t + s > k:
                    bounds.append(ir.Bound(((place[j] + 1, 1),), s * t, 0, k))
            at, offset = remap_view(v.strides, v.offset, tuple(amap), len(loop))
            term = Load(Access(v.buffer, at, offset), v.dtype,
                        ir.Guard(tuple(bounds), zero) if bounds else None)
            value = term if value is None else Apply("add", (value, term), node.dtype)
        assert value is not None
        return self._placing(node, loop, value, "windows_grad")

    def lower_concatenate(self, node: Node) -> Value:
        """Each part read through a guard where the result's axis falls in its range, the
        next part elsewhere: a view, no copy."""
        axis = node.attrs["axis"]
        parts, start = [], 0
        for x in node.inputs:
            # (a symbolic part stays: its guard reads nothing where it is empty)
            if not isinstance(x.shape[axis], int) or x.shape[axis]:
                parts.append((x, start))
            start += x.shape[axis]
        value: Expr = Const(0, node.dtype)  # (read nowhere: some part covers every index)
        for x, begin in reversed(parts):
            region = [(begin if a == axis else 0, 1) for a in range(node.ndim)]
            value = self._placed(x, region, _dims(node), value)
        return Lazy(value, _dims(node), node.dtype, ("concatenate",), 1)


def _pays(g: Grouped, policy: SchedulePolicy) -> bool:
    """Whether some product reads columns `g` as an implicit B (directly or transposed,
    under the target's `policy`)."""
    nd = len(g.shape)
    swap = tuple(range(nd - 2)) + (nd - 1, nd - 2)
    return any(b_operand(c, c.shape[:-2], direct_depth=policy.direct_conv_depth,
                             direct_stride=policy.direct_conv_stride) is not None
               for c in (g, g.permuted(swap))) or \
        policy.implicit_outer_gemm and outer_columns(g.permuted(swap))


def _pairs_split(dims: tuple[Dim, ...], steps: dict[int, int]
                 ) -> tuple[list[Dim], dict[int, int]]:
    """The loop over `dims` with each axis j of steps split as (size // s, s): position
    s * u + p (the sizes are multiples). Returns the loop's sizes and each axis's (first)
    loop axis. In row-major order the loop's indices walk the buffer contiguously."""
    loop: list[Dim] = []
    place: dict[int, int] = {}
    for j, d in enumerate(dims):
        place[j] = len(loop)
        loop += [d // steps[j], steps[j]] if j in steps else [d]
    return loop, place


def _deep_columns(g: Grouped, batch: tuple, m: Dim, n: Dim, k: Dim, outer: bool) -> bool:
    """Whether a product of one batch item over columns `g` is read along its depth
    (graphc.schedule.implicit.deep; `outer`: SchedulePolicy.implicit_outer_gemm)."""
    return all(d == 1 for d in batch) and bool(g.axes[-2]) and bool(g.axes[-1]) and \
        isinstance(m, int) and isinstance(n, int) and \
        deep(m, n, k, g.axes[-2], g.axes[-1], outer)


def _known(shape: tuple[Dim, ...]) -> tuple[int, ...]:
    """A shape in a specialised graph (every size known: Lowering checks it)."""
    return typing.cast(tuple[int, ...], shape)


def _swapped(access: Access) -> Access:
    """The same elements read with the last two axes exchanged (a transpose)."""
    s = access.strides
    return Access(access.buffer, s[:-2] + (s[-1], s[-2]), access.offset)


class _Keep:
    """A stand-in node for an intermediate reduction's buffer (log_softmax's max and sum)."""

    def __init__(self, node: Node, shape: tuple[int, ...]) -> None:
        self.dtype = node.dtype
        self.shape = shape


def body_dtype(expr: Expr) -> np.dtype:
    return expr.dtype


def describe_indices(what: str, node: Node, indices: Node) -> str:
    """`what` with where the indices came from (an argument, by name) and the line that
    built the op: the words of an IndexError."""
    parts = []
    if indices.op == "placeholder":
        parts.append(f"indices from argument {indices.attrs['name']!r}")
    if node.source is not None:
        parts.append(f"built at {node.source}")
    return f"{what} ({', '.join(parts)})" if parts else what


def lower_graph(graph: Graph, policy: SchedulePolicy = DEFAULT_POLICY,
                symbolic: bool = False) -> Schedule:
    """Kernels for a graph whose shapes are all known (see graphc.specialize), made with
    the target's `policy`; with `symbolic`, sizes may be `Size` expressions too."""
    return Lowering(graph, policy, symbolic).run()
