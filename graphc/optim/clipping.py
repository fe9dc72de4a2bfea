"""Gradient clipping as graph ops: by the global norm of all gradients, or elementwise by value."""
from __future__ import annotations

from typing import Any

from graphc.frontends import Tensor, maximum, minimum, sqrt, sum as gsum


def _as_list(grads: Any) -> tuple[list[Tensor], bool]:
    single = isinstance(grads, Tensor)
    items = [grads] if single else list(grads)
    for i, g in enumerate(items):
        if not isinstance(g, Tensor):
            raise TypeError(f"grads[{i}]: expected a Tensor, got {type(g).__name__}")
    return items, single


def _positive(value: Any, name: str) -> float:
    from graphc.optim.base import check_number  # base imports this module
    return check_number(value, name, low_open=True)


def global_norm(grads: Any) -> Tensor:
    """sqrt(sum over all gradients of sum(g**2)), a scalar tensor."""
    items, _ = _as_list(grads)
    total = gsum(items[0] * items[0])
    for g in items[1:]:
        total = total + gsum(g * g)
    return sqrt(total)


def clip_by_global_norm(grads: Any, max_norm: float, eps: float = 1e-6) -> Any:
    """g * min(1, max_norm / (||g||_global + eps)) for every g: the direction is kept and the
    combined norm is at most max_norm (PyTorch's clip_grad_norm_, eps included)."""
    max_norm = _positive(max_norm, "max_norm")
    items, single = _as_list(grads)
    coef = minimum(max_norm / (global_norm(items) + eps), 1.0)
    out = [g * (coef if coef.dtype == g.dtype else coef.astype(g.dtype)) for g in items]
    return out[0] if single else out


def clip_by_value(grads: Any, clip_value: float) -> Any:
    """Each element clamped to [-clip_value, clip_value] (PyTorch's clip_grad_value_)."""
    clip_value = _positive(clip_value, "clip_value")
    items, single = _as_list(grads)
    out = [minimum(maximum(g, -clip_value), clip_value) for g in items]
    return out[0] if single else out
