"""The emulator: the generated CUDA C compiled by the host's C++ compiler against
emulator.h, loaded with ctypes, its launches run in order on the CPU (no GPU needed) by the
emulator's runtime (emulator.cpp: compiled once, kept in the disk cache)."""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from graphc.runtime.cache import CompileCache, cache_key, default_dir

HEADER = Path(__file__).parent / "emulator.h"
RUNTIME = Path(__file__).parent / "emulator.cpp"
FLAGS = ("-std=c++17", "-O1", "-shared", "-fPIC", "-w", "-ffp-contract=off")


@functools.lru_cache(maxsize=1)
def compiler() -> str:
    """The host C++ compiler ($CXX, g++ or c++)."""
    for name in (os.environ.get("CXX"), "g++", "c++"):
        if name and shutil.which(name):
            return name
    raise RuntimeError("the cuda backend's emulator needs a C++ compiler (g++ or c++; "
                       "set CXX) and none was found")


@functools.lru_cache(maxsize=1)
def compiler_id() -> str:
    """The compiler's name and version line (part of the cache key)."""
    cxx = compiler()
    out = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=False)
    return f"{cxx}|{out.stdout.splitlines()[0] if out.stdout else ''}"


def compile_library(source: str, header: bool = True) -> bytes:
    """The shared library of `source` (a program's CUDA C, built against the header; or,
    header=False, C++ of its own)."""
    with tempfile.TemporaryDirectory(prefix="graphc-cuda-emu-") as tmp:
        cu = Path(tmp) / "program.cpp"
        cu.write_text(source)
        so = Path(tmp) / "program.so"
        include = ["-include", str(HEADER)] if header else []
        cmd = [compiler(), *FLAGS, *include, str(cu), "-o", str(so)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"cuda emulator: the host compiler rejected the generated "
                               f"code:\n{done.stderr[-4000:]}")
        return so.read_bytes()


def _load(code: bytes, mode: int = ctypes.DEFAULT_MODE) -> ctypes.CDLL:
    """A shared library from its bytes (dlopen needs a file: a private one, removed once
    loaded)."""
    fd, path = tempfile.mkstemp(prefix="graphc-cuda-emu-", suffix=".so")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(code)
        return ctypes.CDLL(path, mode=mode)
    finally:
        os.unlink(path)


_runtime_lock = threading.Lock()
# The runtime's scheduler state is global and ctypes releases the GIL: one launch at a time.
LAUNCH_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def runtime() -> ctypes.CDLL:
    """The emulator's runtime, loaded once a process with its symbols global (the programs'
    built-ins call into it): from the disk cache, or compiled there on first use."""
    text = RUNTIME.read_text()
    key = cache_key("cuda emulator runtime", (), compiler_id(),
                    hashlib.sha256(text.encode()).hexdigest())
    disk = CompileCache(default_dir())
    with _runtime_lock:
        hit = disk.get(key)
        code = hit[0] if hit is not None else None
        if code is None:
            code = compile_library(text, header=False)
            disk.put(key, code, {})
        lib = _load(code, ctypes.RTLD_GLOBAL)
    lib.gc_emu_launch.restype = ctypes.c_int
    lib.gc_emu_launch.argtypes = [ctypes.c_void_p] + [ctypes.c_uint] * 4 + [
        ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint]
    lib.gc_emu_error.restype = ctypes.c_char_p
    return lib


class Library:
    """A loaded program: its kernels by name, and the runtime's launcher."""

    def __init__(self, code: bytes) -> None:
        rt = runtime()  # first: the program links against its symbols
        self.lib = _load(code)
        self.launch = rt.gc_emu_launch
        self.error = rt.gc_emu_error
        self._kernels: dict[str, int] = {}

    def kernel(self, name: str) -> int:
        address = self._kernels.get(name)
        if address is None:
            address = self._kernels[name] = ctypes.cast(getattr(self.lib, name),
                                                        ctypes.c_void_p).value or 0
        return address
