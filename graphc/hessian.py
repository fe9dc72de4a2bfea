"""Hessian blocks for several inputs: d^2 y / dx_i dx_j for every pair, as graphs."""
from __future__ import annotations

import math
from typing import Sequence

from graphc.autodiff import grad_nodes
from graphc.sizes import all_static
from graphc.errors import GradientError
from graphc.node import Node, static_shape
from graphc.ops import make
from graphc.ops.leaves import scalar_constant


def hessian_blocks(y: Node, xs: Sequence[Node]) -> list[list[Node]]:
    """H[i][j] = d^2 y / dxs[i] dxs[j], shaped xs[i].shape + xs[j].shape (known shapes).
    Row by row: each element of the gradient wrt xs[i] is differentiated once, wrt all xs."""
    for x in xs:
        if not all_static(x.shape):
            raise GradientError(f"hessian needs inputs of known shape, got {x.type}")
    shapes = [static_shape(x.shape) for x in xs]  # all known (above)
    grads = grad_nodes(y, list(xs))
    blocks: list[list[Node]] = []
    for i, gi in enumerate(grads):
        flat = make("reshape", gi, shape=(-1,))
        n = math.prod(shapes[i])
        rows: list[list[Node]] = [[] for _ in xs]
        for k in range(n):
            gk = make("squeeze", make("slice", flat, slices=((k, k + 1, 1),)), axes=(0,))
            for j, row in enumerate(grad_nodes(gk, list(xs))):
                rows[j].append(make("reshape", row, shape=(1, math.prod(shapes[j]))))
        out = []
        for j in range(len(xs)):
            shape = shapes[i] + shapes[j]
            if n == 0 or 0 in shapes[j]:
                out.append(make("broadcast_to", scalar_constant(0, y.dtype), shape=shape))
                continue
            stacked = rows[j][0] if n == 1 else make("concatenate", *rows[j], axis=0)
            out.append(make("reshape", stacked, shape=shape))
        blocks.append(out)
    return blocks
