"""The Optimizer base: gradients once, state as parameters, a step counter, checked arguments."""
from __future__ import annotations

import numbers
from typing import Any, Callable, Sequence, Union

import numpy as np

from graphc.frontends import Parameter, Tensor, parameter
from graphc.frontends.autodiff import grad
from graphc.optim.clipping import clip_by_global_norm, clip_by_value

# A learning rate: a number, or a function of the step counter (see graphc.optim.schedules).
LearningRate = Union[float, Callable[[Tensor], Tensor]]
Updates = dict[Parameter, Tensor]


# -- argument checks (each error names the argument) ----------------------------------------
def check_number(value: Any, name: str, low: float = 0.0, high: float = float("inf"),
                 low_open: bool = False, high_open: bool = False) -> float:
    """A real number in [low, high] (open ends where asked); ValueError/TypeError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__}")
    value = float(value)
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if not np.isfinite(value) or too_low or too_high:
        left, right = "(" if low_open else "[", ")" if high_open else "]"
        raise ValueError(f"{name}: {value!r} is not in {left}{low:g}, {high:g}{right}")
    return value


def check_int(value: Any, name: str, low: int = 1) -> int:
    """An integer >= low (a count of steps or iterations)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an integer, got {value!r}")
    if value < low:
        raise ValueError(f"{name}: {value!r} is not an integer >= {low}")
    return int(value)


def check_lr(lr: Any, name: str = "lr") -> LearningRate:
    """A learning rate >= 0, or a schedule (any callable of the step counter tensor)."""
    if callable(lr) and not isinstance(lr, Tensor):
        return lr
    return check_number(lr, name)


def check_betas(betas: Any) -> tuple[float, float]:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"betas: expected a pair of numbers, got {betas!r}")
    return (check_number(betas[0], "betas[0]", 0.0, 1.0, high_open=True),
            check_number(betas[1], "betas[1]", 0.0, 1.0, high_open=True))


def check_params(params: Any) -> list[Parameter]:
    """A non-empty list of distinct float parameters (a single Parameter is accepted too)."""
    if isinstance(params, Parameter):
        params = [params]
    if isinstance(params, Tensor) or not isinstance(params, (list, tuple)):
        raise TypeError(f"params: expected a list of gc.parameter tensors, got "
                        f"{type(params).__name__}")
    if not params:
        raise ValueError("params: the list of parameters to optimize is empty")
    for i, p in enumerate(params):
        if not isinstance(p, Parameter):
            raise TypeError(f"params[{i}]: expected a gc.parameter, got {p!r}")
        if p.dtype.kind != "f":
            raise TypeError(f"params[{i}] ({p.storage.name!r}): only float parameters can "
                            f"be optimized, got {p.dtype}")
    if len({id(p.node) for p in params}) != len(params):
        raise ValueError("params: a parameter is listed twice")
    return list(params)


def check_loss(loss: Any) -> Tensor:
    if not isinstance(loss, Tensor):
        raise TypeError(f"loss: expected a Tensor, got {type(loss).__name__}")
    if loss.shape != () or loss.dtype.kind != "f":
        raise ValueError(f"loss: expected a float scalar, got shape {loss.shape} {loss.dtype}")
    return loss


def cast(value: float | Tensor, dtype: np.dtype) -> float | Tensor:
    """A Python number stays weak (it takes the other operand's dtype); a tensor is cast."""
    if isinstance(value, Tensor) and value.dtype != dtype:
        return value.astype(dtype)
    return value


class Optimizer:
    """Turns a loss into graph-level parameter updates: opt.updates(loss, params) returns
    {param: new_value, state: new_state, ...} for gc.function(..., updates=...).

    The gradient is taken once (gc.grad), optionally clipped (clip_value, then clip_norm by
    the global norm), then each subclass's `_update` rule applies. Optimizer state (moments,
    velocities) lives in gc.parameter objects named like 'adam.m.W1', created on first use,
    and a step counter `opt.step` (int64, the number of steps taken) drives bias correction
    and learning-rate schedules. `opt.state` lists them all, so they can be checkpointed.
    Every optimizer takes lr (a number or a schedule) and the keywords clip_norm, clip_value.
    """

    prefix = "opt"

    def __init__(self, lr: LearningRate, *, clip_norm: float | None = None,
                 clip_value: float | None = None) -> None:
        self.lr = check_lr(lr)
        self.clip_norm = None if clip_norm is None else check_number(
            clip_norm, "clip_norm", low_open=True)
        self.clip_value = None if clip_value is None else check_number(
            clip_value, "clip_value", low_open=True)
        self.step: Parameter | None = None
        self._slots: dict[tuple[str, Any], Parameter] = {}

    @property
    def state(self) -> list[Parameter]:
        """Every state parameter: the step counter (once created), then the slots."""
        return ([self.step] if self.step is not None else []) + list(self._slots.values())

    def updates(self, loss: Tensor, params: Sequence[Parameter]) -> Updates:
        """The new values of `params` and of the optimizer state after one step on `loss`.
        In a job of several processes (mpirun) each gradient is first averaged over them
        (gc.distributed.all_reduce, in the step): data-parallel training, unchanged code."""
        params = check_params(params)
        grads = grad(check_loss(loss), params)
        from graphc.distributed import all_reduce, size
        if size() > 1:
            grads = [all_reduce(g, op="mean") for g in grads]
        return self.apply_gradients(params, grads)

    def apply_gradients(self, params: Sequence[Parameter], grads: Sequence[Tensor]) -> Updates:
        """Like `updates`, from gradients computed (and perhaps transformed) elsewhere."""
        params = check_params(params)
        grads = [grads] if isinstance(grads, Tensor) else list(grads)
        if len(grads) != len(params):
            raise ValueError(f"grads: {len(grads)} gradients for {len(params)} parameters")
        for i, (p, g) in enumerate(zip(params, grads)):
            if not isinstance(g, Tensor) or g.shape != p.shape:
                raise ValueError(f"grads[{i}]: expected a tensor of shape {p.shape} like "
                                 f"{p.storage.name!r}, got {g!r}")
        if self.clip_value is not None:
            grads = clip_by_value(grads, self.clip_value)
        if self.clip_norm is not None:
            grads = clip_by_global_norm(grads, self.clip_norm)
        t = self._counter()
        lr = self.learning_rate(t)
        new: Updates = {t: t + 1}
        for p, g in zip(params, grads):
            new.update(self._update(p, g, lr, t))
        return new

    def learning_rate(self, t: Tensor) -> float | Tensor:
        """The learning rate at step t (steps taken before this one): a number or a scalar."""
        if not callable(self.lr):
            return self.lr
        lr = self.lr(t)
        if not isinstance(lr, Tensor) or lr.shape != () or lr.dtype.kind != "f":
            raise ValueError(f"lr: the schedule must return a float scalar tensor, got {lr!r}")
        return lr

    def _update(self, p: Parameter, g: Tensor, lr: float | Tensor, t: Tensor) -> Updates:
        raise NotImplementedError

    # -- state ---------------------------------------------------------------------------
    def _counter(self) -> Parameter:
        if self.step is None:
            self.step = parameter(np.zeros((), np.int64), name=f"{self.prefix}.step")
        return self.step

    def slot(self, kind: str, p: Parameter, init: float = 0.0) -> Parameter:
        """The state tensor `kind` of parameter p (p's shape and dtype), made on first use."""
        key = (kind, p.node)
        if key not in self._slots:
            value = np.full(p.shape, init, dtype=p.dtype)
            self._slots[key] = parameter(value, name=f"{self.prefix}.{kind}.{p.storage.name}")
        return self._slots[key]

    def __repr__(self) -> str:
        skip = {"step", "_slots"}
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items()
                         if k not in skip and v is not None and v is not False)
        return f"{type(self).__name__}({args})"
