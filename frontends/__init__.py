"""How users write graphs: the Tensor DSL and its numpy-like functions."""
from graphc.frontends import methods as _methods  # noqa: F401  (installs Tensor operators)
from graphc.frontends import numpy_operators as _numpy_operators  # noqa: F401  (% // & | ~)
from graphc.frontends.functions import *  # noqa: F401,F403
from graphc.frontends.tensor import Parameter, Tensor, constant, parameter, placeholder

__all__ = ["Tensor", "Parameter", "placeholder", "parameter", "constant"]
