"""The emulator: the generated CUDA C compiled by the host's C++ compiler against
emulator.h, loaded with ctypes, its launches run in order on the CPU (no GPU needed)."""
from __future__ import annotations

import ctypes
import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

HEADER = Path(__file__).parent / "emulator.h"
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


def compile_library(source: str) -> bytes:
    """The shared library of `source` (a program's CUDA C) built against the header."""
    with tempfile.TemporaryDirectory(prefix="graphc-cuda-emu-") as tmp:
        cu = Path(tmp) / "program.cpp"
        cu.write_text(source)
        so = Path(tmp) / "program.so"
        cmd = [compiler(), *FLAGS, "-include", str(HEADER), str(cu), "-o", str(so)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"cuda emulator: the host compiler rejected the generated "
                               f"code:\n{done.stderr[-4000:]}")
        return so.read_bytes()


class Library:
    """A loaded emulation library: its kernels by name and its launcher."""

    def __init__(self, code: bytes) -> None:
        # dlopen needs a file: a private one, removed once loaded
        fd, path = tempfile.mkstemp(prefix="graphc-cuda-emu-", suffix=".so")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(code)
            self.lib = ctypes.CDLL(path)
        finally:
            os.unlink(path)
        self.launch = self.lib.gc_emu_launch
        self.launch.restype = ctypes.c_int
        self.launch.argtypes = [ctypes.c_void_p] + [ctypes.c_uint] * 4 + [
            ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint]
        self.error = self.lib.gc_emu_error
        self.error.restype = ctypes.c_char_p
        self._kernels: dict[str, int] = {}

    def kernel(self, name: str) -> int:
        address = self._kernels.get(name)
        if address is None:
            address = self._kernels[name] = ctypes.cast(getattr(self.lib, name),
                                                        ctypes.c_void_p).value or 0
        return address
