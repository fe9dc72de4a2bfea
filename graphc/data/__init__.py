"""Data sets that work offline, and a minibatch iterator."""
from graphc.data.batches import minibatches
from graphc.data.digits import load_digits

__all__ = ["load_digits", "minibatches"]
