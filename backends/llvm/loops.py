"""IR-building helpers: counted loops and loop nests with i64 induction variables."""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

from llvmlite import ir

from graphc.backends.llvm.size_values import as_value

I64 = ir.IntType(64)


@contextlib.contextmanager
def counted_loop(builder: ir.IRBuilder, count: ir.Value | int, name: str = "i"
                 ) -> Iterator[ir.Value]:
    """for (i = 0; i < count; ++i) { body }: yields i; the builder ends after the loop."""
    if not isinstance(count, ir.Value):  # an int, or a symbolic size read at entry
        count = as_value(builder, count)
    pre = builder.block
    head = builder.append_basic_block(f"{name}.head")
    body = builder.append_basic_block(f"{name}.body")
    done = builder.append_basic_block(f"{name}.done")
    builder.branch(head)
    builder.position_at_end(head)
    index = builder.phi(I64, name=name)
    index.add_incoming(ir.Constant(I64, 0), pre)
    builder.cbranch(builder.icmp_signed("<", index, count), body, done)
    builder.position_at_end(body)
    yield index
    nxt = builder.add(index, ir.Constant(I64, 1), name=f"{name}.next")
    index.add_incoming(nxt, builder.block)
    builder.branch(head)
    builder.position_at_end(done)


@contextlib.contextmanager
def loop_nest(builder: ir.IRBuilder, shape: Sequence[int], prefix: str = "i",
              outer: tuple[ir.Value, ir.Value] | None = None, outer_axis: int = 0
              ) -> Iterator[list[ir.Value]]:
    """Nested counted loops over `shape` (outermost first); yields the indices. `outer`
    = (start, count) runs only that part of axis `outer_axis` (one thread's share; the
    axes before it have length 1)."""
    with contextlib.ExitStack() as stack:
        indices = []
        for k, d in enumerate(shape):
            if k == outer_axis and outer is not None:
                start, count = outer
                i = stack.enter_context(counted_loop(builder, count, f"{prefix}{k}"))
                indices.append(builder.add(start, i))
            else:
                indices.append(stack.enter_context(counted_loop(builder, d, f"{prefix}{k}")))
        yield indices


def linear_index(builder: ir.IRBuilder, indices: Sequence[ir.Value],
                 strides: Sequence[int], offset: int) -> ir.Value:
    """offset + sum(stride_k * i_k), skipping zero strides."""
    total: ir.Value = as_value(builder, offset)
    for i, s in zip(indices, strides):
        if s == 0:  # (a symbolic stride is never the int 0 or 1)
            continue
        term = i if s == 1 else builder.mul(i, as_value(builder, s))
        total = builder.add(total, term)
    return total
