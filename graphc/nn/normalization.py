"""LayerNorm and BatchNorm (modules), and their functional forms layer_norm / batch_norm."""
from __future__ import annotations

import numbers
from typing import Any, Callable

import numpy as np

import graphc.frontends as F
from graphc import default_updates
from graphc.frontends.convert import to_node
from graphc.frontends.functions import count
from graphc.frontends.tensor import Parameter, Tensor
from graphc.nn.layers import _float
from graphc.nn.module import Module
from graphc.node import Node


def _features(features: Any, what: str) -> tuple[int, ...]:
    if isinstance(features, numbers.Integral) and not isinstance(features, bool):
        features = (int(features),)
    if not isinstance(features, (tuple, list)) or not features or not all(
            isinstance(f, numbers.Integral) and not isinstance(f, bool) and int(f) >= 1
            for f in features):
        raise ValueError(f"{what}: features must be an int >= 1 or a tuple of them, "
                         f"got {features!r}")
    return tuple(int(f) for f in features)


def _eps(eps: Any, what: str) -> float:
    if (isinstance(eps, bool) or not isinstance(eps, numbers.Real)
            or not eps >= 0):  # type: ignore[operator]  # typeshed's Real declares no >=
        raise ValueError(f"{what}: eps must be a number >= 0, got {eps!r}")
    return float(eps)


def layer_norm(x: Any, gamma: Any = None, beta: Any = None, axes: Any = -1,
               eps: float = 1e-5) -> Tensor:
    """(x - mean) / sqrt(var + eps) * gamma + beta, mean and (biased) var over `axes`."""
    mean = F.mean(x, axis=axes, keepdims=True)
    centered = x - mean
    var = F.mean(F.square(centered), axis=axes, keepdims=True)
    y = centered / F.sqrt(var + eps)
    if gamma is not None:
        y = y * gamma
    if beta is not None:
        y = y + beta
    return y


def batch_norm(x: Any, mean: Any, var: Any, gamma: Any = None, beta: Any = None,
               eps: float = 1e-5) -> Tensor:
    """(x - mean) / sqrt(var + eps) * gamma + beta over channel axis 1, with the given
    per-channel statistics (shape (C,)); see BatchNorm for batch statistics."""
    node = to_node(x, "batch_norm input")
    if node.ndim < 2:
        raise ValueError(f"batch_norm: input needs a channel axis 1, got {node.type}")
    shape = (1, -1) + (1,) * (node.ndim - 2)

    def per_channel(v: Any) -> Tensor:
        return F.reshape(v, shape)
    y = (x - per_channel(mean)) / F.sqrt(per_channel(var) + eps)
    if gamma is not None:
        y = y * per_channel(gamma)
    if beta is not None:
        y = y + per_channel(beta)
    return y


class LayerNorm(Module):
    """Normalises each example over its last len(features) axes; learns gamma (ones) and
    beta (zeros) of shape `features` when affine."""

    prefix = "layernorm"
    features: tuple[int, ...]
    eps: float
    gamma: Parameter | None
    beta: Parameter | None

    def __init__(self, features: Any, eps: float = 1e-5, affine: bool = True,
                 dtype: Any = "float32", name: str | None = None) -> None:
        super().__init__(name)
        self.features = _features(features, "LayerNorm")
        self.eps = _eps(eps, "LayerNorm")
        dt = _float(dtype)
        self.gamma = self.add_parameter("gamma", np.ones(self.features, dt)) if affine else None
        self.beta = self.add_parameter("beta", np.zeros(self.features, dt)) if affine else None

    def extra_repr(self) -> str:
        features = self.features[0] if len(self.features) == 1 else self.features
        return f"{features}" + (f", eps={self.eps}" if self.eps != 1e-5 else "") + \
            ("" if self.gamma is not None else ", affine=False")

    def forward(self, x: Any, training: bool) -> Tensor:
        node = to_node(x, f"{self.name} input")
        k = len(self.features)
        if node.ndim < k or tuple(node.shape[-k:]) != self.features:
            raise ValueError(f"{self.name}: input {node.type} does not end in {self.features}")
        return layer_norm(x, self.gamma, self.beta, axes=tuple(range(-k, 0)), eps=self.eps)


class BatchNorm(Module):
    """Batch normalisation over channel axis 1 of (N, C) or (N, C, H, W) inputs.

    Training (`bn(x)` / `bn(x, training=True)`): normalises with the batch mean and biased
    variance (over every axis but 1), and records the running-statistics updates
        running_mean <- (1 - momentum) * running_mean + momentum * batch_mean
        running_var  <- (1 - momentum) * running_var  + momentum * batch_var * n / (n - 1)
    (n values per channel; the unbiased variance, as PyTorch) as default updates of the node it
    returns: a gc.function whose outputs or updates use that node (the loss of a training step,
    or its gradients) applies them, once per call, unless its `updates` name the statistics
    (an explicit update wins; `default_updates=False` applies none). Nothing needs merging;
    `bn.updates()` still returns them. Inference (`bn(x, training=False)` or after
    `bn.eval()`): normalises with running_mean / running_var and updates nothing. The running
    statistics are parameters in `state()`, not in `parameters()` (optimizers leave them
    alone); state_dict() names them `running_mean` and `running_var`."""

    prefix = "batchnorm"
    features: int
    eps: float
    momentum: float
    gamma: Parameter | None
    beta: Parameter | None
    running_mean: Parameter
    running_var: Parameter

    def __init__(self, features: int, eps: float = 1e-5, momentum: float = 0.1,
                 affine: bool = True, dtype: Any = "float32", name: str | None = None) -> None:
        super().__init__(name)
        # int and float listed too: mypy does not know they are an Integral and a Real, and
        # would take the rest of this method for unreachable (the same test at run time).
        if isinstance(features, bool) or not isinstance(features, (int, numbers.Integral)) \
                or features < 1:
            raise ValueError(f"BatchNorm: features must be an int >= 1, got {features!r}")
        self.features = int(features)
        self.eps = _eps(eps, "BatchNorm")
        if isinstance(momentum, bool) or not isinstance(momentum, (float, numbers.Real)) \
                or not 0 <= momentum <= 1:
            raise ValueError(f"BatchNorm: momentum must be in [0, 1], got {momentum!r}")
        self.momentum = float(momentum)
        dt = _float(dtype)
        c = self.features
        self.gamma = self.add_parameter("gamma", np.ones(c, dt)) if affine else None
        self.beta = self.add_parameter("beta", np.zeros(c, dt)) if affine else None
        self.running_mean = self.add_parameter("running_mean", np.zeros(c, dt), trainable=False)
        self.running_var = self.add_parameter("running_var", np.ones(c, dt), trainable=False)

    def forward(self, x: Any, training: bool) -> Tensor:
        node = to_node(x, f"{self.name} input")
        if node.ndim < 2 or node.shape[1] != self.features:
            raise ValueError(f"{self.name}: input {node.type} needs {self.features} channels "
                             "on axis 1")
        if not training:
            return batch_norm(x, self.running_mean, self.running_var, self.gamma, self.beta,
                              self.eps)
        axes = (0,) + tuple(range(2, node.ndim))
        mean = F.mean(x, axis=axes)
        shape = (1, -1) + (1,) * (node.ndim - 2)
        var = F.mean(F.square(x - F.reshape(mean, shape)), axis=axes)
        n = Tensor(count(node, axes, self.running_var.dtype))
        unbiased = var * (n / F.maximum(n - 1.0, 1.0))
        y = batch_norm(x, mean, var, self.gamma, self.beta, self.eps)
        self._pending = {}
        for stat, batch in ((self.running_mean, mean), (self.running_var, unbiased)):
            rule = _moving_average(self.momentum, F.stop_gradient(batch))
            default_updates.register(y.node, stat.node, rule, self.name)
            self._pending[stat] = Tensor(rule(stat.node))
        return y

    def extra_repr(self) -> str:
        text = f"{self.features}"
        if self.eps != 1e-5:
            text += f", eps={self.eps}"
        if self.momentum != 0.1:
            text += f", momentum={self.momentum}"
        return text + ("" if self.gamma is not None else ", affine=False")


def _moving_average(momentum: float, batch: Tensor) -> Callable[[Node], Node]:
    """old -> (1 - momentum) * old + momentum * batch, as a default update's rule."""
    def rule(old: Node) -> Node:
        return ((1.0 - momentum) * Tensor(old) + momentum * batch).node
    return rule


__all__ = ["LayerNorm", "BatchNorm", "layer_norm", "batch_norm"]
