"""Modules as PyTorch users expect them: attributes register, names come from the module tree
(state_dict, checkpoints), reprs show the tree, and Residual names a shape-changing layer."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc import nn

BACKENDS = ["numpy", pytest.param("llvm", marks=pytest.mark.slow)]


class Block(nn.Module):
    """Registers everything by attribute assignment only."""

    def __init__(self, channels: int, dtype: str = "float64", seed: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2D(channels, channels, 3, padding=1, seed=seed, dtype=dtype)
        self.bn = nn.BatchNorm(channels, dtype=dtype)
        self.scale = gc.parameter(np.ones((1, channels, 1, 1), dtype))

    def forward(self, x, training):
        return gc.relu(self.bn(self.conv(x), training=training)) * self.scale


class Net(nn.Module):
    def __init__(self, dtype: str = "float64") -> None:
        super().__init__()
        self.block1 = Block(2, dtype, seed=1)
        self.heads = [nn.Dense(2 * 4 * 4, 3, seed=2, dtype=dtype)]  # a list registers too
        self.heads.append(nn.Dense(3, 1, seed=3, dtype=dtype))  # ... read when asked
        self.flatten = nn.Flatten()

    def forward(self, x, training):
        h = self.flatten(self.block1(x, training=training))
        for head in self.heads:
            h = head(h, training=training)
        return h


NET_KEYS = ["block1.scale", "block1.conv.W", "block1.conv.b", "block1.bn.gamma",
            "block1.bn.beta", "heads.0.W", "heads.0.b", "heads.1.W", "heads.1.b",
            "block1.bn.running_mean", "block1.bn.running_var"]


def test_attributes_register_with_names_from_the_tree():
    net = Net()
    assert [n for n, _ in net.named_variables()] == NET_KEYS
    assert list(net.state_dict()) == NET_KEYS
    assert net.parameters() == [p for n, p in net.named_parameters()]
    assert net.state() == [net.block1.bn.running_mean, net.block1.bn.running_var]
    assert [n for n, _ in net.named_modules()] == ["", "block1", "block1.conv", "block1.bn",
                                                   "heads.0", "heads.1", "flatten"]
    assert net.children() == [net.block1, net.heads[0], net.heads[1], net.flatten]
    # the state_dict holds copies of the values
    sd = net.state_dict()
    np.testing.assert_array_equal(sd["block1.conv.W"], net.block1.conv.W.value)
    sd["block1.conv.W"][...] = 7
    assert not np.all(net.block1.conv.W.value == 7)


def test_reassigning_an_attribute_replaces_its_registration():
    net = Net()
    old_conv = net.block1.conv
    net.block1.conv = nn.Conv2D(2, 2, 1, seed=5, dtype="float64")
    assert old_conv.W not in net.parameters() and net.block1.conv.W in net.parameters()
    assert net.state_dict()["block1.conv.W"].shape == (2, 2, 1, 1)
    new_scale = gc.parameter(np.full((1, 2, 1, 1), 2.0))
    net.block1.scale = new_scale  # keeps its place in the order
    assert net.named_parameters()[0] == ("block1.scale", new_scale)
    net.block1.scale = None  # a non-module value unregisters
    assert "block1.scale" not in net.state_dict()
    del net.flatten
    assert "flatten" not in [n for n, _ in net.named_modules()]
    # a running statistic replaced by another parameter stays state, not trainable
    bn = nn.BatchNorm(2, dtype="float64")
    bn.running_mean = gc.parameter(np.full(2, 3.0))
    assert bn.running_mean in bn.state() and bn.running_mean not in bn.parameters()


def test_add_module_and_add_parameter_still_register():
    class Old(nn.Module):
        def __init__(self):
            super().__init__()
            self.add_module(nn.Dense(2, 2, seed=0))  # unnamed: its position
            self.add_module("enc", nn.Dense(2, 2, seed=1))
            self.add_parameter("w", np.ones(2))
            self.add_parameter("count", np.zeros((), np.int64), trainable=False)

    m = Old()
    # own parameters first, then the children's (PyTorch's order), then the state
    assert list(m.state_dict()) == ["w", "0.W", "0.b", "enc.W", "enc.b", "count"]
    with pytest.raises(TypeError, match="expected a gc.nn Module"):
        m.add_module("x", 3)
    with pytest.raises(ValueError, match="without '.'"):
        m.add_parameter("a.b", np.ones(1))


def test_assigning_before_init_is_a_clear_error():
    class Bad(nn.Module):
        def __init__(self):
            self.fc = nn.Dense(2, 2)
            super().__init__()

    with pytest.raises(AttributeError, match="super\\(\\).__init__"):
        Bad()


@pytest.mark.parametrize("backend", BACKENDS)
def test_attribute_registered_parameters_train_and_statistics_update(backend):
    rng = np.random.default_rng(0)
    net = Net()
    x = gc.placeholder((None, 2, 4, 4), "float64", name="x")
    t = gc.placeholder((None, 1), "float64", name="t")
    loss = nn.mse(net(x), t)
    params = net.parameters()
    grads = gc.grad(loss, params)
    # plain SGD, nothing about the statistics: they update by default
    step = gc.function([x, t], loss, updates={p: p - 0.05 * g for p, g in zip(params, grads)},
                       backend=backend)
    assert sorted(step.default_updates) == sorted(p.storage.name for p in net.state())
    before = net.state_dict()
    xv, tv = rng.normal(size=(6, 2, 4, 4)), rng.normal(size=(6, 1))
    first = step(xv, tv)
    for _ in range(5):
        last = step(xv, tv)
    assert last < first
    after = net.state_dict()
    assert net.block1.conv.b in params  # registered, but BatchNorm cancels its gradient
    for key in NET_KEYS:  # every other registered parameter and statistic moved
        if key != "block1.conv.b":
            assert not np.allclose(before[key], after[key]), key


def test_building_twice_loads_the_first_models_state(tmp_path):
    rng = np.random.default_rng(1)
    first = Net()
    for p in first.variables():
        p.value = rng.normal(size=p.shape)
    second = Net()  # a notebook re-run: other display names, the same tree names
    assert second.block1.conv.name != first.block1.conv.name
    second.load_state_dict(first.state_dict())
    for (k1, a), (k2, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert k1 == k2
        np.testing.assert_array_equal(a, b)
    # through a checkpoint file, by the tree names
    third = Net()
    path = gc.train.save(tmp_path / "net.npz", first)
    arrays, _ = gc.train.load_arrays(path)
    assert sorted(arrays) == sorted(NET_KEYS)
    gc.train.load(path, third)
    x = gc.placeholder((None, 2, 4, 4), "float64", name="x")
    xv = rng.normal(size=(3, 2, 4, 4))
    f1 = gc.function([x], first(x, training=False), backend="numpy")
    f3 = gc.function([x], third(x, training=False), backend="numpy")
    np.testing.assert_array_equal(f1(xv), f3(xv))


def test_load_state_dict_errors_name_the_key():
    net = Net()
    sd = net.state_dict()
    missing = {k: v for k, v in sd.items() if k != "heads.1.b"}
    with pytest.raises(ValueError, match=r"missing key\(s\) \['heads.1.b'\]"):
        net.load_state_dict(missing)
    with pytest.raises(ValueError, match=r"unexpected key\(s\) \['extra.W'\]"):
        net.load_state_dict({**sd, "extra.W": np.zeros(2)})
    with pytest.raises(ValueError, match=r"'heads.0.W' has shape \(3, 32\).*\(32, 3\)"):
        net.load_state_dict({**sd, "heads.0.W": sd["heads.0.W"].T})
    with pytest.raises(TypeError, match="'block1.bn.gamma'"):
        net.load_state_dict({**sd, "block1.bn.gamma": np.array(["a", "b"])})
    with pytest.raises(TypeError, match="expected a dict"):
        net.load_state_dict([("heads.0.W", 1)])
    # nothing was set by the failed loads; strict=False reports what it left out
    before = net.block1.bn.gamma.value
    result = net.load_state_dict({"block1.bn.gamma": np.full(2, 3.0), "zzz": 1},
                                 strict=False)
    assert result.unexpected_keys == ["zzz"] and "heads.0.W" in result.missing_keys
    np.testing.assert_array_equal(net.block1.bn.gamma.value, [3.0, 3.0])
    assert not np.array_equal(before, [3.0, 3.0])
    # float32 state accepts float64 arrays (within a kind), as parameters do
    small = nn.Dense(2, 2, dtype="float32")
    small.load_state_dict({"W": np.eye(2), "b": np.zeros(2)})
    assert small.W.value.dtype == np.float32


def test_old_list_checkpoints_load_or_fail_clearly(tmp_path):
    net = Net()
    path = gc.train.save(tmp_path / "old.npz", net.variables())  # the parameters' own names
    for p in net.parameters():
        p.value = np.zeros(p.shape)
    gc.train.load(path, net)  # same process: the own names still match
    assert not np.all(net.heads[0].W.value == 0)
    with pytest.raises(gc.train.CheckpointError, match="own names"):
        gc.train.load(path, Net())  # rebuilt: other own names


def test_repr_shows_the_tree():
    model = nn.Sequential(nn.Dense(784, 64, activation="relu"), nn.BatchNorm(64),
                          nn.Residual(nn.Dense(64, 64)), nn.Dropout(0.5), gc.relu,
                          nn.Dense(64, 10, bias=False))
    assert repr(model) == (
        "Sequential(\n"
        "  (0): Dense(784 -> 64, activation=relu)\n"
        "  (1): BatchNorm(64)\n"
        "  (2): Residual(\n"
        "    (module): Dense(64 -> 64)\n"
        "  )\n"
        "  (3): Dropout(rate=0.5)\n"
        "  (4): relu\n"
        "  (5): Dense(64 -> 10, bias=False)\n"
        ")")
    assert repr(nn.Conv2D(3, 8, 3, stride=2)) == "Conv2D(3 -> 8, kernel=(3, 3), stride=(2, 2))"
    assert repr(Net()).startswith("Net(\n  (block1): Block(\n    (conv): Conv2D(2 -> 2")


def test_residual_around_a_shape_changing_layer_names_it():
    x = gc.placeholder((None, 4), name="x")
    inner = nn.Dense(4, 8, name="widen")
    with pytest.raises(ValueError, match=r"Residual 'res'.*Dense\(4 -> 8\) 'widen' maps shape "
                                         r"\(None, 4\) to \(None, 8\)"):
        nn.Residual(inner, name="res")(x)
    # broadcasting would hide it: (None, 1) + (None, 4) must fail too
    with pytest.raises(ValueError, match=r"maps shape \(None, 4\) to \(None, 1\)"):
        nn.Residual(nn.Dense(4, 1))(x)
    with pytest.raises(ValueError, match=r"Residual .*inner layer <lambda>"):
        nn.Residual(lambda v: v[:, :2])(x)
    assert nn.Residual(nn.Dense(4, 4))(x).shape == (None, 4)
