"""Vector constants written compactly. llvmlite spells a vector constant lane by lane (a
splat's placeholder and zero mask are ~400 characters at 16 lanes, and W6's kernels have
hundreds of splats): formatting them is a good part of writing IR in Python, and LLVM
parses every character. These spell the same values in a few characters."""
from __future__ import annotations

from llvmlite import ir

I32 = ir.IntType(32)


class _Spelled(ir.Constant):
    """A constant with its lanes (llvmlite checks a shuffle mask's) and a short spelling."""

    def __init__(self, typ: ir.Type, lanes: list | None, text: str) -> None:
        super().__init__(typ, lanes)
        self._text = text

    def _get_reference(self) -> str:
        return self._text


def _zero_mask(lanes: int) -> ir.Constant:
    return _Spelled(ir.VectorType(I32, lanes), [ir.Constant(I32, 0)] * lanes,
                    "zeroinitializer")


def splat(b: ir.IRBuilder, x: ir.Value, vt: ir.VectorType) -> ir.Value:
    """`x` in every lane of a `vt` (insertelement into poison, then a zero shuffle)."""
    placeholder = _Spelled(vt, None, "poison")
    one = b.insert_element(placeholder, x, ir.Constant(I32, 0))
    return b.shuffle_vector(one, placeholder, _zero_mask(vt.count))
