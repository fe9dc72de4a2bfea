"""Installs % // & | ~ (with reflected forms) and numpy's further methods on Tensor.
& | ~ are logical and take bool operands only (ints raise TypeError: no bitwise ops)."""
from __future__ import annotations

from typing import Any, Callable

from graphc.dtypes import bool_
from graphc.frontends import numpy_math as M
from graphc.frontends.convert import to_node
from graphc.frontends.tensor import Tensor


def _bool_only(op: str, fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    def checked(*args: Any) -> Tensor:
        for v in args:
            dtype = to_node(v, f"{op} operand").dtype if not isinstance(v, bool) else bool_
            if dtype != bool_:
                raise TypeError(f"{op}: operands must be bool tensors (logical), got {dtype}; "
                                "graphc has no bitwise operations on integers (use "
                                "gc.logical_and / gc.logical_or for truth values)")
        return fn(*args)
    return checked


def _swap(fn: Callable[[Any, Any], Tensor]) -> Callable[[Any, Any], Tensor]:
    return lambda self, other: fn(other, self)


_and = _bool_only("&", M.logical_and)
_or = _bool_only("|", M.logical_or)

_OPERATORS = {
    "__mod__": M.mod, "__rmod__": _swap(M.mod),
    "__floordiv__": M.floor_divide, "__rfloordiv__": _swap(M.floor_divide),
    "__and__": _and, "__rand__": _swap(_and),
    "__or__": _or, "__ror__": _swap(_or),
    "__invert__": _bool_only("~", M.logical_not),
}

_METHODS = {"argmin": M.argmin, "prod": M.prod, "var": M.var, "std": M.std, "clip": M.clip,
            "round": M.round}


def install() -> None:
    for name, fn in {**_OPERATORS, **_METHODS}.items():
        setattr(Tensor, name, fn)


install()
