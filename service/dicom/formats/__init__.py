"""One reader per DICOM format, and the dispatcher that picks it (nibabel's ``wrapper_from_data`` in small).

- :class:`EnhancedReader`: enhanced (multi-frame) MR images, one volume per file (Siemens XA, Philips);
- :class:`MosaicReader`: Siemens classic mosaic (CSA header);
- :class:`SliceReader`: one image per file (GE, Philips classic, Siemens classic and XA interoperability),
  with the rules that number its volume and count its slices.

Each gives :func:`service.dicom.parse.parse_dicom` a :class:`Layout`; the vendor comes from
:func:`service.dicom.vendor.vendor_of`.
"""

from __future__ import annotations

from pathlib import Path

from pydicom.dataset import Dataset

from service.dicom.formats.base import FormatReader, Layout
from service.dicom.formats.enhanced import ENHANCED_SOP_CLASSES, EnhancedReader
from service.dicom.formats.mosaic import MosaicReader, image_csa
from service.dicom.formats.slices import (
    SliceReader,
    acquisition_or_instance,
    mfsplit_source,
    slices_per_volume,
    volume_key,
    volume_number,
)

__all__ = [
    "FormatReader",
    "Layout",
    "EnhancedReader",
    "MosaicReader",
    "SliceReader",
    "reader_for",
    "ENHANCED_SOP_CLASSES",
    "slices_per_volume",
    "volume_number",
    "volume_key",
    "acquisition_or_instance",
    "mfsplit_source",
]


def reader_for(ds: Dataset, sop_class: str, vendor: str, path: Path) -> FormatReader:
    """The reader of an MR image dataset: enhanced by its SOP class, a mosaic by its Siemens CSA header and
    ImageType, else a single slice.

    The CSA header of every Siemens file that is not enhanced is read here, so a broken one is a
    :class:`~service.volume.CorruptFileError` whatever the format.
    """
    if sop_class in ENHANCED_SOP_CLASSES:
        return EnhancedReader()
    csa = image_csa(ds, path) if vendor == "siemens" else {}
    return MosaicReader.of(ds, csa) or SliceReader()
