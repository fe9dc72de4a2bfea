"""The explorer's data: a compiled function's graph, report, kernels and code as JSON-ready
records."""
from __future__ import annotations

import re
from typing import Any, Sequence

from graphc.graph import Graph
from graphc.node import Node, toposort
from graphc.printing import _as_graph, _describe, node_names
from graphc.explore.matching import pass_steps, rebuilt, twins
from graphc.explore.repeats import group_repeats
from graphc.explore.scopes import node_scopes, parts, scope_tree

_DEFINE = re.compile(r'^define\b[^@\n]*@"?([\w.$]+)"?\s*\(', re.MULTILINE)
# The llvm entry module names the function each kernel calls (identical kernels share one):
# "; kernel <index>: <function>" (backends/llvm/codegen.py).
_KERNEL_CALL = re.compile(r"^; kernel (\d+): ([\w.$]+)$", re.MULTILINE)
# A CUDA kernel (backends/cuda): a __global__ function named k<index>_<kind>_<ops>.
_GLOBAL = re.compile(r'^extern "C" __global__ [^\n]*\n(k\d+_\w*)\(', re.MULTILINE)
_CUDA_KERNEL = re.compile(r"^k(\d+)_")


def _kinds(order: Sequence[Node]) -> dict[Node, str]:
    """Leaves by their op; "grad" for a node a chain-rule rule built and for what is computed
    from one (a parameter update), so the backward pass folds apart from the forward one;
    "op" for the rest. `order`: inputs first."""
    kinds: dict[Node, str] = {}
    for n in order:
        if n.op in ("placeholder", "parameter", "constant"):
            kinds[n] = n.op
        elif n.origin or any(kinds[i] == "grad" for i in n.inputs):
            kinds[n] = "grad"
        else:
            kinds[n] = "op"
    return kinds


def _view(name: str, title: str, graph: Graph, index: dict[Node, int],
          before: Graph | None = None) -> dict[str, Any]:
    """One graph to show, as indices into the shared node table. A pass step (`before`
    given) shows what the pass removed and added, marked, among the nodes it kept; a node
    rebuilt only because an input changed is shown once, as its new self."""
    order = graph.nodes()
    view: dict[str, Any] = {"name": name, "title": title,
                            "outputs": [index[o] for o in graph.outputs]}
    nodes = {index[n] for n in order}
    if before is not None:
        old = set(before.nodes())
        pair = rebuilt(old, order)
        gone = old - set(order) - set(pair.values())
        view["removed"] = sorted(index[n] for n in gone)
        view["added"] = sorted(index[n] for n in order if n not in old and n not in pair)
        view["rebuilt"] = sorted(index[n] for n in pair)
        nodes |= {index[n] for n in gone}
    view["nodes"] = sorted(nodes)
    return view


def graph_data(graph: Graph, steps: Sequence[tuple[str, Graph, Graph]] = (),
               extra: Sequence[tuple[str, str, Graph]] = ()) -> dict[str, Any]:
    """The nodes of `graph` (inputs first), then those only the pass `steps` (name, before,
    after) or the `extra` graphs (name, title, graph) hold, each with its type, source line,
    provenance and scope; the scope tree; the views: `graph` first, each step, each extra;
    `graph`'s outputs and updates by node index. Nodes are interned, so a node a pass kept
    is one entry shared by every view that shows it."""
    order = toposort(graph.inputs + graph.roots)
    others = [g for _, b, a in steps for g in (b, a)] + [g for _, _, g in extra]
    known = set(order)
    order += [n for n in toposort([r for g in others for r in g.inputs + g.roots])
              if n not in known]
    names = node_names(order)
    index = {n: i for i, n in enumerate(order)}
    named = node_scopes(order)
    scopes = parts(order, named, names)
    kinds = _kinds(order)
    # parts of an unnamed graph are alike by construction: not a repeated block
    records = group_repeats(scope_tree(scopes[n] for n in order), scopes,
                            3 if scopes is named else None)
    scope_id = {r["name"]: i for i, r in enumerate(records)}
    nodes = [{
        "name": "%" + names[n],
        "op": n.op,
        "text": _describe(n, names),
        "type": str(n.type),
        "shape": [d if isinstance(d, int) else None for d in n.shape],
        "dtype": str(n.dtype),
        "source": str(n.source) if n.source else None,
        "origin": n.origin,
        "kind": kinds[n],
        "scope": scope_id[scopes[n]],
        "inputs": [index[i] for i in n.inputs],
    } for n in order]
    views = [_view("graph", "the graph", graph, index)]
    views += [_view(name, f"pass {name}", after, index, before) for name, before, after in steps]
    views += [_view(name, title, g, index) for name, title, g in extra]
    return {
        "nodes": nodes,
        "scopes": records,
        "outputs": [index[o] for o in graph.outputs],
        "updates": [[index[p], index[v]] for p, v in graph.updates if p in index],
        "views": views,
        "index": index,
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
    if all(isinstance(d, int) for s in static for d in s):
        return static
    return None


def split_functions(source: str) -> dict[str, str]:
    """Each function of generated code by name, up to its closing brace: the `define`d
    functions of LLVM IR, the __global__ kernels of CUDA C."""
    out: dict[str, str] = {}
    for pattern in (_DEFINE, _GLOBAL):
        for m in pattern.finditer(source):
            end = source.find("\n}", m.end())
            out.setdefault(m.group(1), source[m.start():len(source) if end < 0 else end + 2])
    return out


def kernel_schedule(f: Any) -> Any:
    """The kernel plan for the shapes `f` ran with (see call_shapes), or None."""
    shapes = call_shapes(f)
    if shapes is None:
        return None
    try:
        return f.schedule(*shapes)
    except NotImplementedError:  # a primitive the scheduler has no lowering for
        return None


def kernels_data(schedule: Any, shapes: Any, functions: dict[str, str],
                 index: dict[Node, int], view: int, source: str = "") -> dict[str, Any]:
    """The kernel plan, each kernel linked to its function and to the nodes it computes
    (indices into the node table, shown in view number `view`)."""
    from graphc.schedule.printing import kernel_text
    if schedule is None:
        note = ("sizes are given at call time: call the function once (llvm backend), or "
                "give placeholders static sizes, to see kernels") if shapes is None else \
            "no kernel plan: the scheduler cannot lower a primitive of this program"
        return {"shapes": None, "items": [], "listing": "", "view": None, "note": note}
    by_index = {int(m.group(1)): m.group(2) for m in _KERNEL_CALL.finditer(source)
                if m.group(2) in functions}
    for name in functions:  # CUDA: a kernel's first launch names it
        cuda = _CUDA_KERNEL.match(name)
        if cuda:
            by_index.setdefault(int(cuda.group(1)), name)
    made = schedule.kernel_nodes or ((),) * len(schedule.kernels)
    items = [{"index": i, "kind": getattr(k, "kind", type(k).__name__),
              "text": "\n".join(kernel_text(i, k)), "function": by_index.get(i),
              "nodes": [index[n] for n in nodes]}
             for i, (k, nodes) in enumerate(zip(schedule.kernels, made))]
    return {"shapes": [list(s) for s in shapes], "items": items,
            "listing": schedule.listing(), "note": None, "view": view}


def explorer_data(target: Any, title: str | None = None) -> dict[str, Any]:
    """Everything the page shows. `target`: a compiled gc.Function (graph, each pass as a
    step, kernels linked to their nodes and code), or a Graph, tensor or list of tensors
    (the graph alone)."""
    from graphc.function import Function
    if isinstance(target, Function):
        source = target.source
        functions = split_functions(source)
        schedule = kernel_schedule(target)
        extra = []
        final = target.graph
        if schedule is not None and set(schedule.graph.nodes()) != set(final.nodes()):
            shapes = ", ".join(str(list(s)) for s in call_shapes(target) or ())
            extra.append(("kernels", f"specialised to the inputs {shapes} (the kernels' "
                                     "nodes)", schedule.graph))
        graph = graph_data(final, pass_steps(target.program.raw_graph, target.report), extra)
        index = graph.pop("index")
        graph["twins"] = [] if not extra else [
            [index[a], index[b]] for a, b in twins(final, call_shapes(target) or (),
                                                   schedule.graph).items()]
        return {
            "title": title or repr(target),
            "backend": target.backend,
            "graph": graph,
            "report": report_data(target.report),
            "kernels": kernels_data(schedule, call_shapes(target), functions, index,
                                    len(graph["views"]) - 1 if extra else 0, source),
            "code": {"text": source, "functions": [{"name": k, "text": v}
                                                   for k, v in functions.items()]},
        }
    try:
        g = _as_graph(target)
    except TypeError as e:
        raise TypeError("explore: f: " + str(e).removeprefix("show: ")) from None
    graph = graph_data(g)
    graph.pop("index")
    return {"title": title or "graphc graph", "backend": None, "graph": graph,
            "report": None, "kernels": None, "code": None}
