"""benchmarks/cuda_suite_ptx.py, the PTX check CI runs on every program the suite generated
(.ci/run): it passes on programs that assemble without spills, fails naming the program of a
kernel that does not compile or that spills, and skips with a note where no CUDA compiler is
installed."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

import graphc as gc
from graphc.backends.cuda import CUDA_POLICY, ptx
from graphc.backends.cuda.render import render
from graphc.schedule import schedule_graph

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "cuda_suite_ptx.py"


def _script():
    spec = importlib.util.spec_from_file_location("cuda_suite_ptx", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args, "--jobs", "2"],
                          capture_output=True, text=True, timeout=600)


def _write_program(folder: Path) -> str:
    x = gc.placeholder((4, 50), "float32", name="x")
    f = gc.function([x], [gc.log_softmax(x, axis=1), gc.sum(x * 2.0, axis=0)],
                    backend="numpy")
    source = render(schedule_graph(f.graph, policy=CUDA_POLICY)).source
    (folder / "good.cu").write_text(source)
    return source


def test_without_a_cuda_compiler_it_says_so_and_passes(tmp_path, monkeypatch, capsys):
    script = _script()
    monkeypatch.setattr(ptx, "nvrtc_version", lambda: None)
    monkeypatch.setattr(ptx, "nvcc", lambda: None)
    _write_program(tmp_path)
    assert script.main([str(tmp_path)]) == 0
    assert "skipped: neither NVRTC" in capsys.readouterr().out


def test_kernels_are_renamed_and_deduplicated():
    script = _script()
    x = gc.placeholder((3, 40), "float64", name="x")
    f = gc.function([x], gc.softmax(x, axis=1) * 3.0, backend="numpy")
    text = render(schedule_graph(f.graph, policy=CUDA_POLICY)).source
    found = script.kernels(text)
    assert found and all(f"\nk_{h}(void* const*" in k for h, k in found.items())
    renamed = text.replace("k0_softmax_rows_", "k7_softmax_rows_")  # (the name aside)
    assert script.kernels(renamed).keys() == found.keys()


@pytest.mark.slow  # (compiles with NVRTC or nvcc)
@pytest.mark.skipif(not ptx.available(), reason="neither NVRTC nor nvcc is installed")
def test_a_kernel_that_fails_to_compile_or_spills_fails_the_check(tmp_path):
    source = _write_program(tmp_path)
    cache = tmp_path / "cache.json"
    done = _run(str(tmp_path), "--cache", str(cache))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "programs whose kernels all assembled: 1 of 1" in done.stdout
    assert "kernels that spill: 0" in done.stdout and "most registers: " in done.stdout
    # a kernel whose body does not compile: the program is named, the check fails
    broken = source.replace("const long long row", "const long long row = ;", 1)
    assert broken != source
    (tmp_path / "broken.cu").write_text(broken)
    done = _run(str(tmp_path), "--cache", str(cache))
    assert done.returncode == 1 and "FAILED broken.cu: kernel k_" in done.stdout, done.stdout
    assert "compiled 1 (" in done.stdout  # (the others come from the cache)
    # spills reported by the assembler (here: written into the cache) fail it too
    (tmp_path / "broken.cu").unlink()
    stored = json.loads(cache.read_text())
    first = next(iter(stored["kernels"]))
    stored["kernels"][first]["spill_stores"] = 8
    cache.write_text(json.dumps(stored))
    done = _run(str(tmp_path), "--cache", str(cache))
    assert done.returncode == 1 and "kernels that spill: 1" in done.stdout, done.stdout
    assert f"k_{first} (good.cu): 8 B stores" in done.stdout
    assert "FAILED" not in done.stdout
