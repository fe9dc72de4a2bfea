"""A square block of vectors transposed in log2(lanes) rounds (row r's lane p becomes row
p's lane r): in the round of bit d, rows i and i + d (i's bit d clear) swap the lanes
whose bit d differs from their row's. Each round is a loop over the pairs of rows through
a stack block of the vectors, the first reading the rows and the last writing them where
the caller says: as fast as the rounds unrolled in registers (both wait on the one shuffle
port) in an eighth of the IR (unrolled, a 16 x 16 block's 64 shuffles cost W6's cold
start ~0.025 s of LLVM). Used where a kernel turns vectors along one axis into vectors
along another: gemm_bcast.py (A's chunk, pixel-major) and conv_channels.py (the output's
channels to its rows of pixels)."""
from __future__ import annotations

from typing import Callable

from llvmlite import ir

from graphc.backends.llvm.loops import counted_loop

I32, I64 = ir.IntType(32), ir.IntType(64)


def _c(v: int) -> ir.Constant:
    return ir.Constant(I64, v)


def emit_transpose(b: ir.IRBuilder, vt: ir.VectorType, block: ir.Value,
                   read: Callable[[ir.Value], ir.Value],
                   write: Callable[[ir.Value, ir.Value], None]) -> None:
    """Transposes the vt.count rows read(i) (i an i64 value, 0 .. lanes - 1) and hands
    each row of the result to write(i, row); `block`: stack room for vt.count vectors
    (allocated at the function's entry, so that loops do not grow the stack)."""
    vl = vt.count
    i32v = ir.VectorType(I32, vl)
    d = 1
    while d < vl:
        low = ir.Constant(i32v, [j if not j & d else vl + j - d for j in range(vl)])
        high = ir.Constant(i32v, [j + d if not j & d else vl + j for j in range(vl)])
        with counted_loop(b, _c(vl // 2), f"t{d}", unroll=False) as q:
            i = b.add(b.mul(b.sdiv(q, _c(d)), _c(2 * d)), b.srem(q, _c(d)))
            j = b.add(i, _c(d))
            if d == 1:
                x, y = read(i), read(j)
            else:
                x = b.load(b.gep(block, [i], source_etype=vt), typ=vt)
                y = b.load(b.gep(block, [j], source_etype=vt), typ=vt)
            lo, hi = b.shuffle_vector(x, y, low), b.shuffle_vector(x, y, high)
            if 2 * d < vl:
                b.store(lo, b.gep(block, [i], source_etype=vt))
                b.store(hi, b.gep(block, [j], source_etype=vt))
            else:
                write(i, lo)
                write(j, hi)
        d *= 2
