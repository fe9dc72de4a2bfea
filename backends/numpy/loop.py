"""The numpy kernel runner's Loop: the body's kernels run once per step, its buffers views."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from graphc.schedule import ir

if TYPE_CHECKING:
    from graphc.backends.numpy.kernels import KernelRunner


def run_loop(runner: KernelRunner, k: ir.Loop) -> None:
    """Each step binds the body's inputs and outputs to views of the outer buffers (a
    sequence's step t, a carry's half of its double buffer) and runs the body's kernels."""
    from graphc.backends.numpy.kernels import KernelRunner
    body = runner.loops.get(id(k))
    if body is None:  # planned once; its temporaries in the loop's buffer, as native code
        arena = runner.arrays[k.arena].reshape(-1) if k.arena >= 0 else None
        body = runner.loops[id(k)] = KernelRunner(k.body, arena)
    arrays, inner = runner.arrays, body.arrays

    def seen(outer: int, bid: int, step: int | None = None) -> np.ndarray:
        """Outer buffer `outer` (or its step `step`) as body buffer `bid`: a view (the outer
        buffer may have another shape of the same size, a reshape of it)."""
        array = arrays[outer]
        if step is not None:
            array = array.reshape(k.length, -1)[step]
        return array.reshape(k.body.buffers[bid].shape)

    for v in k.invariants:
        inner[v.inner] = seen(v.outer, v.inner)
    for step in range(k.length):
        t = k.length - 1 - step if k.reverse else step
        last_writes_final = (k.length - 1 - step) % 2 == 0
        for c in k.carries:
            out, before = (c.final, c.spare) if last_writes_final else (c.spare, c.final)
            inner[c.inside] = seen(c.init if step == 0 else before, c.inside)
            inner[c.out] = seen(out, c.out)
        for s in k.xs + k.ys:
            inner[s.inner] = seen(s.outer, s.inner, t)
        for kernel in k.body.kernels:
            body.run_kernel(kernel)
