"""The per-kernel disk cache: each unit's object code (codegen.plan_units: one distinct
kernel, or the packed GEMMs of one dtype) stored under a key of its kernels' signatures, so
another program with the same kernels (the model rebuilt in another script, a deeper
variant) loads them instead of compiling them. Entries go through CompileCache (atomic,
checked); a damaged one is compiled again.

Units compiled together in one module (codegen.batches) share one object: it is stored
once, as a batch entry (under a key of its units' keys, listing each unit's key, functions
and thread flags), and each unit's key holds a small entry naming that batch. A unit is
found through either; a batch that is missing, damaged, not listing the unit, or defining a
function some other object loaded already defines (two batches of other programs holding
the same kernel) is a miss.

Unit and batch entries are written without fsync (a cold compile writes one per unit: W6's
73 fsyncs took 0.3-0.45 s of wall time); the MAC makes one cut short by a crash a miss."""
from __future__ import annotations

import re
from typing import TypeGuard

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


def batch_key(unit_keys: list[str]) -> str:
    """The cache key of a batch's object: its units' keys (which hold everything else)."""
    return cache_key("llvm batch\n" + "\n".join(sorted(unit_keys)), (), "", "")


def _names(value: object) -> TypeGuard[list[str]]:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


class Lookup:
    """Units' objects found in the cache: each object taken once (a batch serves all its
    units) and no function defined by two of them."""

    def __init__(self, disk: CompileCache) -> None:
        self.disk = disk
        self.objects: list[bytes] = []
        self.defined: set[str] = set()  # the functions the objects define
        self._flags: dict[str, list[str]] = {}  # a unit's first function -> its flags
        self._batches: set[str] = set()  # those whose object was taken

    def find(self, key: str, functions: list[str]) -> list[str] | None:
        """The thread flags of the unit under `key`, whose code is now among `objects`;
        None: not found (missing, damaged, or its functions not what they must be)."""
        functions = sorted(functions)
        if self.defined.issuperset(functions):
            return self.flags(functions)
        hit = self.disk.get(key)
        if hit is None:
            return None
        obj, meta = hit
        if isinstance(meta.get("batch"), str):
            return self._from_batch(meta["batch"], key, functions)
        flags = meta.get("flags")
        if not (_names(flags) and meta.get("functions") == functions
                and jit.valid_object(obj) and self._take(obj, [(functions, flags)])):
            return None
        return flags

    def flags(self, functions: list[str]) -> list[str] | None:
        """The flags of a unit whose functions a taken object defines (None: none does)."""
        return self._flags.get(sorted(functions)[0]) if functions else []

    def _from_batch(self, name: str, key: str, functions: list[str]) -> list[str] | None:
        if name in self._batches:
            return None  # taken, and not defining this unit's functions
        hit = self.disk.get(name)
        if hit is None:
            return None
        obj, meta = hit
        units = meta.get("units")
        if not (isinstance(units, list) and jit.valid_object(obj)):
            return None
        parts = []
        for unit in units:
            if not (isinstance(unit, dict) and _names(unit.get("functions"))
                    and _names(unit.get("flags")) and isinstance(unit.get("key"), str)):
                return None
            parts.append((sorted(unit["functions"]), unit["flags"]))
        mine = [flags for unit, (fns, flags) in zip(units, parts)
                if unit["key"] == key and fns == functions]
        if not mine or not self._take(obj, parts):
            return None
        self._batches.add(name)
        return mine[0]

    def _take(self, obj: bytes, units: list[tuple[list[str], list[str]]]) -> bool:
        """Adds an object defining `units` (functions, flags); False where one of them is
        defined already (linked twice, the engine would have two definitions)."""
        functions = [f for fns, _ in units for f in fns]
        if self.defined.intersection(functions) or len(set(functions)) < len(functions):
            return False
        self.objects.append(obj)
        self.defined.update(functions)
        for fns, flags in units:
            if fns:
                self._flags[fns[0]] = flags
        return True


def store_unit(disk: CompileCache, key: str, obj: bytes, flags: list[str],
               functions: list[str]) -> None:
    disk.put(key, obj, {"flags": flags, "functions": sorted(functions)}, durable=False)


def store_batch(disk: CompileCache, obj: bytes,
                units: list[tuple[str, list[str], list[str]]]) -> None:
    """A batch's object (its units: key, functions, flags), then each unit's entry naming
    it (after the object: an entry never names a batch not yet written)."""
    name = batch_key([key for key, _, _ in units])
    listed = [{"key": key, "functions": sorted(functions), "flags": flags}
              for key, functions, flags in units]
    if disk.put(name, obj, {"units": listed}, durable=False):
        for key, _, _ in units:
            disk.put(key, b"", {"batch": name}, durable=False)
