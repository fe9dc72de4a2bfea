"""The dot-product GEMM (gemm_dot.py) for an implicit B whose depth rows are half a vector
past whole vectors (rows of 8 or 24 float32 elements: LeNet's convolutions' output rows),
read two rows at a time so that every lane of every vector is used.

Row by row, the last vector of a row of 24 is half empty (3/4 of the lanes used) and a row
of 8 is one half-empty vector; two rows are 2*run elements, a whole number of vectors. A
(the output gradient) is contiguous along the depth, so a pair is plain loads; B's two rows
lie apart (their offsets come from the row table), so the vector that straddles them is two
half-vector loads joined (the first row's last half, the second row's first half): two
masked loads merged measured slower (W5's conv2 weight gradient, rows of 8: 0.245 ms
against 0.174)."""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from llvmlite import ir

from graphc.backends.llvm.loops import counted_loop

if TYPE_CHECKING:
    from graphc.backends.llvm.gemm_dot import DotGemm

I64 = ir.IntType(64)
I32 = ir.IntType(32)
PTR = ir.PointerType()
VOID = ir.VoidType()

MAX_WHOLE = 3  # whole vectors per row at most (longer rows waste few lanes unpaired)


def paired(run: int, rows: int, lanes: int) -> bool:
    """Whether rows of `run` elements (`rows` of them) are read two at a time: each row is
    whole vectors and half of one, and the rows pair up."""
    return (run % lanes == lanes // 2 and run // lanes <= MAX_WHOLE
            and rows >= 2 and rows % 2 == 0)


def columns_per_block(n: int) -> int:
    """B's columns per register block: 4 or 5, whichever leaves fewer computed past n (5
    on a tie: fewer loads per multiply-add). 4 rows of A by 5 columns of B are 20
    accumulators and 9 loaded vectors of the 32 registers. W5's first weight gradient,
    n = 25: 0.118-0.127 ms with blocks of 4 (28 columns), 0.103-0.106 with 5."""
    return min((4, 5), key=lambda rj: (-(-n // rj) * rj, -rj))


def _c(v: int) -> ir.Constant:
    return ir.Constant(I64, v)


def part_pairs(dot: DotGemm, run: int) -> ir.Function:
    """part(args, t, nt) of gemm_dot for rows of `run` (a constant: the row's vectors are
    unrolled), the threads sharing out pairs of rows; the same arguments and partial
    products as DotGemm._part_rows."""
    name = f"{dot.prefix}_part_pairs{run}x{columns_per_block(dot.s.n)}"
    existing = dot.module.globals.get(name)
    if existing is not None:
        return existing
    from graphc.backends.llvm.gemm_dot import RI  # (gemm_dot imports this module)
    RJ = columns_per_block(dot.s.n)
    et, vt, vl = dot.et, dot.vt, dot.vl
    half, whole = vl // 2, run // vl
    fn = ir.Function(dot.module, ir.FunctionType(VOID, [PTR, I64, I64]), name)
    fn.linkage = "internal"
    fn.attributes.add("noinline")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    args, t, nt = fn.args
    acc_slot = b.alloca(vt, size=RI * RJ)  # promoted to registers (constant indices)
    a_base, b_base, partials, desc, row_off, col_off = [
        b.load(b.gep(args, [_c(i)], source_etype=PTR), typ=PTR) for i in range(6)]
    d = dot._fields(b, desc)
    m, n = d["m"], d["n"]
    partial = dot.zero_partials(b, d, partials, t, nt)
    pairs = b.sdiv(d["rows"], _c(2))
    lo = b.sdiv(b.mul(t, pairs), nt)
    hi = b.sdiv(b.mul(b.add(t, _c(1)), pairs), nt)
    chunk = b.sdiv(d["chunk_rows"], _c(2))
    chunk = b.select(b.icmp_signed("<", chunk, _c(1)), _c(1), chunk)
    zero_v = ir.Constant(vt, None)
    col_blocks = b.sdiv(b.add(n, _c(RJ - 1)), _c(RJ))
    row_blocks = b.sdiv(b.add(m, _c(RI - 1)), _c(RI))
    accumulate = functools.partial(dot.accumulate, b, dot.fma(), acc_slot, ri=RI, rj=RJ)

    def load(ptr: ir.Value, at: int) -> ir.Value:
        return dot._load_vec(b, ptr, _c(at))

    half_t = ir.VectorType(et, half)
    both = ir.Constant(ir.VectorType(I32, vl), list(range(vl)))

    def straddle(first: ir.Value, second: ir.Value) -> ir.Value:
        """first[whole*vl:run] in the lower lanes, second[:half] in the upper ones: two
        half-vector loads joined (one insert), not two masked loads merged."""
        lower = b.load(b.gep(first, [_c(whole * vl)], source_etype=et), typ=half_t, align=4)
        upper = b.load(second, typ=half_t, align=4)
        return b.shuffle_vector(lower, upper, both)

    def pairs_chunk(p0: ir.Value, count: ir.Value, b_img: ir.Value, tab: ir.Value) -> None:
        with counted_loop(b, col_blocks, "jb") as jb:
            cols = [dot._clamped(b, b.add(b.mul(jb, _c(RJ)), _c(c)), n) for c in range(RJ)]
            b_cols = [b.gep(b_img, [b.load(b.gep(col_off, [j], source_etype=I64), typ=I64)],
                            source_etype=et) for j in cols]
            with counted_loop(b, row_blocks, "ib") as ib:
                rows_i = [dot._clamped(b, b.add(b.mul(ib, _c(RI)), _c(r)), m)
                          for r in range(RI)]
                a_rows = [b.gep(a_base, [b.mul(i, d["a_s0"])], source_etype=et)
                          for i in rows_i]
                for q in range(RI * RJ):
                    b.store(zero_v, b.gep(acc_slot, [_c(q)], source_etype=vt))
                with counted_loop(b, count, "pp") as pp:
                    row = b.mul(b.add(p0, pp), _c(2))
                    here = b.mul(pp, _c(2))  # (the pair's first row in the chunk's table)
                    at0 = b.load(b.gep(tab, [here], source_etype=I64), typ=I64)
                    at1 = b.load(b.gep(tab, [b.add(here, _c(1))], source_etype=I64),
                                 typ=I64)
                    a_here = [b.gep(p, [b.mul(row, _c(run))], source_etype=et)
                              for p in a_rows]  # (A: the pair's 2*run elements in a row)
                    first = [b.gep(p, [at0], source_etype=et) for p in b_cols]
                    second = [b.gep(p, [at1], source_etype=et) for p in b_cols]
                    for v in range(whole):
                        accumulate([load(p, v * vl) for p in a_here],
                                   [load(p, v * vl) for p in first])
                    accumulate([load(p, whole * vl) for p in a_here],
                               [straddle(f, s) for f, s in zip(first, second)])
                    for v in range(whole):
                        accumulate([load(p, run + half + v * vl) for p in a_here],
                                   [load(p, half + v * vl) for p in second])
                dot._add_tile(b, acc_slot, ib, jb, m, n, partial, vt, et, RI, RJ)
    dot.image_chunks(b, d, lo, hi, chunk, b.sdiv(d["image_rows"], _c(2)), b_base, row_off,
                     pairs_chunk, unit=2)
    b.ret_void()
    return fn
