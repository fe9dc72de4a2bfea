"""The per-kernel disk cache: each unit's object code (codegen.plan_units: one distinct
kernel, or the packed GEMMs of one dtype) stored under a key of its kernels' signatures, so
another program with the same kernels (the model rebuilt in another script, a deeper
variant) loads them instead of compiling them. Entries go through CompileCache (atomic,
checked); a damaged one is compiled again."""
from __future__ import annotations

import re

from graphc.backends.llvm import backend, jit, threads
from graphc.runtime.cache import CompileCache, cache_key
from graphc.runtime.code_hash import code_hash

_FLAG = re.compile(rf'@"?({threads.MODULE_FLAG}_\w+)"? = global')


def team_flags(ir_text: str) -> list[str]:
    """The per-module thread flags an IR text defines (see adaptive.ThreadChooser)."""
    return _FLAG.findall(ir_text)


def unit_key(unit_text: str) -> str:
    """The cache key of a unit's code: its kernels' signatures, the target, the backend's
    code hash and the thread settings the code is written for."""
    return cache_key("llvm kernels\n" + unit_text, (), backend.target_id(),
                     code_hash("graphc.backends.llvm"), ("unit", threads.thread_config()))


def load_unit(disk: CompileCache, key: str, functions: list[str]) -> \
        tuple[bytes, list[str]] | None:
    """A unit's object code and thread flags from the cache, or None (missing, damaged, or
    not defining the `functions` it must)."""
    hit = disk.get(key)
    if hit is None:
        return None
    obj, meta = hit
    flags, defined = meta.get("flags"), meta.get("functions")
    if not (isinstance(flags, list) and all(isinstance(f, str) for f in flags)
            and defined == sorted(functions) and jit.valid_object(obj)):
        return None
    return obj, flags


def store_unit(disk: CompileCache, key: str, obj: bytes, flags: list[str],
               functions: list[str]) -> None:
    disk.put(key, obj, {"flags": flags, "functions": sorted(functions)})
