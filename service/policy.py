"""The service's error policy, in one place: record and go on, or raise.

In production a volume, trial, inbound message or file that fails is logged, recorded (a volume in
``volumes.jsonl``, a file as an intake event) and skipped, and the run goes on; the ``fmriface`` command prints
a user's error as one line. ``FMRIFACE_RAISE=1`` (set by the tests) re-raises instead, so that a test sees the
error where it happened. The live path (:mod:`service.live.policy`), intake's watcher and the command's front
door all ask :func:`raise_errors`; this module imports nothing of the project, so every room may.
"""

from __future__ import annotations

import os

__all__ = ["raise_errors"]


def raise_errors() -> bool:
    """True when errors must propagate (``FMRIFACE_RAISE=1``) instead of being recorded."""
    return os.environ.get("FMRIFACE_RAISE") == "1"
