"""What links the explorer's views: the graph after each pass that changed it (the pass
report keeps it), and the nodes each kernel computes (the schedule keeps them)."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.explore.data import explorer_data
from graphc.passes import run_pipeline, select_passes
from graphc.schedule import schedule_graph

VIEWS = ("transpose", "broadcast_to", "broadcast_like", "reshape", "reshape_like",
         "expand_dims", "squeeze", "slice", "stop_gradient")


def _foldable():
    """A loss whose graph every pass but fold rewrites (x * 1, + 0, log of exp, and the
    softmax gradient's sum of broadcast ones: the class count)."""
    x = gc.placeholder((5, 4), name="x")
    W = gc.parameter(np.linspace(-1, 1, 12).reshape(4, 3).astype(np.float32), name="l.W")
    loss = gc.sum(gc.log(gc.softmax(x @ W)) * 1.0 + 0.0)
    return x, W, loss


def test_the_report_keeps_the_graph_after_each_pass_that_changed_it():
    x, W, loss = _foldable()
    raw = gc.Graph((x.node,), (loss.node, gc.grad(loss, W).node))
    final, report = run_pipeline(raw, select_passes(True))
    changed = [p.name for p in report.passes if p.graph is not None]
    assert changed == [p.name for p in report.passes if p.fired]
    assert "fold" not in changed and len(changed) >= 3
    last = [p.graph for p in report.passes if p.graph is not None][-1]
    assert last.roots == final.roots
    for p in report.passes:
        if p.graph is not None:
            assert len(p.graph.nodes()) == p.nodes_after


def test_each_changing_pass_is_a_step_with_what_it_removed_and_added():
    x, W, loss = _foldable()
    f = gc.function([x], [loss, gc.grad(loss, W)], backend="numpy")
    data = explorer_data(f)
    views = data["graph"]["views"]
    table = data["graph"]["nodes"]
    assert views[0]["name"] == "graph" and len(views[0]["nodes"]) == len(f.graph.nodes())
    steps = [v for v in views if "removed" in v]
    assert [v["name"] for v in steps] == [p.name for p in f.report.passes if p.graph is not None]
    before = f.program.raw_graph
    for view, p in zip(steps, [p for p in f.report.passes if p.graph is not None]):
        old, new = set(before.nodes()), set(p.graph.nodes())
        assert len(view["removed"]) + len(view["rebuilt"]) == len(old - new)
        assert len(view["added"]) + len(view["rebuilt"]) == len(new - old)
        assert view["removed"] or view["added"]
        assert len(view["nodes"]) == len(new) + len(view["removed"])
        assert {table[i]["op"] for i in view["removed"]} <= {n.op for n in old - new}
        before = p.graph
    canonical = next(v for v in steps if v["name"] == "canonicalize")  # x * 1.0 + 0.0 -> x
    assert {"mul", "add"} <= {table[i]["op"] for i in canonical["removed"]}


def test_a_step_shows_the_rewrite_not_the_nodes_rebuilt_downstream_of_it():
    x = gc.placeholder((3,), name="x")
    y = gc.sum(gc.tanh(gc.exp(x * 1.0)))
    f = gc.function([x], y, backend="numpy")
    data = explorer_data(f)
    (step,) = [v for v in data["graph"]["views"] if "removed" in v]
    table = data["graph"]["nodes"]
    assert step["name"] == "canonicalize"
    assert [table[i]["op"] for i in step["removed"]] == ["constant", "mul"]
    assert step["added"] == []  # exp, tanh and sum, now over x itself, stand for the old ones
    assert [table[i]["op"] for i in step["rebuilt"]] == ["exp", "tanh", "sum"]
    assert sorted(table[i]["op"] for i in step["nodes"]) == \
        sorted(["placeholder", "constant", "mul", "exp", "tanh", "sum"])


def _mlp_step(dtype="float32"):
    x = gc.placeholder((None, 4), dtype=dtype, name="x")
    W = gc.parameter(np.ones((4, 3), dtype), name="W")
    b = gc.parameter(np.zeros(3, dtype), name="b")
    loss = gc.mean(gc.square(gc.tanh(x @ W + b)))
    gW, gb = gc.grad(loss, [W, b])
    return x, loss, {W: W - 0.1 * gW, b: b - 0.1 * gb}


def test_each_kernel_lists_the_nodes_it_computes():
    x, loss, updates = _mlp_step()
    f = gc.function([x], loss, updates=updates, backend="numpy")
    s = schedule_graph(f.graph, [(5, 4)])
    assert len(s.kernel_nodes) == len(s.kernels)
    order = s.graph.nodes()
    position = {n: i for i, n in enumerate(order)}
    where: dict = {}
    for kernel, made in zip(s.kernels, s.kernel_nodes):
        assert all(n in position for n in made)
        assert list(made) == sorted(made, key=position.__getitem__)
        for n in made:
            where.setdefault(n, []).append(kernel.kind)
    for n in order:  # every value computed somewhere; leaves and views need no kernel
        if n.op not in ("placeholder", "parameter", "constant") + VIEWS:
            assert n in where, f"{n.op} is in no kernel"
    assert all(where[n] == ["gemm"] for n in order if n.op == "matmul")
    assert all("reduce" in where[n] for n in order if n.op == "sum")
    assert all(where[n] == ["elementwise"] for n in order if n.op == "tanh")
    # the SGD step of W is folded into the GEMM that makes its gradient
    folded = [made for kernel, made in zip(s.kernels, s.kernel_nodes)
              if kernel.kind == "gemm" and kernel.accumulate]
    assert folded and any(n.op == "sub" for n in folded[0])


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_the_page_links_kernels_to_nodes_of_the_graph_they_were_made_from(backend):
    x, loss, updates = _mlp_step()
    f = gc.function([x], loss, updates=updates, backend=backend)
    f(np.ones((5, 4), np.float32))
    if backend == "numpy":  # the interpreter records no call: static shapes, else none
        data = explorer_data(f)
        assert data["kernels"]["items"] == []
        x2 = gc.placeholder((5, 4), name="x")
        f = gc.function([x2], gc.sum(gc.tanh(x2) * 2.0), backend=backend)
    data = explorer_data(f)
    kernels, views = data["kernels"], data["graph"]["views"]
    shown = set(views[kernels["view"]]["nodes"])
    sched = f.schedule(*[tuple(s) for s in kernels["shapes"]])
    table = data["graph"]["nodes"]
    assert len(kernels["items"]) == len(sched.kernels)
    for item, made in zip(kernels["items"], sched.kernel_nodes):
        assert set(item["nodes"]) <= shown
        assert [table[i]["op"] for i in item["nodes"]] == [n.op for n in made]
        assert [table[i]["type"] for i in item["nodes"]] == [str(n.type) for n in made]
    if backend == "llvm":  # a parameter update is computed from a gradient: it folds with it
        values = [table[v] for _, v in data["graph"]["updates"]]
        assert len(values) == 2
        assert all(v["kind"] == "grad" and v["origin"] is None for v in values)
    if backend == "llvm":  # sizes given at the call: the kernels' graph is its own view
        assert views[kernels["view"]]["name"] == "kernels"
        assert "[5, 4]" in views[kernels["view"]]["title"]
        # each node of the optimized graph with the node made of it for the call's sizes
        twins = dict(data["graph"]["twins"])
        final = set(views[0]["nodes"])
        assert set(twins) <= final and set(twins.values()) <= shown
        assert all(table[a]["op"] == table[b]["op"] for a, b in twins.items())
        assert all(table[b]["shape"][0] == 5 for a, b in twins.items()
                   if table[a]["shape"][:1] == [None])
        for op in ("matmul", "tanh", "sum"):
            assert all(i in twins for i in final if table[i]["op"] == op)
    else:
        assert kernels["view"] == 0


def _chain(steps: int):
    x = gc.placeholder((4,), dtype="float64", name="x")
    w = gc.parameter(np.full(4, 0.5), name="w")
    h = x
    for k in range(steps):
        h = gc.tanh(h * w) if k % 2 else gc.sin(h + w)
    loss = gc.sum(h)
    return [loss, gc.grad(loss, w)]


def test_a_large_graph_without_scopes_folds_into_parts_in_order():
    from graphc.explore.scopes import PART
    data = explorer_data(_chain(200))["graph"]
    n = len(data["nodes"])
    assert n > 2 * PART
    scopes = [s["name"] for s in data["scopes"]]
    assert scopes[0] == "" and len(scopes) == 1 + -(-n // PART)
    seen = [data["nodes"][i]["scope"] for i in range(n)]
    assert seen == sorted(seen)  # parts follow the graph's order, each PART nodes
    assert all(seen.count(s) == PART for s in set(seen) if s != seen[-1])
    assert scopes[1].startswith("%x\u2026")  # named by its first and last node
    small = explorer_data(_chain(20))["graph"]
    assert [s["name"] for s in small["scopes"]] == [""]


def test_named_scopes_are_kept_in_a_large_graph():
    x = gc.placeholder((4,), dtype="float64", name="x")
    h = x
    for k in range(200):
        w = gc.parameter(np.full(4, 0.5), name=f"layer{k}.w")
        h = gc.tanh(h * w)
    data = explorer_data(h)["graph"]
    layers = [s for s in data["scopes"] if s["name"].startswith("layer") and not s.get("repeat")]
    assert [s["name"] for s in layers] == [f"layer{k}" for k in range(200)]
    # built alike, they are one repeated block, which opens into the layers
    (group,) = [s for s in data["scopes"] if s.get("repeat")]
    assert group["name"] == "layer0 \u2026 layer199 \u00d7200" and group["parent"] == 0
    k = data["scopes"].index(group)
    assert all(s["parent"] == k for s in layers)


def test_only_runs_of_sibling_scopes_built_alike_are_grouped():
    x = gc.placeholder((4,), dtype="float64", name="x")
    h = x
    for k in range(3):
        w = gc.parameter(np.full(4, 0.5), name=f"enc.block{k}.w")
        h = gc.tanh(h * w)
    w = gc.parameter(np.full(4, 0.5), name="enc.block3.w")  # built otherwise
    h = gc.sin(h + w)
    for k in range(2):  # alike, but only two
        w = gc.parameter(np.full(4, 0.5), name=f"dec.block{k}.w")
        h = gc.exp(h * w)
    scopes = explorer_data(gc.sum(h))["graph"]["scopes"]
    names = [s["name"] for s in scopes]
    groups = [s["name"] for s in scopes if s.get("repeat")]
    assert groups == ["enc.block0 \u2026 block2 \u00d73"]
    g = names.index(groups[0])
    assert [names[i] for i, s in enumerate(scopes) if s["parent"] == g] == \
        ["enc.block0", "enc.block1", "enc.block2"]
    assert scopes[names.index("enc.block3")]["parent"] == names.index("enc")
    assert scopes[names.index("dec.block1")]["parent"] == names.index("dec")
    assert all(scopes[i]["parent"] < i for i in range(1, len(scopes)))  # parents first


@pytest.mark.slow
def test_cuda_kernels_link_to_their_cuda_c():
    """The page of an (emulated) cuda function: each kernel names its __global__ function,
    whose CUDA C is among the page's code, and the nodes it computes."""
    x = gc.placeholder((4, 3), name="x")
    W = gc.parameter(np.ones((3, 2), np.float32), name="W")
    f = gc.function([x], gc.sum(gc.tanh(x @ W)), backend="cuda",
                    backend_options={"emulate": True})
    data = explorer_data(f)
    functions = {fn["name"]: fn["text"] for fn in data["code"]["functions"]}
    items = data["kernels"]["items"]
    assert items and all(it["function"] in functions and it["nodes"] for it in items)
    assert all("__global__" in functions[it["function"]] for it in items)
    ops = {data["graph"]["nodes"][i]["op"] for it in items for i in it["nodes"]}
    assert {"matmul", "tanh", "sum"} <= ops
