"""Build pydicom datasets for the writers: common modules, stored-value scaling, vendor details."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

from service.dicom.geometry import ds_text

__all__ = [
    "MR_IMAGE",
    "ENHANCED_MR_IMAGE",
    "VENDORS",
    "Stored",
    "Labels",
    "to_stored",
    "base_dataset",
    "item",
    "PHILIPS_CREATOR",
    "PHILIPS_PRIVATE_SEQ_CREATOR",
    "add_rescale",
]

MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4.1"
PHILIPS_CREATOR = "Philips MR Imaging DD 001"
PHILIPS_PRIVATE_SEQ_CREATOR = "Philips MR Imaging DD 005"
VENDORS = {"siemens": "SIEMENS", "philips": "Philips Medical Systems", "ge": "GE MEDICAL SYSTEMS"}


@dataclass(frozen=True)
class Stored:
    """Integer pixel values and the factors that turn them back into the data.

    Real value = ``stored * slope + intercept`` (DICOM rescale). For Philips the private scale slope ``ss`` is
    set and the rescale fields hold display values: real = ``(stored * rs + ri) / (rs * ss)``.
    """

    values: np.ndarray  # uint16 or int16, same shape as the data
    slope: float
    intercept: float
    philips_ss: float | None = None


def to_stored(data: np.ndarray, vendor: str) -> Stored:
    """Choose 16-bit stored values for float data: exact for integer-valued data that fits, else scaled."""
    data = np.asarray(data, dtype=np.float64)
    lo, hi = (float(data.min()), float(data.max())) if data.size else (0.0, 0.0)
    integral = bool(np.all(data == np.round(data)))
    if vendor == "philips":
        # Philips stores values that are not the real ones: scale by 2 when that stays exact, so a reader
        # that ignores the private scale slope is caught.
        if integral and lo >= 0 and 2 * hi <= 65535:
            # magnitude images, as Philips writes them: no rescale intercept, stored values twice the real ones
            values = np.round(data * 2).astype(np.uint16)
            slope, intercept = 0.5, 0.0
        elif integral and 2 * (hi - lo) <= 65535:
            values = np.round((data - lo) * 2).astype(np.uint16)
            slope, intercept = 0.5, lo
        else:
            slope = (hi - lo) / 65535 if hi > lo else 1.0
            values = np.round((data - lo) / slope).astype(np.uint16)
            intercept = lo
        # real = stored/ss + ri/(rs*ss) with rs = 1: ss = 1/slope, ri = intercept/slope
        return Stored(values, 1.0, intercept / slope, philips_ss=1.0 / slope)
    if integral and lo >= 0 and hi <= 65535:
        return Stored(data.astype(np.uint16), 1.0, 0.0)
    if integral and lo >= -32768 and hi <= 32767:
        return Stored(data.astype(np.int16), 1.0, 0.0)
    slope = (hi - lo) / 65535 if hi > lo else 1.0
    return Stored(np.round((data - lo) / slope).astype(np.uint16), slope, lo)


def item(**kwargs: object) -> DicomSequence:
    """A one-item DICOM sequence with the given keywords."""
    ds = Dataset()
    for key, value in kwargs.items():
        setattr(ds, key, value)
    return DicomSequence([ds])


def _uid(*parts: object) -> str:
    return generate_uid(entropy_srcs=[str(p) for p in parts])


@dataclass(frozen=True)
class Labels:
    """What a written file says about where it comes from: the session, series and volume, as a scanner labels it.

    Parameters
    ----------
    acquisition : int
        Volume number (AcquisitionNumber; TemporalPositionIdentifier for Philips slices).
    tr : float or None
        Repetition time in seconds.
    series_number : int
        SeriesNumber; the SeriesInstanceUID is derived from ``session`` and this number.
    vendor : {"siemens", "philips", "ge"}
        Whose export the file imitates (:data:`VENDORS` gives its Manufacturer).
    series_description : str
        SeriesDescription and ProtocolName.
    patient : mapping or None
        DICOM patient keywords to set (PatientName, PatientID, ...).
    session : str
        Seeds the study, series and instance UIDs (deterministic).
    """

    acquisition: int
    tr: float | None
    series_number: int = 1
    vendor: str = "siemens"
    series_description: str = "ep2d_bold"
    patient: Mapping[str, str] | None = None
    session: str = "fmriface"


def base_dataset(
    labels: Labels,
    *,
    sop_class: str,
    instance: int,
    instance_key: str,
    image_type: Sequence[str],
    stored: Stored,
    rows: int,
    cols: int,
) -> Dataset:
    """The modules every written file shares: UIDs, patient/study/series, MR acquisition, pixel format.

    ``instance`` is the InstanceNumber, ``instance_key`` what tells this file's SOP instance UID from the other
    files of the same volume; ``stored`` gives the pixel representation, ``rows`` and ``cols`` the image size.
    """
    if labels.vendor not in VENDORS:
        raise ValueError(f"vendor must be one of {sorted(VENDORS)}, not {labels.vendor!r}")
    series_uid = _uid(labels.session, "series", labels.series_number)
    sop_uid = _uid(labels.session, "instance", labels.series_number, labels.acquisition, instance_key)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = list(image_type)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    now = time.gmtime()
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = time.strftime("%Y%m%d", now)
    ds.AcquisitionTime = ds.ContentTime = time.strftime("%H%M%S", now) + f".{int(time.time() % 1 * 1e6):06d}"
    ds.Modality = "MR"
    ds.Manufacturer = VENDORS[labels.vendor]
    ds.PatientName = "Anonymous"
    ds.PatientID = "anonymous"
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    for key, value in (labels.patient or {}).items():
        setattr(ds, key, value)
    ds.ScanningSequence = "EP"
    ds.SequenceVariant = "SK"
    ds.MRAcquisitionType = "2D"
    if labels.tr is not None:
        ds.RepetitionTime = ds_text(labels.tr * 1000.0)
    ds.EchoTime = "30"
    ds.FlipAngle = "75"
    ds.MagneticFieldStrength = "3"
    ds.ProtocolName = labels.series_description
    ds.SeriesDescription = labels.series_description
    ds.StudyInstanceUID = _uid(labels.session, "study")
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = _uid(labels.session, "frame")
    ds.StudyID = "1"
    ds.SeriesNumber = labels.series_number
    ds.AcquisitionNumber = labels.acquisition
    ds.InstanceNumber = instance
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if stored.values.dtype == np.int16 else 0
    return ds


def add_rescale(ds: Dataset, stored: Stored) -> None:
    """Rescale slope/intercept (and the Philips private scale slope) at the top level of ``ds``."""
    ds.RescaleIntercept = ds_text(stored.intercept)
    ds.RescaleSlope = ds_text(stored.slope)
    ds.RescaleType = "US"
    if stored.philips_ss is not None:
        block = ds.private_block(0x2005, PHILIPS_CREATOR, create=True)
        block.add_new(0x0E, "FL", float(stored.philips_ss))
