"""numpy's constructors: zeros, ones, full, their *_like forms, arange, eye, linspace.
Python floats become float32 unless a dtype is given (gc.constant's rule, PyTorch's
default), ints int64, bools bool."""
from __future__ import annotations

from typing import Any

import numpy as np

from graphc.coerce import default_array
from graphc.dtypes import as_dtype
from graphc.node import Node
from graphc.ops import make
from graphc.ops.leaves import constant_node
from graphc.frontends.convert import cast, to_node
from graphc.frontends.functions import _shape_arg
from graphc.frontends.tensor import Tensor


def _fill_node(fill_value: Any, dtype: Any, what: str) -> Node:
    """A 0-d node holding fill_value (a number or a 0-d tensor), in `dtype` if given."""
    if isinstance(fill_value, Tensor) or isinstance(fill_value, Node):
        node = to_node(fill_value, what)
        if node.ndim != 0:
            raise ValueError(f"{what}: expected a scalar, got a tensor of shape {node.shape}")
    else:
        array = default_array(fill_value, what)
        if array.ndim != 0:
            raise ValueError(f"{what}: expected a scalar, got shape {array.shape}")
        node = constant_node(array)
    return cast(node, as_dtype(dtype)) if dtype is not None else node


def full(shape: Any, fill_value: Any, dtype: Any = None) -> Tensor:
    """A tensor of `shape` filled with fill_value (its dtype unless `dtype` is given)."""
    dims = _shape_arg(shape, "full shape")
    if any(d < 0 for d in dims):
        raise ValueError(f"full shape: sizes must be >= 0, got {dims}")
    node = _fill_node(fill_value, dtype, "full fill_value")
    return Tensor(make("broadcast_to", node, shape=dims) if dims else node)


def zeros(shape: Any, dtype: Any = "float32") -> Tensor:
    return full(shape, 0, dtype)


def ones(shape: Any, dtype: Any = "float32") -> Tensor:
    return full(shape, 1, dtype)


def full_like(x: Any, fill_value: Any, dtype: Any = None) -> Tensor:
    """fill_value in x's shape, sizes known only at call time included, and x's dtype (or
    `dtype`). Its derivative with respect to x is zero."""
    node = to_node(x, "full_like operand")
    fill = _fill_node(fill_value, node.dtype if dtype is None else dtype, "full_like fill_value")
    return Tensor(make("broadcast_to", fill, shape=node.shape) if node.shape else fill)


def zeros_like(x: Any, dtype: Any = None) -> Tensor:
    return full_like(x, 0, dtype)


def ones_like(x: Any, dtype: Any = None) -> Tensor:
    return full_like(x, 1, dtype)


def _number(value: Any, what: str) -> Any:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"{what}: expected a number, got {value!r}")
    return value


def _default_float(array: np.ndarray, dtype: Any) -> np.ndarray:
    if dtype is not None:
        return array.astype(as_dtype(dtype), copy=False)
    return array.astype(np.float32) if array.dtype == np.float64 else array


def arange(start: Any, stop: Any = None, step: Any = 1, dtype: Any = None) -> Tensor:
    """numpy.arange: start, start + step, ... below stop (one argument: 0 .. start - 1)."""
    if stop is None:
        start, stop = 0, start
    args = [_number(v, f"arange {n}") for v, n in ((start, "start"), (stop, "stop"),
                                                   (step, "step"))]
    if args[2] == 0:
        raise ValueError("arange: step must not be 0")
    return Tensor(constant_node(_default_float(np.arange(*args), dtype)))


def linspace(start: Any, stop: Any, num: int = 50, endpoint: bool = True,
             dtype: Any = None) -> Tensor:
    """numpy.linspace: num evenly spaced values from start to stop (float32 by default)."""
    if not isinstance(num, (int, np.integer)) or isinstance(num, bool) or num < 0:
        raise ValueError(f"linspace: num must be an int >= 0, got {num!r}")
    values = np.linspace(_number(start, "linspace start"), _number(stop, "linspace stop"),
                         int(num), endpoint=bool(endpoint))
    return Tensor(constant_node(_default_float(values, dtype)))


def eye(N: int, M: int | None = None, k: int = 0, dtype: Any = "float32") -> Tensor:
    """numpy.eye: ones on diagonal k of an N x M matrix (M defaults to N)."""
    for v, n in ((N, "N"), (M, "M"), (k, "k")):
        if v is not None and (not isinstance(v, (int, np.integer)) or isinstance(v, bool)):
            raise TypeError(f"eye: {n} must be an int, got {v!r}")
    if N < 0 or (M is not None and M < 0):
        raise ValueError(f"eye: sizes must be >= 0, got N={N}, M={M}")
    return Tensor(constant_node(np.eye(N, M, k, dtype=as_dtype(dtype))))


__all__ = ["zeros", "ones", "full", "zeros_like", "ones_like", "full_like", "arange", "eye",
           "linspace"]
