"""Frozen, hash-consed graph nodes, their static types, and iterative traversal."""
from __future__ import annotations

import sys
import threading
import weakref
from _weakref import _remove_dead_weakref  # type: ignore[attr-defined]  # (as WeakValueDictionary)
from dataclasses import dataclass
from functools import partial
from operator import attrgetter
from types import FrameType, MappingProxyType
from typing import Any, Iterable, Mapping, cast

import numpy as np

from graphc import default_updates
from graphc.dtypes import short_name
from graphc.region import node_regions

from graphc.sizes import Dim  # an int, or a Size known only at call time


def static_shape(shape: tuple[Dim, ...]) -> tuple[int, ...]:
    """`shape` typed as ints only, for code that has made sure it holds no symbol (a check
    that mypy cannot carry from where it is made to where the sizes are used)."""
    return cast("tuple[int, ...]", shape)


@dataclass(frozen=True)
class TensorType:
    """The static type of a node: its shape (ints, and symbols for sizes known at call time)
    and dtype."""

    shape: tuple[Dim, ...]
    dtype: np.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __str__(self) -> str:
        dims = ",".join(str(d) for d in self.shape)
        return f"{short_name(self.dtype)}[{dims}]"


@dataclass(frozen=True)
class SourceLine:
    """Where the user built a node: the first frame outside graphc."""

    filename: str
    lineno: int

    def __str__(self) -> str:
        return f"{self.filename}:{self.lineno}"


def user_source_line() -> SourceLine | None:
    """Walks the stack to the first frame whose module is not part of graphc."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module != "graphc" and not module.startswith("graphc."):
            return SourceLine(frame.f_code.co_filename, frame.f_lineno)
        frame = frame.f_back
    return None


class Node:
    """One operation in a graph. Interned: equal (op, inputs, attrs) give the same object."""

    __slots__ = ("op", "inputs", "attrs", "type", "source", "origin", "__weakref__")

    op: str
    inputs: tuple["Node", ...]
    attrs: Mapping[str, Any]
    type: TensorType
    source: SourceLine | None
    origin: str | None  # the derivative rule that built it, for gradient nodes

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("graph nodes are immutable")

    @property
    def shape(self) -> tuple[Dim, ...]:
        return self.type.shape

    @property
    def dtype(self) -> np.dtype:
        return self.type.dtype

    @property
    def ndim(self) -> int:
        return len(self.type.shape)

    def __repr__(self) -> str:
        return f"<Node {self.op} {self.type}>"


_origin = threading.local()


class building_for:
    """Context: nodes first built inside it record `rule` as their origin (provenance)."""

    def __init__(self, rule: str) -> None:
        self.rule = rule

    def __enter__(self) -> None:
        self.saved = getattr(_origin, "rule", None)
        _origin.rule = self.rule

    def __exit__(self, *exc: object) -> None:
        _origin.rule = self.saved


_labels: "weakref.WeakKeyDictionary[Node, str]" = weakref.WeakKeyDictionary()


def set_label(node: "Node", label: str) -> None:
    """A display name for a computed node (e.g. 'dloss/dW1'); not part of its identity."""
    _labels[node] = label


def label_of(node: "Node") -> str | None:
    return _labels.get(node)


def carry_label(old: "Node", new: "Node") -> "Node":
    """A rewrite replaced `old` by `new`: the display name (and default updates) move along."""
    if new is not old and old in _labels and new not in _labels:
        _labels[new] = _labels[old]
    default_updates.carry(old, new)
    return new


_assumptions: "weakref.WeakKeyDictionary[Node, tuple]" = weakref.WeakKeyDictionary()


def record_assumptions(node: "Node", pairs: Iterable[tuple[Dim, Dim]]) -> None:
    """Sizes that `node`'s shape rule took to be equal, checked when a function is called."""
    from graphc.sizes import Assumption
    _assumptions[node] = tuple(Assumption(a, b, node.op, node.source) for a, b in pairs)


def assumptions_of(node: "Node") -> tuple:
    return _assumptions.get(node, ())


# Structure -> a weak reference to the one node with it. A plain dict of weak references
# rather than a WeakValueDictionary: its Python-level get and set were a tenth of the time
# of building and rebuilding nodes. A dead node's entry goes when its reference calls back
# (only if the entry is still that dead reference: a new node may hold the key by then).
_interned: dict[tuple, "weakref.ref[Node]"] = {}
_intern_lock = threading.Lock()


def _forget(key: tuple, ref: "weakref.ref[Node]") -> None:
    _remove_dead_weakref(_interned, key)


def attrs_key(attrs: Mapping[str, Any]) -> tuple:
    return tuple(sorted(attrs.items()))


def intern_node(op: str, inputs: tuple[Node, ...], attrs: Mapping[str, Any],
                type_: TensorType, like: Node | None = None) -> Node:
    """Returns the one node with this structure, creating it (with the user's line) if new.
    `like`: a node this one replaces (a rewrite); the new node keeps its line and origin."""
    key = (op, inputs, attrs_key(attrs))
    with _intern_lock:
        ref = _interned.get(key)
        node = ref() if ref is not None else None
        if node is not None:
            return node
        node = object.__new__(Node)
        set_ = object.__setattr__
        set_(node, "op", op)
        set_(node, "inputs", inputs)
        set_(node, "attrs", MappingProxyType(dict(attrs)))
        set_(node, "type", type_)
        set_(node, "source", like.source if like is not None else user_source_line())
        set_(node, "origin", like.origin if like is not None else getattr(_origin, "rule", None))
        _interned[key] = weakref.ref(node, partial(_forget, key))
        return node


def _with_bodies(node: Node) -> tuple[Node, ...]:
    """A node's inputs, then the nodes of the regions it carries (their inputs and outputs)."""
    regions = node_regions(node)
    if not regions:
        return node.inputs
    return node.inputs + tuple(n for r in regions for n in r.inputs + r.outputs)


def toposort(outputs: Iterable[Node], into_regions: bool = False) -> list[Node]:
    """Every node the outputs depend on, inputs before users. Iterative: no recursion limit.
    into_regions=True also lists the nodes of region bodies, before the node carrying them
    (a body is a graph of its own: most walks, like the scheduler's, leave it to its op)."""
    # (nodes hash by identity, so the set holds them, not their ids; a node without inputs
    # is listed where it is met, which is where popping it would list it)
    order: list[Node] = []
    seen: set[Node] = set()  # every node pushed so far (each is listed once it is popped)
    kids_of = _with_bodies if into_regions else attrgetter("inputs")
    for root in outputs:
        if root in seen:
            continue
        seen.add(root)
        stack = [(root, iter(kids_of(root)))]
        while stack:
            node, kids = stack[-1]
            for child in kids:  # resumes where it stopped: inputs in order
                if child not in seen:
                    seen.add(child)
                    grandkids = kids_of(child)
                    if not grandkids:
                        order.append(child)
                        continue
                    stack.append((child, iter(grandkids)))
                    break
            else:
                stack.pop()
                order.append(node)
    return order


def consumers(order: list[Node]) -> dict[Node, list[Node]]:
    """For each node in a topological order, the nodes that use it."""
    users: dict[Node, list[Node]] = {n: [] for n in order}
    for n in order:
        for i in n.inputs:
            users[i].append(n)
    return users
