"""Runs a kernel schedule with numpy, kernel by kernel, over one arena of temporaries: the
reference that native backends are compared with, kernel for kernel."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from numpy.lib.stride_tricks import as_strided

from graphc.backends.numpy.loop import run_loop
from graphc.backends.numpy.scalar import evaluate
from graphc.errors import bad_index, index_error_message
from graphc.ops.shape_ops import check_indices
from graphc.schedule import ir
from graphc.schedule.core_ops import reduction_identity
from graphc.schedule.scalar import lower_expr
from graphc.schedule.lower import Schedule
from graphc.schedule.policy import DEFAULT_POLICY, SchedulePolicy


class KernelRunner:
    """Executes one Schedule; buffers are numpy arrays, temporaries views into the arena."""

    def __init__(self, schedule: Schedule, arena: np.ndarray | None = None) -> None:
        """arena: where the temporaries live (a loop body's: its loop's buffer)."""
        self.schedule = schedule
        plan = schedule.plan
        self.arena = np.zeros(plan.arena_bytes if plan else 0, np.uint8) if arena is None \
            else arena
        self.arrays: dict[int, np.ndarray] = {}
        self._lowered: dict[int, ir.Expr] = {}  # id(body) -> its core ops
        self._lowering_memo: dict[int, ir.Expr] = {}  # shared: bodies share nodes
        self.requests: dict[int, Any] = {}  # request buffer id -> mpi4py request in flight
        self.loops: dict[int, KernelRunner] = {}  # id of a Loop kernel -> its body's runner
        for b in schedule.buffers.values():
            if b.role == "temp":
                start = plan.offsets.get(b.id, 0) if plan else 0
                raw = self.arena[start:start + b.nbytes] if plan and b.id in plan.offsets \
                    else np.zeros(b.nbytes, np.uint8)
                self.arrays[b.id] = raw.view(b.dtype).reshape(b.shape)
            elif b.role == "const":
                self.arrays[b.id] = np.ascontiguousarray(schedule.consts[b.id])

    # -- accesses -----------------------------------------------------------------------
    def _strided(self, access: ir.Access, shape: Sequence[int]) -> np.ndarray:
        base = self.arrays[access.buffer].reshape(-1)
        item = base.dtype.itemsize
        if not shape or 0 in shape:
            if 0 in shape:
                return np.empty(shape, base.dtype)
            return base[access.offset:access.offset + 1].reshape(())
        return as_strided(base[access.offset:], shape=tuple(shape),
                          strides=tuple(s * item for s in access.strides))

    def _flat_index(self, access: ir.Access, shape: Sequence[int]) -> np.ndarray:
        """offset + sum(s_k i_k) at every index of `shape`."""
        index = np.full(shape, access.offset, np.int64)
        for k, (n, s) in enumerate(zip(shape, access.strides)):
            index += (np.arange(n, dtype=np.int64) * s).reshape(
                (-1,) + (1,) * (len(shape) - k - 1))
        return index

    def _guarded(self, load: ir.Load, guard: ir.Guard, shape: Sequence[int],
                 otherwise: np.ndarray) -> np.ndarray:
        """A guarded load (`guard` is load.guard): memory is read only inside its bounds."""
        inside = np.ones(shape, bool)
        for bound in guard.bounds:
            at = np.full(shape, bound.offset, np.int64)
            for k, scale in bound.terms:
                at += (np.arange(shape[k], dtype=np.int64) * scale).reshape(
                    (-1,) + (1,) * (len(shape) - k - 1))
            inside &= (bound.lo <= at) & (at < bound.hi)
        flat = self.arrays[load.access.buffer].reshape(-1)
        index = np.where(inside, self._flat_index(load.access, shape), 0)
        return np.where(inside, flat[index], otherwise)

    def _eval(self, body: ir.Expr, shape: Sequence[int], memo: dict[int, np.ndarray]
              ) -> np.ndarray:
        """A kernel body's value at every index of `shape`, from its core ops."""
        expr = self._lowered.get(id(body))
        if expr is None:
            expr = self._lowered[id(body)] = lower_expr(body, self._lowering_memo)
        for e in ir.postorder(expr):
            if id(e) in memo:
                continue
            if isinstance(e, ir.Load):
                value = self._strided(e.access, shape) if e.guard is None else \
                    self._guarded(e, e.guard, shape, memo[id(e.guard.otherwise)])
            elif isinstance(e, ir.Const):
                value = np.asarray(e.value, e.dtype)
            elif isinstance(e, ir.Index):
                ix = np.arange(shape[e.axis], dtype=e.dtype)
                value = ix.reshape((-1,) + (1,) * (len(shape) - e.axis - 1))
            else:
                value = evaluate(e, [memo[id(a)] for a in e.args])
            if value.dtype != e.dtype:
                value = value.astype(e.dtype)
            memo[id(e)] = value
        return memo[id(expr)]

    # -- kernels ------------------------------------------------------------------------
    def run_kernel(self, k: ir.Kernel) -> None:
        if isinstance(k, ir.Elementwise):
            if 0 in k.shape:
                return
            memo: dict[int, np.ndarray] = {}
            values = [self._eval(s.value, k.shape, memo) for s in k.stores]
            for store, value in zip(k.stores, values):  # every value first: stores may alias
                if store.accumulate:
                    self._accumulate(store.access, k.shape, value)
                    continue
                out = self._strided(store.access, k.shape)
                np.copyto(out, np.broadcast_to(value, k.shape), casting="unsafe")
        elif isinstance(k, ir.Reduce):
            self._reduce(k)
        elif isinstance(k, ir.Gemm):
            a = self._strided(k.a, k.batch + (k.m, k.k))
            # (an implicit GEMM's B: its sub-axes read, then merged into k and n)
            b = self._strided(k.b, k.b_shape).reshape(k.batch + (k.k, k.n))
            out = self._strided(k.out, k.batch + (k.m, k.n))
            product = np.matmul(a, b)
            if k.alpha != 1:
                product = product * np.asarray(k.alpha, k.dtype)
            out[...] = out + product if k.accumulate else product
        elif isinstance(k, ir.Gather):
            x = self._strided(k.x, k.x_shape)
            idx = self._strided(k.indices, k.idx_shape)
            check_indices(idx, k.x_shape[k.axis], k.what)
            out_shape = k.x_shape[:k.axis] + k.idx_shape + k.x_shape[k.axis + 1:]
            self._strided(k.out, out_shape)[...] = np.take(x, idx, axis=k.axis)
        elif isinstance(k, ir.ScatterAdd):
            idx = self._strided(k.indices, k.idx_shape)
            check_indices(idx, k.out_shape[k.axis], k.what)
            upd_shape = k.out_shape[:k.axis] + k.idx_shape + k.out_shape[k.axis + 1:]
            upd = self._strided(k.updates, upd_shape)
            out = np.zeros(k.out_shape, k.dtype)
            moved = np.moveaxis(upd, list(range(k.axis, k.axis + len(k.idx_shape))),
                                list(range(len(k.idx_shape))))
            np.add.at(np.moveaxis(out, k.axis, 0), idx, moved)
            self._strided(k.out, k.out_shape)[...] = out
        elif isinstance(k, ir.IndexCheck):
            bad = bad_index(self._strided(k.indices, k.shape), k.size, negative=False)
            if bad is not None:
                raise IndexError(index_error_message(k.what, k.size, False, bad))
        elif isinstance(k, ir.Scan):
            if 0 in k.shape:
                return
            body = np.broadcast_to(self._eval(k.body, k.shape, {}), k.shape)
            fn = np.cumsum if k.op == "sum" else np.cumprod
            if k.reverse:
                body = np.flip(body, k.axis)
            with np.errstate(all="ignore"):
                value = fn(body, axis=k.axis, dtype=k.dtype)
            self._strided(k.out, k.shape)[...] = np.flip(value, k.axis) if k.reverse else value
        elif isinstance(k, ir.Sort):
            if 0 in k.shape:
                return
            x = self._strided(k.x, k.shape)
            self._strided(k.out, k.shape)[...] = np.argsort(x, axis=k.axis, kind="stable")
        elif isinstance(k, ir.ValueCheck):
            checked = self._strided(k.values, k.shape)
            if checked.size and checked.min() < 0:
                raise ValueError(k.message)
        elif isinstance(k, ir.AllReduce):
            from graphc.distributed import comm
            flat = self.arrays[k.buffer].reshape(-1)[:k.size]
            if k.phase == "start":  # the request object lives beside the arrays until its wait
                self.requests[k.request] = comm.all_reduce_start(flat, k.ranks)
            elif k.phase == "test":
                comm.all_reduce_test(self.requests[k.request])
            elif k.phase == "wait":
                comm.all_reduce_wait(self.requests.pop(k.request))
            else:
                comm.all_reduce_inplace(flat, k.ranks)
        elif isinstance(k, ir.Loop):
            run_loop(self, k)
        else:
            raise NotImplementedError(f"numpy kernels: no runner for {type(k).__name__}")

    def _accumulate(self, access: ir.Access, shape, value: np.ndarray) -> None:
        """buffer.flat[offset + sum(s_k i_k)] += value[i], repeated targets adding up."""
        flat = self.arrays[access.buffer].reshape(-1)
        index = self._flat_index(access, shape)
        np.add.at(flat, index.reshape(-1),
                  np.broadcast_to(value, shape).reshape(-1).astype(flat.dtype))

    def _reduce(self, k: ir.Reduce) -> None:
        keep = tuple(1 if a in k.axes else d for a, d in enumerate(k.shape))
        out = self._strided(ir.Access(k.out.buffer, k.out.strides, k.out.offset), keep) \
            if 0 not in keep else None
        if out is None:
            return
        if 0 in k.shape:
            # (a max over an empty axis that the user asked for fails its shape rule before
            # any kernel runs; here it is an intermediate, e.g. log_softmax's of no elements,
            # whose value is never read: the identity, as the native backend stores)
            out[...] = reduction_identity(k.op, out.dtype)
            return
        body = np.broadcast_to(self._eval(k.body, k.shape, {}), k.shape)
        with np.errstate(all="ignore"):
            if k.op == "sum":
                value = np.sum(body, axis=k.axes, keepdims=True, dtype=k.out_dtype)
            elif k.op == "max":
                value = np.max(body, axis=k.axes, keepdims=True)
            elif k.op == "min":
                value = np.min(body, axis=k.axes, keepdims=True)
            else:
                value = np.argmax(body, axis=k.axes[0], keepdims=True)
        out[...] = value

    def run(self, args: Sequence[np.ndarray]) -> list[np.ndarray]:
        s = self.schedule
        for bid, array in zip(s.inputs, args):
            self.arrays[bid] = np.ascontiguousarray(array)
        for bid, storage in s.params.items():
            self.arrays[bid] = storage.array
        outputs = {}
        for bid in s.outputs:
            b = s.buffers[bid]
            outputs[bid] = self.arrays[bid] = np.empty(b.shape, b.dtype)
        for kernel in s.kernels:
            self.run_kernel(kernel)
        return [outputs[bid].copy() if s.outputs.count(bid) > 1 else outputs[bid]
                for bid in s.outputs]


class KernelExecutable:
    """The numpy backend in kernel mode: one schedule per set of input shapes."""

    def __init__(self, graph, optimize: bool = True,
                 policy: SchedulePolicy = DEFAULT_POLICY) -> None:
        self.graph = graph
        self.optimize = optimize
        self.policy = policy
        self.cache: dict[tuple, KernelRunner] = {}

    @property
    def source(self) -> str:
        if not self.cache:
            return "(no schedule yet: kernels are planned per input shapes at the first call)"
        return "\n\n".join(r.schedule.listing() for r in self.cache.values())

    def runner(self, shapes: tuple) -> KernelRunner:
        if shapes not in self.cache:
            from graphc.schedule import schedule_graph
            self.cache[shapes] = KernelRunner(schedule_graph(self.graph, list(shapes),
                                                             optimize=self.optimize,
                                                             policy=self.policy))
        return self.cache[shapes]

    def run(self, args: Sequence[np.ndarray]) -> list[np.ndarray]:
        return self.runner(tuple(a.shape for a in args)).run(args)
