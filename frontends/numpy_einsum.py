"""numpy.einsum over Tensors: diagonals by masks, sums, and pairwise contractions as
transpose/reshape/matmul (or broadcast-multiply-sum where sizes are known only at call time)."""
from __future__ import annotations

import string
from typing import Any

import numpy as np

from graphc.node import Dim, Node
from graphc.ops import make
from graphc.ops.leaves import constant_node, scalar_constant
from graphc.frontends.convert import operands
from graphc.frontends.functions import _shape_error
from graphc.frontends.tensor import Tensor

Labels = list[str]


def _parse(subscripts: str, nodes: list[Node]) -> tuple[list[Labels], Labels]:
    if not isinstance(subscripts, str):
        raise TypeError(f"einsum: subscripts must be a string, got {subscripts!r}")
    spec = subscripts.replace(" ", "")
    if "." in spec:
        raise ValueError(f"einsum: '...' (ellipsis) is not supported, in {subscripts!r}")
    lhs, arrow, rhs = spec.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(nodes):
        raise ValueError(f"einsum: subscripts {subscripts!r} name {len(terms)} operand(s), "
                         f"got {len(nodes)}")
    for term in terms + [rhs]:
        bad = [c for c in term if c not in string.ascii_letters]
        if bad:
            raise ValueError(f"einsum: {bad[0]!r} in subscripts {subscripts!r} is not a "
                             "letter")
    sizes: dict[str, Dim] = {}
    for i, (term, node) in enumerate(zip(terms, nodes)):
        if len(term) != node.ndim:
            raise ValueError(f"einsum: operand {i} has {node.ndim} dimension(s) but "
                             f"subscripts {subscripts!r} give it {len(term)} ({term!r})")
        for label, d in zip(term, node.shape):
            known = sizes.get(label)
            if isinstance(known, int) and isinstance(d, int) and known != d:
                raise _shape_error("einsum", f"label {label!r} of subscripts {subscripts!r} "
                                   f"has sizes {known} and {d}", *nodes)
            sizes[label] = d if known is None or not isinstance(known, int) else known
    if arrow:
        out = list(rhs)
        if len(set(out)) != len(out):
            raise ValueError(f"einsum: output subscripts of {subscripts!r} repeat a label")
        missing = [c for c in out if c not in sizes]
        if missing:
            raise ValueError(f"einsum: output label {missing[0]!r} of {subscripts!r} is in "
                             "no operand")
    else:  # implicit: the labels used once, in alphabetical order (numpy's)
        flat = "".join(terms)
        out = sorted(c for c in set(flat) if flat.count(c) == 1)
    return [list(t) for t in terms], out


def _diagonals(node: Node, labels: Labels, subscripts: str) -> tuple[Node, Labels]:
    """A label repeated within one operand: keep its diagonal (where, not a product, so an
    off-diagonal inf or nan stays out) and sum the repeated axis away."""
    while len(set(labels)) != len(labels):
        label = next(c for c in labels if labels.count(c) > 1)
        p = labels.index(label)
        q = labels.index(label, p + 1)
        n = node.shape[p]
        if not isinstance(n, int):
            raise _shape_error("einsum", f"the diagonal of label {label!r} in {subscripts!r} "
                               "needs a size known when building the graph", node)
        shape = [1] * node.ndim
        shape[p] = shape[q] = n
        mask = constant_node(np.eye(n, dtype=bool).reshape(shape))
        node = make("where", mask, node, scalar_constant(0, node.dtype))
        node = make("sum", node, axes=(q,), keepdims=False)
        labels = labels[:q] + labels[q + 1:]
    return node, labels


def _sum_labels(node: Node, labels: Labels, drop: set[str]) -> tuple[Node, Labels]:
    axes = tuple(i for i, c in enumerate(labels) if c in drop)
    if not axes:
        return node, labels
    return make("sum", node, axes=axes, keepdims=False), [c for c in labels if c not in drop]


def _permute(node: Node, labels: Labels, order: Labels) -> Node:
    perm = tuple(labels.index(c) for c in order)
    return node if perm == tuple(range(len(perm))) else make("transpose", node, perm=perm)


def _contract(a: Node, la: Labels, b: Node, lb: Labels,
              keep: set[str]) -> tuple[Node, Labels]:
    """a and b multiplied over shared labels, summing those not in `keep`."""
    batch = [c for c in la if c in lb and c in keep]
    summed = [c for c in la if c in lb and c not in keep]
    only_a = [c for c in la if c not in lb]
    only_b = [c for c in lb if c not in la]
    size = {c: d for c, d in zip(la + lb, list(a.shape) + list(b.shape)) if isinstance(d, int)}
    static = all(c in size for c in batch + summed + only_a + only_b)
    if static and a.dtype.kind == "f":
        def prod(cs: Labels) -> int:
            return int(np.prod([size[c] for c in cs], dtype=np.int64))
        a3 = make("reshape", _permute(a, la, batch + only_a + summed),
                  shape=(prod(batch), prod(only_a), prod(summed)))
        b3 = make("reshape", _permute(b, lb, batch + summed + only_b),
                  shape=(prod(batch), prod(summed), prod(only_b)))
        out = make("reshape", make("matmul", a3, b3),
                   shape=tuple(size[c] for c in batch + only_a + only_b))
        return out, batch + only_a + only_b
    # broadcast both to (batch, only_a, only_b, summed), multiply, sum
    order = batch + only_a + only_b + summed

    def spread(x: Node, lx: Labels) -> Node:
        mine = [c for c in order if c in lx]
        x = _permute(x, lx, mine)
        absent = tuple(i for i, c in enumerate(order) if c not in lx)
        return make("expand_dims", x, axes=absent) if absent else x
    product = make("mul", spread(a, la), spread(b, lb))
    return _sum_labels(product, order, set(summed))


def einsum(subscripts: str, *tensors: Any) -> Tensor:
    """numpy.einsum with explicit ("ij,jk->ik") or implicit ("ij,jk") output; operands are
    promoted to one dtype. Repeated labels in one operand take diagonals."""
    if not tensors:
        raise ValueError("einsum: needs at least one operand")
    nodes = operands(list(tensors), "einsum")
    terms, out = _parse(subscripts, nodes)
    prepared = []
    for k, (node, labels) in enumerate(zip(nodes, terms)):
        node, labels = _diagonals(node, labels, subscripts)
        elsewhere = set(out).union(*(terms[j] for j in range(len(terms)) if j != k))
        prepared.append(_sum_labels(node, labels, set(labels) - elsewhere))
    node, labels = prepared[0]
    for k in range(1, len(prepared)):
        keep = set(out).union(*(t for _, t in prepared[k + 1:]))
        node, labels = _contract(node, labels, prepared[k][0], prepared[k][1], keep)
    node, labels = _sum_labels(node, labels, set(labels) - set(out))
    return Tensor(_permute(node, labels, out))
