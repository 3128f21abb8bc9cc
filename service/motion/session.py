"""Registration across sessions: a volume from another day (the head repositioned, the slab prescribed anew, maybe
another matrix or voxel size) to the reference of the first session.

The per-volume tracker (:class:`~service.motion.registration.RigidRegistration`) starts from the previous
volume and captures a few millimetres; a new session's first volume may lie 10 mm and 10 degrees away. So
:func:`register_session` first aligns the intensity centroids (translation), then runs the same Gauss-Newton
coarse to fine (blocks of 4, 2, then single voxels) with more sample points and iterations. Its result, the
session offset, is the composed transform's start: every later volume is tracked from it on its own grid, and
the bundle's voxels are sampled from the live grid through one composed transform (one interpolation).

A registration that fails is refused with what was measured: a residual above ``max_cost`` of the reference's
RMS (another protocol, an empty, constant or flipped volume), too little overlap between the reference's brain
and the live field of view, an offset beyond ``max_mm`` / ``max_deg``, or a volume that fits the reference's
left-right mirror image clearly better (``mirror_ratio``) than the reference: a flipped slab or header. Brains are
nearly symmetric, so a flip is caught only where the images show enough asymmetry (on the twin: at 3 mm voxels,
not at 6 mm).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.motion.geometry import rigid_matrix
from service.motion.registration import RigidRegistration

__all__ = ["SessionRegistration", "SessionRegistrationError", "register_session", "session_registration"]


class SessionRegistrationError(ValueError):
    """A new session's volume that cannot be registered to the reference; the message says what was measured."""

    user_error = True


@dataclass(frozen=True)
class SessionRegistration:
    """The result of :func:`register_session`.

    Attributes
    ----------
    params : ndarray (6,)
        The session offset: reference -> this volume, in the motion convention (mm, degrees, world space).
    cost : float
        RMS residual at the sample points relative to the reference's RMS (about 0.05-0.15 for a good fit).
    overlap : float
        Fraction of the reference's sample points that fall inside the volume's field of view.
    seconds : float
        Wall time of the registration (reported apart from the per-volume latency).
    iterations : int
    """

    params: np.ndarray
    cost: float
    overlap: float
    seconds: float
    iterations: int

    def as_record(self) -> dict[str, Any]:
        """JSON-ready: the offset rounded to 1e-4 mm / degrees."""
        return {
            "offset": [round(float(v), 4) for v in self.params],
            "cost": round(self.cost, 4),
            "overlap": round(self.overlap, 3),
            "seconds": round(self.seconds, 3),
            "iterations": self.iterations,
        }


def session_registration(shape: tuple[int, ...] | None = None) -> RigidRegistration:
    """The wide-capture configuration: three levels (4, 2, 1 voxel blocks), more points and iterations.

    With the reference's ``shape``, a coarse level whose grid would be under 5 blocks along an axis is left out
    (a 16-slice slab of 8 mm voxels keeps blocks of 2 and 1): too few voxels to estimate six parameters from.
    """
    levels, points, iters = (4, 2, 1), (2000, 4000, 6000), (60, 40, 30)
    if shape is not None:
        keep = [i for i, f in enumerate(levels) if f == 1 or min(shape) // f >= 5]
        levels, points, iters = (tuple(v[i] for i in keep) for v in (levels, points, iters))
    return RigidRegistration(levels=levels, n_points=points, max_iter=iters, tol_mm=1e-3, other_grids=True)


def _centroid(data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World centroid of the brighter half of the head (robust to a dim scalp and background)."""
    d = np.asarray(data, dtype=np.float64)
    w = np.where(d > 0.5 * np.percentile(d, 98), d, 0.0)
    total = w.sum()
    if not total > 0:
        return np.zeros(3)
    ijk = (
        np.array(
            [np.tensordot(w.sum(axis=tuple(a for a in range(3) if a != k)), np.arange(d.shape[k]), 1) for k in range(3)]
        )
        / total
    )
    return affine[:3, :3] @ ijk + affine[:3, 3]


def register_session(
    reference: np.ndarray,
    reference_affine: np.ndarray,
    volume: np.ndarray,
    volume_affine: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    max_cost: float = 0.5,
    min_overlap: float = 0.6,
    max_mm: float = 30.0,
    max_deg: float = 20.0,
    mirror_ratio: float = 0.85,
) -> SessionRegistration:
    """Register ``volume`` (any grid) to ``reference``; returns the session offset or raises
    :class:`SessionRegistrationError` naming what was measured."""
    t0 = time.perf_counter()
    vol = np.asarray(volume, dtype=np.float32)
    if vol.ndim != 3:
        raise SessionRegistrationError(f"a session's volume must be 3-D, got shape {vol.shape}")
    finite = np.isfinite(vol)
    if not finite.all():
        raise SessionRegistrationError(f"the volume has {int((~finite).sum())} non-finite voxels")
    spread = float(np.percentile(vol, 99) - np.percentile(vol, 1))
    if not spread > 0:
        raise SessionRegistrationError(f"the volume is empty or constant (1-99% range {spread:g}): nothing to register")
    reg = session_registration(np.shape(reference)).fit(reference, reference_affine, mask)
    start = np.zeros(6)
    start[:3] = _centroid(vol, volume_affine) - _centroid(reg.reference_, reg.affine_)
    params = reg.estimate(vol, init=start, affine=volume_affine)
    cost, iterations = float(reg.cost_), reg.n_iter_
    # A left-right flip is no rigid motion, but a nearly symmetric brain fits its mirror image almost as well:
    # register the volume mirrored about the sagittal plane through its centroid too, and refuse it when the
    # mirror fits clearly better.
    centre = _centroid(vol, volume_affine)
    mirror = np.diag([-1.0, 1.0, 1.0, 1.0])
    mirror[0, 3] = 2.0 * centre[0]
    mirrored = reg.estimate(vol, init=start, affine=mirror @ volume_affine)
    mirrored_cost = float(reg.cost_)
    if mirrored_cost < mirror_ratio * cost and np.all(np.isfinite(mirrored)):
        raise SessionRegistrationError(
            f"the volume fits the reference's left-right mirror image better (residual {mirrored_cost:.3f}) than the"
            f" reference (residual {cost:.3f}): a flipped slab or header; a left-right flip is not a rigid motion"
        )
    finest = reg.levels_[-1]
    coords = (np.linalg.inv(volume_affine) @ rigid_matrix(params) @ finest.affine)[:3] @ finest.points.astype(
        np.float64
    )
    inside = np.all((coords >= 0) & (coords <= np.array(vol.shape)[:, None] - 1), axis=0)
    overlap = float(inside.mean())
    result = SessionRegistration(
        np.asarray(params, dtype=np.float64), cost, overlap, time.perf_counter() - t0, iterations
    )
    shown = ", ".join(f"{v:.2f}" for v in params)
    if overlap < min_overlap:
        raise SessionRegistrationError(
            f"only {overlap:.0%} of the reference's brain falls inside the live field of view (need {min_overlap:.0%});"
            f" offset found [{shown}]: does the slab cover the same brain?"
        )
    if not np.all(np.isfinite(params)) or np.abs(params[:3]).max() > max_mm or np.abs(params[3:]).max() > max_deg:
        raise SessionRegistrationError(
            f"the session offset [{shown}] (mm, degrees) is beyond {max_mm:g} mm / {max_deg:g} degrees"
        )
    if result.cost > max_cost:
        raise SessionRegistrationError(
            f"the registration's residual is {result.cost:.2f} of the reference's RMS (at most {max_cost:g} is a fit);"
            f" offset found [{shown}]: another protocol, a flipped slab, or not the same head?"
        )
    return result
