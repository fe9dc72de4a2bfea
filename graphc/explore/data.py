"""The explorer's data: a compiled function's graph, report, kernels and code as JSON-ready
records."""
from __future__ import annotations

import re
from typing import Any

from graphc.graph import Graph
from graphc.node import Node, toposort
from graphc.printing import _as_graph, _describe, node_names
from graphc.explore.scopes import node_scopes, scope_tree

_DEFINE = re.compile(r'^define\b[^@\n]*@"?([\w.$]+)"?\s*\(', re.MULTILINE)
# The llvm entry module names the function each kernel calls (identical kernels share one):
# "; kernel <index>: <function>" (backends/llvm/codegen.py).
_KERNEL_CALL = re.compile(r"^; kernel (\d+): ([\w.$]+)$", re.MULTILINE)


def _kind(node: Node) -> str:
    if node.op in ("placeholder", "parameter", "constant"):
        return node.op
    return "grad" if node.origin else "op"


def graph_data(graph: Graph) -> dict[str, Any]:
    """Nodes (inputs first) with their type, source line, provenance and scope; the scope
    tree; outputs and updates by node index."""
    order = toposort(graph.inputs + graph.roots)
    names = node_names(order)
    index = {n: i for i, n in enumerate(order)}
    scopes = node_scopes(order)
    tree = scope_tree(set(scopes.values()))
    scope_id = {s: i for i, s in enumerate(tree)}
    nodes = [{
        "name": "%" + names[n],
        "op": n.op,
        "text": _describe(n, names),
        "type": str(n.type),
        "shape": [d if isinstance(d, int) else None for d in n.shape],
        "dtype": str(n.dtype),
        "source": str(n.source) if n.source else None,
        "origin": n.origin,
        "kind": _kind(n),
        "scope": scope_id[scopes[n]],
        "inputs": [index[i] for i in n.inputs],
    } for n in order]
    return {
        "nodes": nodes,
        "scopes": [{"name": s, "parent": scope_id[s.rpartition(".")[0]] if s else None}
                   for s in tree],
        "outputs": [index[o] for o in graph.outputs],
        "updates": [[index[p], index[v]] for p, v in graph.updates if p in index],
    }


def report_data(report: Any) -> dict[str, Any]:
    return {"text": str(report), "passes": [{
        "name": p.name, "before": p.nodes_before, "after": p.nodes_after,
        "ms": round(p.seconds * 1e3, 3), "fired": [[k, v] for k, v in p.fired.most_common()],
    } for p in report.passes]}


def call_shapes(f: Any) -> tuple | None:
    """The input shapes `f` was last called (or compiled) with, else its static ones, else
    None (sizes known only at call time and never called)."""
    last = getattr(getattr(f, "_exe", None), "last", None)
    shapes = getattr(last, "shapes", None)
    if shapes is not None:
        return tuple(tuple(s) for s in shapes)
    static = tuple(p.shape for p in f.inputs)
    if all(d is not None for s in static for d in s):
        return static
    return None


def split_functions(source: str) -> dict[str, str]:
    """Each `define`d function of LLVM IR text by name, up to its closing brace."""
    out: dict[str, str] = {}
    for m in _DEFINE.finditer(source):
        end = source.find("\n}", m.end())
        out.setdefault(m.group(1), source[m.start():len(source) if end < 0 else end + 2])
    return out


def kernels_data(f: Any, functions: dict[str, str], source: str = "") -> dict[str, Any]:
    """The kernel plan for the shapes `f` ran with, each kernel linked to its function."""
    from graphc.schedule.printing import kernel_text
    shapes = call_shapes(f)
    if shapes is None:
        return {"shapes": None, "items": [], "listing": "",
                "note": "sizes are given at call time: call the function once (llvm "
                         "backend), or give placeholders static sizes, to see kernels"}
    schedule = f.schedule(*shapes)
    by_index = {int(m.group(1)): m.group(2) for m in _KERNEL_CALL.finditer(source)
                if m.group(2) in functions}
    items = [{"index": i, "kind": getattr(k, "kind", type(k).__name__),
              "text": "\n".join(kernel_text(i, k)), "function": by_index.get(i)}
             for i, k in enumerate(schedule.kernels)]
    return {"shapes": [list(s) for s in shapes], "items": items,
            "listing": schedule.listing(), "note": None}


def explorer_data(target: Any, title: str | None = None) -> dict[str, Any]:
    """Everything the page shows. `target`: a compiled gc.Function (graph, report, kernels,
    code), or a Graph, tensor or list of tensors (the graph alone)."""
    from graphc.function import Function
    if isinstance(target, Function):
        source = target.source
        functions = split_functions(source)
        return {
            "title": title or repr(target),
            "backend": target.backend,
            "graph": graph_data(target.graph),
            "report": report_data(target.report),
            "kernels": kernels_data(target, functions, source),
            "code": {"text": source, "functions": [{"name": k, "text": v}
                                                   for k, v in functions.items()]},
        }
    try:
        graph = _as_graph(target)
    except TypeError as e:
        raise TypeError("explore: f: " + str(e).removeprefix("show: ")) from None
    return {"title": title or "graphc graph", "backend": None, "graph": graph_data(graph),
            "report": None, "kernels": None, "code": None}
