"""A Loop kernel's vector with symbolic sizes: its own symbols' values (the slices' strides
and the body's arena offsets are computed from them), then, for each body kernel that reads
sizes, that kernel's whole vector (its symbols' values, then its packed GEMM's blocking or a
nested loop's vector), one after the other. The runtime writes it per binding, as any
kernel's vector (binding_table.py, as a GEMM descriptor is written); the loop's code hands
each body kernel a pointer into it, so a step costs no work on sizes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from graphc import sizes
from graphc.backends.llvm.gemm_kernels import FIELDS
from graphc.schedule import ir as kir


def descriptor_length(g: Any) -> int:
    """The words a kernel's vector holds after its symbols' values: a packed GEMM's
    blocking (gemm_kernels.FIELDS, then four words an item axis) or a loop's parts."""
    if isinstance(g, LoopTail):
        return g.words
    return len(FIELDS) + 4 * len(g.spec.batch)


@dataclass(frozen=True)
class _Flat:
    """What binding_table reads of a GEMM's spec: the sizes its descriptor is made from."""

    dims: tuple[sizes.Dim, ...]
    batch: tuple = ()

    def flat(self) -> tuple[sizes.Dim, ...]:
        return self.dims


class LoopTail:
    """The words of a symbolic loop's vector after its own symbols' values (what a packed
    GEMM's descriptor is to a GEMM's vector): per body kernel with sizes (`parts`: its
    symbols, and its RuntimeGemm, nested LoopTail or None), their values, then its own
    tail. `at`: each such body kernel's vector, in words after the loop vector's start."""

    packed = True  # (binding_table: a kernel whose vector has words after its symbols)

    def __init__(self, own: int, parts: Sequence[tuple[int, tuple[sizes.SizeVar, ...], Any]]
                 ) -> None:
        self.own = own
        self.parts = list(parts)  # (body kernel, its symbols, its tail or None)
        flat: list[sizes.Dim] = []
        self.at: dict[int, int] = {}
        words = 0
        for j, symbols, g in self.parts:
            self.at[j] = own + words
            flat += [sizes.Size.of(v) for v in symbols]
            words += len(symbols)
            if g is not None:
                flat += list(g.spec.flat())
                words += descriptor_length(g)
        self.words = words
        self.spec = _Flat(tuple(flat))

    @staticmethod
    def of(k: kir.Loop, own: int, representative: Mapping[sizes.SizeVar, int]) -> "LoopTail":
        """`k`'s tail (`own`: how many symbols the loop's vector starts with); GEMMs packed
        or not as emit_gemm decides at `representative`, as the body's code was written."""
        from graphc.backends.llvm import codegen, gemm
        with sizes.representative(representative):
            body_plan = codegen.plan_units(k.body)
        parts = []
        for j, kernel in enumerate(k.body.kernels):
            symbols = body_plan.symbols[j]
            if not symbols:
                continue
            g: Any = None
            if isinstance(kernel, kir.Gemm):
                g = gemm.RuntimeGemm(kernel, representative)
                g = g if g.packed else None
            elif isinstance(kernel, kir.Loop):
                g = LoopTail.of(kernel, len(symbols), representative)
            parts.append((j, tuple(symbols), g))
        return LoopTail(own, parts)

    def descriptor_of(self, values: Sequence[int]) -> list[int]:
        """The tail's words for the values of `spec.flat()`."""
        out: list[int] = []
        at = 0
        for _, symbols, g in self.parts:
            out += [int(x) for x in values[at:at + len(symbols)]]
            at += len(symbols)
            if g is not None:
                n = len(g.spec.flat())
                out += g.descriptor_of(values[at:at + n])
                at += n
        return out


__all__ = ["LoopTail", "descriptor_length"]
