"""The Module base and the containers (Sequential, Residual).

A module builds graph on call (`y = module(x)` or `module(x, training=False)`) and owns state
as PyTorch's modules do: assigning a gc.nn Module or a gc.parameter to an attribute
(`self.conv = Conv2D(...)`, `self.w = gc.parameter(...)`) registers it, and so does a list or
tuple of them (`self.blocks = [Block(), Block()]`, named `blocks.0`, `blocks.1`; its contents
are read when asked, so appending later registers too). Reassigning an attribute replaces its
registration; assigning something else (None) removes it. `add_parameter` / `add_module` also
register. Names come from the module tree (`block1.conv.W`, `bn.running_mean`), never from what
else the process built: `state_dict()` / `load_state_dict()` and `gc.train.save(path, module)`
use them. Trainable parameters come from `parameters()` (declaration order, children after their
parent's own, each once); non-trainable state (BatchNorm's running statistics, Dropout's seed)
from `state()`; both from `variables()`.

A training-mode call of a layer with state (BatchNorm, Dropout) records its state updates as
default updates of the node it returns (graphc.default_updates): a gc.function whose outputs
or updates use that node applies them, unless its `updates` name those parameters. Merging
`updates()` (the latest training-mode call's updates) into a step is allowed but not needed."""
from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Any, Iterator, Mapping, NamedTuple

import numpy as np

import graphc.frontends as F
from graphc.coerce import coerce_array
from graphc.frontends.convert import to_node
from graphc.frontends.tensor import Parameter, Tensor, parameter
from graphc.ops.shapes import fmt_shape

# Display names only (labels in listings, messages); state_dict names come from the tree.
_counters: dict[str, Iterator[int]] = defaultdict(lambda: itertools.count(1))


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise TypeError(f"module name: expected a non-empty string, got {name!r}")
    return name


def _check_local(module: "Module", local: Any, what: str) -> str:
    if not isinstance(local, str) or not local or "." in local or local.startswith("_"):
        raise ValueError(f"{module.name}: {what} name must be a non-empty string without '.' "
                         f"that does not start with '_', got {local!r}")
    return local


def _registrable(value: Any) -> bool:
    return isinstance(value, (Module, Parameter, list, tuple))


class LoadResult(NamedTuple):
    """What load_state_dict(strict=False) left out (both empty after a strict load)."""

    missing_keys: list[str]
    unexpected_keys: list[str]


class Module:
    """Base class: subclasses assign their parameters and submodules to attributes (or use
    `add_parameter` / `add_module`) and implement `forward(x, training)`; `extra_repr()`
    says what the repr shows between the parentheses."""

    prefix = "module"

    def __init__(self, name: str | None = None) -> None:
        # What the tree holds, by local name, in registration order: a Parameter, a Module,
        # or a list/tuple whose Parameter and Module items are read when asked.
        self._entries: dict[str, Any] = {}
        self._state_names: set[str] = set()  # entries that are non-trainable state
        self.name = _check_name(name) if name is not None else \
            f"{self.prefix}{next(_counters[self.prefix])}"
        self.training = True
        self._pending: dict[Parameter, Tensor] = {}

    # -- registration ----------------------------------------------------------------------
    def __setattr__(self, key: str, value: Any) -> None:
        if key.startswith("_"):
            object.__setattr__(self, key, value)
            return
        entries = self.__dict__.get("_entries")
        if entries is None:
            if isinstance(value, (Module, Parameter)):
                raise AttributeError(f"{type(self).__name__}: assign {key!r} after calling "
                                     "super().__init__()")
            object.__setattr__(self, key, value)
            return
        object.__setattr__(self, key, value)
        if _registrable(value):
            entries[key] = value  # a reassignment keeps the entry's place
        else:
            entries.pop(key, None)
            self._state_names.discard(key)

    def __delattr__(self, key: str) -> None:
        object.__delattr__(self, key)
        if not key.startswith("_"):
            self._entries.pop(key, None)
            self._state_names.discard(key)

    def add_parameter(self, local: str, value: Any, trainable: bool = True) -> Parameter:
        """Registers a parameter named `local` (made from an array, or an existing
        gc.parameter, which is then shared); trainable=False makes it state (not in
        parameters(), in state() and checkpoints). Returns the parameter."""
        local = _check_local(self, local, "parameter")
        p = value if isinstance(value, Parameter) else \
            parameter(value, name=f"{self.name}.{local}")
        self._entries[local] = p
        (self._state_names.discard if trainable else self._state_names.add)(local)
        return p

    def add_module(self, name: Any, module: Any = None) -> "Module":
        """Registers a child: add_module(name, module) (PyTorch's order), or add_module(module),
        named by its position ("0", "1", ...). Returns the module."""
        if module is None:
            name, module = str(sum(1 for _ in self._entries)), name
            while name in self._entries:
                name = str(int(name) + 1)
        if not isinstance(module, Module):
            raise TypeError(f"{self.name}: expected a gc.nn Module, got {type(module).__name__}")
        self._entries[_check_local(self, name, "module")] = module
        return module

    # -- the tree --------------------------------------------------------------------------
    def _items(self) -> Iterator[tuple[str, Any, bool]]:
        """(local name, Parameter or Module, is state) for what this module holds itself."""
        for key, value in self._entries.items():
            state = key in self._state_names
            if isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    if isinstance(item, (Module, Parameter)):
                        yield f"{key}.{i}", item, state
            else:
                yield key, value, state

    def named_children(self) -> list[tuple[str, "Module"]]:
        """(name, module) for the direct children, each module once."""
        out: dict[int, tuple[str, Module]] = {}
        for key, item, _ in self._items():
            if isinstance(item, Module):
                out.setdefault(id(item), (key, item))
        return list(out.values())

    def children(self) -> list["Module"]:
        return [m for _, m in self.named_children()]

    def named_modules(self) -> list[tuple[str, "Module"]]:
        """("", self) and (dotted name, module) for every descendant, depth first, each once."""
        seen: dict[int, tuple[str, Module]] = {}

        def walk(m: Module, name: str) -> None:
            if id(m) in seen:
                return
            seen[id(m)] = (name, m)
            for key, child in m.named_children():
                walk(child, f"{name}.{key}" if name else key)
        walk(self, "")
        return list(seen.values())

    def modules(self) -> list["Module"]:
        """This module and every descendant, depth first, each once."""
        return [m for _, m in self.named_modules()]

    def _named(self, state: bool) -> list[tuple[str, Parameter]]:
        out: dict[Any, tuple[str, Parameter]] = {}
        for prefix, m in self.named_modules():
            for key, item, is_state in m._items():
                if isinstance(item, Parameter) and is_state == state:
                    out.setdefault(item.node, (f"{prefix}.{key}" if prefix else key, item))
        return list(out.values())

    def named_parameters(self) -> list[tuple[str, Parameter]]:
        """(dotted name from the tree, parameter) for the trainable parameters, each once."""
        return self._named(state=False)

    def named_state(self) -> list[tuple[str, Parameter]]:
        """(dotted name, parameter) for the non-trainable state (running statistics, seeds)."""
        taken = {p.node for _, p in self.named_parameters()}
        return [(n, p) for n, p in self._named(state=True) if p.node not in taken]

    def named_variables(self) -> list[tuple[str, Parameter]]:
        """named_parameters() + named_state(): everything a checkpoint needs."""
        return self.named_parameters() + self.named_state()

    def parameters(self) -> list[Parameter]:
        """The trainable parameters, in a stable order, each once (shared modules too)."""
        return [p for _, p in self.named_parameters()]

    def state(self) -> list[Parameter]:
        """Non-trainable state (BatchNorm's running mean/var, Dropout's seed)."""
        return [p for _, p in self.named_state()]

    def variables(self) -> list[Parameter]:
        """parameters() + state(): everything a checkpoint needs."""
        return [p for _, p in self.named_variables()]

    # -- state dicts -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """{dotted name from the tree: a copy of its value} for parameters and state, read
        together (no compiled step runs halfway through)."""
        from graphc.train.checkpoint import _locked
        named = self.named_variables()
        with _locked(p for _, p in named):
            return {name: p.storage.array.copy() for name, p in named}

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True
                        ) -> LoadResult:
        """Sets parameters and state from {dotted name: array} (as state_dict() returns).
        strict (PyTorch's default): a missing or unexpected key is a ValueError naming it. A
        shape mismatch is a ValueError, a dtype of another kind a TypeError, each naming the
        key. Every check runs before any value is set."""
        what = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"{what}: expected a dict {{name: array}}, got "
                            f"{type(state_dict).__name__}")
        for key in state_dict:
            if not isinstance(key, str):
                raise TypeError(f"{what}: keys must be names (str), got {key!r}")
        targets = dict(self.named_variables())
        missing = [k for k in targets if k not in state_dict]
        unexpected = [k for k in state_dict if k not in targets]
        if strict and (missing or unexpected):
            parts = [f"missing key(s) {missing}"] if missing else []
            parts += [f"unexpected key(s) {unexpected}"] if unexpected else []
            raise ValueError(f"{what}: {'; '.join(parts)} (the module's keys: "
                             f"{list(targets)}; strict=False loads the keys that match)")
        arrays = {}
        for key, p in targets.items():
            if key not in state_dict:
                continue
            value = state_dict[key]
            if isinstance(value, Parameter):
                value = value.value
            want = p.storage.array
            array = coerce_array(value, want.dtype, f"{what}: {key!r}")
            if array.shape != want.shape:
                raise ValueError(f"{what}: {key!r} has shape {fmt_shape(array.shape)}, the "
                                 f"module's parameter has {fmt_shape(want.shape)}")
            arrays[key] = array
        from graphc.train.checkpoint import _locked
        with _locked(targets[k] for k in arrays):
            for key, array in arrays.items():
                targets[key].storage.array[...] = array  # in place: compiled code keeps it
        return LoadResult(missing, unexpected)

    def updates(self) -> dict[Parameter, Tensor]:
        """State updates from the latest training-mode call of each module. gc.function
        applies them by default (see the module docstring); merging them into a step's
        updates is allowed and changes nothing."""
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

    # -- printing --------------------------------------------------------------------------
    def extra_repr(self) -> str:
        """The layer's settings, shown between the parentheses of its repr."""
        return ""

    def _repr_children(self) -> list[tuple[str, str]]:
        return [(key, repr(m)) for key, m in self.named_children()]

    def __repr__(self) -> str:
        head, children = f"{type(self).__name__}(", self._repr_children()
        extra = self.extra_repr()
        if not children:
            return f"{head}{extra})"
        lines = [head] + ([f"  {extra}"] if extra else [])
        for key, text in children:
            lines.append(f"  ({key}): " + text.replace("\n", "\n  "))
        return "\n".join(lines + [")"])


def _describe(layer: Any) -> str:
    """One line naming a layer or callable, for messages and reprs."""
    if isinstance(layer, Module):
        return f"{type(layer).__name__}({layer.extra_repr()}) {layer.name!r}"
    return getattr(layer, "__name__", None) or repr(layer)


class Sequential(Module):
    """Modules (or plain callables of one tensor) applied in order; the modules are named by
    their position ("0", "1", ...), as in PyTorch."""

    prefix = "sequential"

    def __init__(self, *modules: Any, name: str | None = None) -> None:
        super().__init__(name)
        if len(modules) == 1 and isinstance(modules[0], (list, tuple)):
            modules = tuple(modules[0])
        self._layers: list[Any] = []
        for i, m in enumerate(modules):
            if isinstance(m, Module):
                self.add_module(str(i), m)
            elif not callable(m):
                raise TypeError(f"Sequential: item {i} is neither a Module nor callable: {m!r}")
            self._layers.append(m)

    @property
    def layers(self) -> tuple[Any, ...]:
        """The items in order (a tuple: a Sequential does not change after it is built)."""
        return tuple(self._layers)

    def forward(self, x: Any, training: bool) -> Tensor:
        for m in self._layers:
            x = m(x, training=training) if isinstance(m, Module) else m(x)
        return x

    def _repr_children(self) -> list[tuple[str, str]]:
        return [(str(i), repr(m) if isinstance(m, Module) else _describe(m))
                for i, m in enumerate(self._layers)]

    def __len__(self) -> int:
        return len(self._layers)

    def __getitem__(self, i: int) -> Any:
        return self._layers[i]

    def __iter__(self):
        return iter(self._layers)


def _same_shape(a: tuple, b: tuple) -> bool:
    """Equal ranks and equal sizes where both are known (a size known only at call time may
    match anything)."""
    return len(a) == len(b) and all(not isinstance(x, int) or not isinstance(y, int) or x == y
                                    for x, y in zip(a, b))


class Residual(Module):
    """x + f(x); f must keep the shape (broadcasting is not allowed: it would hide a layer
    that changes the shape)."""

    prefix = "residual"

    def __init__(self, module: Any, name: str | None = None) -> None:
        super().__init__(name)
        if not isinstance(module, Module) and not callable(module):
            raise TypeError(f"Residual: expected a Module or callable, got {module!r}")
        self.module = module  # a Module registers as the child "module"

    def forward(self, x: Any, training: bool) -> Tensor:
        fx = self.module(x, training=training) if isinstance(self.module, Module) \
            else self.module(x)
        xs = to_node(x, f"Residual {self.name!r} input").shape
        fs = to_node(fx, f"Residual {self.name!r}: the inner layer's output").shape
        if not _same_shape(xs, fs):
            raise ValueError(f"Residual {self.name!r}: the inner layer "
                             f"{_describe(self.module)} maps shape {fmt_shape(xs)} to "
                             f"{fmt_shape(fs)}; x + f(x) needs f to keep the shape")
        return F.add(x, fx)

    def _repr_children(self) -> list[tuple[str, str]]:
        if isinstance(self.module, Module):
            return super()._repr_children()
        return [("module", _describe(self.module))]


__all__ = ["Module", "Sequential", "Residual", "LoadResult"]
