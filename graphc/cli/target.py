"""Loads `FILE.py:NAME` for the command line: a tensor, a list of tensors, a Graph or a
compiled Function, or a zero-argument callable returning one."""
from __future__ import annotations

import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any

from graphc.cli.errors import USAGE, CLIError
from graphc.frontends import Tensor
from graphc.function import Function
from graphc.graph import Graph


def _is_target(value: Any) -> bool:
    if isinstance(value, (Tensor, Graph, Function)):
        return True
    return (isinstance(value, (list, tuple)) and len(value) > 0
            and all(isinstance(v, Tensor) for v in value))


def _load_module(path: Path) -> Any:
    name = f"_graphc_cli_{abs(hash(str(path)))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise CLIError(f"{path}: cannot be loaded as a Python module", USAGE)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))  # so the file can import its neighbours
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SystemExit as exc:
        raise CLIError(f"{path}: the file exited (SystemExit {exc.code}) while loading") from None
    except Exception as exc:
        raise CLIError(f"{path}: running the file raised {type(exc).__name__}: {exc}") from exc
    finally:
        sys.path.remove(str(path.parent))
    return module


def load_target(spec: str) -> Any:
    """The object named by `spec` ("FILE.py:NAME", NAME may be dotted: `model.loss`)."""
    file, sep, name = spec.rpartition(":")
    if not sep or not file or not name:
        raise CLIError(f"target {spec!r}: expected FILE.py:NAME", USAGE)
    path = Path(file)
    if path.suffix != ".py":
        raise CLIError(f"target {spec!r}: {file!r} is not a .py file", USAGE)
    if not path.is_file():
        raise CLIError(f"target {spec!r}: no such file {file!r}", USAGE)
    value: Any = _load_module(path.resolve())
    for part in name.split("."):
        if not hasattr(value, part):
            raise CLIError(f"target {spec!r}: {file} has no name {name!r}", USAGE)
        value = getattr(value, part)
    if not _is_target(value) and callable(value) and not isinstance(value, type):
        params = [p for p in inspect.signature(value).parameters.values()
                  if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY,
                                                         p.POSITIONAL_OR_KEYWORD,
                                                         p.KEYWORD_ONLY)]
        if params:
            raise CLIError(f"target {spec!r}: {name} takes arguments "
                           f"({', '.join(p.name for p in params)}); give a tensor, a Graph, "
                           f"a Function or a zero-argument callable", USAGE)
        try:
            value = value()
        except Exception as exc:
            raise CLIError(f"target {spec!r}: calling {name}() raised "
                           f"{type(exc).__name__}: {exc}") from exc
    if isinstance(value, tuple) and _is_target(value):
        value = list(value)
    if not _is_target(value):
        raise CLIError(f"target {spec!r}: {name} is of type {type(value).__name__}, not a tensor, "
                       f"a list of tensors, a Graph or a gc.Function", USAGE)
    return value
