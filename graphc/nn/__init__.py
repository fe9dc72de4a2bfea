"""Neural-network building blocks: losses, convolution/pooling, initialisers, activations,
layers (Module, Dense, Conv2D, pooling, Flatten, LayerNorm, BatchNorm, WeightNorm,
Embedding, Dropout, Residual, Sequential)."""
from graphc.nn import activations, init
from graphc.nn.activations import (elu, gelu, leaky_relu, relu, sigmoid, softplus, softsign,
                                   tanh)
from graphc.nn.conv import avg_pool2d, conv2d, max_pool2d
from graphc.nn.dropout import Dropout, dropout
from graphc.nn.layers import (AvgPool2D, Conv2D, Dense, Embedding, Flatten, MaxPool2D,
                              WeightNorm, embedding)
from graphc.nn.losses import binary_cross_entropy_with_logits, cross_entropy, huber, mse
from graphc.nn.module import Module, Residual, Sequential
from graphc.nn.normalization import BatchNorm, LayerNorm, batch_norm, layer_norm

__all__ = ["mse", "huber", "cross_entropy", "binary_cross_entropy_with_logits",
           "conv2d", "max_pool2d", "avg_pool2d", "batch_norm", "layer_norm", "embedding",
           "init", "activations", "sigmoid", "tanh", "relu", "softplus", "leaky_relu", "gelu",
           "elu", "softsign",
           "Module", "Sequential", "Residual", "Dense", "WeightNorm", "Conv2D", "MaxPool2D",
           "AvgPool2D", "Flatten", "Embedding", "LayerNorm", "BatchNorm", "Dropout", "dropout"]

# Modules (issue #16): what load_state_dict(strict=False) returns
from graphc.nn.module import LoadResult  # noqa: E402

__all__ += ["LoadResult"]

# Recurrent layers (issue #15): RNN, LSTM, GRU
from graphc.nn.recurrent import GRU, LSTM, RNN  # noqa: E402

__all__ += ["RNN", "LSTM", "GRU"]
