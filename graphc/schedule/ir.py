"""The kernel IR: the contract between the scheduler and the backends. Shapes are static
(a schedule is made per set of call-time sizes); every access is a strided affine map."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

from graphc.dtypes import short_name

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Buffer:
    """A contiguous array. role: input | param | const | output | temp."""

    id: int
    dtype: np.dtype
    shape: Shape
    role: str
    name: str = ""

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __str__(self) -> str:
        dims = ",".join(map(str, self.shape))
        return f"b{self.id}:{self.role}{'(' + self.name + ')' if self.name else ''}" \
               f"[{short_name(self.dtype)}[{dims}]]"


@dataclass(frozen=True)
class Access:
    """Element (i_0..i_{r-1}) of an iteration space lives at buffer.flat[offset + sum s_k i_k].
    A stride of 0 broadcasts; permuted strides transpose; offsets and scaled strides slice."""

    buffer: int
    strides: tuple[int, ...]
    offset: int = 0


# ---- scalar expressions (the body of elementwise and reduce kernels) --------------------

@dataclass(frozen=True)
class Load:
    access: Access
    dtype: np.dtype


@dataclass(frozen=True)
class Const:
    value: Union[int, float, bool]
    dtype: np.dtype


@dataclass(frozen=True)
class Index:
    """The iteration index along one axis (iota)."""

    axis: int
    dtype: np.dtype


@dataclass(frozen=True)
class Apply:
    """An elementwise primitive (by its graph name) applied to sub-expressions; `cast`
    carries its target in dtype."""

    op: str
    args: tuple["Expr", ...]
    dtype: np.dtype


Expr = Union[Load, Const, Index, Apply]


def expr_ops(expr: Expr) -> list[str]:
    """The primitive names an expression applies, each once, in first-use order."""
    seen: dict[str, None] = {}
    stack = [expr]
    visited: set[int] = set()
    while stack:
        e = stack.pop()
        if id(e) in visited:
            continue
        visited.add(id(e))
        if isinstance(e, Apply):
            seen.setdefault(e.op)
            stack.extend(reversed(e.args))
    return list(seen)


def expr_loads(expr: Expr) -> list[Load]:
    out, stack, visited = [], [expr], set()
    while stack:
        e = stack.pop()
        if id(e) in visited:
            continue
        visited.add(id(e))
        if isinstance(e, Load):
            out.append(e)
        elif isinstance(e, Apply):
            stack.extend(e.args)
    return out


# ---- kernels ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Store:
    """buffer[access] = value, or += value when `accumulate` (several iterations may add to
    one element: such kernels run their iterations in order)."""

    access: Access
    value: Expr
    accumulate: bool = False


@dataclass(frozen=True)
class Elementwise:
    """For every index of `shape`, every store writes its value (sibling stores share loads)."""

    shape: Shape
    stores: tuple[Store, ...]
    fused: tuple[str, ...] = ()

    kind = "elementwise"

    def reads(self) -> set[int]:
        return {ld.access.buffer for s in self.stores for ld in expr_loads(s.value)}

    def writes(self) -> set[int]:
        return {s.access.buffer for s in self.stores}


@dataclass(frozen=True)
class Reduce:
    """out[kept] = reduce over `axes` of body[i] for i in `shape`; `out` has stride 0 on the
    reduced axes. kind: sum | max | min | argmax (argmax: one axis, int64 result)."""

    shape: Shape
    axes: tuple[int, ...]
    op: str
    body: Expr
    out: Access
    out_dtype: np.dtype
    fused: tuple[str, ...] = ()

    kind = "reduce"

    def reads(self) -> set[int]:
        return {ld.access.buffer for ld in expr_loads(self.body)}

    def writes(self) -> set[int]:
        return {self.out.buffer}


@dataclass(frozen=True)
class Gemm:
    """out[b, m, n] = alpha * sum_k a[b, m, k] * b[b, k, n] over batch dims `batch` (added
    to what out holds when `accumulate`: a parameter update p += alpha * grad folded into
    the GEMM that makes grad); any strides, so transposes and broadcast batch dims cost
    nothing."""

    batch: Shape
    m: int
    n: int
    k: int
    a: Access  # over (batch..., m, k)
    b: Access  # over (batch..., k, n)
    out: Access  # over (batch..., m, n)
    dtype: np.dtype
    alpha: float = 1.0
    accumulate: bool = False

    kind = "gemm"

    def reads(self) -> set[int]:
        return {self.a.buffer, self.b.buffer} | ({self.out.buffer} if self.accumulate
                                                 else set())

    def writes(self) -> set[int]:
        return {self.out.buffer}


@dataclass(frozen=True)
class Gather:
    """out = take(x, indices, axis): out shape x.shape[:axis] + idx_shape + x.shape[axis+1:],
    indices bounds-checked before anything is read."""

    x_shape: Shape
    x: Access
    idx_shape: Shape
    indices: Access
    axis: int
    out: Access
    dtype: np.dtype
    what: str = "take"  # for the IndexError: the op, where its indices came from, its line

    kind = "gather"

    def reads(self) -> set[int]:
        return {self.x.buffer, self.indices.buffer}

    def writes(self) -> set[int]:
        return {self.out.buffer}


@dataclass(frozen=True)
class ScatterAdd:
    """out (shape out_shape, zero-filled first) += updates at indices along axis."""

    out_shape: Shape
    out: Access
    idx_shape: Shape
    indices: Access
    updates: Access  # over out_shape[:axis] + idx_shape + out_shape[axis+1:]
    axis: int
    dtype: np.dtype
    what: str = "scatter_add"

    kind = "scatter_add"

    def reads(self) -> set[int]:
        return {self.indices.buffer, self.updates.buffer}

    def writes(self) -> set[int]:
        return {self.out.buffer}


@dataclass(frozen=True)
class IndexCheck:
    """Raises IndexError (naming `what`) unless every index read lies in [0, size)."""

    shape: Shape
    indices: Access
    size: int
    what: str

    kind = "index_check"

    def reads(self) -> set[int]:
        return {self.indices.buffer}

    def writes(self) -> set[int]:
        return set()


@dataclass(frozen=True)
class ValueCheck:
    """Raises ValueError(message) unless every value read is >= 0: the exponents of an
    integer power (numpy refuses negative ones rather than give 0)."""

    shape: Shape
    values: Access
    message: str

    kind = "value_check"

    def reads(self) -> set[int]:
        return {self.values.buffer}

    def writes(self) -> set[int]:
        return set()


Kernel = Union[Elementwise, Reduce, Gemm, Gather, ScatterAdd, IndexCheck, ValueCheck]
KERNEL_KINDS = ("elementwise", "reduce", "gemm", "gather", "scatter_add", "index_check",
                "value_check")


def contiguous_strides(shape: Shape) -> tuple[int, ...]:
    strides, acc = [], 1
    for d in reversed(shape):
        strides.append(acc)
        acc *= max(d, 1)
    return tuple(reversed(strides))
