"""gc.nn.RNN, LSTM and GRU: values and gradients against PyTorch's layers with the same weights,
against finite differences, and their checks of bad input."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc

T, N, IN, H = 5, 3, 4, 6
KINDS = [("RNN", {}), ("RNN", {"nonlinearity": "relu"}), ("LSTM", {}), ("GRU", {})]
IDS = ["rnn_tanh", "rnn_relu", "lstm", "gru"]


def make_layer(kind: str, kwargs: dict, **more):
    return getattr(gc.nn, kind)(IN, H, dtype="float64", seed=3, **{**kwargs, **more})


def states_of(kind: str, layers: int, rng: np.random.Generator):
    """Random initial states of the layer's shape: (N, H) for one layer, (L, N, H) for more."""
    shape = (N, H) if layers == 1 else (layers, N, H)
    h = rng.normal(size=shape)
    return (h, rng.normal(size=shape)) if kind == "LSTM" else h


def flat(value) -> list:
    return list(value) if isinstance(value, tuple) else [value]


def build(layer, kind: str, t: int, with_state: bool, layers: int, seed: int = 0):
    """The layer on placeholders, a scalar loss that weighs every output and final state by
    fixed random numbers, and the numbers fed: (inputs, loss, outputs, feed arrays, weights)."""
    rng = np.random.default_rng(seed)
    x = gc.placeholder((t, N, IN), "float64", name="x")
    arrays = [rng.normal(size=(t, N, IN))]
    inputs = [x]
    state = None
    if with_state:
        values = flat(states_of(kind, layers, rng))
        phs = [gc.placeholder(v.shape, "float64", name=f"s{i}") for i, v in enumerate(values)]
        inputs += phs
        arrays += values
        state = tuple(phs) if kind == "LSTM" else phs[0]
    out, final = layer(x, state)
    results = [out] + flat(final)
    weights = [rng.normal(size=r.shape) for r in results]
    loss = sum(gc.sum(r * w) for r, w in zip(results, weights))
    return inputs, loss, results, arrays, weights


def torch_run(layer, kind: str, kwargs: dict, arrays: list, weights: list, layers: int):
    """PyTorch's layer with the same weights: (results, the loss's gradients with respect to
    the inputs and then the parameters in layer.parameters() order)."""
    torch = pytest.importorskip("torch")
    tlayer = getattr(torch.nn, kind)(IN, H, num_layers=layers, bias=layer.bias, **kwargs).double()
    tlayer.load_state_dict({k: torch.tensor(v) for k, v in layer.state_dict().items()})
    tin = [torch.tensor(a, requires_grad=True) for a in arrays]
    if len(tin) == 1:
        state = None
    else:
        # PyTorch's states are (num_layers, N, H) always.
        ss = [s if layers > 1 else s[None] for s in tin[1:]]
        state = tuple(ss) if kind == "LSTM" else ss[0]
    out, final = tlayer(tin[0], state)
    finals = flat(final)
    if layers == 1:
        finals = [f[0] for f in finals]
    results = [out] + finals
    loss = sum((r * torch.tensor(w)).sum() for r, w in zip(results, weights))
    params = dict(tlayer.named_parameters())
    wrt = tin + [params[name] for name, _ in layer.named_parameters()]
    grads = torch.autograd.grad(loss, wrt)
    return [r.detach().numpy() for r in results], [g.numpy() for g in grads]


def compare_with_torch(kind: str, kwargs: dict, backend: str, t: int = T,
                       with_state: bool = True, layers: int = 1, bias: bool = True) -> None:
    layer = make_layer(kind, kwargs, num_layers=layers, bias=bias)
    inputs, loss, results, arrays, weights = build(layer, kind, t, with_state, layers)
    grads = gc.grad(loss, inputs + layer.parameters())
    f = gc.function(inputs, results + list(grads), backend=backend)
    got = f(*arrays)
    want_results, want_grads = torch_run(layer, kind, kwargs, arrays, weights, layers)
    for g, w in zip(got, want_results + want_grads, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kind,kwargs", KINDS, ids=IDS)
def test_values_and_gradients_equal_pytorch(kind, kwargs):
    compare_with_torch(kind, kwargs, "numpy")


@pytest.mark.parametrize("kind,kwargs", KINDS, ids=IDS)
def test_zero_initial_state_and_one_step_equal_pytorch(kind, kwargs):
    compare_with_torch(kind, kwargs, "numpy", t=1, with_state=False)


@pytest.mark.slow  # the gradient through two stacked loops takes a while to build
@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_two_layers_without_bias_equal_pytorch(kind):
    compare_with_torch(kind, {}, "numpy", t=3, layers=2, bias=False)
    compare_with_torch(kind, {}, "numpy", t=3, layers=2)


@pytest.mark.slow  # compiles native code
@pytest.mark.parametrize("kind,kwargs", KINDS, ids=IDS)
def test_llvm_values_and_gradients_equal_pytorch(kind, kwargs):
    compare_with_torch(kind, kwargs, "llvm")


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_gradients_equal_finite_differences(kind):
    layer = make_layer(kind, {})
    inputs, loss, _, arrays, _ = build(layer, kind, 3, True, 1, seed=1)
    result = gc.check_grad(loss, wrt=inputs + layer.parameters(), feed=dict(zip(inputs, arrays)),
                           max_entries=20)
    assert result.ok, str(result)


def test_parameters_have_pytorch_names_shapes_and_init():
    lstm = gc.nn.LSTM(IN, H, num_layers=2, seed=0)
    shapes = {k: v.shape for k, v in lstm.state_dict().items()}
    assert shapes == {"weight_ih_l0": (4 * H, IN), "weight_hh_l0": (4 * H, H),
                      "bias_ih_l0": (4 * H,), "bias_hh_l0": (4 * H,),
                      "weight_ih_l1": (4 * H, H), "weight_hh_l1": (4 * H, H),
                      "bias_ih_l1": (4 * H,), "bias_hh_l1": (4 * H,)}
    assert lstm.weight_ih is lstm.layer_parameters(0)[0]
    assert lstm.weight_ih.value.dtype == np.float32
    bound = 1 / np.sqrt(H)
    for value in lstm.state_dict().values():
        assert np.abs(value).max() <= bound and np.abs(value).max() > 0.5 * bound
    again = gc.nn.LSTM(IN, H, num_layers=2, seed=0).state_dict()
    assert all(np.array_equal(again[k], v) for k, v in lstm.state_dict().items())
    assert gc.nn.GRU(IN, H, bias=False).bias_ih is None
    assert repr(gc.nn.RNN(IN, H, nonlinearity="relu", num_layers=2)) == \
        "RNN(4, 6, num_layers=2, nonlinearity='relu')"


def test_output_shapes_with_sizes_known_at_call_time():
    lstm = gc.nn.LSTM(IN, H, dtype="float64")
    x = gc.placeholder((T, None, IN), "float64", name="x")
    out, (h, c) = lstm(x)
    assert out.shape == (T, None, H) and h.shape == (None, H) and c.shape == (None, H)


@pytest.mark.parametrize("bad,match", [
    (lambda x, s: gc.nn.LSTM(IN + 1, H, dtype="float64")(x), "input_size is 5"),
    (lambda x, s: gc.nn.LSTM(IN, H, dtype="float64")(x[0]), r"input x must be \(T, N, "),
    (lambda x, s: gc.nn.LSTM(IN, H)(x), "input x has dtype float64"),
    (lambda x, s: gc.nn.LSTM(IN, H, dtype="float64")(x, s), r"must be a pair \(h0, c0\)"),
    (lambda x, s: gc.nn.LSTM(IN, H, dtype="float64")(x, (s, s[:2])), "initial state c0"),
    (lambda x, s: gc.nn.GRU(IN, H, dtype="float64")(x, s[None]), "initial state h0"),
    (lambda x, s: gc.nn.GRU(IN, H, num_layers=2, dtype="float64")(x, s),
     r"\(num_layers, batch, hidden_size\)"),
    (lambda x, s: gc.nn.RNN(IN, H, nonlinearity="sigmoid"), "nonlinearity"),
    (lambda x, s: gc.nn.RNN(0, H), "input_size"),
    (lambda x, s: gc.nn.RNN(IN, H, num_layers=0), "num_layers"),
])
def test_bad_input_names_the_argument(bad, match):
    x = gc.placeholder((T, N, IN), "float64", name="x")
    s = gc.placeholder((N, H), "float64", name="s")
    with pytest.raises((ValueError, TypeError), match=match):
        bad(x, s)


def lstm_step_function(layer, t, n=N, backend="numpy"):
    """Outputs, final state and the gradients of a weighted loss, as one compiled function of
    x (t, n, IN) (None: a size given at call time) and a weight array for the outputs."""
    x = gc.placeholder((t, n, IN), "float64", name="x")
    w = gc.placeholder((t, n, H), "float64", name="w")
    out, (h, c) = layer(x)
    loss = gc.sum(out * w) + gc.sum(h) + 0.5 * gc.sum(c)
    return gc.function([x, w], [out, h, c] + list(gc.grad(loss, layer.parameters())),
                       backend=backend)


def test_length_and_batch_known_at_call_time_and_empty_sequence():
    layer = make_layer("LSTM", {})
    f = lstm_step_function(layer, None, None)
    rng = np.random.default_rng(4)
    for t in (1, 4):
        x, w = rng.normal(size=(t, N, IN)), rng.normal(size=(t, N, H))
        fixed = lstm_step_function(layer, t)
        for a, b in zip(f(x, w), fixed(x, w), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    out, h, c, *grads = f(np.zeros((0, N, IN)), np.zeros((0, N, H)))
    assert out.shape == (0, N, H)
    assert not h.any() and not c.any()  # the zero initial state, unchanged
    # no step ran, so no output depends on a parameter
    assert all(not g.any() for g in grads)


def test_checkpointing_gives_the_same_gradients():
    rng = np.random.default_rng(5)
    x, w = rng.normal(size=(7, N, IN)), rng.normal(size=(7, N, H))
    plain = make_layer("LSTM", {})
    saved = make_layer("LSTM", {}, checkpoint=True)
    assert "checkpoint=True" in repr(saved)
    for a, b in zip(lstm_step_function(plain, 7)(x, w), lstm_step_function(saved, 7)(x, w),
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_input_projection_is_outside_the_loop_and_the_graph_does_not_grow():
    """x @ W_ih^T for all steps is one matmul before the loop; the body holds only the
    h-dependent matmul; the graph is the same size at any length."""
    from graphc.node import toposort
    layer = make_layer("GRU", {})

    def graph(t):
        out, h = layer(gc.placeholder((t, N, IN), "float64", name="x"))
        return [out.node, h.node]

    scans = [n for n in toposort(graph(8)) if n.op == "scan"]
    assert scans
    body = scans[0].attrs["body"]
    assert [n.op for n in body.nodes()].count("matmul") == 1
    outside = [n for n in toposort(graph(8)) if n.op == "matmul"]
    assert len(outside) == 1 and outside[0].shape == (8 * N, 3 * H)  # (T*N, I) @ W_ih^T
    sizes = {t: len(toposort(graph(t), into_regions=True)) for t in (2, 50)}
    assert sizes[2] == sizes[50]
