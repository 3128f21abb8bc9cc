"""The twin's anatomy: an EPI-like volume, its brain mask and a scanner-like affine, from nilearn's MNI152.

The bundled MNI152 (2009a, 2 mm) tissue maps give grey matter, white matter and (the rest of the brain mask)
cerebrospinal fluid. An echo-planar image weights them the T2* way round (CSF bright, grey matter in between,
white matter darker), is blurred by its point-spread function, shades slowly with the coil's sensitivity and
loses signal where air meets tissue (orbitofrontal cortex, temporal poles). The grid is a typical 64x64x36 axial
EPI at 3x3x3.5 mm whose world origin (RAS+, mm) sits near the centre of the brain, as the scanner's isocentre
would after the operator centres the slab, so rigid motion rotates the head about a point inside it.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

__all__ = ["make_anatomy", "scanner_affine", "mni_to_scanner", "BRAIN_CENTRE_MNI"]

#: MNI position (mm) of the scanner's world origin: roughly the centre of the brain (between the thalami).
BRAIN_CENTRE_MNI = np.array([0.0, -18.0, 16.0])

# T2*-weighted EPI contrast (arbitrary scanner units before the twin's int16 scaling).
_CSF, _GM, _WM = 1250.0, 900.0, 680.0
# Susceptibility dropout: (MNI centre mm, radius mm, depth 0..1).
_DROPOUTS = (
    ((0.0, 38.0, -22.0), 14.0, 0.75),  # orbitofrontal, above the frontal sinus
    ((-40.0, 12.0, -34.0), 11.0, 0.6),  # left temporal pole
    ((40.0, 12.0, -34.0), 11.0, 0.6),  # right temporal pole
    ((0.0, -8.0, -40.0), 9.0, 0.3),  # around the sphenoid sinus / ventral brainstem
)


def _rotation_x(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def scanner_affine(
    shape: tuple[int, int, int] = (64, 64, 36),
    voxel_size: tuple[float, float, float] = (3.0, 3.0, 3.5),
    oblique_deg: float = 0.0,
) -> np.ndarray:
    """The voxel-to-world affine (RAS+, mm) of an axial EPI slab centred on the world origin.

    Parameters
    ----------
    shape, voxel_size : tuple
        The grid and its voxel size in mm.
    oblique_deg : float
        Tilt of the slab about the left-right axis (an AC-PC-like oblique acquisition); 0 for a true axial.

    Returns
    -------
    affine : ndarray [4, 4]
        The grid's centre lands at the world origin (offset by half a voxel, as scanners place it).
    """
    linear = _rotation_x(oblique_deg) @ np.diag(np.asarray(voxel_size, dtype=float))
    centre = (np.asarray(shape, dtype=float) - 1.0) / 2.0
    affine = np.eye(4)
    affine[:3, :3] = linear
    # Scanners put the isocentre on the voxel corner next to the centre: shift by half a voxel in-plane.
    affine[:3, 3] = -linear @ (centre + np.array([0.5, 0.5, 0.0]))
    return affine


def mni_to_scanner(mni_mm: np.ndarray) -> np.ndarray:
    """World (scanner) coordinates of MNI positions ``[..., 3]`` (the twin's head is upright at rest)."""
    return np.asarray(mni_mm, dtype=float) - BRAIN_CENTRE_MNI


@functools.lru_cache(maxsize=1)
def _templates() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNI152 T1-space tissue maps at 2 mm: (gm, wm, brain mask, affine). Loaded once, offline."""
    from nilearn import datasets

    mask_img = datasets.load_mni152_brain_mask(resolution=2)
    mask = np.asarray(mask_img.get_fdata(), dtype=np.float32) > 0
    gm = np.asarray(datasets.load_mni152_gm_template(resolution=2).get_fdata(), dtype=np.float32)
    wm = np.asarray(datasets.load_mni152_wm_template(resolution=2).get_fdata(), dtype=np.float32)
    return gm, wm, mask, np.asarray(mask_img.affine, dtype=float)


def _epi_contrast(gm: np.ndarray, wm: np.ndarray, mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """EPI intensities on the template grid: tissue mix, skull/scalp residual, dropout."""
    gm = np.clip(gm, 0.0, 1.0) * mask
    wm = np.clip(wm, 0.0, 1.0) * mask
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0) * mask
    img = _CSF * csf + _GM * gm + _WM * wm
    # A faint shell outside the brain: fat-suppressed scalp and meninges are dim but not black in EPI.
    dist = ndimage.distance_transform_edt(~mask, sampling=2.0)
    img += 90.0 * np.exp(-(((dist - 9.0) / 4.0) ** 2)) * (dist > 0)
    ijk = np.indices(mask.shape, dtype=np.float32).reshape(3, -1)
    xyz = (affine[:3, :3] @ ijk + affine[:3, 3:]).reshape((3, *mask.shape))
    gain = np.ones(mask.shape, dtype=np.float32)
    for centre, radius, depth in _DROPOUTS:
        d2 = sum((xyz[a] - centre[a]) ** 2 for a in range(3))
        gain *= 1.0 - depth * np.exp(-d2 / (2.0 * radius**2))
    return (img * gain).astype(np.float32)


@functools.lru_cache(maxsize=4)
def _anatomy(
    shape: tuple[int, int, int], voxel_size: tuple[float, float, float], oblique_deg: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    gm, wm, mask, t_aff = _templates()
    img = _epi_contrast(gm, wm, mask, t_aff)
    # EPI point-spread function plus the anti-aliasing needed to go from 2 mm to the coarser grid.
    sigma_mm = np.sqrt(np.maximum(np.asarray(voxel_size) ** 2 - 2.0**2, 0.0) / (8 * np.log(2)) + 1.2**2)
    img = ndimage.gaussian_filter(img, sigma_mm / 2.0, mode="constant")
    soft_mask = ndimage.gaussian_filter(mask.astype(np.float32), 0.5 * sigma_mm / 2.0, mode="constant")

    affine = scanner_affine(shape, voxel_size, oblique_deg)
    ijk = np.indices(shape, dtype=np.float64).reshape(3, -1)
    world = affine[:3, :3] @ ijk + affine[:3, 3:]
    mni = world + BRAIN_CENTRE_MNI[:, None]
    t_inv = np.linalg.inv(t_aff)
    tvox = t_inv[:3, :3] @ mni + t_inv[:3, 3:]
    data = ndimage.map_coordinates(img, tvox, order=1, mode="constant", cval=0.0).reshape(shape)
    brain = ndimage.map_coordinates(soft_mask, tvox, order=1, mode="constant", cval=0.0).reshape(shape) > 0.5

    # Receive-coil sensitivity: a smooth shading, brighter towards the back and sides of the head.
    w = world.reshape((3, *shape))
    bias = 1.0 + 0.12 * np.tanh(-w[1] / 80.0) + 0.06 * (w[0] / 70.0) ** 2 - 0.05 * (w[2] / 60.0)
    data = (data * bias).astype(np.float32)
    data.setflags(write=False)
    brain.setflags(write=False)
    affine.setflags(write=False)
    return data, affine, brain


def make_anatomy(
    shape: tuple[int, int, int] = (64, 64, 36),
    voxel_size: tuple[float, float, float] = (3.0, 3.0, 3.5),
    oblique_deg: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An EPI-like volume of the twin's brain on a scanner grid.

    Parameters
    ----------
    shape : tuple of 3 int
        Grid size (x, y, z); the default is a typical 64x64x36 axial EPI.
    voxel_size : tuple of 3 float
        Voxel size in mm.
    oblique_deg : float
        Slab tilt about the left-right axis in degrees (0: true axial).

    Returns
    -------
    data : ndarray float32 [X, Y, Z]
        Noise-free EPI intensities (CSF about 1250, grey matter about 900, white matter about 680 before coil
        shading; dim scalp; near 0 outside the head).
    affine : ndarray float64 [4, 4]
        Voxel to world (RAS+, mm); the world origin is near the centre of the brain.
    brain_mask : ndarray bool [X, Y, Z]
        The MNI152 brain mask on this grid.

    Examples
    --------
    >>> data, affine, mask = make_anatomy((20, 24, 16), (9.0, 9.0, 9.0))  # doctest: +SKIP
    """
    key_shape = tuple(int(s) for s in shape)
    key_vox = tuple(float(v) for v in voxel_size)
    if len(key_shape) != 3 or min(key_shape) < 1:
        raise ValueError(f"shape must be 3 positive integers, got {shape!r}")
    if len(key_vox) != 3 or min(key_vox) <= 0:
        raise ValueError(f"voxel_size must be 3 positive numbers, got {voxel_size!r}")
    data, affine, brain = _anatomy(key_shape, key_vox, float(oblique_deg))  # type: ignore[arg-type]
    return data.copy(), affine.copy(), brain.copy()
