"""gc.scan's bad input: a clear error at build time naming the carry or argument and the
user's line, never a crash or a wrong result."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc

HERE = __file__.rsplit("/", 1)[-1]


@pytest.fixture
def x():
    return gc.placeholder((4, 3), "float64", "x")


@pytest.fixture
def h0():
    return gc.placeholder((3,), "float64", "h0")


def test_a_carry_that_changes_shape(x, h0):
    with pytest.raises(gc.ShapeError, match=rf"the carry changes shape.*\(3,\).*\(1, 3\).*{HERE}"):
        gc.scan(lambda h, xt: (gc.expand_dims(h + xt, 0), None), h0, x)


def test_a_carry_that_changes_dtype_names_it(x, h0):
    def step(carry, xt):
        h, n = carry
        return (h + xt, n + 0.5), None
    with pytest.raises(gc.DTypeError, match=rf"carry 1 changes dtype.*int64.*float.*{HERE}"):
        gc.scan(step, (h0, gc.constant(np.int64(0))), x)


def test_a_carry_of_another_structure(x, h0):
    with pytest.raises(TypeError, match=r"carry of structure \(tensor, tensor\).*init has "
                                        rf"structure tensor.*{HERE}"):
        gc.scan(lambda h, xt: ((h, h), None), h0, x)
    with pytest.raises(TypeError, match=rf"must return a pair \(carry, y\).*{HERE}"):
        gc.scan(lambda h, xt: h + xt, h0, x)


def test_sequences_of_different_lengths(h0):
    a = gc.placeholder((4, 3), "float64", "a")
    b = gc.placeholder((5, 3), "float64", "b")
    with pytest.raises(gc.ShapeError, match=rf"xs leaf 1 has length 5 but xs leaf 0 has "
                                            rf"length 4.*{HERE}"):
        gc.scan(lambda h, xs: (h + xs[0] + xs[1], None), h0, (a, b))


def test_a_length_that_disagrees_with_xs(x, h0):
    with pytest.raises(gc.ShapeError, match=rf"length=5 disagrees with the length of xs "
                                            rf"\(4\).*{HERE}"):
        gc.scan(lambda h, xt: (h + xt, None), h0, x, length=5)
    with pytest.raises(TypeError, match=rf"needs xs or length=.*{HERE}"):
        gc.scan(lambda h, xt: (h, None), h0)
    with pytest.raises(ValueError, match=rf"length must be >= 0, got -1.*{HERE}"):
        gc.scan(lambda h, xt: (h, None), h0, length=-1)
    with pytest.raises(TypeError, match=r"length must be an int or None, got 2.5"):
        gc.scan(lambda h, xt: (h, None), h0, length=2.5)


def test_a_scalar_sequence(h0):
    with pytest.raises(gc.ShapeError, match=rf"xs leaf 0 is a scalar.*{HERE}"):
        gc.scan(lambda h, xt: (h + xt, None), h0, gc.constant(np.float64(1)))


def test_bad_arguments(x, h0):
    with pytest.raises(TypeError, match="fn must be callable"):
        gc.scan(None, h0, x)
    with pytest.raises(TypeError, match="init is None"):
        gc.scan(lambda h, xt: (h, None), None, x)
    with pytest.raises(TypeError, match="dicts are not supported"):
        gc.scan(lambda h, xt: (h, None), {"h": h0}, x)
    with pytest.raises(TypeError, match="reverse and checkpoint must be True or False"):
        gc.scan(lambda h, xt: (h, None), h0, x, reverse="yes")


def test_a_placeholder_the_function_does_not_take(x, h0):
    """The body reads `w`, an outside placeholder: fine when the function takes it, an
    error naming it and the line of the scan when it does not."""
    w = gc.placeholder((3,), "float64", "w")
    h, _ = gc.scan(lambda h, xt: (h * w + xt, None), h0, x)
    with pytest.raises(ValueError, match=rf"placeholder\(s\) 'w' not listed in inputs.*scan "
                                         rf"built at .*{HERE}"):
        gc.function([h0, x], h, backend="numpy")
    f = gc.function([h0, x, w], h, backend="numpy")
    np.testing.assert_allclose(f(np.ones(3), np.ones((4, 3)), np.zeros(3)), np.ones(3))


def test_sequences_of_call_time_lengths_that_differ(h0):
    a = gc.placeholder((None, 3), "float64", "a")
    b = gc.placeholder((None, 3), "float64", "b")
    h, _ = gc.scan(lambda h, xs: (h + xs[0] * xs[1], None), h0, (a, b))
    f = gc.function([h0, a, b], h, backend="numpy")
    with pytest.raises(ValueError, match=r"axis 0 of argument 'b' is 5 and axis 0 of argument "
                                         r"'a' is 4.*scan at"):
        f(np.ones(3), np.ones((4, 3)), np.ones((5, 3)))


def test_a_length_checked_at_call_time(h0):
    x = gc.placeholder(("T", 3), "float64", "x")
    h, ys = gc.scan(lambda h, xt: (h + xt, h), h0, x, length=4)
    assert ys.shape == (4, 3)
    f = gc.function([h0, x], h, backend="numpy")
    np.testing.assert_allclose(f(np.zeros(3), np.ones((4, 3))), [4.0, 4.0, 4.0])
    with pytest.raises(ValueError, match=r"size T is 5 and size 4 is 4.*scan at"):
        f(np.zeros(3), np.ones((5, 3)))


def test_a_body_that_would_update_state_each_step(x, h0):
    drop = gc.nn.Dropout(0.5)
    with pytest.raises(ValueError, match=rf"body uses .*updates parameter .*cannot update "
                                         rf"state.*{HERE}"):
        gc.scan(lambda h, xt: (drop(h + xt), None), h0, x)
    outside = drop(h0)  # computed once, before the loop: fine
    h, _ = gc.scan(lambda h, xt: (h + outside * xt, None), h0, x)
    assert h.shape == (3,)
