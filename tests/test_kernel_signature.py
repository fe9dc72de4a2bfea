"""Kernel signatures (graphc/schedule/signature.py): identical kernels share one compiled
function, and a program built again, or a deeper variant of it, loads the kernels it has in
common with one compiled before from the per-kernel cache."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

import graphc as gc
from graphc.schedule import ir as kir
from graphc.schedule.signature import kernel_buffers, kernel_signature, overlap_classes

F32 = np.dtype(np.float32)


def _schedule(kernels, buffers, offsets=None):
    """A stand-in with what kernel_signature reads: buffers and the memory plan."""
    bufs = {bid: kir.Buffer(bid, np.dtype(dt), shape, role)
            for bid, (dt, shape, role) in buffers.items()}
    return SimpleNamespace(buffers=bufs, kernels=tuple(kernels),
                           plan=SimpleNamespace(offsets=offsets or {}))


def _add(out: int, a: int, b: int, shape=(4, 8), strides=(8, 1), scale=2.0):
    load = lambda bid: kir.Load(kir.Access(bid, strides), F32)  # noqa: E731
    body = kir.Apply("add", (load(a), kir.Apply("mul", (load(b), kir.Const(scale, F32)),
                                                F32)), F32)
    return kir.Elementwise(shape, (kir.Store(kir.Access(out, strides), body),))


BUFFERS = {i: ("float32", (4, 8), "input") for i in range(8)}


def test_kernels_on_other_buffers_have_one_signature():
    s = _schedule([], BUFFERS)
    assert kernel_buffers(_add(2, 0, 1)) == (2, 0, 1)  # the store first, then the loads
    assert kernel_signature(_add(2, 0, 1), s) == kernel_signature(_add(5, 6, 7), s)


@pytest.mark.parametrize("other", [
    _add(5, 6, 6),  # one buffer read twice is not two buffers
    _add(5, 6, 7, shape=(8, 4), strides=(4, 1)),
    _add(5, 6, 7, strides=(1, 4)),
    _add(5, 6, 7, scale=3.0),
    _add(5, 7, 6, scale=float("nan")),
])
def test_a_change_of_structure_changes_the_signature(other):
    s = _schedule([], BUFFERS)
    assert kernel_signature(_add(2, 0, 1), s) != kernel_signature(other, s)


def test_buffer_dtypes_and_shared_memory_are_part_of_the_signature():
    base = kernel_signature(_add(2, 0, 1), _schedule([], BUFFERS))
    f64 = {**BUFFERS, 1: ("float64", (4, 8), "input")}
    assert kernel_signature(_add(2, 0, 1), _schedule([], f64)) != base
    temps = {i: ("float32", (4, 8), "temp") for i in range(3)}
    apart = _schedule([], temps, {0: 0, 1: 128, 2: 256})
    shared = _schedule([], temps, {0: 0, 1: 128, 2: 64})  # 2 overlaps 0 and 1
    assert overlap_classes(_add(2, 0, 1), apart) == (0, 1, 2)
    assert overlap_classes(_add(2, 0, 1), shared) == (0, 0, 0)
    assert kernel_signature(_add(2, 0, 1), apart) != kernel_signature(_add(2, 0, 1), shared)


def test_error_messages_are_not_part_of_the_signature():
    bufs = {0: ("int64", (5,), "input")}
    check = lambda what: kir.IndexCheck((5,), kir.Access(0, (1,)), 3, what)  # noqa: E731
    s = _schedule([], bufs)
    assert kernel_signature(check("take (line 1)"), s) == \
        kernel_signature(check("take (line 9)"), s)
    assert kernel_signature(check("x"), s) != kernel_signature(
        kir.IndexCheck((5,), kir.Access(0, (1,)), 4, "x"), s)


def _mlp(depth: int, width: int = 24, backend: str = "llvm", folder=None):
    rng = np.random.default_rng(0)
    x = gc.placeholder((8, width), name="x")
    ws = [gc.parameter(rng.normal(0, 0.3, (width, width)).astype(np.float32), name=f"w{i}")
          for i in range(depth)]
    h = x
    for w in ws:
        h = gc.relu(h @ w)
    loss = gc.sum(h * h)
    options = {"cache_dir": str(folder)} if backend == "llvm" else None
    return gc.function([x], [loss, *gc.grad(loss, ws)], backend=backend,
                       backend_options=options)


@pytest.mark.slow
def test_identical_layers_share_their_kernels_and_agree_with_numpy(tmp_path):
    x = np.random.default_rng(1).normal(size=(8, 24)).astype(np.float32)
    shallow, deep = _mlp(4, folder=tmp_path / "a"), _mlp(12, folder=tmp_path / "b")
    for f, depth in ((shallow, 4), (deep, 12)):
        for got, want in zip(f(x), _mlp(depth, backend="numpy")(x)):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    a, b = shallow.compile_times, deep.compile_times
    assert b["kernels"] > a["kernels"] > a["kernels distinct"]
    assert b["kernels distinct"] == a["kernels distinct"]  # eight more layers, no new code
    assert b["kernels compiled"] == b["kernels distinct"]  # (a cache of its own)
    functions = deep.source.count("\ndefine ")
    assert functions < b["kernels"]


VARIANT = """
import json, sys
import numpy as np
import graphc as gc
depth, head = int(sys.argv[1]), sys.argv[2]
rng = np.random.default_rng(0)
x = gc.placeholder((8, 24), name="x")
ws = [gc.parameter(rng.normal(0, 0.3, (24, 24)).astype(np.float32)) for _ in range(depth)]
h = x
for w in ws:
    h = gc.relu(h @ w)
if head == "tanh":
    h = gc.tanh(h) * 3.0
loss = gc.sum(h * h)
f = gc.function([x], [loss, *gc.grad(loss, ws)])
out = f(np.linspace(-1, 1, 8 * 24).reshape(8, 24).astype(np.float32))
t = f.compile_times
print(json.dumps({k: t.get(k) for k in ("kernels distinct", "kernels compiled",
                                        "kernels loaded", "cached")}))
"""


def _variant(folder, depth: int, head: str = "") -> dict:
    env = dict(os.environ, GRAPHC_CACHE_DIR=str(folder))
    done = subprocess.run([sys.executable, "-c", VARIANT, str(depth), head], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_deeper_variant_in_a_fresh_process_compiles_only_what_is_new(tmp_path):
    first = _variant(tmp_path, 3)
    assert first["cached"] is False and first["kernels loaded"] == 0
    deeper = _variant(tmp_path, 7)  # the same layers, more of them: nothing new
    assert deeper["cached"] is False
    assert deeper["kernels compiled"] == 0
    assert deeper["kernels loaded"] == deeper["kernels distinct"] == first["kernels distinct"]
    headed = _variant(tmp_path, 9, "tanh")  # a new head: only its kernels are compiled
    assert 0 < headed["kernels compiled"] < headed["kernels distinct"]
    assert headed["kernels loaded"] > 0
    assert _variant(tmp_path, 9, "tanh")["cached"] is True  # an exact repeat: one entry
