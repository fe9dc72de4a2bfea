"""Regions (graph-valued attributes): the one traversal hook seen by toposort, the rewrite
driver, the fingerprint, autodiff and gc.show, through a test-only primitive."""
from __future__ import annotations

import textwrap

import numpy as np
import pytest

import graphc as gc
from graphc.errors import GradientError
from graphc.fingerprint import graph_fingerprint
from graphc.graph import Graph
from graphc.node import toposort
from graphc.ops.leaves import ParamStorage, parameter_node, placeholder_node
from graphc.ops.registry import make
from graphc.region import Region, node_regions
from tests import region_op
from tests.region_op import body_of, map_body


@pytest.fixture(autouse=True)
def _registered():
    with region_op.registered():
        yield


@pytest.fixture
def x():
    return placeholder_node((3,), np.float64, "x")


def fingerprint(x, body):
    return graph_fingerprint(Graph((x,), (map_body(x, body),)))[0]


def test_node_regions_is_the_hook(x):
    body = body_of(lambda a: make("exp", a), x)
    node = map_body(x, body)
    assert node_regions(node) == (body,)
    assert node_regions(x) == ()
    inner = toposort([node], into_regions=True)
    assert body.outputs[0] in inner and body.inputs[0] in inner
    assert inner.index(body.outputs[0]) < inner.index(node)
    assert body.outputs[0] not in toposort([node])  # the default walk stays outside


def test_a_body_is_closed(x):
    with pytest.raises(ValueError, match="placeholder 'x'.*not one of its inputs"):
        Region((placeholder_node((3,), np.float64, "a"),), (make("exp", x),))
    with pytest.raises(ValueError, match="inputs must be placeholders"):
        Region((make("exp", x),), (x,))


def test_different_bodies_never_share_a_fingerprint(x):
    prints = {fingerprint(x, body_of(fn, x)) for fn in (
        lambda a: make("exp", a), lambda a: make("sin", a), lambda a: make("neg", a),
        lambda a: make("exp", make("exp", a)))}
    assert len(prints) == 4


def test_equal_bodies_share_a_fingerprint(x):
    # Fresh placeholders (other uids), the same structure built on the same lines (a
    # fingerprint holds source lines, which error messages quote): the same program.
    def exp(a):
        return make("exp", a)
    one, two = body_of(exp, x), body_of(exp, x)
    assert one.inputs != two.inputs
    assert fingerprint(x, one) == fingerprint(x, two)


def test_a_region_in_a_body_is_fingerprinted_too(x):
    def nested(fn):
        return body_of(lambda a: map_body(a, body_of(fn, a)), x)
    assert (fingerprint(x, nested(lambda a: make("exp", a)))
            != fingerprint(x, nested(lambda a: make("sin", a))))


def test_fingerprint_numbers_parameters_in_bodies_with_the_program(x):
    w = parameter_node(ParamStorage(np.ones(3), "w"))
    node = map_body(x, body_of(lambda a: make("mul", a, w), x))
    digest, storages = graph_fingerprint(Graph((x,), (node,)))
    assert [s.name for s in storages] == ["w"]
    assert [p.attrs["name"] for p in Graph((x,), (node,)).parameters()] == ["w"]


def test_fingerprint_refuses_an_unknown_attribute_type(x):
    node = map_body(x, body_of(lambda a: make("exp", a), x), note=object())
    with pytest.raises(TypeError, match="attribute 'note' holds a object"):
        graph_fingerprint(Graph((x,), (node,)))


def test_a_rewrite_fires_inside_a_body(x):
    out = map_body(x, body_of(lambda a: make("log", make("exp", a)), x))
    f = gc.function([x], out, backend="numpy")
    assert dict(f.report.fired()) == {"log_exp": 1}
    (node,) = f.graph.outputs
    (body,) = node_regions(node)
    assert body.outputs == body.inputs  # log(exp(a)) -> a
    values = np.array([0.5, -1.0, 2.0])
    np.testing.assert_allclose(f(values), values)
    raw = gc.function([x], out, backend="numpy", optimize=False)
    np.testing.assert_allclose(raw(values), values)


def test_show_lists_the_body_under_its_node(x):
    out = map_body(x, body_of(lambda a: make("exp", make("neg", a)), x))
    assert gc.show(Graph((x,), (out,))) == textwrap.dedent("""\
        %x : f64[3] = placeholder
        %0 : f64[3] = test_map_body(%x) {body=region(1 in, 1 out)}
            body:
              %a : f64[3] = placeholder
              %0 : f64[3] = neg(%a)
              %1 : f64[3] = exp(%0)
              return %1
        return %0""")


def test_grad_through_a_region_without_a_vjp_is_a_clear_error(x):
    out = map_body(x, body_of(lambda a: make("exp", a), x))
    with pytest.raises(GradientError, match="'test_map_body', which carries a region"):
        gc.grad(gc.Tensor(out).sum(), [gc.Tensor(x)])
