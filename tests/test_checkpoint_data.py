"""Checkpoints stay data: loading one reaches neither pickle nor eval (whatever the format
grows into), and a file whose names do not match the model's is a clear error that changes
nothing."""
from __future__ import annotations

import builtins
import pickle

import numpy as np
import pytest

import graphc as gc


def _model(seed: int, extra_layer: bool = False) -> gc.nn.Module:
    layers = [gc.nn.Dense(4, 3, seed=seed), gc.nn.Dense(3, 2, seed=seed + 1)]
    if extra_layer:
        layers.append(gc.nn.Dense(2, 2, seed=seed + 2))
    return gc.nn.Sequential(*layers)


def _forbid(monkeypatch, *targets: tuple[object, str]) -> None:
    """Makes each target raise; eval and exec only on text (imports exec code objects)."""
    for owner, name in targets:
        real = getattr(owner, name)

        def refuse(*args, _real=real, _name=name, **kwargs):
            if _name in ("eval", "exec") and args and not isinstance(args[0], (str, bytes)):
                return _real(*args, **kwargs)
            raise AssertionError(f"a checkpoint load reached {_name}")
        monkeypatch.setattr(owner, name, refuse)


def test_loading_a_checkpoint_reaches_neither_pickle_nor_eval(tmp_path, monkeypatch):
    saved = _model(0)
    path = tmp_path / "m.npz"
    gc.train.save(path, saved, extra={"epoch": 3, "note": "__import__('os')"})
    target = _model(7)
    _forbid(monkeypatch, (pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"),
            (builtins, "eval"), (builtins, "exec"), (np, "load"))
    extra = gc.train.load(path, target)
    monkeypatch.undo()
    assert extra == {"epoch": 3, "note": "__import__('os')"}  # a string, never evaluated
    for name, value in saved.state_dict().items():
        np.testing.assert_array_equal(target.state_dict()[name], value)


def test_a_module_checkpoint_with_other_names_is_a_clear_error(tmp_path):
    path = tmp_path / "m.npz"
    gc.train.save(path, _model(0))
    bigger, smaller = _model(5, extra_layer=True), gc.nn.Sequential(gc.nn.Dense(4, 3, seed=5))
    for target, match in ((bigger, r"no entry for parameter\(s\) \['2\.W', '2\.b'\]"),
                          (smaller, r"holds parameter\(s\) \['1\.W', '1\.b'\] that were not")):
        before = {k: v.copy() for k, v in target.state_dict().items()}
        with pytest.raises(ValueError, match=match) as info:
            gc.train.load(path, target)
        assert str(path) in str(info.value)
        for name, value in target.state_dict().items():  # nothing was set
            np.testing.assert_array_equal(value, before[name])
