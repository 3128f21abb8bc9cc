"""The digital-twin subject: an EPI-like brain, face-responsive voxels, BOLD, head motion and the paradigm."""

from offline.twin.anatomy import grey_matter, make_anatomy
from offline.twin.config import SimulateConfig
from offline.twin.motion import rigid_matrix
from offline.twin.simulate import prepare, simulate, write

__all__ = ["make_anatomy", "grey_matter", "SimulateConfig", "simulate", "prepare", "write", "rigid_matrix"]
