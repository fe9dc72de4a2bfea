"""The chain-rule table: every elementwise primitive's partial derivatives, checked
symbolically against sympy.diff and a hand-written table of textbook derivatives, and the
graphs built from them checked numerically; the first-course differentiation rules through
gc.grad; and the `python -m graphc.table` printer."""
from __future__ import annotations

import subprocess
import sys
import zlib

import numpy as np
import pytest
import sympy as sp

import graphc as gc
from graphc.derivatives import arg_symbols, definition, elementwise_ops, partials
from graphc.ops import OPS, make
from graphc.ops.elementwise import elementwise_infer
from graphc.ops.registry import OpDef, register
from graphc.symbolic import explicit

# User-defined primitives join the table like the built-ins (registered once, at import,
# so that the parametrizations over elementwise_ops() below include them).
for _name, _definition in (("softsign_table", lambda x: x / (1 + sp.Abs(x))),
                           ("gauss_table", lambda a, b: sp.exp(-a ** 2) * sp.cosh(b) + a * b)):
    if _name not in OPS:
        gc.elementwise_function(_name, _definition)

X = sp.Symbol("x", real=True)
A = sp.Symbol("a", real=True)
B = sp.Symbol("b", real=True)
C = sp.Symbol("c", real=True)

BUILTIN = [op for op in elementwise_ops() if not OPS[op].user_defined]
COMPARISONS = ["less", "less_equal", "greater", "greater_equal", "equal", "not_equal"]
TESTS = ["isnan", "isfinite"]  # bool results of one argument: no derivative

# Textbook derivatives, written independently of graphc's definitions (Sigmoid/Softplus
# spelled out in exp). None: no derivative (a boolean argument).
TEXTBOOK = {
    "neg": [-1],
    "exp": [sp.exp(X)],
    "log": [1 / X],
    "sqrt": [1 / (2 * sp.sqrt(X))],
    "square": [2 * X],
    "abs": [sp.sign(X)],
    "sign": [0],
    "sin": [sp.cos(X)],
    "cos": [-sp.sin(X)],
    "tan": [1 / sp.cos(X) ** 2],
    "cot": [-1 / sp.sin(X) ** 2],
    "sec": [sp.sin(X) / sp.cos(X) ** 2],
    "csc": [-sp.cos(X) / sp.sin(X) ** 2],
    "tanh": [1 / sp.cosh(X) ** 2],
    "sigmoid": [sp.exp(-X) / (1 + sp.exp(-X)) ** 2],
    "softplus": [1 / (1 + sp.exp(-X))],
    "relu": [sp.Piecewise((1, X > 0), (0, True))],
    "erf": [2 / sp.sqrt(sp.pi) * sp.exp(-X ** 2)],
    "add": [1, 1],
    "sub": [1, -1],
    "mul": [B, A],
    "div": [1 / B, -A / B ** 2],
    "pow": [B * A ** (B - 1), A ** B * sp.log(A)],
    "logb": [1 / (A * sp.log(B)), -sp.log(A) / (B * sp.log(B) ** 2)],
    "maximum": [sp.Piecewise((1, A > B), (0, True)), sp.Piecewise((1, B > A), (0, True))],
    "minimum": [sp.Piecewise((1, A < B), (0, True)), sp.Piecewise((1, B < A), (0, True))],
    "where": [None, sp.Piecewise((1, sp.Ne(C, 0)), (0, True)),
              sp.Piecewise((0, sp.Ne(C, 0)), (1, True))],
    # more of numpy (issue #16); rounding steps have derivative 0, as in PyTorch
    "sinh": [sp.cosh(X)],
    "cosh": [sp.sinh(X)],
    "arcsin": [1 / sp.sqrt(1 - X ** 2)],
    "arccos": [-1 / sp.sqrt(1 - X ** 2)],
    "arctan": [1 / (1 + X ** 2)],
    "arcsinh": [1 / sp.sqrt(X ** 2 + 1)],
    "arccosh": [1 / sp.sqrt(X ** 2 - 1)],
    "arctanh": [1 / (1 - X ** 2)],
    "log1p": [1 / (1 + X)],
    "expm1": [sp.exp(X)],
    "exp2": [2 ** X * sp.log(2)],
    "log2": [1 / (X * sp.log(2))],
    "log10": [1 / (X * sp.log(10))],
    "floor": [0],
    "ceil": [0],
    "round": [0],
    "arctan2": [B / (A ** 2 + B ** 2), -A / (A ** 2 + B ** 2)],
    "mod": [1, -sp.floor(A / B)],
    "floor_divide": [0, 0],
}


def test_user_defined_primitives_are_in_the_table():
    ops = elementwise_ops()
    assert "softsign_table" in ops and "gauss_table" in ops
    assert [str(s) for s in arg_symbols("gauss_table")] == ["a", "b"]
    da, db = partials("gauss_table")
    a, b = arg_symbols("gauss_table")
    assert sp.simplify(da - (-2 * a * sp.exp(-a ** 2) * sp.cosh(b) + b)) == 0
    assert sp.simplify(db - (sp.exp(-a ** 2) * sp.sinh(b) + a)) == 0


def test_every_builtin_elementwise_primitive_is_in_the_textbook_table():
    differentiable = [op for op in BUILTIN if op not in COMPARISONS + TESTS]
    assert sorted(differentiable) == sorted(TEXTBOOK)
    for op in COMPARISONS:
        assert op in BUILTIN


def _rng(op: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(op.encode()))


def sample_points(op: str, n: int = 60) -> dict[str, np.ndarray]:
    """Points inside each primitive's domain and away from its kinks."""
    rng = _rng(op)

    def away_from_zero(size, lo=0.2, hi=3.0):
        return rng.uniform(lo, hi, size) * rng.choice([-1.0, 1.0], size)

    x = rng.uniform(-3, 3, n)
    if op in ("log", "sqrt"):
        x = rng.uniform(0.1, 5, n)
    elif op in ("abs", "sign", "relu"):
        x = away_from_zero(n)
    elif op in ("tan", "sec"):
        x = rng.uniform(-1.3, 1.3, n)
    elif op in ("cot", "csc"):
        x = rng.uniform(0.2, 2.9, n)
    elif op in ("arcsin", "arccos", "arctanh"):
        x = rng.uniform(-0.9, 0.9, n)
    elif op in ("arccosh", "log2", "log10", "log1p"):
        x = rng.uniform(1.1, 5, n)
    a, b = rng.normal(size=n), rng.normal(size=n)
    if op == "div":
        b = away_from_zero(n, 0.3)
    elif op == "pow":
        a = rng.uniform(0.1, 4, n)
    elif op == "logb":
        a, b = rng.uniform(0.1, 5, n), rng.uniform(1.2, 6, n)
    elif op in ("maximum", "minimum"):
        b = a + away_from_zero(n, 0.05, 2.0)
    elif op in ("mod", "floor_divide", "arctan2"):
        b = away_from_zero(n, 0.3)
    c = rng.integers(0, 2, n).astype(np.float64)
    return {"x": x, "a": a, "b": b, "c": c}


def numeric(expr: sp.Expr, syms, points: dict[str, np.ndarray]) -> np.ndarray:
    """Evaluates expr at the points; DiracDelta (sign's and abs's kinks) is 0 off the kink."""
    expr = explicit(sp.sympify(expr)).replace(sp.DiracDelta, lambda *args: sp.Integer(0))
    fn = sp.lambdify(syms, expr, modules=["numpy", {"erf": _erf}])
    n = len(next(iter(points.values())))
    out = fn(*(points[s.name] for s in syms))
    return np.broadcast_to(np.asarray(out, dtype=np.float64), (n,))


def _erf(x):
    from math import erf
    return np.vectorize(erf, otypes=[float])(x)


def assert_same_function(got: sp.Expr, expected: sp.Expr, op: str, syms) -> None:
    """simplify(got - expected) == 0, or else equal values at many points of the domain."""
    got, expected = explicit(sp.sympify(got)), explicit(sp.sympify(expected))
    if not got.has(sp.Piecewise, sp.DiracDelta) and not expected.has(sp.Piecewise):
        if sp.simplify(got - expected) == 0:
            return
    points = sample_points(op)
    np.testing.assert_allclose(numeric(got, syms, points), numeric(expected, syms, points),
                               rtol=1e-10, atol=1e-12, err_msg=f"{op}: {got} vs {expected}")


@pytest.mark.parametrize("op", BUILTIN)
def test_table_matches_textbook(op):
    syms = arg_symbols(op)
    table = partials(op)
    assert len(table) == len(syms)
    if op in COMPARISONS + TESTS:
        assert table == (None,) * len(syms)
        return
    expected = TEXTBOOK[op]
    for sym, got, want in zip(syms, table, expected):
        if want is None:
            assert got is None, f"{op}: d/d{sym} should be absent (boolean argument)"
        else:
            assert got is not None
            assert_same_function(got, want, op, syms)


@pytest.mark.parametrize("op", elementwise_ops())
def test_table_matches_sympy_diff_of_explicit_definition(op):
    """Every primitive (user-defined ones too): each partial, with graphc's own functions
    written out in exp/log, is sympy.diff of the written-out definition."""
    syms = arg_symbols(op)
    f = explicit(definition(op))
    for sym, d in zip(syms, partials(op)):
        if d is None:
            continue
        assert_same_function(d, sp.diff(f, sym), op, syms)


def test_sigmoid_and_softplus_partials_are_written_in_their_own_terms():
    # the stable forms: sigma*(1 - sigma) and sigma, no exp that could overflow
    from graphc.symbolic import Sigmoid
    (ds,) = partials("sigmoid")
    (dp,) = partials("softplus")
    assert not ds.has(sp.exp) and ds.has(Sigmoid)
    assert not dp.has(sp.exp) and dp.has(Sigmoid)


def _float_inputs(op):
    return [k for k, d in enumerate(partials(op)) if d is not None]


DIFFERENTIABLE = [op for op in elementwise_ops() if _float_inputs(op)]


@pytest.mark.parametrize("op", DIFFERENTIABLE)
def test_graph_built_from_each_partial(op):
    """gc.grad through the table's graph equals sympy.diff of the written-out definition,
    at many points (vectors of 60 points, run through gc.function)."""
    syms = arg_symbols(op)
    points = sample_points(op)
    phs = []
    for s in syms:
        if op == "where" and s.name == "c":
            phs.append(gc.placeholder((None,), "bool", name=s.name))
        else:
            phs.append(gc.placeholder((None,), "float64", name=s.name))
    y = gc.Tensor(make(op, *(p.node for p in phs)))
    wrt = [phs[k] for k in _float_inputs(op)]
    grads = gc.grad(gc.sum(y), wrt)
    f = gc.function(phs, grads, backend="numpy")
    args = [points[s.name].astype(bool) if (op == "where" and s.name == "c")
            else points[s.name] for s in syms]
    got = f(*args)
    for k, g in zip(_float_inputs(op), got):
        want = numeric(sp.diff(explicit(definition(op)), syms[k]), syms, points)
        np.testing.assert_allclose(g, want, rtol=1e-9, atol=1e-12,
                                   err_msg=f"d{op}/d{syms[k]}")


@pytest.mark.parametrize("op", DIFFERENTIABLE)
def test_graph_from_partial_in_float32(op):
    syms = arg_symbols(op)
    points = sample_points(op, 20)
    phs = [gc.placeholder((20,), "bool" if (op == "where" and s.name == "c") else "float32",
                          name=s.name) for s in syms]
    y = gc.Tensor(make(op, *(p.node for p in phs)))
    wrt = [phs[k] for k in _float_inputs(op)]
    grads = gc.grad(gc.sum(y), wrt)
    assert all(g.dtype == np.float32 and g.shape == (20,) for g in grads)
    args = [points[s.name].astype(bool) if (op == "where" and s.name == "c")
            else points[s.name].astype(np.float32) for s in syms]
    got = gc.function(phs, grads, backend="numpy")(*args)
    exact = {k: v.astype(np.float32).astype(np.float64) for k, v in points.items()}
    for k, g in zip(_float_inputs(op), got):
        assert g.dtype == np.float32
        want = numeric(sp.diff(explicit(definition(op)), syms[k]), syms, exact)
        np.testing.assert_allclose(g, want, rtol=2e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------
# The first-course rules, written once for SymPy and once for graphc
# ---------------------------------------------------------------------------------------


class S:
    """SymPy's side: the same names as graphc's, in SymPy's own functions."""

    sin, cos, tan, cot, sec, csc = sp.sin, sp.cos, sp.tan, sp.cot, sp.sec, sp.csc
    tanh, exp, sqrt, erf, abs = sp.tanh, sp.exp, sp.sqrt, sp.erf, sp.Abs
    maximum, minimum = sp.Max, sp.Min

    @staticmethod
    def log(x, base=None):
        return sp.log(x) if base is None else sp.log(x) / sp.log(base)

    @staticmethod
    def sigmoid(x):
        return 1 / (1 + sp.exp(-x))

    @staticmethod
    def softplus(x):
        return sp.log(1 + sp.exp(x))

    @staticmethod
    def relu(x):
        return sp.Piecewise((x, x > 0), (0, True))

    @staticmethod
    def where(c, a, b):
        return sp.Piecewise((a, c), (b, True))


# name -> (expression in namespace m of x (and y), domain of x, domain of y)
POS = (0.2, 4.0)
ALL = (-3.0, 3.0)
RULES = {
    "constant": (lambda m, x: 0 * x + 7, ALL),
    "x": (lambda m, x: x, ALL),
    "a*u": (lambda m, x: 3.5 * m.sin(x), ALL),
    "u+v-w": (lambda m, x: m.sin(x) + x ** 2 - m.exp(x), ALL),
    "u*v": (lambda m, x: m.sin(x) * m.exp(x), ALL),
    "u/v": (lambda m, x: m.sin(x) / (2 + m.cos(x)), ALL),
    "u**n": (lambda m, x: (1 + x ** 2) ** 4, ALL),
    "x**n odd": (lambda m, x: x ** 3, ALL),
    "u**rational": (lambda m, x: (1 + x ** 2) ** 1.5, ALL),
    "sqrt(u)": (lambda m, x: m.sqrt(1 + x ** 2), ALL),
    "sqrt(x)": (lambda m, x: m.sqrt(x), POS),
    "1/u": (lambda m, x: 1 / (2 + m.sin(x)), ALL),
    "1/x": (lambda m, x: 1 / x, POS),
    "1/u**n": (lambda m, x: 1 / (1 + x ** 2) ** 3, ALL),
    "x**-n": (lambda m, x: x ** -3, POS),
    "f(g(x))": (lambda m, x: m.sin(x ** 2), ALL),
    "f(g(h(x)))": (lambda m, x: m.exp(m.tanh(m.cos(x))), ALL),
    "ln(x)": (lambda m, x: m.log(x), POS),
    "ln(u)": (lambda m, x: m.log(1 + x ** 2), ALL),
    "log_a(x)": (lambda m, x: m.log(x, base=3.0), POS),
    "log_a(u)": (lambda m, x: m.log(2 + m.sin(x), base=10.0), ALL),
    "exp(x)": (lambda m, x: m.exp(x), ALL),
    "exp(u)": (lambda m, x: m.exp(-x ** 2 / 2), ALL),
    "a**x": (lambda m, x: 2.0 ** x, ALL),
    "a**u": (lambda m, x: 3.0 ** m.sin(x), ALL),
    "sin": (lambda m, x: m.sin(2 * x + 1), ALL),
    "cos": (lambda m, x: m.cos(x ** 2), ALL),
    "tan": (lambda m, x: m.tan(x), (-1.3, 1.3)),
    "cot": (lambda m, x: m.cot(x), (0.2, 2.9)),
    "sec": (lambda m, x: m.sec(x), (-1.3, 1.3)),
    "csc": (lambda m, x: m.csc(x), (0.2, 2.9)),
    "tanh": (lambda m, x: m.tanh(x), ALL),
    "sigmoid": (lambda m, x: m.sigmoid(2 * x), ALL),
    "softplus": (lambda m, x: m.softplus(x), ALL),
    "erf": (lambda m, x: m.erf(x), ALL),
    "relu": (lambda m, x: m.relu(x - 0.05), ALL),
    "abs": (lambda m, x: m.abs(x - 0.05), ALL),
    "abs(u)": (lambda m, x: m.abs(m.sin(x)), (0.1, 3.0)),
    "maximum with number": (lambda m, x: m.maximum(x, 0.25), ALL),
    "minimum with number": (lambda m, x: m.minimum(m.sin(x), 0.25), ALL),
}
RULES2 = {
    "u**v": (lambda m, x, y: x ** y, POS, ALL),
    "u(x)**v(y)": (lambda m, x, y: (1 + x ** 2) ** m.sin(y), ALL, ALL),
    "log_y(x)": (lambda m, x, y: m.log(x, base=y), POS, (1.5, 5.0)),
    "u*v two": (lambda m, x, y: m.sin(x) * m.cos(y) * x * y, ALL, ALL),
    "u/v two": (lambda m, x, y: x / (1 + y ** 2), ALL, ALL),
    "maximum": (lambda m, x, y: m.maximum(x, y), ALL, ALL),
    "minimum": (lambda m, x, y: m.minimum(x ** 2, y), ALL, ALL),
    "where": (lambda m, x, y: m.where(x > y, x ** 2, m.sin(y)), ALL, ALL),
}


def _points(lo, hi, n, rng, avoid=()):
    pts = rng.uniform(lo, hi, n)
    for k in avoid:  # keep clear of kinks
        pts = np.where(np.abs(pts - k) < 0.05, pts + 0.1, pts)
    return pts


@pytest.mark.parametrize("rule", sorted(RULES))
def test_first_course_rule(rule):
    fn, dom = RULES[rule]
    rng = np.random.default_rng(7)
    v = _points(*dom, 80, rng, avoid=(0.05, 0.25))
    t = sp.Symbol("t", real=True)
    expected = sp.lambdify(t, sp.diff(fn(S, t), t), modules=["numpy", {"erf": _erf}])
    x = gc.placeholder((None,), "float64", name="x")
    y = fn(gc, x)
    g = gc.grad(gc.sum(y * 1.0), x)
    assert g.shape == (None,) and g.dtype == np.float64
    got = gc.function([x], g, backend="numpy")(v)
    want = np.broadcast_to(np.asarray(expected(v), np.float64), v.shape)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12, err_msg=rule)


@pytest.mark.parametrize("rule", sorted(RULES2))
def test_first_course_rule_two_variables(rule):
    fn, dx, dy = RULES2[rule]
    rng = np.random.default_rng(11)
    xv, yv = _points(*dx, 80, rng), _points(*dy, 80, rng)
    if rule in ("maximum", "minimum", "where"):  # away from ties
        lhs = xv ** 2 if rule == "minimum" else xv
        yv = np.where(np.abs(lhs - yv) < 0.1, yv + 0.3, yv)
    t, u = sp.symbols("t u", real=True)
    expr = fn(S, t, u)
    x = gc.placeholder((None,), "float64", name="x")
    y = gc.placeholder((None,), "float64", name="y")
    gx, gy = gc.grad(gc.sum(fn(gc, x, y)), [x, y])
    got = gc.function([x, y], [gx, gy], backend="numpy")(xv, yv)
    for sym, g in zip((t, u), got):
        want = sp.lambdify((t, u), sp.diff(expr, sym), "numpy")(xv, yv)
        np.testing.assert_allclose(g, np.broadcast_to(want, xv.shape), rtol=1e-9, atol=1e-12,
                                   err_msg=f"{rule} d/d{sym}")


def test_constant_has_zero_derivative():
    x = gc.placeholder((3,), "float64")
    c = gc.constant(np.array([1.0, 2.0, 3.0]), "float64")
    g = gc.grad(gc.sum(c * c), x)
    np.testing.assert_array_equal(gc.function([x], g, backend="numpy")(np.ones(3)),
                                  np.zeros(3))


def test_relu_derivative_is_step_with_zero_at_zero():
    x = gc.placeholder((None,), "float64")
    g = gc.grad(gc.sum(gc.relu(x)), x)
    v = np.array([-3.0, -1e-300, 0.0, -0.0, 1e-300, 2.0])
    np.testing.assert_array_equal(gc.function([x], g, backend="numpy")(v),
                                  [0.0, 0.0, 0.0, 0.0, 1.0, 1.0])


def test_maximum_of_a_tensor_with_itself_has_derivative_one():
    # at a tie the two partials must add up to the derivative of max(x, x) = x
    x = gc.placeholder((4,), "float64")
    for fn in (gc.maximum, gc.minimum):
        g = gc.grad(gc.sum(fn(x, x)), x)
        np.testing.assert_allclose(gc.function([x], g, backend="numpy")(np.arange(4.0)),
                                   np.ones(4))


def test_sigmoid_and_softplus_gradients_do_not_overflow():
    x = gc.placeholder((None,), "float64")
    gs, gp = gc.grad(gc.sum(gc.sigmoid(x)), x), gc.grad(gc.sum(gc.softplus(x)), x)
    v = np.array([-800.0, -40.0, 0.0, 40.0, 800.0])
    with np.errstate(all="raise"):
        s, p = gc.function([x], [gs, gp], backend="numpy")(v)
    assert np.all(np.isfinite(s)) and np.all(np.isfinite(p))
    # (absolute accuracy: sigma*(1 - sigma) cancels to 0 for large |x|, which is fine)
    np.testing.assert_allclose(s, [0.0, np.exp(-40.0), 0.25, np.exp(-40.0), 0.0], atol=1e-15,
                               rtol=1e-6)
    np.testing.assert_allclose(p, [0.0, np.exp(-40.0), 0.5, 1.0, 1.0], atol=1e-15, rtol=1e-6)


# ---------------------------------------------------------------------------------------
# The printed table
# ---------------------------------------------------------------------------------------


def _run_table(*args):
    proc = subprocess.run([sys.executable, "-m", "graphc.table", *args], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _latex_name(op):
    return r"\texttt{" + op.replace("_", r"\_") + "}"


@pytest.mark.slow
def test_table_module_prints_markdown_and_latex():
    out = _run_table()
    assert "| primitive | definition | partial derivatives |" in out
    assert r"\begin{tabular}" in out and r"\end{tabular}" in out
    markdown, latex = out.split(r"\begin{tabular}")
    rows = {line.split("|")[1].strip(): line for line in markdown.splitlines()
            if line.startswith("| `")}
    for op in BUILTIN:
        assert f"`{op}`" in rows, op
        assert _latex_name(op) in latex, op
    for op in COMPARISONS:
        assert "not differentiable" in rows[f"`{op}`"]
    for op in TEXTBOOK:
        for sym, d in zip(arg_symbols(op), partials(op)):
            if d is not None:
                assert f"\\partial {sym}" in rows[f"`{op}`"], (op, sym)
    # a few entries, as textbooks write them
    assert r"\cos{\left(x \right)}" in rows["`sin`"]
    assert r"\frac{1}{x}" in rows["`log`"]



def test_an_elementwise_primitive_without_an_arity_is_refused_by_name():
    """An OpDef with a SymPy definition but no arity (any number of inputs) nor arg_names
    has no symbols to write its definition in: gc.grad says so, not `KeyError: None`."""
    name = "test_no_arity"
    register(OpDef(name=name, infer=elementwise_infer("float"), impl=lambda a, attrs: a[0] ** 2,
                   sympy_def=lambda x: x ** 2))
    try:
        x = gc.placeholder((3,), "float64", name="x")
        with pytest.raises(KeyError, match="test_no_arity: an elementwise primitive needs "
                                           "arg_names or an arity of 1 to 3"):
            gc.grad(gc.Tensor(make(name, x.node)).sum(), [x])
    finally:
        OPS.pop(name)

@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["markdown", "latex"])
def test_table_module_single_format(fmt):
    out = _run_table("--format", fmt)
    if fmt == "markdown":
        assert r"\begin{tabular}" not in out and "| `tanh` |" in out
    else:
        assert "| primitive |" not in out and _latex_name("log_softmax") not in out
        for op in BUILTIN:
            assert _latex_name(op) in out
