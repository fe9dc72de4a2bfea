"""The symbolic Tensor users build graphs with, and trainable Parameters."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from graphc.coerce import coerce_array, default_array
from graphc.dtypes import as_dtype
from graphc.node import Dim, Node
from graphc.sizes import shape_dim, user_dim
from graphc.ops.leaves import ParamStorage, constant_node, parameter_node, placeholder_node


def _no_values(what: str) -> str:
    return (f"{what}: a symbolic Tensor has no values yet; compile it with "
            "gc.function(inputs, tensor) and call that with arrays to get numbers")


class Tensor:
    """A symbolic tensor: a handle on a graph node with numpy-like operators."""

    __slots__ = ("node",)
    # Make numpy hand mixed expressions (array + tensor) to the Tensor's operators.
    __array_ufunc__ = None
    __array_priority__ = 1000

    def __init__(self, node: Node) -> None:
        if not isinstance(node, Node):
            raise TypeError(f"Tensor wraps a graph node, got {type(node).__name__}")
        self.node = node

    # -- static facts ---------------------------------------------------------------
    @property
    def shape(self) -> tuple[int | str | None, ...]:
        """ints; a name for a named size ("N"); None for other sizes known at call time."""
        return tuple(user_dim(d) for d in self.node.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.node.dtype

    @property
    def ndim(self) -> int:
        return self.node.ndim

    @property
    def op(self) -> str:
        return self.node.op

    @property
    def name(self) -> str | None:
        return self.node.attrs.get("name")

    def __repr__(self) -> str:
        label = f" {self.name!r}" if self.name else ""
        return f"<Tensor{label} {self.node.op} {self.node.type}>"

    # Notebook views (issue #17, pictures): the graph as SVG, folded when large.
    def _repr_svg_(self) -> str | None:
        from graphc.render import svg_text
        return svg_text(self)

    def _repr_html_(self) -> str | None:
        from graphc.render import html_view
        return html_view(self)

    def _repr_latex_(self) -> str:
        """Notebooks show a tensor as its math (gc.to_latex)."""
        from graphc.latex import to_latex
        return f"$${to_latex(self)}$$"

    def __bool__(self) -> bool:
        raise TypeError("a symbolic Tensor has no truth value; use gc.where for conditions")

    # numpy and Python conversions would need values, which a graph has only once compiled
    # and called (np.asarray would otherwise make a silent one-element object array)
    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise TypeError(_no_values("np.asarray(tensor)"))

    def __float__(self) -> float:
        raise TypeError(_no_values("float(tensor)"))

    def __int__(self) -> int:
        raise TypeError(_no_values("int(tensor)"))

    def __index__(self) -> int:
        raise TypeError(_no_values("using a tensor as an index or size"))

    def __complex__(self) -> complex:
        raise TypeError(_no_values("complex(tensor)"))

    def __len__(self) -> int:
        first = self.node.shape[0] if self.node.shape else None
        if not isinstance(first, int):
            raise TypeError("len() needs a known first dimension")
        return first

    def __iter__(self):
        raise TypeError("a symbolic Tensor is not iterable; index it instead")

    __hash__ = object.__hash__  # identity: tensors are dict keys (updates={param: ...})


class Parameter(Tensor):
    """Trainable state: compiled functions hold its array and update it in place."""

    __slots__ = ()

    @property
    def storage(self) -> ParamStorage:
        return self.node.attrs["storage"]

    @property
    def value(self) -> np.ndarray:
        storage = self.storage
        with storage.lock:
            return storage.array.copy()

    @value.setter
    def value(self, new: Any) -> None:
        storage = self.storage
        what = f"parameter {storage.name!r}"
        array = coerce_array(new, storage.array.dtype, what)
        if array.shape != storage.array.shape:
            raise ValueError(f"{what}: value has shape {array.shape}, "
                             f"expected {storage.array.shape}")
        with storage.lock:
            storage.array[...] = array  # in place: compiled code keeps its pointer

    def __repr__(self) -> str:
        return f"<Parameter {self.storage.name!r} {self.node.type}>"


def placeholder(shape: Sequence[Dim] | int = (), dtype: Any = "float32",
                name: str | None = None) -> Tensor:
    """A symbolic input; a shape entry of None means a size given at call time."""
    if isinstance(shape, str):
        raise TypeError(f"placeholder shape: expected a tuple of sizes, got the string "
                        f"{shape!r} (a named size goes inside the tuple: ({shape!r}, ...))")
    if isinstance(shape, int) or shape is None:
        shape = () if shape is None else (shape,)
    try:
        dims = tuple(shape)
    except TypeError:
        raise TypeError(f"placeholder shape: expected a tuple of sizes, got {shape!r}") from None
    for d in dims:
        if d is None or isinstance(d, str):
            continue
        if not isinstance(d, (int, np.integer)) or isinstance(d, bool) or d < 0:
            raise ValueError(f"placeholder shape: {d!r} in {shape!r} is not a size >= 0, "
                             "None or a name")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"placeholder name: expected a string, got {type(name).__name__}")
    dims = tuple(shape_dim(d, "placeholder shape") for d in dims)
    return Tensor(placeholder_node(dims, as_dtype(dtype), name))


_param_count = 0


def parameter(value: Any, name: str | None = None) -> Parameter:
    """Trainable state initialised from a numpy array (or numbers; floats become float32)."""
    global _param_count
    array = default_array(value, "parameter value")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"parameter name: expected a string, got {type(name).__name__}")
    _param_count += 1
    storage = ParamStorage(array, name or f"param{_param_count}")
    return Parameter(parameter_node(storage))


def constant(value: Any, dtype: Any = None) -> Tensor:
    """A literal tensor (Python floats become float32, ints int64, unless a dtype is given)."""
    if isinstance(value, Tensor):
        raise TypeError("constant: value is already a Tensor")
    array = default_array(value, "constant value")
    if dtype is not None:
        array = array.astype(as_dtype(dtype))
    return Tensor(constant_node(array))
