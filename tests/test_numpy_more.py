"""More of numpy (issue #16, part 1): constructors, elementwise functions, reductions and shape
functions against numpy on both backends, float32 and float64 (ints where numpy allows);
gradients against central differences in float64 and against PyTorch."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc

BACKENDS = ["numpy", "llvm"]
RNG = np.random.default_rng(1616)


def run(build, arrays, backend, shapes=None):
    phs = [gc.placeholder(a.shape if shapes is None else shapes[i], a.dtype, name=f"arg{i}")
           for i, a in enumerate(arrays)]
    out = build(*phs)
    return gc.function(phs, out, backend=backend)(*arrays)


def tol(dtype):
    return dict(rtol=3e-6, atol=1e-6) if np.dtype(dtype) == np.float32 else dict(
        rtol=1e-12, atol=1e-12)


# ---- elementwise --------------------------------------------------------------------------

UNARY = {  # name: numpy function, domain
    "sinh": (np.sinh, (-4, 4)), "cosh": (np.cosh, (-4, 4)), "arcsin": (np.arcsin, (-1, 1)),
    "arccos": (np.arccos, (-1, 1)), "arctan": (np.arctan, (-5, 5)),
    "arcsinh": (np.arcsinh, (-5, 5)), "arccosh": (np.arccosh, (1, 6)),
    "arctanh": (np.arctanh, (-0.99, 0.99)), "log1p": (np.log1p, (-0.9, 5)),
    "expm1": (np.expm1, (-3, 3)), "exp2": (np.exp2, (-5, 5)), "log2": (np.log2, (0.01, 9)),
    "log10": (np.log10, (0.01, 9)), "floor": (np.floor, (-4, 4)), "ceil": (np.ceil, (-4, 4)),
    "round": (np.round, (-4, 4)), "isnan": (np.isnan, (-4, 4)),
    "isfinite": (np.isfinite, (-4, 4)),
}
SPECIALS = np.array([0.0, -0.0, 0.5, 1.5, 2.5, -0.5, -2.5, 1e-8, 8.0, 1000.0, np.inf, -np.inf,
                     np.nan])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_unary_values_match_numpy(backend, dtype):
    xs = {n: np.concatenate([RNG.uniform(*dom, 40), SPECIALS]).astype(dtype)
          for n, (_, dom) in UNARY.items()}
    names = sorted(UNARY)
    phs = [gc.placeholder((None,), dtype, name=n) for n in names]
    f = gc.function(phs, [getattr(gc, n)(p) for n, p in zip(names, phs)], backend=backend)
    with np.errstate(all="ignore"):
        for n, got in zip(names, f(*(xs[n] for n in names))):
            want = UNARY[n][0](xs[n])
            assert got.dtype == want.dtype, n
            np.testing.assert_allclose(got, want, err_msg=n, **tol(dtype))
    # exact where numpy is: rounding halves to even, logs of powers
    exact = f(*(np.array([0.5, 1.5, 2.5, -2.5, 1024.0, 1000.0], dtype) for _ in names))
    assert list(exact[names.index("round")]) == [0.0, 2.0, 2.0, -2.0, 1024.0, 1000.0]
    assert exact[names.index("log2")][4] == 10.0
    if dtype == "float64":  # (numpy's own float32 log10 is not exact there)
        assert exact[names.index("log10")][5] == 3.0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_mod_floor_divide_arctan2_match_numpy(backend, dtype):
    a = np.concatenate([RNG.normal(0, 5, 60), [1.0, -1.0, 0.0, -0.0, 5.0, np.inf, np.nan, 1.0,
                                               -7.5, 1.0, 3.0]]).astype(dtype)
    b = np.concatenate([RNG.normal(0, 2, 60), [0.1, 0.1, -3.0, 2.0, 0.0, 2.0, 1.0, np.inf,
                                               2.5, -np.inf, -0.0]]).astype(dtype)
    mod, fdiv, atan2 = run(lambda x, y: [x % y, x // y, gc.arctan2(x, y)], [a, b], backend)
    with np.errstate(all="ignore"):
        # mod and floor_divide run numpy's own algorithm: bit for bit
        np.testing.assert_array_equal(mod, np.remainder(a, b))
        np.testing.assert_array_equal(fdiv, np.floor_divide(a, b))
        np.testing.assert_array_equal(np.signbit(mod), np.signbit(np.remainder(a, b)))
    np.testing.assert_allclose(atan2, np.arctan2(a, b), **tol(dtype))
    assert mod.dtype == fdiv.dtype == atan2.dtype == np.dtype(dtype)


@pytest.mark.parametrize("dtype", ["int32", "int64"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_integer_mod_floor_divide_match_numpy(backend, dtype):
    info = np.iinfo(dtype)
    a = np.concatenate([RNG.integers(-50, 50, 80), [info.min, info.min, info.max, 7, -7, 0, 5]])
    b = np.concatenate([RNG.integers(-6, 7, 80), [-1, 1, -1, 0, 0, 0, -3]])
    a, b = a.astype(dtype), b.astype(dtype)
    got = run(lambda x, y: [x % y, x // y, 7 % y, x // 3, gc.floor(x), gc.round(x)], [a, b],
              backend)
    with np.errstate(all="ignore"):
        want = [a % b, a // b, 7 % b, a // 3, np.floor(a), np.round(a)]
    for g, w in zip(got, want):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("backend", BACKENDS)
def test_round_decimals_clip_logic_and_operators(backend):
    x = np.array([1.2345, -2.5, 0.125, 7.0, np.nan, -np.inf])
    m = np.array([True, False, True, False, True, False])
    got = run(lambda t, u: [gc.round(t, 2), gc.round(t, -1), gc.clip(t, -1.0, 1.5),
                            gc.clip(t, None, 0.0), gc.clip(t, 2.0, 1.0), u & (t > 0),
                            (t > 0) | u, ~u, True & u, gc.logical_not(t),
                            gc.logical_and(t, 0.0), gc.logical_or(t, u), gc.isnan(u)],
              [x, m], backend)
    with np.errstate(all="ignore"):
        want = [np.round(x, 2), np.round(x, -1), np.clip(x, -1, 1.5), np.clip(x, None, 0.0),
                np.clip(x, 2.0, 1.0), m & (x > 0), (x > 0) | m, ~m, True & m,
                np.logical_not(x), np.logical_and(x, 0.0), np.logical_or(x, m), np.isnan(m)]
    for g, w in zip(got, want):
        assert g.dtype == w.dtype
        np.testing.assert_allclose(g, w, rtol=1e-15)


def test_operators_reject_non_bool_and_not_differentiable_logic():
    i = gc.placeholder((3,), "int64")
    f = gc.placeholder((3,), "float64")
    for bad in (lambda: i & i, lambda: f | (f > 0), lambda: ~i, lambda: 1 | (f > 0)):
        with pytest.raises(TypeError, match="bool"):
            bad()
    with pytest.raises(ValueError, match="a_min, a_max"):
        gc.clip(f)
    with pytest.raises(TypeError, match="decimals"):
        gc.round(f, 1.5)


# ---- constructors -------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_constructors(backend):
    x = np.arange(6.0).reshape(2, 3)
    got = run(lambda t: [gc.zeros((2, 3)), gc.ones(4, "int32"), gc.full((2, 2), 7),
                         gc.full((3,), 2.5, "float64"), gc.zeros_like(t), gc.ones_like(t),
                         gc.full_like(t, 3, "int64"), gc.arange(5), gc.arange(1, 2, 0.25),
                         gc.arange(5, 0, -2, dtype="float64"), gc.eye(3), gc.eye(2, 4, k=1),
                         gc.linspace(0, 1, 5), gc.linspace(0, 1, 4, endpoint=False),
                         gc.full((2,), gc.sum(t))],
              [x], backend, shapes=[(None, 3)])
    want = [np.zeros((2, 3), np.float32), np.ones(4, np.int32), np.full((2, 2), 7),
            np.full(3, 2.5), np.zeros_like(x), np.ones_like(x), np.full_like(x, 3, np.int64),
            np.arange(5), np.arange(1, 2, 0.25, dtype=np.float32),
            np.arange(5, 0, -2, dtype=np.float64), np.eye(3, dtype=np.float32),
            np.eye(2, 4, 1, dtype=np.float32), np.linspace(0, 1, 5, dtype=np.float32),
            np.linspace(0, 1, 4, endpoint=False, dtype=np.float32), np.full(2, 15.0)]
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_array_equal(g, w)


def test_like_constructors_keep_call_time_sizes_and_bad_arguments():
    t = gc.placeholder((None, 3))
    assert gc.zeros_like(t).shape == (None, 3) and gc.ones_like(t, "int64").dtype == np.int64
    with pytest.raises(ValueError, match="fill_value"):
        gc.full((2,), [1, 2])
    with pytest.raises(ValueError, match="step"):
        gc.arange(0, 5, 0)
    with pytest.raises(TypeError, match="arange stop"):
        gc.arange("a")
    with pytest.raises(ValueError, match="num"):
        gc.linspace(0, 1, -1)
    with pytest.raises(TypeError, match="full shape"):
        gc.zeros((2.5,))


# ---- reductions ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "int64"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_reductions_match_numpy(backend, dtype):
    x = RNG.integers(-3, 4, (3, 4, 5)).astype(dtype)
    if dtype.startswith("int"):
        x[0, 0, 0] = np.iinfo(dtype).min  # argmin must not overflow
    got = run(lambda t: [gc.argmin(t), gc.argmin(t, 1), gc.argmin(t, -1, keepdims=True),
                         gc.prod(t, 2), gc.prod(t, (0, 2), keepdims=True), t.prod(),
                         gc.var(t), gc.var(t, 1, ddof=1), gc.std(t, (0, 2), keepdims=True),
                         t.std(ddof=2), gc.prod(t[:, :0], 1)], [x], backend)
    want = [np.argmin(x), np.argmin(x, 1), np.argmin(x, -1, keepdims=True), np.prod(x, 2),
            np.prod(x, (0, 2), keepdims=True), np.prod(x), np.var(x), np.var(x, 1, ddof=1),
            np.std(x, (0, 2), keepdims=True), np.std(x, ddof=2), np.prod(x[:, :0], 1)]
    for k, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == w.dtype and g.shape == w.shape, k
        np.testing.assert_allclose(g, w, rtol=1e-5, err_msg=str(k))


@pytest.mark.parametrize("backend", BACKENDS)
def test_argmin_ties_and_nan_like_numpy(backend):
    x = np.array([[3.0, 1.0, 1.0, np.nan, 0.5], [2.0, -0.0, 0.0, 5.0, 0.0]])
    b = np.array([True, False, False])
    got = run(lambda t, u: [gc.argmin(t, 1), t.argmin(), gc.argmin(u)], [x, b], backend)
    assert [g.tolist() for g in got] == [np.argmin(x, 1).tolist(), int(np.argmin(x)), 1]


def test_prod_gradient_with_zeros_is_product_of_the_others():
    x = np.array([[2.0, 0.0, 3.0, 5.0, -1.0], [0.0, 0.0, 4.0, 1.0, 2.0],
                  [1.5, 2.0, -3.0, 0.5, 4.0]])
    xs = gc.placeholder(x.shape, "float64")
    g = gc.function([xs], gc.grad(gc.sum(gc.prod(xs, 1)), xs), backend="numpy")(x)
    want = np.array([[np.prod(np.delete(row, i)) for i in range(5)] for row in x])
    np.testing.assert_array_equal(g, want)
    assert gc.check_grad(lambda t: gc.sum(gc.prod(t, 0) ** 2), x, raise_on_failure=True)


def test_var_ddof_beyond_count_and_bad_arguments():
    x = np.array([1.0, 2.0])
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        np.testing.assert_array_equal(run(lambda t: gc.var(t, ddof=3), [x], "numpy"),
                                      np.var(x, ddof=3))
    with pytest.raises(TypeError, match="ddof"):
        gc.var(gc.placeholder((2,)), ddof=0.5)
    with pytest.raises(gc.ShapeError, match="prod.*axis 0"):
        gc.prod(gc.placeholder((None, 2)), 0)


# ---- shape functions ----------------------------------------------------------------------

SHAPE_CASES = {  # name: (graphc, numpy, operand shapes)
    "flip": (lambda a: gc.flip(a), np.flip, [(3, 4)]),
    "flip_axis": (lambda a: gc.flip(a, (0, 2)), lambda a: np.flip(a, (0, 2)), [(2, 3, 2)]),
    "split_sections": (lambda a: gc.split(a, 2, axis=1)[1], lambda a: np.split(a, 2, 1)[1],
                       [(3, 4)]),
    "split_indices": (lambda a: gc.split(a, [1, 3])[1], lambda a: np.split(a, [1, 3])[1],
                      [(5, 2)]),
    "tile": (lambda a: gc.tile(a, (2, 1, 3)), lambda a: np.tile(a, (2, 1, 3)), [(3, 2)]),
    "tile_int": (lambda a: gc.tile(a, 3), lambda a: np.tile(a, 3), [(2, 3)]),
    "repeat": (lambda a: gc.repeat(a, 2, axis=1), lambda a: np.repeat(a, 2, 1), [(3, 2)]),
    "repeat_flat": (lambda a: gc.repeat(a, 3), lambda a: np.repeat(a, 3), [(2, 2)]),
    "repeat_counts": (lambda a: gc.repeat(a, [2, 0, 1], axis=0),
                      lambda a: np.repeat(a, [2, 0, 1], 0), [(3, 2)]),
    "pad": (lambda a: gc.pad(a, 1), lambda a: np.pad(a, 1), [(2, 3)]),
    "pad_pairs": (lambda a: gc.pad(a, ((1, 0), (2, 3)), constant_values=((-1, 2), (3, 4))),
                  lambda a: np.pad(a, ((1, 0), (2, 3)), constant_values=((-1, 2), (3, 4))),
                  [(2, 3)]),
    "pad_one_pair": (lambda a: gc.pad(a, (0, 2), constant_values=1.5),
                     lambda a: np.pad(a, (0, 2), constant_values=1.5), [(2, 3)]),
    "dot_2d": (gc.dot, np.dot, [(3, 4), (4, 2)]),
    "dot_1d": (gc.dot, np.dot, [(4,), (4,)]),
    "dot_nd": (gc.dot, np.dot, [(2, 3, 4), (5, 4, 2)]),
    "dot_nd_1d": (gc.dot, np.dot, [(2, 3, 4), (4,)]),
    "outer": (gc.outer, np.outer, [(3,), (2, 2)]),
    "einsum_matmul": (lambda a, b: gc.einsum("ij,jk->ik", a, b),
                      lambda a, b: np.einsum("ij,jk->ik", a, b), [(3, 4), (4, 2)]),
    "einsum_implicit": (lambda a, b: gc.einsum("ba,cb", a, b),
                        lambda a, b: np.einsum("ba,cb", a, b), [(3, 4), (2, 3)]),
    "einsum_batch": (lambda a, b: gc.einsum("bij,bjk->bki", a, b),
                     lambda a, b: np.einsum("bij,bjk->bki", a, b), [(2, 3, 4), (2, 4, 5)]),
    "einsum_trace": (lambda a: gc.einsum("ii", a), lambda a: np.einsum("ii", a), [(3, 3)]),
    "einsum_diag": (lambda a: gc.einsum("iji->ij", a), lambda a: np.einsum("iji->ij", a),
                    [(3, 2, 3)]),
    "einsum_three": (lambda a, b, c: gc.einsum("ij,jk,ki->", a, b, c),
                     lambda a, b, c: np.einsum("ij,jk,ki->", a, b, c), [(2, 3), (3, 4), (4, 2)]),
    "einsum_outer_sum": (lambda a, b: gc.einsum("i,jk->ij", a, b),
                         lambda a, b: np.einsum("i,jk->ij", a, b), [(3,), (2, 4)]),
}


@pytest.mark.parametrize("backend", [pytest.param("numpy"),
                                     pytest.param("llvm", marks=pytest.mark.slow)])
def test_shape_functions_match_numpy(backend):
    names = sorted(SHAPE_CASES)
    arrays = {n: [RNG.standard_normal(s) for s in SHAPE_CASES[n][2]] for n in names}
    phs = {n: [gc.placeholder(a.shape, "float64") for a in arrays[n]] for n in names}
    f = gc.function([p for n in names for p in phs[n]],
                    [SHAPE_CASES[n][0](*phs[n]) for n in names], backend=backend)
    for n, got in zip(names, f(*(a for name in names for a in arrays[name]))):
        want = SHAPE_CASES[n][1](*arrays[n])
        assert got.shape == want.shape, n
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=n)


@pytest.mark.parametrize("name", sorted(SHAPE_CASES))
def test_shape_function_gradients(name):
    build, _, shapes = SHAPE_CASES[name]
    arrays = [RNG.standard_normal(s) for s in shapes]
    weights = RNG.standard_normal(np.shape(SHAPE_CASES[name][1](*arrays)))
    assert gc.check_grad(lambda *ts: gc.sum(build(*ts) * weights), *arrays,
                         raise_on_failure=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_shape_functions_float32_and_ints(backend):
    a = RNG.integers(-5, 5, (3, 4))
    f32 = RNG.standard_normal((3, 4)).astype(np.float32)
    got = run(lambda t, u: [gc.flip(t, 0), gc.tile(t, 2), gc.repeat(t, 2, 1),
                            gc.pad(t, 1, constant_values=9),
                            gc.split(t, 3)[2],
                            gc.einsum("ij->j", u), gc.dot(u, gc.transpose(u)),
                            gc.pad(u, ((0, 1), (1, 0)), constant_values=-2.5)], [a, f32],
              backend)
    want = [np.flip(a, 0), np.tile(a, 2), np.repeat(a, 2, 1), np.pad(a, 1, constant_values=9),
            np.split(a, 3)[2], np.einsum("ij->j", f32), f32 @ f32.T,
            np.pad(f32, ((0, 1), (1, 0)), constant_values=-2.5)]
    for g, w in zip(got, want):
        assert g.dtype == w.dtype
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_shape_function_errors_name_the_argument():
    x = gc.placeholder((3, 4))
    cases = [
        (lambda: gc.split(x, 3, axis=1), ValueError, "equal division"),
        (lambda: gc.tile(x, (-1,)), ValueError, "reps"),
        (lambda: gc.repeat(x, [1, 2], axis=0), ValueError, "repeats"),
        (lambda: gc.pad(x, ((1, 2, 3),)), ValueError, "pad_width"),
        (lambda: gc.pad(x, -1), ValueError, "pad_width"),
        (lambda: gc.pad(x, 1, mode="reflect"), ValueError, "mode"),
        (lambda: gc.einsum("ij,jk", x), ValueError, "'ij,jk'"),
        (lambda: gc.einsum("ijk", x), ValueError, "'ijk'"),
        (lambda: gc.einsum("ij->k", x), ValueError, "'k'"),
        (lambda: gc.einsum("ij,ij->i", x, gc.placeholder((4, 3))), gc.ShapeError, "'i'"),
        (lambda: gc.einsum("...i", x), ValueError, "ellipsis"),
        (lambda: gc.einsum("i1", x), ValueError, "'1'"),
        (lambda: gc.dot(gc.placeholder((2, 3)), gc.placeholder((4, 2, 3))), gc.ShapeError,
         "not aligned"),
    ]
    for build, exc, words in cases:
        with pytest.raises(exc, match=words):
            build()


# ---- PyTorch conventions ------------------------------------------------------------------

def _grads(build, arrays):
    phs = [gc.placeholder(a.shape, "float64") for a in arrays]
    loss = gc.sum(build(*phs))
    return gc.function(phs, gc.grad(loss, phs), backend="numpy")(*arrays)


@pytest.mark.slow  # (importing torch alone takes seconds)
def test_gradients_match_pytorch():
    torch = pytest.importorskip("torch")
    x = np.array([[-2.0, -1.0, 0.0, 0.5, 1.0, 2.0], [3.0, 0.0, -0.5, 1.0, 0.0, 7.0]])
    lo, hi = -1.0, 1.0
    b = np.array([[1.5, -2.0, 0.7, -0.3, 2.5, -4.0], [2.0, 1.0, -1.5, 0.4, 3.0, 2.5]])

    def torch_grads(fn, *arrays):
        ts = [torch.tensor(a, requires_grad=True) for a in arrays]
        fn(*ts).sum().backward()
        return [t.grad.numpy() for t in ts]

    cases = [
        (lambda t: gc.clip(t, lo, hi), lambda t: torch.clamp(t, lo, hi), [x]),
        (lambda t: gc.prod(t, 1), lambda t: torch.prod(t, 1), [x]),
        (lambda t: gc.prod(t), lambda t: torch.prod(t), [x[:, 1:4]]),
        (lambda t, u: t % u, torch.remainder, [x, b]),
        (lambda t, u: t // u, lambda t, u: torch.div(t, u, rounding_mode="floor"), [x, b]),
        (lambda t: gc.var(t, 1, ddof=1), lambda t: torch.var(t, 1, correction=1), [x]),
        (lambda t: gc.std(t, 0), lambda t: torch.std(t, 0, correction=0), [x]),
        (gc.arctan2, torch.atan2, [x, b]),
        (lambda t: gc.floor(t) + gc.ceil(t) + gc.round(t), lambda t: torch.floor(t)
         + torch.ceil(t) + torch.round(t), [x]),
        (lambda t, u: gc.einsum("ij,kj->ik", t, u), lambda t, u: torch.einsum("ij,kj->ik", t, u),
         [x, b]),
        (lambda t: gc.expm1(t) + gc.log1p(gc.abs(t)) + gc.log2(gc.abs(t) + 1) + gc.exp2(t),
         lambda t: torch.expm1(t) + torch.log1p(t.abs()) + torch.log2(t.abs() + 1)
         + torch.exp2(t), [x]),
    ]
    for build, tbuild, arrays in cases:
        ours = _grads(build, arrays)
        theirs = torch_grads(tbuild, *arrays)
        for o, t in zip(ours, theirs):
            np.testing.assert_allclose(o, t, rtol=1e-12, atol=1e-12)


def test_clip_gradient_passes_at_the_bounds():
    x = np.array([-1.0, -0.5, 1.0, 2.0])
    (g,) = _grads(lambda t: gc.clip(t, -1.0, 1.0), [x])
    assert g.tolist() == [1.0, 1.0, 1.0, 0.0]
