"""Runs a Graph node by node through each primitive's numpy reference, checking every shape."""
from __future__ import annotations

import threading
from typing import Sequence, cast

import numpy as np

from graphc import sizes
from graphc.errors import ShapeError
from graphc.graph import Graph
from graphc.node import Node
from graphc.ops import get_op
from graphc.ops.registry import sibling_key
from graphc.ops.shapes import fmt_shape
from graphc.specialize import bind_shapes


_enclosing = threading.local()


def enclosing_sizes() -> dict:
    """The sizes bound by the call whose loop (a scan's body) is running now: a body's
    shapes may use sizes that only the enclosing call's arguments give."""
    return getattr(_enclosing, "sizes", {})


def _where(node: Node) -> str:
    return f" (built at {node.source})" if node.source else ""


def _matches(static: tuple, actual: tuple, values: dict) -> bool:
    if len(static) != len(actual):
        return False
    for s, a in zip(static, actual):
        if not isinstance(s, int):
            if not sizes.symbols_of((s,)) <= values.keys():
                continue  # (a size no argument gives: its rule checked it)
            s = sizes.evaluate(s, values)
        if s != a:
            return False
    return True


class NumpyExecutable:
    """A Graph prepared for interpretation: a schedule, and when each value can be freed."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.order = graph.nodes()
        index = {n: i for i, n in enumerate(self.order)}
        self.input_slots = [index[p] for p in graph.inputs]
        self.output_slots = [index[o] for o in graph.outputs]
        self.updates = [(p.attrs["storage"], index[v]) for p, v in graph.updates]
        self.param_storages = [n.attrs["storage"] for n in self.order if n.op == "parameter"]
        self.arg_slots = [[index[i] for i in n.inputs] for n in self.order]
        # Nodes whose attributes hold sizes known at call time (a reshape's target shape).
        self.symbolic = {pos for pos, n in enumerate(self.order)
                         if any(sizes.has_symbols(v) for v in n.attrs.values())}
        keep = set(self.output_slots) | {slot for _, slot in self.updates}
        last_use: dict[int, int] = {}
        for pos, slots in enumerate(self.arg_slots):
            for s in slots:
                last_use[s] = pos
        # free[pos]: values no longer needed once node `pos` has run.
        self.free: list[list[int]] = [[] for _ in self.order]
        for slot, pos in last_use.items():
            if slot not in keep:
                self.free[pos].append(slot)

    @property
    def source(self) -> str:
        from graphc.printing import show
        return show(self.graph)

    def run(self, args: Sequence[np.ndarray]) -> list[np.ndarray]:
        # None: not computed yet, or freed. A slot is read (the casts below) only after it is
        # set, inputs first and nodes in topological order, and freed after its last reader.
        # (per call: threads) A loop body also sees the sizes of the call that runs it.
        bound = {**enclosing_sizes(), **bind_shapes(self.graph.inputs, [a.shape for a in args])}
        values: list[np.ndarray | None] = [None] * len(self.order)
        groups: dict[tuple, list[np.ndarray]] = {}  # sibling group -> all its results
        for slot, array in zip(self.input_slots, args):
            # Like the compiled backends: arguments as dense arrays (a stride-0 view of a
            # huge shape is a MemoryError here, not hours of arithmetic on one number).
            values[slot] = array if array.flags.c_contiguous else np.ascontiguousarray(array)
        for pos, node in enumerate(self.order):
            if values[pos] is None:
                operands = cast(list[np.ndarray], [values[s] for s in self.arg_slots[pos]])
                values[pos] = self._evaluate(node, operands, bound, pos in self.symbolic,
                                             groups)
            for slot in self.free[pos]:
                values[slot] = None
        borrowed = {id(a) for a in args} | {id(s.array) for s in self.param_storages}
        outputs = []
        for s in self.output_slots:
            out = self._fresh(cast(np.ndarray, values[s]), borrowed)
            borrowed.add(id(out))  # the same node listed twice gives two arrays, not one
            outputs.append(out)
        new_values = [(storage, cast(np.ndarray, values[slot]))
                      for storage, slot in self.updates]
        for storage, value in new_values:  # checked before any is stored: all or nothing
            if value.shape != storage.array.shape:
                raise ShapeError(f"update of parameter {storage.name!r}: new value has "
                                 f"run-time shape {fmt_shape(value.shape)}, parameter has "
                                 f"{fmt_shape(storage.array.shape)}")
        new_values = [(s, np.array(v, dtype=s.array.dtype, copy=True)) for s, v in new_values]
        for storage, value in new_values:  # after every new value exists: stored together
            storage.array[...] = value
        return outputs

    @staticmethod
    def _fresh(array: np.ndarray, borrowed: set[int]) -> np.ndarray:
        """A result the caller owns: never a view of a parameter, an input or a constant."""
        if (array.base is None and array.flags.writeable and array.flags.owndata
                and id(array) not in borrowed):
            return array
        return np.array(array, copy=True)

    def _evaluate(self, node: Node, args: list[np.ndarray], bound: dict,
                  symbolic: bool, groups: dict[tuple, list[np.ndarray]]) -> np.ndarray:
        if node.op == "parameter":
            return node.attrs["storage"].array
        opdef = get_op(node.op)
        attrs = node.attrs
        if symbolic:
            attrs = {k: sizes.substitute(v, bound) for k, v in attrs.items()}
        try:
            if opdef.impl_all is not None:  # one computation for every sibling
                key = sibling_key(node)
                if key not in groups:
                    saved = enclosing_sizes()
                    _enclosing.sizes = bound
                    try:
                        groups[key] = opdef.impl_all(args, attrs)
                    finally:
                        _enclosing.sizes = saved
                result = np.asarray(groups[key][node.attrs["output"]])
            else:
                result = np.asarray(opdef.impl(args, attrs))
        except IndexError as exc:  # the op's message names it already; add the indices' origin
            raise IndexError(f"{exc}{_index_origin(node)}{_where(node)}") from exc
        except (ValueError, TypeError, ZeroDivisionError) as exc:
            raise type(exc)(f"{node.op}: {exc}{_where(node)}") from exc
        if result.dtype != node.dtype:
            result = result.astype(node.dtype)
        if not _matches(node.shape, result.shape, bound):
            raise ShapeError(f"{node.op}: run-time shape {fmt_shape(result.shape)} does not "
                             f"match {fmt_shape(node.shape)}; sizes given at call time "
                             f"disagree{_where(node)}")
        return result


def _index_origin(node: Node) -> str:
    """ (indices from argument 'name'), when an indexing op's indices are an argument."""
    positions = get_op(node.op).index_inputs
    if not positions or positions[0] >= len(node.inputs):
        return ""
    src = node.inputs[positions[0]]
    return f" (indices from argument {src.attrs['name']!r})" if src.op == "placeholder" else ""
