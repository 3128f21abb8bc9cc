"""Procedural faces: 35 parameters (CelebA-style attributes), signed distance fields, rendering and writing."""

from offline.faces.generate import iter_faces, render_faces, write_faces, write_png
from offline.faces.params import ATTRIBUTE_NAMES, HAIR_BANDS, PARAM_NAMES, attributes_from_params, sample_params

__all__ = [
    "render_faces",
    "iter_faces",
    "write_faces",
    "write_png",
    "PARAM_NAMES",
    "ATTRIBUTE_NAMES",
    "sample_params",
    "attributes_from_params",
    "HAIR_BANDS",
]
