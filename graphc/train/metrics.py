"""Evaluation metrics: plain numpy functions over predictions and labels."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np


def _labels(labels: Any, what: str) -> np.ndarray:
    """Integer class labels; one-hot or probability rows become their argmax."""
    y = np.asarray(labels)
    if y.ndim == 2:
        y = y.argmax(axis=1)
    if y.ndim != 1:
        raise ValueError(f"{what}: expected a 1-D array of class labels (or 2-D one-hot rows), "
                         f"got shape {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise ValueError(f"{what}: class labels must be whole numbers, got dtype {y.dtype}")
        y = y.astype(np.int64)
    return y


def _predicted_classes(pred: Any, n: int) -> np.ndarray:
    """Class predictions from labels (N,) or from scores/logits/probabilities (N, C)."""
    p = np.asarray(pred)
    if p.ndim == 2:
        p = p.argmax(axis=1)
    elif p.ndim != 1:
        raise ValueError(f"predictions: expected shape (N,) labels or (N, C) scores, "
                         f"got {p.shape}")
    if len(p) != n:
        raise ValueError(f"predictions have {len(p)} rows, labels have {n}")
    return p


def accuracy(pred: Any, labels: Any) -> float:
    """The fraction of rows whose predicted class equals the label. `pred` holds class labels
    (N,) or scores (N, C) whose argmax is the prediction; `labels` class labels (N,) or one-hot
    rows (N, C)."""
    y = _labels(labels, "accuracy labels")
    if len(y) == 0:
        raise ValueError("accuracy: no examples")
    p = _predicted_classes(pred, len(y))
    return float(np.mean(p == y))


def top_k_accuracy(scores: Any, labels: Any, k: int = 5) -> float:
    """The fraction of rows whose label is among the k highest scores. A tie counts in the
    label's favour: a row is a hit when fewer than k classes score strictly higher."""
    s = np.asarray(scores)
    if s.ndim != 2:
        raise ValueError(f"top_k_accuracy: scores must have shape (N, C), got {s.shape}")
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ValueError(f"top_k_accuracy: k must be a positive int, got {k!r}")
    y = _labels(labels, "top_k_accuracy labels")
    if len(y) != len(s):
        raise ValueError(f"top_k_accuracy: scores have {len(s)} rows, labels have {len(y)}")
    if len(y) == 0:
        raise ValueError("top_k_accuracy: no examples")
    if y.min() < 0 or y.max() >= s.shape[1]:
        raise ValueError(f"top_k_accuracy: labels must lie in [0, {s.shape[1]}), "
                         f"got [{y.min()}, {y.max()}]")
    label_scores = s[np.arange(len(y)), y]
    higher = np.sum(s > label_scores[:, None], axis=1)
    return float(np.mean(higher < k))


def confusion_matrix(pred: Any, labels: Any, num_classes: int | None = None) -> np.ndarray:
    """counts[i, j] = the number of examples of true class i predicted as class j (rows: truth,
    columns: prediction, as in scikit-learn). `pred` may be labels or (N, C) scores."""
    y = _labels(labels, "confusion_matrix labels")
    p = _predicted_classes(pred, len(y)).astype(np.int64)
    if num_classes is None:
        scores_width = np.asarray(pred).shape[1] if np.asarray(pred).ndim == 2 else 0
        num_classes = int(max(scores_width, y.max(initial=-1) + 1, p.max(initial=-1) + 1))
    if not isinstance(num_classes, (int, np.integer)) or num_classes < 0:
        raise ValueError(f"confusion_matrix: num_classes must be an int >= 0, "
                         f"got {num_classes!r}")
    for name, a in (("labels", y), ("predictions", p)):
        if len(a) and (a.min() < 0 or a.max() >= num_classes):
            raise ValueError(f"confusion_matrix: {name} must lie in [0, {num_classes}), "
                             f"got [{a.min()}, {a.max()}]")
    flat = np.bincount(y * num_classes + p, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64)


def mean_squared_error(pred: Any, target: Any) -> float:
    """The mean over all elements of (pred - target)^2; the shapes must be equal."""
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    if p.shape != t.shape:
        raise ValueError(f"mean_squared_error: predictions have shape {p.shape}, "
                         f"targets {t.shape}")
    if p.size == 0:
        raise ValueError("mean_squared_error: no elements")
    return float(np.mean(np.square(p - t)))


def mean_absolute_error(pred: Any, target: Any) -> float:
    """The mean over all elements of |pred - target|; the shapes must be equal."""
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    if p.shape != t.shape:
        raise ValueError(f"mean_absolute_error: predictions have shape {p.shape}, "
                         f"targets {t.shape}")
    if p.size == 0:
        raise ValueError("mean_absolute_error: no elements")
    return float(np.mean(np.abs(p - t)))


METRICS: dict[str, Callable[[Any, Any], float]] = {
    "accuracy": accuracy,
    "top_k_accuracy": top_k_accuracy,
    "mse": mean_squared_error,
    "mean_squared_error": mean_squared_error,
    "mae": mean_absolute_error,
    "mean_absolute_error": mean_absolute_error,
}
