"""Constant tables in a module: a GEMM's descriptor, a kernel's offsets by row or item."""
from __future__ import annotations

from typing import Sequence

from llvmlite import ir

I64 = ir.IntType(64)


def constant_table(module: ir.Module, name: str, values: Sequence[int]) -> ir.GlobalVariable:
    """An internal constant array of i64 `values` named `name`."""
    t = ir.ArrayType(I64, len(values))
    glob = ir.GlobalVariable(module, t, name)
    glob.linkage = "internal"
    glob.global_constant = True
    glob.initializer = ir.Constant(t, [ir.Constant(I64, v) for v in values])
    return glob
