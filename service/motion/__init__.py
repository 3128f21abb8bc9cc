"""Rigid-body motion correction of EPI volumes: Gauss-Newton registration on a coarse-to-fine pyramid of sample
points, trilinear sampling and the conventions of its six parameters (see
:mod:`service.motion.registration` and ``docs/architecture.md``), and the one tracker of a run's motion across
sessions (:class:`MotionTracker`, ``docs/motion.md``).

The pieces the registration is built from (samplers, sample-point pyramids, level affines) stay importable from
their modules. Names are imported on first use (``lazy_loader``).
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "geometry": ["framewise_displacement", "params_from_matrix", "rigid_inverse", "rigid_matrix"],
        "registration": ["GridMismatchError", "RigidRegistration", "realign_run"],
        "session": ["SessionRegistration", "SessionRegistrationError", "register_session", "session_registration"],
        "tracker": ["MotionTracker", "TrackingError"],
    },
)
