"""Neural-network building blocks: losses now; layers, initialisers and more to come."""
from graphc.nn.conv import avg_pool2d, conv2d, max_pool2d
from graphc.nn.losses import cross_entropy, huber, mse

__all__ = ["mse", "huber", "cross_entropy", "conv2d", "max_pool2d", "avg_pool2d"]
