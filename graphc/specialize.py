"""A graph specialised to call-time sizes: every symbol becomes the size given (in shapes and
in attributes such as a reshape's target), so the scheduler and the native backends see
static shapes (one compiled plan per shape)."""
from __future__ import annotations

from typing import Sequence, cast

from graphc import sizes
from graphc.graph import Graph
from graphc.node import Dim, Node, carry_label, toposort
from graphc.ops.leaves import placeholder_node, scalar_constant
from graphc.ops.registry import rebuild
from graphc.region import Region, node_regions, with_regions


def bind_shapes(inputs: Sequence[Node], shapes: Sequence[tuple[Dim, ...]]
                ) -> dict[sizes.SizeVar, int]:
    """The value of every symbol in the inputs' shapes that `shapes` gives as an int."""
    values: dict[sizes.SizeVar, int] = {}
    for ph, shape in zip(inputs, shapes):
        for d, given in zip(ph.shape, shape):
            if isinstance(d, sizes.Size) and d.is_var() and isinstance(given, int):
                (var,) = d.atoms()
                values.setdefault(var, given)
    return values


def _specialized_attrs(node: Node, values: dict[sizes.SizeVar, int]):
    if not any(sizes.has_symbols(v) for v in node.attrs.values()):
        return None
    if not all(s in values for v in node.attrs.values() for s in sizes.symbols_of(
            v if isinstance(v, tuple) else (v,))):
        return None  # a size not given: stays symbolic
    return {k: sizes.substitute(v, values) for k, v in node.attrs.items()}


def specialize_graph(graph: Graph, shapes: Sequence[tuple[Dim, ...]]) -> Graph:
    """Rebuilds `graph` with its placeholders given `shapes` (checked by every shape rule);
    a symbol not given a size stays symbolic."""
    values = bind_shapes(graph.inputs, shapes)
    memo: dict[Node, Node] = {}
    for ph, shape in zip(graph.inputs, shapes):
        if ph.shape == tuple(shape):
            memo[ph] = ph
        else:
            memo[ph] = placeholder_node(tuple(shape), ph.dtype, ph.attrs["name"])
    _specialize_nodes(toposort(graph.inputs + graph.roots), values, memo)
    n_out = len(graph.outputs)
    roots = [memo[r] for r in graph.roots]
    updates = tuple((p, v) for (p, _), v in zip(graph.updates, roots[n_out:]))
    return Graph(tuple(memo[p] for p in graph.inputs), tuple(roots[:n_out]), updates)


class _Renaming(dict):
    """Symbol -> the symbol it becomes; every other symbol stays itself."""

    def __missing__(self, var: sizes.SizeVar) -> sizes.Size:
        return sizes.Size.of(var)

    def __contains__(self, var: object) -> bool:
        return True


def unify_symbols(graph: Graph) -> Graph:
    """`graph` with the symbols that its build took to be equal (two `None` batch sizes met
    by cross_entropy) made one, the first an input reads: code whose sizes stay symbols
    then sees that those axes agree. Each call checks the equality before code runs
    (graphc.size_binding)."""
    from graphc.size_binding import SizeBinder
    binder = SizeBinder(graph.inputs, graph.roots)
    order = {var: n for n, (_, _, var) in enumerate(binder.reads)}
    root: dict[sizes.SizeVar, sizes.SizeVar] = {}
    fixed: dict[sizes.SizeVar, int] = {}  # a symbol met a static size: it is that size

    def find(v: sizes.SizeVar) -> sizes.SizeVar:
        while v in root:
            v = root[v]
        return v

    def var(d: object) -> sizes.SizeVar | None:
        return next(d.atoms()) if isinstance(d, sizes.Size) and d.is_var() else None

    def scaled(d: object) -> tuple[int, sizes.SizeVar] | None:
        """(c, v) where d is c*v (a reshape(-1) of a (T, None) sequence: 64*?)."""
        if not isinstance(d, sizes.Size) or len(d.terms) != 1:
            return None
        (mono, coeff), = d.terms
        if len(mono) != 1 or not isinstance(mono[0], sizes.SizeVar):
            return None
        return coeff, mono[0]
    for check in binder.checks:
        a, b = var(check.a), var(check.b)
        if a is None and b is None:  # c*a == c*b (the same c): a == b
            sa, sb = scaled(check.a), scaled(check.b)
            if sa is not None and sb is not None and sa[0] == sb[0]:
                a, b = sa[1], sb[1]
        if a is not None and b is not None:
            a, b = find(a), find(b)
            if a != b:
                first, second = sorted((a, b), key=lambda v: order.get(v, len(order)))
                root[second] = first
        elif a is not None and isinstance(check.b, int):
            fixed[a] = check.b
        elif b is not None and isinstance(check.a, int):
            fixed[b] = check.a
    for v, n in list(fixed.items()):
        fixed[find(v)] = n
    if not root and not fixed:
        return graph
    values = _Renaming({v: sizes.Size.of(find(v)) for v in root})
    for v in list(values) + list(fixed):
        if find(v) in fixed:
            values[v] = fixed[find(v)]
    shapes = [tuple(cast(Dim, sizes.substitute(d, values)) for d in p.shape)
              for p in graph.inputs]
    memo: dict[Node, Node] = {}
    for ph, shape in zip(graph.inputs, shapes):
        memo[ph] = ph if ph.shape == shape else placeholder_node(shape, ph.dtype,
                                                                  ph.attrs["name"])
    _specialize_nodes(toposort(graph.inputs + graph.roots), values, memo)
    n_out = len(graph.outputs)
    roots = [memo[r] for r in graph.roots]
    updates = tuple((p, v) for (p, _), v in zip(graph.updates, roots[n_out:]))
    return Graph(tuple(memo[p] for p in graph.inputs), tuple(roots[:n_out]), updates)


def _specialize_nodes(nodes: Sequence[Node], values: dict[sizes.SizeVar, int],
                      memo: dict[Node, Node]) -> None:
    """Each node rebuilt with its sizes given `values` (memo: old node -> new), the bodies
    of loops too: a body's sizes may be expressions of the program's (a checkpointed scan's
    segment of isqrt(T) steps)."""
    for node in nodes:
        if node in memo:
            continue
        attrs = _specialized_attrs(node, values)
        regions = node_regions(node)
        if regions:
            bodies = [_specialize_region(r, values) for r in regions]
            if any(b is not r for b, r in zip(bodies, regions)):
                attrs = with_regions(attrs if attrs is not None else node.attrs, bodies)
        if node.op == "dim_size" and attrs is not None and isinstance(attrs["size"], int):
            new = scalar_constant(attrs["size"], node.dtype)
        elif node.inputs or attrs is not None:
            new = rebuild(node, [memo[i] for i in node.inputs], attrs)
        else:
            new = node
        memo[node] = carry_label(node, new)


def _specialize_region(region: Region, values: dict[sizes.SizeVar, int]) -> Region:
    """A body with every size that `values` determines made an int (itself if none)."""
    memo: dict[Node, Node] = {}
    for ph in region.inputs:
        known = all(v in values for v in sizes.symbols_of(ph.shape))
        shape = tuple(d.evaluate(values) if isinstance(d, sizes.Size) and known else d
                      for d in ph.shape)
        memo[ph] = ph if shape == ph.shape else placeholder_node(
            shape, ph.dtype, ph.attrs["name"])
    _specialize_nodes(toposort(list(region.inputs + region.outputs)), values, memo)
    if all(memo[n] is n for n in region.inputs + region.outputs):
        return region
    return Region(tuple(memo[p] for p in region.inputs), tuple(memo[o] for o in region.outputs))
