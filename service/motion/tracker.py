"""The motion tracker: the one place where a run's volumes are followed against the reference, on the
reference's grid or on a later session's.

The rule it keeps, for the live service, the offline fit, ``fmriface realign`` and the demo's report alike: a
run on the reference's grid is tracked against the reference from its first volume; a run on another grid (a
later session's slab) is first registered to the reference with a wide capture
(:func:`~service.motion.session.register_session`: the session offset), and every one of its volumes is then
tracked on its own grid from the offset, one interpolation from the volume's grid to the reference's. The run's
first volume starts from the offset, each later one from the volume before it (the warm start of
:class:`~service.motion.registration.RigidRegistration`). The motion reported is the motion within the session,
the offset taken out: ``rigid(total) = rigid(motion) @ rigid(offset)``; the framewise displacement of a volume
is measured from the last volume whose motion was kept (:func:`~service.motion.geometry.framewise_displacement`).
See ``docs/motion.md``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from service.motion.geometry import framewise_displacement, params_from_matrix, rigid_matrix
from service.motion.registration import RigidRegistration
from service.motion.session import SessionRegistration, register_session

__all__ = ["MotionTracker", "TrackingError"]

_EYE4 = np.eye(4)


class TrackingError(ValueError):
    """A volume the tracker refuses: on a grid unlike the run's, or with non-finite values where it was sampled."""

    user_error = True


class MotionTracker:
    """Motion of every volume of a run relative to one reference, within the run's session.

    The constructor stores the registration's parameters (those of
    :class:`~service.motion.registration.RigidRegistration`) and the head radius of the framewise displacement;
    :meth:`fit` builds the registration on the reference (any grid may be tracked against it afterwards).

    Parameters
    ----------
    interpolation : {"linear", "cubic"}
        How the volumes are resampled on the reference grid.
    levels, n_points, max_iter : tuple of int
        The registration's pyramid, sample points and iteration caps per level.
    tol_mm : float
        The registration's stopping tolerance.
    warm_start : bool
        Start each volume from the one before it (the run's first volume always starts from the session offset).
    seed : int
        Seed of the registration's sample points.
    fd_radius : float
        Head radius (mm) turning rotations into displacements for the framewise displacement.

    Attributes
    ----------
    registration_ : RigidRegistration
        Fitted on the reference, taking volumes on any grid.
    session_ : dict or None
        The session the run is on: its record (``"offset"``, reference -> session, and whatever the registration
        measured); None on the reference's own grid.
    session_grid_ : tuple (shape, affine) or None
        The session's grid.
    on_reference_grid_ : bool
        A volume on the reference's grid was admitted (:meth:`admit`): the run is settled on that grid.
    motion_ : ndarray (6,)
        The last motion kept, within the session (mm, degrees).
    total_ : ndarray (6,)
        The last estimate, reference -> volume (the offset included).
    fd_ : float
        The last volume's framewise displacement (mm); 0 for the run's first.
    """

    def __init__(
        self,
        interpolation: str = "linear",
        levels: tuple[int, ...] = (1,),
        n_points: tuple[int, ...] = (3000,),
        max_iter: tuple[int, ...] = (20,),
        tol_mm: float = 2e-3,
        warm_start: bool = True,
        seed: int = 0,
        fd_radius: float = 50.0,
    ) -> None:
        self.interpolation = interpolation
        self.levels = levels
        self.n_points = n_points
        self.max_iter = max_iter
        self.tol_mm = tol_mm
        self.warm_start = warm_start
        self.seed = seed
        self.fd_radius = fd_radius

    def fit(self, reference: Any, affine: np.ndarray, mask: np.ndarray | None = None) -> MotionTracker:
        """Fit the registration on ``reference`` (3-D) and its ``affine``; ``mask`` is the brain (registration)
        mask, estimated from the reference when None. The run starts on the reference's grid, unsettled."""
        self.registration_ = RigidRegistration(
            levels=self.levels,
            n_points=self.n_points,
            max_iter=self.max_iter,
            tol_mm=self.tol_mm,
            warm_start=self.warm_start,
            seed=self.seed,
            other_grids=True,
            interpolation=self.interpolation,
        ).fit(reference, affine, mask)
        self.session_: dict[str, Any] | None = None
        self.session_grid_: tuple[tuple[int, ...], np.ndarray] | None = None
        self.on_reference_grid_ = False
        self._offset = _EYE4  # rigid(offset): turns a motion within the session back into a total
        self._inverse: np.ndarray | None = None  # its inverse, None when there is no offset to take out
        self._start: np.ndarray | None = None  # where the next volume starts (None: the registration's warm start)
        self._have_motion = False  # the FD needs a previous volume's motion
        self.motion_ = np.zeros(6)
        self.total_ = np.zeros(6)
        self.fd_ = 0.0
        return self

    # --- grids and sessions ------------------------------------------------------------------------------

    def grid_of(self, shape: tuple[int, ...], affine: np.ndarray) -> str:
        """``reference`` (the reference's grid), ``session`` (the session's grid) or ``other``."""
        if self.registration_.on_reference_grid(shape, affine):
            return "reference"
        if self.session_grid_ is not None:
            s_shape, s_affine = self.session_grid_
            if tuple(shape) == s_shape and np.allclose(affine, s_affine, atol=1e-3):
                return "session"
        return "other"

    def admit(self, shape: tuple[int, ...], affine: np.ndarray) -> str:
        """Admit a volume of a live run by its grid: ``reference``, ``session``, or ``new`` (another grid while the
        run has none yet: register it with :meth:`register` and take it with :meth:`set_session` first).

        A run stays on one grid: the first volume on the reference's grid settles it there, and a registered
        session keeps it on the session's; a volume on any other grid raises :class:`TrackingError`.
        """
        grid = self.grid_of(shape, affine)
        if grid == "other":
            if self.session_ is not None or self.on_reference_grid_:
                ref = self.session_grid_[0] if self.session_ is not None else self.registration_.reference_.shape
                raise TrackingError(
                    f"volume has shape {tuple(shape)} and a grid unlike this run's (shape {ref}): another"
                    " protocol in the middle of the run?"
                )
            return "new"
        if grid == "reference":
            if self.session_ is not None:
                raise TrackingError(
                    "volume is on the bundle's grid, but this run's volumes are on another session's grid"
                )
            self.on_reference_grid_ = True
        return grid

    def register(self, volume: Any, affine: np.ndarray) -> SessionRegistration:
        """Register ``volume`` (3-D, on any grid: a session's first volume, or the mean of one of its runs) to the
        reference with the wide capture; raises :class:`~service.motion.session.SessionRegistrationError` with
        what was measured. The session is taken with :meth:`set_session`."""
        reg = self.registration_
        return register_session(reg.reference_, reg.affine_, volume, affine, reg.mask_)

    def set_session(
        self,
        offset: Any,
        grid: tuple[tuple[int, ...], np.ndarray] | None = None,
        record: dict[str, Any] | None = None,
    ) -> None:
        """Track what follows on a session's grid: the next volume starts from ``offset`` (reference -> session)
        and every motion is reported with the offset taken out.

        ``grid`` is the session's ``(shape, affine)``; ``record`` what :attr:`session_` keeps (default: the
        offset). ``offset`` None: a run on the reference's own grid, whose first volume starts from zero.
        """
        if offset is None:
            self.session_ = self.session_grid_ = None
            self._offset, self._inverse = _EYE4, None
            self._start = np.zeros(6)
            return
        start = np.asarray(offset, dtype=np.float64)
        self.session_ = dict(record) if record is not None else {"offset": start.tolist()}
        self.session_grid_ = None if grid is None else (tuple(grid[0]), np.asarray(grid[1], dtype=np.float64))
        self._offset = rigid_matrix(start)
        self._inverse = np.linalg.inv(self._offset)
        self._start = start

    # --- tracking ---------------------------------------------------------------------------------------

    def track(
        self,
        volume: Any,
        mask: np.ndarray | None = None,
        *,
        affine: np.ndarray | None = None,
        resample: bool = True,
        finite: bool = False,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Track one volume: ``(motion [6] within the session, values)``.

        ``volume`` is a 3-D array on ``affine``'s grid, or an object with ``.data`` and ``.affine``. With
        ``resample``, ``values`` are the volume resampled on the reference grid at ``mask``'s voxels
        (``np.flatnonzero`` order), or the whole realigned volume without a mask; else None. The volume is copied
        into the sampler once. ``finite``: a volume whose values are not all finite raises :class:`TrackingError`
        before its motion is kept. Afterwards :attr:`motion_`, :attr:`total_` and :attr:`fd_` describe it.
        """
        reg = self.registration_
        if resample:
            total, values = reg.estimate_resample(volume, mask, init=self._start, affine=affine)
        else:
            total, values = reg.estimate(volume, init=self._start, affine=affine), None
        self._start = None
        if finite and not np.all(np.isfinite(values)):
            raise TrackingError("volume has non-finite values inside the mask")
        motion = total if self._inverse is None else params_from_matrix(rigid_matrix(total) @ self._inverse)
        first, self._have_motion = not self._have_motion, True
        self.fd_ = 0.0 if first else float(framewise_displacement(np.stack([self.motion_, motion]), self.fd_radius)[-1])
        self.motion_ = np.asarray(motion, np.float64)
        self.total_ = total
        return self.motion_, values

    def restore(self, motion: Any, *, settle: bool = True) -> None:
        """Take up a resumed run after a volume whose motion (within the session) was recorded: the next volume
        starts from it (composed with the session's offset) and its framewise displacement is measured from it.

        Call :meth:`set_session` first when the run is on a session's grid. ``settle``: the volume settles a run
        without a session on the reference's grid (as :meth:`admit` does).
        """
        self.motion_ = np.asarray(motion, np.float64)
        self._start = params_from_matrix(rigid_matrix(self.motion_) @ self._offset)
        self._have_motion = True
        if settle:
            self.on_reference_grid_ = self.session_ is None
