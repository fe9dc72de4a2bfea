"""Weight initialisers: numpy arrays drawn from an explicit np.random.Generator (or a seed).

Fan-in and fan-out follow the weight layouts graphc's layers use:
  * dense weights (in, out): fan_in = in, fan_out = out;
  * convolution weights (O, I, KH, KW) (any number of trailing kernel axes):
    fan_in = I * KH * KW, fan_out = O * KH * KW;
  * a vector (n,): fan_in = fan_out = n.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Sequence

import numpy as np

from graphc.dtypes import as_dtype

Initializer = Callable[..., np.ndarray]


def _shape(shape: Any) -> tuple[int, ...]:
    if isinstance(shape, numbers.Integral) and not isinstance(shape, bool):
        shape = (int(shape),)
    if not isinstance(shape, (tuple, list)) or not all(
            isinstance(s, numbers.Integral) and not isinstance(s, bool) and int(s) >= 0
            for s in shape):
        raise TypeError(f"init: shape must be a tuple of ints >= 0, got {shape!r}")
    return tuple(int(s) for s in shape)


def compute_fans(shape: Sequence[int]) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight of this shape (see the module docstring)."""
    shape = _shape(shape)
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = int(np.prod(shape[2:]))
    return shape[1] * receptive, shape[0] * receptive


def _generator(rng: Any, what: str) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, numbers.Integral) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"{what}: rng must be a np.random.Generator or an int seed, got {rng!r}")


def _float_dtype(dtype: Any, what: str) -> np.dtype:
    dt = as_dtype(dtype)
    if dt.kind != "f":
        raise TypeError(f"{what}: dtype must be a float type, got {dt}")
    return dt


def _fans_positive(shape: tuple[int, ...], what: str) -> tuple[int, int]:
    fan_in, fan_out = compute_fans(shape)
    if fan_in <= 0 or fan_out <= 0:
        raise ValueError(f"{what}: shape {shape} has no fan-in/fan-out")
    return fan_in, fan_out


def _uniform(rng: np.random.Generator, limit: float, shape, dtype) -> np.ndarray:
    return rng.uniform(-limit, limit, size=shape).astype(dtype)


def _normal(rng: np.random.Generator, std: float, shape, dtype) -> np.ndarray:
    return rng.normal(0.0, std, size=shape).astype(dtype)


def glorot_uniform(shape: Any, rng: Any, dtype: Any = "float32",
                   gain: float = 1.0) -> np.ndarray:
    """U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out)): variance 2 / (fan_in + fan_out)."""
    shape = _shape(shape)
    fi, fo = _fans_positive(shape, "glorot_uniform")
    return _uniform(_generator(rng, "glorot_uniform"), gain * math.sqrt(6.0 / (fi + fo)),
                    shape, _float_dtype(dtype, "glorot_uniform"))


def glorot_normal(shape: Any, rng: Any, dtype: Any = "float32",
                  gain: float = 1.0) -> np.ndarray:
    """N(0, std^2), std = gain * sqrt(2 / (fan_in + fan_out))."""
    shape = _shape(shape)
    fi, fo = _fans_positive(shape, "glorot_normal")
    return _normal(_generator(rng, "glorot_normal"), gain * math.sqrt(2.0 / (fi + fo)),
                   shape, _float_dtype(dtype, "glorot_normal"))


def he_uniform(shape: Any, rng: Any, dtype: Any = "float32", gain: float = math.sqrt(2.0)
               ) -> np.ndarray:
    """U(-a, a), a = gain * sqrt(3 / fan_in) (gain sqrt 2, for ReLU: variance 2 / fan_in)."""
    shape = _shape(shape)
    fi, _ = _fans_positive(shape, "he_uniform")
    return _uniform(_generator(rng, "he_uniform"), gain * math.sqrt(3.0 / fi), shape,
                    _float_dtype(dtype, "he_uniform"))


def he_normal(shape: Any, rng: Any, dtype: Any = "float32", gain: float = math.sqrt(2.0)
              ) -> np.ndarray:
    """N(0, std^2), std = gain / sqrt(fan_in) (gain sqrt 2: variance 2 / fan_in)."""
    shape = _shape(shape)
    fi, _ = _fans_positive(shape, "he_normal")
    return _normal(_generator(rng, "he_normal"), gain / math.sqrt(fi), shape,
                   _float_dtype(dtype, "he_normal"))


def normal(shape: Any, rng: Any, dtype: Any = "float32", std: float = 1.0) -> np.ndarray:
    """N(0, std^2) (Embedding's default)."""
    shape = _shape(shape)
    return _normal(_generator(rng, "normal"), std, shape, _float_dtype(dtype, "normal"))


def zeros(shape: Any, rng: Any = None, dtype: Any = "float32") -> np.ndarray:
    """All zeros (rng is accepted and ignored, so every initialiser has one signature)."""
    return np.zeros(_shape(shape), _float_dtype(dtype, "zeros"))


def ones(shape: Any, rng: Any = None, dtype: Any = "float32") -> np.ndarray:
    """All ones (rng is accepted and ignored)."""
    return np.ones(_shape(shape), _float_dtype(dtype, "ones"))


xavier_uniform = glorot_uniform
xavier_normal = glorot_normal
kaiming_uniform = he_uniform
kaiming_normal = he_normal

INITIALIZERS: dict[str, Initializer] = {
    "glorot_uniform": glorot_uniform, "glorot_normal": glorot_normal,
    "xavier_uniform": glorot_uniform, "xavier_normal": glorot_normal,
    "he_uniform": he_uniform, "he_normal": he_normal,
    "kaiming_uniform": he_uniform, "kaiming_normal": he_normal,
    "normal": normal, "zeros": zeros, "ones": ones,
}


def get(init: Any) -> Initializer:
    """An initialiser from its name (see INITIALIZERS) or a callable(shape, rng, dtype)."""
    if callable(init):
        return init
    if isinstance(init, str) and init in INITIALIZERS:
        return INITIALIZERS[init]
    raise ValueError(f"init: unknown initialiser {init!r}; expected a callable or one of "
                     f"{sorted(INITIALIZERS)}")


__all__ = ["compute_fans", "glorot_uniform", "glorot_normal", "xavier_uniform",
           "xavier_normal", "he_uniform", "he_normal", "kaiming_uniform", "kaiming_normal",
           "normal", "zeros", "ones", "get", "INITIALIZERS"]
