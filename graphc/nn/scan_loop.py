"""The loop the recurrent layers run: a Python-unrolled stand-in for gc.scan (static length)."""
from __future__ import annotations

from typing import Any, Callable

import graphc.frontends as F
from graphc.frontends.convert import to_node


def scan(fn: Callable[[Any, Any], tuple[Any, Any]], init: Any, xs: Any = None,
         length: int | None = None, reverse: bool = False, checkpoint: bool = False
         ) -> tuple[Any, Any]:
    """lax.scan's semantics over one sequence tensor `xs`, unrolled: needs a static length
    (checkpoint changes nothing here)."""
    n = to_node(xs, "scan xs").shape[0] if xs is not None else length
    if not isinstance(n, int):
        raise ValueError("scan (unrolled stand-in): the sequence length must be known")
    carry, ys = init, []
    steps = range(n - 1, -1, -1) if reverse else range(n)
    for t in steps:
        carry, y = fn(carry, xs[t] if xs is not None else None)
        ys.append(y)
    if reverse:
        ys.reverse()
    return carry, (F.stack(ys, axis=0) if ys and ys[0] is not None else None)
