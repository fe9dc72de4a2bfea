"""From an optimized graph to kernels: the kernel IR, the scheduler, the buffer plan."""
from __future__ import annotations

import dataclasses
import time
from typing import Sequence

from graphc.collector import collector_paused
from graphc.graph import Graph
from graphc.node import Dim
from graphc.passes import run_pipeline, select_passes
from graphc.passes.sink_loops import sink_loops
from graphc.passes.report import PassReport, PassStats
from graphc.schedule.buckets import bucket_all_reduce
from graphc.schedule.ir import Schedule
from graphc.schedule.lower import lower_graph
from graphc.schedule.memory import MemoryPlan, plan_memory
from graphc.schedule.overlap import overlap_reductions
from graphc.schedule.policy import DEFAULT_POLICY, SchedulePolicy
from graphc.specialize import specialize_graph


def schedule_graph(graph: Graph, shapes: Sequence[tuple[Dim, ...]] | None = None,
                   optimize: bool = True, policy: SchedulePolicy = DEFAULT_POLICY) -> Schedule:
    """Specialises `graph` to the input `shapes` (default: its static shapes), optimizes it
    again (sizes are constants now), and lowers it to a planned list of kernels with the
    target's `policy`."""
    with collector_paused():
        return _schedule_graph(graph, shapes, optimize, policy)


def _schedule_graph(graph: Graph, shapes: Sequence[tuple[Dim, ...]] | None, optimize: bool,
                    policy: SchedulePolicy) -> Schedule:
    if shapes is not None:
        graph = specialize_graph(graph, shapes)
    graph, report = run_pipeline(graph, select_passes(optimize))
    if optimize:
        graph = loop_outputs_sunk(graph, report)
    graph = bucket_all_reduce(graph, policy.bucket_bytes, policy.first_bucket_bytes)
    lowered = lower_graph(graph, policy)
    if policy.overlap_reductions:
        lowered = overlap_reductions(lowered, policy.progress_reductions)
    return dataclasses.replace(lowered, plan=plan_memory(lowered), report=report, graph=graph)


def loop_outputs_sunk(graph: Graph, report: PassReport) -> Graph:
    """The loops' per-step matmul outputs computed after them (graphc/passes/sink_loops.py),
    reported as a pass of its own when it changed something. (Hoisting before loops and
    sinking their sums run in the optimizer's pipeline: graphc/passes/scan_*.py.)"""
    t0 = time.perf_counter()
    before = len(graph.nodes())
    new, fired = sink_loops(graph)
    if fired:
        report.passes.append(PassStats("sink_loops", before, len(new.nodes()), fired,
                                       time.perf_counter() - t0, new))
    return new


__all__ = ["DEFAULT_POLICY", "MemoryPlan", "Schedule", "SchedulePolicy", "lower_graph",
           "plan_memory", "schedule_graph"]
