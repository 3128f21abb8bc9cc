"""The live path's error policy: a volume or trial that fails is recorded, logged and skipped, and the run goes on.

``FMRIFACE_RAISE=1`` (set by the tests) re-raises instead, so that a test sees the error where it happened.
"""

from __future__ import annotations

import os

__all__ = ["VolumeError", "raise_errors"]


class VolumeError(ValueError):
    """A volume the pipeline cannot use (wrong grid, non-finite values)."""

    user_error = True


def raise_errors() -> bool:
    """True when errors must propagate (``FMRIFACE_RAISE=1``) instead of being recorded."""
    return os.environ.get("FMRIFACE_RAISE") == "1"
