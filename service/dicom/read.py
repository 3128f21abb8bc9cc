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

from service.dicom.csa import CSA_CREATOR, CSAError, csa_int, csa_vector, read_csa
from service.dicom.values import (
    apply_scale,
    blank_frames,
    checked_geometry,
    first_item,
    group_value,
    pixel_values,
    scale_factors,
    to_int,
)
from service.volume import CorruptFileError, IncompleteFileError, IntakeError, UnsupportedFileError

__all__ = [
    "DicomImage",
    "parse_dicom",
    "IMAGE_SOP_CLASSES",
    "exclusion_reason",
    "slices_per_volume",
    "volume_number",
    "volume_key",
]

#: SOP classes whose files hold MR images (others are ignored as non-image DICOM).
IMAGE_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.4": "MR Image",
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image",
    "1.2.840.10008.5.1.4.1.1.4.4": "Legacy Converted Enhanced MR Image",
}
_ENHANCED = {"1.2.840.10008.5.1.4.1.1.4.1", "1.2.840.10008.5.1.4.1.1.4.4"}
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
    #: the run this file belongs to: SeriesInstanceUID, or for a Siemens XA MFSPLIT export (a new series for
    #: every volume) the source series that all the run's volumes share
    run_uid: str = ""
    #: how the volume number (``acquisition``) and the slices per volume were told, for inspect and the log
    volume_from: str = ""
    slices_from: str = ""
    #: the vendor's export mode, e.g. ``siemens-xa-interoperability``, ``ge-slices``, ``siemens-mosaic``
    export: str = ""
    #: the header's own AcquisitionNumber (``acquisition`` is the volume number the rules derived)
    acquisition_number: int | None = None

    def __post_init__(self) -> None:
        self.run_uid = self.run_uid or self.series_uid

    @property
    def series_numbers(self) -> tuple[int, ...]:
        """The series numbers a configured ``series`` may name this file's run by: its SeriesNumber and, for an XA
        MFSPLIT volume (numbered ``1000 * series + volume``), the series it was split from."""
        if self.series_number is None:
            return ()
        if self.run_uid != self.series_uid and self.series_number >= 1000:
            return (self.series_number, self.series_number // 1000)
        return (self.series_number,)

    def with_slices_per_volume(self, slices: int, source: str) -> DicomImage:
        """This slice file with the slices per volume known from elsewhere (the bundle's reference grid, live):
        the volume number is derived again by :func:`volume_number`'s rule."""
        self.slices_expected, self.slices_from = slices, source
        if self.volume_from == "AcquisitionNumber":  # not a temporal position: the rule may now use the instance
            acq, rule = _acquisition_or_instance(self.acquisition_number, self.instance, slices)
            if acq is not None:
                self.acquisition, self.volume_from = acq, rule
        return self

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
    if not force and len(raw) >= 136 and raw[132:134] != b"\x02\x00":
        # every DICOM file starts its elements with the file meta group (0002,xxxx); a zero-filled or garbage body
        # would otherwise be parsed element by element for seconds
        raise CorruptFileError(
            path, f"the DICM preamble is not followed by the file meta group (0002,xxxx) but by {raw[132:136].hex()}"
        )
    try:
        return pydicom.dcmread(io.BytesIO(raw), force=force)
    except (EOFError, OSError, struct.error) as exc:
        if "No tag to read" in str(exc) or isinstance(exc, (EOFError, struct.error)):
            raise _cut_or_corrupt(raw, path, f"DICOM ends early: {exc}") from None
        raise CorruptFileError(path, f"DICOM header unreadable: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - InvalidDicomError, BytesLengthException, ValueError, ...
        if force and not _looks_like_dicom(raw):  # no preamble, no header, no DICOM trace: notes.dcm, a PDF, ...
            raise UnsupportedFileError(
                path, f"not a DICOM file (no DICM preamble, no DICOM header: {type(exc).__name__})"
            ) from None
        raise CorruptFileError(path, f"DICOM header unreadable: {type(exc).__name__}: {exc}") from None


_XA_PROTOCOL_CREATOR = "SIEMENS MR SDS 01"  # (0021,xx19): XA's Phoenix protocol (CSA's MrPhoenixProtocol before XA)
_GE_RELA_CREATOR = "GEMS_RELA_01"  # (0021,xx4F): GE's locations in acquisition


def _private(ds: Dataset, group: int, creator: str, element: int):
    try:
        block = ds.private_block(group, creator)
        return block[element].value if element in block else None
    except KeyError:
        return None


def _phoenix_text(ds: Dataset) -> str:
    """Siemens' protocol (ASCCONV) text: CSA's MrPhoenixProtocol (VB/VD/VE), or XA's (0021,1019)."""
    value = _private(ds, 0x0029, CSA_CREATOR, 0x20)
    if value is not None:
        try:
            return " ".join(read_csa(value).get("MrPhoenixProtocol", []))
        except CSAError:
            pass
    value = _private(ds, 0x0021, _XA_PROTOCOL_CREATOR, 0x19)
    if isinstance(value, bytes):
        return value.decode("latin-1", "replace")
    return str(value or "")


def slices_per_volume(ds: Dataset, manufacturer: str) -> tuple[int | None, str]:
    """Slices in one volume of a slice-per-file series, and which header said so.

    In order: ImagesInAcquisition (0020,1002); GE's locations in acquisition (0021,104F); Philips' number of
    slices (2001,1018); Siemens' protocol ``sSliceArray.lSize`` (CSA header, or XA's (0021,1019)). None when no
    header tells: live, the bundle's reference grid does (``WatcherConfig.slices_per_volume``).
    """
    n = to_int(ds.get("ImagesInAcquisition"))
    if n:
        return n, "ImagesInAcquisition"
    vendor = manufacturer.upper()
    if "GE" in vendor.split() or vendor.startswith("GE "):
        n = to_int(_private(ds, 0x0021, _GE_RELA_CREATOR, 0x4F))
        if n:
            return n, "GE locations in acquisition (0021,104F)"
    if "PHILIPS" in vendor and ds.get((0x2001, 0x1018)) is not None:
        n = to_int(ds[0x2001, 0x1018].value)
        if n:
            return n, "Philips number of slices (2001,1018)"
    if "SIEMENS" in vendor:
        found = re.search(r"sSliceArray\.lSize\s*=\s*(\d+)", _phoenix_text(ds))
        if found and int(found.group(1)) > 0:
            return int(found.group(1)), "Siemens protocol sSliceArray.lSize"
    return None, ""


def volume_number(ds: Dataset, slices: int | None) -> tuple[int | None, str]:
    """The volume (acquisition) number of one slice file, and the rule that gave it.

    TemporalPositionIdentifier when present (Philips classic); AcquisitionNumber when it counts volumes (> 1,
    or 0/1 for the first volume); when AcquisitionNumber stays at 1 for the whole run (GE real-time EPI) and the
    InstanceNumber runs past one volume's slices, the volume follows from InstanceNumber and the slices per
    volume: ``(InstanceNumber - 1) // slices + 1``.
    """
    temporal = to_int(ds.get("TemporalPositionIdentifier"))
    if temporal is not None:
        return temporal, "TemporalPositionIdentifier"
    return _acquisition_or_instance(to_int(ds.get("AcquisitionNumber")), to_int(ds.get("InstanceNumber")), slices)


def _acquisition_or_instance(acq: int | None, instance: int | None, slices: int | None) -> tuple[int | None, str]:
    """:func:`volume_number`'s rule without a temporal position: AcquisitionNumber when it counts volumes, else
    InstanceNumber over the slices per volume."""
    if acq is not None and acq > 1:
        return acq, "AcquisitionNumber"
    if slices and instance is not None and instance >= 1 and (instance > slices or acq is None):
        return (instance - 1) // slices + 1, f"InstanceNumber with {slices} slices per volume"
    if acq is not None:
        return acq, "AcquisitionNumber"
    return None, ""


def volume_key(ds: Dataset) -> tuple[str, int | None]:
    """(run, volume number) of a slice file's header, by the rules :func:`parse_dicom` uses."""
    image_type = tuple(str(v) for v in (ds.get("ImageType") or ()))
    slices, _ = slices_per_volume(ds, str(ds.get("Manufacturer", "")))
    return _mfsplit_source(ds, image_type) or str(ds.get("SeriesInstanceUID", "")), volume_number(ds, slices)[0]


def _mfsplit_source(ds: Dataset, image_type: tuple[str, ...]) -> str:
    """The series a Siemens XA MFSPLIT file was split from (shared by every volume of the run), or ''."""
    if not any(t.upper() == "MFSPLIT" for t in image_type):
        return ""
    for item in ds.get("RelatedSeriesSequence") or ():
        uid = str(item.get("SeriesInstanceUID", ""))
        if uid:
            return uid
    return ""


def _export_mode(manufacturer: str, fmt: str, mfsplit: bool, software: str) -> str:
    vendor = manufacturer.upper()
    name = (
        "siemens"
        if "SIEMENS" in vendor
        else "ge"
        if "GE" in vendor.split() or vendor.startswith("GE ")
        else "philips"
        if "PHILIPS" in vendor
        else "other"
    )
    if name == "siemens" and fmt == "slice":
        xa = "XA" in software.upper()
        return "siemens-xa-interoperability" if mfsplit or xa else "siemens-slices"
    if name == "siemens" and fmt == "enhanced":
        return "siemens-xa-enhanced"
    return f"{name}-{'slices' if fmt == 'slice' else fmt}"


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
#: The root of every standard DICOM UID (SOP classes, transfer syntaxes).
_DICOM_UID_ROOT = b"1.2.840.10008"


def _looks_like_dicom(raw: bytes) -> bool:
    """A trace of DICOM in bytes whose header cannot be parsed: a standard UID or the pixel-data element (a
    damaged scanner file is corrupt; a text file named .dcm is not DICOM at all)."""
    return _DICOM_UID_ROOT in raw or raw.find(_PIXEL_TAG, 132) >= 0


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
        known = ("SOPClassUID", "Modality", "StudyInstanceUID", "SeriesInstanceUID", "PixelData")
        if raw[128:132] != b"DICM" and not any(k in ds for k in known) and not _looks_like_dicom(raw):
            raise UnsupportedFileError(path, "not a DICOM file (no DICM preamble and no DICOM element pydicom knows)")
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
        n_frames = to_int(ds.get("NumberOfFrames")) or 1
        frames_seq = ds.get("PerFrameFunctionalGroupsSequence") or []
        if len(frames_seq) != n_frames:
            raise CorruptFileError(path, f"{len(frames_seq)} per-frame groups for {n_frames} frames")
        shared = first_item(ds, "SharedFunctionalGroupsSequence")
        if pixels:
            raw_px = pixel_values(ds, path, n_frames)
            frames = apply_scale(raw_px, [scale_factors(fr, ds, fr, philips, shared) for fr in frames_seq])
        else:
            frames = blank_frames(ds, n_frames, 1)
        temporal, positions = set(), []
        for fr in frames_seq:
            temporal.add(to_int(group_value(ds, fr, "FrameContentSequence", "TemporalPositionIndex", shared)))
            positions.append(
                [float(v) for v in group_value(ds, fr, "PlanePositionSequence", "ImagePositionPatient", shared)]
            )
        if len(temporal - {None}) > 1:
            raise UnsupportedFileError(path, f"enhanced file holds {len(temporal)} volumes; export one volume per file")
        positions = np.array(positions)
        first = frames_seq[0]
        iop = group_value(ds, first, "PlaneOrientationSequence", "ImageOrientationPatient", shared)
        spacing_px = group_value(ds, first, "PixelMeasuresSequence", "PixelSpacing", shared)
        between = group_value(ds, first, "PixelMeasuresSequence", "SpacingBetweenSlices", shared)
        thickness = group_value(ds, first, "PixelMeasuresSequence", "SliceThickness", shared)
        tr_ms = group_value(ds, first, "MRTimingAndRelatedParametersSequence", "RepetitionTime", shared) or tr_ms
        fmt, expected, hint = "enhanced", n_frames, None
        slices_from = "NumberOfFrames"
        acq = to_int(ds.get("AcquisitionNumber")) or to_int(ds.get("InstanceNumber"))
        acq = acq or to_int(group_value(ds, frames_seq[0], "FrameContentSequence", "FrameAcquisitionNumber"))
        volume_from = "one volume per file (AcquisitionNumber)"
    elif n_mosaic and any(t.upper() == "MOSAIC" for t in image_type):
        m = int(np.ceil(np.sqrt(n_mosaic)))
        mosaic_shape = (int(ds.get("Rows") or 0), int(ds.get("Columns") or 0))
        if pixels:
            raw_px = pixel_values(ds, path, 1)[0]
            if raw_px.shape[0] % m or raw_px.shape[1] % m:
                raise CorruptFileError(path, f"mosaic {raw_px.shape} does not split into {m}x{m} tiles")
            r, c = raw_px.shape[0] // m, raw_px.shape[1] // m
            tiles = raw_px.reshape(m, r, m, c).transpose(0, 2, 1, 3).reshape(m * m, r, c)[:n_mosaic]
            frames = apply_scale(tiles, [scale_factors(ds, ds, None, philips)])
        else:
            frames = blank_frames(ds, n_mosaic, m)
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
        slices_from = "CSA NumberOfImagesInMosaic"
        acq = to_int(ds.get("AcquisitionNumber")) or to_int(ds.get("InstanceNumber"))
        volume_from = "one volume per file (AcquisitionNumber)"
    else:
        frames = (
            apply_scale(pixel_values(ds, path, 1), [scale_factors(ds, ds, None, philips)])
            if pixels
            else blank_frames(ds, 1, 1)
        )
        iop, spacing_px = ds.get("ImageOrientationPatient"), ds.get("PixelSpacing")
        if ds.get("ImagePositionPatient") is None:
            raise CorruptFileError(path, "slice lacks ImagePositionPatient")
        positions = np.array([[float(v) for v in ds.ImagePositionPatient]])
        between, thickness = ds.get("SpacingBetweenSlices"), ds.get("SliceThickness")
        fmt, hint = "slice", None
        expected, slices_from = slices_per_volume(ds, manufacturer)
        acq, volume_from = volume_number(ds, expected)
    if iop is None or spacing_px is None or len(iop) != 6 or len(spacing_px) != 2:
        raise CorruptFileError(path, "missing or malformed ImageOrientationPatient / PixelSpacing")
    spacing = next((float(v) for v in (between, thickness) if v not in (None, "") and 0 < float(v) < 1e4), None)
    iop, spacing_px = checked_geometry(iop, spacing_px, positions, path)
    mfsplit = _mfsplit_source(ds, image_type)
    if acq is not None and acq < 0:
        raise CorruptFileError(path, f"acquisition number {acq} is negative")
    return DicomImage(
        path=path,
        fmt=fmt,
        vendor=manufacturer,
        series_uid=str(ds.get("SeriesInstanceUID", "")),
        series_number=to_int(ds.get("SeriesNumber")),
        series_description=description,
        image_type=image_type,
        acquisition=acq if acq is not None else 0,
        instance=to_int(ds.get("InstanceNumber")),
        slices_expected=expected,
        tr=float(tr_ms) / 1000.0 if tr_ms not in (None, "") and float(tr_ms) > 0 else None,
        iop=iop,
        pixel_spacing=spacing_px,
        positions=positions,
        spacing=spacing,
        normal_hint=None if hint is None else np.array(hint),
        frames=frames,
        exclusion=exclusion_reason(image_type, description, str(ds.get("ScanningSequence", "")), manufacturer),
        run_uid=mfsplit,
        acquisition_number=to_int(ds.get("AcquisitionNumber")),
        volume_from=volume_from,
        slices_from=slices_from,
        export=_export_mode(manufacturer, fmt, bool(mfsplit), str(ds.get("SoftwareVersions", ""))),
    )
