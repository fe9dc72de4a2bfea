"""numpy's cumsum, cumprod, sort and argsort over Tensors."""
from __future__ import annotations

from typing import Any

from graphc.dtypes import bool_, int32, int64
from graphc.errors import DTypeError
from graphc.node import Node
from graphc.ops import make
from graphc.frontends.convert import cast, to_node
from graphc.frontends.functions import _axes
from graphc.frontends.tensor import Tensor


def _along(name: str, x: Any, axis: int | None) -> tuple[Node, int]:
    """The operand and its axis; axis None flattens it first (numpy)."""
    node = to_node(x, f"{name} operand")
    if axis is None:
        return make("reshape", node, shape=(-1,)), 0
    if not isinstance(axis, int) or isinstance(axis, bool):
        raise TypeError(f"{name}: axis must be an int or None, got {axis!r}")
    if node.ndim == 0:
        node = make("reshape", node, shape=(1,))  # numpy treats a 0-d operand as (1,)
    (ax,) = _axes(name, axis, node)
    return node, ax


def _scan(name: str, x: Any, axis: int | None) -> Tensor:
    node, ax = _along(name, x, axis)
    if node.dtype in (bool_, int32):  # numpy accumulates small ints and bools in int64
        node = cast(node, int64)
    return Tensor(make(name, node, axis=ax, reverse=False))


def cumsum(x: Any, axis: int | None = None) -> Tensor:
    """Running sum along `axis` (None: of the flattened tensor), like numpy.cumsum."""
    return _scan("cumsum", x, axis)


def cumprod(x: Any, axis: int | None = None) -> Tensor:
    """Running product along `axis` (None: of the flattened tensor), like numpy.cumprod;
    its gradient is exact where x holds zeros."""
    return _scan("cumprod", x, axis)


def _sort_operand(name: str, x: Any, axis: int | None, kind: str | None) -> tuple[Node, int]:
    if kind not in (None, "stable", "mergesort"):
        raise ValueError(f"{name}: kind must be None, 'stable' or 'mergesort' (graphc always "
                         f"sorts stably), got {kind!r}")
    node, ax = _along(name, x, axis)
    if node.dtype.kind not in "bif":
        raise DTypeError(f"{name}: needs a bool, int or float operand, got {node.dtype}")
    return node, ax


def argsort(x: Any, axis: int | None = -1, kind: str | None = None) -> Tensor:
    """Indices (int64) that sort `x` along `axis` (None: flattened), like numpy.argsort with
    kind="stable": equal entries keep their order, NaN sorts last. Not differentiable."""
    node, ax = _sort_operand("argsort", x, axis, kind)
    key = cast(node, int32) if node.dtype == bool_ else node
    return Tensor(make("argsort", key, axis=ax))


def sort(x: Any, axis: int | None = -1, kind: str | None = None) -> Tensor:
    """`x` sorted along `axis` (None: flattened), like numpy.sort; NaN sorts last. The
    gradient goes back to where each entry came from (ties: each copy to its own place)."""
    node, ax = _sort_operand("sort", x, axis, kind)
    key = cast(node, int32) if node.dtype == bool_ else node
    return Tensor(make("take_along_axis", node, make("argsort", key, axis=ax), axis=ax))
