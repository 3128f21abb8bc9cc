"""DICOM primitives shared by intake and the scanner emulator: parsing one file (``parse``, with one reader per
format in ``formats`` and the vendor decided in ``vendor``), writing datasets, Siemens CSA headers, typed header
values and the geometry of slices and mosaics (patient LPS -> RAS affines).

Names are imported on first use (``lazy_loader``).
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "build": [
            "ENHANCED_MR_IMAGE",
            "MR_IMAGE",
            "PHILIPS_CREATOR",
            "PHILIPS_PRIVATE_SEQ_CREATOR",
            "VENDORS",
            "Labels",
            "Stored",
            "add_rescale",
            "base_dataset",
            "item",
            "to_stored",
        ],
        "csa": ["CSA_CREATOR", "ascconv", "csa_int", "csa_vector", "read_csa", "write_csa"],
        "geometry": ["LPS_RAS", "Geometry", "affine_from_dicom", "ds_text", "geometry_from_affine", "mosaic_ipp"],
        "parse": [
            "IMAGE_SOP_CLASSES",
            "DicomImage",
            "exclusion_reason",
            "parse_dicom",
            "slices_per_volume",
            "volume_key",
            "volume_number",
        ],
        "values": [
            "apply_scale",
            "blank_frames",
            "checked_geometry",
            "first_item",
            "group_value",
            "philips_scale_slope",
            "pixel_values",
            "scale_factors",
            "to_int",
        ],
        "vendor": ["vendor_of"],
        "write": ["enhanced_dataset", "mosaic_dataset", "slice_datasets"],
    },
)
