"""Strict JSON, the one policy for every message, record and manifest: numpy scalars and arrays and paths become
plain JSON values, and a non-finite number (NaN, Infinity, or a literal too large for a float such as 1e400) is an
error on the way out and on the way in, never written and never taken (Python's json accepts and writes them;
strict JSON, browsers and other languages do not).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["NonFiniteError", "jsonable", "dumps", "loads"]


class NonFiniteError(ValueError):
    """A NaN or infinite number where strict JSON has none; the message says where."""


def jsonable(v: Any) -> Any:
    """``json.dumps(..., default=jsonable)``: numpy scalars and arrays, and paths; anything else is an error."""
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, Path):
        return str(v)
    raise TypeError(f"cannot write a {type(v).__name__} as JSON")


def dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` that refuses non-finite numbers (naming the first one's key) and takes numpy values."""
    try:
        return json.dumps(obj, default=jsonable, allow_nan=False, **kwargs)
    except ValueError as exc:
        if "not JSON compliant" not in str(exc):
            raise
        raise NonFiniteError(f"{_first_non_finite(obj) or 'a value'} is not a finite number (strict JSON)") from None


def _refuse_constant(name: str) -> Any:
    raise NonFiniteError(f"{name} is not a number in strict JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NonFiniteError(f"{text} does not fit a finite float")
    return value


def loads(text: str | bytes) -> Any:
    """``json.loads`` that refuses NaN, Infinity and numbers beyond float range."""
    return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)


def _first_non_finite(obj: Any, path: str = "") -> str | None:
    if isinstance(obj, float | np.floating) and not math.isfinite(float(obj)):
        return path or "the value"
    if isinstance(obj, np.ndarray) and obj.dtype.kind == "f" and not np.all(np.isfinite(obj)):
        return path or "an array"
    if isinstance(obj, dict):
        for k, v in obj.items():
            if (found := _first_non_finite(v, f"{path}.{k}" if path else str(k))) is not None:
                return found
    if isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            if (found := _first_non_finite(v, f"{path}[{i}]")) is not None:
                return found
    return None
