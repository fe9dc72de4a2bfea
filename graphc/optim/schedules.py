"""Learning-rate schedules: functions of the step counter tensor, usable as any optimizer's lr.

A schedule is called with `t`, the optimizer's int64 step counter (the number of steps taken
before this one, so the first step sees t = 0), and returns a float64 scalar tensor; the
optimizer casts it to each parameter's dtype. Any callable with that contract works as `lr`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from graphc.frontends import Tensor, constant, cos, minimum
from graphc.optim.base import check_int, check_number


@dataclass(frozen=True)
class Schedule:
    """A named learning-rate formula: schedule(t) -> scalar tensor."""

    formula: str
    fn: Callable[[Tensor], Tensor]

    def __call__(self, t: Any) -> Tensor:
        return self.fn(_as_step(t))

    def values(self, steps: int) -> np.ndarray:
        """The learning rates of steps 0 .. steps-1, computed by the graph (numpy backend)."""
        from graphc.frontends import placeholder
        from graphc.function import function
        t = placeholder((), "int64", name="t")
        f = function([t], self(t), backend="numpy")
        return np.array([float(f(i)) for i in range(steps)])

    def __repr__(self) -> str:
        return f"Schedule({self.formula})"


def _as_step(t: Any) -> Tensor:
    """The step as a float64 scalar tensor (ints and int tensors accepted)."""
    if not isinstance(t, Tensor):
        t = constant(np.asarray(t, np.int64))
    if t.shape != ():
        raise ValueError(f"schedule step: expected a scalar, got shape {t.shape}")
    return t.astype("float64")


def _lr(value: Any, name: str = "lr") -> float:
    return check_number(value, name)


def constant_lr(lr: float) -> Schedule:
    """lr_t = lr."""
    lr = _lr(lr)
    return Schedule(f"lr_t = {lr:g}", lambda t: t * 0.0 + lr)


def step_decay(lr: float, step_size: int, gamma: float = 0.1) -> Schedule:
    """lr_t = lr * gamma ** floor(t / step_size)   (PyTorch's StepLR)."""
    lr = _lr(lr)
    step_size = check_int(step_size, "step_size")
    gamma = check_number(gamma, "gamma", 0.0, 1.0)
    # floor through a cast to int64: t >= 0, so truncation is floor.
    return Schedule(f"lr_t = {lr:g} * {gamma:g} ** floor(t / {step_size})",
                    lambda t: lr * gamma ** (t / step_size).astype("int64").astype("float64"))


def exponential_decay(lr: float, gamma: float) -> Schedule:
    """lr_t = lr * gamma ** t   (PyTorch's ExponentialLR)."""
    lr = _lr(lr)
    gamma = check_number(gamma, "gamma", 0.0, 1.0, low_open=True)
    return Schedule(f"lr_t = {lr:g} * {gamma:g} ** t", lambda t: lr * gamma ** t)


def cosine_annealing(lr: float, t_max: int, eta_min: float = 0.0) -> Schedule:
    """lr_t = eta_min + (lr - eta_min) * (1 + cos(pi * min(t, t_max) / t_max)) / 2
    (PyTorch's CosineAnnealingLR closed form, held at eta_min after t_max steps)."""
    lr = _lr(lr)
    t_max = check_int(t_max, "t_max")
    eta_min = check_number(eta_min, "eta_min", 0.0, lr)
    return Schedule(
        f"lr_t = {eta_min:g} + {lr - eta_min:g} * (1 + cos(pi * min(t, {t_max}) / {t_max})) / 2",
        lambda t: eta_min + (lr - eta_min) * (1 + cos(math.pi / t_max * minimum(t, t_max))) / 2)


def linear_warmup(lr: float | Callable[[Tensor], Tensor], warmup_steps: int) -> Schedule:
    """lr_t = min(1, (t + 1) / warmup_steps) * base_t, base a number or a schedule: the first
    step uses base/warmup_steps, step warmup_steps-1 and later the full base rate."""
    warmup_steps = check_int(warmup_steps, "warmup_steps")
    if callable(lr):
        base, text = lr, getattr(lr, "formula", "base(t)").replace("lr_t = ", "")
    else:
        value = _lr(lr)
        base, text = (lambda t: value), f"{value:g}"
    return Schedule(f"lr_t = min(1, (t + 1) / {warmup_steps}) * [{text}]",
                    lambda t: minimum((t + 1) / warmup_steps, 1.0) * base(t))
