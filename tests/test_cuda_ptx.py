"""Proof without a GPU: the cuda backend's programs compile to PTX (NVRTC, or nvcc) and
assemble for sm_90 (ptxas), with no register spills; f.ptx. Skipped only where neither
NVRTC (pip install nvidia-cuda-nvrtc) nor nvcc is installed."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

import graphc as gc
from graphc.backends.cuda import ptx
from graphc.backends.cuda.loop import flat_launches
from graphc.backends.cuda.gemm import LANES_M, LANES_N, PAD, SMALL, STAGE_PAD
from graphc.backends.cuda.render import render
from graphc.schedule import schedule_graph

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not ptx.available(), reason="neither NVRTC (nvidia-cuda-nvrtc) nor nvcc is installed")]


def _source(f) -> tuple[str, set[str]]:
    rendered = render(schedule_graph(f.graph, policy=f._backend.policy))
    return rendered.source, {L.name for L in flat_launches(rendered.launches)}


def _assembles(source: str, names: set[str]) -> list[ptx.KernelStats]:
    text, stats, how = ptx.check_source(source, "sm_90")
    assert ".target sm_90" in text or how == "nvrtc (its ptxas)"
    assert {s.name for s in stats} == names, how
    spilled = [s for s in stats if s.spill_stores or s.spill_loads]
    assert not spilled, spilled
    return stats


def test_every_kind_compiles_and_assembles_for_sm_90():
    from test_cuda_backend import every_kind_program
    source, names = _source(every_kind_program(dict(backend="numpy")))
    stats = _assembles(source, names)
    gemm = [s for s in stats if "_gemm" in s.name]
    tile = 2 * SMALL.bk * (SMALL.bm + PAD) * 8  # an f64 tile of a and one of b
    staging = 8 * LANES_M * (LANES_N * SMALL.tn + STAGE_PAD) * 8  # out's rows, a warp's own
    assert gemm and all(s.shared_bytes == 2 * tile + staging for s in gemm)  # double-buffered
    blocks = [s for s in stats if "_reduce_sum" in s.name]
    assert any(s.shared_bytes for s in blocks)  # the block-per-row sum's partials


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_primitive_compiles_and_assembles(dtype):
    from cuda_programs import every_primitive
    f, _ = every_primitive(dtype, dict(backend="numpy"))
    _assembles(*_source(f))


def test_training_steps_compile_and_assemble():
    from test_cuda_backend import _cnn, _mlp
    for model in (_mlp, _cnn):
        f, _ = model(dict(backend="numpy"), "float32")
        source = render(schedule_graph(f.graph, [(64,) + f.inputs[0].shape[1:], (64,)])).source
        assert "__global__" in source
        _assembles(source, {line.split("(")[0] for line in source.splitlines()
                            if line.startswith("k") and "(void* const*" in line})


def test_nvrtc_and_nvcc_agree_on_the_kernels():
    if ptx._nvrtc() is None or ptx.nvcc() is None:
        pytest.skip("needs both NVRTC and nvcc")
    from test_cuda_backend import every_kind_program
    source, names = _source(every_kind_program(dict(backend="numpy")))
    for tool in ("nvrtc", "nvcc"):
        text = ptx.to_ptx(source, tool=tool)
        assert {n for n in names if f".entry {n}(" in text} == names, tool


def test_function_ptx_needs_no_gpu():
    x = gc.placeholder((3, 5), name="x")
    f = gc.function([x], gc.softmax(x, axis=1),
                    backend="cuda", backend_options={"emulate": True})
    text = f.ptx
    assert ".entry" in text and ".version" in text
    np.testing.assert_allclose(f(np.zeros((3, 5), np.float32)), np.full((3, 5), 0.2),
                               rtol=1e-6)
    llvm = gc.function([x], x, backend="llvm")
    with pytest.raises(AttributeError, match="the llvm backend produces no PTX"):
        print(llvm.ptx)


def test_ptxas_report_is_read():
    if shutil.which("ptxas") is None:
        pytest.skip("ptxas is not installed")
    report = """ptxas info    : Compiling entry function 'k1_gemm' for 'sm_90'
ptxas info    : Function properties for k1_gemm
    8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 64 registers, used 1 barriers, 8192 bytes smem"""
    (s,) = ptx.parse_ptxas(report)
    assert (s.name, s.registers, s.shared_bytes, s.spill_stores, s.spill_loads,
            s.stack_bytes) == ("k1_gemm", 64, 8192, 4, 4, 8)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gpu_sized_kernels_assemble_without_spills(dtype):
    """The kernels of the GPU benchmarks' sizes: GEMM 4096^3 (the large tiling in float32),
    a batched GEMM past 2^31 elements (64-bit offsets) and a fused elementwise kernel over
    2^24 elements (the vector loop)."""
    from graphc.backends.cuda import gemm
    a, b = gc.placeholder((4096, 4096), dtype, name="a"), gc.placeholder((4096, 4096), dtype,
                                                                        name="b")
    c = gc.placeholder((130, 4096, 4096), dtype, name="c")
    f = gc.function([a, b, c], [a @ b, c @ b, 2.5 * a + b], backend="numpy")
    source, names = _source(f)
    large = f"As[2][{gemm.LARGE.bk}][{gemm.LARGE.bm + gemm.PAD}]"
    assert (large in source) == (dtype == "float32")
    # 64-bit offsets of the matrices in c's product (32-bit ones inside a matrix)
    assert "const long long off_a" in source and "const int off_a" in source
    assert "float4{" in source if dtype == "float32" else "double2{" in source
    stats = _assembles(source, names)
    assert len([s for s in stats if "_gemm" in s.name]) == 2


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softmax_rows_kernels_assemble_without_spills(dtype):
    """The fused softmax kernels (backends/cuda/softmax.py) of rows held by a warp (33, 1000
    values: up to 32 a lane), by a block (4096: 16 a thread) and too long to hold (5000:
    online), with softmax, log_softmax and cross-entropy and their gradients."""
    from test_cuda_softmax import _program
    for n in (33, 1000, 4096, 5000):
        inputs, outputs, _ = _program(n, dtype)
        stats = _assembles(*_source(gc.function(inputs, outputs, backend="numpy")))
        assert [s.name for s in stats if "_softmax_rows_" in s.name], n
