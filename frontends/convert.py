"""Operands to nodes: tensors, numpy data and weak Python scalars, with dtype promotion."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from graphc.coerce import default_array
from graphc.dtypes import bool_, promote, weak_scalar_dtype
from graphc.node import Node
from graphc.ops import make
from graphc.ops.leaves import constant_node


def is_weak(value: Any) -> bool:
    return isinstance(value, (bool, int, float)) and not isinstance(value, np.generic)


def to_node(value: Any, what: str = "operand") -> Node:
    """A node for a tensor or literal (Python floats become float32, ints int64)."""
    node = getattr(value, "node", None)
    if isinstance(node, Node):
        return node
    if isinstance(value, Node):
        return value
    return constant_node(default_array(value, what))


def cast(node: Node, dtype: np.dtype) -> Node:
    return node if node.dtype == dtype else make("cast", node, dtype=dtype)


def common_dtype(values: Sequence[Any], op: str) -> np.dtype:
    """The dtype numpy would compute in: strong operands promote, Python scalars adapt."""
    strong = [to_node(v, f"{op} operand").dtype for v in values if not is_weak(v)]
    weak = [v for v in values if is_weak(v)]
    if not strong:
        return to_node(weak[0]).dtype if len(weak) == 1 else promote(
            *(to_node(w).dtype for w in weak))
    dtype = promote(*strong)
    for w in weak:
        dtype = weak_scalar_dtype(w, dtype)
    return dtype


def operands(values: Sequence[Any], op: str, dtype: np.dtype | None = None) -> list[Node]:
    """Nodes for the operands of `op`, all cast to `dtype` (default: their common dtype)."""
    dtype = dtype or common_dtype(values, op)
    out = []
    for i, v in enumerate(values):
        if is_weak(v):
            out.append(constant_node(np.asarray(v, dtype=dtype)))
        else:
            out.append(cast(to_node(v, f"{op} operand {i}"), dtype))
    return out


def to_bool(value: Any, what: str) -> Node:
    node = to_node(value, what)
    if node.dtype == bool_:
        return node
    zero = constant_node(np.zeros((), node.dtype))
    return make("not_equal", node, zero)
