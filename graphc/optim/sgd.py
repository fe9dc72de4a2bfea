"""Stochastic gradient descent with optional momentum, Nesterov momentum and weight decay."""
from __future__ import annotations

from graphc.frontends import Parameter, Tensor, equal, where
from graphc.optim.base import LearningRate, Optimizer, Updates, cast, check_number


class SGD(Optimizer):
    """PyTorch's SGD (torch.optim.SGD), per parameter p with gradient g, at step t = 1, 2, ...:

        g   <- g + weight_decay * p                          (L2 penalty, coupled)
        b_t  = momentum * b_{t-1} + (1 - dampening) * g      (b_1 = g)      if momentum > 0
        g   <- g + momentum * b_t   if nesterov,   else   g <- b_t          if momentum > 0
        p   <- p - lr * g

    The momentum buffer b is the state 'sgd.momentum.<name>'.
    """

    prefix = "sgd"

    def __init__(self, lr: LearningRate = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, **clip: float | None
                 ) -> None:
        super().__init__(lr, **clip)
        self.momentum = check_number(momentum, "momentum", 0.0, 1.0, high_open=True)
        self.dampening = check_number(dampening, "dampening", 0.0, 1.0)
        self.weight_decay = check_number(weight_decay, "weight_decay")
        if nesterov and (self.momentum == 0 or self.dampening != 0):
            raise ValueError("nesterov: needs momentum > 0 and dampening = 0")
        self.nesterov = bool(nesterov)

    def _update(self, p: Parameter, g: Tensor, lr: float | Tensor, t: Tensor) -> Updates:
        new: Updates = {}
        if self.weight_decay:
            g = g + self.weight_decay * p
        if self.momentum:
            b = self.slot("momentum", p)
            b_new = self.momentum * b + (1 - self.dampening) * g
            if self.dampening:  # PyTorch starts the buffer at g itself, undamped
                b_new = where(equal(t, 0), g, b_new)
            new[b] = b_new
            g = g + self.momentum * b_new if self.nesterov else b_new
        new[p] = p - cast(lr, p.dtype) * g
        return new
