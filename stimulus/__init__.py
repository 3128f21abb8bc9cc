"""PsychoPy programs: the face experiment and the live feedback display.

They import only :mod:`service.protocol` from the rest of the project; psychopy is imported lazily, so the
schedules and message handling are plain functions tested without a window. Public names are imported on
first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ExperimentConfig": "stimulus.experiment",
    "ExperimentError": "stimulus.experiment",
    "run_experiment": "stimulus.experiment",
    "DisplayConfig": "stimulus.display",
    "run_display": "stimulus.display",
    "DisplayState": "stimulus.messages",
    "what_to_show": "stimulus.messages",
    "faces_run": "stimulus.schedule",
    "imagery_run": "stimulus.schedule",
    "feedback_run": "stimulus.schedule",
    "make_plan": "stimulus.orders",
    "ensure_plan": "stimulus.orders",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return __all__
