"""Writes PNG pictures of graphs: a 2-layer MLP's derivative graph and a folded ResNet step.

    python benchmarks/screenshots.py [OUT_DIR]     (needs Graphviz: apt-get install graphviz)
"""
from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_resnet import BLOCKS, graphc_resnet_step, resnet_params  # noqa: E402

import graphc as gc  # noqa: E402


def mlp_gradients() -> list:
    """d(loss)/d(parameters) of a 2-layer tanh MLP with a cross-entropy loss."""
    rng = np.random.default_rng(0)
    x = gc.placeholder((None, 4), name="x")
    labels = gc.placeholder((None,), "int64", name="labels")
    w1 = gc.parameter(rng.normal(size=(4, 8)).astype(np.float32), name="layer1.W")
    b1 = gc.parameter(np.zeros(8, np.float32), name="layer1.b")
    w2 = gc.parameter(rng.normal(size=(8, 3)).astype(np.float32), name="layer2.W")
    b2 = gc.parameter(np.zeros(3, np.float32), name="layer2.b")
    loss = gc.nn.cross_entropy(gc.tanh(x @ w1 + b1) @ w2 + b2, labels)
    return gc.grad(loss, [w1, b1, w2, b2])


def resnet_names() -> list[str]:
    """Module-tree names for bench_resnet's parameter list, in its order."""
    names = ["stem.conv.W", "stem.bn.gamma", "stem.bn.beta"]
    for k, (cin, cout, stride) in enumerate(BLOCKS, 1):
        for part in ("conv1", "conv2"):
            bn = part.replace("conv", "bn")
            names += [f"block{k}.{part}.W", f"block{k}.{bn}.gamma", f"block{k}.{bn}.beta"]
        if cin != cout or stride != 1:
            names += [f"block{k}.shortcut.W", f"block{k}.shortcut_bn.gamma",
                      f"block{k}.shortcut_bn.beta"]
    return names + ["head.dense.W", "head.dense.b"]


def resnet_step() -> gc.Function:
    """The W6 benchmark's training step (bench_resnet), its parameters named by scope."""
    return graphc_resnet_step(resnet_params(), names=resnet_names(), backend="numpy")


def main(out_dir: str = "screenshots") -> list[str]:
    os.makedirs(out_dir, exist_ok=True)
    paths = [gc.render(mlp_gradients(), os.path.join(out_dir, "mlp_gradient.png"),
                       provenance=True),
             gc.render(resnet_step(), os.path.join(out_dir, "resnet_step_folded.png"),
                       optimized=True)]
    for path in paths:
        print(path)
    return paths


if __name__ == "__main__":
    main(*sys.argv[1:2])
