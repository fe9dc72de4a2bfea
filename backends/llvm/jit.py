"""llvmlite set-up (llvmlite 0.50 / LLVM 22): the host target machine, the O3 pipeline with
loop and SLP vectorization, and one JIT engine that native modules are added to."""
from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time
from dataclasses import dataclass, field

import llvmlite.binding as llvm

# The entry point of every generated module: i32 graphc_main(ptr buffers).
ENTRY = "graphc_main"

_lock = threading.Lock()
_state: dict = {}


_libraries: dict[str, bool] = {}


def load_system_library(name: str, soname: str) -> bool:
    """Makes a shared library's symbols visible to JIT code; True if it is loaded. The usual
    soname is tried first: ctypes.util.find_library can spend tens of ms asking ldconfig."""
    if name not in _libraries:
        loaded = False
        for candidate in (soname, None):
            path = candidate or ctypes.util.find_library(name)
            if not path:
                continue
            try:
                llvm.load_library_permanently(path)
                loaded = True
                break
            except RuntimeError:
                continue
        _libraries[name] = loaded
    return _libraries[name]


def _init() -> dict:
    with _lock:
        if not _state:
            llvm.initialize_native_target()
            llvm.initialize_native_asmprinter()
            machine = _new_machine()
            load_system_library("m", "libm.so.6")
            load_system_library("mvec", "libmvec.so.1")
            _state.update(machine=machine)
        return _state


def _new_machine():
    target = llvm.Target.from_default_triple()
    return target.create_target_machine(
        cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten(),
        opt=3, codemodel="jitdefault")


def target_machine():
    return _init()["machine"]


def host_description() -> str:
    """What compiled code depends on: triple, CPU and its features (a cache key part)."""
    _init()
    return f"{llvm.get_default_triple()}|{llvm.get_host_cpu_name()}|" \
           f"{llvm.get_host_cpu_features().flatten()}"


@dataclass
class CompileTimes:
    parse: float = 0.0
    optimize: float = 0.0
    jit: float = 0.0
    extra: dict = field(default_factory=dict)


def optimize_module(module: "llvm.ModuleRef") -> None:
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    pto.loop_vectorization = True
    pto.slp_vectorization = True
    pb = llvm.create_pass_builder(target_machine(), pto)
    pb.getModulePassManager().run(module, pb)


def compile_ir(ir_text: str, entry: str, times: CompileTimes | None = None,
               capture: list | None = None):
    """Parses, optimizes and JITs a module in an engine of its own; returns the entry
    function's address, the module and the engine (keep it alive while the code runs)."""
    state = _init()
    times = times or CompileTimes()
    t0 = time.perf_counter()
    module = llvm.parse_assembly(ir_text)
    module.triple = llvm.get_default_triple()
    module.verify()
    t1 = time.perf_counter()
    optimize_module(module)
    t2 = time.perf_counter()
    # An execution engine owns (and frees) its target machine: each gets its own.
    engine = llvm.create_mcjit_compiler(module, _new_machine())
    if capture is not None:  # the object code, for the disk cache
        engine.set_object_cache(notify_func=lambda mod, data: capture.append(bytes(data)))
    engine.finalize_object()
    address = engine.get_function_address(entry)
    times.parse, times.optimize, times.jit = t1 - t0, t2 - t1, time.perf_counter() - t2
    return address, module, engine


def assembly(module: "llvm.ModuleRef") -> str:
    return target_machine().emit_assembly(module)


def valid_object(data: bytes) -> bool:
    """Whether `data` is a whole x86-64 ELF relocatable object: every section inside it.
    (LLVM's loader trusts the offsets it reads: a cut-short object would crash it.)"""
    import struct
    if len(data) < 64 or data[:6] != b"\x7fELF\x02\x01":
        return False
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    if shentsize != 64 or shnum == 0 or shstrndx >= shnum or shoff + shnum * 64 > len(data):
        return False
    for i in range(shnum):
        kind, = struct.unpack_from("<I", data, shoff + i * 64 + 4)
        offset, size = struct.unpack_from("<QQ", data, shoff + i * 64 + 0x18)
        if kind != 8 and offset + size > len(data):  # 8: SHT_NOBITS (takes no bytes)
            return False
    return True


def load_object(data: bytes, entry: str):
    """An engine running previously compiled object code; returns (address, engine)."""
    _init()
    engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), _new_machine())
    obj = llvm.ObjectFileRef.from_data(data)
    engine.add_object_file(obj)
    engine.finalize_object()
    # The engine reads the object's memory: keep the object (and its bytes) alive with it.
    return engine.get_function_address(entry), (engine, obj, data)


def global_address(handle, name: str) -> int:
    """The address of a global variable in code from compile_ir or load_object."""
    engine = handle[0] if isinstance(handle, tuple) else handle
    return engine.get_global_value_address(name)
