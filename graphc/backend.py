"""The backend protocol, and the registry that finds a backend by name (imported on first use)."""
from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from graphc.program import Program
from graphc.schedule.policy import SchedulePolicy


@runtime_checkable
class Executable(Protocol):
    """A compiled program: runs checked arguments, shows its generated code."""

    @property
    def source(self) -> str: ...

    def run(self, args: Sequence[np.ndarray]) -> list[Any]: ...


@runtime_checkable
class Backend(Protocol):
    """A target. `name` is what users pass as backend=...; `policy` is what it asks of the
    scheduler by default; compile validates `options` (backend_options) and may keep the
    program to optimize it later, or never (code from a cache)."""

    name: str
    policy: SchedulePolicy

    def compile(self, program: Program, options: Mapping[str, Any]) -> Executable: ...


def _module_loader(module: str) -> Callable[[], Backend]:
    """A loader importing `module` (its heavy dependencies with it) and taking its BACKEND."""
    def load() -> Backend:
        try:
            return importlib.import_module(module).BACKEND
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("graphc.backends"):  # no such backend yet
                raise NotImplementedError(
                    f"backend {module.rsplit('.', 1)[-1]!r} is not implemented yet; "
                    "backend='numpy' runs every graph") from None
            raise
    return load


# Name -> loader, in the order error messages list them.
_REGISTRY: dict[str, Callable[[], Backend]] = {
    name: _module_loader(f"graphc.backends.{name}") for name in ("numpy", "llvm", "cuda")}
_LOADED: dict[str, Backend] = {}


def backend_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def register_backend(name: str, loader: Callable[[], Backend]) -> None:
    """Makes backend=`name` load its backend with `loader` (called on first use)."""
    _REGISTRY[name] = loader
    _LOADED.pop(name, None)


def get_backend(name: str) -> Backend:
    """The backend called `name`: ValueError for an unknown name, NotImplementedError for
    one that is registered but not there."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"backend: {name!r} is not one of {', '.join(_REGISTRY)}")
    backend = _LOADED.get(name)
    if backend is not None:
        return backend
    backend = _LOADED[name] = _REGISTRY[name]()
    return backend
