"""Large elementwise kernels on every core: the outermost axis longer than 1 is split among a
team of libgomp threads (GOMP_parallel, loaded by the GEMM module); one thread where libgomp
is missing, in a forked child, or when the kernel is too small for threads to pay off."""
from __future__ import annotations

from llvmlite import ir

from graphc.backends.llvm import gemm
from graphc.backends.llvm.size_values import as_value
from graphc.backends.llvm.threads import emit_team_condition
from graphc.schedule import ir as kir
from graphc.sizes import hint

I32, I64 = ir.IntType(32), ir.IntType(64)
PTR = ir.PointerType()

# Below this many elements a kernel runs on one thread: waking a team costs a few us.
PARALLEL_MIN_ELEMENTS = 1 << 16
# What a libm call (libmvec: about 25 cycles per 16 lanes) adds to an element, in plain
# elements (a load and a store, about half a cycle each when vectorized): an LSTM's gate
# kernel of 32 x 256 elements with five of them is a plain kernel of 8192 x 21 elements
# or more (a subexpression the listing repeats counts each time).
TRANSCENDENTAL_WEIGHT = 4
TRANSCENDENTALS = frozenset(("exp", "log", "log1p", "sin", "cos", "tan", "tanh", "erf",
                             "sinh", "cosh", "asinh", "acosh", "atanh", "asin", "acos",
                             "atan", "expm1", "log2", "log10", "atan2", "pow", "sigmoid"))


def split_axis(k: kir.Elementwise) -> int:
    """The axis a team splits: the first one longer than 1 (a leading axis of 1, as in an
    im2col copy [1, C, KH, KW, N, OH, OW], would leave a team nothing to share)."""
    # (a symbolic size counts as long: any axis may be split, the bounds are read at run time)
    return next((a for a, d in enumerate(k.shape) if not isinstance(d, int) or d > 1), 0)


def _disjoint_slabs(k: kir.Elementwise, axis: int) -> bool:
    """Whether every accumulating store writes, for each index along `axis`, a set of
    elements no other index along it touches (col2im: the windows of one image add only
    into that image), and nothing else in the kernel reads the buffers accumulated into:
    then threads that own different indices never write one element."""
    targets = {s.access.buffer for s in k.stores if s.accumulate}
    if any(ld.access.buffer in targets for s in k.stores for ld in kir.expr_loads(s.value)):
        return False
    for s in k.stores:
        if not s.accumulate:
            continue
        strides = s.access.strides
        span = sum(abs(st) * (d - 1) for a, (st, d) in enumerate(zip(strides, k.shape))
                   if a != axis)
        if abs(strides[axis]) <= span:
            return False
    return True


def element_weight(k: kir.Elementwise) -> int:
    """An element's work in plain elements: 1, plus TRANSCENDENTAL_WEIGHT per libm call
    (a node shared by several stores once; counted by identity, not by hashing the
    expression, which recurses through it: deep chains exist)."""
    calls = {id(e) for s in k.stores for e in kir.postorder(s.value)
             if isinstance(e, kir.Apply) and e.op in TRANSCENDENTALS}
    return 1 + TRANSCENDENTAL_WEIGHT * len(calls)


def threads_for(k: kir.Elementwise) -> int:
    """How many threads an elementwise kernel gets (1: run it inline): a team where its
    work, in plain elements, pays for waking one (the gate kernels in an RNN's loop)."""
    size = 1
    for d in k.shape:
        size *= hint(d)  # (symbolic sizes: the representative binding's, a choice of speed)
    if size * element_weight(k) < PARALLEL_MIN_ELEMENTS:
        return 1
    axis = split_axis(k)
    if any(s.accumulate for s in k.stores) and not _disjoint_slabs(k, axis):
        return 1  # accumulating stores may hit one element from several iterations
    threads = min(gemm.num_threads(), hint(k.shape[axis]) if k.shape else 1)
    if threads <= 1 or not gemm.openmp_available():
        return 1
    return threads


def reduce_threads(k: kir.Reduce, keep_shape: list) -> int:
    """How many threads a reduction that sums each output in turn gets: its outputs are
    shared out along the first kept axis (BatchNorm's statistics: one channel each)."""
    size = 1
    for d in k.shape:
        size *= hint(d)
    if size < PARALLEL_MIN_ELEMENTS or not keep_shape:
        return 1
    threads = min(gemm.num_threads(), hint(keep_shape[0]))
    if threads <= 1 or not gemm.openmp_available():
        return 1
    return threads


def _declare(module: ir.Module, name: str, ret: ir.Type, args: list) -> ir.Function:
    fn = module.globals.get(name)
    if fn is None:
        fn = ir.Function(module, ir.FunctionType(ret, args), name)
    return fn


def emit_team_call(module: ir.Module, b: ir.IRBuilder, bufs: ir.Value, part: ir.Function,
                   threads: int, name: str) -> None:
    """Calls part(bufs, t, nt) on a team of `threads` (or part(bufs, 0, 1) alone)."""
    team = ir.Function(module, ir.FunctionType(ir.VoidType(), [PTR]), f"{name}_team")
    team.linkage = "internal"
    tb = ir.IRBuilder(team.append_basic_block("entry"))
    t = tb.sext(tb.call(_declare(module, "omp_get_thread_num", I32, []), []), I64)
    nt = tb.sext(tb.call(_declare(module, "omp_get_num_threads", I32, []), []), I64)
    tb.call(part, [team.args[0], t, nt])
    tb.ret_void()
    ok = emit_team_condition(module, b)
    with b.if_else(ok) as (together, alone):
        with together:
            gomp = _declare(module, "GOMP_parallel", ir.VoidType(), [PTR, PTR, I32, I32])
            b.call(gomp, [team, bufs, ir.Constant(I32, threads), ir.Constant(I32, 0)])
        with alone:
            b.call(part, [bufs, ir.Constant(I64, 0), ir.Constant(I64, 1)])


def emit_call_by_depth(module: ir.Module, b: ir.IRBuilder, bufs: ir.Value, part: ir.Function,
                       threads: int, name: str, depth, outputs: int, min_macs: int) -> None:
    """Calls part(bufs, t, nt) on a team of `threads`, or alone with one thread. Where
    `depth` is a call-time size and `min_macs` is set, the call's depth times `outputs`
    multiply-adds decide at each call: the team from `min_macs` on (a deep GEMM over a
    call-time batch: gemm_dot.py, gemm_bcast.py)."""
    alone_args = [bufs, ir.Constant(I64, 0), ir.Constant(I64, 1)]
    if threads > 1 and min_macs and not isinstance(depth, int):
        macs = b.mul(as_value(b, depth), ir.Constant(I64, outputs))
        with b.if_else(b.icmp_signed(">=", macs, ir.Constant(I64, min_macs))) as (team, alone):
            with team:
                emit_team_call(module, b, bufs, part, threads, name)
            with alone:
                b.call(part, alone_args)
    elif threads > 1:
        emit_team_call(module, b, bufs, part, threads, name)
    else:
        b.call(part, alone_args)

