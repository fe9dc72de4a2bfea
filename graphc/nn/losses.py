"""Losses as decompositions into DSL ops (their gradients come from the primitives)."""
from __future__ import annotations

from typing import Any, Sequence

import graphc.frontends as F
from graphc.frontends.convert import to_node
from graphc.frontends.tensor import Tensor
from graphc.node import Dim, Node, label_of, set_label
from graphc.ops import make
from graphc.ops.shapes import fmt_shape


def _named(loss: Tensor, name: str) -> Tensor:
    """The loss labelled by the function that built it, unless it has a label already, so
    an unnamed loss's gradients read `dcross_entropy/dW1`, not the internal `ddiv/dW1`
    (gc.name(loss, "loss") still renames it)."""
    if label_of(loss.node) is None:
        set_label(loss.node, name)
    return loss


def mse(pred: Any, target: Any) -> Tensor:
    """Mean over all elements of (pred - target)**2."""
    return _named(F.mean(F.square(F.subtract(pred, target))), "mse")


def huber(pred: Any, target: Any, delta: float = 1.0) -> Tensor:
    """Mean of r**2/2 where |r| <= delta, else delta*(|r| - delta/2), with r = pred - target."""
    if not delta > 0:
        raise ValueError(f"huber: delta must be > 0, got {delta!r}")
    r = F.abs(F.subtract(pred, target))
    quadratic = 0.5 * F.square(r)
    linear = delta * (r - 0.5 * delta)
    return _named(F.mean(F.where(r <= delta, quadratic, linear)), "huber")


def _label_error(labels: Node, logits: Node, problem: str) -> str:
    classes = logits.shape[:-1]
    return (f"cross_entropy: labels {fmt_shape(labels.shape)} {labels.dtype} {problem}; "
            f"for logits {fmt_shape(logits.shape)} {logits.dtype}, labels must be integer "
            f"class indices of shape {fmt_shape(classes)} or float rows (one-hot or "
            f"probabilities) of shape {fmt_shape(logits.shape)}")


def _same_shape(a: Sequence[Dim], b: Sequence[Dim]) -> bool:
    """Equal where both sizes are ints (a symbol may equal anything: checked at call time)."""
    return len(a) == len(b) and all(not isinstance(x, int) or not isinstance(y, int) or x == y
                                    for x, y in zip(a, b))


def cross_entropy(logits: Any, labels: Any) -> Tensor:
    """Mean over the batch of -log softmax(logits)[label]; labels are integer class indices
    shaped like logits without its last axis, or float rows of probabilities (one-hot)
    shaped like the logits. Anything else is an error (float labels shaped like indices
    would broadcast against the logits into a wrong number)."""
    logits_node = to_node(logits, "cross_entropy logits")
    if logits_node.ndim < 1:
        raise ValueError(f"cross_entropy: logits need a class axis, got {logits_node.type}")
    labels_node = to_node(labels, "cross_entropy labels")
    kind = labels_node.dtype.kind
    if kind in "iu":
        if not _same_shape(labels_node.shape, logits_node.shape[:-1]):
            raise ValueError(_label_error(labels_node, logits_node,
                                          "do not fit: integer labels are class indices"))
        depth = logits_node.shape[-1]
        if not isinstance(depth, int):
            raise ValueError("cross_entropy: integer labels need a known class count")
        checked = make("check_index", labels_node, size=depth, what="cross_entropy labels")
        labels = F.one_hot(Tensor(checked), depth, dtype=logits_node.dtype)
    elif kind == "f":
        if not _same_shape(labels_node.shape, logits_node.shape):
            hint = (" (class indices must be integers: labels.astype('int64'))"
                    if _same_shape(labels_node.shape, logits_node.shape[:-1]) else "")
            raise ValueError(_label_error(labels_node, logits_node,
                                          "do not fit: float labels are probability rows")
                             + hint)
    else:
        raise TypeError(_label_error(labels_node, logits_node, "have an unusable dtype"))
    logp = F.log_softmax(logits, axis=-1)
    return _named(F.mean(-F.sum(logp * labels, axis=-1)), "cross_entropy")


def binary_cross_entropy_with_logits(logits: Any, targets: Any) -> Tensor:
    """Mean over all elements of -[y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))], computed
    as softplus(z) - z*y: softplus is a primitive evaluated stably (finite for any finite
    logit), and its derivative sigmoid(z) gives the exact gradient sigmoid(z) - y everywhere,
    z = 0 included (a max(z, 0) + softplus(-|z|) form would pick kink subgradients there)."""
    z = logits
    return _named(F.mean(F.softplus(z) - F.multiply(z, targets)),
                  "binary_cross_entropy_with_logits")
