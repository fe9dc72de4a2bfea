"""The CUDA backend: the kernel schedule rendered as CUDA C, run on a GPU through CuPy or on
the CPU by the emulator (backend_options={"emulate": True})."""
from __future__ import annotations

from graphc.backends.cuda.backend import CUDA_POLICY, CudaBackend

BACKEND = CudaBackend()

__all__ = ["BACKEND", "CudaBackend", "CUDA_POLICY"]
