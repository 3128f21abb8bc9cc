"""Ground-truth head motion for the twin, in the project's convention, and its application to volumes.

Parameters per volume are ``(trans_x, trans_y, trans_z [mm], rot_x, rot_y, rot_z [deg])``. A point at world
position ``x`` (RAS+ mm, the NIfTI affine's space) in the reference position is at ``R @ x + t`` in the moved
volume, with ``R = Rz(rot_z) @ Ry(rot_y) @ Rx(rot_x)`` (right-handed rotations about the world axes through the
world origin). So the moved volume's value at world ``y`` is the reference value at ``R^T (y - t)``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from offline.twin.config import MotionConfig

__all__ = ["rigid_matrix", "params_from_matrix", "rotation_about", "motion_trace", "MovedGrid"]


def rigid_matrix(params) -> np.ndarray:
    """The 4x4 world transform of motion parameters ``[6]`` (mm, degrees): moved = M @ reference."""
    tx, ty, tz, rx, ry, rz = (float(v) for v in params)
    ax, ay, az = np.deg2rad([rx, ry, rz])
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    r_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    r_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    r_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    m = np.eye(4)
    m[:3, :3] = r_z @ r_y @ r_x
    m[:3, 3] = (tx, ty, tz)
    return m


def params_from_matrix(matrix) -> np.ndarray:
    """The six parameters ``[6]`` (mm, degrees) of a rigid 4x4 matrix, ``rot_y`` within +-90 degrees."""
    m = np.asarray(matrix, dtype=float)
    r = m[:3, :3]
    ry = np.arcsin(np.clip(-r[2, 0], -1.0, 1.0))
    rx = np.arctan2(r[2, 1], r[2, 2])
    rz = np.arctan2(r[1, 0], r[0, 0])
    return np.concatenate([m[:3, 3], np.rad2deg([rx, ry, rz])])


def rotation_about(axis, degrees: float) -> np.ndarray:
    """The 3x3 rotation by ``degrees`` (right-handed) about the unit vector along ``axis`` (Rodrigues)."""
    u = np.asarray(axis, dtype=float)
    u = u / np.linalg.norm(u)
    a = np.deg2rad(degrees)
    k = np.array([[0.0, -u[2], u[1]], [u[2], 0.0, -u[0]], [-u[1], u[0], 0.0]])
    return np.eye(3) + np.sin(a) * k + (1.0 - np.cos(a)) * (k @ k)


def motion_trace(n_volumes: int, cfg: MotionConfig, offset: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Motion parameters ``[n_volumes, 6]`` of one run: an offset, a slow drift and occasional jerks.

    Parameters
    ----------
    n_volumes : int
        Volumes in the run.
    cfg : MotionConfig
        Sizes; every translation is clipped to ``max_mm`` and every rotation to ``max_deg``.
    offset : ndarray [6]
        The head's position at the start of the run (from where the previous run left it).
    rng : numpy.random.Generator
    """
    if not cfg.enabled:
        return np.zeros((n_volumes, 6))
    deg_per_mm = 0.6  # one degree moves cortex about 1 mm at 60 mm from the centre
    unit = np.array([1.0, 1.0, 1.0, deg_per_mm, deg_per_mm, deg_per_mm])
    unit = unit * np.array([0.6, 1.0, 1.0, 1.0, 0.5, 0.5])  # nods (rot_x) and z/y translations dominate
    walk = np.cumsum(rng.standard_normal((n_volumes, 6)), axis=0)
    walk = ndimage.gaussian_filter1d(walk, sigma=8.0, axis=0, mode="nearest")
    walk -= walk[0]
    span = np.abs(walk).max(axis=0) + 1e-9
    trace = walk / span * unit * cfg.drift_mm * rng.uniform(0.5, 1.0, 6)
    n_jerks = rng.poisson(cfg.jerks_per_100_volumes * n_volumes / 100.0)
    for _ in range(n_jerks):
        at = int(rng.integers(1, max(n_volumes, 2)))
        direction = rng.standard_normal(6) * unit
        step = direction / np.linalg.norm(direction) * cfg.jerk_mm * rng.uniform(0.5, 1.5)
        keep = rng.uniform(0.2, 0.7)  # part of the jerk persists, the rest returns over a few volumes
        t = np.arange(n_volumes - at)
        trace[at:] += step * (keep + (1 - keep) * np.exp(-t / 3.0))[:, None]
    trace += offset
    limit = np.array([cfg.max_mm] * 3 + [cfg.max_deg] * 3)
    return np.clip(trace, -limit, limit)


class MovedGrid:
    """Resamples head-frame volumes into the scanner frame for given motion parameters.

    Parameters
    ----------
    affine : ndarray [4, 4]
        Voxel-to-world affine of the scanner grid the volumes are written on.
    shape : tuple
        That grid's shape.
    support : ndarray bool [X, Y, Z]
        Voxels where the moved head can be non-zero (the head dilated by the largest motion); the rest is 0.
    order : int
        Interpolation order (1: trilinear).
    source_affine, source_shape : ndarray [4, 4], tuple, optional
        The head-frame grid the volumes are built on (default: the scanner grid itself; a later session's
        slab samples a head frame on session 1's grid, padded to cover the new slab).
    pose : ndarray [6], optional
        The head's position in this session (the motion convention); the run's motion comes on top of it, so
        the head moves by ``rigid_matrix(params) @ rigid_matrix(pose)``.
    """

    def __init__(
        self,
        affine: np.ndarray,
        shape,
        support: np.ndarray,
        order: int = 1,
        *,
        source_affine: np.ndarray | None = None,
        source_shape=None,
        pose=None,
    ) -> None:
        self.affine = np.asarray(affine, dtype=float)
        self.shape = tuple(shape)
        self.source_affine = self.affine if source_affine is None else np.asarray(source_affine, dtype=float)
        self.source_shape = self.shape if source_shape is None else tuple(source_shape)
        self.inv_affine = np.linalg.inv(self.source_affine)
        self.pose = np.eye(4) if pose is None else rigid_matrix(pose)
        self.order = order
        self.flat = np.flatnonzero(support)
        self.ijk = np.array(np.unravel_index(self.flat, self.shape), dtype=np.float32)
        self._pad = np.zeros(tuple(s + 2 for s in self.source_shape), np.float32)  # one voxel of zeros all round
        self._strides = np.array([self._pad.shape[1] * self._pad.shape[2], self._pad.shape[2], 1])

    def voxel_map(self, params) -> np.ndarray:
        """Voxel-to-voxel matrix: scanner voxel j samples the head-frame volume at ``M @ j``, with
        ``M = inv(A_source) @ inv(rigid(params) @ rigid(pose)) @ A``."""
        return self.inv_affine @ np.linalg.inv(rigid_matrix(params) @ self.pose) @ self.affine

    def move(self, volume: np.ndarray, params, out: np.ndarray | None = None) -> np.ndarray:
        """The volume as the scanner sees it after the head moved by ``params`` (values outside support: 0)."""
        m = self.voxel_map(params)
        coords = m[:3, :3].astype(np.float32) @ self.ijk + m[:3, 3:].astype(np.float32)
        if out is None:
            out = np.zeros(self.shape, np.float32)
        if self.order == 1:
            vals = self._trilinear(volume, coords)
        else:
            vals = ndimage.map_coordinates(
                volume, coords, order=self.order, mode="constant", cval=0.0, prefilter=self.order > 1
            )
        out.reshape(-1)[self.flat] = vals
        return out

    def _trilinear(self, volume: np.ndarray, coords: np.ndarray) -> np.ndarray:
        """Trilinear interpolation, zeros outside the grid (scipy's order 1, mode 'grid-constant'), twice as fast."""
        self._pad[1:-1, 1:-1, 1:-1] = volume
        flat = self._pad.reshape(-1)
        coords += 1.0
        np.clip(coords, 0.0, (np.array(self._pad.shape, np.float32)[:, None] - 1.001), out=coords)
        base = np.floor(coords)
        w = coords - base
        i = base.astype(np.int64)
        sx, sy, _ = self._strides
        idx = i[0] * sx + i[1] * sy + i[2]
        wx, wy, wz = w
        v000, v100 = flat[idx], flat[idx + sx]
        v010, v110 = flat[idx + sy], flat[idx + sx + sy]
        v001, v101 = flat[idx + 1], flat[idx + sx + 1]
        v011, v111 = flat[idx + sy + 1], flat[idx + sx + sy + 1]
        c00 = v000 + wx * (v100 - v000)
        c10 = v010 + wx * (v110 - v010)
        c01 = v001 + wx * (v101 - v001)
        c11 = v011 + wx * (v111 - v011)
        c0 = c00 + wy * (c10 - c00)
        c1 = c01 + wy * (c11 - c01)
        return c0 + wz * (c1 - c0)
