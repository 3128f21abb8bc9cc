"""Rigid-body motion correction of EPI volumes: Gauss-Newton registration on a coarse-to-fine pyramid of sample
points, trilinear sampling and the conventions of its six parameters (see
:mod:`service.motion.registration` and ``docs/architecture.md``), and the one tracker of a run's motion across
sessions (:class:`MotionTracker`, ``docs/motion.md``).
"""

from service.motion.geometry import framewise_displacement, params_from_matrix, rigid_inverse, rigid_matrix
from service.motion.interp import TrilinearSampler, cubic_sample, downsample2, level_affine
from service.motion.points import Level, auto_mask, build_levels
from service.motion.registration import GridMismatchError, RigidRegistration, realign_run
from service.motion.session import SessionRegistration, SessionRegistrationError, register_session, session_registration
from service.motion.tracker import MotionTracker, TrackingError

__all__ = [
    "framewise_displacement",
    "params_from_matrix",
    "rigid_inverse",
    "rigid_matrix",
    "TrilinearSampler",
    "cubic_sample",
    "downsample2",
    "level_affine",
    "Level",
    "auto_mask",
    "build_levels",
    "GridMismatchError",
    "RigidRegistration",
    "realign_run",
    "SessionRegistration",
    "SessionRegistrationError",
    "register_session",
    "session_registration",
    "MotionTracker",
    "TrackingError",
]
