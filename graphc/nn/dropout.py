"""Dropout with random numbers drawn in the graph from a seed (reproducible everywhere)."""
from __future__ import annotations

from typing import Any

import numpy as np

import graphc.frontends as F
from graphc import default_updates
from graphc.frontends.random import random_uniform
from graphc.frontends.tensor import Tensor
from graphc.nn.module import Module
from graphc.node import Node


def dropout(x: Any, rate: float, seed: Any, training: bool = True) -> Tensor:
    """Zeroes each element with probability `rate` and scales the rest by 1/(1 - rate)
    (inverted dropout); the identity when not training or rate == 0."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout: rate must be in [0, 1), got {rate!r}")
    x = x if isinstance(x, Tensor) else F.constant(x)
    if not training or rate == 0.0:
        return x
    keep = F.greater_equal(random_uniform(seed, x, x.dtype), rate)
    return F.where(keep, x * (1.0 / (1.0 - rate)), 0.0)


class Dropout(Module):
    """Dropout whose seed is state: a training-mode call records `seed <- seed + 1` as a
    default update of the node it returns, so each call of a compiled step that uses it draws
    a new mask (see graphc.nn.module); a checkpoint of `variables()` restores the stream."""

    prefix = "dropout"

    def __init__(self, rate: float, seed: int = 0, name: str | None = None) -> None:
        super().__init__(name)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"Dropout: rate must be in [0, 1), got {rate!r}")
        self.rate = float(rate)
        self.seed = self.add_parameter("seed", np.asarray(seed, np.int64), trainable=False)

    def forward(self, x: Any, training: bool) -> Tensor:
        if not training or self.rate == 0.0:
            return x if isinstance(x, Tensor) else F.constant(x)
        y = dropout(x, self.rate, self.seed, training=True)
        default_updates.register(y.node, self.seed.node, _next_seed, self.name)
        self._pending = {self.seed: Tensor(_next_seed(self.seed.node))}
        return y

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


def _next_seed(old: Node) -> Node:
    return (Tensor(old) + 1).node
