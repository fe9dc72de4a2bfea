"""Default updates: state changes that a node asks of every compiled function that computes it.

A training-mode BatchNorm call returns a node whose use implies "and update my running
statistics"; Dropout's implies "and advance my seed". The layer records that here, against the
node it returned (`register`), and gc.function adds the default updates of every node in the
graphs of its outputs and update values (`collect`), except for parameters its `updates` name
explicitly (like PyTensor's default updates). So a step cannot forget them, and a gradient of a
training-mode loss (whose graph holds the same, interned node) carries them exactly once.
"""
from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable

if TYPE_CHECKING:
    from graphc.node import Node


@dataclass(frozen=True)
class DefaultUpdate:
    """`param` <- `new_value(old)`; `old` is the parameter's value before this update (the
    parameter itself, or the result of an earlier default update of it in the same step)."""

    param: "Node"
    new_value: Callable[["Node"], "Node"]
    owner: str  # who asked for it, for messages (e.g. "batchnorm1")


# Weak keys: a node that no graph holds any more takes its default updates with it.
_registry: "weakref.WeakKeyDictionary[Node, tuple[DefaultUpdate, ...]]" = \
    weakref.WeakKeyDictionary()
_lock = threading.Lock()


def register(node: "Node", param: "Node", new_value: Callable[["Node"], "Node"],
             owner: str) -> None:
    """Records that computing `node` implies the update `param <- new_value(param)`. The same
    (node, param) registered again replaces the earlier entry (the layer was called again on
    the same input: the same node, the same update)."""
    if param.op != "parameter":
        raise TypeError(f"default update: {param.op} node is not a parameter")
    with _lock:
        kept = tuple(u for u in _registry.get(node, ()) if u.param is not param)
        _registry[node] = kept + (DefaultUpdate(param, new_value, owner),)


def of(node: "Node") -> tuple[DefaultUpdate, ...]:
    """The default updates recorded against `node` itself."""
    return _registry.get(node, ())


def carry(old: "Node", new: "Node") -> None:
    """A rewrite rebuilt `old` as `new` (same op, rewritten inputs): its default updates move
    along, so a gradient of a stabilized loss still carries them."""
    if new is old or new.op != old.op:
        return  # a node replaced by a different kind of node may be shared by anything
    with _lock:
        if old in _registry and new not in _registry:
            _registry[new] = _registry[old]


def collect(roots: Iterable["Node"], explicit: Iterable["Node"] = ()
            ) -> list[tuple["Node", "Node"]]:
    """(parameter, new value) pairs for every default update recorded against a node in the
    graphs of `roots`, skipping parameters in `explicit`. Each node counts once, so a node
    reached through a loss and through its gradients is not updated twice; two different
    nodes updating one parameter (a layer applied to two inputs in one step) compose in graph
    order, as two calls in a row would."""
    from graphc.node import toposort
    if not _registry:
        return []
    skip = set(explicit)
    chains: dict["Node", "Node"] = {}
    for node in toposort(roots):
        for update in of(node):
            if update.param in skip:
                continue
            old = chains.get(update.param, update.param)
            chains[update.param] = update.new_value(old)
    return list(chains.items())


__all__ = ["DefaultUpdate", "register", "of", "carry", "collect"]
