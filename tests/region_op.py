"""A test-only primitive carrying a region: map_body(x) applies its body to x, no vjp."""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from graphc.graph import Graph
from graphc.node import Node, TensorType
from graphc.ops import OPS
from graphc.ops.leaves import placeholder_node
from graphc.ops.registry import OpDef, make, register
from graphc.region import Region

NAME = "test_map_body"


def _infer(inputs: Sequence[Node], attrs: Mapping[str, Any]) -> TensorType:
    body: Region = attrs["body"]
    if len(inputs) != len(body.inputs):
        raise TypeError(f"the body takes {len(body.inputs)} inputs, got {len(inputs)}")
    return body.outputs[0].type


def _impl(arrays: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> np.ndarray:
    from graphc.backends.numpy.interpreter import NumpyExecutable
    body: Region = attrs["body"]
    return NumpyExecutable(Graph(body.inputs, body.outputs)).run(list(arrays))[0]


@contextlib.contextmanager
def registered() -> Iterator[None]:
    """The primitive exists only inside the block: graphc's registry stays as it ships, so
    tests that walk every registered op never meet it."""
    register(OpDef(name=NAME, arity=None, infer=_infer, impl=_impl,
                   doc="the body applied to the inputs (a region test primitive)"))
    try:
        yield
    finally:
        OPS.pop(NAME)


def body_of(fn: Callable[[Node], Node], like: Node) -> Region:
    """A one-input body: fn applied to a placeholder shaped like `like`, named 'a' (every
    body built here is made on the same lines, so equal bodies are equal nodes)."""
    a = placeholder_node(like.shape, like.dtype, "a")
    return Region((a,), (fn(a),))


def map_body(x: Node, body: Region, **attrs: Any) -> Node:
    return make(NAME, x, body=body, **attrs)
