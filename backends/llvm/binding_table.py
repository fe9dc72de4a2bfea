"""A symbolic plan's per-binding work, prepared once per plan: every distinct size expression
the plan holds (temporaries' and outputs' shapes, GEMM sizes and strides) numbered in one
flat table. A binding evaluates each expression once, then plans memory and GEMM blocking
with plain integers read from the table by number (a new batch size costs its arithmetic,
not a walk over the plan's expressions and objects)."""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np

from graphc import sizes
from graphc.schedule.memory import MemoryPlan, place


class BindingTable:
    def __init__(self, plan: Any) -> None:
        """`plan`: a SymbolicPlan (symbolic_plan.py)."""
        self.exprs: list[sizes.Dim] = []
        self._number: dict[sizes.Dim, int] = {}
        self.spans: dict[int, tuple[int, int]] = plan.spans
        # (buffer id, item size, its shape's numbers), in the plan's buffer order
        self.temps = [(bid, np.dtype(dtype).itemsize, self._refs(shape))
                      for bid, (shape, dtype) in plan.temps.items()]
        self.outputs = [(slot, self._refs(shape), np.dtype(dtype))
                        for slot, shape, dtype in plan.outputs]
        # per kernel: its size symbols, and its packed GEMM with the numbers of its sizes
        self.kernels = [(tuple(plan.symbols[s] for s in k.symbols),
                         None if k.gemm is None or not k.gemm.packed
                         else (k.gemm, self._refs(k.gemm.spec.flat())))
                        for k in plan.kernels]
        # the entry's table (SymbolicPlan.descriptor) with a hole for each temporary's
        # arena offset and each kernel's size vector: its shape is the same for every
        # binding (a kernel has a vector where it has symbols or a packed GEMM)
        self.desc: list[int] = []
        self.holes: list[tuple[int, int]] = []  # (position, temporary: id; vector: -1 - kernel)
        for k, (recipe, (symbols, gemm)) in enumerate(zip(plan.kernels, self.kernels)):
            more = bool(symbols) or gemm is not None
            self.desc += [len(recipe.refs) + more, int(recipe.can_fail)]
            for r in recipe.refs:
                if r < 0:
                    self.holes.append((len(self.desc), -1 - r))
                self.desc.append(r)
            if more:
                self.holes.append((len(self.desc), -1 - k))
                self.desc.append(0)

    def _refs(self, dims: Iterable[sizes.Dim]) -> tuple[int, ...]:
        out = []
        for d in dims:
            i = self._number.get(d)
            if i is None:
                i = self._number[d] = len(self.exprs)
                self.exprs.append(d)
            out.append(i)
        return tuple(out)

    def evaluate(self, values: Mapping[sizes.SizeVar, int]) -> list[int]:
        """Every expression's value for one binding, by number."""
        return [d if isinstance(d, int) else d.evaluate(values) for d in self.exprs]

    def memory(self, table: list[int]) -> MemoryPlan:
        """The binding's memory plan (SymbolicPlan.memory's, from the evaluated table)."""
        temps = []
        for bid, itemsize, refs in self.temps:
            n = itemsize
            for i in refs:
                n *= table[i]
            temps.append((bid, n))
        return place(temps, self.spans)

    def vectors(self, values: Mapping[sizes.SizeVar, int], table: list[int]
                ) -> list[list[int]]:
        """Each kernel's size values, then its GEMM descriptor (empty: none)."""
        vectors = []
        for symbols, gemm in self.kernels:
            vector = [values[v] for v in symbols]
            if gemm is not None:
                g, refs = gemm
                vector += g.descriptor_of([table[i] for i in refs])
            vectors.append(vector)
        return vectors

    def descriptor(self, offsets: Mapping[int, int], vectors: list[int]) -> list[int]:
        """SymbolicPlan.descriptor's table, from the temporaries' arena `offsets` and each
        kernel's vector's (`vectors`, by kernel)."""
        desc = list(self.desc)
        for at, what in self.holes:
            desc[at] = -1 - (offsets.get(what, 0) if what >= 0 else vectors[-1 - what])
        return desc

    def output_shapes(self, table: list[int]) -> list[tuple[int, tuple[int, ...], np.dtype]]:
        return [(slot, tuple(table[i] for i in refs), dtype)
                for slot, refs, dtype in self.outputs]
