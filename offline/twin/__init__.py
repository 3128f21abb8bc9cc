"""The digital-twin subject: an EPI-like brain, face-responsive voxels, BOLD, head motion and the paradigm."""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "anatomy": ["make_anatomy", "grey_matter"],
        "config": ["SimulateConfig"],
        "motion": ["rigid_matrix"],
        "simulate": ["simulate", "prepare", "write"],
    },
)
