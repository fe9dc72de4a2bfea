"""Scalar libm calls tagged with libmvec's vector variants (backends/llvm/vector_abi.py): on
an AVX-512 host both the 512-bit and the 256-bit variant, since LLVM's loop vectorizer
picks 256-bit vectors on some AVX-512 cores (Intel's) and then finds only the variant of
its width; with the 512-bit one alone it called the scalar function on every element."""
from __future__ import annotations

import re

import numpy as np
import pytest

import graphc as gc
from graphc.backends.llvm import vector_abi

TEXT = 'declare float @"expf"(float %".1")\n' \
       'define float @f(float %x) {\n  %r = call float @"expf"(float %x)\n  ret float %r\n}\n'


@pytest.fixture
def host(monkeypatch):
    """Pretends the host has the CPU features given (the ABIs are chosen again)."""
    def set_features(*names: str) -> None:
        class Features(dict):
            def flatten(self) -> str:
                return ",".join(f"+{n}" for n in self)
        monkeypatch.setattr(vector_abi.llvm, "get_host_cpu_features",
                            lambda: Features((n, True) for n in names))
        vector_abi.host_isas.cache_clear()
        vector_abi.host_isa.cache_clear()
    yield set_features
    vector_abi.host_isas.cache_clear()
    vector_abi.host_isa.cache_clear()


def _variants(text: str) -> list[str]:
    tag = re.search(r'"vector-function-abi-variant"="([^"]*)"', text)
    return tag.group(1).split(",") if tag else []


def test_an_avx512_host_offers_the_512_and_the_256_bit_variant(host):
    host("avx512f", "avx2", "sse2")
    if not vector_abi.host_isas():
        pytest.skip("no libmvec on this system")
    text = vector_abi.annotate(TEXT)
    assert _variants(text) == ["_ZGVeN16v_expf(_ZGVeN16v_expf)",
                               "_ZGVdN8v_expf(_ZGVdN8v_expf)"]
    assert "declare <16 x float> @_ZGVeN16v_expf(<16 x float>)" in text
    assert "declare <8 x float> @_ZGVdN8v_expf(<8 x float>)" in text


def test_hosts_without_avx512_offer_their_best_variant_only(host):
    host("avx2", "sse2")
    if not vector_abi.host_isas():
        pytest.skip("no libmvec on this system")
    assert _variants(vector_abi.annotate(TEXT)) == ["_ZGVdN8v_expf(_ZGVdN8v_expf)"]
    host("sse2")
    assert _variants(vector_abi.annotate(TEXT)) == ["_ZGVbN4v_expf(_ZGVbN4v_expf)"]


@pytest.mark.parametrize("name", ["exp", "tanh", "log"])
def test_a_vectorized_loop_calls_no_scalar_libm_function(name):
    if not vector_abi.host_isas():
        pytest.skip("no libmvec on this system")
    n = 4099
    x = gc.placeholder((n,), name="x")
    f = gc.function([x], getattr(gc, name)(x) * 2.0 + 1.0, backend="llvm",
                    backend_options={"cache_dir": None})
    xv = np.linspace(0.1, 3.0, n, dtype=np.float32)
    np.testing.assert_allclose(f(xv), getattr(np, name)(xv) * 2 + 1, rtol=2e-6, atol=1e-6)
    # (an indirect call through a register holding the function: its name is the move's)
    called = set(re.findall(r"\$(\w+)", f.asm)) | set(re.findall(r"call\w*\s+(\w+)", f.asm))
    assert any(c.startswith("_ZGV") for c in called)  # the loop calls the vector variant


def test_loops_are_vectorized_at_the_width_of_the_code_written_out():
    """LLVM's tuning for some AVX-512 cores (Intel's) prefers 256-bit vectors in the loops it
    vectorizes; graphc's own vector code is 512-bit, and the loops are asked for the same
    (jit.EXTRA_FEATURES)."""
    import llvmlite.binding as llvm
    if not llvm.get_host_cpu_features().get("avx512f"):
        pytest.skip("no AVX-512 on this host")
    n = 4096
    x = gc.placeholder((n,), name="x")
    f = gc.function([x], gc.exp(x) * 2.0 + 1.0, backend="llvm",
                    backend_options={"cache_dir": None})
    xv = np.linspace(-2.0, 2.0, n, dtype=np.float32)
    np.testing.assert_allclose(f(xv), np.exp(xv) * 2 + 1, rtol=2e-6)
    assert "zmm" in f.asm and "ymm" not in f.asm
