"""benchmarks/cuda_suite_ptx.py, the PTX check CI runs on every program the suite generated
(.ci/run): it passes on programs that assemble without spills, fails naming the kernel, its
program and the test that made it when a kernel does not compile or spills, fails when its
time limit is reached, and skips with a note where no CUDA compiler is installed; kernels
are told apart by their text up to names; the plugin records the test of each program."""
from __future__ import annotations

import importlib.util
import json
import os
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


def test_kernels_equal_up_to_buffer_names_slots_and_offsets_are_one():
    """The same kernel in two programs, where its buffers have other ids, slots and arena
    offsets, is compiled once; other sizes or another arena offset of 0 are not the same."""
    script = _script()

    def kernel(n: int, extra: bool) -> str:
        x = gc.placeholder((n, 40), "float32", name="x")
        y = gc.exp(x)
        outs = [gc.sum(y * 2.0, axis=1)]
        if extra:  # other buffers first: the sum's buffers get other ids, slots, offsets
            outs = [gc.sum(gc.tanh(x), axis=0)] + outs
        text = render(schedule_graph(gc.function([x], outs, backend="numpy").graph,
                                     policy=CUDA_POLICY)).source
        (found,) = [t for name, _, t in script.named_kernels(text)
                    if "exp" in name and "reduce_sum" in name]
        return found

    one, two = kernel(8, False), kernel(8, True)
    assert one == two
    assert kernel(9, False) != one
    text = one.split("\n")
    decl = next(line for line in text if "__restrict__ gcb" in line)
    assert "gcb0" in decl and "slots[0]" in decl


@pytest.mark.slow  # (a pytest run of its own, two workers)
def test_the_plugin_records_the_test_of_each_program(tmp_path):
    """pytest with the plugin (two xdist workers): every program's source, and the test that
    ran it first in made-by-<worker>.tsv."""
    tests = tmp_path / "test_two.py"
    tests.write_text("import numpy as np\nimport graphc as gc\n\n"
                     "def test_a():\n    x = gc.placeholder((3, 4), name='x')\n"
                     "    gc.function([x], gc.sum(x * 3.0, axis=1), backend='numpy')"
                     "(np.ones((3, 4), np.float32))\n\n"
                     "def test_b():\n    x = gc.placeholder((5,), name='x')\n"
                     "    gc.function([x], gc.exp(x), backend='numpy')(np.ones(5, np.float32))\n")
    out = tmp_path / "ptx"
    here = Path(__file__).resolve().parent
    env = {k: v for k, v in os.environ.items() if k != "GRAPHC_CUDA_PTX_DIR"}  # (CI's own)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "2", "-p",
                           "cuda_ptx_plugin", f"--cuda-ptx-dir={out}", "-p", "no:cacheprovider",
                           str(tests)], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env={**env, "PYTHONPATH": str(here)})
    assert done.returncode == 0, done.stdout + done.stderr
    sources = sorted(p.name for p in out.glob("*.cu"))
    made = _script().made_by(out)
    assert len(sources) == 2 and sorted(made) == sources
    assert sorted(made.values()) == ["test_two.py::test_a", "test_two.py::test_b"]
    assert len(list(out.glob("made-by-gw*.tsv"))) == 2 and not list(out.glob("*.tmp"))


def test_the_recorder_passes_writes_to_the_executable(monkeypatch):
    """A test that replaces an executable's method with a spy (f._exe._get = ...) sees the
    executable's own calls through it under the plugin too (tests/test_symbolic_sizes.py
    failed only under the plugin: the spy landed on the recorder)."""
    plugin = importlib.import_module("cuda_ptx_plugin")
    x = gc.placeholder((3,), name="x")
    f = gc.function([x], gc.exp(x), backend="numpy")
    exe = f._exe
    recorder = plugin._Recorder(exe, f.program, Path("."))
    monkeypatch.setattr(recorder, "spy", 1, raising=False)
    assert exe.spy == 1 and "spy" not in vars(recorder)
    monkeypatch.undo()
    assert not hasattr(exe, "spy")
    recorder.fingerprint = "mine"
    assert vars(recorder)["fingerprint"] == "mine" and getattr(exe, "fingerprint", None) != "mine"


def test_the_plugin_renders_a_program_once_across_workers(tmp_path, monkeypatch):
    """Two processes that run one program: the second finds the first's claim and neither
    schedules nor records it again (a second process is simulated by forgetting what this
    one rendered and wrote)."""
    import graphc.schedule
    plugin = importlib.import_module("cuda_ptx_plugin")
    scheduled = []
    real = graphc.schedule.schedule_graph
    monkeypatch.setattr(graphc.schedule, "schedule_graph",
                        lambda *a, **k: scheduled.append(a) or real(*a, **k))
    x = gc.placeholder((5,), name="x")
    f = gc.function([x], gc.exp(x) * 3.0, backend="numpy")
    before = (set(plugin._rendered), set(plugin._written))
    for _ in range(2):
        plugin._Recorder(f._exe, f.program, tmp_path).render(((5,),))
        plugin._rendered.intersection_update(before[0])  # (another process)
        plugin._written.intersection_update(before[1])
    assert len(scheduled) == 1
    lines = [line for p in tmp_path.glob("made-by-*.tsv") for line in p.read_text().splitlines()]
    assert len(lines) == 1 and len(list(tmp_path.glob("*.cu"))) == 1
    assert len(list((tmp_path / "claimed").iterdir())) == 1


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
    assert done.returncode == 1 and " of broken.cu, made by ?: " in done.stdout, done.stdout
    assert "FAILED kernel k" in done.stdout
    assert "compiled 1 (" in done.stdout  # (the others come from the cache)
    # spills reported by the assembler (here: written into the cache) fail it too
    (tmp_path / "broken.cu").unlink()
    stored = json.loads(cache.read_text())
    first = next(iter(stored["kernels"]))
    stored["kernels"][first]["spill_stores"] = 8
    cache.write_text(json.dumps(stored))
    (tmp_path / "made-by-gw0.tsv").write_text("good.cu\tthe_test\n")
    done = _run(str(tmp_path), "--cache", str(cache))
    assert done.returncode == 1 and "kernels that spill: 1" in done.stdout, done.stdout
    assert f"(k_{first}) of good.cu, made by the_test: 8 B stores" in done.stdout
    assert "FAILED" not in done.stdout
    # a time limit reached: the check fails and says how much was left
    cache.unlink()
    done = _run(str(tmp_path), "--time-limit", "0")
    assert done.returncode == 1 and "FAILED: the time limit of 0 s was reached" in done.stdout
