"""Structural fingerprints: a hash of everything about a program that compiled code depends
on, so a compile cache can find native code for a graph before optimizing or scheduling it.

Two programs with the same fingerprint must compile to the same code (with the same graphc
code, which the cache key adds: graphc.runtime.code_hash): the text hashed names every
node's op, inputs, static type, attributes, names and source line; constants by their
contents; parameters by their position, shape and dtype (never their values); and the
formulas of user-defined primitives."""
from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from graphc.graph import Graph
from graphc.node import Node, toposort
from graphc.sizes import Size, SizeVar
from graphc.ops.leaves import ConstValue, ParamStorage
from graphc.region import Region


class _Encoder:
    """Texts for attribute values, sharing one numbering of parameter storages (a body's
    parameters are numbered with the program's) and the user-defined ops met on the way."""

    def __init__(self) -> None:
        self.storages: dict[int, int] = {}
        self.by_id: dict[int, ParamStorage] = {}
        self.user_ops: set[str] = set()
        self.anonymous: dict[SizeVar, int] = {}  # numbered by first use, as placeholders are

    def encode(self, key: str, value: Any) -> str:
        """Every attribute type is spelled out: a repr fallback would let two different
        values (two bodies, two objects) share a cache key, or an address defeat one."""
        # bool before int: True is an int, and True and 1 must not share a text.
        if value is None or isinstance(value, (bool, str)):
            return repr(value)
        if isinstance(value, int):
            return f"int({value})"
        if isinstance(value, float):
            return f"float({float(value)!r})"
        if isinstance(value, (tuple, list)):
            inner = ",".join(self.encode(key, v) for v in value)
            return f"{type(value).__name__}({inner})"
        if isinstance(value, slice):
            inner = ",".join(self.encode(key, v) for v in (value.start, value.stop, value.step))
            return f"slice({inner})"
        if isinstance(value, np.dtype):
            return f"dtype({value.str})"
        if isinstance(value, ConstValue):
            a = value.array
            return f"const({a.dtype.str},{a.shape},{hashlib.sha256(a.tobytes()).hexdigest()})"
        if isinstance(value, ParamStorage):
            self.by_id[id(value)] = value
            index = self.storages.setdefault(id(value), len(self.storages))
            return f"param({index},{value.array.dtype.str},{value.array.shape},{value.name!r})"
        if isinstance(value, Size):
            return f"size({value.text(self._size_name)})"
        if isinstance(value, Region):
            return f"region({self.body(value.inputs, value.outputs)})"
        raise TypeError(f"fingerprint: attribute {key!r} holds a {type(value).__name__}, "
                        "a type the fingerprint cannot encode; add it to _Encoder.encode")

    def _size_name(self, var: SizeVar) -> str:
        if var.name is not None:
            return repr(var.name)
        return f"?{self.anonymous.setdefault(var, len(self.anonymous))}"

    def shape_text(self, shape: tuple) -> str:
        return ",".join(d.text(self._size_name) if isinstance(d, Size) else str(d)
                        for d in shape)

    def body(self, inputs: tuple[Node, ...], outputs: tuple[Node, ...],
             updates: tuple[tuple[Node, Node], ...] = ()) -> str:
        """sha256 of one graph's structure; placeholders count by their position in
        `inputs`, not by their uids, so equal structures hash alike in any process."""
        from graphc.ops import get_op
        order = toposort(inputs + outputs + tuple(v for _, v in updates))
        index = {id(n): i for i, n in enumerate(order)}
        positions = {id(n): i for i, n in enumerate(inputs)}
        h = hashlib.sha256()
        for node in order:
            attrs = []
            for key, value in sorted(node.attrs.items()):
                if node.op == "placeholder" and key == "uid":
                    value = f"input{positions.get(id(node))}"
                attrs.append(f"{key}={self.encode(key, value)}")
            if get_op(node.op).user_defined:
                self.user_ops.add(node.op)
            h.update(f"{node.op}|{[index[id(i)] for i in node.inputs]}|"
                     f"{node.dtype.str}[{self.shape_text(node.shape)}]|"
                     f"{';'.join(attrs)}|{node.source}\n".encode())
        h.update(repr([index[id(n)] for n in inputs]).encode())
        h.update(repr([index[id(n)] for n in outputs]).encode())
        h.update(repr([(index[id(p)], index[id(v)]) for p, v in updates]).encode())
        return h.hexdigest()


def graph_fingerprint(graph: Graph) -> tuple[str, list[ParamStorage]]:
    """(sha256 of the program's structure, its parameters' storages in the numbering the
    hash uses). Placeholders count by position in graph.inputs, not by their uids."""
    enc = _Encoder()
    h = hashlib.sha256(enc.body(graph.inputs, graph.outputs, graph.updates).encode())
    if enc.user_ops:
        import sympy as sp

        from graphc.derivatives import definition
        for op in sorted(enc.user_ops):
            h.update(f"{op}={sp.srepr(definition(op))}\n".encode())
    numbered = sorted(enc.by_id.values(), key=lambda s: enc.storages[id(s)])
    return h.hexdigest(), numbered
