"""OpDef records (one per primitive) and the builder that checks and interns nodes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from graphc.errors import DTypeError, ShapeError
from graphc import sizes
from graphc.node import Node, TensorType, intern_node, record_assumptions, user_source_line

# infer(inputs, attrs) -> TensorType; raises ShapeError/DTypeError with a message that
# does not repeat the op name (make() adds it, with the shapes and the user's line).
InferRule = Callable[[Sequence[Node], Mapping[str, Any]], TensorType]
# impl(arrays, attrs) -> ndarray: the numpy reference semantics.
Impl = Callable[[Sequence[np.ndarray], Mapping[str, Any]], np.ndarray]
# vjp(node, cotangent) -> one cotangent Node (or None: no gradient) per input. Forward mode
# needs no rule of its own: graphc.autodiff.jvp_nodes transposes the vjp rules.
VjpRule = Callable[[Node, Node], Sequence[Node | None]]
# group_vjp(siblings, cotangents, wanted) -> one cotangent (or None) per input the siblings
# share; a sibling's cotangent is None where nothing used its result; wanted[i]: whether
# input i's cotangent is used (a rule need not build the others).
GroupVjpRule = Callable[[Sequence[Node], Sequence["Node | None"], Sequence[bool]],
                        Sequence["Node | None"]]
# impl_all(arrays, attrs) -> every result of a sibling group (by "output" index).
ImplAll = Callable[[Sequence[np.ndarray], Mapping[str, Any]], list[np.ndarray]]


@dataclass(frozen=True)
class OpDef:
    """Everything graphc knows about one primitive, in one place."""

    name: str
    infer: InferRule
    impl: Impl
    doc: str = ""
    vjp: VjpRule | None = None
    # Elementwise primitives: the SymPy definition f(*symbols), from which the
    # derivative table and the backends' scalar code are generated.
    sympy_def: Callable[..., Any] | None = None
    # The names of sympy_def's arguments; None: x / a, b / c, a, b by arity.
    arg_names: tuple[str, ...] | None = None
    user_defined: bool = False  # made by gc.elementwise_function: its formula is fingerprinted
    arity: int | None = None  # None: any number of inputs
    differentiable: bool = True
    leaf: bool = False  # placeholders, parameters, constants

    # -- facts that autodiff, passes and backends rely on (read here, never kept in tables) --
    # Inputs read only for their run-time shape, never their values (a slice: every input from
    # some position on, for ops with any number of inputs). jvp_nodes follows value
    # dependencies only, to prove a reverse rule linear in its cotangent.
    shape_only_inputs: tuple[int, ...] | slice = ()
    # Inputs with no derivative although the op has one (where's boolean condition).
    nondifferentiable_inputs: tuple[int, ...] = ()
    # Inputs holding integer indices into another input: errors name where they came from.
    index_inputs: tuple[int, ...] = ()
    # Every output is >= 0 or nan, whatever the inputs: exp(log(x)) is then x exactly.
    nonnegative: bool = False
    # Every output is finite, whatever the inputs (nan and inf included): x * 0 is then 0.
    finite: bool = False
    # Every output element is a copy of an element of input 0 (a broadcast or reshape): a
    # uniform constant seen through such ops is still that constant.
    scalar_view: bool = False
    # The output is input 0's elements in the same row-major order, only the shape differs:
    # a reshape of it can read input 0 directly.
    reshapes: bool = False
    # On a one-element input giving a one-element output, the value passes through unchanged
    # (sums, broadcasts, transposes, slices): to_sympy reads such nodes as their input.
    one_element_identity: bool = False
    # Elementwise primitives: partial derivatives written by hand, f(*symbols) -> one SymPy
    # expression per argument, where graphc's convention at a kink or where the function is
    # locally constant differs from sympy.diff of sympy_def (maximum's ties, pow at 0).
    sympy_partials: Callable[..., tuple[Any, ...]] | None = None
    # Communicates with the other processes of a job (all_reduce): never evaluated while
    # compiling (constant folding), since its value depends on what the others hold.
    collective: bool = False
    # -- ops with several results (scan): one node per result, "siblings" equal in all but
    # their "output" attribute (sibling_key), computed as one. --
    # The derivative of a sibling group, taken once with every sibling's cotangent (autodiff
    # calls it at the sibling that comes first in topological order); replaces vjp.
    group_vjp: GroupVjpRule | None = None
    # Every result at once: the numpy interpreter computes a sibling group once per call.
    impl_all: ImplAll | None = None

    @property
    def elementwise(self) -> bool:
        return self.sympy_def is not None

    def shape_only(self, n_inputs: int) -> tuple[int, ...]:
        """The positions of shape-only inputs for a node with `n_inputs` inputs."""
        if isinstance(self.shape_only_inputs, slice):
            return tuple(range(n_inputs)[self.shape_only_inputs])
        return self.shape_only_inputs


OPS: dict[str, OpDef] = {}


def sibling_key(node: Node) -> tuple:
    """What the sibling nodes of one computation share: all but their "output" attribute."""
    return (node.op, node.inputs,
            tuple(sorted((k, v) for k, v in node.attrs.items() if k != "output")))


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
        with sizes.collecting() as assumed:
            type_ = opdef.infer(inputs, attrs)
    except (ShapeError, DTypeError, IndexError) as exc:
        where = user_source_line()
        at = f" at {where}" if where else ""
        raise type(exc)(f"{op}: {exc} (inputs: {describe_inputs(inputs)}){at}") from None
    node = intern_node(op, tuple(inputs), attrs, type_)
    if assumed:
        record_assumptions(node, assumed)
    return node


def rebuild(node: Node, inputs: Sequence[Node], attrs: Mapping[str, Any] | None = None
            ) -> Node:
    """`node` with new inputs (a rewrite) and, if given, new attrs (a rewritten region body):
    same op, type inferred again; keeps the original's source line and origin."""
    inputs = tuple(inputs)
    attrs = node.attrs if attrs is None else attrs
    if inputs == node.inputs and attrs is node.attrs:
        return node
    opdef = get_op(node.op)
    try:
        with sizes.collecting() as assumed:
            type_ = opdef.infer(inputs, attrs)
    except (ShapeError, DTypeError, IndexError) as exc:
        at = f" (built at {node.source})" if node.source else ""
        raise type(exc)(f"{node.op}: {exc} (inputs: {describe_inputs(inputs)}){at}") from None
    new = intern_node(node.op, inputs, attrs, type_, like=node)
    if assumed:
        record_assumptions(new, assumed)
    return new
