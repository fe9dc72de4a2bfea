"""The all_reduce kernel in native code: a call of MPI_Allreduce (resolved, like libm's
functions, from the MPI library mpi4py loaded) with handles read from a table that the
runtime fills after loading, so code in the disk cache holds no process's addresses."""
from __future__ import annotations

from typing import Any

from llvmlite import ir

from graphc.distributed.comm import HANDLE_SLOTS
from graphc.backends.llvm.collective_runtime import TABLE_SYMBOL
from graphc.backends.llvm.loops import I64
from graphc.backends.llvm.scalar import I32
from graphc.schedule import ir as kir

PTR = ir.PointerType()
# Handles are pointers in Open MPI and ints in MPICH; passed as 64-bit values in registers
# (the x86-64 calling convention), either reads correctly.
_ALLREDUCE = ir.FunctionType(I32, [PTR, PTR, I32, PTR, PTR, PTR])
# MPI_Iallreduce: the same and the MPI_Request * it fills; MPI_Wait(MPI_Request *,
# MPI_Status *). The request lives in the arena (an int64 buffer: a pointer in Open MPI, an
# int in MPICH), so a program holds no global state between its start and its wait.
_IALLREDUCE = ir.FunctionType(I32, [PTR, PTR, I32, PTR, PTR, PTR, PTR])
_WAIT = ir.FunctionType(I32, [PTR, PTR])
# MPI_Test(MPI_Request *, int *flag, MPI_Status *): progresses what is in flight; the request
# becomes MPI_REQUEST_NULL once complete, which a later test or wait returns at once.
_TEST = ir.FunctionType(I32, [PTR, PTR, PTR])


def _table(module: ir.Module) -> ir.GlobalVariable:
    """The process's table of handles, declared: the runtime defines the symbol before the
    code is loaded (kernels compiled and cached one by one all link to the one table)."""
    if TABLE_SYMBOL in module.globals:
        return module.globals[TABLE_SYMBOL]
    return ir.GlobalVariable(module, ir.ArrayType(I64, len(HANDLE_SLOTS)), TABLE_SYMBOL)


def emit_all_reduce(writer: Any, b: ir.IRBuilder, fn: ir.Function, bases: dict,
                    k: kir.AllReduce, index: int) -> None:
    if k.size == 0:
        return
    module = writer.module
    table = _table(module)

    def handle(slot: str) -> ir.Value:
        at = b.gep(table, [ir.Constant(I64, 0), ir.Constant(I64, HANDLE_SLOTS.index(slot))],
                   source_etype=table.value_type)
        return b.inttoptr(b.load(at, typ=I64), PTR)

    def declared(name: str, type_: ir.FunctionType) -> ir.Function:
        return module.globals.get(name) or ir.Function(module, type_, name)

    # MPI's default error handler ends the job on a failure: the status needs no check.
    if k.phase in ("test", "wait"):
        args = []
    else:
        args = [handle("in_place"), bases[k.buffer], ir.Constant(I32, k.size),
                handle(k.dtype.name), handle("sum"), handle("comm")]
    if k.phase == "start":
        b.call(declared("MPI_Iallreduce", _IALLREDUCE), args + [bases[k.request]])
    elif k.phase == "test":
        flag = b.alloca(I32, name="done")
        b.call(declared("MPI_Test", _TEST), [bases[k.request], flag, handle("status_ignore")])
    elif k.phase == "wait":
        b.call(declared("MPI_Wait", _WAIT), [bases[k.request], handle("status_ignore")])
    else:
        b.call(declared("MPI_Allreduce", _ALLREDUCE), args)
