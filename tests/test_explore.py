"""gc.explore: the page is one self-contained file, its data is complete and escaped, and it
renders without script errors in a headless Chromium."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

import graphc as gc
from graphc.explore.scopes import node_scopes
from graphc.node import toposort

EVIL = "</script><img src=x onerror=alert(1)>"
SVG_NS = "http://www.w3.org/2000/svg"  # a namespace name in the script, never fetched


def _model(backend: str, dtype: str = "float32", w_name: str = "block1.dense.W"):
    # llvm records the shapes it was called with; the numpy backend shows static ones
    x = gc.placeholder((None if backend == "llvm" else 5, 4), dtype=dtype, name="x")
    W = gc.parameter(np.linspace(-1, 1, 12).reshape(4, 3).astype(dtype), name=w_name)
    b = gc.parameter(np.zeros(3, dtype), name="block1.dense.b")
    V = gc.parameter(np.ones((3, 2), dtype), name="block2.out.V")
    h = gc.tanh(x @ W + b)
    loss = gc.mean(gc.square(h @ V))
    f = gc.function([x], [loss, gc.grad(loss, W)], backend=backend)
    f(np.ones((5, 4), dtype))
    return f


def _data(text: str) -> dict:
    m = re.search(r'<script type="application/json" id="graphc-data">(.*?)</script>', text,
                  re.DOTALL)
    assert m is not None, "no data element"
    return json.loads(m.group(1))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_page_is_self_contained_and_holds_graph_kernels_and_code(tmp_path, backend, dtype):
    f = _model(backend, dtype)
    path = gc.explore(f, tmp_path / "f.html")
    text = path.read_text(encoding="utf-8")
    assert set(re.findall(r"https?://[^\s\"'<>)]+", text)) <= {SVG_NS}
    assert not re.search(r"<(link|img|iframe)\b|<script[^>]*\bsrc=|@import|url\(", text)
    data = _data(text)
    nodes = f.graph.nodes()  # first in the table, shown by the first view
    table = data["graph"]["nodes"][:len(nodes)]
    assert data["graph"]["views"][0]["nodes"] == list(range(len(nodes)))
    assert [n["op"] for n in table] == [n.op for n in nodes]
    assert [n["type"] for n in table] == [str(n.type) for n in nodes]
    assert table[0]["dtype"] == dtype
    index = {n: i for i, n in enumerate(nodes)}
    assert [n["inputs"] for n in table] == [[index[i] for i in n.inputs] for n in nodes]
    assert data["graph"]["outputs"] == [index[o] for o in f.graph.outputs]
    assert any(n["origin"] for n in data["graph"]["nodes"])  # gradient nodes say their rule
    assert all(n["source"] and "test_explore.py" in n["source"]
               for n in data["graph"]["nodes"] if n["op"] != "constant")
    assert [p["name"] for p in data["report"]["passes"]] == [p.name for p in f.report.passes]
    assert data["report"]["text"] == str(f.report)
    kernels = f.schedule((5, 4)).kernels
    assert data["kernels"]["shapes"] == [[5, 4]]
    assert len(data["kernels"]["items"]) == len(kernels) > 0
    assert data["code"]["text"] == f.source
    functions = {fn["name"]: fn["text"] for fn in data["code"]["functions"]}
    if backend == "llvm":
        for k in data["kernels"]["items"]:  # every kernel links to its LLVM function
            name = k["function"]
            assert name is not None and name.endswith(f"_{k['kind'].split('/')[0]}")
            assert re.match(rf'define [^@]*@"?{name}"?\(', functions[name])
            assert functions[name] in f.source
    else:
        assert all(k["function"] is None for k in data["kernels"]["items"])


def test_scopes_come_from_parameter_names():
    f = _model("numpy")
    data = _data(gc.explore(f, Path(tempfile.mkdtemp()) / "f.html").read_text())
    scopes = [s["name"] for s in data["graph"]["scopes"]]
    assert scopes == ["", "block1", "block2", "block1.dense", "block2.out"]
    parents = [s["parent"] for s in data["graph"]["scopes"]]
    assert parents == [None, 0, 0, 1, 2]
    by_op = {}
    for n in data["graph"]["nodes"]:
        by_op.setdefault(n["op"], []).append(scopes[n["scope"]])
    assert by_op["tanh"] == ["block1.dense"]  # joins the scope of its inputs


def test_scope_rules():
    x = gc.placeholder((2, 3), name="x")
    W = gc.parameter(np.ones((3, 3), np.float32), name="enc.l1.W")
    V = gc.parameter(np.ones((3, 3), np.float32), name="enc.l2.W")
    h = gc.relu(x @ W)
    y = (h @ V) * 2.0 + x
    order = toposort([y.node])
    scopes = node_scopes(order)
    ops = {n.op: [scopes[m] for m in order if m.op == n.op] for n in order}
    assert ops["matmul"] == ["enc.l1", "enc.l2"]  # the layer whose weights it uses
    assert ops["relu"] == ["enc.l1"]
    assert ops["constant"] == ["enc.l2"]  # beside its user
    assert ops["add"] == ["enc.l2"]  # the top-level x enters no module: enc.l2 enters here
    g = gc.grad(gc.sum(y), W)
    order = toposort([g.node])
    scopes = node_scopes(order)
    grads = {scopes[n] for n in order if n.origin and n.op != "constant"}
    assert {"enc.l1", "enc.l2"} <= grads  # the backward pass sits with the layers


def test_user_names_are_escaped_in_the_embedded_json(tmp_path):
    f = _model("numpy", w_name=EVIL + ".W")
    text = gc.explore(f, tmp_path / "f.html", title=EVIL).read_text(encoding="utf-8")
    assert "<img" not in text and text.count("</script>") == 2  # the page's own two
    data = _data(text)
    assert EVIL in [s["name"] for s in data["graph"]["scopes"]]  # JSON gives it back whole
    assert data["title"] == EVIL


def test_a_graph_or_tensor_shows_the_graph_alone(tmp_path):
    x = gc.placeholder((3,), name="x")
    y = gc.sum(gc.exp(x))
    for target in (y, [y, gc.grad(y, x)], gc.Graph((x.node,), (y.node,))):
        data = _data(gc.explore(target, tmp_path / "g.html").read_text())
        assert "exp" in [n["op"] for n in data["graph"]["nodes"]]
        assert data["report"] is None and data["kernels"] is None and data["code"] is None


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_kernels_wait_for_a_call_when_sizes_are_symbolic(tmp_path, backend):
    x = gc.placeholder((None,), name="x")
    f = gc.function([x], gc.sum(x * x), backend=backend)
    data = _data(gc.explore(f, tmp_path / "f.html").read_text())
    assert data["kernels"]["items"] == [] and "call" in data["kernels"]["note"]
    f(np.ones(3, np.float32))
    data = _data(gc.explore(f, tmp_path / "f.html").read_text())
    if backend == "llvm":  # the shapes of the call
        assert data["kernels"]["shapes"] == [[3]] and data["kernels"]["items"]
    else:  # the interpreter keeps no record of its calls
        assert data["kernels"]["items"] == []


def test_bad_arguments_name_themselves(tmp_path):
    with pytest.raises(TypeError, match="explore: f: expected a Tensor"):
        gc.explore(42, tmp_path / "f.html")
    x = gc.placeholder((3,), name="x")
    with pytest.raises(TypeError, match="explore: path"):
        gc.explore(x, 3)


# ---- the page in a browser ----------------------------------------------------------------

def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed")
    return exe


def _browse(page: Path | str, *extra: str) -> str:
    """Chromium's output for a page (a file, or a file URL with a #fragment)."""
    url = page if isinstance(page, str) else page.resolve().as_uri()
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [_chromium(), "--headless=new", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--no-first-run",
             "--enable-logging=stderr", "--v=0",  # console messages as CONSOLE lines
             f"--user-data-dir={profile}", *extra, url],
            capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    console = [ln for ln in done.stderr.splitlines() if ":CONSOLE" in ln]
    assert console == [], console  # the page logs nothing: no errors, no warnings
    return done.stdout


def _rendered(dom: str) -> None:
    assert 'data-ready="1"' in dom, "the script did not finish"
    m = re.search(r'id="errors" data-errors="(\d+)"[^>]*>(.*?)</div>', dom, re.DOTALL)
    assert m is not None and m.group(1) == "0", m and m.group(2)


@pytest.mark.slow
def test_page_renders_nodes_without_script_errors(tmp_path):
    f = _model("llvm", w_name=EVIL + ".W")
    page = gc.explore(f, tmp_path / "f.html")
    dom = _browse(page, "--dump-dom")
    _rendered(dom)
    assert "<img" not in dom  # the name stayed text
    assert "&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in dom  # shown in the scopes
    drawn = re.search(r'<canvas id="graph-canvas"[^>]*data-drawn="(\d+)"', dom)
    assert drawn is not None and int(drawn.group(1)) > 0  # boxes on the canvas
    for text in ("block2", "k0 gemm", "define", "canonicalize"):
        assert text in dom
    shot = tmp_path / "f.png"
    _browse(page, f"--screenshot={shot}", "--window-size=1400,900")
    assert shot.stat().st_size > 10_000


def _attr(dom: str, name: str) -> str:
    m = re.search(rf'<body[^>]*\b{name}="([^"]*)"', dom)
    assert m is not None, f"no {name} on the body"
    return m.group(1)


@pytest.mark.slow
def test_kernels_nodes_and_pass_steps_link_in_the_page(tmp_path):
    f = _model("llvm")
    page = gc.explore(f, tmp_path / "f.html")
    data = _data(page.read_text(encoding="utf-8"))
    gemm = next(k for k in data["kernels"]["items"] if k["kind"] == "gemm")
    url = page.resolve().as_uri()
    # a kernel lights up the nodes it computes: those of the optimized graph shown, made
    # for the call's sizes (twins), else in the view of the kernels' own graph
    twin = dict(data["graph"]["twins"])
    back = {b: a for a, b in twin.items()}
    dom = _open(url + f"#kernel={gemm['index']}")
    if all(i in back for i in gemm["nodes"]):
        assert _attr(dom, "data-view") == "graph"
        assert _attr(dom, "data-lit") == ",".join(str(back[i]) for i in gemm["nodes"])
    else:
        view = data["graph"]["views"][data["kernels"]["view"]]
        assert _attr(dom, "data-view") == view["name"]
        assert _attr(dom, "data-lit") == ",".join(map(str, gemm["nodes"]))
    # a node names its kernel, in either graph
    matmul = next(i for i in gemm["nodes"] if data["graph"]["nodes"][i]["op"] == "matmul")
    for node in (matmul, back[matmul]):
        dom = _open(url + f"#node={node}")
        assert str(gemm["index"]) in _attr(dom, "data-node-kernels").split(",")
    # a pass as a step: the view with what it removed and added
    page = gc.explore(_model("numpy"), tmp_path / "g.html")
    step = next(v for v in _data(page.read_text())["graph"]["views"] if "removed" in v)
    dom = _open(page.resolve().as_uri() + f"#view={step['name']}")
    assert _attr(dom, "data-view") == step["name"]


def _open(url: str) -> str:
    dom = _browse(url, "--dump-dom")
    _rendered(dom)
    return dom


def _big_graph(blocks: int, per_block: int):
    """`blocks` scopes of about `per_block` nodes each, chained."""
    h = gc.placeholder((8,), dtype="float64", name="x")
    for i in range(blocks):
        w = gc.parameter(np.full(8, 0.5), name=f"stage{i // 10}.block{i}.w")
        for k in range(per_block // 2):
            h = gc.tanh(h * w) if k % 2 else gc.sin(h + w)
    return gc.sum(h)


def _flat_gradient(nodes: int):
    """A loss and its gradient through a chain of elementwise ops, no scope names."""
    x = gc.placeholder((8,), dtype="float64", name="x")
    w = gc.parameter(np.full(8, 0.5), name="w")
    h = x
    for k in range(nodes * 2 // 13):
        h = gc.tanh(h * w) if k % 2 else gc.sin(h + w)
    loss = gc.sum(h)
    return [loss, gc.grad(loss, w)]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["scoped", "flat"])
def test_a_10000_node_graph_opens(tmp_path, capsys, kind):
    graph = _big_graph(100, 100) if kind == "scoped" else _flat_gradient(10_000)
    roots = [graph.node] if kind == "scoped" else [t.node for t in graph]
    n = len(toposort(roots))
    assert n >= 10_000
    page = gc.explore(graph, tmp_path / "big.html")
    dom = _browse(page, "--dump-dom")
    _rendered(dom)
    items = int(re.search(r'data-items="(\d+)"', dom).group(1))
    assert 0 < items < 100  # folded: by scope, or into parts of a flat graph
    total = float(re.search(r'data-total-ms="([\d.]+)"', dom).group(1))
    expanded = _browse(page.resolve().as_uri() + "#expand", "--dump-dom")
    _rendered(expanded)
    assert int(re.search(r'data-items="(\d+)"', expanded).group(1)) == n
    every = float(re.search(r'data-total-ms="([\d.]+)"', expanded).group(1))
    with capsys.disabled():
        print(f"\n{kind} graph of {n} nodes: drawn {total:.0f} ms after navigation start "
              f"({items} boxes), every node drawn {every:.0f} ms")
