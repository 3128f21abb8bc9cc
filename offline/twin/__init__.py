"""The digital-twin subject: an EPI-like brain, face-responsive voxels, BOLD, head motion and the paradigm."""

from offline.twin.anatomy import make_anatomy

__all__ = ["make_anatomy"]
