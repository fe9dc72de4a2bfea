"""scan lowered to a loop: the Loop kernel's values on the numpy kernel runner and llvm equal
the numpy interpreter's, its listing, code that does not grow with the length, errors."""
from __future__ import annotations

import inspect
import re

import numpy as np
import pytest

import graphc as gc
from graphc.schedule import ir, schedule_graph
from tests import test_scan as cases
from tests import test_scan_grad as grad_cases

RNG = np.random.default_rng(1)
BACKENDS = {"llvm": dict(backend="llvm"),
            "kernels": dict(backend="numpy", backend_options={"mode": "kernels"}),
            "cuda": dict(backend="cuda", backend_options={"emulate": True})}


def f64(*shape):
    return RNG.standard_normal(shape)


def agree(inputs, outputs, args, rtol=1e-12, backends=("llvm", "kernels")):
    """The outputs on every kernel backend equal the numpy interpreter's."""
    want = gc.function(inputs, outputs, backend="numpy")(*args)
    want = want if isinstance(want, list) else [want]
    for name in backends:
        options = BACKENDS[name]
        got = gc.function(inputs, outputs, **options)(*args)
        got = got if isinstance(got, list) else [got]
        for g, w in zip(got, want):
            assert g.shape == w.shape and g.dtype == w.dtype, name
            np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol, err_msg=name)


def loops(schedule: ir.Schedule) -> list[ir.Loop]:
    return [k for k in schedule.kernels if isinstance(k, ir.Loop)]


# ---- tests/test_scan.py's and test_scan_grad.py's cases, on the kernel backends -------

# (module, the helper its cases make functions with): each case checks its values against
# Python's loop (or finite differences); here the Loop kernel computes them.
HELPERS = [(cases, "numpy_fn"), (grad_cases, "run")]
CASES = [(module, helper, name) for module, helper in HELPERS for name in dir(module)
         if name.startswith("test_")  # (the cases that make their functions with it)
         and f"{helper}(" in inspect.getsource(getattr(module, name))]


def _case_params() -> list:
    """Each case on each backend; derivative programs on llvm compile for over a second
    (slow tier)."""
    out = []
    for backend in BACKENDS:
        for module, helper, case in CASES:
            slow = backend == "cuda" or (module is grad_cases and (backend == "llvm" or any(
                word in case for word in ("hessian", "second", "checkpoint")))) or (
                backend == "llvm" and "render" in case)
            out.append(pytest.param(module, helper, case, backend,
                                    id=f"{module.__name__.split('.')[-1]}.{case}-{backend}",
                                    marks=[pytest.mark.slow] if slow else []))
    return out


@pytest.mark.parametrize("module,helper,case,backend", _case_params())
def test_the_scan_cases_on_kernel_backends(monkeypatch, tmp_path, module, helper, case,
                                           backend):
    made = []

    def kernel_fn(inputs, outputs):
        made.append(gc.function(inputs, outputs, **BACKENDS[backend]))
        return made[-1]
    monkeypatch.setattr(module, helper, kernel_fn)
    test = getattr(module, case)
    fixtures = {"tmp_path": tmp_path} if "tmp_path" in inspect.signature(test).parameters \
        else {}
    params = getattr(test, "pytestmark", [])
    arguments = [m.args for m in params if m.name == "parametrize"]
    if arguments:  # (a parametrized case: each of its values)
        names, values = arguments[0]
        names = [n.strip() for n in names.split(",")]
        for value in values:
            value = value if len(names) > 1 else (value,)
            test(**dict(zip(names, value)), **fixtures)
    else:
        test(**fixtures)
    assert made


# ---- the lowering -----------------------------------------------------------------------

def _rnn(T, N=3, H=4):
    x = gc.placeholder((T, N, H), "float64", "x")
    h0 = gc.placeholder((N, H), "float64", "h0")
    w = gc.parameter(f64(H, H) * 0.3, name="w")
    h, ys = gc.scan(lambda h, xt: (gc.tanh(h @ w + xt), h * 2.0), h0, x)
    return [h0, x], [h, ys]


def test_sibling_scans_are_one_loop_and_the_body_is_planned_once():
    inputs, outputs = _rnn(5)
    s = schedule_graph(gc.function(inputs, outputs, backend="numpy").graph)
    (loop,) = loops(s)
    assert loop.length == 5 and len(loop.carries) == 1 and len(loop.ys) == 1
    assert loop.body.plan is not None and all(b.shape[0] != 5 for b in
                                              loop.body.buffers.values() if b.shape)
    agree(inputs, outputs, [f64(3, 4), f64(5, 3, 4)])


def test_the_loop_listing():
    x = gc.placeholder((6, 2), "float32", "x")
    c, ys = gc.scan(lambda c, xt: (c * 0.5 + xt, gc.exp(c)), gc.constant(np.zeros(2, "f4")),
                    x, reverse=True)
    s = schedule_graph(gc.function([x], [c, ys], backend="numpy").graph)
    assert s.listing() == """\
1 kernels, 5 buffers
  b0:input(x)[f32[6,2]]
  b1:const[f32[2]]
  b2:output(out0)[f32[2]]
  b3:temp[f32[2]] @arena+0
  b4:output(out1)[f32[6,2]]
  k0 loop 6 steps reversed: 1 carries, 1 xs, 1 ys, 0 invariants, body of 1 kernels
      carry b1 then b2|b3 (the last step writes b2): body b0 -> body b2
      xs b0[T-1-t] -> body b1
      ys body b3 -> b4[T-1-t]
      body:
        1 kernels, 4 buffers
          b0:input(carry0)[f32[2]]
          b1:input(x0)[f32[2]]
          b2:output(out0)[f32[2]]
          b3:output(out1)[f32[2]]
          k0 elementwise [2]  # mul add exp
              b2<1> = add(mul(b0<1>, 0.5), b1<1>)
              b3<1> = exp(b0<1>)
        memory plan: 0 temporaries, arena 0 B (without reuse 0 B)
memory plan: 1 temporaries, arena 64 B (without reuse 64 B)"""


def test_unused_ys_are_not_computed():
    x = gc.placeholder((4, 3), "float64", "x")
    c, ys = gc.scan(lambda c, xt: (c + xt, gc.exp(c)), gc.constant(np.zeros(3)), x)
    s = schedule_graph(gc.function([x], c, backend="numpy").graph)
    (loop,) = loops(s)
    assert loop.ys == () and "exp" not in s.listing()
    agree([x], c, [f64(4, 3)])


def test_views_and_broadcasts_enter_as_copies_and_carries_pass_through():
    x = gc.placeholder((3, 5), "float64", "x")
    h0 = gc.placeholder((), "float64", "h0")

    def step(carry, xt):
        a, b, same = carry
        return (a + xt, b * xt.sum(), same), (same, a)
    init = (gc.broadcast_to(h0, (3,)), h0 * 1.0, h0 + 2.0)
    (a, b, same), (ys1, ys2) = gc.scan(step, init, x.T)  # a transposed view as xs
    agree([h0, x], [a, b, same, ys1, ys2], [0.5, f64(3, 5)])


def test_parameters_and_constants_in_the_body():
    x = gc.placeholder((4, 3), "float64", "x")
    w = gc.parameter(f64(3, 3), name="w")
    table = np.arange(9.0).reshape(3, 3)

    def step(h, xt):
        return gc.tanh(h @ w + xt @ gc.constant(table) * 0.01), gc.sum(h * w[0])
    h, ys = gc.scan(step, gc.constant(np.ones(3)), x)
    agree([x], [h, ys], [f64(4, 3)])


@pytest.mark.parametrize("BACKS", [("llvm", "kernels"), pytest.param(
    ("cuda",), marks=pytest.mark.slow, id="cuda")])  # (cuda: the emulator)
def test_lstm_like_body_float32(BACKS):
    """(GEMMs big enough for the packed path, in the body and hoisted before it: the loop's
    module and the top-level GEMMs' module both hold packed-GEMM code)"""
    T, N, E, H, V = 7, 4, 5, 16, 10
    ids = gc.placeholder((T, N), "int64", "ids")
    emb = gc.parameter(f64(V, E).astype("f4"), name="emb")
    w_ih = gc.parameter((f64(E, 4 * H) * 0.3).astype("f4"), name="w_ih")
    w_hh = gc.parameter((f64(H, 4 * H) * 0.3).astype("f4"), name="w_hh")
    bias = gc.parameter(f64(4 * H).astype("f4"), name="b")

    def step(carry, it):
        h, c = carry
        z = gc.take(emb, it, axis=0) @ w_ih + h @ w_hh + bias
        i, f, g, o = (z[:, k * H:(k + 1) * H] for k in range(4))
        c = gc.sigmoid(f) * c + gc.sigmoid(i) * gc.tanh(g)
        h = gc.sigmoid(o) * gc.tanh(c)
        return (h, c), h
    zeros = gc.constant(np.zeros((N, H), "f4"))
    (h, c), hs = gc.scan(step, (zeros, zeros), ids)
    agree([ids], [h, c, hs], [RNG.integers(0, V, (T, N))], rtol=1e-5, backends=BACKS)


@pytest.mark.parametrize("BACKS", [("llvm", "kernels"), pytest.param(
    ("cuda",), marks=pytest.mark.slow, id="cuda")])  # (cuda: the emulator)
def test_gru_like_body_reversed(BACKS):
    T, N, H = 5, 2, 3
    x = gc.placeholder((T, N, H), "float64", "x")
    u = gc.parameter(f64(H, 3 * H) * 0.4, name="u")

    def step(h, xt):
        z = h @ u
        r, zz = gc.sigmoid(z[:, :H] + xt), gc.sigmoid(z[:, H:2 * H] - xt)
        n = gc.tanh(r * z[:, 2 * H:] + xt)
        h = (1 - zz) * n + zz * h
        return h, h
    h, hs = gc.scan(step, gc.constant(np.zeros((N, H))), x, reverse=True)
    agree([x], [h, hs], [f64(T, N, H)], backends=BACKS)


@pytest.mark.parametrize("BACKS", [("llvm", "kernels"), pytest.param(
    ("cuda",), marks=pytest.mark.slow, id="cuda")])  # (cuda: the emulator)
def test_nested_loops_with_a_parameter_inside(BACKS):
    x = gc.placeholder((3, 4, 2), "float64", "x")
    w = gc.parameter(f64(2), name="w")

    def outer(c, row):
        inner, ys = gc.scan(lambda a, v: (a * 0.5 + v * w, a.sum()), c, row)
        return inner, ys
    c, ys = gc.scan(outer, gc.constant(np.zeros(2)), x)
    s = schedule_graph(gc.Graph((x.node,), (c.node, ys.node)))
    (loop,) = loops(s)
    assert [k.kind for k in loop.body.kernels].count("loop") == 1
    agree([x], [c, ys], [f64(3, 4, 2)], backends=BACKS)


def test_length_one_and_length_zero_on_llvm():
    x = gc.placeholder(("T", 2), "float64", "x")
    h0 = gc.placeholder((2,), "float64", "h0")
    h, ys = gc.scan(lambda h, xt: (h * xt, h + 1.0), h0, x)
    f = gc.function([h0, x], [h, ys])
    for T in (0, 1, 2):
        H, X = f64(2), f64(T, 2)
        got_h, got_ys = f(H, X)
        want_h, want_ys = gc.function([h0, x], [h, ys], backend="numpy")(H, X)
        np.testing.assert_allclose(got_h, want_h, rtol=1e-12)
        assert got_ys.shape == (T, 2)
        np.testing.assert_allclose(got_ys, want_ys, rtol=1e-12)


@pytest.mark.parametrize("backend", ["llvm", "kernels", pytest.param(
    "cuda", marks=pytest.mark.slow)])  # (the emulator's first program compiles for seconds)
def test_a_failing_body_kernel_raises_the_same_error(backend):
    ids = gc.placeholder((3, 2), "int64", "ids")
    table = gc.placeholder((4, 2), "float64", "table")
    h, _ = gc.scan(lambda h, it: (h + gc.take(table, it, axis=0).sum(), None),
                   gc.constant(np.float64(0)), ids)
    bad = np.array([[0, 1], [2, 9], [1, 1]])
    with pytest.raises(IndexError) as want:
        gc.function([ids, table], h, backend="numpy")(bad, f64(4, 2))
    with pytest.raises(IndexError) as got:
        gc.function([ids, table], h, **BACKENDS[backend])(bad, f64(4, 2))
    words = str(want.value).split(": index 9")[0]
    assert str(got.value).startswith(words), (str(got.value), str(want.value))


def test_code_does_not_grow_with_the_length():
    texts, listings = [], []
    for T in (16, 4096):
        inputs, outputs = _rnn(T)
        f = gc.function(inputs, outputs, backend_options={"cache_dir": None})
        f(f64(3, 4), f64(T, 3, 4))
        texts.append(re.sub(r"\b(16|15|4096|4095)\b", "T", f.source))
        listings.append(re.sub(r"\b(16|15|4096|4095)\b", "T",
                               f._exe.last.schedule.listing().split("memory plan")[0]))
    assert len(texts[0]) == len(texts[1]) and texts[0].count("\n") == texts[1].count("\n")
    assert listings[0].count("\n") == listings[1].count("\n")


# ---- the loop passes (hoisting and summing in the optimizer, outputs at scheduling) ----

def _gemms(schedule: ir.Schedule) -> list[ir.Gemm]:
    return [k for k in schedule.kernels if isinstance(k, ir.Gemm)]


def _rows(g: ir.Gemm) -> int:
    return g.m * int(np.prod(g.batch, dtype=np.int64))


def test_carry_independent_matmuls_run_before_the_loop():
    T, N, D, H = 6, 3, 4, 5
    x = gc.placeholder((T, N, D), "float64", "x")
    w_ih = gc.parameter(f64(D, H) * 0.3, name="w_ih")
    w_hh = gc.parameter(f64(H, H) * 0.3, name="w_hh")

    def step(h, xt):
        h = gc.tanh(gc.exp(xt * 0.1) @ w_ih + h @ w_hh)
        return h, xt @ w_ih
    h, ys = gc.scan(step, gc.constant(np.zeros((N, H))), x)
    s = schedule_graph(gc.function([x], [h, ys], backend="numpy").graph)
    (loop,) = loops(s)
    assert [(g.m, g.k) for g in _gemms(loop.body)] == [(N, H)]  # h @ w_hh only
    assert sorted(_rows(g) for g in _gemms(s)) == [T * N, T * N]  # the two x_t @ w_ih
    agree([x], [h, ys], [f64(T, N, D)])


def test_stacked_loops_stay_two_loops():
    T, N, H = 5, 2, 3
    x = gc.placeholder((T, N, H), "float64", "x")
    ws = [gc.parameter(f64(H, H) * 0.4, name=f"w{i}") for i in range(4)]
    zeros = gc.constant(np.zeros((N, H)))
    _, h1 = gc.scan(lambda h, xt: ((n := gc.tanh(xt @ ws[0] + h @ ws[1])), n), zeros, x)
    h2, _ = gc.scan(lambda h, xt: (gc.tanh(xt @ ws[2] + h @ ws[3]), None), zeros, h1)
    s = schedule_graph(gc.function([x], h2, backend="numpy").graph)
    assert len(loops(s)) == 2 and all(len(_gemms(k.body)) == 1 for k in loops(s))
    agree([x], h2, [f64(T, N, H)])


def test_a_gradient_through_the_loop_on_llvm():
    x = gc.placeholder((4, 2), "float64", "x")
    w = gc.parameter(f64(2, 2) * 0.5, name="w")
    h, ys = gc.scan(lambda h, xt: (gc.tanh(h @ w + xt), gc.sin(h).sum()), gc.constant(
        np.zeros(2)), x)
    loss = (h * h).sum() + ys.sum()
    outputs = [loss] + gc.grad(loss, [x, w])
    s = schedule_graph(gc.function([x], outputs, backend="numpy").graph)
    backward = [k for k in loops(s) if k.reverse]
    assert len(backward) == 1 and len(backward[0].carries) == 1  # (dh: dW summed after it)
    agree([x], outputs, [f64(4, 2)])


def test_summing_carries_and_matmul_outputs_sink_after_the_loop():
    """A gradient's sum over t of x_t^T g_t (and of g_t over the batch) is one GEMM (one
    reduction) after the loop (the optimizer's sink_scan_sums); the per-step output
    g_t @ W_ih^T (dx) one GEMM over the stacked g_t (sink_loops, as the schedule is made)."""
    T, N, D, H = 5, 3, 2, 4
    x = gc.placeholder((T, N, D), "float64", "x")
    w_ih = gc.parameter(f64(D, H) * 0.5, name="w_ih")
    w_hh = gc.parameter(f64(H, H) * 0.5, name="w_hh")
    bias = gc.parameter(f64(H), name="bias")
    h, hs = gc.scan(lambda h, xt: ((n := gc.tanh(xt @ w_ih + h @ w_hh + bias)), n),
                    gc.constant(np.zeros((N, H))), x)
    loss = (hs * hs).sum() + h.sum()
    outputs = [loss] + gc.grad(loss, [x, w_ih, w_hh, bias])
    s = schedule_graph(gc.function([x], outputs, backend="numpy").graph)
    assert "sink_loops" in [p.name for p in s.report.passes]
    backward = [k for k in loops(s) if k.reverse]
    assert len(backward) == 1 and len(backward[0].carries) == 1  # (dh only)
    assert [(g.m, g.k) for g in _gemms(backward[0].body)] == [(N, H)]  # dz @ w_hh.T only
    assert {(g.m, g.n, g.k) for g in _gemms(s)} >= {(D, H, T * N), (H, H, T * N),
                                                  (T * N, D, H)}
    agree([x], outputs, [f64(T, N, D)], rtol=1e-10, backends=("kernels",))  # (llvm: below)


def test_a_loop_from_the_disk_cache(tmp_path):
    """A warm start loads the loop's code (its body's functions inside) and runs it."""
    inputs, outputs = _rnn(6)
    args = [f64(3, 4), f64(6, 3, 4)]
    cold = gc.function(inputs, outputs, backend_options={"cache_dir": str(tmp_path)})
    want = cold(*args)
    warm = gc.function(inputs, outputs, backend_options={"cache_dir": str(tmp_path)})
    got = warm(*args)
    assert warm.compile_times["cached"] is True
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_an_output_sinks_only_where_stacking_costs_no_memory():
    N, H = 3, 8
    x = gc.placeholder((5, N, H), "float64", "x")
    w = gc.parameter(f64(H, 2), name="w")
    h, ys = gc.scan(lambda h, xt: ((n := gc.tanh(h + xt)), n @ w), gc.constant(
        np.zeros((N, H))), x)  # (stacking n, (N, 8) a step, to save n @ w, (N, 2): no)
    s = schedule_graph(gc.function([x], [h, ys], backend="numpy").graph)
    assert all(p.name != "sink_loops" for p in s.report.passes)
    assert len(_gemms(loops(s)[0].body)) == 1
    agree([x], [h, ys], [f64(5, N, H)])


def test_the_reverse_loop_reads_the_saved_gates_not_a_recomputed_forward():
    """An LSTM-like body's gradient: the forward stacks what the vjp reads (the gates), so
    h @ W_hh is not computed again for the reverse loop (in it, or hoisted before it for
    all steps): one GEMM per step in each loop, and after them only dW = H^T dZ."""
    T, N, H = 5, 2, 3
    x = gc.placeholder((T, N, H), "float64", "x")
    u = gc.parameter(f64(H, 4 * H) * 0.4, name="u")

    def step(carry, xt):
        h, c = carry
        z = h @ u + gc.concatenate([xt] * 4, axis=1)
        i, f = gc.sigmoid(z[:, :H]), gc.sigmoid(z[:, H:2 * H])
        g, o = gc.tanh(z[:, 2 * H:3 * H]), gc.sigmoid(z[:, 3 * H:])
        c = f * c + i * g
        h = o * gc.tanh(c)
        return (h, c), h
    zeros = gc.constant(np.zeros((N, H)))
    _, hs = gc.scan(step, (zeros, zeros), x)
    loss = (hs * hs).sum()
    outputs = [loss] + gc.grad(loss, [x, u])
    s = schedule_graph(gc.function([x], outputs, backend="numpy").graph)
    forward, backward = [k for k in loops(s) if not k.reverse], [k for k in loops(s) if k.reverse]
    assert len(forward) == 1 and len(backward) == 1
    assert len(_gemms(forward[0].body)) == 1 and len(_gemms(backward[0].body)) == 1
    assert [_rows(g) for g in _gemms(s)] == [H]
    # saved: z = h @ u + x_t (not h @ u, not the gates), h_prev, c_prev; the reverse loop
    # recomputes the gates from z in its body (not stacked before it for every step)
    assert sorted(s.buffers[y.outer].shape for y in forward[0].ys) == [(T, N, H)] * 3 + [
        (T, N, 4 * H)]  # (hs, h_prev, c_prev; z)
    assert len(backward[0].xs) == 3  # z, c_prev, the cotangent of hs
    agree([x], outputs, [f64(T, N, H)])
