"""The code hash: the contents of the Python files that decide what code a backend generates."""
from __future__ import annotations

import functools
import hashlib
import importlib
import os
from pathlib import Path
from typing import Iterable


def source_hash(folders: Iterable[Path]) -> str:
    """SHA-256 over every .py file under `folders` (its path relative to its folder and its
    bytes), in a fixed order. Contents, not sizes or times: a checkout or a `touch` keeps
    the hash, an edit that keeps the size changes it."""
    h = hashlib.sha256()
    for number, top in enumerate(folders):
        root = os.fspath(top)
        h.update(f"folder {number}\n".encode())
        cut = len(root) + 1
        # plain strings and open(): this runs on every warm start, where pathlib costs ~1 ms
        for folder, dirs, files in os.walk(root):
            dirs.sort()
            for name in sorted(files):
                if not name.endswith(".py"):
                    continue
                path = os.path.join(folder, name)
                with open(path, "rb") as fh:
                    data = fh.read()
                h.update(f"{path[cut:].replace(os.sep, '/')}|{len(data)}\n".encode())
                h.update(data)
    return h.hexdigest()


@functools.lru_cache(maxsize=None)
def code_hash(backend_package: str) -> str:
    """The hash of graphc's core (the optimizer, scheduler, op definitions...) and of one
    backend's package, with graphc's version; computed once per process. Whole folders,
    so no list of files can fall behind the code."""
    import graphc
    backend = importlib.import_module(backend_package)
    folders = [Path(p) for p in graphc.__path__] + [Path(p) for p in backend.__path__]
    return hashlib.sha256(f"{graphc.__version__}|{source_hash(folders)}".encode()).hexdigest()
