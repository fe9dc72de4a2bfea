"""The differentiation API on Tensors: gc.grad, gc.vjp, gc.jvp, gc.hessian."""
from __future__ import annotations

from typing import Any, Sequence

from graphc.autodiff import check_cotangent, grad_nodes, hessian_node, jvp_nodes, vjp_nodes
from graphc.hessian import hessian_blocks
from graphc.frontends.convert import to_node
from graphc.frontends.tensor import Tensor
from graphc.node import carry_label, set_label
from graphc.passes import stabilize_roots


def _nodes(values: Any, what: str) -> tuple[list, bool]:
    single = not isinstance(values, (list, tuple))
    items = [values] if single else list(values)
    nodes = []
    for i, v in enumerate(items):
        if not isinstance(v, Tensor):
            raise TypeError(f"{what}[{i}]: expected a Tensor, got {type(v).__name__}")
        nodes.append(v.node)
    return nodes, single


def _wrap(nodes: Sequence, single: bool) -> Any:
    tensors = [Tensor(n) for n in nodes]
    return tensors[0] if single else tensors


def grad(y: Tensor, wrt: Any, disconnected: str = "zero", stabilize: bool = True) -> Any:
    """The gradient of scalar `y` with respect to a tensor or a list of tensors, as graphs.
    A `wrt` that `y` does not depend on gets zeros (disconnected='raise' makes it an error).
    stabilize=True differentiates y's numerically stable form (see graphc.passes.stabilize)
    when every wrt is a placeholder or parameter."""
    if not isinstance(y, Tensor):
        raise TypeError(f"grad: y must be a Tensor, got {type(y).__name__}")
    nodes, single = _nodes(wrt, "wrt")
    target = y.node
    if stabilize and all(n.op in ("placeholder", "parameter") for n in nodes):
        # Differentiate the stable form (log_softmax for a naive log(softmax), ...), so the
        # gradient is as finite as the value. Only leaves are sure to survive the rewrite.
        (target,) = stabilize_roots((target,))
        carry_label(y.node, target)
    return _wrap(grad_nodes(target, nodes, disconnected), single)


def vjp(ys: Any, wrt: Any, cotangents: Any) -> Any:
    """Reverse mode: sum_k <cotangents_k, d ys_k / d w> for each w in wrt."""
    outs, _ = _nodes(ys, "ys")
    cts = [cotangents] if not isinstance(cotangents, (list, tuple)) else list(cotangents)
    if len(cts) != len(outs):
        raise ValueError(f"vjp: {len(outs)} outputs but {len(cts)} cotangents")
    cts = [check_cotangent(to_node(c, f"cotangents[{i}]"), o, f"cotangents[{i}]")
           for i, (c, o) in enumerate(zip(cts, outs))]
    nodes, single = _nodes(wrt, "wrt")
    return _wrap(vjp_nodes(outs, cts, nodes), single)


def jvp(ys: Any, wrt: Any, tangents: Any) -> Any:
    """Forward mode: sum_w d ys / d w . tangents_w, one result per output."""
    outs, single_out = _nodes(ys, "ys")
    nodes, _ = _nodes(wrt, "wrt")
    tans = [tangents] if not isinstance(tangents, (list, tuple)) else list(tangents)
    if len(tans) != len(nodes):
        raise ValueError(f"jvp: {len(nodes)} inputs but {len(tans)} tangents")
    tans = [check_cotangent(to_node(t, f"tangents[{i}]"), w, f"tangents[{i}]")
            for i, (t, w) in enumerate(zip(tans, nodes))]
    return _wrap(jvp_nodes(outs, nodes, tans), single_out)


def hessian(y: Tensor, x: Any) -> Any:
    """Second derivatives of scalar `y`. For a tensor x: one tensor shaped x.shape + x.shape.
    For a list (or tuple) of tensors xs: the blocks as a list of lists, H[i][j] =
    d^2 y / dxs[i] dxs[j] shaped xs[i].shape + xs[j].shape (like jax.hessian's nesting)."""
    if not isinstance(y, Tensor):
        raise TypeError(f"hessian: y must be a scalar Tensor, got {type(y).__name__}")
    if isinstance(x, Tensor):
        return Tensor(hessian_node(y.node, x.node))
    if not isinstance(x, (list, tuple)):
        raise TypeError(f"hessian: x must be a Tensor or a list of Tensors, got "
                        f"{type(x).__name__}")
    nodes, _ = _nodes(list(x), "hessian x")
    return [[Tensor(block) for block in row] for row in hessian_blocks(y.node, nodes)]


def name(tensor: Tensor, label: str) -> Tensor:
    """Gives a computed tensor a display name (used by gc.show and in gradient names)."""
    if not isinstance(tensor, Tensor):
        raise TypeError(f"name: expected a Tensor, got {type(tensor).__name__}")
    if not isinstance(label, str) or not label:
        raise TypeError("name: label must be a non-empty string")
    set_label(tensor.node, label)
    return tensor
