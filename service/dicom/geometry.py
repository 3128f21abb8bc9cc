"""DICOM geometry <-> RAS+ affine, with this package's array convention.

DICOM describes a slice by ImageOrientationPatient (IOP: the direction along a row, i.e. of increasing column
index, then the direction down a column), PixelSpacing (row spacing, column spacing) and ImagePositionPatient
(IPP: the centre of the first transmitted pixel), all in LPS millimetres. Our arrays are ``data[i, j, k]`` with
``i`` the column index, ``j`` the row index and ``k`` the slice, so a slice's pixel array is ``data[:, :, k].T``
and the affine's columns are ``row_dir * col_spacing``, ``col_dir * row_spacing`` and the slice step; LPS -> RAS
flips the sign of the first two world axes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.valuerep import format_number_as_ds

__all__ = ["Geometry", "geometry_from_affine", "affine_from_dicom", "mosaic_ipp", "ds_text", "LPS_RAS"]

#: Flip between DICOM LPS and NIfTI RAS world coordinates (its own inverse).
LPS_RAS = np.diag([-1.0, -1.0, 1.0])


def ds_text(value: float) -> str:
    """A DICOM DS string (at most 16 characters) for ``value``, exact where the value allows."""
    value = float(value)
    if value == 0.0:
        return "0"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    text = repr(value)
    return text if len(text) <= 16 else format_number_as_ds(value)


@dataclass(frozen=True)
class Geometry:
    """What a DICOM writer needs to place the slices of one volume."""

    iop: tuple[float, ...]  # 6 direction cosines, LPS
    pixel_spacing: tuple[float, float]  # (row spacing, column spacing) mm
    positions: np.ndarray  # [Z, 3] IPP of each slice, LPS
    slice_step: np.ndarray  # [3] LPS vector from slice k to k+1
    spacing: float  # |slice_step| mm
    normal: np.ndarray  # unit normal cross(row_dir, col_dir)


def geometry_from_affine(affine: np.ndarray, n_slices: int) -> Geometry:
    """Split a RAS+ affine into DICOM orientation, spacing and per-slice positions.

    Raises
    ------
    ValueError
        When the grid is sheared (slices not perpendicular to the image plane): DICOM cannot describe it.
    """
    lin = LPS_RAS @ np.asarray(affine, dtype=np.float64)[:3, :3]
    origin = LPS_RAS @ np.asarray(affine, dtype=np.float64)[:3, 3]
    dx, dy, dz = np.sqrt((lin**2).sum(axis=0))
    if min(dx, dy, dz) <= 0:
        raise ValueError(f"affine has a zero-length axis: {affine.tolist()}")
    row_dir, col_dir, step = lin[:, 0] / dx, lin[:, 1] / dy, lin[:, 2]
    normal = np.cross(row_dir, col_dir)
    if abs(row_dir @ col_dir) > 1e-4 or abs(abs(normal @ step) / dz - 1.0) > 1e-4:
        raise ValueError("a sheared grid (axes not orthogonal) cannot be written as DICOM; resample it first")
    positions = origin[None, :] + np.arange(n_slices)[:, None] * step[None, :]
    return Geometry(
        iop=tuple(float(v) for v in np.concatenate([row_dir, col_dir])),
        pixel_spacing=(float(dy), float(dx)),
        positions=positions,
        slice_step=step,
        spacing=float(dz),
        normal=normal,
    )


def mosaic_ipp(geom: Geometry, rows: int, cols: int, mosaic_rows: int, mosaic_cols: int) -> np.ndarray:
    """The IPP a Siemens mosaic states: the corner of the whole mosaic, not of the first slice.

    Inverse of the correction nibabel's ``MosaicWrapper.image_position`` applies (``doc/theory/dicom_mosaic``).
    """
    row_dir, col_dir = np.array(geom.iop[:3]), np.array(geom.iop[3:])
    dy, dx = geom.pixel_spacing
    shift = col_dir * dy * (mosaic_rows - rows) / 2.0 + row_dir * dx * (mosaic_cols - cols) / 2.0
    return geom.positions[0] - shift


def affine_from_dicom(
    iop: np.ndarray,
    pixel_spacing: np.ndarray,
    positions: np.ndarray,
    spacing: float | None = None,
    normal_hint: np.ndarray | None = None,
) -> np.ndarray:
    """RAS+ affine of a volume whose slices (in array order) sit at ``positions`` [Z, 3] (LPS).

    With one position (a mosaic, or a single slice) the slice step is ``spacing`` along the normal, with the
    sign of ``normal_hint`` (the CSA SliceNormalVector) when given.
    """
    iop = np.asarray(iop, dtype=np.float64)
    row_dir, col_dir = iop[:3], iop[3:]
    dy, dx = (float(v) for v in pixel_spacing)
    normal = np.cross(row_dir, col_dir)
    normal = normal / np.linalg.norm(normal)
    positions = np.atleast_2d(np.asarray(positions, dtype=np.float64))
    if len(positions) > 1:
        step = normal * (float((positions[-1] - positions[0]) @ normal) / (len(positions) - 1))
    else:
        sign = -1.0 if normal_hint is not None and float(np.dot(normal_hint, normal)) < 0 else 1.0
        step = normal * sign * float(spacing if spacing else 1.0)
    lin = np.column_stack([row_dir * dx, col_dir * dy, step])
    out = np.eye(4)
    out[:3, :3] = LPS_RAS @ lin
    out[:3, 3] = LPS_RAS @ positions[0]
    return out


def check_even_spacing(positions: np.ndarray, normal: np.ndarray) -> str | None:
    """A reason when slices are not evenly spaced along the normal (or coincide), else None."""
    if len(positions) < 2:
        return None
    along = (positions - positions[0]) @ normal
    steps = np.diff(along)
    if np.any(np.abs(steps) < 1e-6):
        return "two slices share one position"
    if np.any(np.sign(steps) != np.sign(steps[0])) or np.ptp(steps) > 0.01 * abs(steps[0]) + 1e-4:
        return f"slices are not evenly spaced (steps {np.round(steps, 3).tolist()[:6]} mm)"
    return None
