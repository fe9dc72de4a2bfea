"""Layers: Dense, Conv2D, pooling, Flatten, Embedding, WeightNorm (normalisation layers are in
graphc.nn.normalization, the containers in graphc.nn.module)."""
from __future__ import annotations

import numbers
from typing import Any

import numpy as np

import graphc.frontends as F
from graphc.dtypes import as_dtype
from graphc.sizes import all_static
from graphc.frontends.convert import to_node
from graphc.frontends.tensor import Tensor
from graphc.nn import activations as _act
from graphc.nn import init as _init
from graphc.nn.conv import _pair, avg_pool2d, conv2d, max_pool2d
from graphc.nn.module import Module


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{what}: expected an int >= 1, got {value!r}")
    return int(value)


def _rng(seed: Any) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None:
        return np.random.default_rng()
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        return np.random.default_rng(int(seed))
    raise TypeError(f"seed: expected an int, a np.random.Generator or None, got {seed!r}")


def _activation_repr(activation: Any) -> str:
    if activation is _act.identity:
        return ""
    name = getattr(activation, "__name__", None) or repr(activation)
    return f", activation={name}"


def _float(dtype: Any) -> np.dtype:
    dt = as_dtype(dtype)
    if dt.kind != "f":
        raise TypeError(f"layer dtype must be a float type, got {dt}")
    return dt


class Dense(Module):
    """y = activation(x @ W + b), W (in, out), b (out,); x (..., in)."""

    prefix = "dense"

    def __init__(self, in_features: int, out_features: int, activation: Any = None,
                 init: Any = "glorot_uniform", bias: bool = True, seed: Any = None,
                 dtype: Any = "float32", name: str | None = None) -> None:
        super().__init__(name)
        self.in_features = _count(in_features, "Dense in_features")
        self.out_features = _count(out_features, "Dense out_features")
        self.activation = _act.get(activation)
        dt = _float(dtype)
        rng = _rng(seed)
        self.W = self.add_parameter(
            "W", _init.get(init)((self.in_features, self.out_features), rng, dtype=dt))
        self.b = self.add_parameter("b", np.zeros(self.out_features, dt)) if bias else None

    def weight(self) -> Tensor:
        return self.W

    def extra_repr(self) -> str:
        bias = "" if self.b is not None else ", bias=False"
        return f"{self.in_features} -> {self.out_features}" \
            f"{_activation_repr(self.activation)}{bias}"

    def apply(self, x: Any, weight: Any) -> Tensor:
        node = to_node(x, f"{self.name} input")
        if node.ndim < 1 or node.shape[-1] not in (None, self.in_features):
            raise ValueError(f"{self.name}: input {node.type} does not end in "
                             f"{self.in_features} features")
        y = F.matmul(x, weight)
        if self.b is not None:
            y = y + self.b
        return self.activation(y)

    def forward(self, x: Any, training: bool) -> Tensor:
        return self.apply(x, self.weight())


class WeightNorm(Module):
    """Weight normalisation of a Dense layer: W = g * v / ||v||, the norm over the input axis
    (one g per output unit). v starts as the layer's W and g as its column norms, so the
    wrapped layer computes the same function at first; its trainable parameters become
    v, g (and the layer's bias)."""

    prefix = "weightnorm"

    def __init__(self, layer: Dense, eps: float = 0.0, name: str | None = None) -> None:
        if not isinstance(layer, Dense):
            raise TypeError(f"WeightNorm: expected a Dense layer, got {type(layer).__name__}")
        super().__init__(name)
        self._layer = layer  # not a child: its W is replaced by v and g
        self.eps = float(eps)
        w = layer.W.value
        self.v = self.add_parameter("v", w)
        self.g = self.add_parameter("g", np.sqrt((w.astype(np.float64) ** 2).sum(axis=0))
                                    .astype(w.dtype))
        if layer.b is not None:
            self.add_parameter("b", layer.b)  # shared with the layer

    @property
    def layer(self) -> Dense:
        """The wrapped Dense layer (its bias is this module's "b"; its W is not used)."""
        return self._layer

    def extra_repr(self) -> str:
        return f"{type(self._layer).__name__}({self._layer.extra_repr()})"

    def weight(self) -> Tensor:
        norm = F.sqrt(F.sum(F.square(self.v), axis=0) + self.eps)
        return self.v * (self.g / norm)

    def forward(self, x: Any, training: bool) -> Tensor:
        return self._layer.apply(x, self.weight())


class Conv2D(Module):
    """NCHW convolution (cross-correlation, like PyTorch) with OIHW weights W
    (out_ch, in_ch / groups, KH, KW) and a bias per output channel."""

    prefix = "conv"

    def __init__(self, in_channels: int, out_channels: int, kernel: Any, stride: Any = 1,
                 padding: Any = 0, groups: int = 1, activation: Any = None,
                 init: Any = "he_uniform", bias: bool = True, seed: Any = None,
                 dtype: Any = "float32", name: str | None = None) -> None:
        super().__init__(name)
        self.in_channels = _count(in_channels, "Conv2D in_channels")
        self.out_channels = _count(out_channels, "Conv2D out_channels")
        self.groups = _count(groups, "Conv2D groups")
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"Conv2D: in_channels {in_channels} and out_channels "
                             f"{out_channels} must be divisible by groups {groups}")
        self.kernel = _pair(kernel, "Conv2D kernel")
        self.stride = _pair(stride, "Conv2D stride")
        self.padding = _pair(padding, "Conv2D padding")
        self.activation = _act.get(activation)
        dt = _float(dtype)
        shape = (self.out_channels, self.in_channels // self.groups) + self.kernel
        self.W = self.add_parameter("W", _init.get(init)(shape, _rng(seed), dtype=dt))
        self.b = self.add_parameter("b", np.zeros(self.out_channels, dt)) if bias else None

    def extra_repr(self) -> str:
        text = f"{self.in_channels} -> {self.out_channels}, kernel={self.kernel}"
        for key, value, default in (("stride", self.stride, (1, 1)),
                                    ("padding", self.padding, (0, 0)),
                                    ("groups", self.groups, 1)):
            if value != default:
                text += f", {key}={value}"
        text += _activation_repr(self.activation)
        return text + ("" if self.b is not None else ", bias=False")

    def forward(self, x: Any, training: bool) -> Tensor:
        y = conv2d(x, self.W, stride=self.stride, padding=self.padding, groups=self.groups)
        if self.b is not None:
            y = y + F.reshape(self.b, (1, self.out_channels, 1, 1))
        return self.activation(y)


class MaxPool2D(Module):
    prefix = "maxpool"

    def __init__(self, size: Any, stride: Any = None, name: str | None = None) -> None:
        super().__init__(name)
        self.size, self.stride = size, stride

    def extra_repr(self) -> str:
        return f"{self.size}" + (f", stride={self.stride}" if self.stride is not None else "")

    def forward(self, x: Any, training: bool) -> Tensor:
        return max_pool2d(x, self.size, self.stride)


class AvgPool2D(Module):
    prefix = "avgpool"

    def __init__(self, size: Any, stride: Any = None, name: str | None = None) -> None:
        super().__init__(name)
        self.size, self.stride = size, stride

    def extra_repr(self) -> str:
        return f"{self.size}" + (f", stride={self.stride}" if self.stride is not None else "")

    def forward(self, x: Any, training: bool) -> Tensor:
        return avg_pool2d(x, self.size, self.stride)


class Flatten(Module):
    """(N, d1, d2, ...) -> (N, d1 * d2 * ...); the trailing sizes must be known."""

    prefix = "flatten"

    def forward(self, x: Any, training: bool) -> Tensor:
        node = to_node(x, f"{self.name} input")
        if node.ndim < 1 or not all_static(node.shape[1:]):
            raise ValueError(f"{self.name}: needs known sizes after the batch axis, got "
                             f"{node.type}")
        return F.reshape(x, (-1, int(np.prod(node.shape[1:], dtype=np.int64))))


def embedding(table: Any, ids: Any) -> Tensor:
    """Rows of `table` (num, dim) picked by integer `ids` (...): shape (..., dim); ids are
    bounds-checked when the compiled function runs (IndexError)."""
    return F.take(table, ids, axis=0)


class Embedding(Module):
    """Rows of a (num, dim) table picked by integer ids: ids (...) -> (..., dim).
    Out-of-range ids raise IndexError when the compiled function is called."""

    prefix = "embedding"

    def __init__(self, num: int, dim: int, init: Any = "normal", seed: Any = None,
                 dtype: Any = "float32", name: str | None = None) -> None:
        super().__init__(name)
        self.num = _count(num, "Embedding num")
        self.dim = _count(dim, "Embedding dim")
        self.table = self.add_parameter(
            "table", _init.get(init)((self.num, self.dim), _rng(seed), dtype=_float(dtype)))

    def extra_repr(self) -> str:
        return f"{self.num}, {self.dim}"

    def forward(self, ids: Any, training: bool) -> Tensor:
        return embedding(self.table, ids)


__all__ = ["Dense", "WeightNorm", "Conv2D", "MaxPool2D", "AvgPool2D", "Flatten", "Embedding",
           "embedding"]
