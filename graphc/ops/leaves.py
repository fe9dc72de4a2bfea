"""Leaf primitives: placeholders (inputs), parameters (held state) and constants."""
from __future__ import annotations

import itertools
import threading
from typing import Any, Mapping, Sequence

import numpy as np

from graphc.dtypes import as_dtype
from graphc.node import Dim, Node, TensorType
from graphc.ops.registry import OpDef, make, register

_uids = itertools.count()


class ConstValue:
    """A constant's array, frozen and hashed by content so equal constants intern together."""

    __slots__ = ("array", "_hash")

    def __init__(self, array: np.ndarray) -> None:
        array = np.array(array, copy=True, order="C")
        array.flags.writeable = False
        self.array = array
        self._hash = hash((array.dtype.str, array.shape, array.tobytes()))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, ConstValue) and self._hash == other._hash
                and self.array.dtype == other.array.dtype
                and self.array.shape == other.array.shape
                and self.array.tobytes() == other.array.tobytes())

    def __lt__(self, other: object) -> bool:  # attrs are sorted by key only; never compared
        return NotImplemented

    def __repr__(self) -> str:
        if self.array.size <= 4:
            return np.array2string(self.array, separator=",")
        return f"<{self.array.dtype}{list(self.array.shape)}>"


class ParamStorage:
    """The mutable array behind a parameter node; compiled functions update it in place."""

    __slots__ = ("array", "name", "uid", "lock")

    def __init__(self, array: np.ndarray, name: str) -> None:
        self.array = np.array(array, copy=True, order="C")
        self.name = name
        self.uid = next(_uids)
        # Held while a compiled step reads or writes the array, so no caller sees it half-set.
        self.lock = threading.RLock()

    def __repr__(self) -> str:
        return f"<parameter {self.name} {self.array.dtype}{list(self.array.shape)}>"


def _leaf_impl(arrays: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> np.ndarray:
    raise RuntimeError("leaf nodes are fed by the interpreter, not computed")


register(OpDef(
    name="placeholder", arity=0, leaf=True, differentiable=True, impl=_leaf_impl,
    infer=lambda inputs, attrs: TensorType(attrs["shape"], attrs["dtype"]),
    doc="an input given at call time",
))
register(OpDef(
    name="parameter", arity=0, leaf=True, impl=_leaf_impl,
    infer=lambda inputs, attrs: TensorType(attrs["storage"].array.shape,
                                           attrs["storage"].array.dtype),
    doc="trainable state held by compiled functions",
))
register(OpDef(
    name="constant", arity=0, leaf=True, differentiable=False,
    impl=lambda arrays, attrs: attrs["value"].array,
    infer=lambda inputs, attrs: TensorType(attrs["value"].array.shape,
                                           attrs["value"].array.dtype),
    doc="a literal tensor",
))


def placeholder_node(shape: Sequence[Dim], dtype: Any, name: str | None) -> Node:
    uid = next(_uids)
    return make("placeholder", shape=tuple(shape), dtype=as_dtype(dtype),
                name=name or f"input{uid}", uid=uid)


def parameter_node(storage: ParamStorage) -> Node:
    return make("parameter", storage=storage, name=storage.name)


def constant_node(value: Any, dtype: Any = None) -> Node:
    array = np.asarray(value, dtype=None if dtype is None else as_dtype(dtype))
    return make("constant", value=ConstValue(array))


def scalar_constant(value: float | int | bool, dtype: np.dtype) -> Node:
    return constant_node(np.asarray(value, dtype=dtype))
