"""Prints the derivative graph of a 2-layer MLP's cross-entropy loss, with the chain rule that
made each node, and renders it as a picture (DOT always; SVG/PNG when Graphviz is installed).
Run: python examples/show_mlp_gradient.py [--out mlp_gradient]"""
from __future__ import annotations

import argparse
import shutil
import subprocess

import numpy as np

import graphc as gc


def build_loss() -> tuple[gc.Tensor, list[gc.Parameter]]:
    rng = np.random.default_rng(0)
    x = gc.placeholder((None, 4), name="x")
    labels = gc.placeholder((None,), "int64", name="labels")
    W1 = gc.parameter(rng.normal(size=(4, 5)).astype(np.float32), name="W1")
    b1 = gc.parameter(np.zeros(5, np.float32), name="b1")
    W2 = gc.parameter(rng.normal(size=(5, 3)).astype(np.float32), name="W2")
    b2 = gc.parameter(np.zeros(3, np.float32), name="b2")
    hidden = gc.name(gc.tanh(x @ W1 + b1), "h")
    logits = gc.name(hidden @ W2 + b2, "logits")
    return gc.name(gc.nn.cross_entropy(logits, labels), "loss"), [W1, b1, W2, b2]


def render(dot_text: str, stem: str) -> list[str]:
    """Writes stem.dot, and stem.svg + stem.png when Graphviz's `dot` is on the PATH."""
    written = [f"{stem}.dot"]
    with open(written[0], "w") as fh:
        fh.write(dot_text)
    if shutil.which("dot"):
        for fmt in ("svg", "png"):
            subprocess.run(["dot", f"-T{fmt}", written[0], "-o", f"{stem}.{fmt}"], check=True)
            written.append(f"{stem}.{fmt}")
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="mlp_gradient", help="file stem for the picture")
    args = parser.parse_args(argv)
    loss, params = build_loss()
    grads = gc.grad(loss, params)
    print("The loss:\n")
    print(gc.show(loss))
    print("\nIts gradients, each node with the rule that made it:\n")
    print(gc.show(grads, provenance=True))
    files = render(gc.to_dot(grads, name="dloss/dparams"), args.out)
    print("\nwrote " + ", ".join(files))
    if len(files) == 1:
        print("(install Graphviz, e.g. apt-get install graphviz, for SVG/PNG pictures)")


if __name__ == "__main__":
    main()
