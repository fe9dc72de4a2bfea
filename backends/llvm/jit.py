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


# Loops over small windows (pooling, im2col) were vectorized along their outermost axis
# with gathers and scatters once LLVM had unrolled the short inner loops: slower than
# scalar code. Costing gathers as expensive keeps the vectorizer on contiguous loops.
# LLVM's tuning for Intel's AVX-512 cores prefers 256-bit vectors in the loops it
# vectorizes (AMD's: 512): graphc's own vector code is 512-bit, and so are its loops now
# on either (Intel's W3 step a third faster).
EXTRA_FEATURES = ",+prefer-no-gather,+prefer-no-scatter,-prefer-256-bit"


def _new_machine(opt: int = 3):
    target = llvm.Target.from_default_triple()
    return target.create_target_machine(
        cpu=llvm.get_host_cpu_name(),
        features=llvm.get_host_cpu_features().flatten() + EXTRA_FEATURES,
        opt=opt, codemodel="jitdefault")


# Code generation of the light modules (explicit vector loops, already in the shape the
# machine runs) at LLVM's level 0: fast instruction selection, none of the machine-level
# loop and scheduling passes. Level 0 would also pick the fast register allocator, which
# spills every value live across blocks (a sum's vector accumulators, each iteration): the
# optimizing allocator is asked for instead, through an LLVM option (process-wide; it
# changes nothing at O3, where that allocator is the default). The middle end still runs
# with the O3 machine (an O0 machine's cost model there made a quarter more code).
_FAST_CODEGEN_OPTIONS = ("-optimize-regalloc",)
_fast_machines: dict[int, object] = {}  # per process id: a forked child makes its own


def fast_machine():
    """This process's target machine for the light modules' code generation."""
    import os
    pid = os.getpid()
    with _lock:
        if pid not in _fast_machines:
            if not _fast_machines:
                for option in _FAST_CODEGEN_OPTIONS:
                    llvm.set_option("graphc", option)
            _fast_machines[pid] = _new_machine(opt=0)
        return _fast_machines[pid]


def code_machine(light: bool, machine=None):
    """The target machine that emits a module's object code: `machine` (or a new O3 one)
    for O3 modules, this process's fast one for light modules."""
    return fast_machine() if light else machine or _new_machine()


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


# The first line of a module written as explicit vector loops (codegen: Unit.light).
LIGHT = "; graphc pipeline: light\n"


def is_light(texts: list[str]) -> bool:
    """Whether modules (linked into one) get the light pipeline: all of them ask for it."""
    return all(text.startswith(LIGHT) for text in texts)


# The first line of a module whose code LLVM's O1 pipeline makes as fast as O3's, in less
# time: the shared GEMM functions (gemm_library.py), vector code written out by graphc.
O1 = "; graphc pipeline: O1\n"


def speed_level(texts: list[str]) -> int:
    """The middle end's level for modules linked into one: 1 where all of them ask for O1."""
    return 1 if all(text.startswith(O1) for text in texts) else 3


def optimize_module(module: "llvm.ModuleRef", machine=None, light: bool = False,
                    level: int = 3) -> None:
    """O3 (or `level`) with loop and SLP vectorization; `light`: a few cheap passes for code
    that is vectorized already (vector_loop.py): InstCombine, CFG simplification and GVN (a
    body's repeated loads), about a twentieth of O3's time on W6's elementwise kernels."""
    pto = llvm.create_pipeline_tuning_options(speed_level=level)
    pto.loop_vectorization = True
    pto.slp_vectorization = True
    pb = llvm.create_pass_builder(machine or target_machine(), pto)
    if light:
        mpm = llvm.create_new_module_pass_manager()
        mpm.add_instruction_combine_pass()
        mpm.add_simplify_cfg_pass()
        mpm.add_new_gvn_pass()
        mpm.run(module, pb)
        return
    pb.getModulePassManager().run(module, pb)


def _object_of(ir_text: str | list[str], machine=None) -> tuple[bytes, float, float, float]:
    """One module, start to object code, in an LLVM context of its own (with `machine`, a
    target machine of this process's: making one per module costs time). A list of texts
    (modules defining distinct symbols) is linked into one module first: one object, and
    LLVM's fixed cost per module (~5 ms) paid once."""
    t0 = time.perf_counter()
    texts = [ir_text] if isinstance(ir_text, str) else ir_text
    context = llvm.create_context()
    module = llvm.parse_assembly(texts[0], context=context)
    for text in texts[1:]:
        module.link_in(llvm.parse_assembly(text, context=context))
    module.triple = llvm.get_default_triple()
    module.verify()
    t1 = time.perf_counter()
    machine = machine or _new_machine()
    light = is_light(texts)
    optimize_module(module, machine, light, speed_level(texts))
    t2 = time.perf_counter()
    obj = code_machine(light, machine).emit_object(module)
    return obj, t1 - t0, t2 - t1, time.perf_counter() - t2


def llvm_lock():
    """The lock llvmlite holds around every LLVM call (held while forking, so that no
    thread is inside LLVM as the child's copy is made); a no-op where llvmlite has none."""
    import contextlib
    from llvmlite.binding import ffi
    lock = getattr(getattr(ffi, "lib", None), "_lock", None)
    return lock if hasattr(lock, "__enter__") else contextlib.nullcontext()


def compile_parts(ir_texts: list[str], entry: str, times: CompileTimes | None = None):
    """Compiles modules that call each other and links their objects in one engine;
    returns (entry address, engine handle, the object files for the cache). One after the
    other: llvmlite serializes every LLVM call behind one process-wide lock, so parts
    compiled in threads would not overlap (measured)."""
    _init()
    times = times or CompileTimes()
    results = [_object_of(text) for text in ir_texts]
    objects = [r[0] for r in results]
    times.parse = sum(r[1] for r in results)
    times.optimize = sum(r[2] for r in results)
    times.jit = sum(r[3] for r in results)
    address, handle = load_objects(objects, entry)
    return address, handle, objects


def assembly(module: "llvm.ModuleRef", light: bool = False) -> str:
    """The module's machine code as text, generated as compile_parts generates it."""
    return code_machine(light, target_machine()).emit_assembly(module)


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


class UnresolvedSymbols(RuntimeError):
    """Objects to be linked in one engine that need symbols none of them defines and the
    process does not have either (MCJIT would leave the calls of all of them unresolved:
    elf_symbols.py)."""

    def __init__(self, names: list[str]) -> None:
        super().__init__("compiled objects need symbols no object defines: "
                         + ", ".join(names[:8]) + (" ..." if len(names) > 8 else ""))
        self.names = names


def unresolved(objects: list[bytes]) -> list[str]:
    """The symbols `objects` need that none of them defines and the process lacks (the C
    library, libm and libmvec, the runtime's registered symbols: llvm.add_symbol)."""
    from graphc.backends.llvm.elf_symbols import symbols
    defined: set[str] = set()
    needed: set[str] = set()
    for data in objects:
        has, wants = symbols(data)
        defined |= has
        needed |= wants
    return sorted(n for n in needed - defined if not llvm.address_of_symbol(n))


def load_objects(objects: list[bytes], entry: str):
    """An engine running compiled object code (parts that call each other); returns the
    entry's address and a handle that keeps engine and objects alive. UnresolvedSymbols
    where they need a symbol nothing defines (checked first: MCJIT would not say)."""
    _init()
    missing = unresolved(objects)
    if missing:
        raise UnresolvedSymbols(missing)
    engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), _new_machine())
    refs = []
    for data in objects:
        obj = llvm.ObjectFileRef.from_data(data)
        engine.add_object_file(obj)
        refs.append(obj)
    engine.finalize_object()
    # The engine reads the objects' memory: keep them (and their bytes) alive with it.
    return engine.get_function_address(entry), (engine, refs, objects)


def global_address(handle, name: str) -> int:
    """The address of a global variable in code from compile_parts or load_objects."""
    engine = handle[0] if isinstance(handle, tuple) else handle
    return engine.get_global_value_address(name)
