"""Objects linked in one engine need nothing that none of them defines: a cached object of
shared GEMM functions takes the ones it calls with it (kernel_cache.Lookup), and an engine
that would still lack a symbol is refused with an error naming it (MCJIT would resolve none
of its calls: the process crashed at the first call, elf_symbols.py)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from graphc.backends.llvm import elf_symbols, jit, kernel_cache
from graphc.runtime.cache import CompileCache

# Three convolution programs in one process and one empty cache: the second loads one of
# the first's shared functions and compiles the rest as a batch, whose team body calls the
# loaded one; the third needs one function of that batch. It took the batch without what
# the batch calls: every call of its engine jumped to address 0 (a segfault).
_THREE_PROGRAMS = textwrap.dedent("""
    import numpy as np
    import graphc as gc

    def program(xs, ws, padding, step):
        x = gc.placeholder((None,) + xs[1:], "float64", name="x")
        w = gc.placeholder(ws, "float64", name="w")
        if not step:
            return [x, w], [gc.nn.conv2d(x, w)]
        y = gc.nn.conv2d(gc.relu(x) + 0.5, w, padding=padding)
        loss = gc.sum(gc.tanh(y) * gc.sin(y))
        return [x, w], [y, *gc.grad(loss, [x, w])]

    rng = np.random.default_rng(0)
    for xs, ws, padding, step in [((2, 3, 7, 7), (4, 3, 3, 3), 0, False),
                                  ((3, 1, 28, 28), (8, 1, 5, 5), 0, True),
                                  ((2, 1, 28, 28), (16, 1, 3, 3), 1, True)]:
        inputs, outputs = program(xs, ws, padding, step)
        f = gc.function(inputs, outputs, backend="llvm")
        args = rng.normal(size=xs), rng.normal(size=ws)
        want = gc.function(inputs, outputs, backend="numpy")(*args)
        for got, ref in zip(f(*args), want):
            np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9)
        print("loaded", f.compile_times.get("library loaded", 0), flush=True)
""")


def test_programs_taking_each_others_shared_functions_run_in_one_process(tmp_path):
    env = dict(os.environ, GRAPHC_CACHE="1", GRAPHC_CACHE_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", _THREE_PROGRAMS], env=env, text=True,
                          capture_output=True, timeout=600)
    assert done.returncode == 0, (done.returncode, done.stderr[-3000:])
    loaded = [int(line.split()[1]) for line in done.stdout.splitlines()]
    assert len(loaded) == 3
    assert loaded[2] > 0  # from the cache, not compiled again without it


def _object(text: str) -> bytes:
    jit._init()
    return jit._object_of(text)[0]


_CALLER = "declare void @gemm_b()\ndefine void @gemm_a() {\n  call void @gemm_b()\n  ret void\n}"
_CALLEE = "define void @gemm_b() {\n  ret void\n}"
_ENTRY = "define i32 @graphc_main(ptr %p) {\n  ret i32 0\n}"


def test_symbols_reads_what_an_object_defines_and_needs():
    defined, needed = elf_symbols.symbols(_object(_CALLER))
    assert defined == {"gemm_a"} and needed == {"gemm_b"}
    assert elf_symbols.symbols(_object(_CALLEE)) == ({"gemm_b"}, set())


def test_an_engine_lacking_a_symbol_is_refused_with_its_name():
    with pytest.raises(jit.UnresolvedSymbols, match="gemm_b"):
        jit.load_objects([_object(_ENTRY), _object(_CALLER)], jit.ENTRY)
    address, _ = jit.load_objects([_object(_ENTRY), _object(_CALLER), _object(_CALLEE)],
                                  jit.ENTRY)
    assert address


def test_a_shared_object_takes_the_functions_it_calls_first(tmp_path):
    disk = CompileCache(tmp_path)
    kernel_cache.store_library(disk, _object(_CALLEE), [("kb", "gemm_b")])
    kernel_cache.store_library(disk, _object(_CALLER), [("ka", "gemm_a")], [("kb", "gemm_b")])
    found = kernel_cache.Lookup(disk)
    assert found.find("ka", ["gemm_a"]) == []
    assert found.defined == {"gemm_a", "gemm_b"} and not jit.unresolved(found.objects)
    # a batch too, and a batch whose callee is gone is a miss
    batch = _object(_CALLER.replace("gemm_a", "gemm_c") + "\n" + _ENTRY.replace(
        "graphc_main", "gemm_d"))
    kernel_cache.store_library(disk, batch, [("kc", "gemm_c"), ("kd", "gemm_d")],
                               [("kb", "gemm_b")])
    found = kernel_cache.Lookup(disk)
    assert found.find("kd", ["gemm_d"]) == [] and "gemm_b" in found.defined
    (tmp_path / "kb.gco").unlink()
    assert kernel_cache.Lookup(disk).find("kd", ["gemm_d"]) is None
