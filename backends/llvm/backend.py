"""The llvm backend as a Backend: its scheduling policy, its option checks, its cache id."""
from __future__ import annotations

import functools
import os
from typing import Any, Mapping

from graphc.program import Program
from graphc.schedule.policy import SchedulePolicy

# Implicit GEMMs this shallow are direct convolutions (backends/llvm/conv_direct.py):
# measured in docs/performance.md (W5's first convolution, depth 25). Stride 2 too, now
# that its weight gradient reads the padded image's rows at stride 2 in place (gemm_dot)
# instead of its columns stored by an im2col copy (W6's stride-2 convolution: 1.74 ->
# 1.48 ms on two threads, forward, pad and weight gradient).
DIRECT_CONV_DEPTH = 288
DIRECT_CONV_STRIDE = 2

# GEMMs narrower than a vector tile (32 float32 columns) are turned around; fused chains
# stay under 48 ops, which keeps kernel bodies (and LLVM's time on them) bounded.
LLVM_POLICY = SchedulePolicy(narrow_gemm=32, max_fused_depth=48, implicit_gemm=True,
                             implicit_deep_gemm=True, implicit_outer_gemm=True,
                             direct_conv_depth=DIRECT_CONV_DEPTH,
                             direct_conv_stride=DIRECT_CONV_STRIDE)


# How sizes known at call time are compiled: "symbolic", one program for every binding
# (graphc/schedule/symbolic.py; programs it cannot take are specialised), "specialize", a
# module per set of input shapes, or "auto" (the default), symbolic except for programs
# measured faster specialised (docs/sizes.md). GRAPHC_SIZES sets the default.
SIZES = ("auto", "symbolic", "specialize")


def default_sizes() -> str:
    return os.environ.get("GRAPHC_SIZES", "auto")


@functools.lru_cache(maxsize=1)
def target_id() -> str:
    """The backend's id in cache keys: its name, llvmlite's and LLVM's versions, and the
    host (triple, CPU, features), which all change the object code."""
    import llvmlite
    import llvmlite.binding as llvm

    from graphc.backends.llvm.jit import host_description
    return f"llvm|{llvmlite.__version__}|{llvm.llvm_version_info}|{host_description()}"


class LLVMBackend:
    """Native CPU code through llvmlite (imported only when a program is compiled)."""

    name = "llvm"
    policy: SchedulePolicy = LLVM_POLICY

    def compile(self, program: Program, options: Mapping[str, Any] | None = None):
        """options: cache_dir (a folder for the compile cache; None or "" switches it off;
        default from GRAPHC_CACHE_DIR / GRAPHC_CACHE, see graphc.runtime.cache). On a warm
        start the code comes from the disk cache, keyed by the raw graph's fingerprint, and
        the optimizer never runs."""
        from graphc.backends.llvm.runtime import LLVMExecutable
        options = dict(options or {})
        unknown = set(options) - {"cache_dir", "optimize", "sizes"}
        if unknown:
            raise ValueError(f"backend_options: unknown options for llvm: {sorted(unknown)}")
        sizes = options.get("sizes", default_sizes())
        if sizes not in SIZES:
            raise ValueError("backend_options: sizes must be 'auto' (the default: one "
                             "program for every size, except where a program specialised "
                             "to the shapes was measured faster), 'symbolic' (one program "
                             "for every size) or 'specialize' (one program per input "
                             f"shapes), not {sizes!r}")
        return LLVMExecutable(program, options, self.policy)
