"""One-kernel units linked into one module (codegen.batches) and their cache entries: a
batch object stored once, each unit's key naming it; round trips, damaged or foreign
batches as misses, and no function linked twice."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import graphc as gc
from graphc.backends.llvm import codegen, jit, kernel_cache
from graphc.runtime.cache import CompileCache


def _unit(n: int, alone: bool = False, cost: int = 1) -> codegen.Unit:
    return codegen.Unit((n,), f"sig{n}", f"u{n}", cost, alone)


def test_shared_units_stay_alone_and_small_ones_are_batched():
    units = [_unit(0, alone=True, cost=40)] + [_unit(n, cost=1 + n % 3) for n in range(1, 61)]
    modules = codegen.batches(units, list(range(61)), jobs=2)
    assert [0] in modules
    batched = [m for m in modules if m != [0]]
    assert 1 < len(batched) <= 2 * codegen.MODULES_PER_PROCESS  # a few per process
    assert sorted(n for m in batched for n in m) == list(range(1, 61))  # each unit once


def test_a_few_units_are_each_a_module_of_their_own():
    units = [_unit(n) for n in range(codegen.BATCH_MIN_UNITS - 1)]
    todo = list(range(len(units)))
    assert codegen.batches(units, todo, jobs=2) == [[n] for n in todo]


def test_one_process_builds_one_batch():
    units = [_unit(n, cost=3) for n in range(40)]
    assert codegen.batches(units, list(range(40)), jobs=1) == [list(range(40))]


def test_light_units_and_o3_units_are_batched_apart():
    """A module has one pass pipeline: units written as explicit vector loops (light) never
    share one with units LLVM must vectorize (O3)."""
    units = [codegen.Unit((n,), f"sig{n}", f"u{n}", 3 + n % 3, light=n % 2 == 0)
             for n in range(40)]
    for jobs in (1, 2):
        modules = codegen.batches(units, list(range(40)), jobs)
        assert sorted(n for m in modules for n in m) == list(range(40))
        assert all(len({units[n].light for n in m}) == 1 for m in modules)
        light = sum(units[m[0]].light for m in modules)
        assert (light, len(modules) - light) == ((1, 1) if jobs == 1 else (
            codegen.MODULES_PER_PROCESS * codegen.LIGHT_SPLIT, codegen.MODULES_PER_PROCESS))


def test_light_units_are_cut_finer_and_queued_last():
    """Light modules (~1 ms of LLVM's own each) are cut LIGHT_SPLIT times finer than O3
    ones and cost less each, so the processes take them last and end within a small one of
    each other."""
    units = [codegen.Unit((n,), f"sig{n}", f"u{n}", 3, light=n < 30) for n in range(60)]
    modules = codegen.batches(units, list(range(60)), jobs=2)
    costs = {id(m): sum(units[n].cost for n in m) for m in modules}
    light = [m for m in modules if units[m[0]].light]
    o3 = [m for m in modules if not units[m[0]].light]
    assert len(light) == codegen.LIGHT_SPLIT * len(o3)
    assert max(costs[id(m)] for m in light) < min(costs[id(m)] for m in o3)


def test_a_kernel_calling_mpi_is_never_batched():
    """MPI's symbols exist only in processes that reduce across ranks: a batch holding such
    a kernel, loaded by another program for a kernel it shares, would not link."""
    from graphc.schedule import ir as kir
    reduce = kir.AllReduce(0, 4, np.dtype("float32"), 2)
    assert codegen._collective(reduce)
    body = SimpleNamespace(kernels=[reduce])  # (the only field _collective reads)
    loop = kir.Loop(4, False, body, (), (), (), ())  # type: ignore[arg-type]
    assert codegen._collective(loop)
    assert not codegen._collective(kir.Loop(4, False, SimpleNamespace(kernels=[]),  # type: ignore[arg-type]
                                            (), (), (), ()))


def _object(*names: str) -> bytes:
    jit._init()
    text = "\n".join(f"define i32 @{n}(ptr %p) {{\n  ret i32 0\n}}" for n in names)
    return jit._object_of(text)[0]


@pytest.fixture
def disk(tmp_path) -> CompileCache:
    return CompileCache(tmp_path)


def test_a_batch_round_trips_and_serves_each_unit_once(disk):
    obj = _object("f1", "f2")
    kernel_cache.store_batch(disk, obj, [("k1", ["f1"], ["flag1"]), ("k2", ["f2"], [])])
    found = kernel_cache.Lookup(disk)
    assert found.find("k2", ["f2"]) == []
    assert found.find("k1", ["f1"]) == ["flag1"]
    assert found.objects == [obj]  # one object for both units
    assert found.defined == {"f1", "f2"}


def test_a_unit_entry_of_its_own_is_still_read(disk):
    obj = _object("f1")
    kernel_cache.store_unit(disk, "k1", obj, ["flag1"], ["f1"])
    found = kernel_cache.Lookup(disk)
    assert found.find("k1", ["f1"]) == ["flag1"] and found.objects == [obj]


def _batch_file(disk: CompileCache, keys: list[str]) -> Path:
    assert disk.folder is not None
    return disk.folder / f"{kernel_cache.batch_key(keys)}.gco"


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty", "foreign",
                                    "missing"])
def test_a_damaged_or_foreign_batch_is_a_miss(disk, damage):
    kernel_cache.store_batch(disk, _object("f1", "f2"), [("k1", ["f1"], []), ("k2", ["f2"], [])])
    kernel_cache.store_unit(disk, "other", _object("g"), [], ["g"])
    path = _batch_file(disk, ["k1", "k2"])
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        path.write_bytes(data[:-100] + bytes([data[-100] ^ 0xFF]) + data[-99:])
    elif damage == "garbage":
        path.write_bytes(b"not a graphc entry at all\n" * 10)
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "foreign":  # a good entry, signed by us, of another key
        assert disk.folder is not None
        path.write_bytes((disk.folder / "other.gco").read_bytes())
    else:
        path.unlink()
    found = kernel_cache.Lookup(disk)
    assert found.find("k1", ["f1"]) is None and found.find("k2", ["f2"]) is None
    assert found.objects == [] and found.defined == set()


def test_a_batch_not_listing_the_unit_or_its_functions_is_a_miss(disk):
    kernel_cache.store_batch(disk, _object("f1", "f2"), [("k1", ["f1"], []), ("k2", ["f2"], [])])
    found = kernel_cache.Lookup(disk)
    assert found.find("k1", ["f1", "f9"]) is None  # the unit's code is other code now
    # a unit entry naming a batch that does not list it
    disk.put("k3", b"", {"batch": kernel_cache.batch_key(["k1", "k2"])})
    assert kernel_cache.Lookup(disk).find("k3", ["f3"]) is None


def test_a_batch_defining_a_function_already_taken_is_a_miss(disk):
    """Two programs' batches holding one kernel: linking both would define it twice."""
    first = _object("f1", "f2")
    kernel_cache.store_batch(disk, first, [("k1", ["f1"], []), ("k2", ["f2"], [])])
    kernel_cache.store_batch(disk, _object("f2", "f3"), [("k2", ["f2"], []), ("k3", ["f3"], [])])
    disk.put("k1", b"", {"batch": kernel_cache.batch_key(["k1", "k2"])})  # k2, k3: the 2nd
    found = kernel_cache.Lookup(disk)
    assert found.find("k1", ["f1"]) == []
    assert found.find("k3", ["f3"]) is None  # its batch defines f2 again
    assert found.find("k2", ["f2"]) == []  # from the first batch
    assert found.objects == [first]


def test_kernel_entries_skip_the_fsync_that_program_entries_keep(disk, monkeypatch):
    """One fsync per unit made a cold compile wait 4-6 ms an entry; a kernel entry cut
    short by a crash is a miss (its MAC) all the same."""
    import graphc.runtime.cache as cache_module
    synced: list[int] = []
    monkeypatch.setattr(cache_module.os, "fsync", synced.append)
    obj = _object("f1", "f2")
    kernel_cache.store_batch(disk, obj, [("k1", ["f1"], []), ("k2", ["f2"], [])])
    kernel_cache.store_unit(disk, "k3", _object("f3"), [], ["f3"])
    assert synced == []
    assert kernel_cache.Lookup(disk).find("k2", ["f2"]) == []  # written all the same
    disk.put("program", b"code", {})
    assert len(synced) == 1


# -- end to end: a program whose one-kernel units are batched ---------------------------

def _step(folder: Path):
    rng = np.random.default_rng(4)
    x = gc.placeholder((16, 12), name="x")
    w1 = gc.parameter(rng.normal(0, 0.3, (12, 8)).astype(np.float32), name="w1")
    w2 = gc.parameter(rng.normal(0, 0.3, (8, 5)).astype(np.float32), name="w2")
    h = gc.tanh(x @ w1)
    loss = gc.sum(gc.exp(h @ w2) * 0.5)
    outs = [loss, *gc.grad(loss, [w1, w2])]
    f = gc.function([x], outs, backend="llvm", backend_options={"cache_dir": str(folder)})
    xv = np.linspace(-1, 1, 16 * 12).reshape(16, 12).astype(np.float32)
    reference = gc.function([x], outs, backend="numpy")(xv)
    got = f(xv)
    for a, b in zip(got, reference):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    return f


def _kinds(folder: Path) -> dict[str, list[Path]]:
    disk = CompileCache(folder)
    out: dict[str, list[Path]] = {"program": [], "unit": [], "batch": [], "names": []}
    for path in sorted(folder.glob("*.gco")):
        meta = (disk.get(path.stem) or (b"", {}))[1]
        kind = "program" if "object_lengths" in meta else "unit" if "functions" in meta \
            else "batch" if "units" in meta else "names" if "batch" in meta else "?"
        out.setdefault(kind, []).append(path)
    return out


def test_a_batched_program_loads_every_unit_and_a_damaged_batch_is_rebuilt(
        monkeypatch, tmp_path):
    monkeypatch.setattr(codegen, "BATCH_MIN_UNITS", 2)
    monkeypatch.setenv("GRAPHC_COMPILE_JOBS", "1")
    cold = _step(tmp_path).compile_times
    entries = _kinds(tmp_path)
    # one batch per pipeline (light units, explicit vector loops, and O3 ones apart)
    assert 1 <= len(entries["batch"]) <= 2 and cold["modules"] < cold["kernels distinct"]
    assert len(entries["names"]) >= 2  # each batched unit's key names the batch
    for path in entries["program"]:  # so that the kernels are looked up
        path.unlink()
    warm = _step(tmp_path).compile_times
    assert warm["kernels compiled"] == 0 and warm["kernels loaded"] == cold["kernels distinct"]
    assert warm["modules"] == 0
    for path in _kinds(tmp_path)["program"]:
        path.unlink()
    batch = entries["batch"][0]
    listed = len(json.loads(batch.read_bytes().split(b"\n")[1])["meta"]["units"])
    batch.write_bytes(batch.read_bytes()[:200])  # cut short
    again = _step(tmp_path).compile_times  # (right results: checked in _step)
    assert again["kernels compiled"] >= listed
    header = json.loads(batch.read_bytes().split(b"\n")[1])
    assert header["length"] > 0 and len(header["meta"]["units"]) == listed
