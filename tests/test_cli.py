"""The `graphc` command line: each subcommand in-process (fast) and end to end in a
subprocess (`python -m graphc`, slow), error paths included: one stderr line, an exit code,
no traceback."""
from __future__ import annotations

import configparser
import importlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from graphc import table
from graphc.cli import main
from graphc.runtime.cache import CompileCache

ROOT = Path(__file__).resolve().parents[1]

TARGET = textwrap.dedent("""
    import numpy as np
    import graphc as gc

    x = gc.placeholder((4, 3), "float64", name="x")
    W = gc.parameter(np.arange(6.0).reshape(3, 2) / 10, name="W")
    y = gc.tanh(x @ W)
    loss = (y * y).sum()
    pair = (y, loss)

    def build():
        return gc.grad(loss, [W])

    f = gc.function([x], y, backend="numpy")
    g = gc.Graph((x.node,), (loss.node,))
    number = 3

    def needs(a):
        return a

    def broken():
        raise RuntimeError("no model today")
    """)


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "model.py"
    path.write_text(TARGET)
    return path


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, expected_code: int, *words: str) -> None:
    assert code == expected_code
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("graphc")
    for word in words:
        assert word in lines[0], lines[0]


# ---- show ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["y", "pair", "build", "f", "g"])
def test_show_text_of_each_kind_of_target(capsys, model, name):
    code, out, err = run_main(capsys, "show", f"{model}:{name}")
    assert code == 0 and err == ""
    assert "%x" in out and "placeholder" in out and "return" in out


def test_show_text_matches_gc_show_and_dot_matches_to_dot(capsys, model, tmp_path):
    import importlib.util

    import graphc as gc
    spec = importlib.util.spec_from_file_location("m_cli", model)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    code, out, _ = run_main(capsys, "show", f"{model}:loss")
    assert code == 0 and out.rstrip("\n") == gc.show(mod.loss)
    dot = tmp_path / "g.dot"
    code, out, _ = run_main(capsys, "show", f"{model}:loss", "--format", "dot", "-o", str(dot))
    assert code == 0 and out == ""
    assert dot.read_text().rstrip("\n") == gc.to_dot(mod.loss)


def test_show_pictures_use_render_and_explore_when_present(capsys, model, tmp_path):
    import graphc as gc
    for fmt, needs in (("svg", "render"), ("png", "render"), ("html", "explore")):
        out_file = tmp_path / f"g.{fmt}"
        code, _, err = run_main(capsys, "show", f"{model}:f", "--format", fmt,
                                "-o", str(out_file))
        if hasattr(gc, needs):
            assert code == 0 and out_file.stat().st_size > 0, err
        else:
            assert_one_line_error(code, err, 1, f"gc.{needs}")


@pytest.mark.parametrize("spec, words", [
    ("{dir}/missing.py:y", ["no such file"]),
    ("{model}:nothing", ["no name 'nothing'"]),
    ("{model}", ["FILE.py:NAME"]),
    ("{model}:number", ["int", "not a tensor"]),
    ("{model}:needs", ["takes arguments", "a"]),
    ("{dir}/notes.txt:y", ["not a .py file"]),
])
def test_show_usage_errors_are_one_line_exit_2(capsys, model, spec, words):
    (model.parent / "notes.txt").write_text("y = 1\n")
    code, out, err = run_main(capsys, "show", spec.format(model=model, dir=model.parent))
    assert out == ""
    assert_one_line_error(code, err, 2, *words)


def test_a_failing_target_is_one_line_exit_1(capsys, model, tmp_path):
    code, _, err = run_main(capsys, "show", f"{model}:broken")
    assert_one_line_error(code, err, 1, "RuntimeError", "no model today")
    bad = tmp_path / "bad.py"
    bad.write_text("import graphc as gc\nx = gc.placeholder((2,), name='x')\n"
                   "y = x @ x @ x\n")
    code, _, err = run_main(capsys, "show", f"{bad}:y")
    assert_one_line_error(code, err, 1, "bad.py", "ShapeError")


def test_bad_options_are_one_line_exit_2(capsys, model):
    for argv in (["show", f"{model}:y", "--format", "jpeg"], ["frobnicate"], [],
                 ["compile", f"{model}:y"], ["cache", "wipe"], ["table", "--format", "rst"]):
        code, out, err = run_main(capsys, *argv)
        assert_one_line_error(code, err, 2)
        assert out == ""


def test_an_output_in_a_missing_folder_is_one_line_exit_2(capsys, model, tmp_path):
    for fmt in ("text", "svg", "html"):
        out = tmp_path / "missing" / f"g.{'txt' if fmt == 'text' else fmt}"
        code, _, err = run_main(capsys, "show", f"{model}:y", "--format", fmt, "-o", str(out))
        assert_one_line_error(code, err, 2, "-o", "does not exist")
        assert not out.parent.exists()


def test_debug_shows_the_traceback(capsys, model):
    code, _, err = run_main(capsys, "show", f"{model}:broken", "--debug")
    assert code == 1 and "Traceback" in err and "no model today" in err


# ---- table ---------------------------------------------------------------------------------

def test_table_prints_the_chain_rule_table(capsys):
    code, out, _ = run_main(capsys, "table")
    assert code == 0 and out.rstrip("\n") == table.markdown()
    code, out, _ = run_main(capsys, "table", "--format", "latex")
    assert code == 0 and out.rstrip("\n") == table.latex()


# ---- compile -------------------------------------------------------------------------------

def test_compile_emits_ir_asm_and_listing(capsys, model):
    code, out, err = run_main(capsys, "compile", f"{model}:y", "--emit", "ir")
    assert code == 0, err
    assert "define" in out  # LLVM IR (tensors compile with llvm by default)
    code, out, err = run_main(capsys, "compile", f"{model}:y", "--emit", "asm")
    assert code == 0 and out.strip(), err
    code, out, err = run_main(capsys, "compile", f"{model}:build", "--backend", "numpy",
                              "--emit", "listing")
    assert code == 0, err
    assert "gemm" in out and "kernels" in out


def test_compile_a_function_keeps_or_changes_its_backend(capsys, model):
    code, out, _ = run_main(capsys, "compile", f"{model}:f", "--emit", "ir")
    assert code == 0 and "tanh" in out and "define" not in out  # numpy: the graph
    code, out, _ = run_main(capsys, "compile", f"{model}:f", "--backend", "llvm",
                            "--emit", "ir")
    assert code == 0 and "define" in out


@pytest.mark.slow
def test_compile_emits_cuda_c_and_ptx(capsys, model):
    for argv in (["--emit", "cuda"], ["--backend", "cuda", "--emit", "ir"]):
        code, out, _ = run_main(capsys, "compile", f"{model}:y", *argv)
        assert code == 0 and "__global__" in out and "tanh" in out
    from graphc.backends.cuda.ptx import available
    if not available():
        pytest.skip("neither NVRTC nor nvcc here")
    code, out, _ = run_main(capsys, "compile", f"{model}:y", "--emit", "ptx")
    assert code == 0 and ".entry" in out and ".target sm_90" in out


def test_compile_errors(capsys, model):
    code, _, err = run_main(capsys, "compile", f"{model}:y", "--backend", "llvm",
                            "--emit", "cuda")
    assert_one_line_error(code, err, 1, "--emit cuda", "--backend cuda")
    code, _, err = run_main(capsys, "compile", f"{model}:f", "--emit", "asm")
    assert_one_line_error(code, err, 1, "numpy backend produces no machine code")


def test_compile_listing_needs_static_shapes(capsys, tmp_path):
    path = tmp_path / "dyn.py"
    path.write_text("import graphc as gc\nx = gc.placeholder((None, 3), name='x')\n"
                    "y = gc.exp(x)\n")
    code, _, err = run_main(capsys, "compile", f"{path}:y", "--emit", "listing")
    assert_one_line_error(code, err, 1, "call time")


# ---- cache ---------------------------------------------------------------------------------

def test_cache_info_and_clear_touch_only_graphc_entries(capsys, tmp_path):
    folder = tmp_path / "cache"
    cache = CompileCache(folder)
    assert cache.put("a" * 64, b"x" * 100, {})
    assert cache.put("b" * 64, b"y" * 50, {})
    (folder / "notes.txt").write_text("mine")
    (folder / ".tmp-123.partial").write_bytes(b"a writer at work")
    code, out, _ = run_main(capsys, "cache", "info", "--dir", str(folder))
    assert code == 0
    assert f"folder: {folder}" in out and "entries: 2" in out
    total = sum((folder / f"{k * 64}.gco").stat().st_size for k in "ab")
    assert f"size: {total} bytes" in out
    code, out, _ = run_main(capsys, "cache", "clear", "--dir", str(folder))
    assert code == 0 and "removed 2 entries" in out
    assert sorted(p.name for p in folder.iterdir()) == [".tmp-123.partial", "notes.txt"]
    assert cache.get("a" * 64) is None
    code, out, _ = run_main(capsys, "cache", "info", "--dir", str(folder))
    assert "entries: 0" in out


def test_cache_uses_graphc_cache_dir_and_reports_a_switched_off_cache(capsys, tmp_path,
                                                                       monkeypatch):
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / "c"))
    code, out, _ = run_main(capsys, "cache", "info")
    assert code == 0 and f"folder: {tmp_path / 'c'}" in out and "entries: 0" in out
    monkeypatch.setenv("GRAPHC_CACHE", "0")
    code, _, err = run_main(capsys, "cache", "clear")
    assert_one_line_error(code, err, 1, "switched off")


# ---- help and packaging --------------------------------------------------------------------

@pytest.mark.parametrize("command", [[], ["show"], ["table"], ["compile"], ["cache"],
                                     ["bench"]])
def test_every_command_has_help(capsys, command):
    code, out, _ = run_main(capsys, *command, "--help")
    assert code == 0 and out.startswith("usage: graphc")


def test_console_script_is_declared_in_setup_cfg():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    scripts = cfg["options.entry_points"]["console_scripts"].split("\n")
    assert "graphc = graphc.cli:main" in [s.strip() for s in scripts]
    module, _, attr = "graphc.cli:main".partition(":")  # it names a real function
    assert getattr(importlib.import_module(module), attr) is main
    assert "graphc.cli" in cfg["options"]["packages"].split()


# ---- end to end, in a subprocess -----------------------------------------------------------

def graphc(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "graphc", *argv], capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})})


@pytest.mark.slow
def test_subprocess_show_table_compile_cache(model, tmp_path):
    r = graphc("show", f"{model}:build")
    assert r.returncode == 0 and "%W" in r.stdout and r.stderr == ""
    r = graphc("table", "--format", "latex")
    assert r.returncode == 0 and r.stdout.startswith(r"\begin{tabular}")
    r = graphc("compile", f"{model}:y", "--backend", "numpy", "--emit", "listing")
    assert r.returncode == 0 and "gemm" in r.stdout
    folder = tmp_path / "cache"
    r = graphc("compile", f"{model}:y", "--emit", "ir", env={"GRAPHC_CACHE_DIR": str(folder)})
    assert r.returncode == 0 and "define" in r.stdout
    count = len(list(folder.glob("*.gco")))  # the program's entry and its kernels' (llvm)
    assert count >= 2
    r = graphc("cache", "info", env={"GRAPHC_CACHE_DIR": str(folder)})
    assert r.returncode == 0 and f"entries: {count}\n" in r.stdout
    r = graphc("cache", "clear", env={"GRAPHC_CACHE_DIR": str(folder)})
    assert r.returncode == 0 and f"removed {count} entries" in r.stdout
    assert not list(folder.glob("*.gco"))


@pytest.mark.slow
@pytest.mark.parametrize("argv, code, word", [
    (["show", "nowhere.py:y"], 2, "no such file"),
    (["show", "{model}:nothing"], 2, "no name"),
    (["show", "{model}:y", "--format", "jpeg"], 2, "invalid choice"),
    (["compile", "{model}:y", "--backend", "numpy", "--emit", "ptx"], 1, "--backend cuda"),
    (["show", "{model}:broken"], 1, "no model today"),
    (["launch"], 2, "invalid choice"),
])
def test_subprocess_errors_are_one_line_without_traceback(model, argv, code, word):
    r = graphc(*[a.format(model=model) for a in argv])
    assert r.returncode == code
    assert r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and word in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_subprocess_help_and_bench_help():
    r = graphc("--help")
    assert r.returncode == 0 and all(c in r.stdout for c in ("show", "table", "compile",
                                                               "cache", "bench"))
    r = graphc("bench", "--", "--help")  # the benchmark script's own help
    assert r.returncode == 0 and "--repeat" in r.stdout
