"""Activation functions built from existing DSL functions (no new primitives)."""
from __future__ import annotations

import math
from typing import Any, Callable

import graphc.frontends as F
from graphc.frontends.functions import relu, sigmoid, softplus, tanh
from graphc.frontends.tensor import Tensor


def leaky_relu(x: Any, slope: float = 0.01) -> Tensor:
    """x where x > 0, slope * x elsewhere (so, like PyTorch, the derivative at 0 is slope)."""
    return F.where(F.greater(x, 0), x, F.multiply(x, slope))


def gelu(x: Any) -> Tensor:
    """Exact GELU: x * Phi(x) = x/2 * (1 + erf(x / sqrt 2))."""
    return F.multiply(F.multiply(x, 0.5), 1.0 + F.erf(F.multiply(x, 1.0 / math.sqrt(2.0))))


def elu(x: Any, alpha: float = 1.0) -> Tensor:
    """x where x > 0, alpha * (exp(x) - 1) elsewhere (exp only sees min(x, 0): no overflow,
    no inf * 0 in the gradient)."""
    negative_part = F.multiply(F.exp(F.minimum(x, 0)) - 1.0, alpha)
    return F.where(F.greater(x, 0), x, negative_part)


def softsign(x: Any) -> Tensor:
    """x / (1 + |x|)."""
    return F.divide(x, 1.0 + F.abs(x))


def identity(x: Any) -> Any:
    return x


ACTIVATIONS: dict[str, Callable[[Any], Tensor]] = {
    "sigmoid": sigmoid, "tanh": tanh, "relu": relu, "softplus": softplus,
    "leaky_relu": leaky_relu, "gelu": gelu, "elu": elu, "softsign": softsign,
    "linear": identity, "identity": identity,
}


def get(activation: Any) -> Callable[[Any], Any]:
    """An activation from its name (see ACTIVATIONS), a callable, or None (identity)."""
    if activation is None:
        return identity
    if callable(activation):
        return activation
    if isinstance(activation, str) and activation in ACTIVATIONS:
        return ACTIVATIONS[activation]
    raise ValueError(f"activation: unknown {activation!r}; expected None, a callable or one "
                     f"of {sorted(ACTIVATIONS)}")


__all__ = ["sigmoid", "tanh", "relu", "softplus", "leaky_relu", "gelu", "elu", "softsign",
           "identity", "get", "ACTIVATIONS"]
