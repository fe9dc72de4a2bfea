"""The cuda backend without a GPU: every kernel kind and core op has a CUDA lowering, the
emulator's results equal the numpy backend's (every primitive, values and gradients; MLP and
CNN training steps), index errors read from the status word, the emulator's own checks, and
the options. (PTX and ptxas: tests/test_cuda_ptx.py.)"""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.backends.cuda import kernels as cuda_kernels
from graphc.backends.cuda import scalar as cuda_scalar
from graphc.backends.cuda import softmax
from graphc.backends.cuda.backend import gpu_problem
from graphc.backends.cuda.loop import flat_launches
from graphc.backends.cuda.render import render
from graphc.schedule import ir, schedule_graph
from graphc.schedule.core_ops import CORE_OPS

EMU = dict(backend="cuda", backend_options={"emulate": True})


def every_kind_program(backend: dict):
    """One program whose schedule holds every kernel kind (as tests/test_kernel_ir.py's)."""
    w = gc.placeholder((6, 4), "float64", name="w")
    idx = gc.placeholder((5,), "int64", name="idx")
    e = gc.placeholder((5,), "int64", name="e")
    labels = gc.placeholder((5,), "int64", name="labels")
    z = gc.placeholder((3, 2000), "float64", name="z")  # long rows: a warp or block per row
    loss = gc.sum(gc.take(w, idx, axis=0) @ gc.constant(np.ones((4, 2))))
    ce = gc.nn.cross_entropy(gc.take(w, idx, axis=0), labels)
    outs = [loss, gc.grad(loss, w), idx ** e, gc.cumsum(w, axis=0), gc.argsort(w),
            gc.max(w, axis=1), gc.argmax(w, axis=0), gc.sum(gc.exp(w), axis=0), ce,
            gc.cumprod(w[::-1], axis=1), gc.sum(z, axis=1), gc.max(z[:, :100], axis=1),
            gc.argmax(z, axis=1), gc.min(z[:, 1000:], axis=1),
            gc.scan(lambda c, row: (c * 0.5 + row, c), w[0], w, reverse=True)[1]]  # (loop)
    return gc.function([w, idx, e, labels, z], outs, **backend)


ARGS = [np.random.default_rng(0).normal(size=(6, 4)), np.array([0, 5, -1, 2, 2]),
        np.arange(5), np.array([0, 3, 1, 1, 2]), np.random.default_rng(1).normal(size=(3, 2000))]


def assert_same(got, want, rtol):
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * 1e-3)


# ---- the lowering tables (no compiler needed) -----------------------------------------------

def test_every_kind_has_a_cuda_lowering():
    assert set(cuda_kernels.EMITTERS) == set(ir.KINDS), set(cuda_kernels.EMITTERS) ^ set(ir.KINDS)
    f = every_kind_program(dict(backend="numpy"))
    schedule = schedule_graph(f.graph)
    assert {k.kind for k in schedule.kernels} == set(ir.KINDS) - {"all_reduce"}  # (a job's)
    rendered = render(schedule)
    # (a softmax chain is one launch, named after its first kernel: backends/cuda/softmax.py)
    fused = {i for s in softmax.plan(schedule) if isinstance(s, softmax.RowSoftmax)
             for i in s.members}
    assert fused
    assert {L.kernel for L in rendered.launches} | fused == set(range(len(schedule.kernels)))


def test_every_core_op_has_a_cuda_spelling():
    assert set(cuda_scalar.TABLE) == set(CORE_OPS), set(cuda_scalar.TABLE) ^ set(CORE_OPS)
    bogus = ir.Apply("bogus", (ir.Const(1.0, np.dtype("float32")),), np.dtype("float32"))
    with pytest.raises(NotImplementedError, match="bogus"):
        cuda_scalar.spell(bogus, ["x"])


def test_the_source_names_kernels_after_their_ops_and_shows_launches():
    f = every_kind_program(dict(backend="numpy"))
    rendered = render(schedule_graph(f.graph))
    src = rendered.source
    assert "k0_gather_take" in src and "__global__" in src and "__shfl_down_sync" in src
    assert "__syncthreads();" in src and "gc_atomic_add(" in src
    names = {L.name for L in flat_launches(rendered.launches)}  # (loops: their bodies')
    assert any(n.startswith("k") and "_reduce_max" in n for n in names)
    assert all(f"{n}(void* const*" in src for n in names)  # every launch has its kernel
    # grid-stride loops for elementwise kernels, shared memory for GEMM tiles
    assert "n += (long long)gridDim.x * blockDim.x" in src and "__shared__ double As" in src


def test_literals_keep_every_value():
    f32, f64, i64 = np.dtype("float32"), np.dtype("float64"), np.dtype("int64")
    assert cuda_scalar.constant(f32, np.inf) == "__int_as_float(0x7f800000)"
    assert cuda_scalar.constant(f64, -np.inf) == "__longlong_as_double(0xfff0000000000000LL)"
    assert cuda_scalar.constant(f32, 0.1) == "(0.10000000149011612f)"
    assert cuda_scalar.constant(i64, -2 ** 63) == "(-9223372036854775807LL - 1)"


# ---- options and the missing GPU ------------------------------------------------------------

@pytest.mark.slow  # (importing CuPy takes seconds)
def test_without_a_gpu_the_backend_says_how_to_emulate():
    if gpu_problem() is None:
        pytest.skip("a GPU is available here")
    x = gc.placeholder((3,), name="x")
    with pytest.raises(RuntimeError, match=r"no CUDA GPU is available.*'emulate': True"):
        gc.function([x], x * 2, backend="cuda")


@pytest.mark.parametrize("options,message", [
    ({"emulate": 1}, "'emulate' must be True or False"),
    ({"emulate": True, "outputs": "cupy"}, "the emulator returns numpy arrays"),
    ({"emulate": True, "outputs": "torch"}, "'outputs' must be 'cupy' or 'numpy'"),
    ({"emulate": True, "seed": -1}, "'seed' must be an int"),
    ({"emulate": True, "colour": 1}, r"unknown options for cuda: \['colour'\]"),
])
def test_bad_options_are_named(options, message):
    x = gc.placeholder((3,), name="x")
    with pytest.raises(ValueError, match=message):
        gc.function([x], x * 2, backend="cuda", backend_options=options)


# ---- the emulator against the numpy backend ---------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 12345])
def test_every_kind_matches_numpy_in_any_block_and_thread_order(seed):
    f = every_kind_program(dict(backend="cuda", backend_options={"emulate": True,
                                                                 "seed": seed}))
    want = every_kind_program(dict(backend="numpy"))(*ARGS)
    got = f(*ARGS)
    assert_same(got, want, 1e-12)
    assert_same(f(*ARGS), got, 0)  # a second call reuses the buffers


@pytest.mark.slow
def test_index_and_value_errors_come_from_the_status_word():
    f = every_kind_program(EMU)
    llvm = every_kind_program(dict(backend="llvm"))
    for args in ([ARGS[0], np.array([0, 6, 1, 1, 1]), *ARGS[2:]],
                 [*ARGS[:3], np.array([0, 3, 9, 1, 2]), ARGS[4]]):
        with pytest.raises(IndexError) as want:
            llvm(*args)
        with pytest.raises(IndexError) as got:
            f(*args)
        assert str(got.value) == str(want.value)
    with pytest.raises(ValueError, match="negative integer powers"):
        f(ARGS[0], ARGS[1], np.array([0, -1, 1, 1, 1]), *ARGS[3:])
    assert_same(f(*ARGS), llvm(*ARGS), 1e-12)  # and it runs on afterwards


@pytest.mark.slow
def test_a_failed_check_leaves_parameters_alone():
    p = gc.parameter(np.ones(3), name="p")
    idx = gc.placeholder((2,), "int64", name="idx")
    loss = gc.sum(gc.take(p, idx) ** 2)
    f = gc.function([idx], loss, updates={p: p - 0.5 * gc.grad(loss, p)}, **EMU)
    with pytest.raises(IndexError, match="index 3 is out of bounds for size 3"):
        f(np.array([0, 3]))
    np.testing.assert_array_equal(p.value, np.ones(3))
    assert f(np.array([0, 0])) == 2.0
    np.testing.assert_array_equal(p.value, [-1.0, 1.0, 1.0])


def _mlp(backend: dict, dtype: str):
    rng = np.random.default_rng(1)
    x = gc.placeholder((None, 20), dtype, name="x")
    labels = gc.placeholder((None,), "int64", name="labels")
    params = [gc.parameter(rng.normal(0, 0.3, s).astype(dtype), name=f"p{i}")
              for i, s in enumerate([(20, 40), (40,), (40, 10), (10,)])]
    h = gc.tanh(x @ params[0] + params[1])
    loss = gc.nn.cross_entropy(h @ params[2] + params[3], labels)
    grads = gc.grad(loss, params)
    f = gc.function([x, labels], loss, updates={p: p - 0.1 * g for p, g in
                                                zip(params, grads)}, **backend)
    return f, params


def _cnn(backend: dict, dtype: str):
    rng = np.random.default_rng(2)
    x = gc.placeholder((None, 1, 12, 12), dtype, name="x")
    labels = gc.placeholder((None,), "int64", name="labels")
    shapes = [(4, 1, 3, 3), (4,), (6, 4, 3, 3), (6,), (24, 10), (10,)]
    p = [gc.parameter(rng.normal(0, 0.3, s).astype(dtype), name=f"p{i}")
         for i, s in enumerate(shapes)]
    h = gc.relu(gc.nn.conv2d(x, p[0], padding=1) + p[1].reshape(1, 4, 1, 1))
    h = gc.nn.max_pool2d(h, 2)
    h = gc.relu(gc.nn.conv2d(h, p[2]) + p[3].reshape(1, 6, 1, 1))
    h = gc.nn.avg_pool2d(h, 2).reshape(-1, 24)
    loss = gc.nn.cross_entropy(h @ p[4] + p[5], labels)
    grads = gc.grad(loss, p)
    f = gc.function([x, labels], loss, updates={v: v - 0.1 * g for v, g in zip(p, grads)},
                    **backend)
    return f, p


@pytest.mark.slow
@pytest.mark.parametrize("model,shape", [(_mlp, (16, 20)), (_cnn, (5, 1, 12, 12))],
                         ids=["mlp", "cnn"])
@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-10), ("float32", 1e-5)])
def test_training_steps_match_numpy(model, shape, dtype, rtol):
    """Losses and parameters after several SGD steps, emulated CUDA against numpy."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=shape).astype(dtype)
    y = rng.integers(0, 10, shape[0])
    fe, pe = model(EMU, dtype)
    fn, pn = model(dict(backend="numpy"), dtype)
    for _ in range(3):
        np.testing.assert_allclose(fe(x, y), fn(x, y), rtol=rtol)
    for a, b in zip(pe, pn):
        np.testing.assert_allclose(a.value, b.value, rtol=rtol, atol=rtol)


@pytest.mark.slow
@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-10), ("float32", 1e-5)])
def test_every_primitive_and_its_gradient_match_numpy(dtype, rtol):
    from cuda_programs import every_primitive
    f, args = every_primitive(dtype, EMU)
    want, _ = every_primitive(dtype, dict(backend="numpy"))
    got, ref = f(*args), want(*args)
    assert len(got) == len(ref) > 200
    for i, (g, w) in enumerate(zip(got, ref)):
        assert g.dtype == w.dtype and g.shape == w.shape, i
        scale = float(np.max(np.abs(w), initial=1.0))
        np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * scale, err_msg=f"output {i}")


@pytest.mark.slow
def test_fuzzer_graphs_match_the_reference():
    """The differential fuzzer's random graphs (every primitive and dtype) on the emulator,
    against the numpy reference interpreter."""
    from hypothesis import HealthCheck, given, settings, strategies as st

    import fuzz_graphs as fz
    fz.BACKENDS.setdefault("cuda-emulated", EMU)  # (not in its default list: a compile each)

    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck),
              derandomize=True, database=None)
    @given(st.data())
    def check(data):
        fz.check_backends(data, backends=("cuda-emulated",))

    check()


@pytest.mark.slow
def test_compiled_programs_come_from_the_disk_cache(tmp_path):
    options = {"emulate": True, "cache_dir": str(tmp_path)}
    x = gc.placeholder((4, 3), "float64", name="x")
    y = gc.sum(gc.exp(x) * 2.0, axis=1)
    first = gc.function([x], y, backend="cuda", backend_options=options)
    again = gc.function([x], y, backend="cuda", backend_options=options)
    assert not first._exe.last.cached and again._exe.last.cached
    assert again.source == first.source  # rendered again on demand
    v = np.arange(12.0).reshape(4, 3) / 10
    np.testing.assert_allclose(again(v), np.sum(np.exp(v) * 2, axis=1), rtol=1e-12)


@pytest.mark.gpu
@pytest.mark.slow
def test_on_a_gpu_results_equal_numpy_and_parameters_stay_in_step():
    why = gpu_problem()
    if why is not None:
        pytest.skip(f"no GPU: {why}")
    import cupy
    fg, pg = _mlp(dict(backend="cuda"), "float32")
    fo, po = _mlp(dict(backend="cuda", backend_options={"outputs": "numpy"}), "float32")
    fn, pn = _mlp(dict(backend="numpy"), "float32")
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(16, 20)).astype("float32"), rng.integers(0, 10, 16)
    for _ in range(3):
        want = fn(x, y)
        got = fg(cupy.asarray(x), y)
        assert isinstance(got, cupy.ndarray)
        np.testing.assert_allclose(cupy.asnumpy(got), want, rtol=1e-5)
        np.testing.assert_allclose(fo(x, y), want, rtol=1e-5)
    for a, b in zip(pg, pn):
        np.testing.assert_allclose(a.value, b.value, rtol=1e-5, atol=1e-6)
    with pytest.raises(IndexError, match="out of range"):
        fg(x, np.full(16, 12))


@pytest.mark.slow
def test_emulated_functions_run_from_several_threads():
    from concurrent.futures import ThreadPoolExecutor
    x = gc.placeholder((3, 2000), "float64", name="x")
    fs = [gc.function([x], gc.sum(x * k, axis=1), **EMU) for k in (1.0, 2.0)]
    v = np.random.default_rng(5).normal(size=(3, 2000))
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: fs[i % 2](v), range(8)))
    for i, r in enumerate(results):
        np.testing.assert_allclose(r, v.sum(axis=1) * (1 + i % 2), rtol=1e-12)


@pytest.mark.slow
def test_gemm_tiles_past_the_grid_limit_loop(monkeypatch, tmp_path):
    from graphc.backends.cuda import gemm
    monkeypatch.setattr(gemm, "MAX_Z", 2)  # (the real limit, 65535, takes huge matrices)
    a = gc.placeholder((3, 130, 40), "float64", name="a")
    b = gc.placeholder((40, 5), "float64", name="b")
    f = gc.function([a, b], a @ b, backend="cuda",
                    backend_options={"emulate": True, "cache_dir": str(tmp_path)})
    assert "t += gridDim.z" in f.source
    av, bv = np.random.default_rng(6).normal(size=(3, 130, 40)), np.ones((40, 5))
    np.testing.assert_allclose(f(av, bv), av @ bv, rtol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("narrow", [True, False], ids=["int32-offsets", "int64-offsets"])
def test_gemm_large_tiles_any_size_and_layout(monkeypatch, tmp_path, narrow):
    """The 128x128 tiling (made to apply to small sizes here), with sizes no tile divides,
    transposed operands (loads along the other axis); with 64-bit offsets (made to apply),
    the 64x64 tiling (the large one would spill its registers)."""
    from graphc.backends.cuda import gemm
    monkeypatch.setattr(gemm, "FILL", 1)
    if not narrow:
        monkeypatch.setattr(gemm, "INT_LIMIT", 0)
    a = gc.placeholder((37, 130), "float32", name="a")
    b = gc.placeholder((140, 37), "float32", name="b")
    f = gc.function([a, b], [a.T @ b.T, gc.relu(a.T) @ a], backend="cuda",
                    backend_options={"emulate": True, "cache_dir": str(tmp_path), "seed": 2})
    large = f"As[2][{gemm.LARGE.bk}][{gemm.LARGE.bm + gemm.PAD}]"
    assert (large in f.source) == narrow
    assert ("long long k0" in f.source) != narrow
    assert ("const long long off_a" in f.source) != narrow
    rng = np.random.default_rng(7)
    av, bv = rng.normal(size=(37, 130)).astype("float32"), rng.normal(size=(140, 37)).astype(
        "float32")
    got = f(av, bv)
    for g, w in zip(got, [av.T @ bv.T, np.maximum(av.T, 0) @ av]):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * np.abs(w).max())


@pytest.mark.slow
def test_resnet_training_steps_match_numpy():
    """W6, the small ResNet of benchmarks/bench_resnet.py (convolutions through the GEMM,
    batch norm, global average pooling): losses and parameters after three SGD steps,
    emulated CUDA against numpy, in float32."""
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
    import bench_resnet as br
    import cuda_report  # noqa: F401  (registers backend="cuda-emulated")
    params = br.resnet_params()
    x, y = br.resnet_data(4)
    fe = br.graphc_resnet_step(params, backend="cuda-emulated")
    fn = br.graphc_resnet_step(params, backend="numpy")
    for _ in range(3):
        np.testing.assert_allclose(fe(x, y), fn(x, y), rtol=1e-5)
    assert len(fe._storages) == len(params)
    for a, b in zip(fe._storages, fn._storages):
        scale = float(np.abs(b.array).max())
        np.testing.assert_allclose(a.array, b.array, rtol=1e-5, atol=1e-5 * scale)


def test_one_hot_runs_on_the_emulator():
    """one_hot lowers to the labels compared with the last axis's index (no CUDA code of its
    own): out-of-range labels give zero rows; label and target dtypes as numpy's."""
    for label_dtype in ("int64", "int32"):
        labels = gc.placeholder((6,), label_dtype, name="labels")
        x = gc.placeholder((6, 4), "float32", name="x")
        outs = [gc.one_hot(labels, 4), gc.one_hot(labels, 3, dtype="float64") * 2.0,
                gc.one_hot(labels, 4, dtype="int64") + 1, x * gc.one_hot(labels, 4)]
        args = [np.array([0, 3, -1, 2, 4, 1], label_dtype), np.ones((6, 4), np.float32)]
        got = gc.function([labels, x], outs, **EMU)(*args)
        want = gc.function([labels, x], outs, backend="numpy")(*args)
        assert_same(got, want, 0)
