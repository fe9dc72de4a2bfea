"""Adaptive optimizers: Adagrad, RMSprop, Adam and AdamW (PyTorch's formulas and defaults)."""
from __future__ import annotations

from graphc.frontends import Parameter, Tensor, maximum, sqrt
from graphc.optim.base import (LearningRate, Optimizer, Updates, cast, check_betas,
                               check_number)


class Adagrad(Optimizer):
    """torch.optim.Adagrad, at step t = 1, 2, ...:

        lr_t = lr / (1 + (t - 1) * lr_decay)
        g   <- g + weight_decay * p
        s    = s + g**2                      (s starts at initial_accumulator_value)
        p   <- p - lr_t * g / (sqrt(s) + eps)
    """

    prefix = "adagrad"

    def __init__(self, lr: LearningRate = 1e-2, lr_decay: float = 0.0,
                 weight_decay: float = 0.0, initial_accumulator_value: float = 0.0,
                 eps: float = 1e-10, **clip: float | None) -> None:
        super().__init__(lr, **clip)
        self.lr_decay = check_number(lr_decay, "lr_decay")
        self.weight_decay = check_number(weight_decay, "weight_decay")
        self.initial_accumulator_value = check_number(initial_accumulator_value,
                                                      "initial_accumulator_value")
        self.eps = check_number(eps, "eps")

    def _update(self, p: Parameter, g: Tensor, lr: float | Tensor, t: Tensor) -> Updates:
        if self.weight_decay:
            g = g + self.weight_decay * p
        s = self.slot("sum", p, self.initial_accumulator_value)
        s_new = s + g * g
        if self.lr_decay:
            lr = lr / (1 + self.lr_decay * t.astype("float64"))
        return {s: s_new, p: p - cast(lr, p.dtype) * g / (sqrt(s_new) + self.eps)}


class RMSprop(Optimizer):
    """torch.optim.RMSprop:

        g   <- g + weight_decay * p
        v    = alpha * v + (1 - alpha) * g**2
        c    = alpha * c + (1 - alpha) * g,   v~ = v - c**2        if centered, else v~ = v
        d    = g / (sqrt(v~) + eps)
        b    = momentum * b + d,              p <- p - lr * b      if momentum > 0
                                              p <- p - lr * d      otherwise
    (v~ is clamped at 0 before the square root so rounding cannot make it negative.)
    """

    prefix = "rmsprop"

    def __init__(self, lr: LearningRate = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False,
                 **clip: float | None) -> None:
        super().__init__(lr, **clip)
        self.alpha = check_number(alpha, "alpha", 0.0, 1.0)
        self.eps = check_number(eps, "eps")
        self.weight_decay = check_number(weight_decay, "weight_decay")
        self.momentum = check_number(momentum, "momentum", 0.0, 1.0, high_open=True)
        self.centered = bool(centered)

    def _update(self, p: Parameter, g: Tensor, lr: float | Tensor, t: Tensor) -> Updates:
        a = self.alpha
        if self.weight_decay:
            g = g + self.weight_decay * p
        v = self.slot("square_avg", p)
        new: Updates = {v: a * v + (1 - a) * g * g}
        var = new[v]
        if self.centered:
            c = self.slot("grad_avg", p)
            new[c] = a * c + (1 - a) * g
            var = maximum(var - new[c] * new[c], 0.0)
        d = g / (sqrt(var) + self.eps)
        if self.momentum:
            b = self.slot("momentum", p)
            new[b] = d = self.momentum * b + d
        new[p] = p - cast(lr, p.dtype) * d
        return new


RMSProp = RMSprop  # the spelling of the literature


class Adam(Optimizer):
    """torch.optim.Adam (Kingma & Ba, 2015), at step t = 1, 2, ...:

        g   <- g + weight_decay * p                     (L2 penalty, coupled; see AdamW)
        m    = beta1 * m + (1 - beta1) * g
        v    = beta2 * v + (1 - beta2) * g**2
        v^   = max(v^, v)  if amsgrad,  else  v^ = v
        p   <- p - lr * (m / (1 - beta1**t)) / (sqrt(v^ / (1 - beta2**t)) + eps)

    computed as PyTorch arranges it: lr / (1 - beta1**t) * m / (sqrt(v^) / sqrt(1 - beta2**t)
    + eps). The bias corrections are computed in float64 from the step counter.
    """

    prefix = "adam"
    decoupled = False

    def __init__(self, lr: LearningRate = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False,
                 **clip: float | None) -> None:
        super().__init__(lr, **clip)
        self.betas = check_betas(betas)
        self.eps = check_number(eps, "eps")
        self.weight_decay = check_number(weight_decay, "weight_decay")
        self.amsgrad = bool(amsgrad)

    def _update(self, p: Parameter, g: Tensor, lr: float | Tensor, t: Tensor) -> Updates:
        b1, b2 = self.betas
        step = (t + 1).astype("float64")
        lr_p = cast(lr, p.dtype)
        if self.weight_decay and self.decoupled:
            decayed = p * (1 - lr_p * self.weight_decay)
        else:
            decayed = p
            if self.weight_decay:
                g = g + self.weight_decay * p
        m, v = self.slot("m", p), self.slot("v", p)
        new: Updates = {m: b1 * m + (1 - b1) * g, v: b2 * v + (1 - b2) * g * g}
        v_hat = new[v]
        if self.amsgrad:
            v_max = self.slot("v_max", p)
            new[v_max] = v_hat = maximum(v_max, new[v])
        step_size = cast(lr / (1 - b1 ** step), p.dtype)
        root_bc2 = cast(sqrt(1 - b2 ** step), p.dtype)
        new[p] = decayed - step_size * new[m] / (sqrt(v_hat) / root_bc2 + self.eps)
        return new


class AdamW(Adam):
    """torch.optim.AdamW (Loshchilov & Hutter, 2019): Adam with decoupled weight decay,

        p   <- p * (1 - lr * weight_decay)
        p   <- p - lr * m^ / (sqrt(v^) + eps)      (m^, v^ and amsgrad exactly as in Adam)

    weight_decay defaults to 1e-2, as in PyTorch.
    """

    prefix = "adamw"
    decoupled = True

    def __init__(self, lr: LearningRate = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False,
                 **clip: float | None) -> None:
        super().__init__(lr, betas, eps, weight_decay, amsgrad, **clip)
