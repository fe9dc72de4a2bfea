"""Threads for generated code: how many (GRAPHC_NUM_THREADS), and libgomp, whose
GOMP_parallel runs a kernel's parts on a team (GRAPHC_NO_OPENMP=1: never load it)."""
from __future__ import annotations

import ctypes
import functools
import os


def count_setting(name: str) -> int | None:
    """The environment variable `name` as a count (at least 1), or None where it is unset;
    a ValueError naming it when it is not a number."""
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        return max(1, int(value))
    except ValueError:
        raise ValueError(f"{name} must be a positive integer, not {value!r}") from None


def num_threads() -> int:
    """GRAPHC_NUM_THREADS, else the cores this process may run on (its share of them when
    an MPI job runs several processes on this machine)."""
    threads = count_setting("GRAPHC_NUM_THREADS")
    if threads is not None:
        return threads
    try:
        cores = max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        cores = max(1, os.cpu_count() or 1)
    # Processes of one job that the launcher did not bind to cores of their own share all
    # of them (torchrun likewise sets one thread per process): teams that spin would fight.
    from graphc.distributed.comm import local_size
    local = local_size()
    if local > 1 and cores >= (os.cpu_count() or cores):
        cores = max(1, cores // local)
    return cores


# A flag the generated code reads before it starts a team of threads: libgomp's thread pool
# does not survive fork(), so a forked child (multiprocessing's default start method) runs
# its GEMMs on one thread instead of hanging in GOMP_parallel.
PARALLEL_FLAG = "graphc_gemm_parallel_ok"
_parallel_ok = ctypes.c_int32(1)
# And a flag of each module's own, which the runtime clears while one thread is faster
# (other processes keeping the cores busy: see adaptive.ThreadChooser).
MODULE_FLAG = "graphc_module_threads"


def module_flag(module_name: str) -> str:
    """The name of a module's own thread flag (one per module: parts link together)."""
    return f"{MODULE_FLAG}_{module_name}"


def emit_team_condition(module, b):
    """i1: may this module start a team of threads now (both flags set)?"""
    from llvmlite import ir
    i32 = ir.IntType(32)
    shared = module.globals.get(PARALLEL_FLAG)
    if shared is None:
        shared = ir.GlobalVariable(module, i32, PARALLEL_FLAG)
        shared.linkage = "external"
    name = module_flag(module.name)
    own = module.globals.get(name)
    if own is None:
        own = ir.GlobalVariable(module, i32, name)
        own.initializer = ir.Constant(i32, 1)
    zero = ir.Constant(i32, 0)
    return b.and_(b.icmp_signed("!=", b.load(shared, typ=i32), zero),
                  b.icmp_signed("!=", b.load(own, typ=i32), zero))


def _after_fork_in_child() -> None:
    _parallel_ok.value = 0


@functools.lru_cache(maxsize=1)
def openmp_available() -> bool:
    """Loads libgomp into the process (for the JIT's symbol lookup); False if it can't, or
    if GRAPHC_NO_OPENMP is set (non-empty)."""
    if os.environ.get("GRAPHC_NO_OPENMP"):
        return False
    import llvmlite.binding as llvm
    from graphc.backends.llvm.jit import load_system_library
    if not load_system_library("gomp", "libgomp.so.1"):
        return False
    if not all(llvm.address_of_symbol(s) for s in
               ("GOMP_parallel", "omp_get_thread_num", "omp_get_num_threads")):
        return False
    llvm.add_symbol(PARALLEL_FLAG, ctypes.addressof(_parallel_ok))
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)
    return True


def thread_config() -> str:
    """What generated code depends on at run time besides its source: the thread count
    and whether libgomp is there (a compile-cache key part)."""
    threads = num_threads()
    return repr((threads, openmp_available() if threads > 1 else False))
