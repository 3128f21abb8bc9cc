"""Rigid-motion geometry of :mod:`service.motion`: the parameter convention, its matrices and framewise displacement."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["framewise_displacement", "params_from_matrix", "rigid_inverse", "rigid_matrix"]


def rigid_matrix(params: Any, degrees: bool = True) -> np.ndarray:
    """The 4x4 world-space matrix of a rigid motion.

    Parameters
    ----------
    params : array-like (6,)
        ``trans_x, trans_y, trans_z`` in mm, ``rot_x, rot_y, rot_z`` in degrees (radians if ``degrees=False``).

    Returns
    -------
    ndarray (4, 4)
        ``[[R, t], [0, 1]]`` with ``R = Rz @ Ry @ Rx`` (right-handed, about the world axes through the origin):
        a reference point ``x`` is at ``R @ x + t`` in the moved volume.
    """
    tx, ty, tz, rx, ry, rz = np.asarray(params, dtype=np.float64).reshape(6).tolist()
    if degrees:
        rx, ry, rz = math.radians(rx), math.radians(ry), math.radians(rz)
    cx, sx, cy, sy = math.cos(rx), math.sin(rx), math.cos(ry), math.sin(ry)
    cz, sz = math.cos(rz), math.sin(rz)
    # Rz @ Ry @ Rx written out.
    return np.array(
        [
            [cz * cy, cz * sy * sx - sz * cx, cz * sy * cx + sz * sx, tx],
            [sz * cy, sz * sy * sx + cz * cx, sz * sy * cx - cz * sx, ty],
            [-sy, cy * sx, cy * cx, tz],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )


def params_from_matrix(matrix: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rigid_matrix`: the 6 parameters (mm, degrees) of a 4x4 rigid matrix."""
    r = np.asarray(matrix, dtype=np.float64)[:3, :3]
    ry = np.arctan2(-r[2, 0], np.hypot(r[0, 0], r[1, 0]))
    rx = np.arctan2(r[2, 1], r[2, 2])
    rz = np.arctan2(r[1, 0], r[0, 0])
    return np.concatenate([np.asarray(matrix, dtype=np.float64)[:3, 3], np.rad2deg([rx, ry, rz])])


def framewise_displacement(params: Any, radius: float = 50.0) -> np.ndarray:
    """Framewise displacement (Power et al. 2012) in mm.

    Parameters
    ----------
    params : array-like (T, 6)
        Motion parameters per volume (mm, degrees).
    radius : float
        Head radius in mm that turns rotations into displacements (50 mm, as Power et al.).

    Returns
    -------
    ndarray (T,)
        ``FD_t = sum |d trans| + radius * sum |d rot in radians|`` between volumes t - 1 and t; 0 for the first.
    """
    p = np.asarray(params, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 6:
        raise ValueError(f"params must be [T, 6], got shape {p.shape}")
    d = np.abs(np.diff(p, axis=0))
    fd = d[:, :3].sum(axis=1) + radius * np.deg2rad(d[:, 3:]).sum(axis=1)
    return np.concatenate([[0.0], fd])


def rigid_inverse(m: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 matrix: ``[[R^T, -R^T t], [0, 1]]``."""
    inv = np.zeros((4, 4))
    rt = m[:3, :3].T
    inv[:3, :3] = rt
    inv[:3, 3] = -(rt @ m[:3, 3])
    inv[3, 3] = 1.0
    return inv
