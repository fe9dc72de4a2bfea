"""The shared native runtime (graphc/runtime): the code hash follows file contents, not times;
the one cache key; an entry of another backend id or code hash is not used; the status
protocol's errors."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import graphc as gc
from graphc.runtime.cache import CompileCache, cache_key
from graphc.runtime.code_hash import code_hash, source_hash
from graphc.runtime.errors import raise_for_status, status_of
from graphc.runtime.layout import Layout

ROOT = Path(__file__).resolve().parents[1]


def test_the_code_hash_follows_contents_not_modification_times(tmp_path):
    core, backend = tmp_path / "core", tmp_path / "llvm"
    shutil.copytree(ROOT / "graphc" / "schedule", core)
    shutil.copytree(ROOT / "backends" / "llvm", backend)
    before = source_hash([core, backend])
    codegen = backend / "codegen.py"
    stat = codegen.stat()
    os.utime(codegen, ns=(stat.st_atime_ns + 10**12, stat.st_mtime_ns + 10**12))
    (backend / "notes.txt").write_text("not Python: not code")
    assert source_hash([core, backend]) == before
    text = codegen.read_bytes()
    codegen.write_bytes(text.replace(b"SUM_BLOCK = 2048", b"SUM_BLOCK = 4096"))  # same size
    assert codegen.stat().st_size == len(text)
    edited = source_hash([core, backend])
    assert edited != before
    (backend / "newpass.py").write_text("")  # a new file counts, with no list to update
    assert source_hash([core, backend]) not in (before, edited)


def test_the_code_hash_is_per_backend_and_computed_once():
    llvm = code_hash("graphc.backends.llvm")
    assert llvm == code_hash("graphc.backends.llvm")
    assert code_hash.cache_info().hits >= 1
    assert llvm != code_hash("graphc.backends.numpy")


def test_the_cache_key_has_every_part():
    parts = ("a" * 64, ((4, 3),), "llvm|x", "c" * 64, (("fold",), True))
    key = cache_key(*parts)
    assert key == cache_key(*parts)
    for i, other in enumerate(("b" * 64, ((5, 3),), "other|x", "d" * 64, ((), True))):
        changed = list(parts)
        changed[i] = other
        assert cache_key(*changed) != key


def _compiled(folder: Path):
    x = gc.placeholder((4, 3), name="x")
    f = gc.function([x], gc.tanh(x) * 2.0, backend="llvm",
                    backend_options={"cache_dir": str(folder)})
    want = np.tanh(np.ones((4, 3), np.float32)) * 2
    np.testing.assert_allclose(f(np.ones((4, 3), np.float32)), want, rtol=1e-6)
    return f._exe.last


def test_an_entry_of_another_backend_id_is_not_used(tmp_path, monkeypatch):
    from graphc.backends.llvm import backend
    assert _compiled(tmp_path).cached is False
    assert _compiled(tmp_path).cached is True
    real = backend.target_id()
    monkeypatch.setattr(backend, "target_id", lambda: real.replace("llvm|", "other|", 1))
    other = _compiled(tmp_path)
    assert other.cached is False
    programs = [p for p in tmp_path.glob("*.gco")
                if "object_lengths" in CompileCache(tmp_path).get(p.stem)[1]]
    assert len(programs) == 2
    # and the kernels were compiled again, not loaded from the first id's entries
    assert other.compile_times()["kernels loaded"] == 0
    # an entry copied under the other id's key is refused: the header names its own key
    first = next(p for p in programs if p.stem != other.key)
    shutil.copyfile(first, tmp_path / f"{other.key}.gco")
    assert CompileCache(tmp_path).get(other.key) is None
    monkeypatch.undo()
    assert _compiled(tmp_path).cached is True


def test_an_entry_of_other_generator_code_is_not_used(tmp_path, monkeypatch):
    from graphc.backends.llvm import runtime
    assert _compiled(tmp_path).cached is False
    real = runtime.code_hash("graphc.backends.llvm")
    monkeypatch.setattr(runtime, "code_hash", lambda package: "0" * len(real))
    assert _compiled(tmp_path).cached is False


def _layout(**extra) -> Layout:
    return Layout(slots=3, arena_slot=2, arena_bytes=0, input_slots=[0], outputs=[],
                  params=[], consts=[], errors={0: "take: an index is out of range [0, 5) "
                                                  "(built at model.py:7)",
                                               1: "pow: negative exponent (built at m.py:3)"},
                  **extra)


def test_the_status_word_becomes_the_error_numpy_would_raise():
    args = [np.array([1, 9, 2])]
    raise_for_status(0, _layout(), args)  # 0: success
    with pytest.raises(IndexError, match=r"^take: index 9 is out of range \[0, 5\) "
                                         r"\(built at model.py:7\)$"):
        raise_for_status(status_of(0), _layout(index_args={0: (0, 5, True)}), args)
    with pytest.raises(IndexError, match=r"^take: an index is out of range"):
        raise_for_status(status_of(0), _layout(), args)  # indices not an argument
    with pytest.raises(ValueError, match=r"^pow: negative exponent \(built at m.py:3\)$"):
        raise_for_status(status_of(1), _layout(value_errors=[1]), args)
    with pytest.raises(IndexError, match="native kernel 7 failed"):
        raise_for_status(status_of(7), _layout(), args)


def test_the_runtime_imports_no_native_toolchain():
    import subprocess
    import sys
    code = ("import sys, graphc.runtime, graphc.backend, graphc.backends.llvm; "
            "print([m for m in ('llvmlite', 'cupy') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
