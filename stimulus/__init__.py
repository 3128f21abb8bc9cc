"""PsychoPy programs: the face experiment and the live feedback display.

They import only :mod:`service.protocol` from the rest of the project; psychopy is imported lazily, so the
schedules and message handling are plain functions tested without a window. Public names are imported on
first use (``lazy_loader``).
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "experiment": ["ExperimentConfig", "ExperimentError", "run_experiment"],
        "display": ["DisplayConfig", "run_display"],
        "messages": ["DisplayState", "what_to_show"],
        "schedule": ["faces_run", "imagery_run", "feedback_run"],
        "orders": ["make_plan", "ensure_plan"],
    },
)
