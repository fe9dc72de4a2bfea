"""Convolutions over a batch known only at call time, as one symbolic llvm program: columns
read in place (implicit GEMM) with the image count taken at run time, direct convolutions
and the weight gradient's dot products over a run-time image count. Each is checked
against the numpy backend and the program specialised to each batch, at several batches,
threads and dtypes, and by finite differences."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc import sizes
from graphc.schedule import ir

BATCHES = (1, 7, 64, 85)
# (in channels, out channels, image, kernel, stride, padding, dilation, groups)
CASES = {
    "3x3 pad": (3, 8, 13, 3, 1, 1, 1, 1),  # direct forward and input gradient, dot dW
    "stride 2": (4, 8, 11, 3, 2, 1, 1, 1),
    "dilation": (2, 6, 15, 3, 1, 2, 2, 1),
    "groups": (4, 8, 13, 3, 1, 1, 1, 2),
    "5x5 odd": (1, 8, 17, 5, 1, 0, 1, 1),
}


def conv_function(case: tuple, dtype: str, options: dict | None, backend: str = "llvm"):
    """y = conv(x, w), and the gradients of sum(y * g) for w and x."""
    cin, cout, size, k, stride, pad, dil, groups = case
    rng = np.random.default_rng(7)
    x = gc.placeholder((None, cin, size, size), dtype, name="x")
    w = gc.parameter((rng.normal(size=(cout, cin // groups, k, k)) * 0.3).astype(dtype),
                     name="w")
    y = gc.nn.conv2d(x, w, stride=stride, padding=pad, dilation=dil, groups=groups)
    g = gc.placeholder((None,) + tuple(y.shape[1:]), dtype, name="g")
    dw, dx = gc.grad(gc.sum(y * g), [w, x])
    return gc.function([x, g], [y, dw, dx], backend=backend, backend_options=options)


def run(f, case: tuple, dtype: str, batch: int) -> list[np.ndarray]:
    cin, cout, size, k, stride, pad, dil, _ = case
    side = (size + 2 * pad - dil * (k - 1) - 1) // stride + 1
    rng = np.random.default_rng(batch)
    x = rng.normal(size=(batch, cin, size, size)).astype(dtype)
    g = rng.normal(size=(batch, cout, side, side)).astype(dtype)
    return [np.asarray(r) for r in f(x, g)]


def close(a: list[np.ndarray], b: list[np.ndarray], dtype: str) -> None:
    tol = 2e-4 if dtype == "float32" else 1e-10
    for u, v in zip(a, b):
        scale = 1.0 + float(np.max(np.abs(v))) if v.size else 1.0
        np.testing.assert_allclose(u, v, rtol=tol, atol=tol * scale)


# two threads only for float32: the float64 kernels are the same code
@pytest.mark.parametrize("dtype,threads", [("float32", "1"), ("float64", "1"), ("float32", "2")])
@pytest.mark.parametrize("name", list(CASES))
def test_one_program_matches_numpy_and_specialised_modules(name, dtype, threads, monkeypatch):
    monkeypatch.setenv("GRAPHC_NUM_THREADS", threads)
    case = CASES[name]
    sym = conv_function(case, dtype, {"sizes": "symbolic", "cache_dir": None})
    spec = conv_function(case, dtype, {"sizes": "specialize", "cache_dir": None})
    ref = conv_function(case, dtype, None, backend="numpy")
    for batch in BATCHES:
        got = run(sym, case, dtype, batch)
        close(got, run(ref, case, dtype, batch), dtype)
        if batch in (7, 85):  # (a module per batch: two are enough to compare)
            close(got, run(spec, case, dtype, batch), dtype)
    assert sym._exe.not_symbolic is None and sym._exe.compiled == {}


def _gemms(f) -> list[ir.Gemm]:
    return [k for k in f._exe.symbolic._schedule.kernels if isinstance(k, ir.Gemm)]


def test_the_columns_are_read_in_place_with_a_run_time_image_count():
    f = conv_function(CASES["3x3 pad"], "float32", {"sizes": "symbolic", "cache_dir": None})
    run(f, CASES["3x3 pad"], "float32", 5)
    gemms = _gemms(f)
    implicit = [k for k in gemms if k.b_split is not None]
    # forward and input gradient: direct convolutions over the images' rows; the weight
    # gradient: the images are the depth's first sub-axis
    assert sum(k.direct and not sizes.is_static(k.b_split[1][0]) for k in implicit) == 2
    assert any(not sizes.is_static(k.b_split[0][0]) and not k.direct for k in implicit)
    assert all(sizes.is_static(d) for k in implicit for d in k.b_split[0][1:])
    schedule = f._exe.symbolic._schedule
    copied = {b for k in schedule.kernels if isinstance(k, ir.Elementwise)
              and k.fused == ("copy",) for b in k.reads()}
    # (copies of g, of the flipped weights and into the outputs' layouts: no im2col copy
    # of an image the products read)
    assert not copied & {k.b.buffer for k in implicit}


def test_the_weight_gradient_takes_the_dot_product_path():
    from graphc.backends.llvm import gemm
    f = conv_function(CASES["3x3 pad"], "float32", {"sizes": "symbolic", "cache_dir": None})
    run(f, CASES["3x3 pad"], "float32", 5)
    deep = [k for k in _gemms(f) if k.b_split is not None and not k.direct]
    with sizes.representative(f._exe.symbolic.representative):
        assert deep and all(gemm._dot(k) for k in deep)
        assert not any(gemm.RuntimeGemm(k, f._exe.symbolic.representative).packed
                       for k in deep)


def test_gradients_match_finite_differences():
    rng = np.random.default_rng(11)
    x = gc.placeholder((None, 2, 9, 9), "float64", name="x")
    w = gc.parameter(rng.normal(size=(3, 2, 3, 3)), name="w")
    gw = rng.normal(size=(3, 9, 9))
    loss = gc.sum(gc.tanh(gc.nn.conv2d(x, w, padding=1)) * gc.constant(gw))
    dw, dx = gc.grad(loss, [w, x])
    f = gc.function([x], [loss, dw, dx], backend_options={"sizes": "symbolic",
                                                          "cache_dir": None})
    for batch in (3, 65):
        xv = rng.normal(size=(batch, 2, 9, 9))
        _, gwv, gxv = f(xv)
        eps = 1e-6
        base = w.value
        for idx in [(0, 0, 0, 0), (2, 1, 1, 2), (1, 1, 2, 1)]:
            plus, minus = base.copy(), base.copy()
            plus[idx] += eps
            minus[idx] -= eps
            w.value = plus
            lp = float(f(xv)[0])
            w.value = minus
            lm = float(f(xv)[0])
            w.value = base
            assert abs((lp - lm) / (2 * eps) - gwv[idx]) < 1e-5 * (1 + abs(gwv[idx]))
        for idx in [(0, 0, 0, 0), (batch - 1, 1, 4, 8), (batch // 2, 0, 8, 3)]:
            plus, minus = xv.copy(), xv.copy()
            plus[idx] += eps
            minus[idx] -= eps
            numeric = (float(f(plus)[0]) - float(f(minus)[0])) / (2 * eps)
            assert abs(numeric - gxv[idx]) < 1e-5 * (1 + abs(gxv[idx]))
    assert f._exe.not_symbolic is None and f._exe.compiled == {}


def test_a_cnn_step_at_a_new_batch_compiles_and_loads_nothing(monkeypatch):
    from graphc.backends.llvm import jit, processes
    counted = {"compile": 0, "load": 0}
    real_compile, real_load = processes.compile_schedule, jit.load_objects

    def compile_schedule(*a, **k):
        counted["compile"] += 1
        return real_compile(*a, **k)

    def load_objects(*a, **k):
        counted["load"] += 1
        return real_load(*a, **k)
    monkeypatch.setattr(processes, "compile_schedule", compile_schedule)
    monkeypatch.setattr(jit, "load_objects", load_objects)
    rng = np.random.default_rng(2)
    x = gc.placeholder((None, 1, 12, 12), name="x")
    y = gc.placeholder((None,), "int64", name="y")
    w1 = gc.parameter((rng.normal(size=(4, 1, 3, 3)) * 0.3).astype(np.float32))
    w2 = gc.parameter((rng.normal(size=(8, 4, 3, 3)) * 0.3).astype(np.float32))
    w3 = gc.parameter((rng.normal(size=(8, 3)) * 0.3).astype(np.float32))
    w4 = gc.parameter((rng.normal(size=(8, 4, 1, 1)) * 0.3).astype(np.float32))
    h = gc.relu(gc.nn.conv2d(x, w1, padding=1))
    # (W6's projection: a strided 1x1 convolution, a product batched over the images)
    skip = gc.nn.conv2d(h, w4, stride=2)
    h = gc.relu(gc.nn.conv2d(gc.nn.max_pool2d(h, 2), w2, padding=1)) + skip
    loss = gc.nn.cross_entropy(h.mean(axis=(2, 3)) @ w3, y)
    params = [w1, w2, w3, w4]
    grads = gc.grad(loss, params)
    f = gc.function([x, y], loss, updates={p: p - 0.1 * g for p, g in zip(params, grads)},
                    backend_options={"sizes": "auto", "cache_dir": None})
    f(rng.normal(size=(64, 1, 12, 12)).astype(np.float32), rng.integers(0, 3, 64))
    first = dict(counted)
    for batch in (85, 1, 13):
        f(rng.normal(size=(batch, 1, 12, 12)).astype(np.float32), rng.integers(0, 3, batch))
    assert counted == first and first["compile"] >= 1
    assert f._exe.not_symbolic is None and f._exe.compiled == {}


def test_a_symbolic_cnn_step_plans_the_specialised_kernels_and_memory():
    # the passes that drop twin stores and recompute BatchNorm's centered input judge
    # call-time sizes too (twin_stores, recompute, copy_forward): the same kernels, and
    # the same arena but for the symbolic kernels' size vectors
    def step(mode):
        rng = np.random.default_rng(5)
        x = gc.placeholder((None, 2, 12, 12), name="x")
        w1 = gc.parameter((rng.normal(size=(8, 2, 3, 3)) * 0.3).astype(np.float32))
        w2 = gc.parameter((rng.normal(size=(8, 8, 3, 3)) * 0.3).astype(np.float32))
        gamma = gc.parameter(np.ones(8, np.float32))
        h = gc.nn.conv2d(x, w1, padding=1)
        mean = h.mean(axis=(0, 2, 3), keepdims=True)
        var = ((h - mean) ** 2).mean(axis=(0, 2, 3), keepdims=True)
        h = gc.relu((h - mean) / gc.sqrt(var + 1e-5) * gamma.reshape(1, -1, 1, 1))
        loss = gc.sum(gc.square(gc.nn.conv2d(h, w2, padding=1)))
        params = [w1, w2, gamma]
        grads = gc.grad(loss, params)
        return gc.function([x], loss, updates={p: p - 1e-4 * g for p, g in zip(params, grads)},
                           backend_options={"sizes": mode, "cache_dir": None})
    sym, spec = step("symbolic"), step("specialize")
    xv = np.random.default_rng(6).normal(size=(32, 2, 12, 12)).astype(np.float32)
    np.testing.assert_allclose(sym(xv), spec(xv), rtol=1e-4)
    shapes = (xv.shape,)
    sym_kernels = sym._exe.symbolic._schedule.kernels
    spec_kernels = spec._exe.compiled[shapes].schedule.kernels
    assert len(sym_kernels) == len(spec_kernels)
    arena = sym._exe.symbolic.binding(shapes).arena_bytes
    assert spec._exe.compiled[shapes].layout.arena_bytes <= arena <= \
        spec._exe.compiled[shapes].layout.arena_bytes + 8192


def test_a_mean_over_a_call_time_batch_is_written_as_vector_loops():
    # (a BatchNorm divides by a count known at call time: vector_loop splats it)
    from graphc.backends.llvm import vector_loop
    x = gc.placeholder((None, 4, 40), name="x")
    y = x - x.mean(axis=(0, 2), keepdims=True)
    f = gc.function([x], [y], backend_options={"sizes": "symbolic", "cache_dir": None})
    xv = np.random.default_rng(8).normal(size=(9, 4, 40)).astype(np.float32)
    np.testing.assert_allclose(f(xv)[0], xv - xv.mean(axis=(0, 2), keepdims=True),
                               rtol=1e-5, atol=1e-6)
    schedule = f._exe.symbolic._schedule
    counted = [k for k in schedule.kernels if isinstance(k, ir.Elementwise) and any(
        isinstance(e, ir.Const) and not sizes.is_static(e.value)
        for s in k.stores for e in ir.postorder(s.value))]
    with sizes.representative(f._exe.symbolic.representative):
        assert counted and all(vector_loop.vectorizable(k, schedule) for k in counted)
