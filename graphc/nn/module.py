"""The Module base and the containers (Sequential, Residual).

A module owns gc.parameter tensors, named "<module name>.<local name>" (e.g. "dense1.W";
module names are unique per process unless you pass your own), and builds graph on call:
`y = module(x)` or `module(x, training=False)`. Trainable parameters come from
`parameters()` in a stable order (declaration order, children after their parent's own);
non-trainable state (BatchNorm's running statistics) from `state()`; both from
`variables()` (what a checkpoint should save). `updates()` returns the state updates the
most recent training-mode call asks for, to merge into gc.function's updates."""
from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Any, Iterator

import numpy as np

import graphc.frontends as F
from graphc.frontends.tensor import Parameter, Tensor, parameter

_counters: dict[str, Iterator[int]] = defaultdict(lambda: itertools.count(1))


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise TypeError(f"module name: expected a non-empty string, got {name!r}")
    return name


class Module:
    """Base class: subclasses create parameters with `self.add_parameter`, children with
    `self.add_module`, and implement `forward(x, training)`."""

    prefix = "module"

    def __init__(self, name: str | None = None) -> None:
        self.name = _check_name(name) if name is not None else \
            f"{self.prefix}{next(_counters[self.prefix])}"
        self.training = True
        self._params: dict[str, Parameter] = {}
        self._state: dict[str, Parameter] = {}
        self._children: list[Module] = []
        self._pending: dict[Parameter, Tensor] = {}

    # -- construction helpers --------------------------------------------------------------
    def add_parameter(self, local: str, value: np.ndarray, trainable: bool = True) -> Parameter:
        p = parameter(value, name=f"{self.name}.{local}")
        (self._params if trainable else self._state)[local] = p
        return p

    def add_module(self, module: "Module") -> "Module":
        if not isinstance(module, Module):
            raise TypeError(f"{self.name}: expected a gc.nn Module, got {type(module).__name__}")
        self._children.append(module)
        return module

    # -- introspection ---------------------------------------------------------------------
    def children(self) -> list["Module"]:
        return list(self._children)

    def modules(self) -> list["Module"]:
        """This module and every descendant, depth first, each once."""
        seen: dict[int, Module] = {}

        def walk(m: Module) -> None:
            if id(m) in seen:
                return
            seen[id(m)] = m
            for c in m._children:
                walk(c)
        walk(self)
        return list(seen.values())

    def _own_parameters(self) -> list[Parameter]:
        return list(self._params.values())

    def _collect(self, which: str) -> list[Parameter]:
        out: dict[int, Parameter] = {}
        for m in self.modules():
            items = m._own_parameters() if which == "params" else list(m._state.values())
            for p in items:
                out.setdefault(id(p.node), p)
        params = list(out.values())
        names = [p.storage.name for p in params]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"{self.name}: parameter names are not unique: {sorted(dup)} "
                             "(give the modules distinct names)")
        return params

    def parameters(self) -> list[Parameter]:
        """The trainable parameters, in a stable order, each once (shared modules too)."""
        return self._collect("params")

    def named_parameters(self) -> list[tuple[str, Parameter]]:
        return [(p.storage.name, p) for p in self.parameters()]

    def state(self) -> list[Parameter]:
        """Non-trainable state updated by `updates()` (BatchNorm's running mean/var)."""
        return self._collect("state")

    def variables(self) -> list[Parameter]:
        """parameters() + state(): everything a checkpoint needs."""
        return self.parameters() + self.state()

    def updates(self) -> dict[Parameter, Tensor]:
        """State updates from the latest training-mode call of each module (merge them into
        gc.function's updates together with the optimizer's)."""
        out: dict[Parameter, Tensor] = {}
        for m in self.modules():
            out.update(m._pending)
        return out

    # -- modes and calls -------------------------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        for m in self.modules():
            m.training = bool(mode)
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def forward(self, x: Any, training: bool) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def __call__(self, x: Any, training: bool | None = None) -> Tensor:
        return self.forward(x, self.training if training is None else bool(training))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class Sequential(Module):
    """Modules (or plain callables of one tensor) applied in order."""

    prefix = "sequential"

    def __init__(self, *modules: Any, name: str | None = None) -> None:
        super().__init__(name)
        if len(modules) == 1 and isinstance(modules[0], (list, tuple)):
            modules = tuple(modules[0])
        self.layers = []
        for i, m in enumerate(modules):
            if isinstance(m, Module):
                self.add_module(m)
            elif not callable(m):
                raise TypeError(f"Sequential: item {i} is neither a Module nor callable: {m!r}")
            self.layers.append(m)

    def forward(self, x: Any, training: bool) -> Tensor:
        for m in self.layers:
            x = m(x, training=training) if isinstance(m, Module) else m(x)
        return x

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, i: int) -> Any:
        return self.layers[i]

    def __iter__(self):
        return iter(self.layers)


class Residual(Module):
    """x + f(x) (f must keep the shape)."""

    prefix = "residual"

    def __init__(self, module: Any, name: str | None = None) -> None:
        super().__init__(name)
        if isinstance(module, Module):
            self.add_module(module)
        elif not callable(module):
            raise TypeError(f"Residual: expected a Module or callable, got {module!r}")
        self.module = module

    def forward(self, x: Any, training: bool) -> Tensor:
        fx = self.module(x, training=training) if isinstance(self.module, Module) \
            else self.module(x)
        return F.add(x, fx)


__all__ = ["Module", "Sequential", "Residual"]
