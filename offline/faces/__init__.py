"""Procedural faces: 35 parameters (CelebA-style attributes), signed distance fields, rendering and writing."""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "generate": ["render_faces", "iter_faces", "write_faces", "write_png"],
        "params": ["PARAM_NAMES", "ATTRIBUTE_NAMES", "sample_params", "attributes_from_params", "HAIR_BANDS"],
    },
)
