"""plot_history: a loss curve (and evaluation metrics) as an image, through matplotlib's Agg."""
from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np


def _import_matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError as exc:
        raise ImportError("plot_history needs matplotlib: pip install 'graphc[viz]' "
                          "(or pip install matplotlib)") from exc
    return Figure, FigureCanvasAgg, MaxNLocator


def _fields(history: Any) -> tuple[list[float], dict[str, list[float]], list[float], list[int]]:
    if isinstance(history, Mapping):
        get = history.get
    else:
        def get(key, default=None):
            return getattr(history, key, default)
    loss = list(get("loss", None) or [])
    if not loss:
        raise ValueError("plot_history: the history has no epochs to plot")
    return (loss, dict(get("metrics", None) or {}), list(get("batch_loss", None) or []),
            list(get("batches", None) or []))


def _batch_positions(n_batch: int, batches: list[int], n_epochs: int) -> np.ndarray:
    """x positions of the batch losses: epoch e's batches spread over (e - 1, e]; batches of
    an interrupted epoch continue at the last epoch's pace."""
    if len(batches) != n_epochs or not all(batches):
        batches = [max(1, n_batch // n_epochs)] * n_epochs
    xs = [e + (np.arange(1, k + 1) / k) for e, k in enumerate(batches)]
    done = sum(batches)
    if n_batch > done:
        xs.append(n_epochs + np.arange(1, n_batch - done + 1) / batches[-1])
    return np.concatenate(xs)[:n_batch]


def plot_history(history: Any, path: str | os.PathLike, *, title: str | None = None,
                 dpi: int = 100) -> str:
    """Draws the per-epoch training loss (with every batch's loss faintly behind it) and, in a
    second panel, the evaluation metrics; writes the picture to `path` (the format follows the
    suffix: .png, .svg, .pdf). `history`: fit's History or its as_dict(). Uses the Agg canvas
    directly, so it changes no global matplotlib state and needs no display. Returns the path."""
    Figure, FigureCanvasAgg, MaxNLocator = _import_matplotlib()
    loss, metrics, batch_loss, batches = _fields(history)
    epochs = np.arange(1, len(loss) + 1)
    panels = 2 if metrics else 1
    fig = Figure(figsize=(6.4 * panels, 4.2), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, panels, 1)
    if batch_loss:
        xs = _batch_positions(len(batch_loss), batches, len(loss))
        ax.plot(xs, batch_loss, color="tab:blue", alpha=0.25, linewidth=0.8, label="batch")
    ax.plot(epochs, loss, color="tab:blue", marker="o", markersize=3, label="epoch mean")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    if np.all(np.asarray(loss) > 0) and max(loss) / min(loss) > 30:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    if metrics:
        ax2 = fig.add_subplot(1, 2, 2)
        for name, values in metrics.items():
            ax2.plot(np.arange(1, len(values) + 1), values, marker="o", markersize=3,
                     label=name)
        ax2.set_xlabel("epoch")
        ax2.set_ylabel("evaluation")
        ax2.grid(alpha=0.3)
        ax2.legend()
    for a in fig.axes:
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = os.fspath(path)
    fig.savefig(path)
    return path
