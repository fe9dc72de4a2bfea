"""A kernel's structural key: everything its code depends on except which buffers it uses,
so that identical kernels share one compiled function (and one per-kernel cache entry)."""
from __future__ import annotations

import dataclasses
import functools
import hashlib
from typing import Any

import numpy as np

from graphc.schedule import ir as kir
from graphc.sizes import Size, SizeVar, hint


def kernel_buffers(kernel: kir.Kernel) -> tuple[int, ...]:
    """The buffers a kernel uses, in order of first use (its accesses' order): buffer i of
    this tuple is the kernel's local buffer i, the i-th pointer of the table it is given."""
    order: dict[int, None] = {}
    for _, access, _ in kernel.accesses():
        order.setdefault(access.buffer, None)
    return tuple(order)


def overlap_classes(kernel: kir.Kernel, schedule: kir.Schedule,
                    bids: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """For each local buffer, the smallest local number of the buffers whose memory may
    overlap it (arena temporaries sharing bytes; every other buffer is memory of its own).
    Code may assume that buffers of different classes never alias. `bids`: the kernel's
    kernel_buffers, where the caller has them already."""
    bids = kernel_buffers(kernel) if bids is None else bids
    offsets = schedule.plan.offsets if schedule.plan is not None else {}
    group = list(range(len(bids)))
    temps = [i for i, bid in enumerate(bids) if schedule.buffers[bid].role == "temp"]

    def span(i: int) -> tuple[int, int]:
        buf = schedule.buffers[bids[i]]
        # (symbolic sizes: the plan's binding, which the plan's offsets were made for; a
        # loop body's offsets are expressions, provably apart for every binding where
        # lifetimes overlap, as they do within one kernel: loop_memory.place_symbolic)
        start = hint(offsets.get(bids[i], 0))
        return start, start + hint(buf.size) * max(1, buf.dtype.itemsize)

    changed = True
    while changed:  # (a chain of overlaps makes one class)
        changed = False
        for n, i in enumerate(temps):
            (x0, x1) = span(i)
            for j in temps[n + 1:]:
                (y0, y1) = span(j)
                if x0 < y1 and y0 < x1 and group[i] != group[j]:
                    group[i] = group[j] = min(group[i], group[j])
                    changed = True
    return tuple(group)


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    """A dataclass's field names in order (dataclasses.fields() per call was slow)."""
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


@functools.cache
def _dtype_name(dtype: np.dtype) -> str:
    return dtype.name  # (numpy works it out anew on every access)


class _Encoder:
    """Writes a kernel record as text: buffers by local number, expression DAGs with each
    shared node written once (bodies share sub-expressions)."""

    def __init__(self, local: dict[int, int]) -> None:
        self.local = local
        self.nodes: dict[int, int] = {}
        self.lines: list[str] = []
        self.user_ops: set[str] = set()  # ops defined at run time: their formulas count
        self.symbols: dict[SizeVar, int] = {}  # sizes' symbols, numbered by first use

    def symbol(self, var: SizeVar) -> str:
        return f"s{self.symbols.setdefault(var, len(self.symbols))}"

    def value(self, v: Any) -> str:
        kind = type(v)
        # the common leaves first (plan_units encodes every kernel: a 96-layer MLP step's
        # 686 took 55 ms, most of it in the checks below); the same text as further down
        if kind is int or kind is str or kind is bool or v is None:
            return repr(v)
        if kind is tuple or kind is list:
            return "(" + ",".join(self.value(x) for x in v) + ")"
        if isinstance(v, kir.Access):
            return f"A(b{self.local[v.buffer]},{self.value(v.strides)},{self.value(v.offset)})"
        if isinstance(v, Size):  # symbols by local number: the code reads them in that order
            return f"S({v.text(self.symbol)})"
        if isinstance(v, (kir.Load, kir.Const, kir.Index, kir.Apply)):
            return self.expr(v)
        if isinstance(v, kir.Schedule):  # a loop's body: its code, buffers and plan
            return "{" + schedule_signature(v, self) + "}"
        outer = getattr(type(v), "outer_fields", ())
        if outer:  # a loop's binding: outer buffers by local number, the body's by its own
            inner = ",".join(f"{f.name}=" + (f"b{self.local[getattr(v, f.name)]}"
                                             if f.name in outer else repr(getattr(v, f.name)))
                             for f in dataclasses.fields(v))
            return f"{type(v).__name__}({inner})"
        if hasattr(kind, "__dataclass_fields__"):  # (an instance: v's type is the dataclass)
            inner = ",".join(f"{name}={self.value(getattr(v, name))}"
                             for name in _field_names(kind))
            return f"{kind.__name__}({inner})"
        if isinstance(v, (tuple, list)):
            return "(" + ",".join(self.value(x) for x in v) + ")"
        if isinstance(v, np.dtype):
            return _dtype_name(v)
        if isinstance(v, float):
            return v.hex()  # exact, and nan/inf spelled unambiguously
        if v is None or isinstance(v, (bool, int, str, np.integer, np.bool_)):
            return repr(v)
        raise TypeError(f"kernel_signature: cannot encode a {type(v).__name__}")

    def expr(self, e: kir.Expr) -> str:
        number = self.nodes.get(id(e))
        if number is None:
            # children first, by the iterative walker: encoding a node then finds its
            # children numbered, so a long fused chain does not recurse through them
            for node in kir.postorder(e):
                if id(node) not in self.nodes:
                    self._encode(node)
            number = self.nodes[id(e)]
        return f"e{number}"

    def _encode(self, e: kir.Expr) -> None:
        if isinstance(e, kir.Apply) and e.op not in self.user_ops:
            from graphc.ops import get_op
            if get_op(e.op).user_defined:
                self.user_ops.add(e.op)
        parts = ",".join(f"{name}={self.value(getattr(e, name))}"
                         for name in _field_names(type(e)))
        number = self.nodes[id(e)] = len(self.nodes)
        self.lines.append(f"e{number}={type(e).__name__}({parts})")


def kernel_signature(kernel: kir.Kernel, schedule: kir.Schedule,
                     bids: tuple[int, ...] | None = None) -> str:
    """The signature alone (see signature_and_symbols)."""
    return signature_and_symbols(kernel, schedule, bids)[0]


def signature_and_symbols(kernel: kir.Kernel, schedule: kir.Schedule,
                          bids: tuple[int, ...] | None = None
                          ) -> tuple[str, tuple[SizeVar, ...]]:
    """Everything `kernel`'s code depends on but which buffers it uses: its kind and fields
    (shapes, strides, offsets, bodies, dtypes, attributes) with buffers renumbered by first
    use (kernel_buffers), the dtype of each, which of them may share memory, and the
    formula of each user-defined op the bodies apply. Error messages are left out (the
    caller reports them). Kernels with equal signatures can
    share one function, called with a table of their own buffers' pointers. `bids`: the
    kernel's kernel_buffers, where the caller has them already. Symbolic sizes are written
    with their symbols numbered by first use (`s0`, `s1`...): the second result lists the
    kernel's symbols in that order, the order in which its code reads their values."""
    bids = kernel_buffers(kernel) if bids is None else bids
    enc = _Encoder({bid: i for i, bid in enumerate(bids)})
    skip = set(kernel.message_fields) | set(kernel.buffer_fields)
    fields = [f"{name}={enc.value(getattr(kernel, name))}"
              for name in _field_names(type(kernel)) if name not in skip]
    fields += [f"{name}=b{enc.local[getattr(kernel, name)]}" if getattr(kernel, name) >= 0
               else f"{name}=none" for name in kernel.buffer_fields]
    dtypes = ",".join(_dtype_name(schedule.buffers[bid].dtype) for bid in bids)
    formulas = []
    if enc.user_ops:  # the same name may stand for another formula in another process
        import sympy as sp

        from graphc.derivatives import definition
        formulas = [f"{op}={sp.srepr(definition(op))}" for op in sorted(enc.user_ops)]
    text = "\n".join([f"{kernel.kind}({';'.join(fields)})", f"buffers {dtypes}",
                      f"overlaps {overlap_classes(kernel, schedule, bids)}"] + enc.lines
                     + formulas)
    return text, tuple(enc.symbols)


def schedule_signature(schedule: kir.Schedule, outer: _Encoder | None = None) -> str:
    """Everything a loop body's code depends on: its buffers (ids, dtypes, shapes, roles),
    inputs and outputs, where its temporaries live, and each kernel's signature with the
    buffers it is given. `outer`: the loop's encoder, where the body's sizes are symbols:
    they are written by its local numbers, and the loop's code reads every one of them
    (the body kernels' own symbols after the buffers' and offsets')."""
    plan = schedule.plan
    enc = outer if outer is not None else _Encoder({})

    def dim(d: object) -> str:
        return enc.value(d) if isinstance(d, Size) else repr(d)

    lines = [";".join(f"b{b.id}:{b.dtype.name}[{','.join(dim(d) for d in b.shape)}]{b.role}"
                      for b in schedule.buffers.values()),
             f"inputs {list(schedule.inputs)} outputs {list(schedule.outputs)}",
             "arena [" + ",".join(f"({b},{dim(o)})" for b, o in
                                  sorted(plan.offsets.items()) if plan) + "]"
             if plan else "arena []"]
    for k in schedule.kernels:
        bids = kernel_buffers(k)
        text, used = signature_and_symbols(k, schedule, bids)
        lines += [f"kernel on {list(bids)}", text,
                  "sizes " + ",".join(enc.symbol(v) for v in used)]
    return "\n".join(lines)


def signature_digest(signature: str) -> str:
    """A short, stable name for a signature (SHA-256, 20 hex digits)."""
    return hashlib.sha256(signature.encode()).hexdigest()[:20]
