"""The LLVM backend: the kernel schedule rendered as LLVM IR, compiled with llvmlite, called
through one native entry point (llvmlite is imported only when this backend is used)."""
from __future__ import annotations


def compile(graph, options: dict | None = None):  # noqa: A001 (the backend interface's name)
    """options: cache_dir (a folder for the compile cache; None or "" switches it off;
    default from GRAPHC_CACHE_DIR / GRAPHC_CACHE, see graphc.backends.llvm.cache)."""
    from graphc.backends.llvm.runtime import LLVMExecutable
    options = dict(options or {})
    unknown = set(options) - {"cache_dir", "optimize"}
    if unknown:
        raise ValueError(f"backend_options: unknown options for llvm: {sorted(unknown)}")
    return LLVMExecutable(graph, options)
