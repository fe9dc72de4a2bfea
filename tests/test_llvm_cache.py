"""The LLVM compile cache on disk: hits across processes, corrupt entries rebuilt, the
switch-off, atomic writes under a kill, and concurrent writers."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # child processes compile and load the cache

PROGRAM = """
import json, sys
import numpy as np
import graphc as gc
x = gc.placeholder((16, 8), name="x")
w = gc.parameter(np.linspace(-1, 1, 8 * 4).reshape(8, 4).astype(np.float32), name="w")
y = gc.tanh(x @ w).sum(axis=1)
f = gc.function([x], [y, gc.grad(y.sum(), w)], backend="llvm")
out = f(np.linspace(0, 1, 128).reshape(16, 8).astype(np.float32))
times = f.compile_times
print(json.dumps({"cached": f._exe.last.cached, "y": out[0].tolist(),
                  "g": out[1].ravel().tolist(), "compiled": times.get("kernels compiled"),
                  "loaded": times.get("kernels loaded")}))
"""


def run(cache_dir: Path, extra_env: dict | None = None, code: str = PROGRAM) -> dict:
    env = dict(os.environ, GRAPHC_CACHE_DIR=str(cache_dir), **(extra_env or {}))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def all_entries(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.gco")) if folder.exists() else []


def entries(folder: Path, kind: str = "program") -> list[Path]:
    """The whole-program entries ("program") or the per-kernel ones ("kernels")."""
    from graphc.runtime.cache import CompileCache
    cache = CompileCache(folder)
    field = "object_lengths" if kind == "program" else "functions"
    return [p for p in all_entries(folder) if field in (cache.get(p.stem) or ("", {}))[1]]


def test_a_second_process_loads_the_compiled_code(tmp_path):
    first = run(tmp_path)
    second = run(tmp_path)
    assert first["cached"] is False and second["cached"] is True
    assert first["y"] == second["y"] and first["g"] == second["g"]
    assert len(entries(tmp_path)) == 1
    assert first["compiled"] >= len(entries(tmp_path, "kernels")) > 1
    assert first["loaded"] == 0


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty"])
def test_a_corrupt_entry_is_detected_and_rebuilt(tmp_path, damage):
    reference = run(tmp_path)
    (entry,) = entries(tmp_path)
    data = entry.read_bytes()
    if damage == "truncate":
        entry.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        entry.write_bytes(data[:-100] + bytes([data[-100] ^ 0xFF]) + data[-99:])
    elif damage == "garbage":
        entry.write_bytes(b"not a graphc entry at all\n" * 10)
    else:
        entry.write_bytes(b"")
    again = run(tmp_path)
    assert again["cached"] is False  # rebuilt, not loaded
    assert again["compiled"] == 0 and again["loaded"] > 0  # from the per-kernel entries
    assert again["y"] == reference["y"]
    assert run(tmp_path)["cached"] is True  # and the rebuilt entry is good


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty"])
def test_a_corrupt_kernel_entry_is_rebuilt_not_loaded(tmp_path, damage):
    reference = run(tmp_path)
    units = entries(tmp_path, "kernels")
    for entry in entries(tmp_path):  # the whole program's: so that the kernels are needed
        entry.unlink()
    victim = units[0]
    data = victim.read_bytes()
    if damage == "truncate":
        victim.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        victim.write_bytes(data[:-100] + bytes([data[-100] ^ 0xFF]) + data[-99:])
    elif damage == "garbage":
        victim.write_bytes(b"not a graphc entry at all\n" * 10)
    else:
        victim.write_bytes(b"")
    again = run(tmp_path)
    assert again["cached"] is False
    assert again["compiled"] >= 1 and again["compiled"] + again["loaded"] == \
        reference["compiled"]
    assert again["loaded"] > 0  # the undamaged ones
    assert again["y"] == reference["y"] and again["g"] == reference["g"]
    assert len(entries(tmp_path, "kernels")) == len(units)  # the damaged one written again


def test_the_cache_can_be_switched_off(tmp_path):
    off = run(tmp_path, {"GRAPHC_CACHE": "0"})
    assert off["cached"] is False and entries(tmp_path) == []


def test_an_unwritable_cache_folder_does_not_stop_compilation(tmp_path):
    blocker = tmp_path / "file-not-folder"
    blocker.write_text("x")
    assert run(blocker)["cached"] is False


def test_a_kill_during_a_write_leaves_the_previous_entry_intact(tmp_path):
    """A writer killed between writing its bytes and renaming them into place leaves the
    entry that was there before, byte for byte, and no partial entry."""
    stall = f"""
import os, time
from pathlib import Path
from graphc.runtime.cache import CompileCache
def stall(src, dst):
    print("writing", flush=True)
    time.sleep(60)
os.replace = stall
CompileCache(Path({str(tmp_path)!r})).put("k" * 64, b"new bytes" * 1000, {{}})
"""
    from graphc.runtime.cache import CompileCache
    cache = CompileCache(tmp_path)
    assert cache.put("k" * 64, b"old bytes", {"n": 1})
    before = (tmp_path / ("k" * 64 + ".gco")).read_bytes()
    proc = subprocess.Popen([sys.executable, "-c", stall], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (tmp_path / ("k" * 64 + ".gco")).read_bytes() == before
    assert cache.get("k" * 64) == (b"old bytes", {"n": 1})
    assert [p.name for p in all_entries(tmp_path)] == ["k" * 64 + ".gco"]


def test_concurrent_processes_compiling_the_same_graph(tmp_path):
    env = dict(os.environ, GRAPHC_CACHE_DIR=str(tmp_path))
    procs = [subprocess.Popen([sys.executable, "-c", PROGRAM], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    outs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    assert all(o["y"] == outs[0]["y"] for o in outs)
    assert len(entries(tmp_path)) == 1
    run(tmp_path / "alone")  # the kernel entries one process writes: the same, once each
    assert len(entries(tmp_path, "kernels")) == len(entries(tmp_path / "alone", "kernels"))
    assert run(tmp_path)["cached"] is True


# ---- the warm path: code found by the program's fingerprint, before any optimization ------

WARM_PROGRAM = PROGRAM.replace(
    'print(json.dumps({"cached": f._exe.last.cached,',
    'optimized_before_source = f.program.is_optimized\n'
    'source_ok = "define" in f.source\n'
    'print(json.dumps({"optimized": optimized_before_source, "source": source_ok, '
    '"cached": f._exe.last.cached,')


def test_a_warm_start_runs_neither_optimizer_nor_scheduler(tmp_path):
    cold = run(tmp_path, code=WARM_PROGRAM)
    warm = run(tmp_path, code=WARM_PROGRAM)
    assert cold["cached"] is False and cold["optimized"] is True
    assert warm["cached"] is True and warm["optimized"] is False
    assert warm["source"] is True  # the IR is still there to read, rendered on demand
    assert warm["y"] == cold["y"] and warm["g"] == cold["g"]


def _affine_step(weight: np.ndarray, scale: np.ndarray, folder: Path):
    import graphc as gc
    x = gc.placeholder((4, 3), name="x")
    w = gc.parameter(weight, name="w")
    loss = ((x * scale) @ w).sum()
    return gc.function([x], loss, updates={w: w - 0.5 * gc.grad(loss, w)},
                       backend_options={"cache_dir": str(folder)}), w


def test_parameter_values_share_code_but_constants_do_not(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    scale = np.array([1.0, 2.0, 3.0], np.float32)
    w1, w2 = np.ones((3, 2), np.float32), np.full((3, 2), -2.0, np.float32)
    f1, p1 = _affine_step(w1, scale, tmp_path)
    f2, p2 = _affine_step(w2, scale, tmp_path)  # same program, other parameter values
    f3, p3 = _affine_step(w1, scale * 10, tmp_path)  # another constant
    assert [f._exe.last.cached for f in (f1, f2, f3)] == [False, True, False]
    for f, p, w, s in ((f1, p1, w1, scale), (f2, p2, w2, scale), (f3, p3, w1, scale * 10)):
        xs = x * s
        np.testing.assert_allclose(f(x), (xs @ w).sum(), rtol=1e-6)
        grad = xs.sum(axis=0)[:, None] * np.ones((1, 2), np.float32)
        np.testing.assert_allclose(p.value, w - 0.5 * grad, rtol=1e-6)


def test_object_files_are_checked_before_llvm_reads_them(tmp_path):
    from graphc.backends.llvm import jit
    import graphc as gc
    x = gc.placeholder((8,), name="x")
    gc.function([x], gc.exp(x), backend_options={"cache_dir": str(tmp_path)})
    (entry,) = entries(tmp_path)
    from graphc.runtime.cache import CompileCache
    payload, meta = CompileCache(tmp_path).get(entry.stem)
    obj = payload[:meta["object_lengths"][0]]
    assert jit.valid_object(obj)
    for cut in (10, len(obj) // 2, len(obj) - 1):
        assert not jit.valid_object(obj[:cut])
    assert not jit.valid_object(b"\x7fELF" + obj[4:5] + b"\x02" + obj[6:])  # big-endian


@pytest.mark.parametrize("sizes", ["symbolic", "specialize"])
def test_a_compile_waits_for_no_fsync_and_its_entry_loads(tmp_path, monkeypatch, sizes):
    """No entry a compile writes is fsynced (the program's came before the first call's
    result); a later start in the same folder still loads the program."""
    import graphc as gc
    from graphc.runtime.cache import CompileCache
    fsynced = []
    real_put = CompileCache.put

    def put(self, key, payload, meta, durable=True):
        fsynced.append(durable)
        return real_put(self, key, payload, meta, durable)

    monkeypatch.setattr(CompileCache, "put", put)
    x = gc.placeholder(("N", 5), name="x")
    w = gc.parameter(np.arange(15, dtype=np.float32).reshape(5, 3), name="w")
    out = gc.tanh(x @ w)
    options = {"cache_dir": str(tmp_path), "sizes": sizes}
    xv = np.linspace(-1, 1, 20, dtype=np.float32).reshape(4, 5)
    first = gc.function([x], out, backend_options=options)
    want = first(xv)
    assert first.compile_times["cached"] is False
    assert fsynced and not any(fsynced)  # (the program's entry and the kernels')
    again = gc.function([x], out, backend_options=options)
    np.testing.assert_array_equal(again(xv), want)
    assert again.compile_times["cached"] is True
