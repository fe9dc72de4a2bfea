"""gc.scan: a loop over axis 0 (JAX's lax.scan), its body traced once into a region."""
from __future__ import annotations

from typing import Any, Callable

from graphc import default_updates
from graphc.errors import DTypeError, ShapeError
from graphc.frontends.convert import to_node
from graphc.frontends.tensor import Tensor
from graphc.node import Dim, Node, carry_label, toposort, user_source_line
from graphc.ops.leaves import placeholder_node
from graphc.ops.registry import rebuild
from graphc.ops.scan_checkpoint import checkpointed_scan
from graphc.ops.scan_op import make_scan
from graphc.ops.shapes import fmt_shape
from graphc.region import Region

# A pytree: a tensor (a leaf), None, or a tuple/list of pytrees. Its structure: "*" for a
# leaf, None, or a tuple of structures.
Structure = Any


def _flatten(tree: Any, what: str, allow_none: bool = False) -> tuple[list[Node], Structure]:
    if isinstance(tree, (tuple, list)):
        leaves: list[Node] = []
        parts = []
        for i, t in enumerate(tree):
            sub, s = _flatten(t, f"{what}[{i}]", allow_none)
            leaves += sub
            parts.append(s)
        return leaves, tuple(parts)
    if tree is None:
        if allow_none:
            return [], None
        raise TypeError(f"{what} is None: expected a tensor or a tuple/list of tensors")
    if isinstance(tree, dict):
        raise TypeError(f"{what}: dicts are not supported, use a tuple or list of tensors")
    return [to_node(tree, what)], "*"


def _unflatten(structure: Structure, leaves: list[Tensor], like: Any) -> Any:
    """`leaves` in `structure`, with tuples and lists as in `like`."""
    it = iter(leaves)

    def build(s: Structure, ref: Any) -> Any:
        if s is None:
            return None
        if s == "*":
            return next(it)
        items = [build(sub, r) for sub, r in zip(s, ref)]
        return list(items) if isinstance(ref, list) else tuple(items)
    return build(structure, like)


def _describe(s: Structure) -> str:
    if s is None:
        return "None"
    if s == "*":
        return "tensor"
    return "(" + ", ".join(_describe(x) for x in s) + ("," if len(s) == 1 else "") + ")"


def _at() -> str:
    where = user_source_line()
    return f" (at {where})" if where else ""


def _length_of(xs: list[Node], length: Any) -> Dim:
    dims: list[Dim] = []
    for j, x in enumerate(xs):
        if x.ndim == 0:
            raise ShapeError(f"scan: xs leaf {j} is a scalar ({x.type}); sequences are "
                             f"scanned along axis 0{_at()}")
        dims.append(x.shape[0])
    for j, d in enumerate(dims[1:], 1):
        if isinstance(d, int) and isinstance(dims[0], int) and d != dims[0]:
            raise ShapeError(f"scan: xs leaf {j} has length {d} but xs leaf 0 has length "
                             f"{dims[0]}: every sequence needs the same length{_at()}")
    if length is not None:
        if isinstance(length, bool) or not isinstance(length, int):
            raise TypeError(f"scan: length must be an int or None, got {length!r}{_at()}")
        if length < 0:
            raise ValueError(f"scan: length must be >= 0, got {length}{_at()}")
        if dims and isinstance(dims[0], int) and dims[0] != length:
            raise ShapeError(f"scan: length={length} disagrees with the length of xs "
                             f"({dims[0]}){_at()}")
        return length  # a length of xs known only at call time is checked then
    if not dims:
        raise TypeError(f"scan: needs xs or length= (the number of steps){_at()}")
    return dims[0]


def _capture(outputs: list[Node], own: list[Node]
             ) -> tuple[list[Node], list[Node], list[Node]]:
    """The body's outputs with every outside value it reads (a placeholder, a parameter, or
    anything computed from them without the body's inputs) replaced by a fresh placeholder:
    (outputs, those placeholders, the outside values). Constants stay in the body."""
    inside = set(own)
    depends: dict[Node, bool] = {}
    outer: dict[Node, bool] = {}
    order = toposort(outputs)
    for n in order:
        depends[n] = n in inside or any(depends[i] for i in n.inputs)
        if depends[n]:
            _refuse_state_update(n)
        outer[n] = n.op in ("placeholder", "parameter") and n not in inside or \
            any(outer[i] for i in n.inputs)
    wanted: list[Node] = []
    for n in order:
        if depends[n]:
            wanted += [i for i in n.inputs if not depends[i] and outer[i]]
    wanted += [o for o in outputs if not depends[o] and outer[o]]
    captured = list(dict.fromkeys(wanted))
    memo: dict[Node, Node] = {}
    for i, n in enumerate(captured):
        name = n.attrs["name"] if n.op in ("placeholder", "parameter") else f"captured{i}"
        memo[n] = placeholder_node(n.shape, n.dtype, name)
    for n in order:
        if n not in memo:
            memo[n] = carry_label(n, rebuild(n, [memo[i] for i in n.inputs])) \
                if depends[n] else n
    return [memo[o] for o in outputs], [memo[n] for n in captured], captured


def _refuse_state_update(node: Node) -> None:
    """A body node asking a state update (a training-mode BatchNorm's running statistics,
    Dropout's seed) would ask it once per step, which one compiled update cannot do: an
    error, not a silently stale or repeated state."""
    for update in default_updates.of(node):
        raise ValueError(f"scan: the body uses {update.owner}, which updates parameter "
                         f"{update.param.attrs['name']!r} each time it runs; a loop body "
                         f"cannot update state (use it in eval mode, or outside the "
                         f"scan){_at()}")


def scan(fn: Callable[[Any, Any], Any], init: Any, xs: Any = None, length: int | None = None,
         reverse: bool = False, checkpoint: bool = False) -> tuple[Any, Any]:
    """Loops `fn(carry, x) -> (carry, y)` over axis 0 of `xs` (JAX's lax.scan): returns the
    final carry and the per-step `y` stacked along a new axis 0 (None when `y` is None).
    `init`, `xs` and `y` are a tensor or a tuple/list of tensors; `xs` may be None with
    `length=` steps. The body is traced once (on symbolic slices); tensors and parameters it
    uses from outside are captured. reverse=True runs from the last step to the first (ys
    stay aligned with xs). checkpoint=True keeps only some carries for the gradient and
    recomputes the others."""
    if not callable(fn):
        raise TypeError(f"scan: fn must be callable, got {type(fn).__name__}{_at()}")
    if not isinstance(reverse, bool) or not isinstance(checkpoint, bool):
        raise TypeError(f"scan: reverse and checkpoint must be True or False{_at()}")
    init_leaves, init_s = _flatten(init, "scan: init")
    x_leaves, xs_s = _flatten(xs, "scan: xs", allow_none=True)
    steps = _length_of(x_leaves, length)
    carry_ph = [placeholder_node(n.shape, n.dtype, f"carry{i}")
                for i, n in enumerate(init_leaves)]
    x_ph = [placeholder_node(n.shape[1:], n.dtype, f"x{i}") for i, n in enumerate(x_leaves)]
    carry_in = _unflatten(init_s, [Tensor(p) for p in carry_ph], init)
    x_in = None if xs_s is None else _unflatten(xs_s, [Tensor(p) for p in x_ph], xs)
    result = fn(carry_in, x_in)
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise TypeError(f"scan: fn must return a pair (carry, y), got "
                        f"{type(result).__name__}{_at()}")
    new_leaves, new_s = _flatten(result[0], "scan: the carry fn returned")
    if new_s != init_s:
        raise TypeError(f"scan: fn returned a carry of structure {_describe(new_s)}, but init "
                        f"has structure {_describe(init_s)}{_at()}")
    for i, (new, old) in enumerate(zip(new_leaves, init_leaves)):
        what = f"scan: carry {i}" if init_s != "*" else "scan: the carry"
        if new.dtype != old.dtype:
            raise DTypeError(f"{what} changes dtype in the body: init is {old.dtype}, fn "
                             f"returned {new.dtype}{_at()}")
        if new.shape != old.shape:
            raise ShapeError(f"{what} changes shape in the body: init is "
                             f"{fmt_shape(old.shape)}, fn returned "
                             f"{fmt_shape(new.shape)}{_at()}")
    y_leaves, y_s = _flatten(result[1], "scan: y", allow_none=True)
    if not new_leaves + y_leaves:  # no carry and no y: nothing to compute
        return _unflatten(init_s, [], init), _unflatten(y_s, [], result[1])
    outs, const_ph, consts = _capture(new_leaves + y_leaves, carry_ph + x_ph)
    body = Region(tuple(carry_ph + x_ph + const_ph), tuple(outs))
    if checkpoint:
        nodes = checkpointed_scan(init_leaves, x_leaves, consts, body, steps, reverse)
    else:
        nodes = make_scan(init_leaves, x_leaves, consts, body, steps, reverse)
    c = len(init_leaves)
    carry = _unflatten(init_s, [Tensor(n) for n in nodes[:c]], init)
    ys = _unflatten(y_s, [Tensor(n) for n in nodes[c:]], result[1])
    return carry, ys


__all__ = ["scan"]
