"""The kernel IR: the contract between the scheduler and the backends. Sizes, strides and
offsets are ints, or `graphc.sizes.Size` expressions in a schedule made with symbolic sizes
(graphc/schedule/symbolic.py; the llvm backend renders those); every access is a strided
affine map,
optionally guarded; each kernel kind is one record that carries its own facts (what it
reads and writes, whether it can fail, how its stores combine) in one registry."""
from __future__ import annotations

from dataclasses import dataclass
from operator import is_not
from typing import Any, Callable, ClassVar, Iterator, Mapping, Sequence, Union

import numpy as np

from graphc.dtypes import short_name
from graphc.sizes import Size

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
        return _product(self.shape)

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
class Bound:
    """lo <= offset + sum(scale * i_axis for axis, scale in terms) < hi: one condition of a
    guard, over the iteration indices of the kernel that reads."""

    terms: tuple[tuple[int, int], ...]
    offset: int
    lo: int
    hi: int


@dataclass(frozen=True)
class Guard:
    """Where a load may read: inside every bound. Outside, the load's value is `otherwise`
    and its memory is never touched, so pad, concatenate and the gradient of a slice are
    reads of the original buffers, not copies into zero-filled ones."""

    bounds: tuple[Bound, ...]
    otherwise: "Expr"


@dataclass(frozen=True)
class Load:
    access: Access
    dtype: np.dtype
    guard: Guard | None = None


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
    carries its target in dtype. After graphc.schedule.scalar.lower_expr the op is a core
    op (graphc.schedule.core_ops) instead."""

    op: str
    args: tuple["Expr", ...]
    dtype: np.dtype


Expr = Union[Load, Const, Index, Apply]


def children(e: Expr) -> tuple[Expr, ...]:
    """The sub-expressions of one node: an Apply's arguments, a guarded load's fallback."""
    if isinstance(e, Apply):
        return e.args
    if isinstance(e, Load) and e.guard is not None:
        return (e.guard.otherwise,)
    return ()


def postorder(expr: Expr, done: set[int] | None = None) -> Iterator[Expr]:
    """Every distinct node (by identity) of an expression, children before parents. The one
    walker: iterative, because fused bodies can be long chains. `done`: ids of nodes (and so
    of their sub-expressions) to skip, shared by walks over several bodies; updated."""
    # (children() inlined, and asked once a node: this walk runs some 10,000 times a schedule)
    done = set() if done is None else done
    stack: list[tuple[Expr, bool]] = [(expr, False)]
    pop, push = stack.pop, stack.append
    while stack:
        e, ready = pop()
        key = id(e)
        if key in done:
            continue
        if not ready:
            kids: tuple[Expr, ...] = ()
            if isinstance(e, Apply):
                kids = e.args
            elif isinstance(e, Load) and e.guard is not None:
                kids = (e.guard.otherwise,)
            if kids:
                push((e, True))
                for k in reversed(kids):
                    if id(k) not in done:
                        push((k, False))
                continue
        done.add(key)
        yield e


def with_children(e: Expr, kids: tuple[Expr, ...]) -> Expr:
    """`e` with new sub-expressions (itself when they are the same objects)."""
    if not any(map(is_not, kids, children(e))):
        return e
    if isinstance(e, Apply):
        return Apply(e.op, kids, e.dtype)
    assert isinstance(e, Load) and e.guard is not None
    return Load(e.access, e.dtype, Guard(e.guard.bounds, kids[0]))


def rewrite(expr: Expr, visit: Callable[[Expr], Expr | None],
            memo: dict[int, Expr] | None = None) -> Expr:
    """`expr` rebuilt bottom-up: each node (its children already rewritten) is replaced by
    visit(node) unless that returns None. Shared subexpressions stay shared, also across
    calls that pass one `memo` (id of an original node -> its rewrite)."""
    memo = {} if memo is None else memo
    for e in postorder(expr):
        key = id(e)
        if key in memo:
            continue
        node = e
        if isinstance(e, Apply):
            args = tuple([memo[id(a)] for a in e.args])
            if any(map(is_not, args, e.args)):
                node = Apply(e.op, args, e.dtype)
        elif isinstance(e, Load) and e.guard is not None:
            otherwise = memo[id(e.guard.otherwise)]
            if otherwise is not e.guard.otherwise:
                node = Load(e.access, e.dtype, Guard(e.guard.bounds, otherwise))
        new = visit(node)
        memo[key] = node if new is None else new
    return memo[id(expr)]


def map_accesses(expr: Expr, fn: Callable[[Access], Access]) -> Expr:
    """`expr` with every load's access replaced by fn(access)."""
    def visit(e: Expr) -> Expr | None:
        return Load(fn(e.access), e.dtype, e.guard) if isinstance(e, Load) else None
    return rewrite(expr, visit)


def expr_ops(expr: Expr) -> list[str]:
    """The primitive names an expression applies, each once."""
    seen: dict[str, None] = {}
    for e in postorder(expr):
        if isinstance(e, Apply):
            seen.setdefault(e.op)
    return list(seen)


def expr_loads(expr: Expr) -> list[Load]:
    return [e for e in postorder(expr) if isinstance(e, Load)]


def uses_index(expr: Expr) -> bool:
    """Whether a body depends on the iteration indices themselves (iota, guards): then its
    axes cannot be merged or reordered."""
    return any(isinstance(e, Index) or (isinstance(e, Load) and e.guard is not None)
               for e in postorder(expr))


# ---- kernels ----------------------------------------------------------------------------

# How a store combines with what its element holds:
#   ""         overwrite; each element is written by one iteration
#   "atomic"   add; several iterations may add to one element, in any order (a parallel
#              target adds atomically; float results may then differ in the last bits)
#   "ordered"  add, in iteration order (a parallel target must run the iterations in order)
ACCUMULATIONS = ("", "atomic", "ordered")


@dataclass(frozen=True)
class Store:
    """buffer[access] = value (or += value, see ACCUMULATIONS)."""

    access: Access
    value: Expr
    accumulate: str = ""

    def __post_init__(self) -> None:
        if self.accumulate not in ACCUMULATIONS:
            raise ValueError(f"Store.accumulate: {self.accumulate!r} is not one of "
                             f"{ACCUMULATIONS}")


KINDS: dict[str, type] = {}


def kernel_kind(cls: type) -> type:
    """Registers a kernel record under its `kind`: the one list every backend must lower."""
    kind = cls.__dict__.get("kind")
    if not kind or kind in KINDS:
        raise ValueError(f"kernel kind {kind!r}: missing or registered twice")
    KINDS[kind] = cls
    return cls


class KernelFacts:
    """What every kernel record says about itself. can_fail: it checks values read from
    data and may stop the program (the entry point tests its status; parameter updates
    wait for it). combine: how its writes combine (ACCUMULATIONS, or "reduction")."""

    kind: ClassVar[str]
    can_fail: ClassVar[bool] = False
    combine: ClassVar[str] = ""
    # Fields holding a buffer id outside an Access (signature.kernel_signature renumbers
    # them) and fields that only word an error message (the caller reports it, so they
    # are no part of the code).
    buffer_fields: ClassVar[tuple[str, ...]] = ()
    message_fields: ClassVar[tuple[str, ...]] = ()

    def reads(self) -> set[int]:
        return set(self._buffers()[0])

    def writes(self) -> set[int]:
        return set(self._buffers()[1])

    def _buffers(self) -> tuple[frozenset[int], frozenset[int]]:
        # (what reads() and writes() answer, kept on the record: it is immutable, and the
        # scheduler's passes asked W6's kernels ~4,000 times, each a walk of its bodies)
        memo = self.__dict__.get("_buffers_memo")
        if memo is None:
            accesses = self.accesses()
            memo = (frozenset(a.buffer for role, a, _ in accesses if role != "out"),
                    frozenset(a.buffer for role, a, _ in accesses if role == "out"))
            object.__setattr__(self, "_buffers_memo", memo)
        return memo

    def accesses(self) -> list[tuple[str, Access, Shape]]:
        """(role, access, the shape it is read or written over): role "out" for writes."""
        raise NotImplementedError

    def bodies(self) -> list[Expr]:
        """The scalar expressions the kernel evaluates (elementwise and reduce kernels)."""
        return []

    def header(self) -> str:
        """The kernel's first line in a listing: its kind, iteration space and parameters."""
        raise NotImplementedError

    def checked_indices(self) -> tuple[Access, Shape, int, bool] | None:
        """Indices the kernel checks before use: (access, shape, size, whether negatives
        count from the end), so a runtime can name an offending argument's value."""
        return None

    def error(self) -> tuple[type[Exception], str] | None:
        """What a failing kernel raises (can_fail kinds): the exception type and the words
        that name the op, where its values came from and the line that built it."""
        return None


def _space(shape: Shape) -> str:
    return f"[{','.join(map(str, shape))}]"


def _body_accesses(bodies: list[Expr], shape: Shape) -> list[tuple[str, Access, Shape]]:
    # (one walk over all bodies: a kernel grown by many merges has a store for each, every
    # one a prefix of the next, and walking each alone made a long chain's schedule
    # quadratic in its length)
    done: set[int] = set()
    return [("in", e.access, shape) for body in bodies for e in postorder(body, done)
            if isinstance(e, Load)]


@kernel_kind
@dataclass(frozen=True)
class Elementwise(KernelFacts):
    """For every index of `shape`, every store writes its value (sibling stores share loads)."""

    shape: Shape
    stores: tuple[Store, ...]
    fused: tuple[str, ...] = ()

    kind: ClassVar[str] = "elementwise"

    def accesses(self) -> list[tuple[str, Access, Shape]]:
        out = [("out", s.access, self.shape) for s in self.stores]
        out += [("in", s.access, self.shape) for s in self.stores if s.accumulate]
        return out + _body_accesses(self.bodies(), self.shape)

    def bodies(self) -> list[Expr]:
        return [s.value for s in self.stores]

    def header(self) -> str:
        return f"elementwise {_space(self.shape)}"


@kernel_kind
@dataclass(frozen=True)
class Reduce(KernelFacts):
    """out[kept] = reduce over `axes` of body[i] for i in `shape`; `out` has stride 0 on the
    reduced axes. op: sum | max | min | argmax (argmax: one axis, int64 result)."""

    shape: Shape
    axes: tuple[int, ...]
    op: str
    body: Expr
    out: Access
    out_dtype: np.dtype
    fused: tuple[str, ...] = ()

    kind: ClassVar[str] = "reduce"
    combine: ClassVar[str] = "reduction"

    def accesses(self) -> list[tuple[str, Access, Shape]]:
        return [("out", self.out, self.shape)] + _body_accesses([self.body], self.shape)

    def bodies(self) -> list[Expr]:
        return [self.body]

    def header(self) -> str:
        return (f"reduce/{self.op} {_space(self.shape)} over axes {list(self.axes)} "
                f"-> {short_name(self.out_dtype)}")


def with_bodies(k: "Elementwise | Reduce", bodies: Sequence[Expr]) -> "Elementwise | Reduce":
    """k with its bodies() replaced, in the same order (its stores' values, or its body)."""
    if isinstance(k, Reduce):
        return Reduce(k.shape, k.axes, k.op, bodies[0], k.out, k.out_dtype, k.fused)
    return Elementwise(k.shape, tuple(Store(s.access, v, s.accumulate)
                                      for s, v in zip(k.stores, bodies)), k.fused)


@kernel_kind
@dataclass(frozen=True)
class Gemm(KernelFacts):
    """out[b, m, n] = alpha * sum_k a[b, m, k] * b[b, k, n] over batch dims `batch` (added
    to what out holds when `accumulate`: a parameter update p += alpha * grad folded into
    the GEMM that makes grad; each element still has one writer); any strides, so
    transposes and broadcast batch dims cost nothing."""

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
    # An implicit GEMM (a convolution's columns read from the image, no im2col buffer): B's
    # k and n axes are each several strided axes, row-major (their sizes here, multiplying
    # to k and to n), and b's strides run over (batch..., k's axes..., n's axes...).
    b_split: tuple[Shape, Shape] | None = None
    # An implicit GEMM of small depth computed as a direct convolution (the target's
    # SchedulePolicy.direct_conv_depth; graphc/schedule/direct_conv.py): the same values,
    # a target without such a kernel may ignore it.
    direct: bool = False

    kind: ClassVar[str] = "gemm"

    @property
    def b_shape(self) -> Shape:
        """The iteration space b's strides run over."""
        if self.b_split is None:
            return self.batch + (self.k, self.n)
        return self.batch + self.b_split[0] + self.b_split[1]

    def accesses(self) -> list[tuple[str, Access, Shape]]:
        out_shape = self.batch + (self.m, self.n)
        acc = [("a", self.a, self.batch + (self.m, self.k)),
               ("b", self.b, self.b_shape), ("out", self.out, out_shape)]
        return acc + ([("in", self.out, out_shape)] if self.accumulate else [])

    def header(self) -> str:
        extra = (f" alpha={self.alpha:g}" if self.alpha != 1 else "") + (
            " out+=" if self.accumulate else "") + (
            f" b=implicit{list(self.b_split[0])}x{list(self.b_split[1])}"
            if self.b_split is not None else "") + (" direct" if self.direct else "")
        return (f"gemm batch={_space(self.batch)} m={self.m} n={self.n} k={self.k} "
                f"{short_name(self.dtype)}{extra}")


@kernel_kind
@dataclass(frozen=True)
class Gather(KernelFacts):
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

    kind: ClassVar[str] = "gather"
    message_fields: ClassVar[tuple[str, ...]] = ("what",)
    can_fail: ClassVar[bool] = True

    @property
    def out_shape(self) -> Shape:
        return self.x_shape[:self.axis] + self.idx_shape + self.x_shape[self.axis + 1:]

    def accesses(self) -> list[tuple[str, Access, Shape]]:
        return [("x", self.x, self.x_shape), ("indices", self.indices, self.idx_shape),
                ("out", self.out, self.out_shape)]

    def header(self) -> str:
        return f"gather axis={self.axis} x={_space(self.x_shape)} idx={_space(self.idx_shape)}"

    def checked_indices(self) -> tuple[Access, Shape, int, bool]:
        return self.indices, self.idx_shape, self.x_shape[self.axis], True

    def error(self) -> tuple[type[Exception], str]:
        return IndexError, self.what


@kernel_kind
@dataclass(frozen=True)
class ScatterAdd(KernelFacts):
    """out (shape out_shape, zero-filled first) += updates at indices along axis; repeated
    indices add up (in any order: "atomic")."""

    out_shape: Shape
    out: Access
    idx_shape: Shape
    indices: Access
    updates: Access  # over out_shape[:axis] + idx_shape + out_shape[axis+1:]
    axis: int
    dtype: np.dtype
    what: str = "scatter_add"

    kind: ClassVar[str] = "scatter_add"
    message_fields: ClassVar[tuple[str, ...]] = ("what",)
    can_fail: ClassVar[bool] = True
    combine: ClassVar[str] = "atomic"

    @property
    def updates_shape(self) -> Shape:
        return self.out_shape[:self.axis] + self.idx_shape + self.out_shape[self.axis + 1:]

    def accesses(self) -> list[tuple[str, Access, Shape]]:
        return [("indices", self.indices, self.idx_shape),
                ("updates", self.updates, self.updates_shape),
                ("out", self.out, self.out_shape)]

    def header(self) -> str:
        return (f"scatter_add axis={self.axis} out={_space(self.out_shape)} "
                f"idx={_space(self.idx_shape)}")

    def checked_indices(self) -> tuple[Access, Shape, int, bool]:
        return self.indices, self.idx_shape, self.out_shape[self.axis], True

    def error(self) -> tuple[type[Exception], str]:
        return IndexError, self.what


@kernel_kind
@dataclass(frozen=True)
class IndexCheck(KernelFacts):
    """Raises IndexError (naming `what`) unless every index read lies in [0, size)."""

    shape: Shape
    indices: Access
    size: int
    what: str

    kind: ClassVar[str] = "index_check"
    message_fields: ClassVar[tuple[str, ...]] = ("what",)
    can_fail: ClassVar[bool] = True

    def accesses(self) -> list[tuple[str, Access, Shape]]:
        return [("indices", self.indices, self.shape)]

    def header(self) -> str:
        return f"index_check {_space(self.shape)} in [0, {self.size})"

    def checked_indices(self) -> tuple[Access, Shape, int, bool]:
        return self.indices, self.shape, self.size, False

    def error(self) -> tuple[type[Exception], str]:
        return IndexError, self.what


@kernel_kind
@dataclass(frozen=True)
class ValueCheck(KernelFacts):
    """Raises ValueError(message) unless every value read is >= 0: the exponents of an
    integer power (numpy refuses negative ones rather than give 0)."""

    shape: Shape
    values: Access
    message: str

    kind: ClassVar[str] = "value_check"
    message_fields: ClassVar[tuple[str, ...]] = ("message",)
    can_fail: ClassVar[bool] = True

    def accesses(self) -> list[tuple[str, Access, Shape]]:
        return [("values", self.values, self.shape)]

    def header(self) -> str:
        return f"value_check {_space(self.shape)} >= 0"

    def error(self) -> tuple[type[Exception], str]:
        return ValueError, self.message


@kernel_kind
@dataclass(frozen=True)
class Scan(KernelFacts):
    """out[i] = body at index 0 op ... op body at index i_axis along `axis` (from the end
    when `reverse`), op sum | prod: each row runs in order, rows are independent."""

    shape: Shape
    axis: int
    op: str
    reverse: bool
    body: Expr
    out: Access
    dtype: np.dtype
    fused: tuple[str, ...] = ()

    kind: ClassVar[str] = "scan"

    def accesses(self) -> list[tuple[str, Access, Shape]]:
        return [("out", self.out, self.shape)] + _body_accesses([self.body], self.shape)

    def bodies(self) -> list[Expr]:
        return [self.body]

    def header(self) -> str:
        return (f"scan/{self.op} {_space(self.shape)} along axis {self.axis}"
                f"{' reversed' if self.reverse else ''} -> {short_name(self.dtype)}")


@kernel_kind
@dataclass(frozen=True)
class Sort(KernelFacts):
    """out (int64) = the indices that sort x along `axis`, stably, NaN last (numpy's
    argsort kind="stable"): a merge sort per row, O(n log n), whose passes alternate
    between the two halves of `scratch` (a buffer of 2n int64)."""

    shape: Shape
    axis: int
    x: Access
    out: Access
    scratch: int
    dtype: np.dtype  # of x

    kind: ClassVar[str] = "sort"
    buffer_fields: ClassVar[tuple[str, ...]] = ("scratch",)

    def accesses(self) -> list[tuple[str, Access, Shape]]:
        row = Access(self.scratch, (1,), 0)
        n = (2 * self.shape[self.axis],)
        return [("x", self.x, self.shape), ("out", self.out, self.shape), ("out", row, n),
                ("in", row, n)]

    def header(self) -> str:
        return f"sort {_space(self.shape)} along axis {self.axis} {short_name(self.dtype)}"


# The phases of an AllReduce kernel: blocking, or a non-blocking reduction's start, progress
# test and wait (graphc.schedule.overlap).
PHASES = ("", "start", "test", "wait")


@kernel_kind
@dataclass(frozen=True)
class AllReduce(KernelFacts):
    """buffer (`size` contiguous elements) <- the sum over the job's `ranks` processes of
    what each holds there, in place (MPI_Allreduce). Every process runs it at the same point
    of the same schedule: it waits for all of them. A mean is this sum, divided where it is
    read (the division fuses into the kernels that use it)."""

    buffer: int
    size: int
    dtype: np.dtype
    ranks: int
    # "" blocks (MPI_Allreduce). A non-blocking reduction is two kernels: "start"
    # (MPI_Iallreduce) stores its MPI request in the int64 buffer `request`; "wait"
    # (MPI_Wait on it) completes the sum. Both declare the buffer written, so no kernel may
    # touch it between them (the memory plan keeps it and the request live until the wait).
    # "test" (MPI_Test on the request, between the kernels in flight) lets MPI progress the
    # reductions in flight: it touches only the request (set to null once complete).
    phase: str = ""
    request: int = -1

    kind: ClassVar[str] = "all_reduce"

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise ValueError(f"AllReduce.phase: {self.phase!r} is not one of {PHASES}")
        if self.phase and self.request < 0:
            raise ValueError(f"AllReduce.request: a {self.phase} needs a request buffer")

    def accesses(self) -> list[tuple[str, Access, Shape]]:
        whole = Access(self.buffer, (1,), 0)
        req = Access(self.request, (1,), 0)
        if self.phase == "test":
            return [("out", req, (1,)), ("in", req, (1,))]
        both: list[tuple[str, Access, Shape]] = [("out", whole, (self.size,)),
                                                  ("in", whole, (self.size,))]
        if not self.phase:
            return both
        return both + [("out" if self.phase == "start" else "in", req, (1,))]

    def header(self) -> str:
        what = f"all_reduce_{self.phase}" if self.phase else "all_reduce"
        return (f"{what}/sum [{self.size}] {short_name(self.dtype)} over {self.ranks} "
                "processes" + (f" request b{self.request}" if self.phase else ""))


@dataclass(frozen=True)
class LoopCarry:
    """One carry of a Loop, double-buffered: step 0 reads `init`; each step writes `final`
    or `spare`, alternating so that the last step writes `final`, and the next step reads
    what it wrote. `inside`/`out`: the body's input and output buffer for it."""

    init: int
    final: int
    spare: int
    inside: int
    out: int

    outer_fields: ClassVar[tuple[str, ...]] = ("init", "final", "spare")


@dataclass(frozen=True)
class LoopSlice:
    """A sequence of a Loop: `outer` (contiguous, axis 0 the step) is seen by the body, at
    step t, as its buffer `inner` starting at element t * (outer's size / length): a read
    (xs) or a write (ys) of that slice, no copy."""

    outer: int
    inner: int

    outer_fields: ClassVar[tuple[str, ...]] = ("outer",)


@dataclass(frozen=True)
class LoopBind:
    """A loop-invariant buffer of the body (a captured tensor, a parameter, a constant):
    body buffer `inner` is outer buffer `outer` at every step."""

    outer: int
    inner: int

    outer_fields: ClassVar[tuple[str, ...]] = ("outer",)


@kernel_kind
@dataclass(frozen=True)
class Loop(KernelFacts):
    """A scan: `body` (a schedule of its own, planned once; its temporaries in the outer
    buffer `arena`, -1 when it has none) runs `length` times, steps t = 0..length-1 (from
    the end when `reverse`). Its inputs are its carries' `inside` buffers, the per-step
    slices of `xs` and the `invariants`; its outputs the carries' `out` and the slices of
    `ys`. The code and the buffers do not depend on `length`. can_fail: some body kernel
    can fail (the loop then stops at the first failure and reports it)."""

    length: int
    reverse: bool
    body: "Schedule"
    carries: tuple[LoopCarry, ...]
    xs: tuple[LoopSlice, ...]
    ys: tuple[LoopSlice, ...]
    invariants: tuple[LoopBind, ...]
    arena: int = -1
    can_fail: bool = False  # type: ignore[misc]  # (a fact of this loop, not of the kind)

    kind: ClassVar[str] = "loop"
    buffer_fields: ClassVar[tuple[str, ...]] = ("arena",)

    def accesses(self) -> list[tuple[str, Access, Shape]]:
        """Whole buffers (an empty access: the loop hands each body kernel its pointers)."""
        def whole(role: str, bid: int) -> tuple[str, Access, Shape]:
            return role, Access(bid, (), 0), ()

        out: list[tuple[str, Access, Shape]] = []
        for c in self.carries:
            out += [whole("in", c.init), whole("out", c.final), whole("in", c.final),
                    whole("out", c.spare), whole("in", c.spare)]
        out += [whole("in", x.outer) for x in self.xs]
        out += [whole("out", y.outer) for y in self.ys]
        out += [whole("in", v.outer) for v in self.invariants]
        if self.arena >= 0:
            out += [whole("out", self.arena), whole("in", self.arena)]
        return out

    def header(self) -> str:
        return (f"loop {self.length} steps{' reversed' if self.reverse else ''}: "
                f"{len(self.carries)} carries, {len(self.xs)} xs, {len(self.ys)} ys, "
                f"{len(self.invariants)} invariants, body of {len(self.body.kernels)} kernels")

    def failing(self) -> list["Kernel"]:
        """The body kernels (looking into nested loops) that can fail."""
        out: list[Kernel] = []
        for k in self.body.kernels:
            if isinstance(k, Loop):
                out += k.failing()
            elif k.can_fail:
                out.append(k)
        return out

    def error(self) -> tuple[type[Exception], str] | None:
        """The failing body kernel's error; where several can fail, the words of each (the
        status of a loop names the loop, not which of its kernels stopped it)."""
        from graphc.errors import index_error_message
        errors = []
        for k in self.failing():
            error, checked = k.error(), k.checked_indices()
            if error is not None and checked is not None:  # as a kernel of its own says it
                error = error[0], index_error_message(error[1], checked[2], checked[3])
            if error is not None:
                errors.append(error)
        if not errors:
            return None
        words = list(dict.fromkeys(w for _, w in errors))
        return errors[0][0], words[0] if len(words) == 1 else "one of: " + "; ".join(words)


Kernel = Union[Elementwise, Reduce, Gemm, Gather, ScatterAdd, IndexCheck, ValueCheck, Scan,
               Sort, AllReduce, Loop]
KERNEL_KINDS = tuple(KINDS)


@dataclass(frozen=True)
class Schedule:
    """A whole program as kernels: the kernels in order, the buffers they use, where the
    program's data lives, and the memory plan of its temporaries. Built in one step by
    graphc.schedule.schedule_graph (lower, then plan); never changed afterwards."""

    buffers: Mapping[int, Buffer]
    kernels: tuple[Kernel, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    params: Mapping[int, Any]  # buffer id -> ParamStorage
    consts: Mapping[int, np.ndarray]
    plan: Any = None  # memory.MemoryPlan
    report: Any = None  # the PassReport of the specialised graph
    graph: Any = None  # the specialised, optimized graph it was made from
    # per kernel, the nodes of `graph` whose values it computes (fused ones included), in
    # graph order: what a viewer links a kernel to
    kernel_nodes: tuple[tuple[Any, ...], ...] = ()

    def listing(self) -> str:
        from graphc.schedule.printing import schedule_listing
        return schedule_listing(self)


def _product(shape: Shape) -> int:
    """The element count: an int, or a `Size` where the shape holds symbols."""
    total = 1
    for d in shape:
        total = total * d
    return total


def contiguous_strides(shape: Shape) -> tuple[int, ...]:
    strides, acc = [], 1
    for d in reversed(shape):
        strides.append(acc)
        # a symbolic size is taken as it is: at 0 there are no elements, so strides after
        # it are never used
        acc *= d if isinstance(d, Size) else max(d, 1)
    return tuple(reversed(strides))
