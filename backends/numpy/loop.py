"""The numpy kernel runner's Loop: the body's kernels run once per step, its buffers views."""
from __future__ import annotations

from typing import TYPE_CHECKING

from graphc.schedule import ir

if TYPE_CHECKING:
    from graphc.backends.numpy.kernels import KernelRunner


def run_loop(runner: KernelRunner, k: ir.Loop) -> None:
    """Each step binds the body's inputs and outputs to views of the outer buffers (a
    sequence's step t, a carry's half of its double buffer) and runs the body's kernels."""
    from graphc.backends.numpy.kernels import KernelRunner
    body = runner.loops.get(id(k))
    if body is None:  # planned once, its arena reused by every step
        body = runner.loops[id(k)] = KernelRunner(k.body)
    arrays, inner = runner.arrays, body.arrays
    for v in k.invariants:
        inner[v.inner] = arrays[v.outer].reshape(k.body.buffers[v.inner].shape)
    for step in range(k.length):
        t = k.length - 1 - step if k.reverse else step
        last_writes_final = (k.length - 1 - step) % 2 == 0
        for c in k.carries:
            out, before = (c.final, c.spare) if last_writes_final else (c.spare, c.final)
            inner[c.inside] = arrays[c.init if step == 0 else before]
            inner[c.out] = arrays[out]
        for x in k.xs:
            inner[x.inner] = arrays[x.outer][t, ...]  # (a view, also of one element)
        for y in k.ys:
            inner[y.inner] = arrays[y.outer][t, ...]
        for kernel in k.body.kernels:
            body.run_kernel(kernel)
