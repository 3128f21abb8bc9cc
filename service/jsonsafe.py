"""JSON for records and manifests: numpy scalars and arrays and paths become plain JSON values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def jsonable(v: Any) -> Any:
    """``json.dumps(..., default=jsonable)``: numpy scalars and arrays, and paths; anything else is an error."""
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, Path):
        return str(v)
    raise TypeError(f"cannot write a {type(v).__name__} as JSON")
