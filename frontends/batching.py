"""Batching a traced graph over a new leading axis: a rule per primitive, unrolling otherwise."""
from __future__ import annotations

from typing import Callable, Sequence

from graphc.dtypes import bool_
from graphc.node import Node, toposort
from graphc.ops import get_op, make
from graphc.ops.leaves import scalar_constant
from graphc.ops.registry import rebuild
from graphc.ops.shapes import normalize_axes
from graphc.sizes import Dim, all_static

# Every batched node carries the batch on axis 0. A node none of whose value inputs is batched
# stays as it is (computed once, shared by every example).

FULL = (None, None, None)  # the slice that keeps a whole axis


def _align(x: Node, rank: int) -> Node:
    """A batched x (B, *s) with size-1 axes inserted after the batch axis up to rank + 1, so
    numpy's right-aligned broadcasting pairs its axes with those of a rank-`rank` example."""
    k = rank + 1 - x.ndim
    return make("expand_dims", x, axes=tuple(range(1, 1 + k))) if k > 0 else x


def _example(x: Node, i: int) -> Node:
    """Example i of a batched node."""
    part = make("slice", x, slices=((i, i + 1, 1),) + (FULL,) * (x.ndim - 1))
    return make("squeeze", part, axes=(0,))


class Batcher:
    """Turns per-example nodes into batched ones; `size` is the batch size (a symbol when
    known only at run time)."""

    def __init__(self, size: Dim | None) -> None:
        self.size = size

    def need_size(self, why: str) -> Dim:
        if self.size is None:
            raise ValueError(f"vmap: {why} needs a batch size")
        return self.size

    def repeat(self, x: Node) -> Node:
        """An unbatched x repeated along a new batch axis: (B, *x.shape)."""
        size = self.need_size(f"repeating {x.op} {x.type} over the batch")
        return make("broadcast_to", x, shape=(size,) + x.shape)

    def as_batched(self, x: Node, batched: bool) -> Node:
        return x if batched else self.repeat(x)

    def shape_ref(self, original: Node, x: Node, batched: bool) -> Node:
        """An unbatched node shaped like one example of `original` (for inputs read only for
        their shape)."""
        if not batched:
            return x
        zero = scalar_constant(0, original.dtype)
        return make("broadcast_to", zero, shape=original.shape) if original.shape else zero

    def unroll(self, node: Node, ins: Sequence[Node], batched: Sequence[bool]) -> Node:
        """The rule every primitive satisfies: one copy of the node per example, stacked."""
        size = self.need_size(f"{node.op} (which has no batching rule, so it is unrolled)")
        if not isinstance(size, int):
            raise ValueError(f"vmap: {node.op} (which has no batching rule, so it is unrolled) "
                             "needs a batch size known when tracing (the mapped axis has a "
                             "size given only at call time)")
        if size == 0:
            return make("broadcast_to", scalar_constant(0, node.dtype), shape=(0,) + node.shape)
        parts = []
        for i in range(size):
            one = [_example(x, i) if b else x for x, b in zip(ins, batched)]
            parts.append(make("expand_dims", rebuild(node, one), axes=(0,)))
        return parts[0] if size == 1 else make("concatenate", *parts, axis=0)

    def node(self, node: Node, ins: list[Node], batched: list[bool]) -> tuple[Node, bool]:
        """The batched form of `node` given its inputs' batched forms."""
        opdef = get_op(node.op)
        shape_only = opdef.shape_only(len(node.inputs))
        if not any(b for k, b in enumerate(batched) if k not in shape_only):
            # Only shapes come from the batch: one unbatched node serves every example.
            refs = [self.shape_ref(o, x, b) if k in shape_only else x
                    for k, (o, x, b) in enumerate(zip(node.inputs, ins, batched))]
            return rebuild(node, refs), False
        rule = RULES.get(node.op)
        if rule is None and opdef.elementwise:
            rule = _elementwise
        out = rule(self, node, ins, batched) if rule is not None else None
        if out is None:
            out = self.unroll(node, ins, batched)
        return out, True

    def run(self, outputs: Sequence[Node], env: dict[Node, Node]) -> list[Node]:
        """The batched outputs (batch on axis 0): `env` maps per-example nodes (placeholders)
        to their batched values; outputs that do not depend on them are repeated."""
        done: dict[Node, tuple[Node, bool]] = {n: (b, True) for n, b in env.items()}
        for n in toposort(outputs):
            if n in done:
                continue
            if not n.inputs or not any(done[i][1] for i in n.inputs):
                done[n] = (n, False)
                continue
            ins = [done[i][0] for i in n.inputs]
            flags = [done[i][1] for i in n.inputs]
            done[n] = self.node(n, ins, flags)
        return [self.as_batched(*done[o]) for o in outputs]


Rule = Callable[[Batcher, Node, list[Node], list[bool]], Node | None]


def _elementwise(b: Batcher, node: Node, ins: list[Node], batched: list[bool]) -> Node:
    """Broadcasting ops (and matmul, which broadcasts its leading axes): batched operands get
    size-1 axes after the batch axis; unbatched ones broadcast as they are."""
    return rebuild(node, [_align(x, node.ndim) if f else x for x, f in zip(ins, batched)])


def _shift(axes: Sequence[int], ndim: int) -> tuple[int, ...]:
    return tuple(a + 1 for a in normalize_axes(tuple(axes), ndim))


def _with(node: Node, ins: Sequence[Node], **attrs: object) -> Node:
    return rebuild(node, ins, {**node.attrs, **attrs})


def _reduce(b: Batcher, node: Node, ins: list[Node], batched: list[bool]) -> Node:
    x = node.inputs[0]
    return _with(node, ins, axes=_shift(node.attrs["axes"], x.ndim))


def _one_axis(b: Batcher, node: Node, ins: list[Node], batched: list[bool]) -> Node:
    (axis,) = _shift((node.attrs["axis"],), node.inputs[0].ndim)
    return _with(node, ins, axis=axis)


def _reshape(b: Batcher, node: Node, ins: list[Node], batched: list[bool]) -> Node | None:
    shape = tuple(node.attrs["shape"])
    if b.size is not None:
        return _with(node, ins, shape=(b.size,) + shape)
    if -1 not in shape:
        return _with(node, ins, shape=(-1,) + shape)
    if all_static(node.shape):
        return _with(node, ins, shape=(-1,) + node.shape)
    b.need_size(f"reshape to {shape} with a -1")
    return None


def _expand_dims(b: Batcher, node: Node, ins: list[Node], batched: list[bool]) -> Node:
    return _with(node, ins, axes=_shift(node.attrs["axes"], node.ndim))


def _squeeze(b: Batcher, node: Node, ins: list[Node], batched: list[bool]) -> Node:
    ndim = node.inputs[0].ndim
    indices = tuple((a + 1, i) for a, i in node.attrs.get("indices", ()))
    attrs: dict[str, object] = {"axes": _shift(node.attrs["axes"], ndim)}
    if indices:
        attrs["indices"] = indices
    return _with(node, ins, **attrs)


def _transpose(b: Batcher, node: Node, ins: list[Node], batched: list[bool]) -> Node:
    return _with(node, ins, perm=(0,) + tuple(p + 1 for p in node.attrs["perm"]))


def _broadcast_to(b: Batcher, node: Node, ins: list[Node], batched: list[bool]) -> Node:
    x = _align(ins[0], node.ndim)
    if b.size is not None:
        return make("broadcast_to", x, shape=(b.size,) + tuple(node.attrs["shape"]))
    cond = make("broadcast_to", scalar_constant(True, bool_), shape=node.attrs["shape"])
    return make("where", cond, x, x)


def _slices(node: Node, ins: list[Node], **extra: object) -> Node:
    return _with(node, ins, slices=(FULL,) + tuple(node.attrs["slices"]), **extra)


def _slice(b: Batcher, node: Node, ins: list[Node], batched: list[bool]) -> Node:
    return _slices(node, ins)


def _unslice(b: Batcher, node: Node, ins: list[Node], batched: list[bool]) -> Node:
    return _slices(node, [ins[0], b.as_batched(ins[1], batched[1])])


def _pad(b: Batcher, node: Node, ins: list[Node], batched: list[bool]) -> Node:
    return _with(node, ins, pads=((0, 0),) + tuple(node.attrs["pads"]))


def _windows(b: Batcher, node: Node, ins: list[Node], batched: list[bool]) -> Node:
    return _with(node, ins, axes=tuple(a + 1 for a in node.attrs["axes"]))


def _windows_grad(b: Batcher, node: Node, ins: list[Node], batched: list[bool]) -> Node:
    return _windows(b, node, [ins[0], b.as_batched(ins[1], batched[1])], batched)


def _concatenate(b: Batcher, node: Node, ins: list[Node], batched: list[bool]) -> Node:
    parts = [b.as_batched(x, f) for x, f in zip(ins, batched)]
    return _one_axis(b, node, parts, batched)


def _take(b: Batcher, node: Node, ins: list[Node], batched: list[bool]) -> Node | None:
    if batched[1]:
        return None  # per-example indices: unrolled
    return _one_axis(b, node, ins, batched)


def _scatter_add(b: Batcher, node: Node, ins: list[Node], batched: list[bool]) -> Node | None:
    if batched[1]:
        return None
    ref, idx, upd = ins
    ins = [b.as_batched(ref, batched[0]), idx, b.as_batched(upd, batched[2])]
    return _one_axis(b, node, ins, batched)


def _scan(b: Batcher, node: Node, ins: list[Node], batched: list[bool]) -> Node:
    from graphc.frontends.batching_scan import batch_scan  # (it imports this module)
    return batch_scan(b, node, ins, batched)


# Rules keyed by primitive. A primitive without one is unrolled (correct for every primitive,
# but the graph then grows with the batch size); elementwise primitives share one rule.
RULES: dict[str, Rule] = {
    "cast": _elementwise, "stop_gradient": _elementwise, "check_index": _elementwise,
    "matmul": _elementwise,
    "sum": _reduce, "max": _reduce, "max_first": _reduce, "min": _reduce,
    "argmax": _one_axis, "log_softmax": _one_axis,
    "reshape": _reshape,
    "expand_dims": _expand_dims, "squeeze": _squeeze, "transpose": _transpose,
    "broadcast_to": _broadcast_to,
    "slice": _slice, "unslice": _unslice, "pad": _pad,
    "windows": _windows, "windows_grad": _windows_grad,
    "concatenate": _concatenate,
    "take": _take, "scatter_add": _scatter_add,
    "scan": _scan,
}


def batch_nodes(outputs: Sequence[Node], env: dict[Node, Node], size: Dim | None
                ) -> list[Node]:
    """`outputs` computed for a whole batch: env maps per-example leaves to batched nodes
    (batch on axis 0); each result has the batch on axis 0."""
    return Batcher(size).run(outputs, env)
