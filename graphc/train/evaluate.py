"""Evaluation: run a compiled prediction function over a data set in batches, score it."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from graphc.train.metrics import METRICS

MetricSpec = str | Callable[[Any, Any], float]


def _resolve(metrics: MetricSpec | Sequence[MetricSpec] | Mapping[str, Callable]
             ) -> dict[str, Callable]:
    if isinstance(metrics, Mapping):
        return dict(metrics)
    if isinstance(metrics, str) or callable(metrics):
        metrics = [metrics]
    out: dict[str, Callable] = {}
    for m in metrics:
        if isinstance(m, str):
            if m not in METRICS:
                raise ValueError(f"evaluate: unknown metric {m!r}; known: {sorted(METRICS)}, "
                                 "or pass a callable(pred, labels)")
            out[m] = METRICS[m]
        elif callable(m):
            out[getattr(m, "__name__", f"metric{len(out)}")] = m
        else:
            raise TypeError(f"evaluate: a metric is a name or a callable, got {m!r}")
    return out


def predict_batches(predict: Callable, x: np.ndarray, batch_size: int | None = None
                    ) -> np.ndarray:
    """predict(x) over x in order, `batch_size` rows at a time (all at once when None), with
    the results concatenated along the first axis. A tuple output keeps its first item."""
    x = np.asarray(x)
    if batch_size is None or batch_size >= len(x):
        chunks = [x]
    else:
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"predict_batches: batch_size must be a positive int, "
                             f"got {batch_size!r}")
        chunks = [x[i:i + batch_size] for i in range(0, len(x), batch_size)]
    outs = []
    for chunk in chunks:
        out = predict(chunk)
        if isinstance(out, (tuple, list)):
            out = out[0]
        outs.append(np.asarray(out))
    return outs[0] if len(outs) == 1 else np.concatenate(outs, axis=0)


def evaluate(predict: Callable, x: np.ndarray, y: np.ndarray, *,
             metrics: MetricSpec | Sequence[MetricSpec] | Mapping[str, Callable] = "accuracy",
             batch_size: int | None = None) -> dict[str, float]:
    """Scores predict(x) against y with each metric (names from graphc.train.METRICS such as
    "accuracy", "mse", or callables(pred, labels)); returns {name: value}."""
    funcs = _resolve(metrics)
    pred = predict_batches(predict, x, batch_size)
    return {name: float(f(pred, y)) for name, f in funcs.items()}
