"""The LLVM backend: the kernel schedule rendered as LLVM IR, compiled with llvmlite, called
through one native entry point (llvmlite is imported only when this backend is used)."""
from __future__ import annotations


def compile(graph, options: dict | None = None):  # noqa: A001 (the backend interface's name)
    from graphc.backends.llvm.runtime import LLVMExecutable
    options = dict(options or {})
    unknown = set(options) - set()
    if unknown:
        raise ValueError(f"backend_options: unknown options for llvm: {sorted(unknown)}")
    return LLVMExecutable(graph, options)
