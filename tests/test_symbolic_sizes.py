"""One compiled llvm program for every size (backend_options={"sizes": "symbolic"}): results
against the numpy backend at batch sizes never compiled for, no compile after the first
call, fallbacks that specialise, the disk cache in a fresh process, unchanged errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import graphc as gc
from graphc import sizes
from graphc.schedule.reindex import reshape_strides, split_map

SYMBOLIC = {"sizes": "symbolic", "cache_dir": None}
BATCHES = (3, 17, 64, 1)


def mlp_step(backend: str, options: dict | None = None):
    rng = np.random.default_rng(0)
    x = gc.placeholder(("N", 12), name="x")
    y = gc.placeholder(("N",), "int64", name="y")
    params = [gc.parameter((rng.normal(size=s) * 0.3).astype(np.float32), name=f"p{i}")
              for i, s in enumerate([(12, 40), (40,), (40, 5), (5,)])]
    h = gc.relu(x @ params[0] + params[1])
    loss = gc.nn.cross_entropy(h @ params[2] + params[3], y)
    grads = gc.grad(loss, params)
    f = gc.function([x, y], [loss] + grads, updates={p: p - 0.1 * g
                                                     for p, g in zip(params, grads)},
                    backend=backend, backend_options=options)
    return f, params


def mlp_data(n: int, seed: int):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 12)).astype(np.float32), rng.integers(0, 5, n)


def agree(a, b, tol=2e-5) -> None:
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, rtol=tol, atol=tol)


def test_an_mlp_step_compiled_at_8_runs_every_batch_without_compiling():
    f, pf = mlp_step("llvm", SYMBOLIC)
    g, pg = mlp_step("numpy")
    agree(f(*mlp_data(8, 0)), g(*mlp_data(8, 0)))
    first = dict(f.compile_times)
    assert first["symbolic"] is True and first["kernels compiled"] > 0
    for n in BATCHES:
        data = mlp_data(n, n)
        agree(f(*data), g(*data))
        agree([p.value for p in pf], [p.value for p in pg])
    after = f.compile_times
    assert f._exe.compiled == {}  # no module for any shape
    assert {k: v for k, v in after.items() if k != "bindings"} == \
        {k: v for k, v in first.items() if k != "bindings"}
    assert after["bindings"] == 1 + len(BATCHES)


def test_the_specialised_path_compiles_per_shape_for_comparison():
    f, _ = mlp_step("llvm", {"sizes": "specialize", "cache_dir": None})
    for n in (8, 3):
        f(*mlp_data(n, n))
    assert set(f._exe.compiled) == {((8, 12), (8,)), ((3, 12), (3,))}
    assert f._exe.symbolic is None


def cnn_step(backend: str, options: dict | None = None):
    """conv (stride 2, padding), max pooling, batch norm over (N, H, W), dense."""
    rng = np.random.default_rng(1)
    x = gc.placeholder((None, 2, 10, 10), name="x")
    y = gc.placeholder((None,), "int64", name="y")
    shapes = [(4, 2, 3, 3), (4,), (4,), (4, 4, 3, 3), (4, 3), (3,)]
    p = [gc.parameter((rng.normal(size=s) * 0.3 + (1.0 if i == 1 else 0.0))
                      .astype(np.float32), name=f"c{i}") for i, s in enumerate(shapes)]
    h = gc.nn.conv2d(x, p[0], stride=1, padding=1)
    mean = h.mean(axis=(0, 2, 3), keepdims=True)
    var = ((h - mean) ** 2).mean(axis=(0, 2, 3), keepdims=True)
    h = (h - mean) / gc.sqrt(var + 1e-5) * p[1].reshape(1, -1, 1, 1) + \
        p[2].reshape(1, -1, 1, 1)
    h = gc.nn.max_pool2d(gc.relu(h), 2)
    h = gc.relu(gc.nn.conv2d(h, p[3], stride=2, padding=1))
    h = gc.nn.avg_pool2d(h, 2).reshape(-1, 4)  # 10 -> 10 -> 5 -> 3 -> 1
    loss = gc.nn.cross_entropy(h @ p[4] + p[5], y)
    grads = gc.grad(loss, p)
    return gc.function([x, y], loss, updates={v: v - 0.05 * g for v, g in zip(p, grads)},
                       backend=backend, backend_options=options), p


def test_a_cnn_step_with_batch_norm_runs_every_batch_as_one_program():
    f, pf = cnn_step("llvm", SYMBOLIC)
    g, pg = cnn_step("numpy")
    rng = np.random.default_rng(2)
    for n in (8,) + BATCHES[:3]:
        data = rng.normal(size=(n, 2, 10, 10)).astype(np.float32), rng.integers(0, 3, n)
        np.testing.assert_allclose(f(*data), g(*data), rtol=1e-4, atol=1e-5)
        agree([p.value for p in pf], [p.value for p in pg], 1e-4)
    assert f._exe.not_symbolic is None and f._exe.compiled == {}
    assert f.compile_times["bindings"] == 4


def test_by_default_a_step_compiled_at_8_compiles_nothing_at_other_batches(monkeypatch):
    monkeypatch.delenv("GRAPHC_SIZES", raising=False)
    f, pf = mlp_step("llvm", {"cache_dir": None})  # no "sizes": the default
    g, pg = mlp_step("numpy")
    agree(f(*mlp_data(8, 0)), g(*mlp_data(8, 0)))
    first = dict(f.compile_times)
    for n in BATCHES:
        data = mlp_data(n, n)
        agree(f(*data), g(*data))
        agree([p.value for p in pf], [p.value for p in pg])
        assert f._exe.compiled == {}  # no module for this size...
    assert f.compile_times["bindings"] == 1 + len(BATCHES)  # ...only its binding
    assert {k: v for k, v in f.compile_times.items() if k != "bindings"} == \
        {k: v for k, v in first.items() if k != "bindings"}


def test_a_call_at_known_shapes_takes_its_kept_binding():
    f, _ = mlp_step("llvm", SYMBOLIC)
    program = None
    for n in (8, 3, 8, 3, 8):
        f(*mlp_data(n, n))
        program = f._exe.symbolic
        assert program.current.shapes == ((n, 12), (n,))
    bindings = dict(program.bindings)
    looked_up, binds = [], []
    real_get, real_bind = f._exe._get, program._bind
    f._exe._get = lambda shapes: looked_up.append(shapes) or real_get(shapes)
    program._bind = lambda shapes: binds.append(shapes) or real_bind(shapes)
    for n in (3, 8, 3):
        f(*mlp_data(n, 0))
    # one look-up of what serves the shapes, as for a specialised module; nothing planned
    assert looked_up == [] and binds == [] and program.bindings == bindings
    f(*mlp_data(5, 0))
    assert looked_up == [((5, 12), (5,))] and binds == looked_up


def test_auto_keeps_a_cnn_with_a_call_time_batch_symbolic():
    # its convolutions' columns are read in place with the image count taken at run time
    # (implicit.only_images): the second batch size compiles and loads nothing
    f, pf = cnn_step("llvm", {"sizes": "auto", "cache_dir": None})
    g, pg = cnn_step("numpy")
    rng = np.random.default_rng(3)
    for n in (8, 3):
        data = rng.normal(size=(n, 2, 10, 10)).astype(np.float32), rng.integers(0, 3, n)
        np.testing.assert_allclose(f(*data), g(*data), rtol=1e-4, atol=1e-5)
        agree([p.value for p in pf], [p.value for p in pg], 1e-4)
    assert f._exe.not_symbolic is None and f._exe.compiled == {}
    kernels = f._exe.symbolic._schedule.kernels
    assert any(getattr(k, "b_split", None) is not None and not sizes.is_static(k.n)
               for k in kernels)


def test_a_cnn_with_a_call_time_batch_is_not_refused_from_the_raw_graph(tmp_path,
                                                                        monkeypatch):
    from graphc.backends.llvm import symbolic_runtime
    options = {"sizes": "auto", "cache_dir": str(tmp_path)}
    data = np.random.default_rng(4).normal(size=(5, 2, 10, 10)).astype(np.float32), \
        np.arange(5) % 3
    calls: dict[str, int] = {"schedule_symbolic": 0, "check_columns": 0}
    for name in calls:
        real = getattr(symbolic_runtime, name)
        monkeypatch.setattr(symbolic_runtime, name,
                            lambda *a, _real=real, _name=name, **k:
                            calls.__setitem__(_name, calls[_name] + 1) or _real(*a, **k))
    cold, _ = cnn_step("llvm", options)
    expected = cold(*data)
    assert calls == {"schedule_symbolic": 1, "check_columns": 1}
    assert cold._exe.not_symbolic is None
    warm, _ = cnn_step("llvm", options)  # from the disk cache: neither runs again
    np.testing.assert_allclose(warm(*data), expected, rtol=1e-6)
    assert calls == {"schedule_symbolic": 1, "check_columns": 1}
    assert warm._exe.not_symbolic is None and warm._exe.symbolic.cached


def test_columns_over_other_call_time_sizes_are_refused_from_the_raw_graph():
    from graphc.ops import make
    from graphc.schedule.symbolic import NotSymbolic, check_columns
    x = gc.placeholder(("N", 2, "H", 6), name="x")
    win = make("windows", x.node, axes=(2, 3), sizes=(3, 3), strides=(1, 1))
    cols = gc.transpose(gc.Tensor(win), (1, 4, 5, 0, 2, 3)).reshape(18, -1)
    w = gc.parameter(np.ones((4, 18), np.float32))
    with pytest.raises(NotSymbolic, match="implicit GEMM"):
        check_columns(_graph([x], [w @ cols]))
    check_columns(_graph([x], [gc.Tensor(win).sum()]))  # (no product reads them)


def _graph(inputs, outputs):
    return gc.Graph(tuple(i.node for i in inputs), tuple(o.node for o in outputs))


def test_pooling_alone_stays_symbolic_under_auto():
    def pool(backend, options=None):
        x = gc.placeholder(("N", 2, 6, 6), name="x")
        return gc.function([x], gc.nn.max_pool2d(x, 2) * 2.0, backend=backend,
                           backend_options=options)
    f, g = pool("llvm", {"sizes": "auto", "cache_dir": None}), pool("numpy")
    for n in (4, 1, 7):
        x = np.random.default_rng(n).normal(size=(n, 2, 6, 6)).astype(np.float32)
        np.testing.assert_allclose(f(x), g(x), rtol=1e-6)
    assert f._exe.not_symbolic is None and f._exe.compiled == {}


def test_a_recurrent_step_falls_back_to_specialising_and_stays_right():
    def step(backend, options=None):
        x = gc.placeholder(("T", "N", 3), name="x")
        y = gc.placeholder(("N",), "int64", name="y")
        rnn = gc.nn.RNN(3, 6, seed=0)
        _, h = rnn(x)
        w = gc.parameter(np.linspace(-1, 1, 12).reshape(6, 2).astype(np.float32), name="w")
        loss = gc.nn.cross_entropy(h @ w, y)
        grads = gc.grad(loss, [w, rnn.weight_hh])
        return gc.function([x, y], [loss] + grads, backend=backend, backend_options=options)
    f, g = step("llvm", SYMBOLIC), step("numpy")
    rng = np.random.default_rng(3)
    for t, n in ((4, 8), (2, 3), (5, 1)):
        data = rng.normal(size=(t, n, 3)).astype(np.float32), rng.integers(0, 2, n)
        agree(f(*data), g(*data), 1e-4)
    assert "scan" in f._exe.not_symbolic
    assert len(f._exe.compiled) == 3


def test_an_empty_batch_gets_a_module_of_its_own():
    f, _ = mlp_step("llvm", SYMBOLIC)
    g, _ = mlp_step("numpy")
    f(*mlp_data(4, 0))
    g(*mlp_data(4, 0))
    agree(f(*mlp_data(0, 1)), g(*mlp_data(0, 1)))
    assert list(f._exe.compiled) == [((0, 12), (0,))]


def test_errors_stay_as_they_are():
    f, _ = mlp_step("llvm", SYMBOLIC)
    x, y = mlp_data(6, 0)
    f(x, y)
    with pytest.raises(ValueError, match="size N: argument 'x' has 6 on axis 0, argument "
                                         "'y' has 5 on axis 0"):
        f(x, y[:5])
    bad = y.copy()
    bad[2] = 7
    with pytest.raises(IndexError, match="index 7"):
        f(x, bad)
    z = gc.placeholder((None,))
    with pytest.raises(ValueError, match="sizes must be .auto. .* not 'bogus'"):
        gc.function([z], z * 2, backend_options={"sizes": "bogus"})


def test_a_gather_along_a_call_time_axis_names_the_bad_index():
    x = gc.placeholder((None, 3), name="x")
    i = gc.placeholder((2,), "int64", name="i")
    f = gc.function([x, i], gc.take(x, i, axis=0), backend_options=SYMBOLIC)
    a = np.arange(15, dtype=np.float32).reshape(5, 3)
    np.testing.assert_array_equal(f(a, np.array([4, -1])), a[[4, -1]])
    np.testing.assert_array_equal(f(a[:2], np.array([1, 0])), a[[1, 0]])
    with pytest.raises(IndexError, match="index 2"):
        f(a[:2], np.array([0, 2]))


@pytest.mark.slow
def test_a_fresh_process_loads_the_program_for_a_new_batch_size(tmp_path):
    code = """
import json, sys
import numpy as np
import graphc as gc
n = int(sys.argv[1])
x = gc.placeholder(("N", 8), name="x")
w = gc.parameter(np.linspace(-1, 1, 8 * 4).reshape(8, 4).astype(np.float32), name="w")
y = gc.tanh(x @ w).sum(axis=1)
f = gc.function([x], [y, gc.grad(y.sum(), w)], backend_options={"sizes": "symbolic"})
out = f(np.linspace(0, 1, 8 * n).reshape(n, 8).astype(np.float32))
t = f.compile_times
print(json.dumps({"cached": t["cached"], "compiled": t.get("kernels compiled"),
                  "symbolic": t.get("symbolic"), "g": out[1].ravel().tolist()}))
"""
    env = dict(os.environ, GRAPHC_CACHE_DIR=str(tmp_path))

    def run(n: int) -> dict:
        done = subprocess.run([sys.executable, "-c", code, str(n)], capture_output=True,
                              text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])
    first, second = run(16), run(5)
    assert first["symbolic"] and second["symbolic"]
    assert first["cached"] is False and first["compiled"] > 0
    assert second["cached"] is True and second["compiled"] is None
    xs = np.linspace(0, 1, 40).reshape(5, 8).astype(np.float32)
    w = np.linspace(-1, 1, 32).reshape(8, 4).astype(np.float32)
    expected = xs.T @ (1 - np.tanh(xs @ w) ** 2)
    np.testing.assert_allclose(np.reshape(second["g"], (8, 4)), expected, rtol=1e-5)


def test_symbolic_reshapes_are_views_where_sizes_divide():
    n = sizes.named("N")
    assert sizes.exact_quotient(576 * n, 24 * n) == 24
    assert sizes.exact_quotient(24 * n, 576 * n) is None
    assert sizes.exact_quotient(n + 1, n) is None
    # (N, 24, 24) read as (N, 576): one contiguous run
    assert reshape_strides((n, 24, 24), (576, 24, 1), (n, 576)) == (576, 1)
    # (N*8, 3) split back into (N, 8, 3)
    assert split_map((8 * n, 3), (n, 8, 3)) is not None
    # a transposed (24, N) cannot be read as (24 * N,) without a copy
    assert reshape_strides((24, n), (1, 24), (24 * n,)) is None


def test_size_expressions_are_computed_at_run_time():
    """Concatenated, sliced (max, floordiv), reshaped and averaged call-time sizes, with
    gradients, against the numpy backend for several bindings of N and M."""
    def build(backend, options=None):
        a = gc.placeholder(("N", 3), name="a")
        b = gc.placeholder(("M", 3), name="b")
        w = gc.parameter(np.linspace(-1, 1, 9).reshape(3, 3).astype(np.float32), name="w")
        both = gc.concatenate([a, b]) @ w                   # (N + M, 3)
        odd = both[1::2]                                     # ((N + M) // 2, 3)
        tail = gc.tanh(both[2:])                            # (max(N + M - 2, 0), 3)
        flat = a.reshape(-1) * 2.0                           # (3N,)
        loss = gc.mean(odd ** 2) + gc.sum(tail) + gc.mean(flat.reshape(-1, 3) * a)
        return gc.function([a, b], [loss, odd, gc.grad(loss, w)], backend=backend,
                           backend_options=options)
    f, g = build("llvm", SYMBOLIC), build("numpy")
    rng = np.random.default_rng(5)
    for n, m in ((4, 3), (1, 1), (7, 2), (2, 9)):
        data = (rng.normal(size=(n, 3)).astype(np.float32),
                rng.normal(size=(m, 3)).astype(np.float32))
        agree(f(*data), g(*data), 1e-5)
    assert f._exe.not_symbolic is None and f._exe.compiled == {}
    assert f.compile_times["bindings"] == 4


def test_a_gemm_whose_depth_is_empty_for_one_binding_gets_a_module_of_its_own():
    def build(backend, options=None):
        a = gc.placeholder(("N", 40), name="a")
        rest = a[2:]                                         # (max(N - 2, 0), 40)
        return gc.function([a], [rest.T @ rest, gc.sum(a)], backend=backend,
                           backend_options=options)
    f, g = build("llvm", SYMBOLIC), build("numpy")
    rng = np.random.default_rng(6)
    for n in (9, 2, 5):
        data = rng.normal(size=(n, 40)).astype(np.float32)
        agree(f(data), g(data), 1e-4)
    assert f._exe.not_symbolic is None
    assert list(f._exe.compiled) == [((2, 40),)]  # the empty depth only
