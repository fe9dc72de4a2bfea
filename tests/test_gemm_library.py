"""The packed GEMM path's shared functions compiled and cached apart from a program's own
GEMM functions (gemm_library.py): a program with other GEMMs loads them instead of
compiling them again, programs sharing them in one process each run right, a damaged entry
is compiled again, and a shared function's name says everything its code depends on."""
from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

import graphc as gc
from graphc import sizes
from graphc.backends.llvm import codegen, gemm_library, jit, kernel_cache, vector_abi
from graphc.runtime.cache import CompileCache


def _mlp(width: int, batch: int | None = 32, depth: int = 2, seed: int = 0):
    """A ReLU MLP's loss and weight gradients (packed GEMMs: forward, both backward)."""
    rng = np.random.default_rng(seed)
    x = gc.placeholder((batch, 24), name="x")
    ws = [gc.parameter(rng.normal(0, 0.3, (24 if i == 0 else width, width))
                       .astype(np.float32), name=f"w{i}") for i in range(depth)]
    h = x
    for w in ws:
        h = gc.relu(h @ w)
    loss = gc.sum(h * h) * 0.01
    return x, [loss, *gc.grad(loss, ws)]


def _checked(width: int, folder: Path, batch: int | None = 32, depth: int = 2):
    """The MLP compiled with the cache in `folder`, checked against numpy; the function and
    its input."""
    x, outs = _mlp(width, batch, depth)
    f = gc.function([x], outs, backend="llvm", backend_options={"cache_dir": str(folder)})
    xv = np.linspace(-1, 1, 32 * 24).reshape(32, 24).astype(np.float32)
    _agree(f, gc.function([x], outs, backend="numpy"), xv)
    return f, xv


def _agree(f, reference, xv) -> None:
    for got, want in zip(f(xv), reference(xv)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_a_program_with_other_gemms_compiles_no_shared_function_again(tmp_path):
    first, _ = _checked(40, tmp_path)
    a = first.compile_times
    assert a["library compiled"] > 0 and a["library loaded"] == 0
    second, _ = _checked(48, tmp_path)  # other sizes: other GEMM functions, the same code
    b = second.compile_times
    assert b["kernels compiled"] > 0  # its own GEMMs (and the rest)
    assert b["library compiled"] == 0
    assert b["library loaded"] == a["library compiled"]


def test_programs_sharing_shared_functions_in_one_process_each_run_right(tmp_path):
    """Each program's engine links its own copy of the shared objects: loaded by several
    programs of one process, no definition is taken twice and every program runs right,
    also called in turn."""
    made = [_checked(width, tmp_path) for width in (40, 48, 56)]
    assert all(f.compile_times["library compiled"] == 0 for f, _ in made[1:])
    for _ in range(2):
        for width, (f, xv) in zip((40, 48, 56), made):
            x, outs = _mlp(width)
            _agree(f, gc.function([x], outs, backend="numpy"), xv)


def _library_entries(folder: Path) -> list[Path]:
    """The cache entries holding shared GEMM functions' objects (alone or batched)."""
    disk, out = CompileCache(folder), []
    for path in sorted(folder.glob("*.gco")):
        meta = (disk.get(path.stem) or (b"", {}))[1]
        listed = meta.get("functions", []) + [f for u in meta.get("units", [])
                                              for f in u["functions"]]
        if any(f.startswith(gemm_library.PREFIXES) for f in listed):
            out.append(path)
    return out


def _program_entries(folder: Path) -> list[Path]:
    disk = CompileCache(folder)
    return [p for p in sorted(folder.glob("*.gco"))
            if "object_lengths" in (disk.get(p.stem) or (b"", {}))[1]]


@pytest.mark.parametrize("damage", ["truncate", "remove"])
def test_a_damaged_or_missing_shared_function_is_compiled_again(tmp_path, damage):
    first, _ = _checked(40, tmp_path)
    (entry,) = _library_entries(tmp_path)  # (one module of them: one batch)
    for path in _program_entries(tmp_path):  # so that the units are looked up
        path.unlink()
    if damage == "truncate":
        entry.write_bytes(entry.read_bytes()[:300])
    else:
        entry.unlink()
    again, _ = _checked(40, tmp_path)  # (right results: checked)
    t = again.compile_times
    assert t["library compiled"] == first.compile_times["library compiled"]
    assert 0 < t["kernels compiled"] < t["kernels distinct"]  # the GEMM unit, rebuilt
    for path in _program_entries(tmp_path):
        path.unlink()
    assert _checked(40, tmp_path)[0].compile_times["library compiled"] == 0  # rewritten


def _pieces(*executables) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for exe in executables:
        binding = getattr(exe, "representative", None)  # (symbolic sizes: choices need one)
        with sizes.representative(binding) if binding else contextlib.nullcontext():
            writer = codegen.ModuleWriter(exe.schedule)
            for unit in writer.plan.units:
                for piece in writer.unit_parts(unit)[1]:
                    out.setdefault(piece.name, set()).add(piece.text)
    return out


def _executable(x, outs, xv):
    f = gc.function([x], outs, backend="llvm", backend_options={"cache_dir": None})
    f(xv)
    return f._exe.last


def _conv(channels: int):
    rng = np.random.default_rng(3)
    x = gc.placeholder((None, 1, 12, 12), name="x")
    w = gc.parameter(rng.normal(0, 0.3, (channels, 1, 3, 3)).astype(np.float32), name="w")
    v = gc.parameter(rng.normal(0, 0.3, (channels, channels, 3, 3)).astype(np.float32),
                     name="v")
    h = gc.relu(gc.nn.conv2d(gc.relu(gc.nn.conv2d(x, w, padding=1)), v, padding=1))
    loss = gc.sum(h * h)
    return x, [loss, *gc.grad(loss, [w, v])]


def test_a_shared_function_has_one_code_in_every_program():
    """What a shared function's code depends on is all in its name: programs of other
    sizes, depths, batches (symbolic too) and convolutions write the same text for each
    name. (Otherwise a program could link another's function of that name.)"""
    xv = np.linspace(-1, 1, 32 * 24).reshape(32, 24).astype(np.float32)
    images = np.linspace(-1, 1, 16 * 144).reshape(16, 1, 12, 12).astype(np.float32)
    made = [_executable(*_mlp(w, b, d), xv) for w, b, d in
            ((40, 32, 2), (64, 32, 3), (200, 32, 2), (48, None, 2))]
    made += [_executable(*_conv(c), images) for c in (8, 16)]
    pieces = _pieces(*made)
    assert len(pieces) > 8
    assert {name: len(texts) for name, texts in pieces.items() if len(texts) > 1} == {}


def test_the_drivers_declare_what_the_library_defines(tmp_path):
    x, outs = _mlp(40)
    writer = codegen.ModuleWriter(_executable(x, outs, np.zeros((32, 24), np.float32)).schedule)
    (unit,) = [u for u in writer.plan.units if u.library]
    drivers, pieces = writer.unit_parts(unit)
    names = {p.name for p in pieces}
    defined = set(re.findall(r'^define [^@]*@"([^"]+)"', drivers, re.M))
    declared = set(re.findall(r'^declare [^@]*@"([^"]+)"', drivers, re.M))
    assert names and names <= declared and not names & defined
    assert all(name.startswith(gemm_library.PREFIXES) for name in names)
    # each piece is a module of its own (its metadata numbered from !0), and so are all
    jit._init()
    for piece in pieces:
        jit._object_of(gemm_library.module_text([piece], vector_abi.annotate))
        assert all(line.startswith(f"!{i} = ") for i, line in enumerate(piece.metadata))
    whole = gemm_library.module_text(pieces, vector_abi.annotate)
    assert jit.valid_object(jit._object_of([drivers, whole])[0])


def test_a_unit_needing_a_missing_shared_function_is_a_miss(tmp_path):
    disk = CompileCache(tmp_path)
    jit._init()
    obj = jit._object_of("define i32 @g1(ptr %p) {\n  ret i32 0\n}")[0]
    lib = jit._object_of("define void @gemm_x() {\n  ret void\n}")[0]
    kernel_cache.store_unit(disk, "unit", obj, [], ["g1"], [("libkey", "gemm_x")])
    assert kernel_cache.Lookup(disk).find("unit", ["g1"]) is None  # not stored yet
    kernel_cache.store_library(disk, lib, [("other", "gemm_x")])  # another code's key
    assert kernel_cache.Lookup(disk).find("unit", ["g1"]) is None
    kernel_cache.store_library(disk, lib, [("libkey", "gemm_x")])
    found = kernel_cache.Lookup(disk)
    assert found.find("unit", ["g1"]) == [] and len(found.objects) == 2
    assert found.library_loaded == 1
    meta = json.loads((tmp_path / "unit.gco").read_bytes().split(b"\n")[1])["meta"] \
        if (tmp_path / "unit.gco").exists() else None
    assert meta is None or meta["library"] == [["libkey", "gemm_x"]]


def test_shared_functions_that_cannot_be_linked_are_compiled_again(monkeypatch, tmp_path):
    """Where what the builders found cannot be taken as it was found (a name under two
    keys), the schedule is compiled again without reading the cache, and runs right."""
    from graphc.backends.llvm import processes
    _checked(40, tmp_path)
    link, calls = processes._link_library, []

    def conflicting(found, needed, compiled, obj):
        if needed:  # (a GEMM unit's module)
            calls.append(len(compiled))
            if len(calls) == 1:
                raise processes._Conflict
        return link(found, needed, compiled, obj)

    monkeypatch.setattr(processes, "_link_library", conflicting)
    f, _ = _checked(48, tmp_path)  # (right results: checked)
    assert calls[0] == 0  # found in the cache at first; then compiled, the cache unread
    assert len(calls) == 2 and calls[1] == f.compile_times["library compiled"] > 0
