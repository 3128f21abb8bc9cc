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
import importlib.util
from pathlib import Path

import numpy as np
from scipy import ndimage

from service.extras import missing_extra

__all__ = [
    "make_anatomy",
    "anatomy_on_grid",
    "coil_shading",
    "grey_matter",
    "scanner_affine",
    "mni_to_scanner",
    "BRAIN_CENTRE_MNI",
]

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


_MNI_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}


def _mni_folder() -> Path:
    """The folder of nilearn's bundled templates, found without importing nilearn (its import takes seconds)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(missing_extra("nilearn", "the twin's anatomy (the MNI152 templates)", "offline"))
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


@functools.lru_cache(maxsize=1)
def _templates() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNI152 (2009a) tissue maps averaged to 2 mm: (gm, wm, brain mask, affine). Loaded once, offline.

    These are the files behind ``nilearn.datasets.load_mni152_template`` / ``_gm_template`` / ``_wm_template``;
    the brain mask is nilearn's rule (template scaled to a maximum of 1, above 0.2), at 2 mm by 2x2x2 averaging.
    """
    import nibabel as nib

    folder = _mni_folder()
    maps = {}
    affine = None
    for key, name in _MNI_FILES.items():
        img = nib.load(str(folder / name))
        data = np.asarray(img.dataobj, dtype=np.float32)
        sx, sy, sz = (d // 2 * 2 for d in data.shape)
        data = data[:sx, :sy, :sz].reshape(sx // 2, 2, sy // 2, 2, sz // 2, 2).mean(axis=(1, 3, 5))
        maps[key] = data / max(float(data.max()), 1e-12)
        affine = img.affine @ np.array([[2.0, 0, 0, 0.5], [0, 2.0, 0, 0.5], [0, 0, 2.0, 0.5], [0, 0, 0, 1]])
    mask = maps["t1"] > 0.2
    return maps["gm"], maps["wm"], mask, np.asarray(affine, dtype=float)


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
def _filtered_templates(voxel_size: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """The EPI-contrast template and a soft brain mask, blurred for a grid of ``voxel_size`` (2 mm template grid)."""
    gm, wm, mask, t_aff = _templates()
    img = _epi_contrast(gm, wm, mask, t_aff)
    # EPI point-spread function plus the anti-aliasing needed to go from 2 mm to the coarser grid.
    sigma_mm = np.sqrt(np.maximum(np.asarray(voxel_size) ** 2 - 2.0**2, 0.0) / (8 * np.log(2)) + 1.2**2)
    img = ndimage.gaussian_filter(img, sigma_mm / 2.0, mode="constant")
    soft_mask = ndimage.gaussian_filter(mask.astype(np.float32), 0.5 * sigma_mm / 2.0, mode="constant")
    return img, soft_mask


@functools.lru_cache(maxsize=4)
def _anatomy(
    shape: tuple[int, int, int], voxel_size: tuple[float, float, float], oblique_deg: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return _anatomy_on(shape, scanner_affine(shape, voxel_size, oblique_deg), voxel_size, None)


def coil_shading(affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """The receive coil's sensitivity on a scanner grid: a smooth shading, brighter towards the back and sides
    of the head, fixed to the scanner (float64 ``shape``)."""
    affine = np.asarray(affine, dtype=np.float64)
    ijk = np.indices(shape, dtype=np.float64).reshape(3, -1)
    w = (affine[:3, :3] @ ijk + affine[:3, 3:]).reshape((3, *shape))
    return 1.0 + 0.12 * np.tanh(-w[1] / 80.0) + 0.06 * (w[0] / 70.0) ** 2 - 0.05 * (w[2] / 60.0)


def _anatomy_on(
    shape: tuple[int, int, int], affine: np.ndarray, voxel_size, head: np.ndarray | None, coil: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The twin's EPI anatomy sampled from the 2 mm templates on any grid, the head moved rigidly by ``head``
    (6 parameters, the service's convention: a head point at world x lies at ``rigid_matrix(head) @ x``);
    ``coil=False`` leaves out the coil shading (:func:`coil_shading`)."""
    from offline.twin.motion import rigid_matrix

    gm, wm, mask, t_aff = _templates()
    img, soft_mask = _filtered_templates(tuple(float(v) for v in voxel_size))
    affine = np.array(affine, dtype=np.float64)
    ijk = np.indices(shape, dtype=np.float64).reshape(3, -1)
    world = affine[:3, :3] @ ijk + affine[:3, 3:]
    head_world = (
        world if head is None else (np.linalg.inv(rigid_matrix(head)) @ np.vstack([world, np.ones(world.shape[1])]))[:3]
    )
    mni = head_world + BRAIN_CENTRE_MNI[:, None]
    t_inv = np.linalg.inv(t_aff)
    tvox = t_inv[:3, :3] @ mni + t_inv[:3, 3:]
    data = ndimage.map_coordinates(img, tvox, order=1, mode="constant", cval=0.0).reshape(shape)
    brain = ndimage.map_coordinates(soft_mask, tvox, order=1, mode="constant", cval=0.0).reshape(shape) > 0.5
    gm_grid = ndimage.map_coordinates(gm * mask, tvox, order=1, mode="constant", cval=0.0).reshape(shape)
    gm_grid = np.clip(gm_grid, 0.0, 1.0).astype(np.float32) * brain

    # Receive-coil sensitivity: a smooth shading, brighter towards the back and sides of the head.
    data = (data * coil_shading(affine, shape)).astype(np.float32) if coil else data.astype(np.float32)
    data.setflags(write=False)
    brain.setflags(write=False)
    affine.setflags(write=False)
    gm_grid.setflags(write=False)
    return data, affine, brain, gm_grid


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
    data, affine, brain, _ = _anatomy(*_key(shape, voxel_size), float(oblique_deg))
    return data.copy(), affine.copy(), brain.copy()


def anatomy_on_grid(
    affine: np.ndarray, shape: tuple[int, int, int], head: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The twin's EPI anatomy on any scanner grid (another session's slab: affine and matrix), with the head
    at pose ``head`` (6 rigid parameters, mm and degrees; None: at rest). Sampled from the 2 mm templates
    directly, not from another grid's image, so a registration between two such volumes is a real one.
    The coil shading stays with the scanner, not the head. Returns ``(data, brain_mask)``."""
    voxel = tuple(float(v) for v in np.linalg.norm(np.asarray(affine, dtype=float)[:3, :3], axis=0))
    head_arr = None if head is None else np.asarray(head, dtype=float)
    data, _, brain, _ = _anatomy_on(tuple(int(v) for v in shape), affine, voxel, head_arr)
    return data.copy(), brain.copy()


def grey_matter(
    shape: tuple[int, int, int] = (64, 64, 36),
    voxel_size: tuple[float, float, float] = (3.0, 3.0, 3.5),
    oblique_deg: float = 0.0,
) -> np.ndarray:
    """Grey-matter probability (float32 in [0, 1], 0 outside the brain mask) on the same grid as make_anatomy."""
    return _anatomy(*_key(shape, voxel_size), float(oblique_deg))[3].copy()


def _key(shape, voxel_size) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    key_shape = tuple(int(s) for s in shape)
    key_vox = tuple(float(v) for v in voxel_size)
    if len(key_shape) != 3 or min(key_shape) < 1:
        raise ValueError(f"shape must be 3 positive integers, got {shape!r}")
    if len(key_vox) != 3 or min(key_vox) <= 0:
        raise ValueError(f"voxel_size must be 3 positive numbers, got {voxel_size!r}")
    return key_shape, key_vox  # type: ignore[return-value]
