"""Parse one DICOM file's bytes into a :class:`DicomImage`: geometry, scaled frames and series identity.

Completeness is judged by content: the pixel data must be as long as rows x columns x frames x bytes per
pixel; a file that ends early (or whose parse stops at the end of the bytes) is incomplete, anything else that
cannot be used is corrupt. Patient fields are never read into the result.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from service._dicom_csa import CSA_CREATOR, CSAError, csa_int, csa_vector, read_csa
from service.volume import CorruptFileError, IncompleteFileError, IntakeError, UnsupportedFileError

__all__ = ["DicomImage", "parse_dicom", "IMAGE_SOP_CLASSES", "exclusion_reason"]

#: SOP classes whose files hold MR images (others are ignored as non-image DICOM).
IMAGE_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.4": "MR Image",
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image",
    "1.2.840.10008.5.1.4.1.1.4.4": "Legacy Converted Enhanced MR Image",
}
_ENHANCED = {"1.2.840.10008.5.1.4.1.1.4.1", "1.2.840.10008.5.1.4.1.1.4.4"}
_PHILIPS = ("Philips MR Imaging DD 001", "Philips MR Imaging DD 005")
_EXCLUDED_TYPES = {"DERIVED", "SECONDARY", "MOCO", "P", "PHASE", "LOCALIZER", "PROJECTION IMAGE", "MIP", "R", "I"}
_EXCLUDED_DESCRIPTIONS = re.compile(r"localizer|localiser|scout|survey|aahead|moco|phase|_ph\b|mip", re.IGNORECASE)


@dataclass
class DicomImage:
    """One DICOM file, parsed: what intake needs and nothing about the patient."""

    path: Path
    fmt: str  # "mosaic" | "enhanced" | "slice"
    vendor: str
    series_uid: str
    series_number: int | None
    series_description: str
    image_type: tuple[str, ...]
    acquisition: int
    instance: int | None
    slices_expected: int | None
    tr: float | None
    iop: np.ndarray
    pixel_spacing: np.ndarray
    positions: np.ndarray  # [F, 3] LPS position of each frame (mosaic: the first slice only)
    spacing: float | None
    normal_hint: np.ndarray | None
    frames: np.ndarray = field(repr=False)  # float32 [F, rows, cols]
    exclusion: str | None = None  # why this is not an EPI image (derived, MoCo, phase, localizer)
    sha256: str = ""  # of the file's bytes (set by the reader)

    @property
    def matrix(self) -> tuple[int, int]:
        """(columns, rows) of one slice."""
        return int(self.frames.shape[2]), int(self.frames.shape[1])


def exclusion_reason(
    image_type: tuple[str, ...], description: str, scanning_sequence: str, manufacturer: str
) -> str | None:
    """Why a series is not the functional EPI series (ImageType, SeriesDescription, ScanningSequence), or None."""
    flagged = sorted(set(t.upper() for t in image_type) & _EXCLUDED_TYPES)
    if flagged:
        joined = "\\".join(image_type)
        return f"ImageType {joined} ({', '.join(flagged)})"
    if _EXCLUDED_DESCRIPTIONS.search(description or ""):
        return f"SeriesDescription {description!r}"
    if scanning_sequence and "EP" not in scanning_sequence.upper() and "PHILIPS" not in manufacturer.upper():
        return f"ScanningSequence {scanning_sequence!r} is not EPI"
    return None


def _read_dataset(raw: bytes, path: Path) -> Dataset:
    if len(raw) < 132:
        raise IncompleteFileError(path, f"only {len(raw)} bytes, shorter than a DICOM preamble")
    force = raw[128:132] != b"DICM"
    try:
        return pydicom.dcmread(io.BytesIO(raw), force=force)
    except (EOFError, OSError, struct.error) as exc:
        if "No tag to read" in str(exc) or isinstance(exc, (EOFError, struct.error)):
            raise _cut_or_corrupt(raw, path, f"DICOM ends early: {exc}") from None
        raise CorruptFileError(path, f"DICOM header unreadable: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - InvalidDicomError, BytesLengthException, ValueError, ...
        raise CorruptFileError(path, f"DICOM header unreadable: {type(exc).__name__}: {exc}") from None


def _group(ds: Dataset, frame: Dataset | None, seq: str, keyword: str):
    """A functional-group value: per-frame first, then shared, then the top level."""
    for holder in (frame, _first(ds, "SharedFunctionalGroupsSequence")):
        if holder is not None and seq in holder and len(holder[seq].value) and keyword in holder[seq].value[0]:
            return holder[seq].value[0].get(keyword)
    return ds.get(keyword)


def _first(ds: Dataset, keyword: str) -> Dataset | None:
    seq = ds.get(keyword)
    return seq[0] if seq else None


def _philips_ss(holder: Dataset) -> float | None:
    for creator in _PHILIPS:
        try:
            block = holder.private_block(0x2005, creator)
        except KeyError:
            continue
        if creator.endswith("001") and 0x0E in block:
            return float(block[0x0E].value)
        if creator.endswith("005") and 0x0F in block and block[0x0F].value:
            value = _philips_ss(block[0x0F].value[0])
            if value is not None:
                return value
    return None


def _pixels(ds: Dataset, path: Path, n_frames: int) -> np.ndarray:
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


def _checked_geometry(iop, spacing_px, positions: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray]:
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


def _blank(ds: Dataset, n_frames: int, tiles: int) -> np.ndarray:
    """Zeros [F, rows, cols] without memory (header-only parsing)."""
    rows, cols = int(ds.get("Rows") or 0) // tiles, int(ds.get("Columns") or 0) // tiles
    return np.broadcast_to(np.float32(0), (n_frames, rows, cols))


def _factors(holder: Dataset, ds: Dataset, frame: Dataset | None, philips: bool) -> tuple[float, float, float]:
    """(rescale slope, rescale intercept, Philips scale slope or 0) for one frame."""
    slope = _group(ds, frame, "PixelValueTransformationSequence", "RescaleSlope")
    inter = _group(ds, frame, "PixelValueTransformationSequence", "RescaleIntercept")
    rs = float(slope) if slope not in (None, "") else 1.0
    ri = float(inter) if inter not in (None, "") else 0.0
    ss = (_philips_ss(holder) or 0.0) if philips else 0.0
    if not all(np.isfinite((rs, ri, ss))) or (ss and rs == 0):
        raise ValueError(f"unusable scale factors: slope {rs}, intercept {ri}, Philips scale slope {ss}")
    return rs, ri, ss


def _scale(values: np.ndarray, factors: list[tuple[float, float, float]]) -> np.ndarray:
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


def _int(value) -> int | None:
    try:
        return None if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return None


def parse_dicom(raw: bytes, path: str | Path, pixels: bool = True) -> DicomImage:
    """Parse one DICOM file (mosaic, enhanced multi-frame or single slice) from its bytes.

    With ``pixels=False`` only the header is used (``frames`` is a read-only block of zeros of the right
    shape): for geometry of files whose pixel data is absent or not needed.
    """
    path = Path(path)
    # pydicom warns (and guesses) on malformed input: keep its words for the reason instead. (catch_warnings
    # swaps process-wide state; intake parses in one worker thread, so at worst another thread's warning
    # raised during a parse is dropped.)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return _parse(raw, path, pixels)
        except (EOFError, struct.error) as exc:  # pydicom reads sequences lazily: a cut inside one surfaces here
            raise _cut_or_corrupt(raw, path, f"DICOM ends early: {exc}") from None
        except IncompleteFileError as exc:
            if "pixel data is" in exc.reason:
                raise
            raise _cut_or_corrupt(raw, path, exc.reason, caught) from None
        except IntakeError:
            raise
        except Exception as exc:  # noqa: BLE001 - untrusted bytes: pydicom raises many types on malformed input
            raise CorruptFileError(path, f"DICOM header unusable: {type(exc).__name__}: {exc}") from None


_PIXEL_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) little endian


def _cut_or_corrupt(raw: bytes, path: Path, reason: str, caught=()) -> Exception:
    """A header that ends early is a cut file, unless the pixel-data element is there and the parser missed it."""
    at = raw.find(_PIXEL_TAG, 132)
    if at < 0:
        return IncompleteFileError(path, reason)
    said = f"; pydicom: {caught[0].message}" if caught else ""
    return CorruptFileError(path, f"header unreadable: the parser never reached the pixel data at byte {at}{said}")


def _parse(raw: bytes, path: Path, pixels: bool) -> DicomImage:
    ds = _read_dataset(raw, path)
    sop = str(
        ds.get("SOPClassUID") or (ds.file_meta.get("MediaStorageSOPClassUID") if hasattr(ds, "file_meta") else "")
    )
    if sop not in IMAGE_SOP_CLASSES:
        if "SeriesInstanceUID" not in ds and "PixelData" not in ds:
            raise IncompleteFileError(path, "DICOM header ends before the series and pixel data")
        raise UnsupportedFileError(path, f"not an MR image (SOP class {sop or 'missing'})")
    if pixels and "PixelData" not in ds:  # pixel data comes last: a file without it was cut short
        raise IncompleteFileError(path, "no pixel data yet (the file ends inside its header)")
    manufacturer = str(ds.get("Manufacturer", ""))
    philips = "PHILIPS" in manufacturer.upper()
    image_type = tuple(str(v) for v in (ds.get("ImageType") or ()))
    description = str(ds.get("SeriesDescription", ""))
    tr_ms = ds.get("RepetitionTime")
    enhanced = sop in _ENHANCED
    csa = {}
    if not enhanced and "SIEMENS" in manufacturer.upper():
        try:
            block = ds.private_block(0x0029, CSA_CREATOR)
            csa = read_csa(block[0x10].value) if 0x10 in block else {}
        except KeyError:
            csa = {}
        except CSAError as exc:
            raise CorruptFileError(path, f"Siemens CSA header: {exc}") from None
    n_mosaic = csa_int(csa, "NumberOfImagesInMosaic")
    if enhanced:
        n_frames = _int(ds.get("NumberOfFrames")) or 1
        frames_seq = ds.get("PerFrameFunctionalGroupsSequence") or []
        if len(frames_seq) != n_frames:
            raise CorruptFileError(path, f"{len(frames_seq)} per-frame groups for {n_frames} frames")
        if pixels:
            raw_px = _pixels(ds, path, n_frames)
            frames = _scale(raw_px, [_factors(fr, ds, fr, philips) for fr in frames_seq])
        else:
            frames = _blank(ds, n_frames, 1)
        temporal = {_int(_group(ds, fr, "FrameContentSequence", "TemporalPositionIndex")) for fr in frames_seq}
        if len(temporal - {None}) > 1:
            raise UnsupportedFileError(path, f"enhanced file holds {len(temporal)} volumes; export one volume per file")
        positions = np.array(
            [[float(v) for v in _group(ds, fr, "PlanePositionSequence", "ImagePositionPatient")] for fr in frames_seq]
        )
        iop = _group(ds, frames_seq[0], "PlaneOrientationSequence", "ImageOrientationPatient")
        spacing_px = _group(ds, frames_seq[0], "PixelMeasuresSequence", "PixelSpacing")
        between = _group(ds, frames_seq[0], "PixelMeasuresSequence", "SpacingBetweenSlices")
        thickness = _group(ds, frames_seq[0], "PixelMeasuresSequence", "SliceThickness")
        tr_ms = _group(ds, frames_seq[0], "MRTimingAndRelatedParametersSequence", "RepetitionTime") or tr_ms
        fmt, expected, hint = "enhanced", n_frames, None
        acq = _int(ds.get("AcquisitionNumber")) or _int(ds.get("InstanceNumber"))
        acq = acq or _int(_group(ds, frames_seq[0], "FrameContentSequence", "FrameAcquisitionNumber"))
    elif n_mosaic and any(t.upper() == "MOSAIC" for t in image_type):
        m = int(np.ceil(np.sqrt(n_mosaic)))
        mosaic_shape = (int(ds.get("Rows") or 0), int(ds.get("Columns") or 0))
        if pixels:
            raw_px = _pixels(ds, path, 1)[0]
            if raw_px.shape[0] % m or raw_px.shape[1] % m:
                raise CorruptFileError(path, f"mosaic {raw_px.shape} does not split into {m}x{m} tiles")
            r, c = raw_px.shape[0] // m, raw_px.shape[1] // m
            tiles = raw_px.reshape(m, r, m, c).transpose(0, 2, 1, 3).reshape(m * m, r, c)[:n_mosaic]
            frames = _scale(tiles, [_factors(ds, ds, None, philips)])
        else:
            frames = _blank(ds, n_mosaic, m)
        iop, spacing_px = ds.get("ImageOrientationPatient"), ds.get("PixelSpacing")
        if iop is None or spacing_px is None or ds.get("ImagePositionPatient") is None:
            raise CorruptFileError(path, "mosaic lacks ImageOrientationPatient, PixelSpacing or ImagePositionPatient")
        iop_a, (dy, dx) = np.array([float(v) for v in iop]), (float(v) for v in spacing_px)
        # the stated position is the mosaic's corner; move it to the first tile's (as nibabel does)
        shift_rows, shift_cols = ((n - n / m) / 2 for n in mosaic_shape)
        fix = iop_a[3:] * dy * shift_rows + iop_a[:3] * dx * shift_cols
        positions = (np.array([float(v) for v in ds.ImagePositionPatient]) + fix)[None, :]
        between, thickness = ds.get("SpacingBetweenSlices"), ds.get("SliceThickness")
        fmt, expected, hint = "mosaic", n_mosaic, csa_vector(csa, "SliceNormalVector", 3)
        acq = _int(ds.get("AcquisitionNumber")) or _int(ds.get("InstanceNumber"))
    else:
        frames = _scale(_pixels(ds, path, 1), [_factors(ds, ds, None, philips)]) if pixels else _blank(ds, 1, 1)
        iop, spacing_px = ds.get("ImageOrientationPatient"), ds.get("PixelSpacing")
        if ds.get("ImagePositionPatient") is None:
            raise CorruptFileError(path, "slice lacks ImagePositionPatient")
        positions = np.array([[float(v) for v in ds.ImagePositionPatient]])
        between, thickness = ds.get("SpacingBetweenSlices"), ds.get("SliceThickness")
        fmt, hint = "slice", None
        expected = _int(ds.get("ImagesInAcquisition"))
        if expected is None and "PHILIPS" in manufacturer.upper():
            expected = _int(ds.get((0x2001, 0x1018)).value if ds.get((0x2001, 0x1018)) is not None else None)
        acq = _int(ds.get("TemporalPositionIdentifier")) or _int(ds.get("AcquisitionNumber"))
    if iop is None or spacing_px is None or len(iop) != 6 or len(spacing_px) != 2:
        raise CorruptFileError(path, "missing or malformed ImageOrientationPatient / PixelSpacing")
    spacing = next((float(v) for v in (between, thickness) if v not in (None, "") and 0 < float(v) < 1e4), None)
    iop, spacing_px = _checked_geometry(iop, spacing_px, positions, path)
    if acq is not None and acq < 0:
        raise CorruptFileError(path, f"acquisition number {acq} is negative")
    return DicomImage(
        path=path,
        fmt=fmt,
        vendor=manufacturer,
        series_uid=str(ds.get("SeriesInstanceUID", "")),
        series_number=_int(ds.get("SeriesNumber")),
        series_description=description,
        image_type=image_type,
        acquisition=acq if acq is not None else 0,
        instance=_int(ds.get("InstanceNumber")),
        slices_expected=expected,
        tr=float(tr_ms) / 1000.0 if tr_ms not in (None, "") and float(tr_ms) > 0 else None,
        iop=iop,
        pixel_spacing=spacing_px,
        positions=positions,
        spacing=spacing,
        normal_hint=None if hint is None else np.array(hint),
        frames=frames,
        exclusion=exclusion_reason(image_type, description, str(ds.get("ScanningSequence", "")), manufacturer),
    )
