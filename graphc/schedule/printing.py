"""The kernel listing, in full: each kernel with its iteration space, every access with its
buffer, strides and offset (and guard), each body as an expression whose shared parts are
named once (let-bound, as in a jaxpr)."""
from __future__ import annotations

from typing import Any

from graphc.dtypes import short_name
from graphc.schedule import ir


def access_text(a: ir.Access) -> str:
    """b3<256,1>+8: buffer 3, element i at offset 8 + 256*i0 + 1*i1."""
    off = f"+{a.offset}" if a.offset > 0 else (f"{a.offset}" if a.offset < 0 else "")
    return f"b{a.buffer}<{','.join(map(str, a.strides))}>{off}"


def _affine(terms: tuple[tuple[int, int], ...], offset: int) -> str:
    parts = [f"i{k}" if s == 1 else f"{s}*i{k}" for k, s in terms]
    if offset or not parts:
        parts.append(str(offset))
    return "+".join(parts).replace("+-", "-")


def bound_text(b: ir.Bound) -> str:
    return f"{b.lo}<={_affine(b.terms, b.offset)}<{b.hi}"


def _const_text(c: ir.Const) -> str:
    v = c.value
    if isinstance(v, float):
        return repr(v) if v == v else "nan"
    return str(v)


class _Body:
    """Expressions of one kernel as text; nodes used more than once become `%n = ...`."""

    def __init__(self, exprs: list[ir.Expr]) -> None:
        uses: dict[int, int] = {}
        for e in exprs:
            for node in ir.postorder(e):
                for kid in ir.children(node):
                    uses[id(kid)] = uses.get(id(kid), 0) + 1
        for e in exprs:
            uses[id(e)] = uses.get(id(e), 0) + 1
        self.shared = {k for k, n in uses.items() if n > 1}
        self.names: dict[int, str] = {}
        self.lets: list[str] = []
        self.exprs = exprs

    def text(self, e: ir.Expr) -> str:
        for node in ir.postorder(e):
            if id(node) in self.names:
                continue
            body = self._node(node)
            if id(node) in self.shared and ir.children(node):
                name = f"%{len(self.lets)}"
                self.lets.append(f"{name} = {body}")
                self.names[id(node)] = name
            else:
                self.names[id(node)] = body
        return self.names[id(e)]

    def _node(self, e: ir.Expr) -> str:
        if isinstance(e, ir.Const):
            return _const_text(e)
        if isinstance(e, ir.Index):
            return f"i{e.axis}"
        if isinstance(e, ir.Load):
            text = access_text(e.access)
            if e.guard is not None:
                conds = " and ".join(bound_text(b) for b in e.guard.bounds)
                text = f"({text} if {conds} else {self.names[id(e.guard.otherwise)]})"
            return text
        args = ", ".join(self.names[id(a)] for a in e.args)
        if e.op == "cast":
            return f"cast<{short_name(e.dtype)}>({args})"
        return f"{e.op}({args})"


def _space(shape: tuple[int, ...]) -> str:
    return f"[{','.join(map(str, shape))}]"


def _kernel_header(k: Any) -> str:
    if isinstance(k, ir.Elementwise):
        return f"elementwise {_space(k.shape)}"
    if isinstance(k, ir.Reduce):
        return (f"reduce/{k.op} {_space(k.shape)} over axes {list(k.axes)} "
                f"-> {short_name(k.out_dtype)}")
    if isinstance(k, ir.Gemm):
        extra = (f" alpha={k.alpha:g}" if k.alpha != 1 else "") + (" out+=" if k.accumulate
                                                                   else "")
        return (f"gemm batch={_space(k.batch)} m={k.m} n={k.n} k={k.k} "
                f"{short_name(k.dtype)}{extra}")
    if isinstance(k, ir.Gather):
        return f"gather axis={k.axis} x={_space(k.x_shape)} idx={_space(k.idx_shape)}"
    if isinstance(k, ir.ScatterAdd):
        return (f"scatter_add axis={k.axis} out={_space(k.out_shape)} "
                f"idx={_space(k.idx_shape)}")
    if isinstance(k, ir.IndexCheck):
        return f"index_check {_space(k.shape)} in [0, {k.size})"
    if isinstance(k, ir.ValueCheck):
        return f"value_check {_space(k.shape)} >= 0"
    return f"{k.kind}"


def _kernel_lines(k: Any) -> list[str]:
    """The lines under a kernel's header: its stores/accesses and bodies."""
    if isinstance(k, ir.Elementwise):
        body = _Body([s.value for s in k.stores])
        values = [body.text(s.value) for s in k.stores]
        ops = {"": "=", "atomic": "+=", "ordered": "+=(in order)"}
        return body.lets + [f"{access_text(s.access)} {ops[s.accumulate]} {v}"
                            for s, v in zip(k.stores, values)]
    if isinstance(k, ir.Reduce):
        body = _Body([k.body])
        value = body.text(k.body)
        return body.lets + [f"{access_text(k.out)} = {k.op}({value})"]
    lines = [f"{role} {access_text(a)} over {_space(shape)}" for role, a, shape in k.accesses()
             if not (role == "in" and isinstance(k, ir.Gemm))]
    if isinstance(k, (ir.Gather, ir.ScatterAdd, ir.IndexCheck)):
        lines.append(f"raises IndexError: {k.what}")
    if isinstance(k, ir.ValueCheck):
        lines.append(f"raises ValueError: {k.message}")
    return lines


def kernel_text(index: int, k: Any) -> list[str]:
    fused = f"  # {' '.join(k.fused)}" if getattr(k, "fused", ()) else ""
    head = f"k{index} {_kernel_header(k)}{fused}"
    return [head] + [f"    {ln}" for ln in _kernel_lines(k)]


def kernel_line(k: Any) -> str:
    """One line: what a kernel is, what it reads and writes (the short listing)."""
    reads = ",".join(f"b{b}" for b in sorted(k.reads()))
    writes = ",".join(f"b{b}" for b in sorted(k.writes()))
    return f"{_kernel_header(k)}  {reads or '-'} -> {writes}"


def schedule_listing(schedule: ir.Schedule) -> str:
    lines = [f"{len(schedule.kernels)} kernels, {len(schedule.buffers)} buffers"]
    plan = schedule.plan
    for b in schedule.buffers.values():
        where = f" @arena+{plan.offsets[b.id]}" if plan is not None and b.id in plan.offsets \
            else ""
        lines.append(f"  {b}{where}")
    for i, k in enumerate(schedule.kernels):
        lines.extend("  " + ln for ln in kernel_text(i, k))
    if plan is not None:
        lines.append(str(plan))
    return "\n".join(lines)
