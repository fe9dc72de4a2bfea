"""The LLVM backend: the kernel schedule rendered as LLVM IR, compiled with llvmlite, called
through one native entry point (llvmlite is imported only when this backend is used)."""
from __future__ import annotations


def compile(graph, options: dict | None = None):  # noqa: A001 (the backend interface's name)
    """options: cache_dir (a folder for the compile cache; None or "" switches it off;
    default from GRAPHC_CACHE_DIR / GRAPHC_CACHE, see graphc.backends.llvm.cache)."""
    return compile_program(_Program(graph), options)


class _Program:
    """An already optimized graph, as compile_program wants it."""

    def __init__(self, graph) -> None:
        self.raw_graph = self.graph = graph
        self.pass_names = ()


def compile_program(program, options: dict | None = None):
    """The program: gc.function's Function (raw_graph; graph, optimized on first use;
    pass_names). On a warm start the code comes from the disk cache, keyed by the raw
    graph's fingerprint, and the optimizer never runs."""
    from graphc.backends.llvm.runtime import LLVMExecutable
    options = dict(options or {})
    unknown = set(options) - {"cache_dir", "optimize"}
    if unknown:
        raise ValueError(f"backend_options: unknown options for llvm: {sorted(unknown)}")
    return LLVMExecutable(program, options)
