"""Training tools: the fit loop, evaluation metrics, checkpoints and loss-curve plots."""
from graphc.data.batches import minibatches
from graphc.train.checkpoint import CheckpointError, checkpoint_every, load, load_arrays, save
from graphc.train.evaluate import evaluate, predict_batches
from graphc.train.loop import History, fit
from graphc.train.metrics import (
    METRICS, accuracy, confusion_matrix, mean_absolute_error, mean_squared_error, top_k_accuracy,
)
from graphc.train.plot import plot_history

__all__ = [
    "fit", "History", "minibatches", "evaluate", "predict_batches",
    "accuracy", "top_k_accuracy", "confusion_matrix", "mean_squared_error",
    "mean_absolute_error", "METRICS",
    "save", "load", "load_arrays", "checkpoint_every", "CheckpointError",
    "plot_history",
]
