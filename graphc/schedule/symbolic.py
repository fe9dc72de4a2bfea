"""Schedules whose sizes are symbols: one kernel plan for every binding of the call-time
sizes, and the memory plan of each binding (cheap, in Python, no code generated)."""
from __future__ import annotations

import dataclasses
from typing import Mapping

from graphc import sizes
from graphc.collector import collector_paused
from graphc.graph import Graph
from graphc.node import Node
from graphc.passes import run_pipeline, select_passes
from graphc.schedule.ir import Buffer, Loop, Schedule
from graphc.schedule.memory import MemoryPlan, plan_memory
from graphc.schedule.policy import DEFAULT_POLICY, SchedulePolicy
from graphc.specialize import unify_symbols

# Kernel kinds whose records, lowering and llvm code take symbolic sizes. A schedule with
# any other kind (sorts, running sums, all-reduces) is specialised per shape. A loop's
# body is checked as a schedule of its own (its length stays a number: a scan over a
# call-time length is specialised).
SYMBOLIC_KINDS = frozenset({"elementwise", "reduce", "gemm", "gather", "scatter_add",
                            "index_check", "value_check", "loop"})


# The least value a symbol has in the representative binding that choices of speed are
# made with: W1's step, first called at batch 8, ran 4x slower at batch 128 with the
# choices of batch 8 (one thread, GEMMs not turned around); small batches lose little with
# the choices of a larger one.
REPRESENTATIVE_FLOOR = 128


def representative_binding(values: Mapping[sizes.SizeVar, int]) -> dict[sizes.SizeVar, int]:
    """The binding that choices of speed are made with: the first call's, each symbol at
    least REPRESENTATIVE_FLOOR."""
    return {v: max(n, REPRESENTATIVE_FLOOR) for v, n in values.items()}


class NotSymbolic(Exception):
    """The program cannot be scheduled with symbolic sizes (yet): specialise it instead."""


def check_nodes(graph: Graph) -> None:
    """Raises NotSymbolic for a graph with ops whose code or checks need their sizes as
    numbers: all-reduces (their records are specialised), a squeeze of a
    call-time axis (its size must be 1: an int index past a call-time size, which the
    specialised shape rule reports as an IndexError); loop bodies alike."""
    from graphc.region import node_regions
    for n in graph.nodes():
        for body in node_regions(n):
            check_nodes(Graph(body.inputs, tuple(body.outputs)))
        if n.op == "all_reduce":
            raise NotSymbolic(f"{n.op} is specialised per shape")
        if n.op == "squeeze" and not all(isinstance(n.inputs[0].shape[a], int)
                                         for a in n.attrs["axes"]):
            raise NotSymbolic("a squeeze of a call-time axis is specialised")


# The message of a program specialised for its convolutions (lower.implicit_columns).
IMPLICIT_GEMM = ("a convolution's columns read in place (implicit GEMM) over call-time sizes "
                 "other than the batch need their sizes: specialised per shape")


def check_columns(graph: Graph) -> None:
    """Raises NotSymbolic for a convolution whose windows run over call-time sizes other
    than the image count (axis 0) and whose columns (windows, then views) a matrix
    product reads as B: the lowering would read them in place, which needs those sizes as
    numbers (policy.implicit_gemm_or_specialize). A call-time batch alone is read in place
    with symbols (implicit.only_images: the kernels take the image count at run time).
    Found on the raw graph, so that such a program is not optimized and lowered with
    symbols first to find out (W6: 0.14 s of CPU)."""
    from graphc.schedule.implicit import VIEW_OPS
    nodes = graph.nodes()
    users: dict[Node, list[Node]] = {}
    for n in nodes:
        for i in n.inputs:
            users.setdefault(i, []).append(n)
    for n in nodes:
        if n.op != "windows" or all(isinstance(d, int) for d in n.inputs[0].shape[1:]):
            continue
        todo, seen = [n], {n}
        while todo:
            v = todo.pop()
            for u in users.get(v, ()):
                if u.op == "matmul" and u.inputs[1] is v:
                    raise NotSymbolic(IMPLICIT_GEMM)
                if u.op in VIEW_OPS and u not in seen:
                    seen.add(u)
                    todo.append(u)


def input_symbols(graph: Graph) -> set[sizes.SizeVar]:
    """The symbols that the inputs' shapes give a value on every call."""
    return {v for p in graph.inputs for d in p.shape if isinstance(d, sizes.Size)
            and d.is_var() for v in d.atoms()}


def schedule_symbolic(graph: Graph, binding: Mapping[sizes.SizeVar, int],
                      optimize: bool = True, policy: SchedulePolicy = DEFAULT_POLICY
                      ) -> Schedule:
    """`graph` optimized and lowered with its sizes left symbolic. Choices of policy that
    need a number (GEMM orientation, thread counts) take it from `binding` (the first
    call's sizes); the kernels are correct for every binding. The plan is `binding`'s.
    Raises NotSymbolic where some part needs a number it cannot have."""
    # (the collector paused as schedule_graph pauses it: left on, its full passes over the
    # heap cost a 96-layer MLP step's symbolic schedule about 0.1 s)
    with collector_paused():
        return _schedule_symbolic(graph, binding, optimize, policy)


def _schedule_symbolic(graph: Graph, binding: Mapping[sizes.SizeVar, int], optimize: bool,
                       policy: SchedulePolicy) -> Schedule:
    from graphc.schedule import loop_outputs_sunk
    from graphc.schedule.lower import lower_graph
    check_nodes(graph)
    try:
        with sizes.representative(binding):
            graph = unify_symbols(graph)
            known = input_symbols(graph)
            graph, report = run_pipeline(graph, select_passes(optimize))
            if optimize:
                graph = loop_outputs_sunk(graph, report)
            check_nodes(graph)
            lowered = lower_graph(graph, policy, symbolic=True)
    except TypeError as e:  # a size asked for a number (sizes.Size.__index__, comparisons)
        raise NotSymbolic(str(e)) from e
    check_kinds(lowered)
    unknown = {v for b in lowered.buffers.values() for v in sizes.symbols_of(b.shape)} - known
    if unknown:
        raise NotSymbolic(f"sizes {sorted(map(str, unknown))} are not given by an input")
    schedule = dataclasses.replace(lowered, report=report, graph=graph)
    return dataclasses.replace(schedule, plan=plan_for(schedule, binding))


def check_kinds(schedule: Schedule) -> None:
    """Raises NotSymbolic for a kernel (loop bodies included) of a kind not in
    SYMBOLIC_KINDS."""
    for k in schedule.kernels:
        if k.kind not in SYMBOLIC_KINDS:
            raise NotSymbolic(f"{k.kind} kernels are specialised per shape")
        if isinstance(k, Loop):
            check_kinds(k.body)


def bound_buffers(schedule: Schedule, binding: Mapping[sizes.SizeVar, int]
                  ) -> dict[int, Buffer]:
    """The schedule's buffers with the sizes of `binding`."""
    return {bid: dataclasses.replace(b, shape=tuple(sizes.evaluate(d, binding)
                                                    for d in b.shape))
            for bid, b in schedule.buffers.items()}


def plan_for(schedule: Schedule, binding: Mapping[sizes.SizeVar, int],
             spans: dict[int, tuple[int, int]] | None = None) -> MemoryPlan:
    """The memory plan for one binding: the same greedy placement as a specialised
    schedule's, so it reuses memory exactly as well. Temporaries used by one kernel never
    share bytes in any plan (their lifetimes overlap there), so what code may assume about
    aliasing holds for every binding."""
    return plan_memory(dataclasses.replace(schedule, buffers=bound_buffers(schedule, binding)),
                       spans)


def has_symbols(schedule: Schedule) -> bool:
    return any(not sizes.all_static(b.shape) for b in schedule.buffers.values())


__all__ = ["IMPLICIT_GEMM", "NotSymbolic", "REPRESENTATIVE_FLOOR", "SYMBOLIC_KINDS",
           "bound_buffers", "check_columns", "check_kinds",
           "has_symbols", "input_symbols", "plan_for", "representative_binding",
           "schedule_symbolic"]
