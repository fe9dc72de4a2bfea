"""A symbolic plan's per-binding work, prepared once per plan: every distinct size expression
the plan holds (temporaries' and outputs' shapes, GEMM sizes and strides) numbered in one
flat table. A binding evaluates each expression once, then plans memory and GEMM blocking
with plain integers read from the table by number (a new batch size costs its arithmetic,
not a walk over the plan's expressions and objects).

A new batch size's binding is on the path of the user's call (fit's short last batch,
predict on one sample), so `bind` does it in one pass over lists made here: the symbols'
values by number (no dict keyed by SizeVar, whose hash is Python code), the temporaries'
neighbours in time (placement scans only those), and the kernels' vectors at fixed places at
the arena's start, the temporaries after them: the words every binding shares are written
once per arena, and a binding writes only the words its sizes change."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from graphc import sizes
from graphc.backends.llvm.int_code import Code, Writer, function_of
from graphc.backends.llvm.loop_vector import LoopTail, descriptor_length
from graphc.backends.llvm.placement_code import Placer, written_placement
from graphc.schedule.memory import ALIGN, MemoryPlan


@dataclass
class Planned:
    """One binding's numbers: the arena's bytes (the kernels' size vectors, then from
    `BindingTable.base` the temporaries), the vectors' `words` (all of them, or where
    `partial` those at WrittenWords.places only: the others are its template's), the
    entry's table, the outputs' shapes."""

    arena_bytes: int
    partial: bool
    words: np.ndarray  # int64
    desc: list[int]
    outputs: list[tuple[int, tuple[int, ...], np.dtype]]
    work: int  # the temporaries' bytes, unshared: how much the binding's calls do


class BindingTable:
    def __init__(self, plan: Any, representative: Mapping[sizes.SizeVar, int] | None = None
                 ) -> None:
        """`plan`: a SymbolicPlan (symbolic_plan.py). With a `representative` binding, the
        GEMM descriptors and the placement are written down as code (`write_code`)."""
        self.exprs: list[sizes.Dim] = []
        self._number: dict[sizes.Dim, int] = {}
        self.symbols: list[sizes.SizeVar] = list(plan.symbols)
        symbol_number = {v: i for i, v in enumerate(self.symbols)}
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
        self._placement = _Placement(self.temps, self.spans, len(plan.kernels))
        # each kernel's vector: its symbols by number, its GEMM; where it lies after the
        # arena's start (its length is the same for every binding)
        self._vectors: list[tuple[tuple[int, ...], Any, tuple[int, ...]]] = []
        self._vector_at: dict[int, int] = {}  # kernel -> bytes after the start
        at = 0
        for k, (recipe, (symbols, g)) in enumerate(zip(plan.kernels, self.kernels)):
            if not symbols and g is None:
                continue
            self._vectors.append((tuple(recipe.symbols), None if g is None else g[0],
                                  () if g is None else g[1]))
            self._vector_at[k] = at
            at += 8 * (len(symbols) + (0 if g is None else descriptor_length(g[0])))
        self.vector_bytes = at
        self.base = -(-at // ALIGN) * ALIGN  # the temporaries' first byte in the arena
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
        temp_index = {bid: i for i, (bid, _, _) in enumerate(self.temps)}
        # holes by kind: (position, temporary's index) and (position, bytes after start)
        self._temp_holes = [(at, temp_index.get(what, -1)) for at, what in self.holes
                            if what >= 0]
        self._vector_holes = [(at, self._vector_at[-1 - what]) for at, what in self.holes
                              if what < 0]
        # how each expression is evaluated: 0 an int, 1 a symbol (by number), 2 otherwise
        self._how: list[tuple[int, Any]] = [(0, d) if isinstance(d, int) else
                     (1, symbol_number[next(iter(d.atoms()))])
                     if d.is_var() and next(iter(d.atoms())) in symbol_number else (2, d)
                     for d in self.exprs]
        self._words: WrittenWords | None = None
        self._nbytes: Callable[[list[int]], list[int]] = self._placement.nbytes
        self._table: Callable[[list[int]], list[int]] | None = None
        self._symbol_number = symbol_number
        self._entry_table: Callable[[list[int]], list[int]] | None = None
        if representative is not None:
            self.write_code(representative)

    # Bindings whose placements are written: the representative's sizes times these (the
    # order of the temporaries by size changes where a weight's gradient, of fixed size,
    # meets an activation's: W1 at batch 26, 256 and 784), and every size 1 (predict on
    # one sample: W1's greedy placement took 50 of the binding's 120 us there).
    SCALES = (1.0, 2.0, 8.0, 0.125, 0.0)

    def write_code(self, representative: Mapping[sizes.SizeVar, int]) -> None:
        """Writes the kernels' vectors and the placements of the sizes around
        `representative` down as Python (int_code.py, placement_code.py): a few ms, paid
        with a compile; a new binding then runs them (the recipes where they do not hold)."""
        self._words = written_words(self.exprs, self._vectors)
        # the entry's table as one list display of the temporaries' offsets `o`
        items = [str(x) for x in self.desc]
        for at, i in self._temp_holes:
            items[at] = f"{-1 - self.base} - o[{i}]" if i >= 0 else str(-1 - self.base)
        for at, rel in self._vector_holes:
            items[at] = str(-1 - rel)
        self._entry_table = function_of("entry_table", "o",
                                        ["return [" + ", ".join(items) + "]"])
        self._nbytes = self._written_nbytes()
        self._table = self._written_table()
        for scale in self.SCALES:
            values = {v: max(1, round(n * scale)) for v, n in representative.items()}
            try:
                table = self.evaluate(values)
            except KeyError:  # (a size no input gives: nothing written)
                return
            self._placement.write(self._placement.nbytes(table))

    def _written_nbytes(self) -> Callable[[list[int]], list[int]]:
        """_Placement.nbytes as one list display (the sizes every binding shares folded)."""
        items = []
        for itemsize, refs in self._placement.shapes:
            known = itemsize
            names = []
            for i in refs:
                d = self.exprs[i]
                if isinstance(d, int):
                    known *= d
                else:
                    names.append(f"t[{i}]")
            items.append(" * ".join([str(known)] + names) if known else "0")
        return function_of("nbytes", "t", ["return [" + ", ".join(items) + "]"])

    def _written_table(self) -> Callable[[list[int]], list[int]] | None:
        """`evaluate` as one list display of the symbols' values by number `n`, or None
        where an expression cannot be written (a size no input gives, an isqrt)."""
        try:
            items = [_size_code(d, self._symbol_number) for d in self.exprs]
        except (KeyError, TypeError):
            return None
        return function_of("size_table", "n", ["return [" + ", ".join(items) + "]"])

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
        nbytes = self._placement.nbytes(table)
        offsets, arena = self._placement.place(nbytes)
        bids = self._placement.bids
        unshared = sum(-(-max(n, 1) // ALIGN) * ALIGN for n in nbytes)
        return MemoryPlan(dict(zip(bids, offsets)), self.spans, arena, unshared)

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

    def vectors_of(self, numbers: list[int], table: list[int]) -> list[int]:
        """The kernels' vectors, one after the other (the symbols' values by number)."""
        words: list[int] = []
        for symbols, g, refs in self._vectors:
            for s in symbols:
                words.append(numbers[s])
            if g is not None:
                words += g.descriptor_of([table[i] for i in refs])
        return words

    # -- everything at once, on the path of a call at new sizes ---------------------------
    def bind(self, values: Mapping[sizes.SizeVar, int]) -> Planned:
        """What `evaluate`, `memory`, `vectors`, `descriptor` and `output_shapes` give,
        with the vectors laid out after the temporaries, in one pass."""
        numbers = [values[v] for v in self.symbols]
        table: list[int] = self._table(numbers) if self._table is not None else \
            [d if how == 0 else numbers[d] if how == 1 else d.evaluate(values)
             for how, d in self._how]
        nbytes = self._nbytes(table)
        offsets, arena = self._placement.place(nbytes)
        base = self.base
        words = self._words.changes(numbers, table) if self._words is not None else None
        partial = words is not None
        if words is None:  # (no code written, or a GEMM with an empty side: it raises)
            words = np.array(self.vectors_of(numbers, table), np.int64)
            if 8 * words.size != self.vector_bytes:
                raise AssertionError("a GEMM descriptor of another length than its kernel's")
        if self._entry_table is not None:
            desc = self._entry_table(offsets)
        else:
            desc = self.desc[:]
            for at, i in self._temp_holes:
                desc[at] = -1 - base - (offsets[i] if i >= 0 else 0)
            for at, rel in self._vector_holes:
                desc[at] = -1 - rel
        outputs = [(slot, tuple([table[i] for i in refs]), dtype)
                   for slot, refs, dtype in self.outputs]
        return Planned(max(base + arena, 8), partial, words, desc, outputs, sum(nbytes))

    def full_words(self, planned: Planned) -> np.ndarray:
        """All the vectors' words of a binding (its `words` where they are all)."""
        if not planned.partial or self._words is None:
            return planned.words
        words = self._words.template.copy()
        words[self._words.places] = planned.words
        return words


def _size_code(d: "sizes.Dim | sizes.Atom", number: Mapping[sizes.SizeVar, int]) -> str:
    """A size as Python over the symbols' values `n[k]` (each atom parenthesized: `*` and
    `//` bind alike). KeyError: a symbol not numbered; TypeError: an atom not written."""
    if isinstance(d, int):
        return f"({d})"
    if isinstance(d, sizes.SizeVar):
        return f"n[{number[d]}]"
    if isinstance(d, sizes.SizeFunc):
        args = [_size_code(a, number) for a in d.args]
        if d.kind == "floordiv":
            return f"({args[0]} // {args[1]})"
        if d.kind in ("min", "max"):
            return f"{d.kind}({', '.join(args)})"
        raise TypeError(f"no code for {d.kind}")
    terms = [" * ".join([f"({coeff})"] + [_size_code(a, number) for a in mono])
             for mono, coeff in d.terms]
    return "(" + " + ".join(terms) + ")" if terms else "0"


class _Placement:
    """schedule.memory.place for one plan's temporaries, from their byte sizes alone: the
    same greedy placement (largest first, then by first use; each at the lowest offset
    free of the temporaries placed so far that live at the same time), scanning only the
    temporaries whose lifetimes meet its own (found once here)."""

    def __init__(self, temps: list[tuple[int, int, tuple[int, ...]]],
                 spans: Mapping[int, tuple[int, int]], kernels: int) -> None:
        self.bids = [bid for bid, _, _ in temps]
        self.shapes = [(itemsize, refs) for _, itemsize, refs in temps]
        first = [spans[bid][0] for bid in self.bids]
        last = [spans[bid][1] for bid in self.bids]
        n = len(self.bids)
        self.neighbours = [tuple(j for j in range(n) if j != i and last[j] >= first[i]
                                 and first[j] <= last[i]) for i in range(n)]
        # the sort key (-bytes, first use) as one int: bytes * K - ... with K > any kernel
        self.first = first
        self.width = kernels + 1
        self.written: list[Placer] = []  # each holds for the sizes its guards accept

    def nbytes(self, table: list[int]) -> list[int]:
        out = []
        for itemsize, refs in self.shapes:
            n = itemsize
            for i in refs:
                n *= table[i]
            out.append(n)
        return out

    def place(self, nbytes: list[int]) -> tuple[list[int], int]:
        """Each temporary's offset (in the plan's buffer order) and the arena's bytes."""
        for written in self.written:
            placed = written(nbytes)
            if placed is not None:
                return placed
        return self.greedy(nbytes)

    def write(self, nbytes: list[int]) -> None:
        """Writes the placement down from these sizes' (placement_code.py), unless one
        written already holds for them."""
        if any(written(nbytes) is not None for written in self.written):
            return
        written = written_placement(nbytes, self.neighbours, self.first, self.width)
        if written is not None:
            self.written.append(written)

    def greedy(self, nbytes: list[int]) -> tuple[list[int], int]:
        """`place`, the slow way."""
        width, first = self.width, self.first
        keys = [first[i] - n * width for i, n in enumerate(nbytes)]
        order = sorted(range(len(nbytes)), key=keys.__getitem__)  # (stable, as place's)
        offsets = [0] * len(nbytes)
        ends = [-1] * len(nbytes)  # -1: not placed yet
        arena = 0
        neighbours = self.neighbours
        for i in order:
            n = nbytes[i]
            size = -(-n // ALIGN) * ALIGN if n > 0 else ALIGN
            busy = sorted([(offsets[j], ends[j]) for j in neighbours[i] if ends[j] >= 0])
            offset = 0
            for o, e in busy:
                if offset + size <= o:
                    break
                if e > offset:
                    offset = e
            offsets[i] = offset
            end = ends[i] = offset + size
            if end > arena:
                arena = end
        return offsets, arena


class WrittenWords:
    """The kernels' vectors (`BindingTable.vectors_of`) for any binding: the words every
    binding shares in `template`, the others computed by one generated function of the
    symbols' values and the table (int_code.py; it gives None where a GEMM has an empty
    side, which the recipe refuses) and put at `places`."""

    def __init__(self, template: np.ndarray, places: np.ndarray,
                 compute: Callable[[list[int], list[int]], list[int] | None],
                 which: np.ndarray) -> None:
        self.template, self.places, self.compute = template, places, compute
        self.which = which  # the computed value each place takes

    def __call__(self, numbers: list[int], table: list[int]) -> np.ndarray | None:
        changes = self.changes(numbers, table)
        if changes is None:
            return None
        words = self.template.copy()
        words[self.places] = changes
        return words

    def changes(self, numbers: list[int], table: list[int]) -> np.ndarray | None:
        """The words at `places` (the template holds the others)."""
        computed = self.compute(numbers, table)
        if computed is None:
            return None
        return np.array(computed, np.int64)[self.which]


# Larger recipes are not written: writing costs ~0.1 ms a kernel and a compile of a deep
# model should not grow for it (W1's step has 25 kernels with vectors, W5's 37, an 8-layer
# MLP step's 61; a 32-layer one's 205 took 22 ms to write, 2-5 % of its compile).
MAX_WRITTEN_VECTORS = 64
MAX_WRITTEN_LINES = 4000


def written_words(exprs: list[sizes.Dim], vectors: list[tuple[tuple[int, ...], Any, tuple]]
                  ) -> WrittenWords | None:
    """WrittenWords for these kernels' vectors, or None where the recipe cannot be
    written down (it decides something on a size)."""
    if len(vectors) > MAX_WRITTEN_VECTORS or any(isinstance(g, LoopTail)
                                                  for _, g, _ in vectors):
        return None  # (a loop's vector: its parts' recipes run)
    writer = Writer()
    table = [d if isinstance(d, int) else writer.value(f"t[{i}]")
             for i, d in enumerate(exprs)]
    head: list[str] = []
    out: list[Any] = []
    written: dict[tuple, list[Any]] = {}
    try:
        for symbols, g, refs in vectors:
            out += [writer.value(f"n[{s}]") for s in symbols]
            if g is None:
                continue
            values = [table[i] for i in refs]
            nb = len(g.spec.batch)
            for i in refs[nb:nb + 3]:  # (m, n, k: descriptor_of refuses an empty side)
                check = f"if t[{i}] == 0: return None"
                if isinstance(table[i], Code):
                    if check not in head:
                        head.append(check)
                elif table[i] == 0:
                    return None
            # (GEMMs of one template and the same sizes share their lines: 96 layers)
            key = (g._template, tuple(x.name if isinstance(x, Code) else x for x in values))
            desc = written.get(key)
            if desc is None:
                desc = written[key] = g._recipe(values).desc
            out += desc
        places = [at for at, x in enumerate(out) if isinstance(x, Code)]
        # each distinct value computed once (a deep MLP's layers share theirs), then spread
        distinct: dict[str, int] = {}
        which = [distinct.setdefault(out[at].name, len(distinct)) for at in places]
        if len(writer.lines) > MAX_WRITTEN_LINES:
            return None
        compute = writer.function("binding_words", "n, t", head,
                                  [Code(writer, name) for name in distinct])
    except TypeError:  # (a decision the recipe makes on a size: the recipe runs each time)
        return None
    template = np.array([0 if isinstance(x, Code) else x for x in out], np.int64)
    return WrittenWords(template, np.array(places, np.intp), compute,
                        np.array(which, np.intp))
