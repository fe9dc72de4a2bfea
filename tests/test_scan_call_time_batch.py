"""Programs with gc.scan loops over a call-time batch are one symbolic program on llvm (issue
13): after the first call, calls at new batch sizes compile nothing (counted: the modules
specialised per shape, `f._exe.compiled`) and give the numpy backend's values and gradients.
The loop's length stays a number."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc

BATCHES = (3, 1, 5, 33)  # the first call's, then new sizes (smaller, 1, larger)
SYMBOLIC = {"sizes": "auto", "cache_dir": None}


def assert_one_program(f) -> None:
    """Every call ran the one symbolic program: no module was specialised to a shape."""
    assert f._exe.not_symbolic is None
    assert f._exe.compiled == {}
    assert f._exe.symbolic is not None


def agree(inputs, outputs, make_args, dtype="float64", batches=BATCHES, updates=None):
    f = gc.function(inputs, outputs, backend="llvm", backend_options=SYMBOLIC)
    ref = gc.function(inputs, outputs, backend="numpy")
    tol = 1e-9 if dtype == "float64" else 2e-4
    for n in batches:
        args = make_args(n)
        got, want = f(*args), ref(*args)
        got = got if isinstance(got, list) else [got]
        want = want if isinstance(want, list) else [want]
        for g, w in zip(got, want):
            assert g.shape == w.shape
            np.testing.assert_allclose(g, w, rtol=tol, atol=tol)
    assert_one_program(f)
    return f


def normal(n: int, *shape: int, dtype: str = "float64") -> np.ndarray:
    return np.random.default_rng(n).normal(size=shape).astype(dtype)


def lstm_cell(wx, wh, b, hidden: int):
    """One LSTM step written with the primitives (gates i, f, o, g)."""
    def step(carry, xt):
        h, c = carry
        z = xt @ wx + h @ wh + b
        i = gc.sigmoid(z[:, :hidden])
        f = gc.sigmoid(z[:, hidden:2 * hidden])
        o = gc.sigmoid(z[:, 2 * hidden:3 * hidden])
        g = gc.tanh(z[:, 3 * hidden:])
        c = f * c + i * g
        h = o * gc.tanh(c)
        return (h, c), h
    return step


@pytest.mark.parametrize("threads", ["1", "2"])
@pytest.mark.parametrize("reverse", [False, True])
def test_an_lstm_step_and_its_gradients_compile_once(reverse, threads, monkeypatch):
    monkeypatch.setenv("GRAPHC_NUM_THREADS", threads)
    T, D, H = 4, 3, 5
    rng = np.random.default_rng(0)
    wx = gc.parameter(rng.normal(size=(D, 4 * H)) * 0.3, name="wx")
    wh = gc.parameter(rng.normal(size=(H, 4 * H)) * 0.3, name="wh")
    b = gc.parameter(rng.normal(size=(4 * H,)) * 0.1, name="b")
    x = gc.placeholder((T, "N", D), "float64", "x")  # (one batch size: the carry's and x's)
    h0 = gc.placeholder(("N", H), "float64", "h0")
    (h, c), ys = gc.scan(lstm_cell(wx, wh, b, H), (h0, h0 * 0.5), x, reverse=reverse)
    loss = (ys * ys).sum() + (h * c).sum()
    outputs = [loss, ys] + gc.grad(loss, [wx, wh, b, x, h0])
    agree([x, h0], outputs, lambda n: [normal(n, T, n, D), normal(n + 100, n, H)])


def test_a_gru_training_step_with_updates_equals_numpy():
    """gc.nn.GRU and SGD updates, None batch: the parameters after a step at each batch
    size equal the numpy backend's (each backend its own copy of the model)."""
    T, E, H, V = 3, 4, 6, 5

    def model(backend: str):
        gru = gc.nn.GRU(E, H, seed=1, dtype="float64", name="gru")
        head = gc.parameter(np.random.default_rng(2).normal(size=(H, V)) * 0.3, name="head")
        x = gc.placeholder((T, None, E), "float64", "x")
        y = gc.placeholder((None,), "int64", "y")
        out, _ = gru(x)
        loss = gc.nn.cross_entropy(out[-1] @ head, y)
        params = gru.parameters() + [head]
        grads = gc.grad(loss, params)
        options = SYMBOLIC if backend == "llvm" else None
        f = gc.function([x, y], loss, updates={p: p - 0.5 * g for p, g in zip(params, grads)},
                        backend=backend, backend_options=options)
        return f, params

    f, mine = model("llvm")
    ref, theirs = model("numpy")
    for n in BATCHES:
        args = [normal(n, T, n, E), np.random.default_rng(n).integers(0, V, n)]
        np.testing.assert_allclose(f(*args), ref(*args), rtol=1e-9, atol=1e-9)
        for p, q in zip(mine, theirs):
            np.testing.assert_allclose(p.value, q.value, rtol=1e-9, atol=1e-9)
    assert_one_program(f)


def test_nn_lstm_float32_step_compiles_once():
    """gc.nn.LSTM in float32 (the W7 model's layers, small): loss and gradients."""
    T, E, H = 3, 4, 8
    lstm = gc.nn.LSTM(E, H, seed=3, name="lstm")
    x = gc.placeholder((T, None, E), "float32", "x")
    out, (h, c) = lstm(x)
    loss = (out * out).mean() + h.sum()
    agree([x], [loss] + gc.grad(loss, lstm.parameters() + [x]),
          lambda n: [normal(n, T, n, E, dtype="float32")], dtype="float32")


def test_xs_ys_and_invariants_of_several_call_time_sizes():
    """Two sequences (one with a call-time batch, one of a size of its own), two per-step
    outputs, captured values of either size, a reverse loop: one program."""
    T = 5
    xs = gc.placeholder((T, "N", 3), "float64", "xs")
    zs = gc.placeholder((T, "M"), "float64", "zs")
    a = gc.placeholder(("N", 3), "float64", "a")
    m = gc.placeholder(("M",), "float64", "m")
    w = gc.parameter(np.random.default_rng(4).normal(size=(3, 3)) * 0.4, name="w")

    def step(carry, inputs):
        h, s = carry
        xt, zt = inputs
        h = gc.tanh(h @ w + xt * a)
        s = s + (zt * m).sum() + h.mean()
        return (h, s), (h * 2.0, zt + m)

    (h, s), (ys, zo) = gc.scan(step, (a, gc.constant(0.0, "float64")), (xs, zs), reverse=True)
    loss = s + (ys * ys).sum() + (zo * zo).sum()
    outputs = [h, s, ys, zo] + gc.grad(loss, [xs, zs, a, m, w])

    def args(n: int) -> list[np.ndarray]:
        return [normal(n, T, n, 3), normal(n + 1, T, n + 2), normal(n + 3, n, 3),
                normal(n + 4, n + 2)]
    agree([xs, zs, a, m], outputs, args)


def test_a_nested_scan_over_a_call_time_batch():
    T, S = 3, 2
    x = gc.placeholder((T, S, None, 2), "float64", "x")
    w = gc.parameter(np.random.default_rng(5).normal(size=(2, 2)) * 0.5, name="w")

    def inner(h, xt):
        h = gc.tanh(h @ w + xt)
        return h, h.sum()

    def outer(h, xs):
        h, sums = gc.scan(inner, h, xs)
        return h * 0.5, sums

    h, sums = gc.scan(outer, gc.zeros_like(x[0, 0]), x)
    loss = (h * h).sum() + sums.sum()
    agree([x], [h, sums, loss] + gc.grad(loss, [x, w]), lambda n: [normal(n, T, S, n, 2)])


def test_a_new_sequence_length_specialises_a_module_and_stays_right():
    """The loop's length is a number in the program: a call at another length gets a
    module of its own (said in docs/sizes.md), with the right values."""
    x = gc.placeholder((None, None, 2), "float64", "x")
    h, ys = gc.scan(lambda h, xt: (gc.tanh(h + xt), h.sum()), gc.zeros_like(x[0]), x)
    f = gc.function([x], [h, ys], backend="llvm", backend_options=SYMBOLIC)
    ref = gc.function([x], [h, ys], backend="numpy")
    for shape in [(4, 3, 2), (4, 5, 2), (6, 3, 2)]:
        args = [normal(1, *shape)]
        for g, w in zip(f(*args), ref(*args)):
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)
    assert f._exe.symbolic is None and "length" in (f._exe.not_symbolic or "")


def test_an_index_error_in_a_body_names_the_call_time_size():
    """A body's gather checked at run time: the message gives the size of this call."""
    table = gc.placeholder((None, 3), "float64", "table")
    ids = gc.placeholder((2, None), "int64", "ids")

    def step(s, i):
        return s + gc.take(table, i, axis=0).sum(), s

    total, _ = gc.scan(step, gc.constant(0.0, "float64"), ids)
    f = gc.function([table, ids], total, backend="llvm", backend_options=SYMBOLIC)
    ref = gc.function([table, ids], total, backend="numpy")
    good = [normal(1, 4, 3), np.array([[0, 3], [1, 2]])]
    np.testing.assert_allclose(f(*good), ref(*good))
    good = [normal(2, 6, 3), np.array([[5, 0, 1], [1, 2, 4]])]
    np.testing.assert_allclose(f(*good), ref(*good))
    with pytest.raises(IndexError, match="6"):
        f(normal(2, 6, 3), np.array([[6, 0, 1], [1, 2, 4]]))
    assert_one_program(f)


def lstm_loss_and_grads(options, backend: str = "llvm"):
    """A freshly built gc.nn.LSTM step (the same weights each time): loss and gradients."""
    lstm = gc.nn.LSTM(3, 4, seed=7, dtype="float64", name="lstm")
    x = gc.placeholder((2, None, 3), "float64", "x")
    out, _ = lstm(x)
    loss = (out * out).sum()
    return gc.function([x], [loss] + gc.grad(loss, lstm.parameters()), backend=backend,
                       backend_options=options)


def test_a_warm_start_reads_the_loop_program_from_the_disk_cache(tmp_path, monkeypatch):
    """The plan of a program with loops (each loop's vector: its body kernels' symbols and
    GEMM blocking) is stored with the code: a rebuilt model at a new batch size neither
    schedules nor compiles."""
    from graphc.backends.llvm import symbolic_runtime
    options = {"sizes": "auto", "cache_dir": str(tmp_path)}
    scheduled = []
    real = symbolic_runtime.schedule_symbolic
    monkeypatch.setattr(symbolic_runtime, "schedule_symbolic",
                        lambda *a, **k: scheduled.append(1) or real(*a, **k))
    cold = lstm_loss_and_grads(options)
    cold(normal(1, 2, 3, 3))
    assert len(scheduled) == 1 and not cold._exe.symbolic.cached
    warm = lstm_loss_and_grads(options)
    ref = lstm_loss_and_grads(None, "numpy")
    for n in (6, 1):
        args = [normal(n, 2, n, 3)]
        for g, w in zip(warm(*args), ref(*args)):
            np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-9)
    assert len(scheduled) == 1
    assert warm._exe.symbolic.cached
    assert_one_program(warm)


def gru_classifier(options):
    """A GRU over batch-first sequences (N, T, E) -> class scores; its SGD step and predict."""
    gru = gc.nn.GRU(4, 6, seed=11, name="gru")
    head = gc.parameter(np.random.default_rng(12).normal(size=(6, 3)).astype(np.float32) * 0.3,
                        name="head")
    x = gc.placeholder((None, 5, 4), name="x")
    y = gc.placeholder((None,), "int64", name="y")
    out, h = gru(gc.transpose(x, (1, 0, 2)))
    logits = h @ head
    params = gru.parameters() + [head]
    grads = gc.grad(gc.nn.cross_entropy(logits, y), params)
    step = gc.function([x, y], gc.nn.cross_entropy(logits, y),
                       updates={p: p - 0.2 * g for p, g in zip(params, grads)},
                       backend="llvm", backend_options=options)
    predict = gc.function([x], logits, backend="llvm", backend_options=options)
    return step, predict, params


def test_fit_short_last_batch_and_predict_on_one_sequence_compile_nothing(monkeypatch):
    """gc.train.fit over 38 sequences in batches of 16 (a short last batch of 6) and
    predict on one sequence: nothing compiled or loaded after the first calls, and the
    parameters and scores those of modules specialised to each size."""
    from graphc.backends.llvm import jit, processes
    seen: list[str] = []
    for module, name in ((processes, "compile_schedule"), (jit, "load_objects")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _real=real, _name=name, **k:
                            seen.append(_name) or _real(*a, **k))
    step, predict, params = gru_classifier(SYMBOLIC)
    ref_step, ref_predict, ref_params = gru_classifier({"sizes": "specialize",
                                                        "cache_dir": None})
    rng = np.random.default_rng(13)
    x, y = rng.normal(size=(38, 5, 4)).astype(np.float32), rng.integers(0, 3, 38)
    step(x[:16], y[:16])
    ref_step(x[:16], y[:16])
    predict(x[:16])
    compiled = len(seen)
    assert compiled >= 2  # (the step's and the predict's first calls)
    gc.train.fit(step, (x, y), epochs=2, batch_size=16, progress=False, verbose=False)
    out = predict(x[:1])
    assert len(seen) == compiled
    assert_one_program(step)
    assert_one_program(predict)
    gc.train.fit(ref_step, (x, y), epochs=2, batch_size=16, progress=False, verbose=False)
    for p, q in zip(params, ref_params):
        np.testing.assert_allclose(p.value, q.value, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(out, ref_predict(x[:1]), rtol=2e-5, atol=2e-6)


def test_a_checkpointed_lstm_compiles_once():
    """checkpoint=True: nested loops (segments of steps recomputed in the gradient)."""
    lstm = gc.nn.LSTM(3, 4, seed=7, dtype="float64", name="lstm", checkpoint=True)
    x = gc.placeholder((9, None, 3), "float64", "x")
    out, _ = lstm(x)
    loss = (out * out).sum()
    agree([x], [loss] + gc.grad(loss, lstm.parameters() + [x]),
          lambda n: [normal(n, 9, n, 3)])


@pytest.mark.parametrize("named", [True, False])
def test_sizes_that_must_agree_are_checked_before_a_loop_runs(named):
    """A carry's batch and a captured value's (one named size, or two None sizes met only
    in the body): calls where they differ are a ValueError, never a loop over wrong sizes."""
    x = gc.placeholder((4, "N" if named else None, 3), "float64", "x")
    c = gc.placeholder(("N" if named else None, 3), "float64", "c")
    h, _ = gc.scan(lambda h, xt: (h + xt * c, h), gc.zeros_like(x[0]), x)
    f = gc.function([x, c], h, backend="llvm", backend_options=SYMBOLIC)
    ref = gc.function([x, c], h, backend="numpy")
    for n in (2, 5):
        args = [normal(n, 4, n, 3), normal(n + 1, n, 3)]
        np.testing.assert_allclose(f(*args), ref(*args), rtol=1e-12)
    with pytest.raises(ValueError, match="3"):
        f(normal(1, 4, 3, 3), normal(2, 2, 3))
    if named:
        assert_one_program(f)
