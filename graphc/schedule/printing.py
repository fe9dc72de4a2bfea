"""The kernel listing, in full: each kernel with its iteration space, every access with its
buffer, strides and offset (and guard), each body as an expression whose shared parts are
named once (let-bound, as in a jaxpr)."""
from __future__ import annotations

from typing import Any

from graphc.dtypes import short_name
from graphc.schedule import ir
from graphc.sizes import Size


def access_text(a: ir.Access) -> str:
    """b3<256,1>+8: buffer 3, element i at offset 8 + 256*i0 + 1*i1."""
    if isinstance(a.offset, Size):  # (a call-time offset: its sign is not known)
        off = f"+({a.offset})"
    else:
        off = f"+{a.offset}" if a.offset > 0 else (f"{a.offset}" if a.offset < 0 else "")
    return f"b{a.buffer}<{','.join(map(str, a.strides))}>{off}"


def _affine(terms: tuple[tuple[int, int], ...], offset: int) -> str:
    parts = [f"i{k}" if s == 1 else (f"-i{k}" if s == -1 else f"{s}*i{k}") for k, s in terms]
    if offset or not parts:
        parts.append(str(offset))
    return "+".join(parts).replace("+-", "-")


def bound_text(b: ir.Bound) -> str:
    return f"{b.lo}<={_affine(b.terms, b.offset)}<{b.hi}"


def _const_text(c: ir.Const) -> str:
    if isinstance(c.value, Size):  # a size read at call time
        return f"size({c.value})"
    if c.dtype.kind == "f":
        v = float(c.value)
        return repr(v) if v == v else "nan"
    return str(c.value)


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
    if isinstance(k, ir.Scan):
        body = _Body([k.body])
        value = body.text(k.body)
        return body.lets + [f"{access_text(k.out)} = running {k.op}({value})"]
    if isinstance(k, ir.Loop):
        return _loop_lines(k)
    lines = [f"{role} {access_text(a)} over [{','.join(map(str, shape))}]"
             for role, a, shape in k.accesses() if role != "in"]
    error = k.error()
    if error is not None:
        lines.append(f"raises {error[0].__name__}: {error[1]}")
    return lines


def _loop_lines(k: ir.Loop) -> list[str]:
    """Which outer buffer each body input and output is at step t, then the body's own
    listing (its buffers are numbered apart: `body b3` is the body's buffer 3)."""
    t = "T-1-t" if k.reverse else "t"
    lines = [f"carry b{c.init} then b{c.final}|b{c.spare} (the last step writes "
             f"b{c.final}): body b{c.inside} -> body b{c.out}" for c in k.carries]
    lines += [f"xs b{x.outer}[{t}] -> body b{x.inner}" for x in k.xs]
    lines += [f"ys body b{y.inner} -> b{y.outer}[{t}]" for y in k.ys]
    lines += [f"invariant b{v.outer} -> body b{v.inner}" for v in k.invariants]
    if k.arena >= 0:
        lines.append(f"body arena in b{k.arena}")
    error = k.error()
    if error is not None:
        lines.append(f"raises {error[0].__name__}: {error[1]}")
    lines.append("body:")
    return lines + ["  " + ln for ln in schedule_listing(k.body).splitlines()]


def kernel_text(index: int, k: Any) -> list[str]:
    fused = f"  # {' '.join(k.fused)}" if getattr(k, "fused", ()) else ""
    head = f"k{index} {k.header()}{fused}"
    return [head] + [f"    {ln}" for ln in _kernel_lines(k)]


def kernel_line(k: Any) -> str:
    """One line: what a kernel is, what it reads and writes (the short listing)."""
    reads = ",".join(f"b{b}" for b in sorted(k.reads()))
    writes = ",".join(f"b{b}" for b in sorted(k.writes()))
    return f"{k.header()}  {reads or '-'} -> {writes}"


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
