"""Op facts live on the OpDef: which ops set each fact, and that no field goes unused."""
from __future__ import annotations

import dataclasses

import numpy as np

import graphc as gc
from graphc.ops import OPS, get_op
from graphc.ops.registry import OpDef


def ops_with(fact: str) -> set[str]:
    return {name for name, op in OPS.items() if getattr(op, fact)}


def test_value_facts():
    assert ops_with("nonnegative") == {"exp", "sigmoid", "softplus", "square", "abs", "sqrt",
                                       "relu", "one_hot"}
    assert ops_with("finite") == {"equal", "not_equal", "less", "less_equal", "greater",
                                  "greater_equal", "iota", "isnan", "isfinite", "dim_size",
                                  "one_hot"}


def test_collective_fact():
    """Never folded while compiling: its value depends on the other processes."""
    assert ops_with("collective") == {"all_reduce"}
    x = gc.distributed.all_reduce(gc.constant(np.ones(3)), op="sum")
    raw = gc.function([], x, backend="numpy", optimize=["fold"]).graph
    assert [n.op for n in raw.nodes()].count("all_reduce") == 1


def test_view_facts():
    assert ops_with("scalar_view") == {"broadcast_to", "expand_dims", "reshape", "squeeze"}
    assert ops_with("reshapes") == {"reshape", "expand_dims", "squeeze"}
    assert ops_with("one_element_identity") == {
        "broadcast_to", "sum", "max", "max_first", "min", "transpose", "slice"}


def test_input_facts():
    shape_only = {n: op.shape_only_inputs for n, op in OPS.items() if op.shape_only_inputs}
    assert shape_only == {"unslice": (1,), "scatter_add": (0,), "windows_grad": (1,),
                          "random_uniform": (1,), "scatter_along_axis": (0,)}
    assert get_op("unslice").shape_only(2) == (1,)
    assert {n: op.index_inputs for n, op in OPS.items() if op.index_inputs} == {
        "take": (1,), "scatter_add": (1,), "check_index": (0,), "take_along_axis": (1,),
        "scatter_along_axis": (1,)}
    assert {n: op.nondifferentiable_inputs for n, op in OPS.items()
            if op.nondifferentiable_inputs} == {"where": (0,)}


def test_every_opdef_field_is_set_by_some_op():
    """A field no op sets is removed (docs/architecture-opfacts.md). arg_names and
    user_defined are set by gc.elementwise_function, at run time."""
    name = "opfacts_softsign"
    if name not in OPS:
        gc.elementwise_function(name, lambda t: t / (1 + abs(t)))
    unset = []
    for f in dataclasses.fields(OpDef):
        if f.default is dataclasses.MISSING:
            continue
        if not any(getattr(op, f.name) != f.default for op in OPS.values()):
            unset.append(f.name)
    assert not unset, f"OpDef fields no primitive sets: {unset}"


def test_exp_log_relies_on_nonnegative():
    x = gc.placeholder((3,), np.float64, "x")
    f = gc.function([x], gc.exp(gc.log(gc.square(x))), backend="numpy")
    assert dict(f.report.fired()) == {"exp_log": 1}
    assert "where" not in gc.show(f.graph)
