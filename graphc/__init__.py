"""graphc: a symbolic-to-numeric autodiff compiler (tensor DSL -> graph -> grad -> native code)."""
# The one place the version is written: setup.cfg reads it (version = attr: ...).
__version__ = "0.1.0"

from graphc.dtypes import bool_, float32, float64, int32, int64
from graphc.errors import DTypeError, GradientError, GraphError, ShapeError
from graphc.function import Function, function
from graphc.graph import Graph
from graphc.printing import show, to_dot
from graphc.frontends import (  # the DSL's public names
    Parameter, Tensor, abs, add, argmax, astype, broadcast_to, concatenate, constant, cos, cot,
    csc, divide, equal, erf, exp, expand_dims, greater, greater_equal, less, less_equal, log,
    log_softmax, logsumexp, matmul, max, maximum, mean, min, minimum, multiply, negative,
    not_equal, one_hot, parameter, placeholder, power, relu, reshape, sec, sigmoid, sign, sin,
    softmax, softplus, sqrt, square, squeeze, stack, stop_gradient, subtract, sum, take, tan,
    tanh, transpose, where,
)
from graphc.frontends.autodiff import grad, hessian, jvp, name, vjp
from graphc.frontends.custom import elementwise_function, to_sympy
from graphc.frontends.gradcheck import GradCheckResult, check_grad
from graphc.frontends.random import random_uniform
# More of numpy (issue #16, part 1): constructors, elementwise, reductions, shape functions
from graphc.frontends.numpy_create import (  # noqa: E402
    arange, eye, full, full_like, linspace, ones, ones_like, zeros, zeros_like)
from graphc.frontends.numpy_math import (  # noqa: E402
    arccos, arccosh, arcsin, arcsinh, arctan, arctan2, arctanh, argmin, ceil, clip, cosh,
    exp2, expm1, floor, floor_divide, isfinite, isnan, log1p, log2, log10, logical_and,
    logical_not, logical_or, mod, prod, remainder, round, sinh, std, var)
from graphc.frontends.numpy_shape import (  # noqa: E402
    dot, einsum, flip, outer, pad, repeat, split, tile)

# issue #16, "more of numpy" part 2 (kernels and indexing): scans and sorting
from graphc.frontends.scans import argsort, cumprod, cumsum, sort
from graphc import data, nn  # noqa: E402
from graphc import train  # noqa: E402
from graphc import optim  # noqa: E402

# Tracing (issue #16): jit, jacobian, vmap.
from graphc.frontends.tracing import jit  # noqa: E402
from graphc.frontends.jacobian import jacobian  # noqa: E402
from graphc.frontends.vmap import vmap  # noqa: E402

# Inspection (issue #17, the command line and the math view): gc.to_latex
from graphc.latex import to_latex  # noqa: E402

# Distribution (issue #19): gc.distributed (rank, size, all_reduce, broadcast_parameters)
from graphc import distributed  # noqa: E402

# The public names (what `from graphc import *` gives).
__all__ = [
    "bool_", "float32", "float64", "int32", "int64", "DTypeError", "GradientError", "GraphError",
    "ShapeError", "Function", "function", "Graph", "show", "to_dot", "Parameter", "Tensor", "abs",
    "add", "argmax", "astype", "broadcast_to", "concatenate", "constant", "cos", "cot", "csc",
    "divide", "equal", "erf", "exp", "expand_dims", "greater", "greater_equal", "less",
    "less_equal", "log", "log_softmax", "logsumexp", "matmul", "max", "maximum", "mean", "min",
    "minimum", "multiply", "negative", "not_equal", "one_hot", "parameter", "placeholder", "power",
    "relu", "reshape", "sec", "sigmoid", "sign", "sin", "softmax", "softplus", "sqrt", "square",
    "squeeze", "stack", "stop_gradient", "subtract", "sum", "take", "tan", "tanh", "transpose",
    "where", "grad", "hessian", "jvp", "name", "vjp", "elementwise_function", "to_sympy",
    "GradCheckResult", "check_grad", "random_uniform", "data", "nn", "train", "optim",
    "__version__",
]
__all__ += ["jit", "jacobian", "vmap"]  # tracing (issue #16)

# More of numpy (issue #16, part 1)
__all__ += [
    "arange", "eye", "full", "full_like", "linspace", "ones", "ones_like", "zeros", "zeros_like",
    "arccos", "arccosh", "arcsin", "arcsinh", "arctan", "arctan2", "arctanh", "argmin", "ceil",
    "clip", "cosh", "exp2", "expm1", "floor", "floor_divide", "isfinite", "isnan", "log1p",
    "log2", "log10", "logical_and", "logical_not", "logical_or", "mod", "prod", "remainder",
    "round", "sinh", "std", "var", "dot", "einsum", "flip", "outer", "pad", "repeat", "split",
    "tile",
]

# issue #16, "more of numpy" part 2 (kernels and indexing)
__all__ += ["argsort", "cumprod", "cumsum", "sort"]

# Inspection (issue #17, pictures): gc.render through Graphviz.
from graphc.render import render  # noqa: E402
__all__ += ["render"]

# Inspection: the explorer page (issue #17, explore part)
from graphc.explore import explore  # noqa: E402

__all__ += ["explore"]

# Inspection (issue #17, the command line and the math view)
__all__ += ["to_latex"]
__all__ += ["distributed"]  # distribution (issue #19)

# Loops (issue #15, scan core): gc.scan
from graphc.frontends.loops import scan  # noqa: E402
__all__ += ["scan"]
