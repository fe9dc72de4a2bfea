"""scan's batching rule (gc.vmap, gc.jacobian): one loop whose body works on the batch."""
from __future__ import annotations

from graphc.frontends.batching import Batcher
from graphc.node import Node, toposort
from graphc.ops.leaves import placeholder_node
from graphc.ops.registry import make, sibling_key
from graphc.ops.scan_op import make_scan, scan_counts
from graphc.region import Region


def _reads(outputs: tuple[Node, ...], leaves: set[Node]) -> list[bool]:
    """Per output: whether it depends on one of `leaves`."""
    depends: dict[Node, bool] = {}
    for n in toposort(outputs):
        depends[n] = n in leaves or any(depends[i] for i in n.inputs)
    return [depends[o] for o in outputs]


def _swap01(x: Node) -> Node:
    perm = (1, 0) + tuple(range(2, x.ndim))
    return make("transpose", x, perm=perm)


def _batched_loop(b: Batcher, node: Node, ins: list[Node], batched: list[bool]
                  ) -> tuple[list[Node], list[bool]]:
    """Every result of the batched loop (batched ones with the batch on axis 0) and which
    are batched. A carry is batched if its init is or if the body makes it depend on a
    batched value (found by iterating to a fixed point, as JAX does)."""
    a = node.attrs
    body: Region = a["body"]
    c, k, m, _ = scan_counts(a)
    ph = body.inputs
    carry_b = list(batched[:c])
    while True:
        leaves = {p for p, f in zip(ph, carry_b + list(batched[c:])) if f}
        out_b = _reads(body.outputs, leaves)
        grown = [x or y for x, y in zip(carry_b, out_b[:c])]
        if grown == carry_b:
            break
        carry_b = grown
    flags = carry_b + list(batched[c:])
    size = b.need_size("a scan over batched values")
    new_ph = [placeholder_node((size,) + p.shape, p.dtype, p.attrs["name"]) if f else p
              for p, f in zip(ph, flags)]
    env = {p: q for p, q, f in zip(ph, new_ph, flags) if f}
    want = [i for i, f in enumerate(carry_b + out_b[c:]) if f]
    made = Batcher(size).run([body.outputs[i] for i in want], env) if want else []
    outs = list(body.outputs)
    for i, n in zip(want, made):
        outs[i] = n
    init = [x if batched[i] else (b.repeat(x) if carry_b[i] else x)
            for i, x in enumerate(ins[:c])]
    xs = [_swap01(x) if f else x for x, f in zip(ins[c:c + k], batched[c:c + k])]
    loop = make_scan(init, xs, ins[c + k:c + k + m], Region(tuple(new_ph), tuple(outs)),
                     a["length"], a["reverse"], a["checkpoint"])
    results = [n if i < c or not f else _swap01(n)
               for i, (n, f) in enumerate(zip(loop, carry_b + out_b[c:]))]
    return results, carry_b + out_b[c:]


def batch_scan(b: Batcher, node: Node, ins: list[Node], batched: list[bool]) -> Node:
    """The batched result of one sibling; the loop is built once for all of them."""
    cache: dict[tuple, tuple[list[Node], list[bool]]] = b.__dict__.setdefault("scans", {})
    key = (sibling_key(node), tuple(ins), tuple(batched))
    if key not in cache:
        cache[key] = _batched_loop(b, node, ins, batched)
    results, flags = cache[key]
    out = node.attrs["output"]
    return results[out] if flags[out] else b.repeat(results[out])
