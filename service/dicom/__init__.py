"""DICOM primitives shared by intake and the scanner emulator: parsing one file (``parse``, with one reader per
format in ``formats`` and the vendor decided in ``vendor``), writing datasets, Siemens CSA headers, typed header
values and the geometry of slices and mosaics (patient LPS -> RAS affines).
"""

from service.dicom.build import (
    ENHANCED_MR_IMAGE,
    MR_IMAGE,
    PHILIPS_CREATOR,
    PHILIPS_PRIVATE_SEQ_CREATOR,
    VENDORS,
    Labels,
    Stored,
    add_rescale,
    base_dataset,
    item,
    to_stored,
)
from service.dicom.csa import CSA_CREATOR, ascconv, csa_int, csa_vector, read_csa, write_csa
from service.dicom.geometry import LPS_RAS, Geometry, affine_from_dicom, ds_text, geometry_from_affine, mosaic_ipp
from service.dicom.parse import (
    IMAGE_SOP_CLASSES,
    DicomImage,
    exclusion_reason,
    parse_dicom,
    slices_per_volume,
    volume_key,
    volume_number,
)
from service.dicom.values import (
    apply_scale,
    blank_frames,
    checked_geometry,
    first_item,
    group_value,
    philips_scale_slope,
    pixel_values,
    scale_factors,
    to_int,
)
from service.dicom.vendor import vendor_of
from service.dicom.write import enhanced_dataset, mosaic_dataset, slice_datasets

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
    "CSA_CREATOR",
    "read_csa",
    "write_csa",
    "csa_int",
    "csa_vector",
    "ascconv",
    "Geometry",
    "geometry_from_affine",
    "affine_from_dicom",
    "mosaic_ipp",
    "ds_text",
    "LPS_RAS",
    "DicomImage",
    "parse_dicom",
    "IMAGE_SOP_CLASSES",
    "exclusion_reason",
    "slices_per_volume",
    "volume_number",
    "volume_key",
    "vendor_of",
    "group_value",
    "first_item",
    "philips_scale_slope",
    "pixel_values",
    "checked_geometry",
    "blank_frames",
    "scale_factors",
    "apply_scale",
    "to_int",
    "mosaic_dataset",
    "enhanced_dataset",
    "slice_datasets",
]
