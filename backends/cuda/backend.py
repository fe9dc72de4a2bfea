"""The cuda backend as a Backend: its options, its scheduling policy, and the check that a
GPU is there (or that the caller asked for the emulator)."""
from __future__ import annotations

from typing import Any, Mapping

from graphc.program import Program
from graphc.schedule.policy import SchedulePolicy

# No GEMM turned around (the tiles are square); fused chains bounded as on the CPU.
# (64 buffers: a kernel of every primitive and its gradient, 162 buffers merged into one,
# kept their pointers in registers and spilled 432 B)
CUDA_POLICY = SchedulePolicy(narrow_gemm=None, max_fused_depth=48, max_kernel_buffers=64)

OPTIONS = {"emulate", "outputs", "cache_dir", "optimize", "seed"}
NO_GPU = ("backend 'cuda': no CUDA GPU is available here ({why}); pass "
          "backend_options={{'emulate': True}} to run the generated CUDA C on the CPU "
          "(results as numpy arrays)")


def gpu_problem() -> str | None:
    """Why the CuPy runtime cannot run here, or None when it can."""
    try:
        import cupy
    except ImportError:
        return "CuPy is not installed: pip install graphc[cuda]"
    try:
        if not cupy.cuda.is_available():
            return "CuPy finds no device or driver"
    except Exception as exc:  # (CuPy raises its own CUDA errors)
        return f"CuPy: {exc}"
    return None


class CudaBackend:
    """NVIDIA GPUs through CuPy, or the CPU emulator of the same code."""

    name = "cuda"
    policy: SchedulePolicy = CUDA_POLICY

    def compile(self, program: Program, options: Mapping[str, Any] | None = None):
        """options: emulate (True: run on the CPU), outputs ("cupy", the default on a GPU,
        or "numpy"), cache_dir (as the llvm backend's), seed (emulator: a nonzero seed runs
        blocks in a shuffled order and threads in reverse, to show order dependence)."""
        from graphc.backends.cuda.runtime import CudaExecutable
        options = dict(options or {})
        unknown = set(options) - OPTIONS
        if unknown:
            raise ValueError(f"backend_options: unknown options for cuda: {sorted(unknown)}")
        emulate = options.get("emulate", False)
        if not isinstance(emulate, bool):
            raise ValueError(f"backend_options: 'emulate' must be True or False, got "
                             f"{emulate!r}")
        outputs = options.get("outputs", "numpy" if emulate else "cupy")
        if outputs not in ("cupy", "numpy"):
            raise ValueError(f"backend_options: 'outputs' must be 'cupy' or 'numpy', got "
                             f"{outputs!r}")
        if emulate and outputs != "numpy":
            raise ValueError("backend_options: the emulator returns numpy arrays "
                             "('outputs': 'cupy' needs a GPU)")
        seed = options.get("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2 ** 32:
            raise ValueError(f"backend_options: 'seed' must be an int in [0, 2**32), got "
                             f"{seed!r}")
        if not emulate:
            why = gpu_problem()
            if why is not None:
                raise RuntimeError(NO_GPU.format(why=why))
            from graphc.distributed.comm import size
            if size() > 1:  # each process of a job on its own GPU, before it allocates
                from graphc.backends.cuda.collective import use_local_device
                use_local_device()
        return CudaExecutable(program, options, self.policy)
