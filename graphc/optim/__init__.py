"""Optimizers as graph-level updates (state in parameters), schedules, clipping, Newton."""
from graphc.optim.base import Optimizer
from graphc.optim.clipping import clip_by_global_norm, clip_by_value, global_norm
from graphc.optim.sgd import SGD
from graphc.optim.adaptive import Adagrad, Adam, AdamW, RMSProp, RMSprop
from graphc.optim.newton import Newton, NewtonCG, full_hessian, solve_spd
from graphc.optim.schedules import (Schedule, constant_lr, cosine_annealing, exponential_decay,
                                    linear_warmup, step_decay)

__all__ = [
    "Optimizer", "SGD", "Adagrad", "RMSprop", "RMSProp", "Adam", "AdamW", "Newton", "NewtonCG",
    "Schedule", "constant_lr", "step_decay", "exponential_decay", "cosine_annealing",
    "linear_warmup", "clip_by_global_norm", "clip_by_value", "global_norm", "full_hessian",
    "solve_spd",
]
