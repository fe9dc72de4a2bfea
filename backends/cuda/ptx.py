"""CUDA C to PTX and to sm_XX machine code without a GPU: NVRTC (the nvidia-cuda-nvrtc
wheel, or a system libnvrtc) through ctypes, or nvcc where it is installed; and what ptxas
reports per kernel (registers, shared memory, spills)."""
from __future__ import annotations

import ctypes
import functools
import glob
import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

ARCH = "sm_90"
# 177: a variable declared and never used (a kernel's pointer table entries)
_NVCC_FLAGS = ("-std=c++17", "-diag-suppress", "177")


@functools.lru_cache(maxsize=1)
def _nvrtc() -> ctypes.CDLL | None:
    """libnvrtc: from the nvidia-cuda-nvrtc wheel if installed, else the system's; None."""
    candidates: list[str] = []
    spec = importlib.util.find_spec("nvidia")
    for root in (spec.submodule_search_locations or []) if spec else []:
        candidates += sorted(glob.glob(os.path.join(root, "*", "lib", "libnvrtc.so*")))
    candidates += ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"]
    for name in candidates:
        if "builtins" in name:
            continue
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def nvrtc_version() -> tuple[int, int] | None:
    lib = _nvrtc()
    if lib is None:
        return None
    major, minor = ctypes.c_int(), ctypes.c_int()
    lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    return major.value, minor.value


def nvcc() -> str | None:
    return shutil.which("nvcc")


def available() -> bool:
    """Whether CUDA C can be compiled here (NVRTC or nvcc)."""
    return _nvrtc() is not None or nvcc() is not None


def _log(lib: ctypes.CDLL, prog: ctypes.c_void_p) -> str:
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value + 1)
    lib.nvrtcGetProgramLog(prog, log)
    return log.value.decode(errors="replace")


def _check(lib: ctypes.CDLL, prog: ctypes.c_void_p, result: int, what: str) -> None:
    if result != 0:
        raise RuntimeError(f"NVRTC {what} failed ({result}):\n{_log(lib, prog)}")


def nvrtc_compile(source: str, arch: str = ARCH, cubin: bool = False,
                  verbose: bool = False) -> bytes:
    """PTX for compute_XX (or, with `cubin`, machine code for sm_XX) of `source`."""
    return nvrtc_build(source, arch, cubin, verbose)[0]


def nvrtc_build(source: str, arch: str = ARCH, cubin: bool = False,
                verbose: bool = False) -> tuple[bytes, str]:
    """nvrtc_compile's output and NVRTC's log (with `verbose`, its ptxas's report)."""
    lib = _nvrtc()
    if lib is None:
        raise RuntimeError("NVRTC is not installed: pip install nvidia-cuda-nvrtc")
    prog = ctypes.c_void_p()
    _check(lib, prog, lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(),
                                             b"graphc.cu", 0, None, None), "create")
    try:
        target = arch if cubin else arch.replace("sm_", "compute_")
        opts = [f"--gpu-architecture={target}".encode(), b"-std=c++17",
                b"--diag-suppress=177"] + ([b"--ptxas-options=-v"] if verbose else [])
        array = (ctypes.c_char_p * len(opts))(*opts)
        _check(lib, prog, lib.nvrtcCompileProgram(prog, len(opts), array), "compile")
        get_size, get = ((lib.nvrtcGetCUBINSize, lib.nvrtcGetCUBIN) if cubin
                         else (lib.nvrtcGetPTXSize, lib.nvrtcGetPTX))
        size = ctypes.c_size_t()
        _check(lib, prog, get_size(prog, ctypes.byref(size)), "output size")
        out = ctypes.create_string_buffer(size.value)
        _check(lib, prog, get(prog, out), "output")
        return (out.raw if cubin else out.raw.rstrip(b"\0")), _log(lib, prog)
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


def nvcc_ptx(source: str, arch: str = ARCH) -> str:
    exe = nvcc()
    if exe is None:
        raise RuntimeError("nvcc is not installed")
    with tempfile.TemporaryDirectory(prefix="graphc-cuda-") as tmp:
        cu, out = Path(tmp) / "graphc.cu", Path(tmp) / "graphc.ptx"
        cu.write_text(source)
        done = subprocess.run([exe, "--ptx", f"-arch={arch}", *_NVCC_FLAGS, str(cu), "-o",
                               str(out)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"nvcc failed:\n{done.stderr[-4000:]}")
        return out.read_text()


def to_ptx(source: str, arch: str = ARCH, tool: str | None = None) -> str:
    """The PTX of `source`: by `tool` ("nvrtc" or "nvcc"; default NVRTC, else nvcc)."""
    if tool is None:
        tool = "nvrtc" if _nvrtc() is not None else "nvcc"
    if tool == "nvrtc":
        return nvrtc_compile(source, arch).decode()
    if tool == "nvcc":
        return nvcc_ptx(source, arch)
    raise ValueError(f"tool: {tool!r} is not 'nvrtc' or 'nvcc'")


@dataclass(frozen=True)
class KernelStats:
    """What ptxas reports of one kernel."""

    name: str
    registers: int
    shared_bytes: int
    spill_stores: int
    spill_loads: int
    stack_bytes: int


_FUNCTION = re.compile(r"Compiling entry function '(\w+)'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill "
                    r"loads")
_REGS = re.compile(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?")


def ptxas_version() -> tuple[int, int] | None:
    exe = shutil.which("ptxas")
    if exe is None:
        return None
    out = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"release (\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def assemble(ptx: str, arch: str = ARCH) -> list[KernelStats]:
    """Assembles `ptx` with ptxas for `arch` (RuntimeError with its message if it refuses)
    and returns each kernel's registers, shared memory and spills."""
    exe = shutil.which("ptxas")
    if exe is None:
        raise RuntimeError("ptxas is not installed (it comes with the CUDA toolkit)")
    with tempfile.TemporaryDirectory(prefix="graphc-cuda-") as tmp:
        path = Path(tmp) / "graphc.ptx"
        path.write_text(ptx)
        done = subprocess.run([exe, f"-arch={arch}", "-v", str(path), "-o",
                               str(Path(tmp) / "graphc.cubin")],
                              capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ptxas failed:\n{done.stderr[-4000:]}")
    return parse_ptxas(done.stderr + done.stdout)


def parse_ptxas(text: str) -> list[KernelStats]:
    stats: list[KernelStats] = []
    name, frame = None, (0, 0, 0)
    for line in text.splitlines():
        m = _FUNCTION.search(line)
        if m:
            name = m.group(1)
            continue
        m = _FRAME.search(line)
        if m and name:
            frame = (int(m.group(1)), int(m.group(2)), int(m.group(3)))
            continue
        m = _REGS.search(line)
        if m and name:
            stats.append(KernelStats(name, int(m.group(1)), int(m.group(2) or 0), frame[1],
                                     frame[2], frame[0]))
            name, frame = None, (0, 0, 0)
    return stats


def nvrtc_assemble(source: str, arch: str = ARCH) -> list[KernelStats]:
    """Compiles `source` to machine code for `arch` by NVRTC alone (its own ptxas, in this
    process; one compilation, where check_source makes the PTX text first) and returns
    what its ptxas reports of each kernel. RuntimeError if it refuses the source."""
    _, log = nvrtc_build(source, arch, cubin=True, verbose=True)
    return parse_ptxas(log)


def ptx_assembles_here(ptx: str) -> bool:
    """Whether this ptxas reads `ptx`'s version (NVRTC may be newer than the toolkit)."""
    m = re.search(r"^\.version (\d+)\.(\d+)", ptx, re.M)
    have = ptxas_version()
    if m is None or have is None:
        return False
    # PTX ISA 9.0 came with CUDA 13.0: CUDA 13.x reads up to 9.x
    return (int(m.group(1)), int(m.group(2))) <= (have[0] - 4, have[1])


def check_source(source: str, arch: str = ARCH,
                 assembler: str = "ptxas") -> tuple[str, list[KernelStats], str]:
    """Compiles `source` to PTX and assembles it for `arch`: the PTX, the assembler's report
    and how. The toolkit's ptxas when it reads the PTX (NVRTC's, or else nvcc's); without
    a toolkit, or with assembler="nvrtc" (faster: no processes), NVRTC's own ptxas
    (machine code for `arch`, reported by NVRTC)."""
    if assembler not in ("ptxas", "nvrtc"):
        raise ValueError(f"assembler: {assembler!r} is not 'ptxas' or 'nvrtc'")
    ptx = to_ptx(source, arch) if _nvrtc() is not None else ""
    if assembler == "nvrtc" and ptx:
        _, log = nvrtc_build(source, arch, cubin=True, verbose=True)
        return ptx, parse_ptxas(log), "nvrtc (its ptxas)"
    if ptx and ptx_assembles_here(ptx):
        return ptx, assemble(ptx, arch), "nvrtc + ptxas"
    if nvcc() is not None and shutil.which("ptxas"):
        ptx = nvcc_ptx(source, arch)
        return ptx, assemble(ptx, arch), "nvcc + ptxas"
    _, log = nvrtc_build(source, arch, cubin=True, verbose=True)
    return ptx, parse_ptxas(log), "nvrtc (its ptxas)"
