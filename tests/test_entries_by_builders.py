"""Each compile process writes the cache entries of the modules it built, as soon as it
built them (processes.py): with two processes, both write some, and a program compiled
again without its whole-program entry loads every unit and shared function."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

import graphc as gc
from graphc.backends.llvm import processes
from graphc.runtime.cache import CompileCache


def _step(folder: Path):
    x = gc.placeholder((None, 3, 16, 16), "float64", name="x")
    w1 = gc.placeholder((8, 3, 3, 3), "float64", name="w1")
    w2 = gc.placeholder((10, 8 * 16 * 16), "float64", name="w2")
    h = gc.relu(gc.nn.conv2d(x, w1, padding=1))
    y = gc.reshape(h, (-1, 8 * 16 * 16)) @ gc.transpose(w2)
    loss = gc.sum(gc.tanh(y) * gc.sin(y))
    f = gc.function([x, w1, w2], [loss, *gc.grad(loss, [x, w1, w2])], backend="llvm",
                    backend_options={"cache_dir": str(folder)})
    rng = np.random.default_rng(3)
    args = [rng.normal(size=s).astype(np.float64)
            for s in ((4, 3, 16, 16), (8, 3, 3, 3), (10, 8 * 16 * 16))]
    want = gc.function([x, w1, w2], [loss, *gc.grad(loss, [x, w1, w2])],
                       backend="numpy")(*args)
    for got, ref in zip(f(*args), want):
        np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9)
    return f.compile_times


def test_every_process_writes_what_it_built(monkeypatch, tmp_path):
    monkeypatch.setenv("GRAPHC_COMPILE_JOBS", "2")
    writers = tmp_path / "writers"
    store = processes._store_module

    def noted(*args, **kwargs):
        with open(writers, "a") as out:
            out.write(f"{os.getpid()}\n")
        return store(*args, **kwargs)

    monkeypatch.setattr(processes, "_store_module", noted)
    cache = tmp_path / "cache"
    cold = _step(cache)
    assert cold["parts"] == 2 and cold["library compiled"] > 0
    assert len(set(writers.read_text().split())) == 2  # this process and the other
    disk = CompileCache(cache)
    for path in cache.glob("*.gco"):  # the whole-program entry: so that units are looked up
        if "object_lengths" in (disk.get(path.stem) or (b"", {}))[1]:
            path.unlink()
    warm = _step(cache)
    assert warm["kernels compiled"] == 0 and warm["kernels loaded"] == cold["kernels distinct"]
    assert warm["library compiled"] == 0 and warm["library loaded"] > 0
