"""IR-building helpers: counted loops and loop nests with i64 induction variables."""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

from llvmlite import ir
from llvmlite.ir import values

from graphc.backends.llvm.size_values import as_value

I64 = ir.IntType(64)


class _LoopID(values.MDValue):
    """A loop's self-referential `!llvm.loop` node: compared and hashed by identity (its
    operands hold itself)."""

    def __eq__(self, other: object) -> bool:
        return self is other

    def __ne__(self, other: object) -> bool:
        return self is not other

    def __hash__(self) -> int:
        return id(self)


def no_unroll(module: ir.Module) -> values.MDValue:
    """A new loop ID that asks LLVM not to unroll its loop (one per loop: passes that
    rewrite a loop's ID must not see two loops share one)."""
    option = module.add_metadata([ir.MetaDataString(module, "llvm.loop.unroll.disable")])
    loop_id = _LoopID(module, [], name=str(len(module.metadata)))
    loop_id.operands = (loop_id, option)
    return loop_id


@contextlib.contextmanager
def counted_loop(builder: ir.IRBuilder, count: ir.Value | int, name: str = "i",
                 unroll: bool = True) -> Iterator[ir.Value]:
    """for (i = 0; i < count; ++i) { body }: yields i; the builder ends after the loop.
    unroll=False marks the loop so that LLVM never unrolls it."""
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
    back = builder.branch(head)
    if not unroll:
        back.set_metadata("llvm.loop", no_unroll(builder.module))
    builder.position_at_end(done)


@contextlib.contextmanager
def loop_nest(builder: ir.IRBuilder, shape: Sequence[int], prefix: str = "i",
              outer: tuple[ir.Value, ir.Value] | None = None, outer_axis: int = 0,
              unroll_outer: bool = True) -> Iterator[list[ir.Value]]:
    """Nested counted loops over `shape` (outermost first); yields the indices. `outer`
    = (start, count) runs only that part of axis `outer_axis` (one thread's share; the
    axes before it have length 1). unroll_outer=False: LLVM may unroll the innermost loop
    only."""
    with contextlib.ExitStack() as stack:
        indices = []
        for k, d in enumerate(shape):
            unroll = unroll_outer or k == len(shape) - 1
            if k == outer_axis and outer is not None:
                start, count = outer
                i = stack.enter_context(counted_loop(builder, count, f"{prefix}{k}", unroll))
                indices.append(builder.add(start, i))
            else:
                indices.append(stack.enter_context(
                    counted_loop(builder, d, f"{prefix}{k}", unroll)))
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
