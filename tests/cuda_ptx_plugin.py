"""A pytest plugin that renders every program the tests run as CUDA C, for
benchmarks/cuda_suite_ptx.py to compile and assemble:
    pytest -p cuda_ptx_plugin --cuda-ptx-dir=DIR tests/test_x.py ...
or, with the README's own test command, GRAPHC_CUDA_PTX_DIR=DIR (tests/conftest.py then
loads this plugin; .ci/run does not yet: docs/cuda-backend.md).
Each program a test calls (any backend; once per set of input shapes) is scheduled with the
cuda backend's policy and rendered; DIR gets one file per distinct source (named by its
hash), made-by-<worker>.tsv the test that first ran each (a line "<file>\t<test id>"), and
render-errors-<worker>.txt the programs that failed to render. Under pytest-xdist every
worker writes files of its own (sources by a name of their own first), so `-n auto` needs
no locking; a program run in several workers is rendered by the first to claim it (an
empty file under DIR/claimed, created atomically)."""
from __future__ import annotations

import hashlib
import os
import traceback
import types
from pathlib import Path
from typing import Any

_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")
# the test running now, which made what is rendered (a dict: the functions below run with a
# copy of this module's globals)
_now = {"test": "(collection)"}


def pytest_addoption(parser: Any) -> None:
    parser.addoption("--cuda-ptx-dir", default=None,
                     help="render every program the tests run as CUDA C into this folder")


_OWN = ("exe", "program", "folder", "seen", "fingerprint")  # the recorder's own attributes


class _Recorder:
    """Wraps an executable: renders its program for each new set of argument shapes."""

    def __init__(self, exe: Any, program: Any, folder: Path) -> None:
        self.exe, self.program, self.folder = exe, program, folder
        self.seen: set[tuple] = set()
        self.fingerprint: str | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.exe, name)

    # (writes go to the executable too: a test that replaces one of its methods with a spy,
    # f._exe._get = ..., must see the executable's own calls through it)
    def __setattr__(self, name: str, value: Any) -> None:
        if name in _OWN:
            object.__setattr__(self, name, value)
        else:
            setattr(self.exe, name, value)

    def __delattr__(self, name: str) -> None:
        if name in _OWN:
            object.__delattr__(self, name)
        else:
            delattr(self.exe, name)

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
        from graphc.fingerprint import graph_fingerprint
        from graphc.schedule import schedule_graph
        # (a program run again, on another backend or by another test, is rendered once:
        # its structure's hash is the disk cache's, far cheaper than scheduling)
        if self.fingerprint is None:
            try:
                self.fingerprint = graph_fingerprint(self.program.graph)[0]
            except Exception:  # (an attribute it cannot encode: render this one every time)
                self.fingerprint = f"unhashed {id(self)}"
        if (self.fingerprint, shapes) in _rendered:
            return
        _rendered.add((self.fingerprint, shapes))
        if not self.fingerprint.startswith("unhashed ") and not _claim(
                self.folder, f"{self.fingerprint}|{shapes}"):
            return  # another xdist worker renders it
        try:
            source = render(schedule_graph(self.program.graph, list(shapes),
                                           policy=CUDA_POLICY)).source
        except Exception:  # a program the renderer cannot take: a finding
            with open(self.folder / f"render-errors-{_WORKER}.txt", "a") as f:
                f.write(f"{_now['test']}\n{traceback.format_exc()}\n")
            return
        digest = hashlib.sha256(source.encode()).hexdigest()[:24]
        path = self.folder / f"{digest}.cu"
        if digest in _written:
            return
        _written.add(digest)
        if not path.exists():
            tmp = path.with_name(f"{digest}.{_WORKER}.tmp")
            tmp.write_text(source)
            tmp.replace(path)
        with open(self.folder / f"made-by-{_WORKER}.tsv", "a") as f:
            f.write(f"{path.name}\t{_now['test']}\n")


def _claim(folder: Path, key: str) -> bool:
    """Whether this process is the first of the run's processes to claim `key` (a file of
    its own, created atomically under folder/claimed): under pytest-xdist each program is
    then scheduled and rendered by one worker only."""
    claims = folder / "claimed"
    claims.mkdir(exist_ok=True)
    name = hashlib.sha256(key.encode()).hexdigest()[:32]
    try:
        os.close(os.open(claims / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


_written: set[str] = set()  # sources this process has written
_rendered: set[tuple] = set()  # (program structure, input shapes) this process has rendered


def pytest_runtest_protocol(item: Any, nextitem: Any) -> None:
    _now["test"] = item.nodeid


def pytest_configure(config: Any) -> None:
    folder = config.getoption("--cuda-ptx-dir", default=None) or os.environ.get(
        "GRAPHC_CUDA_PTX_DIR")
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
