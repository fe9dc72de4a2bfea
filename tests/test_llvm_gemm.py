"""The llvm backend's own GEMM (backends/llvm/gemm.py) against numpy: the packed, blocked,
register-tiled path on every layout (transposed, sliced, broadcast batch dims), row/column/
depth edges of every size, one thread and two, float32/float64, the integer loop path, and
the fallbacks (no libgomp, a fork()ed child). No timings are asserted here."""
from __future__ import annotations

import ctypes
import itertools
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import graphc as gc
from graphc.backends.llvm import gemm, gemm_dot

pytestmark = pytest.mark.slow  # many GEMM shapes, layouts and thread counts

TOL = {"float32": 1e-4, "float64": 1e-12}


@pytest.fixture
def packed(monkeypatch):
    """Every float GEMM takes the packed path, and threads whenever there are two."""
    monkeypatch.setattr(gemm, "PACKED_MIN_MACS", 0)
    monkeypatch.setattr(gemm, "PARALLEL_MIN_MACS", 0)


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request, monkeypatch):
    monkeypatch.setenv("GRAPHC_NUM_THREADS", str(request.param))
    return request.param


def _data(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    return rng.integers(-50, 50, shape).astype(dtype)


def _swap(x):
    return np.swapaxes(x, -1, -2)


def _check(result, expected, dtype):
    assert result.shape == expected.shape and result.dtype == np.dtype(dtype)
    if np.dtype(dtype).kind != "f":
        np.testing.assert_array_equal(result, expected)
        return
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    err = float(np.abs(result.astype(np.float64) - expected).max(initial=0.0)) / scale
    assert err < TOL[dtype], f"relative error {err:.3g}"


def _matmul(m, n, k, dtype, ta=False, tb=False, batch=(), b_batch=None, seed=0):
    """Compiles and runs (A or A^T) @ (B or B^T); returns (result, float64 reference)."""
    b_batch = batch if b_batch is None else b_batch
    a_shape = batch + ((k, m) if ta else (m, k))
    b_shape = b_batch + ((n, k) if tb else (k, n))
    pa, pb = gc.placeholder(a_shape, dtype), gc.placeholder(b_shape, dtype)
    ea = gc.transpose(pa, tuple(range(len(batch))) + (len(batch) + 1, len(batch))) if ta \
        else pa
    eb = gc.transpose(pb, tuple(range(len(b_batch))) + (len(b_batch) + 1, len(b_batch))) \
        if tb else pb
    f = gc.function([pa, pb], ea @ eb, backend="llvm")
    x, y = _data(a_shape, dtype, seed), _data(b_shape, dtype, seed + 1)
    xe, ye = (_swap(x) if ta else x), (_swap(y) if tb else y)
    wide = np.float64 if np.dtype(dtype).kind == "f" else np.int64
    expected = np.matmul(xe.astype(wide), ye.astype(wide))
    return f(x, y), expected, f


# Edges in every dimension: 1, primes, one past a register tile (8 rows x 32 columns for
# float32, 8 x 16 for float64), one past a vector, depth past a k-slice (256).
SHAPES = [(1, 1, 1), (7, 13, 5), (8, 32, 1), (9, 33, 2), (17, 47, 300), (65, 129, 33),
          (5, 300, 40), (300, 5, 40), (1, 100, 7), (100, 1, 7), (31, 17, 513)]
LAYOUTS = list(itertools.product([False, True], repeat=2))


@pytest.mark.parametrize("shape", SHAPES, ids=["x".join(map(str, s)) for s in SHAPES])
def test_float32_packed_every_layout(shape, packed, threads):
    for ta, tb in LAYOUTS:
        result, expected, _ = _matmul(*shape, "float32", ta, tb, seed=sum(shape))
        _check(result, expected, "float32")


@pytest.mark.parametrize("order", ["rows", "cols"])
def test_many_small_blocks(order, packed, threads, monkeypatch):
    """Blocks much smaller than the problem: several row, column and depth blocks, each
    with its edges, in both orders of the micro-panel loops."""
    for dtype in ("float32", "float64"):
        small = gemm.replace(gemm.PARAMS[dtype], kc=32, mc=24, nc=64, order=order)
        monkeypatch.setitem(gemm.PARAMS, dtype, small)
    cases = [("float32", (65, 129, 33), ta, tb) for ta, tb in LAYOUTS]
    cases += [("float32", (100, 70, 90), False, False), ("float64", (65, 129, 33), True, True)]
    for dtype, shape, ta, tb in cases:
        result, expected, _ = _matmul(*shape, dtype, ta, tb, seed=4)
        _check(result, expected, dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_few_rows_read_b_in_place(dtype, packed, threads, monkeypatch):
    """GEMMs of at most DIRECT_B_MAX_M rows read B unpacked: several depth and column
    blocks, partial last vectors, and B a column slice (its rows longer than n)."""
    small = gemm.replace(gemm.PARAMS[dtype], kc=32, nc=64)
    monkeypatch.setitem(gemm.PARAMS, dtype, small)
    for m in (1, 3, 8, gemm.DIRECT_B_MAX_M):
        for n, k in ((45, 70), (130, 33), (16, 5)):
            pa = gc.placeholder((m, k), dtype)
            pb = gc.placeholder((k, n + 7), dtype)
            f = gc.function([pa, pb], pa @ pb[:, 3:n + 3], backend="llvm")
            x, y = _data((m, k), dtype, m + n), _data((k, n + 7), dtype, k)
            expected = x.astype(np.float64) @ y[:, 3:n + 3].astype(np.float64)
            _check(f(x, y), expected, dtype)
            assert "_bdirect" in f.source


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_few_rows_read_a_in_place(dtype, packed, threads, monkeypatch):
    """GEMMs of at most DIRECT_A_MAX_M rows, a multiple of MR, read a row-major A unpacked:
    several depth, row and column blocks, A a column slice (its rows longer than k), and A
    ending where a page that may not be read starts (no row past A's end is touched)."""
    small = gemm.replace(gemm.PARAMS[dtype], kc=32, mc=16, nc=64)
    monkeypatch.setitem(gemm.PARAMS, dtype, small)
    monkeypatch.setenv("GRAPHC_ADAPTIVE_THREADS", "0")  # (two threads: always the team)
    keep: list = []
    for m in (8, 24, gemm.DIRECT_A_MAX_M):
        for n, k in ((45, 70), (130, 33), (16, 5)):
            wide, pb = gc.placeholder((m, k + 5), dtype), gc.placeholder((k, n), dtype)
            f = gc.function([wide, pb], wide[:, 2:k + 2] @ pb, backend="llvm")
            x, y = _data((m, k + 5), dtype, m + n), _data((k, n), dtype, k)
            expected = x[:, 2:k + 2].astype(np.float64) @ y.astype(np.float64)
            _check(f(x, y), expected, dtype)
            assert _reads_a_in_place(f.source)
            pa = gc.placeholder((m, k), dtype)
            g = gc.function([pa, pb], pa @ pb, backend="llvm")
            at_end = _guarded((m, k), dtype, True, keep)
            at_end[...] = x[:, :k]
            _check(g(at_end, y), x[:, :k].astype(np.float64) @ y.astype(np.float64), dtype)


def _reads_a_in_place(source: str) -> bool:
    """Whether a packed GEMM's descriptor in `source` has a_direct set (found by its place
    in gemm_kernels.FIELDS)."""
    from graphc.backends.llvm.gemm_kernels import FIELDS
    at = FIELDS.index("a_direct")
    descriptors = re.findall(r'_desc" = internal constant \[\d+ x i64\] \[(.*)\]', source)
    return any(d.split(",")[at].strip() == "i64 1" for d in descriptors)


@pytest.mark.parametrize("shape", [(7, 13, 5), (9, 17, 3), (65, 129, 33), (40, 23, 300)],
                         ids=lambda s: "x".join(map(str, s)))
def test_float64_packed_every_layout(shape, packed, threads):
    for ta, tb in LAYOUTS:
        result, expected, f = _matmul(*shape, "float64", ta, tb, seed=sum(shape))
        _check(result, expected, "float64")
    assert "llvm.fma.v8f64" in f.source


@pytest.mark.parametrize("dtype", ["int32", "int64"])
@pytest.mark.parametrize("shape", [(1, 1, 1), (7, 13, 5), (33, 40, 20)],
                         ids=lambda s: "x".join(map(str, s)))
def test_integers_exact(dtype, shape, packed):
    for ta, tb in LAYOUTS:
        result, expected, _ = _matmul(*shape, dtype, ta, tb, seed=3)
        _check(result, expected, dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "int64"])
def test_empty_depth_gives_zeros(dtype, packed):
    for m, n in ((3, 4), (40, 70)):
        result, expected, _ = _matmul(m, n, 0, dtype)
        _check(result, expected, dtype)
        assert not result.any()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_batched_with_broadcast_batch_dims(dtype, packed, threads):
    cases = [dict(batch=(4,), b_batch=()),          # (4, 64, 32) @ (32, 16)
             dict(batch=(3,), b_batch=(3,)),
             dict(batch=(2, 3), b_batch=(3,)),
             dict(batch=(3,), b_batch=(2, 1, 3)[1:])]  # (3, ...) @ (1, 3, ...)
    for case, (ta, tb) in itertools.product(cases, LAYOUTS):
        result, expected, _ = _matmul(64, 16, 32, dtype, ta, tb, **case)
        _check(result, expected, dtype)
    # the A operand broadcast instead
    pa, pb = gc.placeholder((37, 21), dtype), gc.placeholder((5, 21, 19), dtype)
    f = gc.function([pa, pb], pa @ pb, backend="llvm")
    x, y = _data((37, 21), dtype, 1), _data((5, 21, 19), dtype, 2)
    _check(f(x, y), np.matmul(x.astype(np.float64), y.astype(np.float64)), dtype)


def test_odd_batch_count_splits_rows_and_columns(packed, threads):
    # 3 items on 2 threads: each item split in two (by rows when it has more row panels,
    # by columns when it has more column panels).
    for m, n in ((70, 20), (6, 200)):
        result, expected, _ = _matmul(m, n, 30, "float32", batch=(3,))
        _check(result, expected, "float32")


def test_sliced_and_reversed_operands(packed, threads):
    for dtype in ("float32", "float64"):
        pa, pb = gc.placeholder((40, 50), dtype), gc.placeholder((30, 70), dtype)
        exprs = [pa[1:38, ::2] @ pb[3:28, 5:66],       # offsets, row stride > width
                 pa[::-1, 3:28] @ pb[2:27, ::-3],         # negative strides
                 pa[::3, :30].T[:, ::2].T @ pb[:, :9],    # neither stride 1
                 pb[:, ::-1][:25, :].T @ pa[:25, ::-1]]
        f = gc.function([pa, pb], exprs, backend="llvm")
        x, y = _data((40, 50), dtype, 5), _data((30, 70), dtype, 6)
        xd, yd = x.astype(np.float64), y.astype(np.float64)
        refs = [xd[1:38, ::2] @ yd[3:28, 5:66], xd[::-1, 3:28] @ yd[2:27, ::-3],
                xd[::3, :30].T[:, ::2].T @ yd[:, :9], yd[:, ::-1][:25, :].T @ xd[:25, ::-1]]
        for result, expected in zip(f(x, y), refs):
            _check(result, expected, dtype)


def test_default_thresholds_large_k(threads):
    # the packed path as chosen by default, a deep sum (several k slices), float32 tolerance
    result, expected, f = _matmul(96, 80, 2000, "float32", tb=True, seed=9)
    _check(result, expected, "float32")
    assert "llvm.fma.v16f32" in f.source
    assert ("GOMP_parallel" in f.source) == (threads > 1 and gemm.openmp_available())


def test_small_product_stays_a_loop():
    result, expected, f = _matmul(8, 5, 4, "float32")
    _check(result, expected, "float32")
    assert "llvm.fma.v16f32" not in f.source


def test_thread_count_setting(monkeypatch):
    monkeypatch.setenv("GRAPHC_NUM_THREADS", "3")
    assert gemm.num_threads() == 3
    monkeypatch.setenv("GRAPHC_NUM_THREADS", "x")
    with pytest.raises(ValueError, match="GRAPHC_NUM_THREADS"):
        gemm.num_threads()
    monkeypatch.delenv("GRAPHC_NUM_THREADS")
    assert gemm.num_threads() >= 1


def test_thread_count_is_part_of_the_cache_key(monkeypatch, tmp_path):
    pa = gc.placeholder((64, 64))
    keys, cached = set(), []
    for t in ("1", "2", "1"):
        monkeypatch.setenv("GRAPHC_NUM_THREADS", t)
        f = gc.function([pa], pa @ pa, backend_options={"cache_dir": str(tmp_path)})
        keys.add(f._exe.last.key)
        cached.append(f._exe.last.cached)
    assert len(keys) == 2
    assert cached == [False, False, True]  # the third finds the first's code


# ---- outputs that are not row-major (not made by the scheduler today: built by hand) ------

def _run_schedule(kernel, buffers, inputs, outputs, arrays):
    from graphc.backends.llvm import codegen, jit
    from graphc.schedule.ir import Buffer
    from graphc.schedule.lower import Schedule
    bufs = {i: Buffer(i, np.dtype(kernel.dtype), shape, role) for i, (shape, role) in
            enumerate(buffers)}
    sched = Schedule(bufs, [kernel], inputs, outputs, {}, {})
    texts, slots, _ = codegen.render(sched)
    address, engine, _ = jit.compile_parts(texts, codegen.ENTRY)
    table = (ctypes.c_void_p * slots.count)()
    for bid, arr in arrays.items():
        table[slots.slot[bid]] = arr.ctypes.data
    entry = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p)(address)
    assert entry(ctypes.addressof(table)) == 0
    del engine


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_column_major_and_padded_outputs(dtype, packed, threads):
    from graphc.schedule.ir import Access, Gemm
    m, n, k = 37, 45, 29
    x, y = _data((m, k), dtype, 1), _data((k, n), dtype, 2)
    expected = x.astype(np.float64) @ y.astype(np.float64)
    # out[i, j] at j * m + i (a column-major result)
    out = np.full((n, m), np.nan, dtype)
    g = Gemm((), m, n, k, Access(0, (k, 1)), Access(1, (n, 1)), Access(2, (1, m)), dtype)
    _run_schedule(g, [((m, k), "input"), ((k, n), "input"), ((n, m), "output")], [0, 1],
                  [2], {0: x, 1: y, 2: out})
    _check(out.T, expected, dtype)
    # out[i, j] at 3 + i * (2n + 5) + 2 * j: neither stride 1, with gaps left untouched
    ld = 2 * n + 5
    out = np.full(3 + m * ld, -7.0, dtype)
    g = Gemm((), m, n, k, Access(0, (k, 1)), Access(1, (n, 1)), Access(2, (ld, 2), 3), dtype)
    _run_schedule(g, [((m, k), "input"), ((k, n), "input"), (out.shape, "output")], [0, 1],
                  [2], {0: x, 1: y, 2: out})
    where = 3 + np.arange(m)[:, None] * ld + 2 * np.arange(n)[None, :]
    _check(out[where], expected, dtype)
    mask = np.ones(out.shape, bool)
    mask[where] = False
    assert (out[mask] == -7.0).all()


# ---- nothing outside the operands is read -------------------------------------------------

def _guarded(shape, dtype, at_end: bool, keep: list) -> np.ndarray:
    """An array whose first (at_end: last) byte touches a page that may not be read."""
    import mmap
    libc = ctypes.CDLL(None)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    page = mmap.PAGESIZE
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    pages = -(-nbytes // page) + 2
    region = mmap.mmap(-1, pages * page)
    keep.append(region)
    base = ctypes.addressof(ctypes.c_char.from_buffer(region))
    assert libc.mprotect(base, page, 0) == 0  # PROT_NONE before and after
    assert libc.mprotect(base + (pages - 1) * page, page, 0) == 0
    start = (pages - 1) * page - nbytes if at_end else page
    return np.frombuffer(region, np.uint8, nbytes, start).view(dtype).reshape(shape)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mprotect guard pages")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_operands_between_guard_pages(dtype, packed, threads):
    keep: list = []
    for (m, n, k), (ta, tb) in zip([(13, 37, 11), (9, 3, 29), (17, 50, 19), (1, 7, 61)],
                                   LAYOUTS):
        a_shape, b_shape = ((k, m) if ta else (m, k)), ((n, k) if tb else (k, n))
        pa, pb = gc.placeholder(a_shape, dtype), gc.placeholder(b_shape, dtype)
        f = gc.function([pa, pb], (pa.T if ta else pa) @ (pb.T if tb else pb),
                        backend="llvm")
        for at_end in (True, False):
            x, y = _guarded(a_shape, dtype, at_end, keep), _guarded(b_shape, dtype, at_end, keep)
            x[...], y[...] = _data(a_shape, dtype, 1), _data(b_shape, dtype, 2)
            expected = (x.T if ta else x).astype(np.float64) @ (y.T if tb else y)
            _check(f(x, y), expected, dtype)


# ---- fallbacks ----------------------------------------------------------------------------

def _python(code: str, env_extra: dict) -> str:
    env = dict(os.environ, **env_extra)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


_PROGRAM = """
    import os, time, numpy as np, graphc as gc
    from graphc.backends.llvm import gemm, gemm_dot
    a, b = gc.placeholder((300, 200)), gc.placeholder((200, 250))
    f = gc.function([a, b], a @ b, backend="llvm")
    x = np.random.default_rng(0).standard_normal((300, 200)).astype(np.float32)
    y = np.random.default_rng(1).standard_normal((200, 250)).astype(np.float32)
    ref = x.astype(np.float64) @ y.astype(np.float64)
    def ok():
        return np.abs(f(x, y) - ref).max() < 1e-3
    print("threads", "GOMP_parallel" in f.source, ok())
"""


def test_without_libgomp_single_threaded():
    out = _python(_PROGRAM, {"GRAPHC_NO_OPENMP": "1", "GRAPHC_NUM_THREADS": "2",
                             "GRAPHC_CACHE": "0"})
    assert out.split() == ["threads", "False", "True"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_forked_child_does_not_hang():
    code = _PROGRAM + """
    pid = os.fork()
    if pid == 0:
        os._exit(0 if ok() else 3)
    for _ in range(600):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            print("child", os.waitstatus_to_exitcode(status))
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        print("child hung")
    """
    out = _python(code, {"GRAPHC_NUM_THREADS": "2", "GRAPHC_CACHE": "0"})
    lines = out.split("\n")
    assert lines[1] == "child 0", out


@pytest.mark.parametrize("nthreads", [2, 3])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_deep_gemms_with_one_tile_split_their_depth(dtype, nthreads, packed, monkeypatch):
    """A GEMM of one register tile and a long depth (a convolution's weight gradient) gives
    each thread a slice of the depth, summed into partial products added at the end: every
    layout, uneven slices, the last one short."""
    monkeypatch.setenv("GRAPHC_NUM_THREADS", str(nthreads))
    monkeypatch.setattr(gemm_dot, "MIN_DEPTH", 1 << 62)  # the packed path's split, not dots
    small = gemm.replace(gemm.PARAMS[dtype], kc=32)
    monkeypatch.setitem(gemm.PARAMS, dtype, small)
    for (m, n, k), (ta, tb) in itertools.product([(8, 25, 1000), (3, 5, 100), (1, 1, 70)],
                                                 LAYOUTS):
        result, expected, f = _matmul(m, n, k, dtype, ta, tb, seed=m + k)
        _check(result, expected, dtype)
        tiles = -(-m // small.mr) * -(-n // small.nr)
        if gemm.openmp_available() and nthreads // tiles >= 2:  # (else tiles are shared out)
            assert f"gemm_{dtype}_add_partials" in f.source


def test_a_depth_split_gemm_folded_into_an_update(packed, monkeypatch):
    """p -= 0.1 * x^T @ y, folded into a GEMM (accumulating into p) whose depth is split:
    the first slice adds to p, the partial products after it."""
    monkeypatch.setenv("GRAPHC_NUM_THREADS", "2")
    rng = np.random.default_rng(9)
    x = gc.placeholder((600, 5), "float32", name="x")
    y = gc.placeholder((600, 3), "float32", name="y")
    start = rng.normal(size=(5, 3)).astype(np.float32)
    p = gc.parameter(start.copy(), name="p")
    f = gc.function([x, y], gc.sum(p), updates={p: p - 0.1 * (x.T @ y)}, backend="llvm")
    assert any(k.kind == "gemm" and k.accumulate for k in f.schedule().kernels)
    xv = rng.normal(size=(600, 5)).astype(np.float32)
    yv = rng.normal(size=(600, 3)).astype(np.float32)
    f(xv, yv)
    f(xv, yv)
    want = start.astype(np.float64) - 0.2 * (xv.astype(np.float64).T @ yv)
    np.testing.assert_allclose(p.value, want, rtol=1e-4, atol=1e-4)
    if gemm.openmp_available():
        assert "gemm_float32_add_partials" in f.source
