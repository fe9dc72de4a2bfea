"""Losses as decompositions into DSL ops (their gradients come from the primitives)."""
from __future__ import annotations

from typing import Any

import graphc.frontends as F
from graphc.frontends.convert import to_node
from graphc.frontends.tensor import Tensor
from graphc.ops import make


def mse(pred: Any, target: Any) -> Tensor:
    """Mean over all elements of (pred - target)**2."""
    return F.mean(F.square(F.subtract(pred, target)))


def huber(pred: Any, target: Any, delta: float = 1.0) -> Tensor:
    """Mean of r**2/2 where |r| <= delta, else delta*(|r| - delta/2), with r = pred - target."""
    if not delta > 0:
        raise ValueError(f"huber: delta must be > 0, got {delta!r}")
    r = F.abs(F.subtract(pred, target))
    quadratic = 0.5 * F.square(r)
    linear = delta * (r - 0.5 * delta)
    return F.mean(F.where(r <= delta, quadratic, linear))


def cross_entropy(logits: Any, labels: Any) -> Tensor:
    """Mean over the batch of -log softmax(logits)[label]; labels are class indices or
    rows of probabilities (one-hot) shaped like the logits."""
    logits_node = to_node(logits, "cross_entropy logits")
    if logits_node.ndim < 1:
        raise ValueError(f"cross_entropy: logits need a class axis, got {logits_node.type}")
    logp = F.log_softmax(logits, axis=-1)
    labels_node = to_node(labels, "cross_entropy labels")
    if labels_node.dtype.kind in "iu":
        if labels_node.ndim != logits_node.ndim - 1:
            raise ValueError(f"cross_entropy: integer labels {labels_node.type} need one "
                             f"dimension less than logits {logits_node.type}")
        depth = logits_node.shape[-1]
        if depth is None:
            raise ValueError("cross_entropy: integer labels need a known class count")
        checked = make("check_index", labels_node, size=depth, what="cross_entropy labels")
        labels = F.one_hot(Tensor(checked), depth, dtype=logits_node.dtype)
    return F.mean(-F.sum(logp * labels, axis=-1))


def binary_cross_entropy_with_logits(logits: Any, targets: Any) -> Tensor:
    """Mean over all elements of -[y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))], computed
    as softplus(z) - z*y: softplus is a primitive evaluated stably (finite for any finite
    logit), and its derivative sigmoid(z) gives the exact gradient sigmoid(z) - y everywhere,
    z = 0 included (a max(z, 0) + softplus(-|z|) form would pick kink subgradients there)."""
    z = logits
    return F.mean(F.softplus(z) - F.multiply(z, targets))
