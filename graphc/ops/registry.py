"""OpDef records (one per primitive) and the builder that checks and interns nodes."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from graphc.errors import DTypeError, ShapeError
from graphc.node import Node, TensorType, intern_node, user_source_line

# infer(inputs, attrs) -> TensorType; raises ShapeError/DTypeError with a message that
# does not repeat the op name (make() adds it, with the shapes and the user's line).
InferRule = Callable[[Sequence[Node], Mapping[str, Any]], TensorType]
# impl(arrays, attrs) -> ndarray: the numpy reference semantics.
Impl = Callable[[Sequence[np.ndarray], Mapping[str, Any]], np.ndarray]
# vjp(node, cotangent) -> one cotangent Node (or None: no gradient) per input.
VjpRule = Callable[[Node, Node], Sequence[Node | None]]
# jvp(node, tangents) -> the output tangent; tangents hold None for zero tangents.
JvpRule = Callable[[Node, Sequence[Node | None]], Node | None]


@dataclass(frozen=True)
class OpDef:
    """Everything graphc knows about one primitive, in one place."""

    name: str
    infer: InferRule
    impl: Impl
    doc: str = ""
    vjp: VjpRule | None = None
    jvp: JvpRule | None = None
    # Elementwise primitives: the SymPy definition f(*symbols), from which the
    # derivative table and the backends' scalar code are generated.
    sympy_def: Callable[..., Any] | None = None
    arity: int | None = None  # None: any number of inputs
    differentiable: bool = True
    leaf: bool = False  # placeholders, parameters, constants
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def elementwise(self) -> bool:
        return self.sympy_def is not None


OPS: dict[str, OpDef] = {}


def register(opdef: OpDef) -> OpDef:
    if opdef.name in OPS:
        raise ValueError(f"primitive {opdef.name!r} is registered twice")
    OPS[opdef.name] = opdef
    return opdef


def get_op(name: str) -> OpDef:
    try:
        return OPS[name]
    except KeyError:
        raise KeyError(f"unknown primitive {name!r}") from None


def describe_inputs(inputs: Sequence[Node]) -> str:
    return ", ".join(str(i.type) for i in inputs)


def make(op: str, *inputs: Node, **attrs: Any) -> Node:
    """The one way nodes are built: checks shapes/dtypes by the op's rule, then interns."""
    opdef = get_op(op)
    if opdef.arity is not None and len(inputs) != opdef.arity:
        raise TypeError(f"{op}: takes {opdef.arity} inputs, got {len(inputs)}")
    try:
        type_ = opdef.infer(inputs, attrs)
    except (ShapeError, DTypeError, IndexError) as exc:
        where = user_source_line()
        at = f" at {where}" if where else ""
        raise type(exc)(f"{op}: {exc} (inputs: {describe_inputs(inputs)}){at}") from None
    return intern_node(op, tuple(inputs), attrs, type_)


def rebuild(node: Node, inputs: Sequence[Node]) -> Node:
    """`node` with new inputs (a rewrite): same op and attrs, type inferred again; keeps the
    original's source line and origin."""
    inputs = tuple(inputs)
    if inputs == node.inputs:
        return node
    opdef = get_op(node.op)
    try:
        type_ = opdef.infer(inputs, node.attrs)
    except (ShapeError, DTypeError, IndexError) as exc:
        at = f" (built at {node.source})" if node.source else ""
        raise type(exc)(f"{node.op}: {exc} (inputs: {describe_inputs(inputs)}){at}") from None
    return intern_node(node.op, inputs, node.attrs, type_, like=node)
