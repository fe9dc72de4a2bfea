"""fit: the training loop around a compiled step, with a progress bar, evaluation and history."""
from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from graphc import distributed
from graphc.data.batches import minibatches

Callback = Callable[[int, "History"], Any]


@dataclass(repr=False)
class History:
    """What fit did, one entry per completed epoch (epochs count from 1)."""

    loss: list[float] = field(default_factory=list)           # mean training loss per example
    metrics: dict[str, list[float]] = field(default_factory=dict)  # eval_fn's results
    seconds: list[float] = field(default_factory=list)        # wall time: training + evaluation
    examples_per_second: list[float] = field(default_factory=list)  # training throughput
    batch_loss: list[float] = field(default_factory=list)     # every batch, in order
    batches: list[int] = field(default_factory=list)          # batches per completed epoch
    interrupted: bool = False   # stopped by KeyboardInterrupt (Ctrl-C)
    stopped_early: bool = False  # a callback returned True

    @property
    def epochs(self) -> int:
        return len(self.loss)

    def __len__(self) -> int:
        return len(self.loss)

    def __repr__(self) -> str:
        if not self.loss:
            body = "no epochs"
        else:
            body = f"{self.epochs} epochs, loss {self.loss[0]:.4g} -> {self.loss[-1]:.4g}"
            for name, values in self.metrics.items():
                body += f", {name} {values[-1]:.4g}"
        flags = "".join(f", {f}" for f in ("interrupted", "stopped_early") if getattr(self, f))
        return f"<History {body}{flags}>"

    def as_dict(self) -> dict[str, Any]:
        """Plain lists and numbers (JSON-serializable)."""
        return asdict(self)


def _train_arrays(data: Any) -> tuple[np.ndarray, ...]:
    if hasattr(data, "x_train") and hasattr(data, "y_train"):  # a gc.data split
        return (np.asarray(data.x_train), np.asarray(data.y_train))
    if isinstance(data, np.ndarray):
        return (data,)
    if isinstance(data, (tuple, list)) and data:
        return tuple(np.asarray(a) for a in data)
    raise TypeError("fit: data must be an array, a tuple of arrays sharing their first axis "
                    f"(inputs, labels), or a gc.data split; got {type(data).__name__}")


def _eval_args(data: Any, eval_data: Any) -> tuple:
    if eval_data is None:
        if hasattr(data, "x_test") and hasattr(data, "y_test"):
            return (data.x_test, data.y_test)
        return ()
    if isinstance(eval_data, np.ndarray):
        return (eval_data,)
    if isinstance(eval_data, (tuple, list)):
        return tuple(eval_data)
    raise TypeError(f"fit: eval_data must be an array or a tuple of arrays, "
                    f"got {type(eval_data).__name__}")


def _loss_of(out: Any) -> float:
    """The step's loss: its output, or the first item of a tuple/list output."""
    if isinstance(out, (tuple, list)):
        if not out:
            raise ValueError("fit: the step returned an empty tuple; it must return the loss "
                             "(or a tuple whose first item is the loss)")
        out = out[0]
    value = np.asarray(out)
    if value.size != 1:
        raise ValueError(f"fit: the step's loss must be a scalar, got shape {value.shape}")
    return float(value.reshape(()))


def _as_metrics(result: Any) -> dict[str, float]:
    if result is None:
        return {}
    if isinstance(result, Mapping):
        return {str(k): float(v) for k, v in result.items()}
    return {"eval": float(result)}


def _make_bar(enabled: bool, total: int, desc: str):
    """A tqdm bar counting examples (so its rate reads ex/s), or None without tqdm or when
    stderr is not a terminal (a log file would get every refresh: the plain line per epoch
    says it all there)."""
    isatty = getattr(sys.stderr, "isatty", None)
    if not enabled or not (callable(isatty) and isatty()):
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="ex", leave=False, dynamic_ncols=True)


def _format_epoch(epoch: int, epochs: int, history: History) -> str:
    width = len(str(epochs))
    parts = [f"epoch {epoch:{width}d}/{epochs}", f"loss {history.loss[-1]:.4f}"]
    for name, values in history.metrics.items():
        parts.append(f"{name} {values[-1]:.4f}")
    parts.append(f"({history.examples_per_second[-1]:,.0f} ex/s, {history.seconds[-1]:.2f} s)")
    return "  ".join(parts)


def fit(step: Callable, data: Any, epochs: int, batch_size: int, *,
        eval_fn: Callable | None = None, eval_data: Any = None, seed: int | None = 0,
        progress: bool = True, callbacks: Sequence[Callback] = (), shuffle: bool = True,
        drop_last: bool = False, verbose: bool = True) -> History:
    """Trains by calling `step(*batch)` on shuffled minibatches of `data` for `epochs` epochs.

    step: a compiled gc.function (or any callable) taking one batch (the arrays of `data`,
        sliced alike) and returning the loss, or a tuple/list whose first item is the loss;
        its parameter updates do the training. A short last batch is passed as it is (the
        step's batch dimension must be None), unless drop_last.
    data: an array, a tuple of arrays sharing their first axis (x, y), or a gc.data split
        (x_train/y_train; its x_test/y_test become the default eval_data).
    eval_fn: called after each epoch as eval_fn(*eval_data) (no arguments when there is no
        eval_data); returns a dict {metric: value} (or one number, recorded as "eval").
    seed: the shuffling seed (epoch orders differ, the run is reproducible); None: random.
    progress: a tqdm bar per epoch (loss and examples/s) when stderr is a terminal; the
        plain line per epoch is printed in any case. verbose=False prints nothing.
    callbacks: callables(epoch, history) run after each epoch; one returning True stops.

    In a job of K processes (mpirun; gc.distributed.size() > 1) batch_size is per process,
    as in PyTorch's DistributedDataParallel: every process draws the same shuffled batches
    of K * batch_size rows (those a one-process run with that batch size draws) and takes
    its own share, and only rank 0 prints. A step returning gc.distributed.all_reduce(loss)
    records the job's loss; a last batch of fewer than K rows is skipped.

    Returns a History. Ctrl-C (KeyboardInterrupt) stops training and returns the history of
    the completed epochs with history.interrupted set."""
    if not callable(step):
        raise TypeError(f"fit: step must be callable (a gc.function), got {type(step).__name__}")
    if not isinstance(epochs, (int, np.integer)) or isinstance(epochs, bool) or epochs < 0:
        raise ValueError(f"fit: epochs must be an int >= 0, got {epochs!r}")
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) \
            or batch_size <= 0:
        raise ValueError(f"fit: batch_size must be a positive int, got {batch_size!r}")
    ranks, me = distributed.size(), distributed.rank()
    verbose = verbose and me == 0
    batch_size = int(batch_size) * ranks  # rows drawn per step by the whole job
    arrays = _train_arrays(data)
    n = len(arrays[0])
    for i, a in enumerate(arrays):
        if a.ndim == 0 or len(a) != n:
            raise ValueError(f"fit: data array {i} has shape {a.shape}; every array needs "
                             f"{n} rows (the first array's)")
    if n < ranks or (drop_last and n < batch_size):
        raise ValueError(f"fit: no training batches ({n} examples, batch_size {batch_size}, "
                         f"drop_last={drop_last})")
    eval_args = _eval_args(data, eval_data) if eval_fn is not None else ()
    callbacks = list(callbacks)
    for cb in callbacks:
        if not callable(cb):
            raise TypeError(f"fit: callbacks must be callables(epoch, history), got {cb!r}")
    use_bar = bool(progress and verbose)
    per_epoch = n - n % batch_size if drop_last else n

    history = History()
    order_rng = np.random.default_rng(seed)
    bar = None
    epoch = 0
    try:
        for epoch in range(1, int(epochs) + 1):
            t0 = time.perf_counter()
            bar = _make_bar(use_bar, per_epoch, f"epoch {epoch}/{epochs}")
            total, seen, n_batches = 0.0, 0, 0
            last_postfix = 0.0
            batches = minibatches(*arrays, batch_size=batch_size, shuffle=shuffle,
                                  seed=int(order_rng.integers(2**63)), drop_last=drop_last)
            for batch in batches:
                size = len(batch[0])
                if ranks > 1:
                    if size < ranks:
                        continue  # no row for some process: every process skips it
                    mine = np.array_split(np.arange(size), ranks)[me]
                    batch = tuple(a[mine] for a in batch)
                loss = _loss_of(step(*batch))
                history.batch_loss.append(loss)
                total += loss * size
                seen += size
                n_batches += 1
                if bar is not None:
                    bar.update(size)
                    now = time.perf_counter()
                    if now - last_postfix > 0.1:  # formatting every batch would cost more
                        bar.set_postfix(loss=f"{total / seen:.4f}", refresh=False)
                        last_postfix = now
            train_seconds = time.perf_counter() - t0
            if bar is not None:
                bar.set_postfix(loss=f"{total / seen:.4f}", refresh=True)
                bar.close()
                bar = None
            metrics = _as_metrics(eval_fn(*eval_args)) if eval_fn is not None else {}
            history.loss.append(total / seen)
            history.batches.append(n_batches)
            history.examples_per_second.append(seen / train_seconds if train_seconds > 0
                                               else math.inf)
            for name, value in metrics.items():
                history.metrics.setdefault(name, [math.nan] * (epoch - 1)).append(value)
            for values in history.metrics.values():  # a metric missing this epoch
                if len(values) < epoch:
                    values.append(math.nan)
            history.seconds.append(time.perf_counter() - t0)
            if verbose:
                print(_format_epoch(epoch, epochs, history), flush=True)
            stop = False
            for cb in callbacks:
                stop = bool(cb(epoch, history)) or stop
            if stop:
                history.stopped_early = True
                if verbose:
                    print(f"stopped by a callback after epoch {epoch}", flush=True)
                break
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        _trim(history)
        history.interrupted = True
        if verbose:
            print(f"\ninterrupted during epoch {epoch}: returning the history of "
                  f"{history.epochs} completed epoch(s)", file=sys.stderr, flush=True)
    return history


def _trim(history: History) -> None:
    """After an interrupt mid-epoch: keep the per-epoch lists aligned to completed epochs."""
    done = min(len(history.loss), len(history.seconds))
    del history.loss[done:], history.examples_per_second[done:], history.seconds[done:]
    del history.batches[done:]
    for values in history.metrics.values():
        del values[done:]
