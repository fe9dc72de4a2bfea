"""gc.render and the notebook views: files written, gradient nodes styled apart, folding."""
import os
import shutil
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest

import graphc as gc
from graphc.render import render_dot, scopes
from graphc.node import toposort

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` missing")


def mlp():
    x = gc.placeholder((None, 4), name="x")
    labels = gc.placeholder((None,), "int64", name="labels")
    w1 = gc.parameter(np.ones((4, 8), np.float32), name="layer1.W")
    w2 = gc.parameter(np.ones((8, 3), np.float32), name="layer2.W")
    loss = gc.nn.cross_entropy(gc.tanh(x @ w1) @ w2, labels)
    return x, labels, [w1, w2], loss


def svg_nodes(svg: str) -> list[ET.Element]:
    root = ET.fromstring(svg)
    return [g for g in root.iter("{http://www.w3.org/2000/svg}g") if g.get("class") == "node"]


@needs_dot
def test_svg_parses_and_names_nodes(tmp_path):
    _, _, ws, loss = mlp()
    grads = gc.grad(loss, ws)
    path = gc.render(grads, tmp_path / "g.svg", provenance=True)
    assert path == str(tmp_path / "g.svg")
    svg = open(path, encoding="utf-8").read()
    assert len(svg_nodes(svg)) > 10
    for name in ("layer1.W", "layer2.W", "%x", "/dlayer1.W", "gradient op"):
        assert name in svg
    assert "vjp of matmul" in svg  # provenance=True: the rule is in the label and tooltip
    assert "built at" in svg and "shape (4, 8)" in svg  # tooltips


@needs_dot
@pytest.mark.parametrize("suffix,magic", [(".png", b"\x89PNG\r\n\x1a\n"), (".pdf", b"%PDF-"),
                                          (".PNG", b"\x89PNG\r\n\x1a\n")])
def test_png_pdf_magic(tmp_path, suffix, magic):
    _, _, ws, loss = mlp()
    path = gc.render(loss, str(tmp_path / f"g{suffix}"))
    assert open(path, "rb").read()[:len(magic)] == magic


def test_gradient_nodes_styled_apart():
    _, _, ws, loss = mlp()
    dot = render_dot(gc.grad(loss, ws[0]))
    node_lines = [ln for ln in dot.splitlines() if ln.strip().startswith("g0n")
                  and "->" not in ln]
    grad = [ln for ln in node_lines if 'fillcolor="#fff3cd"' in ln]
    fwd = [ln for ln in node_lines if 'fillcolor="#ffffff"' in ln]
    assert grad and fwd
    assert all("rounded" in ln for ln in grad) and not any("rounded" in ln for ln in fwd)
    assert any("tanh(" in ln for ln in fwd)


def test_function_before_and_after(tmp_path):
    x, labels, ws, loss = mlp()
    f = gc.function([x, labels], loss, backend="numpy")
    both = render_dot(f)
    assert "before optimization" in both and "after optimization" in both
    assert "cluster_g0" in both and "cluster_g1" in both
    one = render_dot(f, optimized=True)
    assert "cluster_g1" not in one and "before optimization" not in one
    assert len(render_dot(f, optimized=False)) > 0


def resnet_function():
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
    import screenshots
    return screenshots.resnet_step()


def test_scopes_follow_the_layers():
    f = resnet_function()
    order = toposort(f.graph.inputs + f.graph.roots)
    sc = scopes(order)
    convs = [n for n in order if n.op == "matmul" and n.origin is None and n.ndim == 3]
    # each conv's matmul joins the conv whose weight it reads, not the layer before
    for n in convs:
        w = [i for i in toposort([n]) if i.op == "parameter"]
        assert sc[n] in {tuple(p.attrs["name"].split(".")[:-1]) for p in w}
        assert sc[n][-1] in ("conv", "conv1", "conv2", "shortcut")


def test_folding_reduces_the_resnet():
    f = resnet_function()
    full = render_dot(f, optimized=True, fold=False)
    folded = render_dot(f, optimized=True)
    def count(d: str) -> int:
        return sum(1 for ln in d.splitlines() if "[label=" in ln and "->" not in ln)
    assert count(folded) < count(full) / 5
    assert "\u2207 block2.conv1" in folded and "nodes" in folded
    assert count(render_dot(f, optimized=True, fold=100000)) == count(full)


@needs_dot
def test_folded_resnet_svg(tmp_path):
    f = resnet_function()
    svg = open(gc.render(f, tmp_path / "r.svg", optimized=True), encoding="utf-8").read()
    assert len(svg_nodes(svg)) < 150 and "block1.conv1" in svg


def test_bad_suffix_and_objects(tmp_path):
    _, _, _, loss = mlp()
    with pytest.raises(ValueError, match=r"\.jpg"):
        gc.render(loss, tmp_path / "g.jpg")
    with pytest.raises(ValueError, match="suffix"):
        gc.render(loss, tmp_path / "g")
    with pytest.raises(TypeError, match="got int"):
        gc.render(3, tmp_path / "g.svg")
    with pytest.raises(TypeError, match="position 1"):
        gc.render([loss, "x"], tmp_path / "g.svg")
    with pytest.raises(TypeError, match="path"):
        gc.render(loss, 5)
    with pytest.raises(ValueError, match="optimized"):
        gc.render(loss, tmp_path / "g.svg", optimized=True)
    with pytest.raises(ValueError, match="fold"):
        gc.render(loss, tmp_path / "g.svg", fold=-1)
    with pytest.raises(ValueError, match="empty"):
        gc.render([], tmp_path / "g.svg")
    assert not list(tmp_path.iterdir())


def test_missing_dot_is_a_clear_error(tmp_path, monkeypatch):
    _, _, _, loss = mlp()
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="apt-get install graphviz"):
        gc.render(loss, tmp_path / "g.svg")
    assert loss._repr_svg_() is None  # a notebook falls back to the text repr


@needs_dot
def test_notebook_views():
    x, labels, ws, loss = mlp()
    f = gc.function([x, labels], loss, backend="numpy")
    for obj in (loss, f.graph, f):
        svg = obj._repr_svg_()
        assert svg.startswith("<svg") and svg_nodes(svg)
        assert obj._repr_html_().startswith("<div")
