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

A packed GEMM unit's shared functions (gemm_library.py) are entries of their own, keyed by
their code (library_key), stored like units (one function each: alone, or several in a
batch); the unit's entry lists the (key, name) of each it needs, and is a hit only where
each of them is found too. Library functions are named by what they do, not by a digest:
a name defined by a taken object under another key is a miss (never two definitions).
An object of shared functions lists in turn those it calls and does not define (compiled
where the others were found): taking it takes them first. A batch is taken whole, also by
a program that needs one of its functions: without them, one of its other functions would
call a symbol no object of the engine defines (MCJIT then resolves none of the engine's
calls: a crash at the first call, seen with convolutions of three programs in one process).

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


def library_key(piece_text: str) -> str:
    """The cache key of one shared GEMM function: its code (gemm_library.Piece.text) and
    what unit_key adds."""
    return unit_key("library function\n" + piece_text)


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
        self._keys: dict[str, str] = {}  # a function -> the key of the unit defining it
        self._batches: set[str] = set()  # those whose object was taken
        self.library_loaded = 0  # shared GEMM functions found for the units found
        self._open: set[str] = set()  # keys being found (a cycle of needs is a miss)

    def find(self, key: str, functions: list[str]) -> list[str] | None:
        """The thread flags of the unit under `key`, whose code is now among `objects`
        (with the shared functions it needs); None: not found (missing, damaged, its
        functions not what they must be, or a shared function it needs not found)."""
        functions = sorted(functions)
        if self.defined.issuperset(functions):
            if any(self._keys.get(f, key) != key for f in functions):
                return None  # another unit's code under this name
            return self.flags(functions)
        if key in self._open:
            return None
        self._open.add(key)
        try:
            return self._find(key, functions)
        finally:
            self._open.discard(key)

    def _find(self, key: str, functions: list[str]) -> list[str] | None:
        hit = self.disk.get(key)
        if hit is None:
            return None
        obj, meta = hit
        if isinstance(meta.get("batch"), str):
            return self._from_batch(meta["batch"], key, functions)
        flags, library = meta.get("flags"), meta.get("library", [])
        if not (_names(flags) and meta.get("functions") == functions
                and jit.valid_object(obj) and self.find_library(library)
                and self.take(obj, [(functions, flags, key)])):
            return None
        return flags

    def find_library(self, library: object) -> bool:
        """Whether every shared function of a list of [key, name] is found (and taken)."""
        if not (isinstance(library, list) and all(
                isinstance(p, list) and len(p) == 2 and _names(p) for p in library)):
            return False
        if any(self.find(key, [name]) is None for key, name in library):
            return False
        self.library_loaded += len(library)
        return True

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
            parts.append((sorted(unit["functions"]), unit["flags"], unit["key"]))
        mine = [flags for unit, (fns, flags, _) in zip(units, parts)
                if unit["key"] == key and fns == functions]
        if not (mine and self.find_library(meta.get("library", []))
                and self.take(obj, parts)):
            return None
        self._batches.add(name)
        return mine[0]

    def take(self, obj: bytes, units: list[tuple[list[str], list[str], str]]) -> bool:
        """Adds an object defining `units` (functions, flags, key); False where one of them
        is defined already (linked twice, the engine would have two definitions)."""
        functions = [f for fns, _, _ in units for f in fns]
        if self.defined.intersection(functions) or len(set(functions)) < len(functions):
            return False
        self.objects.append(obj)
        self.defined.update(functions)
        for fns, flags, key in units:
            if fns:
                self._flags[fns[0]] = flags
            self._keys.update((f, key) for f in fns)
        return True



def store_unit(disk: CompileCache, key: str, obj: bytes, flags: list[str],
               functions: list[str], library: list[tuple[str, str]] | None = None) -> None:
    """A unit's own object; `library`: the (key, name) of each shared function it needs."""
    meta: dict = {"flags": flags, "functions": sorted(functions)}
    if library:
        meta["library"] = [[k, n] for k, n in library]
    disk.put(key, obj, meta, durable=False)


def store_library(disk: CompileCache, obj: bytes, pieces: list[tuple[str, str]],
                  needs: list[tuple[str, str]] | None = None) -> None:
    """An object of shared GEMM functions (key, name each): a unit entry of one function,
    or a batch entry of several; `needs`: the (key, name) of each shared function it calls
    and does not define (taken before it)."""
    if len(pieces) == 1:
        store_unit(disk, pieces[0][0], obj, [], [pieces[0][1]], needs)
    elif pieces:
        store_batch(disk, obj, [(key, [name], []) for key, name in pieces], needs)


def store_batch(disk: CompileCache, obj: bytes,
                units: list[tuple[str, list[str], list[str]]],
                library: list[tuple[str, str]] | None = None) -> None:
    """A batch's object (its units: key, functions, flags; `library`: the shared functions
    it needs from other objects), then each unit's entry naming it (after the object: an
    entry never names a batch not yet written)."""
    name = batch_key([key for key, _, _ in units])
    listed = [{"key": key, "functions": sorted(functions), "flags": flags}
              for key, functions, flags in units]
    meta: dict = {"units": listed}
    if library:
        meta["library"] = [[k, n] for k, n in library]
    if disk.put(name, obj, meta, durable=False):
        for key, _, _ in units:
            disk.put(key, b"", {"batch": name}, durable=False)
