"""Installs the operators and numpy-like methods on Tensor (kept apart to avoid a cycle)."""
from __future__ import annotations

from typing import Any

from graphc.frontends import functions as F
from graphc.frontends.indexing import getitem
from graphc.frontends.tensor import Tensor


def _swap(fn):
    return lambda self, other: fn(other, self)


_OPERATORS = {
    "__add__": F.add, "__radd__": _swap(F.add),
    "__sub__": F.subtract, "__rsub__": _swap(F.subtract),
    "__mul__": F.multiply, "__rmul__": _swap(F.multiply),
    "__truediv__": F.divide, "__rtruediv__": _swap(F.divide),
    "__pow__": F.power, "__rpow__": _swap(F.power),
    "__matmul__": F.matmul, "__rmatmul__": _swap(F.matmul),
    "__lt__": F.less, "__le__": F.less_equal, "__gt__": F.greater, "__ge__": F.greater_equal,
    "__neg__": F.negative, "__abs__": F.abs,
    "__getitem__": getitem,
}


def _pos(self: Tensor) -> Tensor:
    return self


def _reshape(self: Tensor, *shape: Any) -> Tensor:
    return F.reshape(self, shape[0] if len(shape) == 1 else shape)


def _transpose(self: Tensor, *axes: Any) -> Tensor:
    perm: Any = axes
    if len(axes) == 1 and (axes[0] is None or not isinstance(axes[0], int)):
        perm = axes[0]
    return F.transpose(self, perm or None)


def install() -> None:
    for name, fn in _OPERATORS.items():
        setattr(Tensor, name, fn)
    Tensor.__pos__ = _pos
    Tensor.T = property(lambda self: F.transpose(self))
    Tensor.reshape = _reshape
    Tensor.transpose = _transpose
    Tensor.sum = F.sum
    Tensor.mean = F.mean
    Tensor.max = F.max
    Tensor.min = F.min
    Tensor.argmax = F.argmax
    Tensor.astype = F.astype
    Tensor.squeeze = F.squeeze


install()
