"""Data sets that work offline, and a minibatch iterator."""
from graphc.data.batches import minibatches
from graphc.data.digits import Split, load_digits
from graphc.data.mnist import load_mnist_5k, mnist_5k_path

__all__ = ["load_digits", "load_mnist_5k", "mnist_5k_path", "minibatches", "Split"]
