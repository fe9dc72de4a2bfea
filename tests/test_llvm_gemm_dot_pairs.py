"""Deep weight gradients whose output rows are half a vector past whole ones (8, 24 float32;
4, 12 float64) read two rows at a time (backends/llvm/gemm_dot_pairs.py): the path is taken,
and dW (with dx and y) equals the unoptimized numpy graph for padding, dilation, odd sizes,
an odd row count (the unpaired path), float64, one thread and a team; finite differences."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.backends.llvm import gemm, gemm_bcast
from graphc.backends.llvm.gemm_dot_pairs import columns_per_block, paired
from graphc.schedule.implicit import deep

RNG = np.random.default_rng(8)


def test_which_rows_pair():
    assert paired(24, 1536, 16) and paired(8, 512, 16) and paired(12, 48, 8)
    assert not paired(24, 35, 16)  # an odd number of rows
    assert not paired(28, 64, 16) and not paired(16, 64, 16)  # not half a vector past
    assert not paired(72, 64, 16)  # long rows: few lanes to gain
    # the scheduler reads rows of 8 along the depth only when they pair up
    assert deep(16, 200, 4096, ((8, 1),)) and not deep(16, 200, 4088, ((8, 1),))
    assert not deep(16, 200, 4096, ((10, 1),))


def test_column_blocks_waste_the_fewest_columns():
    assert [columns_per_block(n) for n in (25, 9, 16, 8, 3, 200)] == [5, 5, 4, 4, 4, 5]


def _step(xs, ws, padding, dilation, dtype, backend, optimize=True):
    x = gc.placeholder(xs, dtype, name="x")
    w = gc.placeholder(ws, dtype, name="w")
    y = gc.nn.conv2d(gc.relu(x) + 0.5, w, padding=padding, dilation=dilation)
    loss = gc.sum(gc.tanh(y) * gc.sin(y))
    return gc.function([x, w], [y, *gc.grad(loss, [x, w])], backend=backend,
                       optimize=optimize)


CASES = [  # (x shape, w shape, padding, dilation, dtype, paired)
    ((4, 1, 28, 28), (8, 1, 5, 5), 0, 1, "float32", True),  # LeNet's conv1: rows of 24
    ((32, 8, 12, 12), (16, 8, 5, 5), 0, 1, "float32", True),  # LeNet's conv2: rows of 8
    ((9, 2, 10, 10), (3, 2, 3, 3), 0, 1, "float32", True),  # odd batch, odd channels, n=18
    ((4, 2, 23, 22), (5, 2, 3, 3), (1, 2), 1, "float32", True),  # padded: rows of 24
    ((16, 1, 10, 10), (4, 1, 3, 3), 1, 2, "float32", True),  # dilated: rows of 8
    ((8, 1, 11, 11), (4, 1, 4, 4), 0, 1, "float32", True),  # blocks of 4 columns (n=16)
    ((9, 1, 13, 28), (8, 1, 5, 5), 0, 1, "float32", False),  # 81 rows of 24: unpaired
    ((4, 2, 16, 16), (3, 2, 5, 5), 0, 1, "float64", True),  # float64: rows of 12
]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("xs,ws,padding,dilation,dtype,pairs", CASES)
def test_values_and_gradients_match_the_unoptimized_reference(
        xs, ws, padding, dilation, dtype, pairs, threads, monkeypatch):
    monkeypatch.setenv("GRAPHC_NUM_THREADS", str(threads))
    monkeypatch.setenv("GRAPHC_ADAPTIVE_THREADS", "0")  # the team from the first call on
    monkeypatch.setattr(gemm, "PARALLEL_MIN_MACS", 0)
    # (the dot-product path's: a product whose m fills its vectors, LeNet's conv2, is
    # otherwise computed as outer products, gemm_bcast.py)
    monkeypatch.setattr(gemm_bcast, "suitable", lambda spec: False)
    xv, wv = RNG.normal(size=xs), RNG.normal(size=ws) * 0.3
    f = _step(xs, ws, padding, dilation, dtype, "llvm")
    assert ("part_pairs" in f.source) == pairs
    want = _step(xs, ws, padding, dilation, "float64", "numpy", optimize=False)(xv, wv)
    tol = 1e-5 if dtype == "float32" else 1e-12
    for what, got, ref in zip(("y", "dx", "dw"), f(xv, wv), want):
        scale = np.abs(ref).max()
        np.testing.assert_allclose(got, ref, rtol=0, atol=tol * scale, err_msg=what)


def test_a_paired_weight_gradient_matches_finite_differences():
    xv, wv = RNG.normal(size=(4, 1, 16, 16)), RNG.normal(size=(3, 1, 5, 5)) * 0.3
    x = gc.placeholder(xv.shape, "float64", name="x")
    w = gc.placeholder(wv.shape, "float64", name="w")
    f = gc.function([x, w], gc.grad(gc.sum(gc.tanh(gc.nn.conv2d(x, w))), w))
    assert "part_pairs" in f.source  # (float64: rows of 12, a vector and a half)
    result = gc.check_grad(lambda a, b: gc.sum(gc.tanh(gc.nn.conv2d(a, b))), xv, wv,
                           max_entries=40)
    assert result, str(result)


def test_rows_read_in_pairs_keep_their_chunks_and_no_copy():
    """Halved chunks (gemm_dot._chunk_rows) and the chunk's copy are part_rows's: W5's
    pairs of rows keep CHUNK elements a chunk (its weight gradients measured slower with
    half) and take no scratch."""
    from llvmlite import ir as llvm_ir

    from graphc.backends.llvm import gemm, gemm_dot
    x = gc.placeholder((32, 8, 12, 12), "float32", name="x")  # LeNet's conv2
    w = gc.placeholder((16, 8, 5, 5), "float32", name="w")
    y = gc.nn.conv2d(x, w)  # rows of 8 output pixels
    g = gc.placeholder(y.shape, "float32", name="g")
    f = gc.function([x, g], gc.grad(gc.sum(y * g), w), backend="llvm",
                    backend_options={"cache_dir": None})
    deep = [k for k in f.schedule().kernels if k.kind == "gemm"
            and gemm_dot.suitable(gemm._Spec.of(k)) and k.b_split is not None]
    assert deep
    for k in deep:
        dot = gemm_dot.DotGemm(llvm_ir.Module(), gemm._Spec.of(k), 1, "g")
        assert dot.pairs and dot.pack is None
        assert dot.values["chunk_rows"] == gemm_dot.CHUNK // dot.values["run"]
