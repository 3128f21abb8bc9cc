"""One image per file (GE real-time EPI, Philips classic, Siemens classic and XA interoperability): the slice's
frame, and the rules that tell which volume it belongs to and how many slices make one.

The volume number and the slice count are where each vendor writes them; :func:`slices_per_volume`,
:func:`volume_number` and :func:`volume_key` hold those rules, :mod:`service.dicom.vendor` says whose file it is.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from service.dicom.csa import CSA_CREATOR, CSAError, read_csa
from service.dicom.formats.base import FormatReader, Layout
from service.dicom.values import apply_scale, blank_frames, pixel_values, scale_factors, to_int
from service.dicom.vendor import vendor_of
from service.volume import CorruptFileError

__all__ = [
    "SliceReader",
    "slices_per_volume",
    "volume_number",
    "volume_key",
    "acquisition_or_instance",
    "mfsplit_source",
]

_XA_PROTOCOL_CREATOR = "SIEMENS MR SDS 01"  # (0021,xx19): XA's Phoenix protocol (CSA's MrPhoenixProtocol before XA)
_GE_RELA_CREATOR = "GEMS_RELA_01"  # (0021,xx4F): GE's locations in acquisition


class SliceReader(FormatReader):
    """One frame; its volume and the slices per volume from the vendor's headers (None when none tells)."""

    fmt = "slice"

    def read(self, ds: Dataset, path: Path, pixels: bool, vendor: str) -> Layout:
        """The file's one frame, its volume number and the slices per volume from the vendor's headers."""
        frames = (
            apply_scale(pixel_values(ds, path, 1), [scale_factors(ds, ds, None, vendor == "philips")])
            if pixels
            else blank_frames(ds, 1, 1)
        )
        iop, spacing_px = ds.get("ImageOrientationPatient"), ds.get("PixelSpacing")
        if ds.get("ImagePositionPatient") is None:
            raise CorruptFileError(path, "slice lacks ImagePositionPatient")
        positions = np.array([[float(v) for v in ds.ImagePositionPatient]])
        between, thickness = ds.get("SpacingBetweenSlices"), ds.get("SliceThickness")
        expected, slices_from = _slices_per_volume(ds, vendor)
        acq, volume_from = volume_number(ds, expected)
        return Layout(
            fmt=self.fmt,
            frames=frames,
            iop=iop,
            pixel_spacing=spacing_px,
            positions=positions,
            between=between,
            thickness=thickness,
            slices_expected=expected,
            slices_from=slices_from,
            acquisition=acq,
            volume_from=volume_from,
        )


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
    return _slices_per_volume(ds, vendor_of(manufacturer))


def _slices_per_volume(ds: Dataset, vendor: str) -> tuple[int | None, str]:
    n = to_int(ds.get("ImagesInAcquisition"))
    if n:
        return n, "ImagesInAcquisition"
    if vendor == "ge":
        n = to_int(_private(ds, 0x0021, _GE_RELA_CREATOR, 0x4F))
        if n:
            return n, "GE locations in acquisition (0021,104F)"
    if vendor == "philips" and ds.get((0x2001, 0x1018)) is not None:
        n = to_int(ds[0x2001, 0x1018].value)
        if n:
            return n, "Philips number of slices (2001,1018)"
    if vendor == "siemens":
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
    return acquisition_or_instance(to_int(ds.get("AcquisitionNumber")), to_int(ds.get("InstanceNumber")), slices)


def acquisition_or_instance(acq: int | None, instance: int | None, slices: int | None) -> tuple[int | None, str]:
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
    """(run, volume number) of a slice file's header, by the rules :func:`~service.dicom.parse_dicom` uses."""
    image_type = tuple(str(v) for v in (ds.get("ImageType") or ()))
    slices, _ = slices_per_volume(ds, str(ds.get("Manufacturer", "")))
    return mfsplit_source(ds, image_type) or str(ds.get("SeriesInstanceUID", "")), volume_number(ds, slices)[0]


def mfsplit_source(ds: Dataset, image_type: tuple[str, ...]) -> str:
    """The series a Siemens XA MFSPLIT file was split from (shared by every volume of the run), or ''."""
    if not any(t.upper() == "MFSPLIT" for t in image_type):
        return ""
    for item in ds.get("RelatedSeriesSequence") or ():
        uid = str(item.get("SeriesInstanceUID", ""))
        if uid:
            return uid
    return ""
