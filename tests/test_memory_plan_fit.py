"""The buffer plan of a convolutional training step: no two temporaries alive at once share
memory, and the arena stays close to the most bytes ever alive at once (placing the large
buffers first, graphc/schedule/memory.py)."""
from __future__ import annotations

import numpy as np

import graphc as gc
from graphc.backend import get_backend
from graphc.schedule import schedule_graph
from graphc.schedule.memory import lifetimes, plan_memory


def _lenet_step_schedule():
    rng = np.random.default_rng(0)
    x = gc.placeholder((64, 1, 28, 28), name="x_plan")
    labels = gc.placeholder((64,), "int64", name="labels_plan")
    shapes = [(8, 1, 5, 5), (8,), (16, 8, 5, 5), (16,), (256, 10), (10,)]
    p = [gc.parameter((rng.normal(size=s) * 0.1).astype(np.float32), name=f"plan{i}")
         for i, s in enumerate(shapes)]
    h = gc.relu(gc.nn.conv2d(x, p[0]) + p[1].reshape(1, 8, 1, 1))
    h = gc.nn.max_pool2d(h, 2)
    h = gc.relu(gc.nn.conv2d(h, p[2]) + p[3].reshape(1, 16, 1, 1))
    h = gc.nn.max_pool2d(h, 2).reshape(-1, 256)
    loss = gc.nn.cross_entropy(h @ p[4] + p[5], labels)
    grads = gc.grad(loss, p)
    f = gc.function([x, labels], loss, updates={v: v - 0.01 * g for v, g in zip(p, grads)},
                    backend="numpy")
    # (the llvm backend's choices: implicit GEMMs, GEMMs turned around)
    return schedule_graph(f.graph, policy=get_backend("llvm").policy)


def test_the_arena_of_a_lenet_step_is_tight_and_never_shared_by_live_buffers():
    s = _lenet_step_schedule()
    spans = lifetimes(s)
    plan = plan_memory(s, spans)
    temps = [b for b in s.buffers.values() if b.role == "temp" and b.id in spans]
    for i, a in enumerate(temps):
        for b in temps[i + 1:]:
            (fa, la), (fb, lb) = spans[a.id], spans[b.id]
            if fa <= lb and fb <= la:  # alive at once: disjoint bytes
                oa, ob = plan.offsets[a.id], plan.offsets[b.id]
                assert oa + a.nbytes <= ob or ob + b.nbytes <= oa, (a, b)
    peak = max(sum(b.nbytes for b in temps if spans[b.id][0] <= k <= spans[b.id][1])
               for k in range(len(s.kernels)))
    assert peak <= plan.arena_bytes <= 1.15 * peak
