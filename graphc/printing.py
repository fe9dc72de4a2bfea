"""Human-readable views of graphs: a text listing (gc.show) and Graphviz DOT (gc.to_dot)."""
from __future__ import annotations

import re
from typing import Any, Iterable

from graphc.dot_text import dot_id, dot_label
from graphc.graph import Graph
from graphc.node import Node, label_of, toposort
from graphc.region import Region, region_attrs


def _as_graph(target: Any) -> Graph:
    """Accepts a Tensor, a Node, a list of them, a Graph or a compiled Function."""
    if isinstance(target, Graph):
        return target
    graph = getattr(target, "graph", None)
    if isinstance(graph, Graph):
        return graph
    items = list(target) if isinstance(target, (list, tuple)) else [target]
    nodes = []
    for i, item in enumerate(items):
        node = getattr(item, "node", item)
        if not isinstance(node, Node):
            raise TypeError(f"show: expected a Tensor, a list of Tensors, a Graph or a "
                            f"compiled function, got {type(item).__name__} at position {i}")
        nodes.append(node)
    return Graph((), tuple(nodes))


def _label(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_./]", "_", name)


def node_names(order: Iterable[Node]) -> dict[Node, str]:
    """SSA names: leaves by their user names (made unique), other nodes by number."""
    names: dict[Node, str] = {}
    used: set[str] = set()
    counter = 0
    for node in order:
        base = (node.attrs.get("name") if node.op in ("placeholder", "parameter")
                else label_of(node))
        if base:
            name, k = _label(base), 1
            while name in used:
                k += 1
                name = f"{_label(base)}_{k}"
        else:
            name = str(counter)
            counter += 1
        used.add(name)
        names[node] = name
    return names


def format_attr(key: str, value: Any) -> str:
    return f"{key}={value}"


def _describe(node: Node, names: dict[Node, str]) -> str:
    args = ", ".join(f"%{names[i]}" for i in node.inputs)
    if node.op == "constant":
        return f"constant {node.attrs['value']!r}"
    if node.op in ("placeholder", "parameter"):
        return node.op
    shown = {k: v for k, v in node.attrs.items() if k not in ("name",)}
    attrs = ", ".join(format_attr(k, v) for k, v in sorted(shown.items()))
    return f"{node.op}({args})" + (f" {{{attrs}}}" if attrs else "")


def _listing(order: list[Node], outputs: tuple[Node, ...], source: bool, provenance: bool,
             indent: str) -> list[str]:
    """One line per node, each region body listed under the node that carries it."""
    names = node_names(order)
    rows = [(f"%{names[n]}", str(n.type), _describe(n, names), n) for n in order]
    w_name = max((len(r[0]) for r in rows), default=0)
    w_type = max((len(r[1]) for r in rows), default=0)
    lines = []
    listed: dict[Region, str] = {}  # a body listed once: sibling nodes share it (one loop)
    for name, type_, desc, node in rows:
        line = f"{indent}{name:<{w_name}} : {type_:<{w_type}} = {desc}"
        notes = []
        if provenance and node.origin:
            notes.append(node.origin)
        if source and node.source:
            notes.append(str(node.source))
        if notes:
            line += "  # " + "; ".join(notes)
        lines.append(line)
        for key, region in zip(*region_attrs(node.attrs)):
            if region in listed:
                lines.append(f"{indent}    {key}: as in {listed[region]}")
                continue
            listed[region] = name
            body = toposort(region.inputs + region.outputs)
            lines.append(f"{indent}    {key}:")
            lines.extend(_listing(body, region.outputs, source, provenance, indent + "      "))
    if outputs:
        lines.append(f"{indent}return " + ", ".join(f"%{names[o]}" for o in outputs))
    return lines


def show(target: Any, source: bool = False, provenance: bool = False) -> str:
    """A listing of the graph behind `target`: one node a line, its name, type and op, and
    under a node that carries regions (loop or conditional bodies), each body indented.
    source=True adds the user's line that built each node; provenance=True adds, for
    gradient nodes, the derivative rule that made them."""
    graph = _as_graph(target)
    order = toposort(graph.inputs + graph.roots)
    lines = _listing(order, graph.outputs, source, provenance, "")
    names = node_names(order)
    for param, value in graph.updates:
        lines.append(f"update %{names[param]} <- %{names[value]}")
    return "\n".join(lines)


def _dot_escape(text: str) -> str:
    return dot_label(text)


def to_dot(target: Any, name: str = "graphc") -> str:
    """The same graph as Graphviz DOT text (render with `dot -Tsvg`)."""
    graph = _as_graph(target)
    order = toposort(graph.inputs + graph.roots)
    names = node_names(order)
    outputs = set(graph.outputs)
    lines = [f'digraph "{dot_id(name)}" {{', "  rankdir=TB;",
             '  node [shape=box, fontname="Helvetica", fontsize=10];']
    styles = {"placeholder": ', style=filled, fillcolor="#cfe2ff"',
              "parameter": ', style=filled, fillcolor="#d1e7dd"',
              "constant": ', style=filled, fillcolor="#eeeeee"'}
    for i, node in enumerate(order):
        label = f"%{names[node]}\\n{_dot_escape(_describe(node, names))}\\n{node.type}"
        style = styles.get(node.op, "")
        if not style and node.origin:  # built by a derivative rule
            style = ', style=filled, fillcolor="#fff3cd"'
        if node in outputs:
            style += ", penwidth=2"
        lines.append(f'  n{i} [label="{label}"{style}];')
    index = {n: i for i, n in enumerate(order)}
    for node in order:
        for k, inp in enumerate(node.inputs):
            lines.append(f"  n{index[inp]} -> n{index[node]} [label=\"{k}\"];"
                         if len(node.inputs) > 1 else f"  n{index[inp]} -> n{index[node]};")
    for param, value in graph.updates:
        lines.append(f'  n{index[value]} -> n{index[param]} [style=dashed, label="update"];')
    lines.append("}")
    return "\n".join(lines)
