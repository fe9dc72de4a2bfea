"""gc.jit: compile a Python function of arrays on first call, again for each new signature."""
from __future__ import annotations

import threading
from typing import Any, Callable, Sequence

import numpy as np

from graphc.coerce import default_array
from graphc.frontends.tensor import Tensor, placeholder

# A structure ("tree") of arguments or results: a leaf, or a tuple/list of trees.
Tree = Any
LEAF = "*"


def flatten(value: Any) -> tuple[list[Any], Tree]:
    """The leaves of nested tuples/lists, left to right, and the structure to rebuild them."""
    if isinstance(value, (tuple, list)):
        leaves: list[Any] = []
        kids = []
        for v in value:
            sub, tree = flatten(v)
            leaves.extend(sub)
            kids.append(tree)
        return leaves, (type(value).__name__, tuple(kids))
    return [value], LEAF


def unflatten(tree: Tree, leaves: Sequence[Any]) -> Any:
    it = iter(leaves)

    def build(t: Tree) -> Any:
        if t == LEAF:
            return next(it)
        kind, kids = t
        items = [build(k) for k in kids]
        return tuple(items) if kind == "tuple" else items

    return build(tree)


def _path(argnum: int, index: int, count: int) -> str:
    return f"argument {argnum}" + (f" (leaf {index})" if count > 1 else "")


def _contains_tensor(value: Any) -> bool:
    if isinstance(value, Tensor):
        return True
    return isinstance(value, (tuple, list)) and any(_contains_tensor(v) for v in value)


class Jitted:
    """A traced, compiled function: one gc.function per signature (shapes, dtypes, structure
    and static arguments) of the arguments."""

    def __init__(self, fn: Callable[..., Any], backend: str, static_argnums: tuple[int, ...],
                 options: dict[str, Any]) -> None:
        if not callable(fn):
            raise TypeError(f"jit: fn must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.backend = backend
        self.static_argnums = static_argnums
        self.options = options
        self._cache: dict[Any, tuple[Any, Tree]] = {}
        self._lock = threading.Lock()
        self.__wrapped__ = fn
        self.__name__ = getattr(fn, "__name__", "jitted")
        self.__doc__ = getattr(fn, "__doc__", None)

    def __repr__(self) -> str:
        return f"<gc.jit of {self.__name__} ({len(self._cache)} traced)>"

    @property
    def traces(self) -> int:
        """How many signatures have been traced and compiled."""
        return len(self._cache)

    def _signature(self, args: tuple) -> tuple[Any, list[np.ndarray], list[Tree]]:
        key: list[Any] = []
        arrays: list[np.ndarray] = []
        trees: list[Tree] = []
        for i, arg in enumerate(args):
            if i in self.static_argnums:
                try:
                    hash(arg)
                except TypeError:
                    raise TypeError(f"jit: static argument {i} must be hashable, got "
                                    f"{type(arg).__name__}") from None
                key.append(("static", type(arg), arg))
                trees.append(None)
                continue
            leaves, tree = flatten(arg)
            trees.append(tree)
            sig = []
            for k, leaf in enumerate(leaves):
                array = default_array(leaf, f"jit: {_path(i, k, len(leaves))}")
                arrays.append(array)
                sig.append((array.shape, array.dtype.str))
            key.append((tree, tuple(sig)))
        return tuple(key), arrays, trees

    def _trace(self, args: tuple, arrays: list[np.ndarray], trees: list[Tree]
               ) -> tuple[Any, Tree]:
        from graphc.function import function

        inputs: list[Tensor] = []
        call_args: list[Any] = []
        it = iter(arrays)
        for i, (arg, tree) in enumerate(zip(args, trees)):
            if tree is None:
                call_args.append(arg)
                continue
            leaves = []
            count = len(flatten(arg)[0]) if tree != LEAF else 1
            for k in range(count):
                array = next(it)
                name = f"arg{i}" if count == 1 else f"arg{i}_{k}"
                leaves.append(placeholder(array.shape, array.dtype, name=name))
            inputs.extend(leaves)
            call_args.append(leaves[0] if tree == LEAF else unflatten(tree, leaves))
        result = self.fn(*call_args)
        outs, out_tree = flatten(result) if isinstance(result, (tuple, list)) else (
            [result], LEAF)
        if not outs:
            raise TypeError(f"jit: {self.__name__} returned no tensors")
        for k, out in enumerate(outs):
            if not isinstance(out, Tensor):
                where = "" if out_tree == LEAF else f" (output {k})"
                raise TypeError(f"jit: {self.__name__} must return a graphc Tensor or a "
                                f"tuple/list of them, got {type(out).__name__}{where}")
        outputs = outs[0] if out_tree == LEAF else list(outs)
        compiled = function(inputs, outputs, backend=self.backend, **self.options)
        return compiled, out_tree

    def compiled(self, *args: Any) -> Any:
        """The gc.function that runs for these arguments (traced now if new): its .graph,
        .source and report show what jit made of fn."""
        key, arrays, trees = self._signature(args)
        with self._lock:
            entry = self._cache.get(key)
            if entry is None:
                entry = self._cache[key] = self._trace(args, arrays, trees)
        return entry[0]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs:
            raise TypeError(f"jit: {self.__name__} takes positional arguments only (got "
                            f"{', '.join(sorted(kwargs))}); use static_argnums for options")
        if any(_contains_tensor(a) for a in args):
            return self.fn(*args)  # inside a traced computation jit is the function itself
        key, arrays, trees = self._signature(args)
        with self._lock:
            entry = self._cache.get(key)
            if entry is None:
                entry = self._cache[key] = self._trace(args, arrays, trees)
        compiled, out_tree = entry
        results = compiled(*arrays)
        if out_tree == LEAF:
            return results
        return unflatten(out_tree, results)


def jit(fn: Callable[..., Any] | None = None, *, backend: str = "llvm",
        static_argnums: int | Sequence[int] = (), **function_options: Any) -> Any:
    """Compiles `fn`, a Python function of graphc Tensors, for the arrays it is called with.

    On the first call with a new signature (each argument's shape and dtype, exactly, and the
    tuple/list structure of the arguments), jit makes a placeholder per array, calls `fn` on
    them, compiles the result with gc.function(..., backend=backend, **function_options)
    and runs it; later calls with that signature run the compiled code. Arguments are numpy
    arrays, Python numbers (traced as 0-d float32/int64/bool inputs, not as constants) and
    nested tuples/lists of them; arguments in `static_argnums` are passed to fn as they are
    (hashable; a new value traces again). fn returns a Tensor or a (nested) tuple/list of
    Tensors; the call returns numpy arrays in that structure. fn is pure: parameters it reads
    are captured (compiled code reads their current values) but not updated.

    >>> @gc.jit
    ... def f(x, y):
    ...     return gc.tanh(x) @ y
    >>> f(np.ones((2, 3), np.float32), np.ones((3, 4), np.float32)).shape
    (2, 4)
    """
    statics = (static_argnums,) if isinstance(static_argnums, int) else tuple(static_argnums)
    for s in statics:
        if not isinstance(s, int) or isinstance(s, bool) or s < 0:
            raise TypeError(f"jit: static_argnums must hold argument positions >= 0, got {s!r}")
    if fn is None:
        return lambda f: Jitted(f, backend, statics, function_options)
    return Jitted(fn, backend, statics, function_options)
