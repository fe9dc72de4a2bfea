"""Writes PNG pictures of graphs: a 2-layer MLP's derivative graph and a folded ResNet step
(gc.render), and the explorer page (gc.explore) of the MLP's training step, of one of its
kernels, of one node, of one optimization pass and of the ResNet step, shot in headless
Chromium.

    python benchmarks/screenshots.py [OUT_DIR]
    (needs Graphviz and Chromium: apt-get install graphviz chromium)
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_resnet import BLOCKS, graphc_resnet_step, resnet_params  # noqa: E402

import graphc as gc  # noqa: E402


def mlp_loss() -> tuple:
    """A 2-layer tanh MLP with a cross-entropy loss: inputs, parameters and the loss."""
    rng = np.random.default_rng(0)
    x = gc.placeholder((None, 4), name="x")
    labels = gc.placeholder((None,), "int64", name="labels")
    w1 = gc.parameter(rng.normal(size=(4, 8)).astype(np.float32), name="layer1.W")
    b1 = gc.parameter(np.zeros(8, np.float32), name="layer1.b")
    w2 = gc.parameter(rng.normal(size=(8, 3)).astype(np.float32), name="layer2.W")
    b2 = gc.parameter(np.zeros(3, np.float32), name="layer2.b")
    loss = gc.nn.cross_entropy(gc.tanh(x @ w1 + b1) @ w2 + b2, labels)
    return [x, labels], [w1, b1, w2, b2], loss


def mlp_gradients() -> list:
    """d(loss)/d(parameters) of the MLP."""
    _, params, loss = mlp_loss()
    return gc.grad(loss, params)


def mlp_step() -> gc.Function:
    """The MLP's SGD step (llvm), called once on a batch of 16 so its kernels are known."""
    inputs, params, loss = mlp_loss()
    grads = gc.grad(loss, params)
    f = gc.function(inputs, loss, updates={p: p - 0.1 * g for p, g in zip(params, grads)})
    rng = np.random.default_rng(1)
    f(rng.normal(size=(16, 4)).astype(np.float32), rng.integers(0, 3, 16))
    return f


def browser_shot(page: Path, png: str, fragment: str = "") -> str:
    """A 1400x900 screenshot of `page` (opened at #fragment) in headless Chromium."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        raise SystemExit("screenshots of the explorer need chromium (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([exe, "--headless=new", "--no-sandbox", "--disable-gpu",
                        f"--user-data-dir={profile}", "--hide-scrollbars",
                        "--window-size=1400,900", f"--screenshot={os.path.abspath(png)}",
                        page.resolve().as_uri() + fragment],
                       capture_output=True, check=True, timeout=300)
    return png


def explorer_shots(out_dir: str) -> list[str]:
    """The MLP step's page as it opens, with its first GEMM kernel selected, with the
    gradient of layer1.W selected and at its first optimization pass; the ResNet step's
    page, folded by module."""
    from graphc.explore.data import explorer_data
    f = mlp_step()
    data = explorer_data(f)
    gemm = next(k["index"] for k in data["kernels"]["items"] if k["kind"] == "gemm")
    step = next((v["name"] for v in data["graph"]["views"] if "removed" in v), None)
    table = data["graph"]["nodes"]
    dw1 = next(i for i, n in enumerate(table) if n["name"].endswith("/dlayer1.W"))
    shots = []
    with tempfile.TemporaryDirectory() as tmp:
        page = gc.explore(f, Path(tmp) / "mlp.html", title="2-layer MLP, SGD step")
        shots.append(browser_shot(page, os.path.join(out_dir, "explorer_mlp.png")))
        shots.append(browser_shot(page, os.path.join(out_dir, "explorer_kernel.png"),
                                  f"#kernel={gemm}"))
        shots.append(browser_shot(page, os.path.join(out_dir, "explorer_node.png"),
                                  f"#node={dw1}"))
        if step is not None:
            shots.append(browser_shot(page, os.path.join(out_dir, "explorer_pass.png"),
                                      f"#view={step}"))
        page = gc.explore(resnet_step(), Path(tmp) / "resnet.html", title="ResNet step (W6)")
        shots.append(browser_shot(page, os.path.join(out_dir, "explorer_resnet.png")))
    return shots


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
                       optimized=True)] + explorer_shots(out_dir)
    for path in paths:
        print(path)
    return paths


if __name__ == "__main__":
    main(*sys.argv[1:2])
