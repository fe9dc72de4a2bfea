"""gc.vmap: a function of one example mapped over a batch axis, by batching its graph."""
from __future__ import annotations

from typing import Any, Callable

from graphc.frontends.batching import batch_nodes
from graphc.frontends.convert import to_node
from graphc.frontends.tensor import Tensor
from graphc.frontends.tracing import Jitted, _contains_tensor
from graphc.node import Node, toposort
from graphc.ops import make
from graphc.ops.leaves import placeholder_node

Axis = int | None


def _axes_arg(axes: Any, count: int, what: str) -> list[Axis]:
    if axes is None or isinstance(axes, int) and not isinstance(axes, bool):
        return [axes] * count
    if not isinstance(axes, (tuple, list)):
        raise TypeError(f"vmap: {what} must be an int, None or a tuple of them, got "
                        f"{type(axes).__name__}")
    if len(axes) != count:
        raise ValueError(f"vmap: {what} has {len(axes)} entries for {count} "
                         f"{'arguments' if what == 'in_axes' else 'outputs'}")
    for a in axes:
        if a is not None and (not isinstance(a, int) or isinstance(a, bool)):
            raise TypeError(f"vmap: {what} entries must be ints or None, got {a!r}")
    return list(axes)


def _move(node: Node, source: int, dest: int) -> Node:
    if source == dest:
        return node
    perm = [a for a in range(node.ndim) if a != source]
    perm.insert(dest, source)
    return make("transpose", node, perm=tuple(perm))


def _norm_axis(axis: int, ndim: int, what: str) -> int:
    if not -ndim <= axis < ndim:
        raise ValueError(f"vmap: {what} is {axis}, out of range for {ndim} dimensions")
    return axis % ndim


class Vmapped:
    """fn mapped over an axis of its arguments (see gc.vmap)."""

    def __init__(self, fn: Callable[..., Any], in_axes: Any, out_axes: Any,
                 backend: str) -> None:
        if not callable(fn):
            raise TypeError(f"vmap: fn must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.in_axes = in_axes
        self.out_axes = out_axes
        self.backend = backend
        self.__name__ = getattr(fn, "__name__", "vmapped")
        self.__wrapped__ = fn
        self._jitted: Jitted | None = None

    def __call__(self, *args: Any) -> Any:
        if not any(_contains_tensor(a) for a in args):
            # arrays: trace and compile this batched function (cached like gc.jit)
            if self._jitted is None:
                self._jitted = Jitted(self.symbolic, self.backend, (), {})
            return self._jitted(*args)
        return self.symbolic(*args)

    def symbolic(self, *args: Any) -> Any:
        axes = _axes_arg(self.in_axes, len(args), "in_axes")
        if all(a is None for a in axes):
            raise ValueError("vmap: in_axes maps no argument (at least one must be an int)")
        env: dict[Node, Node] = {}
        sizes: list[tuple[int, Any]] = []
        call_args: list[Any] = []
        for i, (arg, axis) in enumerate(zip(args, axes)):
            if axis is None:
                call_args.append(arg)
                continue
            if isinstance(arg, (tuple, list)):
                raise TypeError(f"vmap: argument {i} is a {type(arg).__name__}; mapped "
                                "arguments are tensors (or arrays)")
            node = to_node(arg, f"vmap argument {i}")
            if node.ndim == 0:
                raise ValueError(f"vmap: argument {i} is 0-d and has no axis {axis} to map "
                                 "(give it in_axes None)")
            ax = _norm_axis(axis, node.ndim, f"in_axes for argument {i}")
            batched = _move(node, ax, 0)
            sizes.append((i, batched.shape[0]))
            example = placeholder_node(batched.shape[1:], node.dtype, f"vmap_arg{i}")
            env[example] = batched
            call_args.append(Tensor(example))
        known = {s for _, s in sizes if isinstance(s, int)}
        if len(known) > 1:
            listed = ", ".join(f"argument {i}: {s}" for i, s in sizes)
            raise ValueError(f"vmap: the mapped axes have different sizes ({listed})")
        size = known.pop() if known else sizes[0][1] if sizes else None
        result = self.fn(*call_args)
        single = not isinstance(result, (tuple, list))
        outs = [result] if single else list(result)
        for k, out in enumerate(outs):
            if not isinstance(out, Tensor):
                raise TypeError(f"vmap: {self.__name__} must return a Tensor or a tuple/list "
                                f"of Tensors, got {type(out).__name__} (output {k})")
        out_axes = _axes_arg(self.out_axes, len(outs), "out_axes")
        batched_outs = batch_nodes([o.node for o in outs], env, size)
        final = []
        for k, (out, b, axis) in enumerate(zip(outs, batched_outs, out_axes)):
            if axis is None:
                if not _independent(out.node, env):
                    raise ValueError(f"vmap: output {k} depends on the mapped arguments, so "
                                     "its out_axes cannot be None")
                final.append(Tensor(out.node))
                continue
            final.append(Tensor(_move(b, 0, _norm_axis(axis, b.ndim, f"out_axes[{k}]"))))
        if single:
            return final[0]
        return tuple(final) if isinstance(result, tuple) else final


def _independent(node: Node, env: dict[Node, Node]) -> bool:
    return not any(n in env for n in toposort([node]))


def vmap(fn: Callable[..., Any], in_axes: Any = 0, out_axes: Any = 0,
         backend: str = "llvm") -> Vmapped:
    """fn, written for one example, mapped over an axis of its arguments (JAX's semantics).

    in_axes: per argument the axis mapped over (an int for all, or a tuple with an int or
    None per argument; None passes the argument unmapped to every example). out_axes: where
    the batch axis goes in each output (None: the output must not depend on the mapped
    arguments). The graph fn builds for one example is batched by a rule per primitive
    (elementwise ops broadcast, matmul batches, reductions and shape ops shift their axes);
    a primitive without a rule is unrolled over the examples, which needs the batch size
    when tracing. On Tensors the result is Tensors; on numpy arrays the batched function is
    compiled (cached per signature like gc.jit) with `backend`.

    >>> per_example = gc.vmap(lambda x: gc.grad(((x @ W) ** 2).sum(), W))
    >>> per_example(X).shape  # X: (N, d) gives (N,) + W.shape
    """
    return Vmapped(fn, in_axes, out_axes, backend)

