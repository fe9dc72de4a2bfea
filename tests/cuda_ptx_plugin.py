"""A pytest plugin that renders every program the tests run as CUDA C, for
benchmarks/cuda_suite_ptx.py to compile and assemble:
    pytest -p cuda_ptx_plugin --cuda-ptx-dir DIR tests/test_x.py ...
Each program a test calls (any backend; once per set of input shapes) is scheduled with the
cuda backend's policy and rendered when the session ends; DIR gets one file per distinct
source (named by its hash), and render-errors.txt lists the programs that failed to
render."""
from __future__ import annotations

import hashlib
import traceback
import types
from pathlib import Path
from typing import Any


def pytest_addoption(parser: Any) -> None:
    parser.addoption("--cuda-ptx-dir", default=None,
                     help="render every program the tests run as CUDA C into this folder")


# (recorder, shapes) to render when the session ends: rendering while the tests run would
# make interned nodes first, and tests that read where a node was built would see the plugin
_PENDING: list = []


class _Recorder:
    """Wraps an executable: renders its program for each new set of argument shapes."""

    def __init__(self, exe: Any, program: Any, folder: Path) -> None:
        self.exe, self.program, self.folder = exe, program, folder
        self.seen: set[tuple] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.exe, name)

    @property
    def source(self) -> str:
        return self.exe.source

    def run(self, args):
        shapes = tuple(tuple(a.shape) for a in args)
        if shapes not in self.seen:
            self.seen.add(shapes)
            _PENDING.append((self, shapes))
        return self.exe.run(args)

    def render(self, shapes: tuple) -> None:
        from graphc.backends.cuda import CUDA_POLICY
        from graphc.backends.cuda.render import render
        from graphc.schedule import schedule_graph
        try:
            source = render(schedule_graph(self.program.graph, list(shapes),
                                           policy=CUDA_POLICY)).source
        except Exception:  # a program the renderer cannot take: a finding
            with open(self.folder / "render-errors.txt", "a") as f:
                f.write(traceback.format_exc() + "\n")
            return
        digest = hashlib.sha256(source.encode()).hexdigest()[:24]
        path = self.folder / f"{digest}.cu"
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_text(source)
            tmp.replace(path)


def pytest_configure(config: Any) -> None:
    folder = config.getoption("--cuda-ptx-dir")
    if not folder:
        return
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    import importlib
    function = importlib.import_module("graphc.function")  # (gc.function is the builder)
    original = function.get_backend

    def get_backend(name: str) -> Any:
        return _Backend(original(name), out)

    function.get_backend = get_backend  # type: ignore[assignment]


class _Backend:
    def __init__(self, backend: Any, out: Path) -> None:
        self.backend, self.out = backend, out
        self.name, self.policy = backend.name, backend.policy

    def compile(self, program: Any, options: Any) -> Any:
        return _Recorder(self.backend.compile(program, options), program, self.out)


# Nodes made while a backend compiles (or an executable compiles per shape when first run)
# are attributed to the first frame outside graphc (the user's line): the plugin's frames in
# between must count as graphc's, or tests that read where nodes were built would see them.
_Backend.compile = types.FunctionType(  # type: ignore[method-assign]
    _Backend.compile.__code__, {"__name__": "graphc.cuda_ptx_plugin", "_Recorder": _Recorder})
_Recorder.run = types.FunctionType(  # type: ignore[method-assign]
    _Recorder.run.__code__, {"__name__": "graphc.cuda_ptx_plugin", "_PENDING": _PENDING,
                             "tuple": tuple})


def pytest_sessionfinish(session: Any) -> None:
    while _PENDING:
        recorder, shapes = _PENDING.pop(0)
        recorder.render(shapes)
