"""The LLVM backend: the kernel schedule rendered as LLVM IR, compiled with llvmlite, called
through one native entry point (llvmlite is imported only when this backend is used)."""
from __future__ import annotations

from graphc.backends.llvm.backend import LLVM_POLICY, LLVMBackend

BACKEND = LLVMBackend()

__all__ = ["BACKEND", "LLVMBackend", "LLVM_POLICY"]
