"""Turning user values (numpy arrays, Python numbers, lists) into arrays of a required dtype,
with the kind rule API.md states: conversions within a kind, and Python numbers, only."""
from __future__ import annotations

from typing import Any

import numpy as np

from graphc.dtypes import SUPPORTED, float32, int64

_PY_NUMBER_KINDS = {"b": "bif", "i": "if", "f": "f"}


def _is_python_value(value: Any) -> bool:
    """Python numbers, and (nested) lists/tuples of them: values that carry no numpy dtype."""
    if isinstance(value, (bool, int, float)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_python_value(v) for v in value)
    return False


def coerce_array(value: Any, dtype: np.dtype, what: str) -> np.ndarray:
    """`value` as an array of `dtype`, or a TypeError naming `what` when the kind would change."""
    python_value = _is_python_value(value)
    if isinstance(value, np.ndarray):
        # A subclass (np.matrix, np.ma) as its plain data: graphc's ops have numpy's
        # array semantics, not the subclass's (matrix products, masks).
        array = value if type(value) is np.ndarray else value.view(np.ndarray)
    else:
        try:
            array = np.asarray(value)
        except Exception as exc:  # ragged lists, objects numpy refuses
            raise TypeError(f"{what}: cannot convert {type(value).__name__} to an array "
                            f"({exc})") from None
    kind = array.dtype.kind
    if kind not in "bif":
        raise TypeError(f"{what}: expected {dtype} data, got {array.dtype} "
                        f"({type(value).__name__})")
    allowed = _PY_NUMBER_KINDS[kind] if python_value else kind
    if dtype.kind not in allowed:
        raise TypeError(f"{what}: expected {dtype} data, got {array.dtype}; graphc converts "
                        f"only within a kind (cast the array yourself if you mean it)")
    if array.dtype != dtype:
        if kind == "i" and dtype.kind == "i" and array.size:
            info = np.iinfo(dtype)
            if array.min() < info.min or array.max() > info.max:
                raise ValueError(f"{what}: values do not fit in {dtype}")
        array = array.astype(dtype)
    return array


def default_array(value: Any, what: str) -> np.ndarray:
    """An array for a literal: numpy data keeps its dtype, Python floats become float32 and
    Python ints int64 (the graph's defaults)."""
    if isinstance(value, np.generic):
        value = np.asarray(value)
    if isinstance(value, np.ndarray):
        array = value
    else:
        if not _is_python_value(value):
            raise TypeError(f"{what}: expected a number, a list of numbers or a numpy array, "
                            f"got {type(value).__name__}")
        try:
            array = np.asarray(value)
        except ValueError as exc:
            raise ValueError(f"{what}: {exc}") from None
        if array.dtype.kind == "f":
            array = array.astype(float32)
        elif array.dtype.kind == "i":
            array = array.astype(int64)
    if array.dtype not in SUPPORTED:
        names = ", ".join(str(d) for d in SUPPORTED)
        raise TypeError(f"{what}: dtype {array.dtype} is not supported (supported: {names})")
    return array
