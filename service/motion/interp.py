"""Trilinear sampling of one voxel grid at many points, with numpy gathers (helpers of :mod:`service.motion`).

Values outside the grid are zero, and a point up to one voxel outside is interpolated towards zero
(``scipy.ndimage.map_coordinates(order=1, mode="grid-constant", cval=0)`` semantics), so the masked fast path
and the whole-volume resample give the same numbers.
"""

from __future__ import annotations

import numpy as np

__all__ = ["TrilinearSampler", "cubic_sample", "downsample2", "level_affine"]


class TrilinearSampler:
    """Sample volumes of one grid at points given in voxel coordinates (float32 throughout).

    The volume is copied once into a zero-padded buffer (:meth:`load`); :meth:`sample` then needs four
    gathers of adjacent pairs along the last axis and seven linear interpolations.

    Parameters
    ----------
    shape : tuple of int
        The grid ``(X, Y, Z)``.
    """

    def __init__(self, shape: tuple[int, int, int]) -> None:
        self.shape = tuple(int(s) for s in shape)
        px, py, pz = (s + 2 for s in self.shape)
        self._pad = np.zeros((px, py, pz), dtype=np.float32)
        self._flat = self._pad.reshape(-1)
        self._sx, self._sy = py * pz, pz
        # Coordinates are shifted by +1 into the padded grid and clipped to [0, n + 1]; the base corner to [0, n].
        self._hi_coord = np.array(self.shape, dtype=np.float32).reshape(3, 1) + 1.0
        self._last = np.array(self.shape, dtype=np.float32).reshape(3, 1) - 1.0
        self._hi_base = np.array(self.shape, dtype=np.float32).reshape(3, 1)

    def load(self, volume: np.ndarray) -> None:
        """Copy ``volume`` (shape :attr:`shape`) into the padded buffer."""
        self._pad[1:-1, 1:-1, 1:-1] = volume

    def inside(self, coords: np.ndarray) -> np.ndarray:
        """Which of ``coords`` (``[3, N]``) lie inside the grid, ``0 <= c <= n - 1`` on every axis -> bool ``[N]``."""
        ok = (coords >= 0.0).all(axis=0)
        ok &= (coords <= self._last).all(axis=0)
        return ok

    def sample(self, coords: np.ndarray) -> np.ndarray:
        """Values of the loaded volume at ``coords`` (float32 ``[3, N]`` voxel indices) -> float32 ``[N]``.

        ``coords`` is used as scratch space (it is overwritten).
        """
        c = coords
        c += 1.0
        np.maximum(c, 0.0, out=c)
        np.minimum(c, self._hi_coord, out=c)
        base = np.floor(c)
        np.minimum(base, self._hi_base, out=base)
        c -= base  # fractional parts
        i = base.astype(np.intp)
        idx = i[0] * self._sx
        idx += i[1] * self._sy
        idx += i[2]
        fx, fy, fz = c
        flat = self._flat
        c00 = _lerp_pair(flat, idx, fz)
        idx += self._sy
        c01 = _lerp_pair(flat, idx, fz)
        idx += self._sx
        c11 = _lerp_pair(flat, idx, fz)
        idx -= self._sy
        c10 = _lerp_pair(flat, idx, fz)
        c01 -= c00
        c01 *= fy
        c00 += c01
        c11 -= c10
        c11 *= fy
        c10 += c11
        c10 -= c00
        c10 *= fx
        c00 += c10
        return c00

    def sample_affine(self, matrix: np.ndarray, points: np.ndarray, chunk: int = 32768) -> np.ndarray:
        """Values of the loaded volume at ``matrix[:3] @ points`` (homogeneous ``[4, N]``) -> float32 ``[N]``.

        Large point sets go in chunks whose temporaries stay in cache (several times faster for a whole volume).
        """
        m = np.asarray(matrix, dtype=np.float64)[:3].astype(np.float32)
        n = points.shape[1]
        if n <= 2 * chunk:
            return self.sample(m @ points)
        out = np.empty(n, dtype=np.float32)
        for start in range(0, n, chunk):
            out[start : start + chunk] = self.sample(m @ points[:, start : start + chunk])
        return out


def _lerp_pair(flat: np.ndarray, idx: np.ndarray, f: np.ndarray) -> np.ndarray:
    """``flat[idx] + f * (flat[idx + 1] - flat[idx])`` (``idx`` of dtype intp: take converts anything else)."""
    a = flat.take(idx)
    b = flat[1:].take(idx)
    b -= a
    b *= f
    b += a
    return b


def downsample2(volume: np.ndarray) -> np.ndarray:
    """Mean over 2x2x2 blocks (an odd last row, column or slice is dropped), float32."""
    x, y, z = (s // 2 * 2 for s in volume.shape)
    v = volume[:x, :y, :z]
    v = v[0::2] + v[1::2]
    v = v[:, 0::2] + v[:, 1::2]
    v = v[:, :, 0::2] + v[:, :, 1::2]
    v *= np.float32(0.125)
    return v.astype(np.float32, copy=False)


def level_affine(affine: np.ndarray, factor: int) -> np.ndarray:
    """The voxel-to-world affine of a grid downsampled by block means of ``factor`` voxels per axis."""
    scale = np.diag([factor, factor, factor, 1.0])
    scale[:3, 3] = (factor - 1) / 2.0
    return affine @ scale


def cubic_sample(volume: np.ndarray, matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Cubic B-spline values of ``volume`` at ``matrix[:3] @ points`` (homogeneous voxel coordinates ``[4, N]``).

    ``scipy.ndimage.map_coordinates(order=3)`` after one ``spline_filter`` of the volume, zero outside
    (``mode="grid-constant"``, as the trilinear sampler). Unlike trilinear interpolation it does not smooth by an
    amount that depends on the sub-voxel shift.
    """
    from scipy import ndimage

    coords = (np.asarray(matrix, dtype=np.float64)[:3] @ points.astype(np.float64)).astype(np.float32)
    coeffs = ndimage.spline_filter(np.asarray(volume, dtype=np.float32), order=3, mode="grid-constant")
    out = ndimage.map_coordinates(coeffs, coords, order=3, mode="grid-constant", cval=0.0, prefilter=False)
    return out.astype(np.float32, copy=False)
