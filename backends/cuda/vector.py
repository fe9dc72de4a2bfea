"""128-bit loads and stores for fused elementwise kernels: each thread of a grid-stride
loop takes a vector of consecutive elements (float4, double2, ...), loads the contiguous
operands whole, computes the body once per lane and stores whole vectors. Used where the
vectors stay inside rows (the last axis a multiple of the lanes) or where every access is
the flat iteration index itself (then a scalar tail finishes); the pointers' alignment is
checked at run time, and a misaligned call takes the scalar loop."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from graphc.schedule import ir as kir
from graphc.backends.cuda.scalar import ctype
from graphc.backends.cuda.source import Writer, address, decompose, size

VECTOR_BYTES = 16
# Smaller kernels are latency-bound: a vector loop would only double their code.
MIN_ELEMENTS = 4096
_VECTOR_TYPES = {("float", 4): "float4", ("float", 2): "float2", ("double", 2): "double2",
                 ("int", 4): "int4", ("int", 2): "int2", ("long long", 2): "longlong2"}
_COMPONENTS = "xyzw"


def vector_type(dtype: np.dtype, lanes: int) -> str | None:
    """The CUDA vector type of `lanes` elements of `dtype`, or None."""
    return _VECTOR_TYPES.get((ctype(dtype), lanes))


@dataclass(frozen=True)
class VectorPlan:
    """How a kernel is vectorized: `lanes` elements a thread; `flat`: its accesses are the
    flat index (one axis, with a tail), else vectors run along the last axis; the loads read
    whole (`vector`) or once for all lanes (`uniform`)."""

    lanes: int
    flat: bool
    vector: tuple[kir.Load, ...]
    uniform: tuple[kir.Load, ...]
    stores: tuple[bool, ...]  # per store: written whole


def _aligned(w: Writer, access: kir.Access, lanes: int, flat: bool) -> bool:
    """Whether an access's lane-0 element starts a vector (given an aligned buffer)."""
    if vector_type(w.dtype(access.buffer), lanes) is None or access.offset % lanes:
        return False
    return flat or (access.strides[-1] == 1 and all(s % lanes == 0 for s in access.strides[:-1]))


def _flat(access: kir.Access, shape: kir.Shape) -> str:
    """'flat' where the access reads the flat iteration index, 'uniform' where one element
    for all, else ''."""
    kept = [(s, c) for s, c, d in zip(access.strides, kir.contiguous_strides(shape), shape)
            if d > 1]
    if all(s == c for s, c in kept):
        return "flat"
    return "uniform" if all(s == 0 for s, _ in kept) else ""


def plan(w: Writer, k: kir.Elementwise) -> VectorPlan | None:
    """The vector plan of an elementwise kernel, or None where no access would be whole."""
    if not k.shape or any(s.accumulate for s in k.stores):
        return None
    itemsizes = {w.dtype(s.access.buffer).itemsize for s in k.stores}
    if len(itemsizes) != 1 or itemsizes & {1}:
        return None
    lanes = VECTOR_BYTES // itemsizes.pop()
    loads = [x for b in k.bodies() for x in kir.postorder(w.lowered(b))
             if isinstance(x, kir.Load)]
    rows = k.shape[-1] % lanes == 0
    flat = not rows and size(k.shape) >= lanes and all(
        _flat(s.access, k.shape) == "flat" for s in k.stores) and all(
        x.guard is None and _flat(x.access, k.shape) for x in loads) and not any(
        isinstance(x, kir.Index) for b in k.bodies() for x in kir.postorder(w.lowered(b)))
    if not rows and not flat:
        return None
    vector, uniform = [], []
    for x in loads:
        if x.guard is not None:
            continue
        if (_flat(x.access, k.shape) == "uniform") if flat else x.access.strides[-1] == 0:
            uniform.append(x)
        elif (not flat or _flat(x.access, k.shape) == "flat") and _aligned(
                w, x.access, lanes, flat):
            vector.append(x)
    stores = tuple(_aligned(w, s.access, lanes, flat) for s in k.stores)
    if not flat and not vector and not any(stores):
        return None
    return VectorPlan(lanes, flat, tuple(vector), tuple(uniform), stores)


def _vector_ref(w: Writer, access: kir.Access, at: str, lanes: int) -> str:
    vt = vector_type(w.dtype(access.buffer), lanes)
    n = w.schedule.buffers[access.buffer].size
    return f"GC_GLOBAL((({vt}*)b{access.buffer})[GC_IX(({at}) / {lanes}, {n // lanes})])"


def emit_vector_loop(w: Writer, k: kir.Elementwise, p: VectorPlan, lines: list[str]) -> str:
    """Lines of the vector loop (taken when the pointers are aligned); returns the first
    flat index the scalar loop after it starts from."""
    n = size(k.shape)
    nvec = n // p.lanes
    buffers = sorted({x.access.buffer for x in p.vector} | {
        s.access.buffer for s, whole in zip(k.stores, p.stores) if whole})
    test = " | ".join(f"(unsigned long long)b{b}" for b in buffers) or "0ULL"
    lines += [f"  const bool whole = (({test}) % {VECTOR_BYTES}ULL) == 0;",
              "  if (whole) {",
              f"    for (long long v = (long long)blockIdx.x * blockDim.x + threadIdx.x; "
              f"v < {nvec}LL; v += (long long)gridDim.x * blockDim.x) {{",
              f"      const long long n = v * {p.lanes};"]
    ind = "      "
    shape = (n,) if p.flat else k.shape
    idx = [f"i{a}" for a in range(len(shape))]
    decompose("n", shape, idx, lines, ind)

    def at(access: kir.Access) -> str:
        return f"{access.offset}LL + n" if p.flat else address(access, idx)

    def lane_idx(c: int) -> list[str]:
        return idx[:-1] + [f"({idx[-1]} + {c})" if c else idx[-1]]

    memos: list[dict[int, str]] = [{} for _ in range(p.lanes)]
    loaded: dict[kir.Access, str] = {}  # (sibling stores' bodies may load one access twice)
    for x in p.vector:
        name = loaded.get(x.access, "")
        if not name:
            name = loaded[x.access] = w.fresh()
            vt = vector_type(w.dtype(x.access.buffer), p.lanes)
            lines.append(f"{ind}const {vt} {name} = "
                         f"{_vector_ref(w, x.access, at(x.access), p.lanes)};")
        for c, memo in enumerate(memos):
            memo[id(x)] = f"{name}.{_COMPONENTS[c]}"
    for x in p.uniform:
        name = w.fresh()
        where = f"{x.access.offset}LL" if p.flat else address(x.access, idx)
        lines.append(f"{ind}const {ctype(x.dtype)} {name} = {w.ref(x.access.buffer, where)};")
        for memo in memos:
            memo[id(x)] = name
    if p.flat:  # every other load reads the flat index: lane c reads element n + c
        for x in {id(x): x for b in k.bodies() for x in kir.postorder(w.lowered(b))
                  if isinstance(x, kir.Load)}.values():
            for c, memo in enumerate(memos):
                memo.setdefault(id(x), w.ref(x.access.buffer,
                                             f"{x.access.offset}LL + n + {c}"))
    values = [[w.value(s.value, lane_idx(c), lines, ind, memos[c]) for s in k.stores]
              for c in range(p.lanes)]
    for j, (s, whole) in enumerate(zip(k.stores, p.stores)):
        if whole:
            vt = vector_type(w.dtype(s.access.buffer), p.lanes)
            parts = ", ".join(values[c][j] for c in range(p.lanes))
            lines.append(f"{ind}{_vector_ref(w, s.access, at(s.access), p.lanes)} = "
                         f"{vt}{{{parts}}};")
            continue
        for c in range(p.lanes):
            where = f"{s.access.offset}LL + n + {c}" if p.flat else address(s.access,
                                                                            lane_idx(c))
            lines.append(f"{ind}{w.ref(s.access.buffer, where)} = {values[c][j]};")
    lines += ["    }", "  }"]
    return f"(whole ? {nvec * p.lanes}LL : 0LL)"
