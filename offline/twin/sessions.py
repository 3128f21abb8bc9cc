"""The twin's sessions: each on its own slab, with the head in its own position.

Session 1 is the reference: the ``[grid]`` slab and the head at rest, exactly as a one-session twin. Every later
session ``s`` has

- a slab prescription ``slab_s`` (a rigid transform of the scanner's world, rotation about the isocentre): its
  grid's affine is ``A_s = rigid_matrix(slab_s) @ scanner_affine(matrix_s, voxel_s, oblique)``;
- a head pose ``head_s`` (the motion convention: a head point at world ``x`` at rest lies at
  ``rigid_matrix(head_s) @ x``), with each volume's within-session motion ``m_t`` on top, so the head lies at
  ``rigid_matrix(m_t) @ rigid_matrix(head_s)``: the transform from session 1's reference to volume ``t``.

The run is built in the head's frame (BOLD, drift, physiological noise: the same brain, responsive voxels and
code as session 1) on session 1's grid, padded so that it covers whatever the new slab sees, and moved onto the
session's grid in one interpolation (``[motion] order``): voxel ``j`` of grid ``s`` samples the head frame at
``inv(A_pad) @ inv(rigid(m_t) @ rigid(head_s)) @ A_s @ j``. The coil shading stays with the scanner
(:func:`offline.twin.anatomy.coil_shading` on the session's grid), thermal noise is added on that grid.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from offline.twin.anatomy import _anatomy_on, coil_shading, scanner_affine
from offline.twin.bold import Subject
from offline.twin.config import SimulateConfig
from offline.twin.motion import MovedGrid, params_from_matrix, rigid_matrix, rotation_about

__all__ = ["SessionGeometry", "draw_sessions", "session_subject"]


@dataclass(frozen=True)
class SessionGeometry:
    """Where one session lies: its grid (affine, shape, voxel size), slab prescription and head pose."""

    session: int
    affine: np.ndarray  # [4, 4] voxel -> world (RAS+ mm)
    shape: tuple[int, int, int]
    voxel_size: tuple[float, float, float]
    slab: np.ndarray  # [6] the slab's rigid transform of the world (mm, degrees), applied to the prescription
    head: np.ndarray  # [6] the head's pose relative to session 1 at rest (mm, degrees)

    def as_record(self, subject: str) -> dict:
        """The ground truth written to ``derivatives/twin/sub-XX/ses-YY/sub-XX_ses-YY_session.json``."""
        return {
            "subject": subject,
            "session": self.session,
            "reference_session": 1,
            "shape": list(self.shape),
            "voxel_size": [float(v) for v in self.voxel_size],
            "affine": np.round(self.affine, 6).tolist(),
            "slab": [round(float(v), 6) for v in self.slab],
            "head": [round(float(v), 6) for v in self.head],
            "convention": (
                "motion convention (docs/motion.md): mm and degrees; head: a head point at world x in session 1 at"
                " rest lies at rigid_matrix(head) @ x, and volume t of a run at rigid_matrix(m_t) @ rigid_matrix(head)"
                " with m_t that run's *_motion.tsv row; slab: the affine is rigid_matrix(slab) @ the prescription"
                " without it"
            ),
        }


def _draw(rng: np.random.Generator, max_mm: float, max_deg: float) -> np.ndarray:
    """A rigid transform of ``max_mm / 2`` to ``max_mm`` in a random direction and ``max_deg / 2`` to ``max_deg``
    about a random axis through the origin, as six parameters."""
    direction = rng.standard_normal(3)
    axis = rng.standard_normal(3)
    shift = direction / np.linalg.norm(direction) * max_mm * rng.uniform(0.5, 1.0)
    m = np.eye(4)
    m[:3, :3] = rotation_about(axis, max_deg * rng.uniform(0.5, 1.0))
    m[:3, 3] = shift
    return params_from_matrix(m)


def draw_sessions(cfg: SimulateConfig, affine: np.ndarray) -> list[SessionGeometry]:
    """Every session's grid and head pose (session 1: ``affine``, the ``[grid]`` slab, the head at rest).

    Each later session draws from its own stream ``[seed, 8, session]``, so adding sessions leaves the earlier
    ones alone.
    """
    g, ses = cfg.grid, cfg.sessions
    first = SessionGeometry(1, np.asarray(affine, float), g.shape, g.voxel_size, np.zeros(6), np.zeros(6))
    out = [first]
    shape = tuple(int(v) for v in (ses.matrix or g.shape))
    voxel = tuple(float(v) for v in (ses.voxel_size or g.voxel_size))
    for s in range(2, cfg.paradigm.sessions + 1):
        rng = np.random.default_rng([cfg.seed, 8, s])
        slab = _draw(rng, ses.slab_max_mm, ses.slab_max_deg)
        head = _draw(rng, ses.head_max_mm, ses.head_max_deg)
        a = rigid_matrix(slab) @ scanner_affine(shape, voxel, g.oblique_deg)
        out.append(SessionGeometry(s, a, shape, voxel, slab, head))  # type: ignore[arg-type]
    return out


def session_subject(
    base: Subject,
    cfg: SimulateConfig,
    affine: np.ndarray,
    responsive: np.ndarray,
    geometry: SessionGeometry,
    motions: list[np.ndarray],
) -> Subject:
    """The twin as a later session's scanner sees it: the same brain, code and responsive voxels (``base``,
    session 1's, on ``affine``) in a head frame padded to cover the session's slab under every pose of
    ``motions`` (the session's runs), moved onto the session's grid."""
    shape1 = np.array(base.head.shape)
    inv1 = np.linalg.inv(affine)
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in geometry.shape], indexing="ij")).reshape(3, -1)
    corners = np.vstack([corners, np.ones(corners.shape[1])])
    lo, hi = np.zeros(3), shape1 - 1.0
    for m in np.concatenate(motions) if motions else np.zeros((1, 6)):
        src = (inv1 @ np.linalg.inv(rigid_matrix(m) @ rigid_matrix(geometry.head)) @ geometry.affine @ corners)[:3]
        lo, hi = np.minimum(lo, src.min(axis=1)), np.maximum(hi, src.max(axis=1))
    pad_lo = np.ceil(-lo).astype(int) + 2
    shape_p = tuple(int(v) for v in (shape1 + pad_lo + np.ceil(hi - (shape1 - 1)).astype(int) + 2))
    shift = np.eye(4)
    shift[:3, 3] = -pad_lo
    affine_p = affine @ shift
    anatomy, _, brain, _ = _anatomy_on(shape_p, affine_p, cfg.grid.voxel_size, None, coil=False)
    resp_p = np.zeros(shape_p, dtype=bool)
    ri, rj, rk = np.nonzero(responsive)  # C order: the order of base's responsive voxels
    resp_flat = np.ravel_multi_index((ri + pad_lo[0], rj + pad_lo[1], rk + pad_lo[2]), shape_p)
    resp_p.reshape(-1)[resp_flat] = True
    threshold = float(base.s0.min())  # session 1's head: anatomy above 2% of its maximum
    head = (anatomy >= threshold) | resp_p
    head_flat = np.flatnonzero(head)
    pos = np.full(head.size, -1)
    pos[head_flat] = np.arange(head_flat.size)
    grid = MovedGrid(
        geometry.affine,
        geometry.shape,
        np.ones(geometry.shape, dtype=bool),
        order=cfg.motion.order,
        source_affine=affine_p,
        source_shape=shape_p,
        pose=geometry.head,
    )
    return dataclasses.replace(
        base,
        s0=anatomy.reshape(-1)[head_flat].astype(np.float32),
        head=head,
        brain_in_head=pos[np.flatnonzero(brain & head)],
        resp_in_head=pos[resp_flat],
        grid=grid,
        coil=coil_shading(geometry.affine, geometry.shape).astype(np.float32),
    )
