"""A pytest plugin that renders every program the tests run as CUDA C, for
benchmarks/cuda_suite_ptx.py to compile and assemble:
    pytest -p cuda_ptx_plugin --cuda-ptx-dir=DIR tests/test_x.py ...
Each program a test calls (any backend; once per set of input shapes) is scheduled with the
cuda backend's policy and rendered; DIR gets one file per distinct source (named by its
hash), and render-errors.txt lists the programs that failed to render."""
from __future__ import annotations

import hashlib
import traceback
import types
from pathlib import Path
from typing import Any


def pytest_addoption(parser: Any) -> None:
    parser.addoption("--cuda-ptx-dir", default=None,
                     help="render every program the tests run as CUDA C into this folder")


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
            self.render(shapes)
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


# Nodes are attributed to the first frame outside graphc (the user's line): the plugin's
# frames between graphc and a test (compiling, running, rendering) count as graphc's, or
# tests that read where nodes were built would see the plugin.
_AS_GRAPHC = dict(globals(), __name__="graphc.cuda_ptx_plugin")
for _cls, _name in ((_Backend, "compile"), (_Recorder, "run"), (_Recorder, "render")):
    _f = getattr(_cls, _name)
    setattr(_cls, _name, types.FunctionType(_f.__code__, _AS_GRAPHC, _f.__name__,
                                            _f.__defaults__, _f.__closure__))
