"""The llvm backend's identity in cache keys: its name, toolchain and host."""
from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def target_id() -> str:
    """The backend's id in cache keys: its name, llvmlite's and LLVM's versions, and the
    host (triple, CPU, features), which all change the object code."""
    import llvmlite
    import llvmlite.binding as llvm

    from graphc.backends.llvm.jit import host_description
    return f"llvm|{llvmlite.__version__}|{llvm.llvm_version_info}|{host_description()}"
