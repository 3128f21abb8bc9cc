"""The live path's error policy: a volume or trial that fails is recorded, logged and skipped, and the run goes on.

``FMRIFACE_RAISE=1`` (set by the tests) re-raises instead, so that a test sees the error where it happened; the
switch is read in one place, :func:`service.policy.raise_errors`, shared with intake and the command.
"""

from __future__ import annotations

from service.policy import raise_errors

__all__ = ["VolumeError", "raise_errors"]


class VolumeError(ValueError):
    """A volume the pipeline cannot use (wrong grid, non-finite values)."""

    user_error = True
