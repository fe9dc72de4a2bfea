"""numpy-like functions over Tensors; derived ones are decompositions into primitives."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from graphc.dtypes import as_dtype, bool_, float32, float64, float_for, int64
from graphc.errors import DTypeError, ShapeError
from graphc.node import Node, user_source_line
from graphc.ops import make
from graphc.ops.leaves import scalar_constant
from graphc.ops.shape_ops import size_value
from graphc.ops.shapes import conflict, normalize_axes, size_product
from graphc.frontends.convert import cast, common_dtype, operands, to_bool, to_node
from graphc.frontends.tensor import Tensor

Axis = int | Sequence[int] | None


def _t(node: Node) -> Tensor:
    return Tensor(node)


def _shape_error(op: str, message: Any, *nodes: Node) -> ShapeError:
    """A ShapeError worded like make()'s: the op, the input types and the user's line."""
    where = user_source_line()
    at = f" at {where}" if where else ""
    types = ", ".join(str(n.type) for n in nodes)
    return ShapeError(f"{op}: {message} (inputs: {types}){at}")


def _axes(op: str, axis: Any, node: Node, ndim: int | None = None) -> tuple[int, ...]:
    try:
        return normalize_axes(axis, node.ndim if ndim is None else ndim)
    except ShapeError as exc:
        raise _shape_error(op, exc, node) from None


def _float_operands(values: Sequence[Any], op: str) -> list[Node]:
    return operands(values, op, float_for(common_dtype(values, op)))


def _average_dtype(dtype: np.dtype) -> np.dtype:
    """numpy's true_divide and mean: bools and ints give float64, floats keep their dtype."""
    return dtype if dtype.kind == "f" else float64


def _check_op_operands(values: Sequence[Any], op: str) -> None:
    for v in values:
        if isinstance(v, (str, bytes, complex)) or v is None:
            raise TypeError(f"{op}: unsupported operand {v!r} of type {type(v).__name__}")


# ---- elementwise ----------------------------------------------------------------------

def _unary_float(name: str):
    def fn(x: Any) -> Tensor:
        _check_op_operands([x], name)
        return _t(make(name, *_float_operands([x], name)))
    fn.__name__ = name
    fn.__doc__ = f"Elementwise {name} (ints compute in float64, like numpy)."
    return fn


def _unary_numeric(name: str):
    def fn(x: Any) -> Tensor:
        _check_op_operands([x], name)
        node = to_node(x, f"{name} operand")
        if node.dtype == bool_:
            if name == "neg":
                raise DTypeError("neg: cannot negate a bool tensor")
            node = cast(node, int64)
        return _t(make(name, node))
    fn.__name__ = name
    fn.__doc__ = f"Elementwise {name} (bools compute as int64)."
    return fn


exp = _unary_float("exp")
sqrt = _unary_float("sqrt")
sin = _unary_float("sin")
cos = _unary_float("cos")
tan = _unary_float("tan")
cot = _unary_float("cot")
sec = _unary_float("sec")
csc = _unary_float("csc")
tanh = _unary_float("tanh")
sigmoid = _unary_float("sigmoid")
softplus = _unary_float("softplus")
erf = _unary_float("erf")
negative = _unary_numeric("neg")
square = _unary_numeric("square")
abs = _unary_numeric("abs")  # noqa: A001 (numpy's name)
sign = _unary_numeric("sign")
relu = _unary_numeric("relu")


def log(x: Any, base: Any = None) -> Tensor:
    """Natural logarithm, or the logarithm to `base` (a number or a tensor)."""
    _check_op_operands([x], "log")
    if base is None:
        return _t(make("log", *_float_operands([x], "log")))
    _check_op_operands([base], "log")
    return _t(make("logb", *_float_operands([x, base], "log")))


# On bools, add/mul/maximum/minimum are or/and/or/and (numpy's result, a bool); the other
# arithmetic computes in int64.
_BOOL_CLOSED = ("add", "mul", "maximum", "minimum")


def _binary(name: str, float_only: bool = False):
    def fn(a: Any, b: Any) -> Tensor:
        _check_op_operands([a, b], name)
        if float_only:
            dtype = _average_dtype(common_dtype([a, b], name))
            return _t(make(name, *operands([a, b], name, dtype)))
        nodes = operands([a, b], name)
        if nodes[0].dtype != bool_:
            return _t(make(name, *nodes))
        out = make(name, *(cast(n, int64) for n in nodes))
        return _t(cast(out, bool_) if name in _BOOL_CLOSED else out)
    fn.__name__ = name
    fn.__doc__ = f"Elementwise {name} with numpy broadcasting and promotion."
    return fn


add = _binary("add")
subtract = _binary("sub")
multiply = _binary("mul")
divide = _binary("div", float_only=True)
power = _binary("pow")
maximum = _binary("maximum")
minimum = _binary("minimum")


def _compare(name: str):
    def fn(a: Any, b: Any) -> Tensor:
        _check_op_operands([a, b], name)
        return _t(make(name, *operands([a, b], name)))
    fn.__name__ = name
    fn.__doc__ = f"Elementwise {name}, a bool tensor."
    return fn


less = _compare("less")
less_equal = _compare("less_equal")
greater = _compare("greater")
greater_equal = _compare("greater_equal")
equal = _compare("equal")
not_equal = _compare("not_equal")


def where(cond: Any, a: Any, b: Any) -> Tensor:
    """Elementwise `a if cond else b` (a non-bool cond counts as cond != 0)."""
    _check_op_operands([cond, a, b], "where")
    x, y = operands([a, b], "where")
    return _t(make("where", to_bool(cond, "where condition"), x, y))


def astype(x: Any, dtype: Any) -> Tensor:
    return _t(cast(to_node(x, "astype operand"), as_dtype(dtype)))


def stop_gradient(x: Any) -> Tensor:
    """x, with a zero derivative."""
    return _t(make("stop_gradient", to_node(x, "stop_gradient operand")))


# ---- reductions -------------------------------------------------------------------------

def _reduce(name: str, x: Any, axis: Axis, keepdims: bool) -> Tensor:
    node = to_node(x, f"{name} operand")
    axes = _axes(name, axis, node)
    if name in ("max", "min") and node.dtype == bool_:
        return _t(cast(make(name, cast(node, int64), axes=axes, keepdims=bool(keepdims)), bool_))
    return _t(make(name, node, axes=axes, keepdims=bool(keepdims)))


def sum(x: Any, axis: Axis = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """Sum over axes (bools and int32 sum in int64, like numpy)."""
    return _reduce("sum", x, axis, keepdims)


def max(x: Any, axis: Axis = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    return _reduce("max", x, axis, keepdims)


def min(x: Any, axis: Axis = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    return _reduce("min", x, axis, keepdims)


def count(x: Any, axis: Axis, dtype: np.dtype) -> Node:
    """The number of elements reduced over `axis`, a constant when the sizes are known."""
    node = to_node(x)
    axes = normalize_axes(axis, node.ndim)
    return size_value(size_product([node.shape[a] for a in axes]), dtype)


def mean(x: Any, axis: Axis = None, keepdims: bool = False) -> Tensor:
    """Mean over axes (ints average in float64, like numpy)."""
    node = to_node(x, "mean operand")
    dtype = _average_dtype(node.dtype)
    total = _reduce("sum", cast(node, dtype), axis, keepdims).node
    return _t(make("div", total, count(node, axis, dtype)))


def argmax(x: Any, axis: int | None = None, keepdims: bool = False) -> Tensor:
    """Index of the largest entry along `axis` (None: of the flattened tensor)."""
    node = to_node(x, "argmax operand")
    if axis is None:
        out = make("argmax", make("reshape", node, shape=(-1,)), axis=0, keepdims=False)
        if keepdims:
            out = make("reshape", out, shape=(1,) * node.ndim)
        return _t(out)
    (ax,) = _axes("argmax", axis, node)
    return _t(make("argmax", node, axis=ax, keepdims=bool(keepdims)))


# ---- linear algebra ---------------------------------------------------------------------

def matmul(a: Any, b: Any) -> Tensor:
    """numpy matmul: 1-D operands are promoted to matrices and the added axis dropped."""
    _check_op_operands([a, b], "matmul")
    x, y = operands([a, b], "matmul")
    if x.dtype == bool_:
        raise DTypeError("matmul: bool operands are not supported")
    if x.ndim == 0 or y.ndim == 0:
        raise _shape_error("matmul", "operands must not be scalars", x, y)
    squeeze = []
    if x.ndim == 1:
        x = make("expand_dims", x, axes=(0,))
        squeeze.append(-2)
    if y.ndim == 1:
        y = make("expand_dims", y, axes=(1,))
        squeeze.append(-1)
    out = make("matmul", x, y)
    if squeeze:
        out = make("squeeze", out, axes=normalize_axes(tuple(squeeze), out.ndim))
    return _t(out)


# ---- shapes -----------------------------------------------------------------------------

def _shape_arg(shape: Any, what: str) -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    try:
        dims = tuple(shape)
    except TypeError:
        raise TypeError(f"{what}: expected a tuple of ints, got {shape!r}") from None
    for d in dims:
        if not isinstance(d, (int, np.integer)) or isinstance(d, bool):
            raise TypeError(f"{what}: {d!r} in {shape!r} is not an int")
    return tuple(int(d) for d in dims)


def reshape(x: Any, shape: Any) -> Tensor:
    """numpy reshape; one entry may be -1."""
    return _t(make("reshape", to_node(x, "reshape operand"),
                   shape=_shape_arg(shape, "reshape shape")))


def transpose(x: Any, axes: Sequence[int] | None = None) -> Tensor:
    node = to_node(x, "transpose operand")
    if axes is None:
        perm = tuple(range(node.ndim))[::-1]
    else:
        perm = tuple(a % node.ndim if isinstance(a, int) and -node.ndim <= a < node.ndim
                     else a for a in _shape_arg(axes, "transpose axes"))
    return _t(make("transpose", node, perm=perm))


def broadcast_to(x: Any, shape: Any) -> Tensor:
    return _t(make("broadcast_to", to_node(x, "broadcast_to operand"),
                   shape=_shape_arg(shape, "broadcast_to shape")))


def expand_dims(x: Any, axis: int | Sequence[int]) -> Tensor:
    node = to_node(x, "expand_dims operand")
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    ndim = node.ndim + len(axes)
    norm = _axes("expand_dims", axes, node, ndim)
    return _t(make("expand_dims", node, axes=norm))


def squeeze(x: Any, axis: int | Sequence[int] | None = None) -> Tensor:
    """Drop size-1 axes (axis=None: every axis statically of size 1)."""
    node = to_node(x, "squeeze operand")
    if axis is None:
        axes = tuple(i for i, d in enumerate(node.shape) if d == 1)
    else:
        axes = _axes("squeeze", axis, node)
    return _t(make("squeeze", node, axes=axes)) if axes else _t(node)


def concatenate(tensors: Sequence[Any], axis: int = 0) -> Tensor:
    if isinstance(tensors, Tensor) or not isinstance(tensors, (list, tuple)):
        raise TypeError("concatenate: expected a list or tuple of tensors")
    if not tensors:
        raise ValueError("concatenate: needs at least one tensor")
    nodes = operands(list(tensors), "concatenate")
    return _t(make("concatenate", *nodes, axis=axis % nodes[0].ndim if nodes[0].ndim and
                   -nodes[0].ndim <= axis < nodes[0].ndim else axis))


def stack(tensors: Sequence[Any], axis: int = 0) -> Tensor:
    if isinstance(tensors, Tensor) or not isinstance(tensors, (list, tuple)):
        raise TypeError("stack: expected a list or tuple of tensors")
    if not tensors:
        raise ValueError("stack: needs at least one tensor")
    nodes = operands(list(tensors), "stack")
    first = nodes[0].shape
    if any(n.ndim != len(first) or any(conflict(a, b) for a, b in zip(first, n.shape))
           for n in nodes):
        raise _shape_error("stack", "all tensors need one shape", *nodes)
    (ax,) = _axes("stack", axis, nodes[0], nodes[0].ndim + 1)
    expanded = [expand_dims(Tensor(n), ax) for n in nodes]
    return concatenate(expanded, axis=ax)


def take(x: Any, indices: Any, axis: int | None = None) -> Tensor:
    """Gather along `axis` (None: from the flattened tensor); indices are bounds-checked."""
    node = to_node(x, "take operand")
    idx = to_node(indices, "take indices")
    if idx.dtype.kind != "i":
        raise DTypeError(f"take: indices must be integers, got {idx.dtype}")
    if axis is None:
        node, axis = make("reshape", node, shape=(-1,)), 0
    (ax,) = _axes("take", axis, node)
    return _t(make("take", node, idx, axis=ax))


def one_hot(labels: Any, depth: int, dtype: Any = float32) -> Tensor:
    """Rows of the identity: out[..., k] = (labels[...] == k)."""
    node = to_node(labels, "one_hot labels")
    if node.dtype.kind != "i":
        raise DTypeError(f"one_hot: labels must be integers, got {node.dtype}")
    if not isinstance(depth, (int, np.integer)) or depth < 0:
        raise ValueError(f"one_hot: depth must be an int >= 0, got {depth!r}")
    return _t(make("one_hot", node, depth=int(depth), dtype=as_dtype(dtype)))


# ---- softmax family ---------------------------------------------------------------------

def log_softmax(x: Any, axis: int = -1) -> Tensor:
    node = _float_operands([x], "log_softmax")[0]
    (ax,) = _axes("log_softmax", axis, node)
    return _t(make("log_softmax", node, axis=ax))


def softmax(x: Any, axis: int = -1) -> Tensor:
    return exp(log_softmax(x, axis))


def logsumexp(x: Any, axis: Axis = None, keepdims: bool = False) -> Tensor:
    """log(sum(exp(x))) computed stably around the (gradient-free) maximum."""
    node = _float_operands([x], "logsumexp")[0]
    axes = _axes("logsumexp", axis, node)
    top = make("stop_gradient", make("max", node, axes=axes, keepdims=True))
    # An all -inf slice has max -inf; shifting by 0 there keeps the result -inf, not nan.
    finite_top = make("where", make("less", make("abs", top), scalar_constant(np.inf, node.dtype)),
                      top, scalar_constant(0, node.dtype))
    total = make("sum", make("exp", make("sub", node, finite_top)), axes=axes, keepdims=True)
    out = make("add", make("log", total), finite_top)
    return _t(make("squeeze", out, axes=axes) if not keepdims and axes else out)
