"""A table lookup followed by a projection, done on the table: when a table of V rows is
read at n > V indices and the rows are then multiplied by a matrix, multiply the table
once and look the products up (an embedding followed by a linear layer, e.g. the char-LSTM's
x_t @ W_ih over every step). Its gradient gets the same treatment: the rows' gradient is
summed per table row first (a scatter-add of n rows), and both the weight's gradient
(E^T S) and the table's (S W^T) are products with that V-row sum S, not with n rows.

    take(E, ids) @ W                    -> take(E @ W, ids)
    take(E, ids)^T @ G                  -> E^T @ scatter_add(ids, G)
    scatter_add(ids, G @ W)             -> scatter_add(ids, G) @ W
    take(T, ids) + b  (b along rows)    -> take(T + b, ids)

Each fires only where the products over V rows and the n-row copy cost well under half
the n-row product (the lookups repeat rows). The table's sizes must be numbers; the
number of lookups may be a call-time size (a None batch), judged at the representative
binding (a choice of speed: the rewrites are equalities for every size)."""
from __future__ import annotations

import math

from graphc.node import Node, building_for
from graphc.ops.leaves import scalar_constant
from graphc.sizes import Dim, hint
from graphc.ops.registry import make
from graphc.passes.patterns import Op, Var
from graphc.passes.rewrite import Rule, rule


def _rows_lookup(x: Node) -> tuple[Node, Node] | None:
    """(E, ids) where x is take(E, ids, axis=0) of a matrix E, flattened to (n, D) rows
    (or already 2-D because ids is a vector); else None."""
    take = x.inputs[0] if x.op == "reshape" else x
    if take.op != "take" or take.attrs["axis"] != 0:
        return None
    table, ids = take.inputs
    if table.ndim != 2 or x.ndim != 2 or x.shape[1] != table.shape[1]:
        return None
    if not all(isinstance(s, int) for s in table.shape) or \
            x.shape[0] != math.prod(ids.shape):
        return None
    return table, ids


def _pays(rows: Dim, lookups: Dim, inner: Dim) -> bool:
    """A product over `rows` table rows and a copy of `lookups` rows against a product over
    `lookups` rows (per output column, `inner` multiply-adds a row). A size known only at
    call time is taken at the representative binding; with none set, the graph stays as
    it is."""
    try:
        rows, lookups, inner = hint(rows), hint(lookups), hint(inner)
    except TypeError:
        return False
    return rows * inner + lookups < lookups * inner / 2


def _row_sums(ids: Node, g: Node, rows: int) -> Node:
    """S[v] = the sum of g's rows whose index is v: (rows, K) from g (n, K)."""
    zeros = make("broadcast_to", scalar_constant(0, g.dtype), shape=(rows, g.shape[1]))
    per_index = make("reshape", g, shape=tuple(ids.shape) + (g.shape[1],))
    return make("scatter_add", zeros, ids, per_index, axis=0)


@rule("lookup_then_project", Op("matmul", Var("x"), Var("w")),
      "take(E, ids) @ W -> take(E @ W, ids) where ids repeat E's rows")
def _lookup_then_project(b, node):
    found = _rows_lookup(b["x"])
    w = b["w"]
    if found is None or w.ndim != 2 or not isinstance(w.shape[1], int):
        return None
    table, ids = found
    if not _pays(table.shape[0], node.shape[0], table.shape[1]):
        return None
    with building_for(node.origin):
        projected = make("take", make("matmul", table, w), ids, axis=0)
        return make("reshape", projected, shape=node.shape)


@rule("lookup_weight_grad", Op("matmul", Op("transpose", Var("x"), perm=(1, 0)), Var("g")),
      "take(E, ids)^T @ G -> E^T @ scatter_add(ids, G) where ids repeat E's rows")
def _lookup_weight_grad(b, node):
    found = _rows_lookup(b["x"])
    g = b["g"]
    if found is None or g.ndim != 2 or not isinstance(g.shape[1], int):
        return None
    table, ids = found
    if not _pays(table.shape[0], g.shape[0], table.shape[1]):
        return None
    with building_for(node.origin):
        sums = _row_sums(ids, g, table.shape[0])
        return make("matmul", make("transpose", table, perm=(1, 0)), sums)


@rule("lookup_table_grad", Op("scatter_add", Var("ref"), Var("ids"), Var("upd")),
      "scatter_add(ids, G @ W) -> scatter_add(ids, G) @ W where ids repeat rows")
def _lookup_table_grad(b, node):
    ref, ids, upd = b["ref"], b["ids"], b["upd"]
    product = upd.inputs[0] if upd.op == "reshape" else upd
    if node.attrs["axis"] != 0 or ref.ndim != 2 or product.op != "matmul":
        return None
    g, w = product.inputs
    if g.ndim != 2 or w.ndim != 2 or tuple(upd.shape) != tuple(ids.shape) + (w.shape[1],):
        return None
    if not all(isinstance(s, int) for s in g.shape[1:] + w.shape + ref.shape):
        return None
    if not _pays(ref.shape[0], g.shape[0], w.shape[1]):
        return None
    with building_for(node.origin):
        return make("matmul", _row_sums(ids, g, ref.shape[0]), w)


def _along_rows(bias: Node, table: Node) -> bool:
    """bias broadcasts over the lookup's leading axes: it has at most the table's row
    length as its shape (a vector of it, or a scalar)."""
    return bias.ndim <= 1 and bias.dtype == table.dtype and (
        bias.ndim == 0 or bias.shape[0] == table.shape[1])


@rule("lookup_then_add", Op("add", Op("take", Var("t"), Var("ids"), axis=0), Var("bias")),
      "take(T, ids) + b -> take(T + b, ids) where b is per column and ids repeat T's rows")
def _lookup_then_add(b, node):
    table, ids, bias = b["t"], b["ids"], b["bias"]
    if table.ndim != 2 or not _along_rows(bias, table) or node.shape != node.inputs[0].shape:
        return None
    if not all(isinstance(s, int) for s in table.shape):
        return None
    try:
        if table.shape[0] * 2 > hint(math.prod(ids.shape)):
            return None
    except TypeError:  # (a call-time size and no representative binding)
        return None
    with building_for(node.origin):
        return make("take", make("add", table, bias), ids, axis=0)


RULES: list[Rule] = [_lookup_then_project, _lookup_weight_grad, _lookup_table_grad,
                     _lookup_then_add]
