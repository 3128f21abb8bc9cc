"""Value access for DICOM parsing: functional groups, pixel data with its length check, scaling, geometry checks."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

from service.volume import CorruptFileError, IncompleteFileError, UnsupportedFileError

__all__ = [
    "group_value",
    "first_item",
    "philips_scale_slope",
    "pixel_values",
    "checked_geometry",
    "blank_frames",
    "scale_factors",
    "apply_scale",
    "to_int",
]

_PHILIPS = ("Philips MR Imaging DD 001", "Philips MR Imaging DD 005")


_UNSET = object()


@functools.cache
def _tag(keyword: str) -> int:
    return int(tag_for_keyword(keyword))


def group_value(ds: Dataset, frame: Dataset | None, seq: str, keyword: str, shared: object = _UNSET):
    """A functional-group value: per-frame first, then shared (pass ``shared`` when known), then the top level."""
    seq_tag, tag = _tag(seq), _tag(keyword)
    if shared is _UNSET:
        shared = first_item(ds, "SharedFunctionalGroupsSequence")
    for holder in (frame, shared):
        if holder is None:
            continue
        elem = holder.get(seq_tag)
        if elem is not None and elem.value:
            inner = elem.value[0].get(tag)
            if inner is not None:
                return inner.value
    elem = ds.get(tag)
    return None if elem is None else elem.value


def first_item(ds: Dataset, keyword: str) -> Dataset | None:
    """The first item of sequence ``keyword`` in ``ds``, or None when it is absent or empty."""
    seq = ds.get(keyword)
    return seq[0] if seq else None


def philips_scale_slope(holder: Dataset) -> float | None:
    """Philips' private scale slope (2005,xx0E) of ``holder``, searching nested DD 005 items; None when absent."""
    for creator in _PHILIPS:
        try:
            block = holder.private_block(0x2005, creator)
        except KeyError:
            continue
        if creator.endswith("001") and 0x0E in block:
            return float(block[0x0E].value)
        if creator.endswith("005") and 0x0F in block and block[0x0F].value:
            value = philips_scale_slope(block[0x0F].value[0])
            if value is not None:
                return value
    return None


def pixel_values(ds: Dataset, path: Path, n_frames: int) -> np.ndarray:
    """The stored pixel values ``[n_frames, rows, cols]`` in the file's own integer type, unscaled.

    Raises IncompleteFileError for pixel data not (yet) all there, CorruptFileError for a bad matrix, pixel
    format or surplus bytes, UnsupportedFileError for a compressed transfer syntax.
    """
    rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    bits = int(ds.get("BitsAllocated") or 0)
    if rows <= 0 or cols <= 0:
        raise CorruptFileError(path, f"image matrix {rows}x{cols}")
    if bits not in (8, 16, 32) or int(ds.get("SamplesPerPixel") or 1) != 1:
        raise CorruptFileError(
            path, f"unsupported pixel format: BitsAllocated {bits}, SamplesPerPixel {ds.get('SamplesPerPixel')}"
        )
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if syntax is not None and syntax.is_compressed:
        raise UnsupportedFileError(path, f"compressed transfer syntax {syntax.name}; export uncompressed DICOM")
    pixel_data = ds.get("PixelData")
    expected = rows * cols * n_frames * bits // 8
    if pixel_data is None:
        raise IncompleteFileError(path, f"no pixel data yet (expected {expected} bytes)")
    if len(pixel_data) < expected:
        raise IncompleteFileError(
            path, f"pixel data is {len(pixel_data)} bytes, rows*cols*frames*bits implies {expected}"
        )
    if len(pixel_data) > expected + 1:
        raise CorruptFileError(path, f"pixel data is {len(pixel_data)} bytes, rows*cols*frames*bits implies {expected}")
    signed = int(ds.get("PixelRepresentation") or 0) == 1
    endian = ">" if syntax is not None and not syntax.is_little_endian else "<"
    dtype = np.dtype(f"{endian}{'i' if signed else 'u'}{bits // 8}")
    return np.frombuffer(pixel_data, dtype=dtype, count=rows * cols * n_frames).reshape(n_frames, rows, cols)


def checked_geometry(iop, spacing_px, positions: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """IOP as two orthogonal unit vectors, positive finite pixel spacing, finite positions; else corrupt."""
    iop = np.array([float(v) for v in iop])
    spacing_px = np.array([float(v) for v in spacing_px])
    if len(iop) != 6 or len(spacing_px) != 2 or positions.ndim != 2 or positions.shape[1] != 3:
        raise CorruptFileError(
            path, "ImageOrientationPatient, ImagePositionPatient or PixelSpacing has the wrong length"
        )
    if not (np.all(np.isfinite(iop)) and np.all(np.isfinite(positions)) and np.all(np.isfinite(spacing_px))):
        raise CorruptFileError(path, "non-finite orientation, position or pixel spacing")
    norms = np.linalg.norm(iop.reshape(2, 3), axis=1)
    if np.any(np.abs(norms - 1) > 1e-3) or abs(float(iop[:3] @ iop[3:])) > 1e-3:
        raise CorruptFileError(path, f"ImageOrientationPatient {iop.tolist()} is not two orthogonal unit vectors")
    if np.any(spacing_px <= 0) or np.any(spacing_px > 1e4):
        raise CorruptFileError(path, f"PixelSpacing {spacing_px.tolist()} is not a positive size in mm")
    return iop, spacing_px


def blank_frames(ds: Dataset, n_frames: int, tiles: int) -> np.ndarray:
    """Zeros [F, rows, cols] without memory (header-only parsing)."""
    rows, cols = int(ds.get("Rows") or 0) // tiles, int(ds.get("Columns") or 0) // tiles
    return np.broadcast_to(np.float32(0), (n_frames, rows, cols))


def scale_factors(
    holder: Dataset, ds: Dataset, frame: Dataset | None, philips: bool, shared: object = _UNSET
) -> tuple[float, float, float]:
    """(rescale slope, rescale intercept, Philips scale slope or 0) for one frame."""
    slope = group_value(ds, frame, "PixelValueTransformationSequence", "RescaleSlope", shared)
    inter = group_value(ds, frame, "PixelValueTransformationSequence", "RescaleIntercept", shared)
    rs = float(slope) if slope not in (None, "") else 1.0
    ri = float(inter) if inter not in (None, "") else 0.0
    ss = (philips_scale_slope(holder) or 0.0) if philips else 0.0
    if not all(np.isfinite((rs, ri, ss))) or (ss and rs == 0):
        raise ValueError(f"unusable scale factors: slope {rs}, intercept {ri}, Philips scale slope {ss}")
    return rs, ri, ss


def apply_scale(values: np.ndarray, factors: list[tuple[float, float, float]]) -> np.ndarray:
    """Real values of [F, rows, cols] stored values; Philips: (SV * RS + RI) / (RS * SS), else SV * RS + RI."""
    out = values.astype(np.float32)
    if len(set(factors)) > 1:
        f = np.array(factors, dtype=np.float32)[:, :, None, None]
        rs, ri, ss = f[:, 0], f[:, 1], f[:, 2]
        return (out * rs + ri) / np.where(ss != 0, rs * ss, 1).astype(np.float32)
    rs, ri, ss = factors[0]
    if ss:
        return (out * np.float32(rs) + np.float32(ri)) / np.float32(rs * ss)
    if rs != 1.0:
        out *= np.float32(rs)
    if ri != 0.0:
        out += np.float32(ri)
    return out


def to_int(value) -> int | None:
    """``value`` as an int, or None when it is empty, missing or not a number."""
    try:
        return None if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return None
