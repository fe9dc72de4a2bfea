"""Structural fingerprints: a hash of everything about a program that compiled code depends
on, so a compile cache can find native code for a graph before optimizing or scheduling it.

Two programs with the same fingerprint must compile to the same code: the text hashed
names every node's op, inputs, static type, attributes, names and source line; constants
by their contents; parameters by their position, shape and dtype (never their values); the
formulas of user-defined primitives; and graphc's own code (its files' sizes and times)."""
from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from graphc.graph import Graph
from graphc.ops.leaves import ConstValue, ParamStorage


def _encode(value: Any, storages: dict[int, int]) -> str:
    """A text for one attribute value. Unknown types fall back to repr: an object whose repr
    holds its address then never matches another process's, which only costs a compile."""
    if isinstance(value, ConstValue):
        a = value.array
        return f"const({a.dtype.str},{a.shape},{hashlib.sha256(a.tobytes()).hexdigest()})"
    if isinstance(value, ParamStorage):
        index = storages.setdefault(id(value), len(storages))
        return f"param({index},{value.array.dtype.str},{value.array.shape},{value.name!r})"
    if isinstance(value, np.dtype):
        return f"dtype({value.str})"
    if isinstance(value, (tuple, list)):
        inner = ",".join(_encode(v, storages) for v in value)
        return f"{type(value).__name__}({inner})"
    return repr(value)


def graph_fingerprint(graph: Graph) -> tuple[str, list[ParamStorage]]:
    """(sha256 of the program's structure, its parameters' storages in the numbering the
    hash uses). Placeholders count by position in graph.inputs, not by their uids."""
    from graphc.ops import get_op
    storages: dict[int, int] = {}
    by_id: dict[int, ParamStorage] = {}
    order = graph.nodes()
    index = {id(n): i for i, n in enumerate(order)}
    inputs = {id(n): i for i, n in enumerate(graph.inputs)}
    h = hashlib.sha256()
    user_ops: set[str] = set()
    for node in order:
        attrs = []
        for key, value in sorted(node.attrs.items()):
            if node.op == "placeholder" and key == "uid":
                value = f"input{inputs.get(id(node))}"
            if isinstance(value, ParamStorage):
                by_id[id(value)] = value
            attrs.append(f"{key}={_encode(value, storages)}")
        if get_op(node.op).user_defined:
            user_ops.add(node.op)
        h.update(f"{node.op}|{[index[id(i)] for i in node.inputs]}|{node.type}|"
                 f"{';'.join(attrs)}|{node.source}\n".encode())
    h.update(repr([index[id(n)] for n in graph.inputs]).encode())
    h.update(repr([index[id(n)] for n in graph.outputs]).encode())
    h.update(repr([(index[id(p)], index[id(v)]) for p, v in graph.updates]).encode())
    if user_ops:
        import sympy as sp

        from graphc.derivatives import definition
        for op in sorted(user_ops):
            h.update(f"{op}={sp.srepr(definition(op))}\n".encode())
    numbered = sorted(by_id.values(), key=lambda s: storages[id(s)])
    return h.hexdigest(), numbered


@functools.lru_cache(maxsize=1)
def package_fingerprint() -> str:
    """graphc's version and the size and modification time of each of its Python files:
    a change to the optimizer or scheduler changes the code they produce."""
    import graphc
    import graphc.backends
    import graphc.frontends
    h = hashlib.sha256(graphc.__version__.encode())
    roots = {Path(p) for pkg in (graphc, graphc.frontends, graphc.backends)
             for p in pkg.__path__}
    for root in sorted(roots):
        for folder, _, files in sorted(os.walk(root)):
            for name in sorted(f for f in files if f.endswith(".py")):
                st = os.stat(os.path.join(folder, name))
                h.update(f"{folder}/{name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()
