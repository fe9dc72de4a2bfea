"""Backends: numpy (the reference interpreter), llvm (native CPU), cuda (CuPy)."""
