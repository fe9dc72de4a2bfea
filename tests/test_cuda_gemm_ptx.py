"""The GEMM's tiling for small and skinny shapes: the 128x128 tiling only where its tile is
used and k takes more than one slice (with one slice, ptxas spilled ~200 B of the 8x8
register block: the batched matrix-vector products of the slow tests, e.g. 200 x (1x7 @
7x2) in float32). Assembled for sm_90 with no spills; emulated results equal numpy."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.backends.cuda import CUDA_POLICY, gemm, ptx
from graphc.backends.cuda.render import render
from graphc.schedule import ir, schedule_graph

# (batch, m, n, k): the shapes that spilled, their neighbours, and ones that keep LARGE
SHAPES = [(200, 1, 2, 7), (200, 1, 7, 2), (200, 2, 1, 7), (200, 1, 2, 1), (200, 1, 300, 7),
          (200, 300, 2, 7), (200, 16, 16, 7), (200, 64, 64, 8), (200, 128, 128, 7),
          (200, 65, 65, 9), (200, 128, 128, 17), (1, 2, 5000, 3)]


def _program(dtype: str) -> gc.Function:
    inputs, outputs = [], []
    for i, (batch, m, n, k) in enumerate(SHAPES):
        a = gc.placeholder((batch, m, k), dtype, name=f"a{i}")
        b = gc.placeholder((k, n), dtype, name=f"b{i}")
        inputs += [a, b]
        outputs.append(a @ b)
    return gc.function(inputs, outputs, backend="numpy")


def _gemms(f: gc.Function) -> list[ir.Gemm]:
    kernels = schedule_graph(f.graph, policy=CUDA_POLICY).kernels
    return [k for k in kernels if isinstance(k, ir.Gemm)]


def test_large_tiles_only_where_used_and_k_takes_several_slices():
    chosen = {(gemm.size(k.batch), k.m, k.n, k.k): gemm.tiling(k)
              for k in _gemms(_program("float32"))}
    assert len(chosen) == len(SHAPES)
    large = {s for s, t in chosen.items() if t == gemm.LARGE}
    assert large == {(200, 65, 65, 9), (200, 128, 128, 17)}
    assert all(t == gemm.SMALL for t in _tilings("float64"))  # (8-byte types: always)


def _tilings(dtype: str) -> list[gemm.Tiling]:
    return [gemm.tiling(k) for k in _gemms(_program(dtype))]


@pytest.mark.skipif(not ptx.available(),
                    reason="neither NVRTC (nvidia-cuda-nvrtc) nor nvcc is installed")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_small_and_skinny_gemms_assemble_without_spills(dtype):
    f = _program(dtype)
    source = render(schedule_graph(f.graph, policy=CUDA_POLICY)).source
    _, stats, how = ptx.check_source(source, ptx.ARCH, "nvrtc")
    gemms = [s for s in stats if "_gemm" in s.name]
    assert len(gemms) == len(SHAPES), how
    spilled = [s for s in gemms if s.spill_stores or s.spill_loads or s.stack_bytes]
    assert not spilled, spilled


@pytest.mark.slow
def test_batched_matrix_vector_products_match_numpy():
    """A shape that took the 128x128 tiling and spilled, now the 64x64 one, on the emulator
    in a shuffled block and thread order."""
    a = gc.placeholder((130, 1, 7), "float32", name="a")
    b = gc.placeholder((7, 2), "float32", name="b")
    f = gc.function([a, b], a @ b, backend="cuda",
                    backend_options={"emulate": True, "seed": 3})
    rng = np.random.default_rng(8)
    av = rng.normal(size=(130, 1, 7)).astype("float32")
    bv = rng.normal(size=(7, 2)).astype("float32")
    np.testing.assert_allclose(f(av, bv), av @ bv, rtol=1e-5, atol=1e-6)
