"""Pictures of graphs through Graphviz: gc.render (SVG/PNG/PDF files) and notebook views."""
from __future__ import annotations

import os
import shutil
from typing import Any

from graphc.function import Function
from graphc.graph import Graph
from graphc.node import Node, toposort
from graphc.printing import _as_graph, _describe, _dot_escape, node_names
from graphc.runtime.atomic_file import write_atomic

FORMATS = {".svg": "svg", ".png": "png", ".pdf": "pdf"}
FOLD_ABOVE = 150  # gc.render draws at most about this many boxes per graph before folding
NOTEBOOK_FOLD_ABOVE = 80  # notebook views stay small

_LEAF_STYLE = {"placeholder": 'style=filled, fillcolor="#cfe2ff"',
               "parameter": 'style=filled, fillcolor="#d1e7dd"',
               "constant": 'style=filled, fillcolor="#eeeeee", fontsize=8'}
_FORWARD_STYLE = 'style=filled, fillcolor="#ffffff"'
_GRAD_STYLE = 'style="filled,rounded", fillcolor="#fff3cd", color="#b8860b"'
_FOLDED_STYLE = {False: 'shape=box3d, style=filled, fillcolor="#e2e3e5"',
                 True: 'shape=box3d, style=filled, fillcolor="#ffe08a", color="#b8860b"'}


def _check_graphviz() -> Any:
    """The graphviz package, once it and the `dot` program are both there."""
    if shutil.which("dot") is None:
        raise RuntimeError("gc.render needs Graphviz's `dot` program, which is not on PATH: "
                           "install it (apt-get install graphviz, brew install graphviz, or "
                           "conda install graphviz)")
    try:
        import graphviz
    except ImportError:
        raise RuntimeError("gc.render needs the Python package graphviz: "
                           "pip install graphviz (or pip install graphc[viz])") from None
    return graphviz


def _targets(obj: Any, optimized: bool | None) -> list[tuple[str, Graph]]:
    """The graphs to draw, each with a title: two for a compiled function (before and after
    optimization) unless `optimized` picks one."""
    if isinstance(obj, Function):
        raw, opt = ("before optimization", obj.raw_graph), ("after optimization", obj.graph)
        if optimized is None:
            return [raw, opt]
        if not isinstance(optimized, bool):
            raise TypeError(f"render: optimized must be None, True or False, got {optimized!r}")
        return [opt if optimized else raw]
    if optimized is not None:
        raise ValueError("render: optimized= applies to a compiled gc.Function only, got a "
                         f"{type(obj).__name__}")
    if isinstance(obj, Graph):
        return [("", obj)]
    items = list(obj) if isinstance(obj, (list, tuple)) else [obj]
    for i, item in enumerate(items):
        if not isinstance(getattr(item, "node", item), Node):
            where = f" at position {i}" if isinstance(obj, (list, tuple)) else ""
            raise TypeError("render: expected a Tensor, a list of Tensors, a Graph or a "
                            f"compiled gc.Function, got {type(item).__name__}{where}")
    if not items:
        raise ValueError("render: got an empty list of tensors, nothing to draw")
    return [("", _as_graph(obj))]


# -- scopes: which module a node belongs to ---------------------------------------------------

def _leaf_scope(node: Node) -> tuple[str, ...] | None:
    """A parameter or placeholder named 'block1.conv.W' lives in scope ('block1', 'conv')."""
    if node.op not in ("parameter", "placeholder"):
        return None
    parts = str(node.attrs.get("name") or "").split(".")
    return tuple(parts[:-1]) if len(parts) > 1 else None


def scopes(order: list[Node]) -> dict[Node, tuple[str, ...] | None]:
    """Each node's scope, from the named leaves it depends on. A forward node joins the scope
    that enters the data flow at it: among its inputs' scopes, one that no other input
    depends on, the input with the fewest scopes behind it first (so a conv's matmul joins
    the conv's weight, not the activations coming from the layer before). A gradient node
    joins the same way the scope of the forward values its rule reads, so a layer's backward
    pass sits with that layer; with only gradient inputs, the one furthest down the backward
    flow (the most gradient scopes behind it)."""
    scope: dict[Node, tuple[str, ...] | None] = {}
    deps: dict[Node, frozenset] = {}  # scopes of the forward values a node depends on
    gdeps: dict[Node, frozenset] = {}  # scopes of the gradient values it depends on
    empty: frozenset = frozenset()
    for node in order:
        if not node.inputs:
            s = _leaf_scope(node)
            scope[node], gdeps[node] = s, empty
            deps[node] = frozenset([s]) if s is not None else empty
            continue
        fwd = [i for i in node.inputs if scope[i] is not None and not i.origin]
        bwd = [i for i in node.inputs if scope[i] is not None and i.origin]
        if node.origin is None:
            fwd = fwd + bwd
        if fwd:
            fresh = [i for i in fwd
                     if not any(scope[i] in deps[j] for j in fwd if scope[j] != scope[i])]
            # ties go to a named leaf: its scope is the one entering here
            scope[node] = scope[min(fresh or fwd, key=lambda i: (len(deps[i]), bool(i.inputs)))]
        elif bwd:
            scope[node] = scope[max(bwd, key=lambda i: len(gdeps[i]))]
        else:
            scope[node] = None
        deps[node] = empty.union(*(deps[i] for i in node.inputs))
        gdeps[node] = empty.union(*(gdeps[i] for i in node.inputs))
        if scope[node] is not None:
            (gdeps if node.origin else deps)[node] |= {scope[node]}
    return scope


def _fold_plan(order: list[Node], threshold: int | None
               ) -> dict[Node, tuple[tuple[str, ...], bool]]:
    """Which nodes collapse into which box (scope, is gradient): none when the graph has at
    most `threshold` nodes; else the deepest scope level that draws at most `threshold`
    boxes (level 1, the top modules, if none does). Constants go with the box of a user."""
    if threshold is None or len(order) <= threshold:
        return {}
    full = scopes(order)
    depth = max((len(s) for s in full.values() if s), default=0)
    grads: set[Node] = set()  # built by a rule, or computed from such (a parameter update)
    for n in order:
        if n.origin is not None or any(i in grads for i in n.inputs):
            grads.add(n)
    plan: dict[Node, tuple[tuple[str, ...], bool]] = {}
    for level in range(depth, 0, -1):
        plan = {n: (s[:level], n in grads) for n, s in full.items() if s}
        loose = sum(1 for n in order if n not in plan and n.op != "constant")
        if len(set(plan.values())) + loose <= threshold:
            break
    return plan


# -- DOT -----------------------------------------------------------------------------------

def _tooltip(node: Node, provenance: bool) -> str:
    parts = [f"{node.op}: shape {node.shape}, dtype {node.dtype}"]
    if node.source is not None:
        parts.append(f"built at {node.source}")
    if provenance and node.origin:
        parts.append(f"rule: {node.origin}")
    return "\\n".join(_dot_escape(p) for p in parts)  # DOT's escaped line break


def _graph_lines(graph: Graph, prefix: str, provenance: bool, threshold: int | None,
                 indent: str) -> tuple[list[str], bool]:
    """DOT statements for one graph, node ids prefixed; and whether anything was folded."""
    order = toposort(graph.inputs + graph.roots)
    names = node_names(order)
    plan = _fold_plan(order, threshold)
    outputs = set(graph.outputs)
    index = {n: i for i, n in enumerate(order)}
    boxes: dict[tuple[tuple[str, ...], bool], list[Node]] = {}
    for node, key in plan.items():
        boxes.setdefault(key, []).append(node)
    box_id = {key: f"{prefix}f{i}" for i, key in enumerate(boxes)}

    def ident(node: Node) -> str | None:
        if node in plan:
            return box_id[plan[node]]
        if plan and node.op == "constant":
            return None  # a folded picture leaves unscoped constants out
        return f"{prefix}n{index[node]}"

    lines: list[str] = []
    clusters: dict[tuple[str, ...], list[str]] = {}
    full = scopes(order) if not plan else {}
    for node in order:
        if node in plan or ident(node) is None:
            continue
        label = f"%{names[node]}\\n{_dot_escape(_describe(node, names))}\\n{node.type}"
        if provenance and node.origin:
            label += f"\\n({_dot_escape(node.origin)})"
        style = _LEAF_STYLE.get(node.op, _GRAD_STYLE if node.origin else _FORWARD_STYLE)
        if node in outputs:
            style += ", penwidth=2.5"
        stmt = (f'{ident(node)} [label="{label}", tooltip="{_tooltip(node, provenance)}", '
                f"{style}];")
        scope = full.get(node)
        if scope:
            clusters.setdefault(scope, []).append(stmt)
        else:
            lines.append(indent + stmt)
    for k, (scope, stmts) in enumerate(clusters.items()):
        title = _dot_escape(".".join(scope))
        lines.append(f'{indent}subgraph cluster_{prefix}s{k} {{ label="{title}"; '
                     'style=dashed; color="#888888";')
        lines.extend(indent + "  " + s for s in stmts)
        lines.append(indent + "}")
    for (scope, grad), members in boxes.items():
        title = ("\u2207 " if grad else "") + ".".join(scope)
        ops = sorted({n.op for n in members})
        summary = ", ".join(ops[:4]) + (", ..." if len(ops) > 4 else "")
        tip = _dot_escape(f"{title}: {len(members)} nodes") + "\\nops: " + \
            _dot_escape(", ".join(ops))
        lines.append(f'{indent}{box_id[(scope, grad)]} [label="{_dot_escape(title)}\\n'
                     f'{len(members)} nodes\\n{_dot_escape(summary)}", tooltip="{tip}", '
                     f"{_FOLDED_STYLE[grad]}];")
    edges: set[tuple[str, str]] = set()
    for node in order:
        dst = ident(node)
        for inp in node.inputs:
            src = ident(inp)
            if src is None or dst is None or src == dst or (src, dst) in edges:
                continue
            edges.add((src, dst))
            lines.append(f"{indent}{src} -> {dst};")
    for param, value in graph.updates:
        # between folded boxes an update only restates that a module's gradient box
        # updates its weights, across the whole picture: drawn between nodes only
        src, dst = ident(value), ident(param)
        if src is not None and dst is not None and src != dst and not (
                value in plan and param in plan):
            lines.append(f'{indent}{src} -> {dst} [style=dashed, label="update", '
                         'constraint=false];')
    return lines, bool(plan)


def _legend(folded: bool) -> list[str]:
    rows = [("lg_in", "input", _LEAF_STYLE["placeholder"]),
            ("lg_par", "parameter", _LEAF_STYLE["parameter"]),
            ("lg_c", "constant", _LEAF_STYLE["constant"]),
            ("lg_f", "forward op", _FORWARD_STYLE),
            ("lg_g", "gradient op\\n(chain rule)", _GRAD_STYLE)]
    if folded:
        rows += [("lg_ff", "folded scope", _FOLDED_STYLE[False]),
                 ("lg_fg", "\u2207 folded gradient\\nof a scope", _FOLDED_STYLE[True])]
    lines = ['  subgraph cluster_legend { label="legend"; style=solid; color="#bbbbbb"; '
             "rank=same;"]
    lines += [f'    {ident} [label="{text}", {style}];' for ident, text, style in rows]
    lines += ["    " + " -> ".join(r[0] for r in rows) + " [style=invis];", "  }"]
    return lines


def render_dot(obj: Any, *, provenance: bool = False, fold: bool | int = True,
               optimized: bool | None = None) -> str:
    """The DOT text gc.render draws (see there for the arguments)."""
    if fold is True:
        threshold: int | None = FOLD_ABOVE
    elif fold is False:
        threshold = None
    elif isinstance(fold, int) and fold > 0:
        threshold = fold
    else:
        raise ValueError(f"render: fold must be True, False or a positive node count, "
                         f"got {fold!r}")
    targets = _targets(obj, optimized)
    body: list[str] = []
    folded = False
    for k, (title, graph) in enumerate(targets):
        if len(targets) > 1:
            nodes = len(toposort(graph.inputs + graph.roots))
            body.append(f'  subgraph cluster_g{k} {{ label="{title} ({nodes} nodes)"; '
                        'fontsize=14; style=rounded; color="#444444";')
            lines, f = _graph_lines(graph, f"g{k}", provenance, threshold, "    ")
            body += lines + ["  }"]
        else:
            lines, f = _graph_lines(graph, "g0", provenance, threshold, "  ")
            body += lines
        folded = folded or f
    head = ["digraph graphc {", "  rankdir=TB; compound=true; newrank=true;",
            '  node [shape=box, fontname="Helvetica", fontsize=10];',
            '  edge [color="#555555", arrowsize=0.6];']
    return "\n".join(head + _legend(folded) + body + ["}"])


def render(obj: Any, path: str | os.PathLike, *, provenance: bool = False,
           fold: bool | int = True, optimized: bool | None = None) -> str:
    """Draws `obj` (a tensor, a list of tensors, a Graph or a compiled gc.Function) into
    `path` as SVG, PNG or PDF, chosen by the suffix, through Graphviz; returns the path.

    Gradient nodes (built by a chain-rule rule) are drawn rounded and amber, forward nodes
    white, with a legend; each node's tooltip gives its shape, dtype and source line, and
    provenance=True adds the rule that made it (tooltip and label). A compiled function shows
    its graph before and after optimization side by side (optimized=True or False: one).
    fold: graphs of more than 150 nodes (or `fold` nodes, if an int) collapse into one box
    per module scope (from dotted parameter names such as 'block1.conv.W'), forward and
    gradient apart; fold=False draws every node."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"render: path must be a str or os.PathLike, got {type(path).__name__}")
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in FORMATS:
        raise ValueError(f"render: path {path!r} has suffix {suffix!r}; use one of "
                         f"{', '.join(FORMATS)}")
    dot = render_dot(obj, provenance=provenance, fold=fold, optimized=optimized)
    data = _check_graphviz().Source(dot).pipe(format=FORMATS[suffix])
    write_atomic(path, data)
    return path


def svg_text(obj: Any, fold: int = NOTEBOOK_FOLD_ABOVE) -> str | None:
    """The picture as SVG text, for notebooks; None when Graphviz is missing (the notebook
    then shows the text repr instead of an error)."""
    try:
        graphviz = _check_graphviz()
    except RuntimeError:
        return None
    svg = graphviz.Source(render_dot(obj, fold=fold)).pipe(format="svg", encoding="utf-8")
    return svg[svg.find("<svg"):]  # a notebook wants the element, not the XML prologue


def html_view(obj: Any) -> str | None:
    """The SVG in a scrolling frame, for notebooks that prefer HTML."""
    svg = svg_text(obj)
    if svg is None:
        return None
    return f'<div style="max-width:100%; max-height:800px; overflow:auto">{svg}</div>'
