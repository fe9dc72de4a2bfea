"""Neural-network building blocks: losses now; layers, initialisers and more to come."""
from graphc.nn.losses import cross_entropy, huber, mse

__all__ = ["mse", "huber", "cross_entropy"]
