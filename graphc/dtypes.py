"""Dtypes graphc supports, their normalisation and numpy-style promotion."""
from __future__ import annotations

from typing import Any

import numpy as np

float32 = np.dtype("float32")
float64 = np.dtype("float64")
int32 = np.dtype("int32")
int64 = np.dtype("int64")
bool_ = np.dtype("bool")

SUPPORTED: tuple[np.dtype, ...] = (bool_, int32, int64, float32, float64)
SHORT_NAMES = {bool_: "bool", int32: "i32", int64: "i64", float32: "f32", float64: "f64"}

# Ordering of kinds: a weak Python scalar of a lower kind adopts the tensor's dtype.
_KIND_RANK = {"b": 0, "i": 1, "f": 2}


def as_dtype(value: Any, argument: str = "dtype") -> np.dtype:
    """Turns a graphc/numpy dtype, a numpy scalar type or a string into a supported dtype."""
    if value is bool:
        return bool_
    if value is int:
        return int64
    if value is float:
        return float64
    try:
        dt = np.dtype(value)
    except TypeError as exc:
        raise TypeError(f"{argument}: {value!r} is not a dtype") from exc
    if dt not in SUPPORTED:
        names = ", ".join(str(d) for d in SUPPORTED)
        raise TypeError(f"{argument}: dtype {dt} is not supported (supported: {names})")
    return dt


def kind_rank(dtype: np.dtype) -> int:
    return _KIND_RANK[dtype.kind]


def is_float(dtype: np.dtype) -> bool:
    return dtype.kind == "f"


def is_int(dtype: np.dtype) -> bool:
    return dtype.kind == "i"


def promote(*dtypes: np.dtype) -> np.dtype:
    """numpy's promotion among the supported dtypes (int32 with float32 gives float64)."""
    return as_dtype(np.result_type(*dtypes))


def float_for(dtype: np.dtype) -> np.dtype:
    """The float dtype a float-only function computes in for this input dtype (numpy's rule)."""
    if dtype.kind == "f":
        return dtype
    return float32 if dtype == bool_ else float64


def weak_scalar_dtype(value: bool | int | float, other: np.dtype) -> np.dtype:
    """The dtype of a Python scalar beside a tensor of dtype `other` (NEP 50 'weak' scalars)."""
    own = bool_ if isinstance(value, bool) else int64 if isinstance(value, int) else float64
    if kind_rank(own) <= kind_rank(other):
        return other
    return own


def short_name(dtype: np.dtype) -> str:
    return SHORT_NAMES.get(dtype, str(dtype))
