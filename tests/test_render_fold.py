"""gc.render's folded picture of a training step: the backward pass and the parameter
updates fold into gradient boxes, so the forward boxes run one way and their gradients back."""
from __future__ import annotations

import re

import numpy as np

import graphc as gc
from graphc.render import render_dot


def _sgd_step():
    x = gc.placeholder((8, 4), name="x")
    h = x
    params = []
    for k in range(6):
        W = gc.parameter(np.full((4, 4), 0.1, np.float32), name=f"block{k}.dense.W")
        params.append(W)
        h = gc.tanh(h @ W) + h  # a residual block
    loss = gc.mean(gc.square(h))
    grads = gc.grad(loss, params)
    return gc.function([x], loss, updates={p: p - 0.1 * g for p, g in zip(params, grads)},
                       backend="numpy")


def test_no_gradient_box_feeds_a_forward_box():
    dot = render_dot(_sgd_step(), optimized=True, fold=20)
    boxes = dict(re.findall(r'^\s*(g0f\d+) \[label="([^"\\]*)', dot, re.MULTILINE))
    assert any(t.startswith("\u2207 block") for t in boxes.values())
    assert any(t.startswith("block") for t in boxes.values())
    edges = re.findall(r"^\s*(g0f\d+) -> (g0f\d+)", dot, re.MULTILINE)
    assert edges
    for a, b in edges:  # updates (p - lr * g) sit in the gradient boxes, not the forward
        assert not (boxes[a].startswith("\u2207") and not boxes[b].startswith("\u2207")), \
            (boxes[a], boxes[b])
    assert 'label="update"' not in dot  # between folded boxes it would only cross the page


def test_unfolded_updates_stay_drawn_without_ranking_the_picture():
    dot = render_dot(_sgd_step(), optimized=True, fold=False)
    updates = [ln for ln in dot.splitlines() if 'label="update"' in ln]
    assert len(updates) == 6 and all("constraint=false" in ln for ln in updates)
