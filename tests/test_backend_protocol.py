"""The backend protocol and registry (graphc/backend.py) and the program record
(graphc/program.py): every registered backend is a Backend, unknown and missing backends keep
their messages, a registered backend is loaded on first use, the optimizer runs once."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import graphc as gc
from graphc import backend as registry
from graphc.backend import Backend, Executable, backend_names, get_backend
from graphc.graph import Graph
from graphc.program import Program
from graphc.schedule.policy import SchedulePolicy


def _program() -> tuple[Program, np.ndarray]:
    x = gc.placeholder((3,), "float64", name="x")
    y = gc.exp(x) * 2.0 + 0.0
    return Program(Graph((x.node,), (y.node,), ()), ("canonicalize", "fold")), np.exp([0, 1, 2]) * 2


def _available() -> list[str]:
    names = []
    for name in backend_names():
        try:
            get_backend(name)
        except NotImplementedError:
            continue
        names.append(name)
    return names


def test_the_built_in_backends_are_registered_in_order():
    assert backend_names()[:3] == ("numpy", "llvm", "cuda")
    assert {"numpy", "llvm"} <= set(_available())


@pytest.mark.parametrize("name", _available())
def test_every_registered_backend_satisfies_the_protocol(name, tmp_path):
    backend = get_backend(name)
    assert isinstance(backend, Backend)
    assert backend.name == name
    assert isinstance(backend.policy, SchedulePolicy)
    assert get_backend(name) is backend  # loaded once
    program, want = _program()
    options = {"cache_dir": str(tmp_path)} if name in ("llvm", "cuda") else {}
    if name == "cuda":  # (runs where there is no GPU too)
        options["emulate"] = True
    exe = backend.compile(program, options)
    assert isinstance(exe, Executable)
    assert isinstance(exe.source, str)
    (got,) = exe.run([np.array([0.0, 1.0, 2.0])])
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_unknown_and_missing_backends_keep_their_messages():
    x = gc.placeholder((3,))
    with pytest.raises(ValueError, match=r"^backend: 'tpu' is not one of numpy, llvm, cuda$"):
        gc.function([x], x, backend="tpu")
    if "cuda" not in _available():
        with pytest.raises(NotImplementedError, match=r"^backend 'cuda' is not implemented "
                                                      r"yet; backend='numpy' runs every graph$"):
            gc.function([x], x, backend="cuda")


def test_backend_options_are_checked_by_each_backend():
    x = gc.placeholder((3,))
    for name in ("numpy", "llvm"):
        with pytest.raises(ValueError, match=rf"unknown options for {name}: \['colour'\]"):
            gc.function([x], x, backend=name, backend_options={"colour": 1})


class _Doubler:
    """A backend of the test's own: returns twice the optimized graph's first output."""

    name = "doubler"
    policy = SchedulePolicy()

    def __init__(self) -> None:
        self.programs: list[Program] = []

    def compile(self, program, options):
        self.programs.append(program)
        numpy_exe = get_backend("numpy").compile(program, {})

        class Exe:
            source = "doubled"

            def run(self, args):
                return [2 * out for out in numpy_exe.run(args)]
        return Exe()


def test_a_registered_backend_is_loaded_on_first_use(monkeypatch):
    loads: list[int] = []
    backend = _Doubler()
    monkeypatch.setitem(registry._REGISTRY, "doubler", lambda: loads.append(1) or backend)
    monkeypatch.setattr(registry, "_LOADED", dict(registry._LOADED))
    assert loads == []
    x = gc.placeholder((2,), "float64", name="x")
    f = gc.function([x], x + 1.0, backend="doubler")
    g = gc.function([x], x * 3.0, backend="doubler")
    assert loads == [1]
    np.testing.assert_array_equal(f(np.array([1.0, 2.0])), [4.0, 6.0])
    np.testing.assert_array_equal(g(np.array([1.0, 2.0])), [6.0, 12.0])
    assert backend.programs == [f.program, g.program]
    assert f.source == "doubled"


def test_the_program_record_optimizes_once_on_first_use():
    program, _ = _program()
    assert not program.is_optimized
    graphs = []
    threads = [threading.Thread(target=lambda: graphs.append(program.graph)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert program.is_optimized
    assert all(g is graphs[0] for g in graphs)
    assert [s.name for s in program.report.passes] == ["canonicalize", "fold"]
    assert program.pass_names == ("canonicalize", "fold")


def test_a_function_hands_its_backend_the_unoptimized_program():
    x = gc.placeholder((3,), "float64", name="x")
    f = gc.function([x], gc.exp(x), backend="numpy", optimize=False)
    assert f.program.raw_graph is f.raw_graph and f.program.pass_names == ()
    assert f.graph is f.program.graph
