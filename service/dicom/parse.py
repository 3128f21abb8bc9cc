"""Parse one DICOM file's bytes into a :class:`DicomImage`: geometry, scaled frames and series identity.

Completeness is judged by content: the pixel data must be as long as rows x columns x frames x bytes per
pixel; a file that ends early (or whose parse stops at the end of the bytes) is incomplete, anything else that
cannot be used is corrupt. Patient fields are never read into the result.

What depends on the format (frames, geometry, the volume number) is read by the format's reader
(:mod:`service.dicom.formats`, picked by :func:`~service.dicom.formats.reader_for`); the vendor is decided by
:func:`~service.dicom.vendor.vendor_of`. This module reads the dataset, judges what the file is, and builds the
:class:`DicomImage` the same way for every format.
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

from service.dicom.formats import (
    acquisition_or_instance,
    mfsplit_source,
    reader_for,
    slices_per_volume,
    volume_key,
    volume_number,
)
from service.dicom.values import checked_geometry, to_int
from service.dicom.vendor import export_mode, vendor_of
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
            acq, rule = acquisition_or_instance(self.acquisition_number, self.instance, slices)
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
    """Why a series is not the functional EPI series (ImageType, SeriesDescription, ScanningSequence), or None.

    The ScanningSequence test is not applied to Philips files (``manufacturer``, see :func:`vendor_of`).
    """
    flagged = sorted(set(t.upper() for t in image_type) & _EXCLUDED_TYPES)
    if flagged:
        joined = "\\".join(image_type)
        return f"ImageType {joined} ({', '.join(flagged)})"
    if _EXCLUDED_DESCRIPTIONS.search(description or ""):
        return f"SeriesDescription {description!r}"
    if scanning_sequence and "EP" not in scanning_sequence.upper() and vendor_of(manufacturer) != "philips":
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
    sop = _image_sop_class(ds, raw, path)
    if pixels and "PixelData" not in ds:  # pixel data comes last: a file without it was cut short
        raise IncompleteFileError(path, "no pixel data yet (the file ends inside its header)")
    manufacturer = str(ds.get("Manufacturer", ""))
    vendor = vendor_of(manufacturer)
    image_type = tuple(str(v) for v in (ds.get("ImageType") or ()))
    description = str(ds.get("SeriesDescription", ""))
    tr_ms = ds.get("RepetitionTime")
    layout = reader_for(ds, sop, vendor, path).read(ds, path, pixels, vendor)
    tr_ms = layout.tr_ms or tr_ms
    iop, spacing_px, acq = layout.iop, layout.pixel_spacing, layout.acquisition
    if iop is None or spacing_px is None or len(iop) != 6 or len(spacing_px) != 2:
        raise CorruptFileError(path, "missing or malformed ImageOrientationPatient / PixelSpacing")
    spacing = next(
        (float(v) for v in (layout.between, layout.thickness) if v not in (None, "") and 0 < float(v) < 1e4), None
    )
    iop, spacing_px = checked_geometry(iop, spacing_px, layout.positions, path)
    mfsplit = mfsplit_source(ds, image_type)
    if acq is not None and acq < 0:
        raise CorruptFileError(path, f"acquisition number {acq} is negative")
    return DicomImage(
        path=path,
        fmt=layout.fmt,
        vendor=manufacturer,
        series_uid=str(ds.get("SeriesInstanceUID", "")),
        series_number=to_int(ds.get("SeriesNumber")),
        series_description=description,
        image_type=image_type,
        acquisition=acq if acq is not None else 0,
        instance=to_int(ds.get("InstanceNumber")),
        slices_expected=layout.slices_expected,
        tr=float(tr_ms) / 1000.0 if tr_ms not in (None, "") and float(tr_ms) > 0 else None,
        iop=iop,
        pixel_spacing=spacing_px,
        positions=layout.positions,
        spacing=spacing,
        normal_hint=None if layout.normal_hint is None else np.array(layout.normal_hint),
        frames=layout.frames,
        exclusion=exclusion_reason(image_type, description, str(ds.get("ScanningSequence", "")), manufacturer),
        run_uid=mfsplit,
        acquisition_number=to_int(ds.get("AcquisitionNumber")),
        volume_from=layout.volume_from,
        slices_from=layout.slices_from,
        export=export_mode(vendor, layout.fmt, bool(mfsplit), str(ds.get("SoftwareVersions", ""))),
    )


def _image_sop_class(ds: Dataset, raw: bytes, path: Path) -> str:
    """The dataset's SOP class when it holds an MR image; otherwise the error that says what the file is."""
    sop = str(
        ds.get("SOPClassUID") or (ds.file_meta.get("MediaStorageSOPClassUID") if hasattr(ds, "file_meta") else "")
    )
    if sop in IMAGE_SOP_CLASSES:
        return sop
    known = ("SOPClassUID", "Modality", "StudyInstanceUID", "SeriesInstanceUID", "PixelData")
    if raw[128:132] != b"DICM" and not any(k in ds for k in known) and not _looks_like_dicom(raw):
        raise UnsupportedFileError(path, "not a DICOM file (no DICM preamble and no DICOM element pydicom knows)")
    if "SeriesInstanceUID" not in ds and "PixelData" not in ds:
        raise IncompleteFileError(path, "DICOM header ends before the series and pixel data")
    raise UnsupportedFileError(path, f"not an MR image (SOP class {sop or 'missing'})")
