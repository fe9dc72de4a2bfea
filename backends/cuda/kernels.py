"""CUDA C for every kernel kind of the kernel IR (graphc.schedule.ir.KINDS): a function
`emit_<kind>(writer, index, kernel, guard)` per kind, returning its kernels' text and
launches. Every kernel takes (slots, status): the pointer table of the call layout and the
status word."""
from __future__ import annotations

import numpy as np

from graphc.errors import index_error_message
from graphc.schedule import ir as kir
from graphc.schedule.core_ops import reduction_identity
from graphc.backends.cuda.collective import emit_all_reduce
from graphc.backends.cuda import vector
from graphc.backends.cuda.gemm import emit_gemm
from graphc.backends.cuda.loop import emit_loop
from graphc.backends.cuda.scalar import constant, ctype
from graphc.backends.cuda.source import (BLOCK, MAX_GRID, WARP, Launch, Writer, cdiv,
                                         decompose, kernel_name, size)

Emitted = tuple[list[str], list]  # its text, its Launch (and Collective) records
SHORT_ROW = 16  # rows up to this long are reduced by one thread each


def signature(name: str, min_blocks: int = 1) -> str:
    # (BLOCK threads alone let ptxas aim at full occupancy, 32 registers, and spill small
    # kernels; one block a multiprocessor leaves it the registers it needs)
    return (f'extern "C" __global__ void __launch_bounds__({BLOCK}, {min_blocks})\n'
            f"{name}(void* const* __restrict__ slots, int* __restrict__ status)")


def _head(w: Writer, k: kir.Kernel, name: str, guard: bool,
          min_blocks: int = 1) -> list[str]:
    """The kernel's first lines: its signature, its buffers; with `guard`, it does nothing
    once an earlier kernel has failed (updates wait for the checks before them)."""
    lines = [signature(name, min_blocks) + " {"]
    if guard:
        lines.append("  if (*(volatile int*)status) return;")
    return lines + w.pointers(k)


def _grid_stride(n: int, start: str = "") -> tuple[str, tuple[int, int, int]]:
    first = f"{start} + " if start else ""
    loop = (f"for (long long n = {first}(long long)blockIdx.x * blockDim.x + threadIdx.x; "
            f"n < {n}LL; n += (long long)gridDim.x * blockDim.x)")
    return loop, (max(1, min(cdiv(n, BLOCK), MAX_GRID)), 1, 1)


def _names(prefix: str, rank: int) -> list[str]:
    return [f"{prefix}{a}" for a in range(rank)]


def emit_elementwise(w: Writer, index: int, k: kir.Elementwise, guard: bool) -> Emitted:
    """A grid-stride loop over the flat iteration space, after a loop over whole vectors
    where backends/cuda/vector.py finds them; "atomic" stores add atomically; "ordered"
    ones run in one thread, in iteration order."""
    n = size(k.shape)
    if n == 0:
        return [], []
    name = kernel_name(index, k)
    lines = _head(w, k, name, guard)
    ordered = any(s.accumulate == "ordered" for s in k.stores)
    vectors = vector.plan(w, k) if n >= vector.MIN_ELEMENTS else None
    start = vector.emit_vector_loop(w, k, vectors, lines) if vectors else ""
    loop, grid = _grid_stride(n, start)
    if vectors:  # (a thread a vector; misaligned calls stride over the same grid)
        grid = _grid_stride(n // vectors.lanes)[1]
    if ordered:
        loop, grid = f"if (blockIdx.x == 0 && threadIdx.x == 0) for (long long n = 0; " \
                     f"n < {n}LL; ++n)", (1, 1, 1)
    lines.append(f"  {loop} {{")
    idx = _names("i", len(k.shape))
    decompose("n", k.shape, idx, lines, "    ")
    memo: dict[int, str] = {}
    values = [w.value(s.value, idx, lines, "    ", memo) for s in k.stores]
    for s, v in zip(k.stores, values):
        at = f"{w.at(s.access, idx)}"
        if s.accumulate == "atomic":
            lines.append(f"    gc_atomic_add(&{at}, {v});")
        elif s.accumulate == "ordered":
            lines.append(f"    {at} += {v};")
        else:
            lines.append(f"    {at} = {v};")
    lines += ["  }", "}"]
    return lines, [Launch(name, index, grid, BLOCK if not ordered else 1, False, False)]


def _combine(op: str, acc: str, v: str, float_: bool) -> str:
    if op == "sum":
        return f"{acc} + {v}" if float_ else f"gc_add({acc}, {v})"
    return f"gc_{'maximum' if op == 'max' else 'minimum'}({acc}, {v})"


def emit_reduce(w: Writer, index: int, k: kir.Reduce, guard: bool) -> Emitted:
    """One row of the kept axes per warp (short rows) or per block (long ones): each thread
    combines a strided share of the row, then warp shuffles, then (a block per row) the
    warps' partial results through shared memory."""
    kept = [a for a in range(len(k.shape)) if a not in k.axes]
    kept_shape = tuple(k.shape[a] for a in kept)
    red_shape = tuple(k.shape[a] for a in k.axes)
    rows, length = size(kept_shape), size(red_shape)
    if rows == 0:
        return [], []
    name = kernel_name(index, k)
    if length <= SHORT_ROW:
        return _reduce_rows(w, index, k, name, guard)
    per_block = length >= 4 * BLOCK  # long rows: a block per row; otherwise a warp
    threads = BLOCK if per_block else WARP
    argmax = k.op == "argmax"
    vt = ctype(k.body.dtype if argmax else k.out_dtype)
    ident = constant(k.body.dtype if argmax else k.out_dtype,
                     reduction_identity("max" if argmax else k.op,
                                        k.body.dtype if argmax else k.out_dtype))
    float_ = np.dtype(k.out_dtype).kind == "f"
    lines = _head(w, k, name, guard)
    if per_block:
        lines += [f"  __shared__ {vt} part[{BLOCK // WARP}];"]
        if argmax:
            lines += [f"  __shared__ long long part_i[{BLOCK // WARP}];"]
        lines += ["  const long long row = blockIdx.x;", "  const int lane = threadIdx.x;"]
    else:
        lines += [f"  const long long row = (long long)blockIdx.x * {BLOCK // WARP} + "
                  "threadIdx.x / 32;", "  const int lane = threadIdx.x % 32;",
                  f"  if (row >= {rows}LL) return;  // (whole warps leave together)"]
    lines += [f"  {vt} acc = {ident};"] + (["  long long acc_i = 0;"] if argmax else [])
    lines.append(f"  for (long long j = lane; j < {length}LL; j += {threads}) {{")
    names = ["" for _ in k.shape]
    kept_names = [f"o{a}" for a in kept]
    red_names = [f"r{a}" for a in k.axes]
    decompose("row", kept_shape, kept_names, lines, "    ")
    decompose("j", red_shape, red_names, lines, "    ")
    for a, nm in zip(kept, kept_names):
        names[a] = nm
    for a, nm in zip(k.axes, red_names):
        names[a] = nm
    v = w.value(k.body, names, lines, "    ", {})
    if argmax:
        lines += [f"    if (gc_argmax_better({v}, j, acc, acc_i)) {{ acc = {v}; acc_i = j; }}"]
    else:
        cast = v if np.dtype(k.body.dtype) == np.dtype(k.out_dtype) else \
            f"gc_cast<{vt}>({v})"
        lines.append(f"    acc = {_combine(k.op, 'acc', cast, float_)};")
    lines.append("  }")

    def warp_reduce(indent: str) -> list[str]:
        out = [f"{indent}for (int d = 16; d > 0; d >>= 1) {{",
               f"{indent}  const {vt} o = __shfl_down_sync(0xffffffffu, acc, d);"]
        if argmax:
            out += [f"{indent}  const long long oi = __shfl_down_sync(0xffffffffu, acc_i, d);",
                    f"{indent}  if (gc_argmax_better(o, oi, acc, acc_i)) "
                    "{ acc = o; acc_i = oi; }"]
        else:
            out.append(f"{indent}  acc = {_combine(k.op, 'acc', 'o', float_)};")
        return out + [f"{indent}}}"]

    lines += warp_reduce("  ")
    if per_block:
        lines += ["  if (lane % 32 == 0) { GC_SHARED(part[lane / 32]) = acc;"
                  + (" GC_SHARED(part_i[lane / 32]) = acc_i;" if argmax else "") + " }",
                  "  __syncthreads();",
                  "  if (lane < 32) {",
                  f"    acc = lane < {BLOCK // WARP} ? GC_SHARED(part[lane]) : {ident};"]
        if argmax:
            lines.append(f"    acc_i = lane < {BLOCK // WARP} ? GC_SHARED(part_i[lane]) : 0LL;")
        lines += warp_reduce("    ") + ["  }"]
    out_idx = [f"o{a}" if a in kept else "0" for a in range(len(k.shape))]
    lines.append("  if (lane == 0) {")
    decompose("row", kept_shape, kept_names, lines, "    ")
    result = "acc_i" if argmax else "acc"
    lines += [f"    {w.at(k.out, out_idx)} = {result};", "  }", "}"]
    grid = (rows if per_block else cdiv(rows, BLOCK // WARP), 1, 1)
    return lines, [Launch(name, index, grid, BLOCK, True, False)]


def _reduce_rows(w: Writer, index: int, k: kir.Reduce, name: str, guard: bool) -> Emitted:
    """Short rows (pooling windows, a few classes): a thread per row, in order."""
    kept = [a for a in range(len(k.shape)) if a not in k.axes]
    kept_shape = tuple(k.shape[a] for a in kept)
    red_shape = tuple(k.shape[a] for a in k.axes)
    argmax = k.op == "argmax"
    dtype = k.body.dtype if argmax else k.out_dtype
    vt = ctype(dtype)
    ident = constant(dtype, reduction_identity("max" if argmax else k.op, dtype))
    lines = _head(w, k, name, guard)
    loop, grid = _grid_stride(size(kept_shape))
    kept_names = [f"o{a}" for a in kept]
    red_names = [f"r{a}" for a in k.axes]
    names = ["" for _ in k.shape]
    for a, nm in list(zip(kept, kept_names)) + list(zip(k.axes, red_names)):
        names[a] = nm
    lines.append(f"  {loop} {{")
    decompose("n", kept_shape, kept_names, lines, "    ")
    lines += [f"    {vt} acc = {ident};"] + (["    long long acc_i = 0;"] if argmax else [])
    # (unrolled whole, double-precision bodies made ptxas spill)
    lines += ["    #pragma unroll 1", f"    for (long long j = 0; j < {size(red_shape)}LL; ++j) {{"]
    decompose("j", red_shape, red_names, lines, "      ")
    v = w.value(k.body, names, lines, "      ", {})
    if argmax:
        lines.append(f"      if (gc_argmax_better({v}, j, acc, acc_i)) "
                     f"{{ acc = {v}; acc_i = j; }}")
    else:
        cast = v if np.dtype(k.body.dtype) == np.dtype(dtype) else f"gc_cast<{vt}>({v})"
        lines.append(f"      acc = {_combine(k.op, 'acc', cast, np.dtype(dtype).kind == 'f')};")
    out_idx = [f"o{a}" if a in kept else "0" for a in range(len(k.shape))]
    lines += ["    }", f"    {w.at(k.out, out_idx)} = "
              f"{'acc_i' if argmax else 'acc'};", "  }", "}"]
    return lines, [Launch(name, index, grid, BLOCK, False, False)]


def emit_scan(w: Writer, index: int, k: kir.Scan, guard: bool) -> Emitted:
    """A thread per row, each running along its row in order (as numpy's cumsum)."""
    n = size(k.shape)
    if n == 0:
        return [], []
    name = kernel_name(index, k)
    row_shape = tuple(d for a, d in enumerate(k.shape) if a != k.axis)
    rows, length = size(row_shape), k.shape[k.axis]
    t = ctype(k.dtype)
    lines = _head(w, k, name, guard)
    loop, grid = _grid_stride(rows)
    lines.append(f"  {loop} {{")
    row_names = [f"i{a}" for a in range(len(k.shape)) if a != k.axis]
    decompose("n", row_shape, row_names, lines, "    ")
    names = list(row_names)
    names.insert(k.axis, "j")
    start = constant(k.dtype, 0 if k.op == "sum" else 1)
    lines += [f"    {t} acc = {start};"]
    lines += ["    #pragma unroll 1", f"    for (long long s = 0; s < {length}LL; ++s) {{"]
    lines.append(f"      const long long j = {f'{length - 1}LL - s' if k.reverse else 's'};")
    v = w.value(k.body, names, lines, "      ", {})
    v = v if np.dtype(k.body.dtype) == np.dtype(k.dtype) else f"gc_cast<{t}>({v})"
    float_ = np.dtype(k.dtype).kind == "f"
    if k.op == "sum":
        lines.append(f"      acc = {f'acc + {v}' if float_ else f'gc_add(acc, {v})'};")
    else:
        lines.append(f"      acc = {f'acc * {v}' if float_ else f'gc_mul(acc, {v})'};")
    lines += [f"      {w.at(k.out, names)} = acc;", "    }", "  }", "}"]
    return lines, [Launch(name, index, grid, BLOCK, False, False)]


def emit_sort(w: Writer, index: int, k: kir.Sort, guard: bool) -> Emitted:
    """The stable argsort of each row by ranks: element i of a row goes to the number of
    elements that sort before it (smaller, or equal and earlier; nan last), a thread per
    element. Needs no scratch: every output element has one writer."""
    n = size(k.shape)
    if n == 0:
        return [], []
    name = kernel_name(index, k)
    length = k.shape[k.axis]
    t = ctype(k.dtype)
    lines = _head(w, k, name, guard)
    loop, grid = _grid_stride(n)
    lines.append(f"  {loop} {{")
    idx = _names("i", len(k.shape))
    decompose("n", k.shape, idx, lines, "    ")
    other = list(idx)
    other[k.axis] = "q"
    me = idx[k.axis]
    lines += [f"    const {t} x = {w.at(k.x, idx)};",
              "    long long rank = 0;",
              f"    for (long long q = 0; q < {length}LL; ++q) {{",
              f"      const {t} y = {w.at(k.x, other)};",
              f"      rank += gc_sort_less(y, x) || (q < {me} && !gc_sort_less(x, y));",
              "    }"]
    at = list(idx)
    at[k.axis] = "rank"
    lines += [f"    {w.at(k.out, at)} = {me};", "  }", "}"]
    return lines, [Launch(name, index, grid, BLOCK, False, False)]


def _check(w: Writer, index: int, k: kir.Kernel, access: kir.Access, shape, low: str,
           high: str, guard: bool, suffix: str = "") -> tuple[list[str], Launch]:
    """A kernel that sets the status word when a value read lies outside [low, high)."""
    name = kernel_name(index, k) + suffix
    lines = _head(w, k, name, guard)
    loop, grid = _grid_stride(max(size(shape), 1))
    if size(shape) == 0:
        return lines + ["}"], Launch(name, index, grid, BLOCK, False, True)
    idx = _names("i", len(shape))
    lines.append(f"  {loop} {{")
    decompose("n", tuple(shape), idx, lines, "    ")
    lines += [f"    const long long v = (long long){w.at(access, idx)};",
              f"    if (v < {low} || v >= {high}) gc_fail(status, {index + 1});", "  }", "}"]
    return lines, Launch(name, index, grid, BLOCK, False, True)


def emit_index_check(w: Writer, index: int, k: kir.IndexCheck, guard: bool) -> Emitted:
    w.errors[index] = index_error_message(k.what, k.size, False)
    lines, launch = _check(w, index, k, k.indices, k.shape, "0LL", f"{k.size}LL", guard)
    return lines, [launch]


def emit_value_check(w: Writer, index: int, k: kir.ValueCheck, guard: bool) -> Emitted:
    w.errors[index] = k.message
    lines, launch = _check(w, index, k, k.values, k.shape, "0LL",
                           "9223372036854775807LL", guard)
    return lines, [launch]


def _moved(w: Writer, index: int, k, size_: int, out_shape, idx_shape, guard: bool,
           target: str, scatter: bool) -> tuple[list[str], Launch]:
    """Gather (out[i] = x[.., idx[i], ..]) or scatter-add (out[.., idx[i], ..] += upd[i]):
    a thread per element, skipping indices out of range (the check has failed then)."""
    name = kernel_name(index, k)
    shape = tuple(out_shape)
    lines = _head(w, k, name, guard)
    loop, grid = _grid_stride(size(shape))
    idx = _names("i", len(shape))
    q = len(idx_shape)
    lines.append(f"  {loop} {{")
    decompose("n", shape, idx, lines, "    ")
    mid = idx[k.axis:k.axis + q]
    lines += [f"    long long j = (long long){w.at(k.indices, mid)};",
              f"    if (j < -{size_}LL || j >= {size_}LL) continue;",
              f"    if (j < 0) j += {size_}LL;"]
    at = idx[:k.axis] + ["j"] + idx[k.axis + q:]
    if scatter:
        lines.append(f"    gc_atomic_add(&{w.at(k.out, at)}, "
                     f"{w.at(k.updates, idx)});")
    else:
        lines.append(f"    {w.at(k.out, idx)} = "
                     f"{w.at(k.x, at)};")
    lines += ["  }", "}"]
    return lines, Launch(name, index, grid, BLOCK, False, False)


def emit_gather(w: Writer, index: int, k: kir.Gather, guard: bool) -> Emitted:
    size_ = k.x_shape[k.axis]
    w.errors[index] = index_error_message(k.what, size_, True)
    check, first = _check(w, index, k, k.indices, k.idx_shape, f"-{size_}LL", f"{size_}LL",
                          guard, "_check")
    if size(k.out_shape) == 0:
        return check, [first]
    lines, launch = _moved(w, index, k, size_, k.out_shape, k.idx_shape, guard, "x", False)
    return check + [""] + lines, [first, launch]


def emit_scatter_add(w: Writer, index: int, k: kir.ScatterAdd, guard: bool) -> Emitted:
    """Zero the output (its own launch: every block must see zeros before any adds), check
    the indices, add the updates atomically (float sums may differ in the last bits from run
    to run: the order of the adds is the hardware's)."""
    size_ = k.out_shape[k.axis]
    w.errors[index] = index_error_message(k.what, size_, True)
    check, first = _check(w, index, k, k.indices, k.idx_shape, f"-{size_}LL", f"{size_}LL",
                          guard, "_check")
    launches = [first]
    lines = check
    if size(k.out_shape):
        name = kernel_name(index, k) + "_zero"
        loop, grid = _grid_stride(size(k.out_shape))
        idx = _names("i", len(k.out_shape))
        zero = _head(w, k, name, guard) + [f"  {loop} {{"]
        decompose("n", k.out_shape, idx, zero, "    ")
        zero += [f"    {w.at(k.out, idx)} = "
                 f"{constant(k.dtype, 0)};", "  }", "}"]
        lines += [""] + zero
        launches.append(Launch(name, index, grid, BLOCK, False, False))
        if size(k.updates_shape):
            add, launch = _moved(w, index, k, size_, k.updates_shape, k.idx_shape, guard,
                                 "out", True)
            lines += [""] + add
            launches.append(launch)
    return lines, launches




EMITTERS = {
    "elementwise": emit_elementwise, "reduce": emit_reduce, "gemm": emit_gemm,
    "gather": emit_gather, "scatter_add": emit_scatter_add, "index_check": emit_index_check,
    "value_check": emit_value_check, "scan": emit_scan, "sort": emit_sort,
    "all_reduce": emit_all_reduce, "loop": emit_loop,
}
