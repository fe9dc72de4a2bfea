"""GEMM kernels: out[b, i, j] = sum_p a[b, i, p] * c[b, p, j] over any strides.
This first version is a plain loop nest with the j loop innermost (contiguous in the output,
so LLVM vectorizes it) and FMA contraction; blocking and packing come next."""
from __future__ import annotations

import numpy as np
from llvmlite import ir

from graphc.backends.llvm.loops import counted_loop, loop_nest
from graphc.backends.llvm.scalar import constant
from graphc.schedule import ir as kir


def emit_gemm(writer, b: ir.IRBuilder, fn: ir.Function, bases: dict, k: kir.Gemm) -> None:
    is_float = np.dtype(k.dtype).kind == "f"
    zero = constant(k.dtype, 0)
    with loop_nest(b, k.batch + (k.m, k.n), "z") as zx:
        writer.store(b, bases, k.out, zx, zero)
    if k.k == 0:
        return
    with loop_nest(b, k.batch, "b") as bx:
        with counted_loop(b, k.m, "i") as i:
            with counted_loop(b, k.k, "p") as p:
                a_ip = writer.load(b, bases, k.a, bx + [i, p])
                with counted_loop(b, k.n, "j") as j:
                    acc = writer.load(b, bases, k.out, bx + [i, j])
                    c_pj = writer.load(b, bases, k.b, bx + [p, j])
                    if is_float:
                        prod = b.fmul(a_ip, c_pj)
                        prod.flags.append("contract")
                        total = b.fadd(acc, prod)
                        total.flags.append("contract")
                    else:
                        total = b.add(acc, b.mul(a_ip, c_pj))
                    writer.store(b, bases, k.out, bx + [i, j], total)
