"""The graph core: interning, iterative traversal on very long chains, light imports."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import graphc as gc


def test_equal_structure_is_the_same_node():
    x = gc.placeholder((3,), name="x")
    a = gc.exp(x) + 1.0
    b = gc.exp(x) + 1.0
    assert a.node is b.node
    assert (x * 2.0).node is not (x * 3.0).node


def test_equal_constants_intern_together():
    assert gc.constant(np.arange(4.0)).node is gc.constant(np.arange(4.0)).node
    assert gc.constant(np.arange(4.0)).node is not gc.constant(np.arange(4)).node


def test_nodes_are_immutable():
    x = gc.placeholder((3,), name="x")
    try:
        x.node.op = "exp"
    except AttributeError:
        pass
    else:
        raise AssertionError("a node accepted an attribute change")
    assert x.node.op == "placeholder"


def test_nodes_record_the_users_line():
    x = gc.placeholder((3,), name="x")
    y = gc.sqrt(x)  # this line
    assert y.node.source.filename == __file__
    with open(__file__) as fh:
        assert "# this line" in fh.read().splitlines()[y.node.source.lineno - 1]


@pytest.mark.slow
def test_100000_node_chain_builds_prints_differentiates_and_runs():
    n = 100_000
    x = gc.placeholder((), "float64", name="x")
    y = x
    for _ in range(n):
        y = y + 1.0
    listing = gc.show(y)
    assert len(listing.splitlines()) >= n
    g = gc.grad(y, x)
    f = gc.function([x], [y, g], backend="numpy")
    value, slope = f(0.5)
    assert value == 0.5 + n
    assert slope == 1.0
    assert gc.to_dot(y).count("->") >= n


def _run_outside_repo(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-c", code], cwd=os.path.expanduser("~") if
                          os.path.isdir(os.path.expanduser("~")) else "/",
                          capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.slow
def test_import_graphc_does_not_import_llvmlite_or_cupy():
    code = ("import sys, graphc, graphc.frontends, graphc.backends, graphc.nn\n"
            "heavy = [m for m in ('llvmlite', 'cupy') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "print('light')")
    result = _run_outside_repo(code)
    assert result.returncode == 0, result.stderr
    assert "light" in result.stdout


@pytest.mark.slow
def test_subpackages_import_from_outside_the_repo():
    result = _run_outside_repo("import graphc.frontends, graphc.backends; "
                               "import graphc.backends.numpy; print(graphc.frontends.__name__)")
    assert result.returncode == 0, result.stderr
    assert "graphc.frontends" in result.stdout
