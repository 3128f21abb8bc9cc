"""The fixed part of the Gauss-Newton problem, computed once per reference (helpers of :mod:`service.motion`).

For each pyramid level: the reference on that grid, its world-space gradient, a few thousand well-chosen sample
points inside the (slightly dilated) brain mask, the inverse-compositional Jacobian of the 6 rigid parameters
(translations in mm, rotations in radians) plus a gain and an offset, and the inverse of its Hessian.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from service.motion.interp import downsample2, level_affine

__all__ = ["Level", "auto_mask", "build_levels"]


@dataclass(frozen=True)
class Level:
    """One pyramid level of a fitted registration.

    Attributes
    ----------
    factor : int
        Block size of the downsampling (1 = the reference grid).
    shape : tuple of int
        Grid of this level.
    affine, inv_affine : ndarray (4, 4)
        Voxel-to-world affine of this level and its inverse.
    points : ndarray float32 (4, N)
        Sample points in this level's voxel coordinates (homogeneous: a last row of ones).
    points_world : ndarray float64 (4, N)
        The same points in world mm (homogeneous).
    ref_values : ndarray float32 (N,)
        The reference at the points.
    jacobian_t : ndarray float32 (8, N)
        Transposed Jacobian: 3 translations, 3 rotations (rad), gain, offset.
    hessian_inv : ndarray float64 (8, 8)
        Inverse of ``J^T J``.
    margins : ndarray float32 (N,)
        Each point's distance in voxels to the nearest face of the grid, ascending (points are in this order).
    radius_mm : float
        Largest distance of a point from the world origin.
    mm_per_voxel_min : float
        Smallest singular value of the affine's linear part: a motion of D mm moves voxel coordinates by at most
        ``D / mm_per_voxel_min``.
    ref_mean, ref_rms : float
        Mean and root mean square of ``ref_values``.
    """

    factor: int
    shape: tuple[int, int, int]
    affine: np.ndarray
    inv_affine: np.ndarray
    points: np.ndarray
    points_world: np.ndarray
    ref_values: np.ndarray
    jacobian_t: np.ndarray
    hessian_inv: np.ndarray
    margins: np.ndarray
    radius_mm: float
    mm_per_voxel_min: float
    ref_mean: float
    ref_rms: float


def auto_mask(reference: np.ndarray) -> np.ndarray:
    """A head mask from the reference alone: above 20% of its robust maximum, holes filled, largest component."""
    ref = np.asarray(reference, dtype=np.float32)
    hi = float(np.percentile(ref, 98.0))
    mask = ref > 0.2 * hi
    labels, n = ndimage.label(mask)
    if n > 1:
        sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1))
        mask = labels == (1 + int(np.argmax(sizes)))
    return ndimage.binary_fill_holes(mask)


def build_levels(
    reference: np.ndarray,
    affine: np.ndarray,
    mask: np.ndarray,
    factors: tuple[int, ...],
    n_points: tuple[int, ...],
    seed: int = 0,
) -> list[Level]:
    """The precomputed levels, coarsest first (``factors`` are powers of two, e.g. ``(2, 1)``)."""
    ref = np.asarray(reference, dtype=np.float32)
    weight = ndimage.binary_dilation(mask, iterations=1).astype(np.float32)
    levels = []
    for factor, n in zip(factors, n_points):
        ref_l, w_l, aff_l = ref, weight, np.asarray(affine, dtype=np.float64)
        f = 1
        while f < factor:
            ref_l, w_l, aff_l = downsample2(ref_l), downsample2(w_l), level_affine(aff_l, 2)
            f *= 2
        levels.append(_make_level(ref_l, aff_l, w_l >= 0.5, factor, n, seed))
    return levels


def _make_level(ref: np.ndarray, affine: np.ndarray, mask: np.ndarray, factor: int, n: int, seed: int) -> Level:
    # Gradient per voxel index, then to world mm through the affine: grad_x = A^-T grad_ijk.
    g_ijk = np.stack(np.gradient(ref.astype(np.float64)), axis=0).reshape(3, -1)
    g_world = np.linalg.inv(affine[:3, :3]).T @ g_ijk
    interior = np.zeros(ref.shape, dtype=bool)
    interior[1:-1, 1:-1, 1:-1] = True  # one-sided differences at the border are poor
    candidates = np.flatnonzero(mask & interior)
    if candidates.size < 32:
        raise ValueError(f"the registration mask has only {candidates.size} voxels on a {ref.shape} grid")
    magnitude = np.sqrt((g_world[:, candidates] ** 2).sum(axis=0))
    rng = np.random.default_rng(seed)
    chosen = _choose(candidates, magnitude, n, rng)
    ijk = np.stack(np.unravel_index(chosen, ref.shape), axis=0).astype(np.float64)
    # Off-grid points: both the reference and the moved volume are then interpolated at random sub-voxel
    # positions, so trilinear interpolation's smoothing no longer depends on the motion (no pull to the grid).
    ijk += rng.uniform(-0.5, 0.5, size=ijk.shape)
    # Order the points by their distance (voxels) to the grid's faces: a step that moves no point further than
    # that can only push out a prefix of the points, and only that prefix needs the field-of-view test.
    margin = np.minimum(ijk, np.asarray(ref.shape, dtype=np.float64)[:, None] - 1.0 - ijk).min(axis=0)
    order = np.argsort(margin, kind="stable")
    ijk, margin = ijk[:, order], margin[order]
    world = affine @ np.vstack([ijk, np.ones((1, ijk.shape[1]))])
    values = ndimage.map_coordinates(ref.astype(np.float64), ijk, order=1, mode="nearest")
    g = np.stack([ndimage.map_coordinates(gw.reshape(ref.shape), ijk, order=1, mode="nearest") for gw in g_world])
    x = world[:3]
    # d/d(rotation w about axis a) of the warp at identity is a x X; its image is g . (a x X) = a . (X x g).
    jac = np.vstack([g, np.cross(x.T, g.T).T, values[None], np.ones((1, ijk.shape[1]))])
    hess = jac @ jac.T
    return Level(
        factor=factor,
        shape=tuple(int(s) for s in ref.shape),
        affine=affine,
        inv_affine=np.linalg.inv(affine),
        points=np.vstack([ijk, np.ones((1, ijk.shape[1]))]).astype(np.float32),
        points_world=world,
        ref_values=values.astype(np.float32),
        jacobian_t=jac.astype(np.float32),
        hessian_inv=np.linalg.inv(hess),
        margins=margin.astype(np.float32),
        radius_mm=float(np.sqrt((x**2).sum(axis=0)).max()),
        mm_per_voxel_min=float(np.linalg.svd(affine[:3, :3], compute_uv=False).min()),
        ref_mean=float(values.mean()),
        ref_rms=float(np.sqrt((values**2).mean())),
    )


def _choose(candidates: np.ndarray, magnitude: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` candidates drawn with probability proportional to gradient magnitude (plus a floor).

    Without replacement when there are enough candidates; on small grids with replacement, so a voxel may carry
    several sample points (each gets its own sub-voxel jitter).
    """
    p = magnitude + 1e-3 * float(magnitude.max() + 1e-12)
    p = p / p.sum()
    if candidates.size <= n:
        extra = rng.choice(candidates, size=n - candidates.size, replace=True, p=p)
        return np.sort(np.concatenate([candidates, extra]))
    return np.sort(rng.choice(candidates, size=n, replace=False, p=p))
