"""The QA thresholds: one value that the live service, the offline fit and ``fmriface realign`` share.

Every default is chosen in ``docs/qa.md`` (on the twin's clean runs, the real runs of ``tests/data/scanner-data``
and nibabel's ``example4d``, and the scanner emulator's signal faults), with the reasons.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["QAConfig"]


@dataclass(frozen=True)
class QAConfig:
    """When a volume is censored, and how often the QA maps are published (TOML table ``[qa]`` of ``serve``).

    Parameters
    ----------
    reference_ratio : float
        From the first volume on: the global signal (mean of the mask's voxels after motion correction) against
        the reference image's mean in the mask; a volume outside ``[1 / ratio, ratio]`` is censored (``spike``).
    global_jump : float
        The global signal's relative change from the last uncensored volume above which a volume is censored
        (``spike``), from the second volume on.
    std_dvars : float
        Standardized DVARS (Nichols) above which a volume is censored (``spike``), both against the volume before
        it and against the last uncensored volume (so the clean volume after a spike is not censored).
    slice_z : float
        Robust z of a slice's mean (relative to the volume's median slice) against that slice's running median and
        MAD above which a volume is censored (``slice``: a slice spike or dropout).
    outlier_z : float
        A voxel is an outlier when it lies more than ``outlier_z`` robust SDs from its running median.
    outlier_fraction : float
        Fraction of the mask's voxels that are outliers above which a volume is censored (``outliers``).
    censor_fd_mm : float
        Framewise displacement (mm) above which a volume is censored (``motion``); 0 (the default) turns it off.
    warmup : int
        Uncensored volumes (and volume pairs, for DVARS) the running estimates need before their checks censor;
        before then only the reference and global-jump checks do.
    window : int
        Uncensored volumes in the slices' running median and MAD.
    maps_every : int
        Volumes between two QA maps (mean EPI and tSNR) published on topic ``qa``; 0 = never.
    """

    reference_ratio: float = 3.0
    global_jump: float = 0.1
    std_dvars: float = 2.0
    slice_z: float = 20.0
    outlier_z: float = 5.0
    outlier_fraction: float = 0.1
    censor_fd_mm: float = 0.0
    warmup: int = 5
    window: int = 20
    maps_every: int = 10

    def __post_init__(self) -> None:
        if not self.reference_ratio > 1:
            raise ValueError(f"reference_ratio must be above 1, got {self.reference_ratio}")
        for name in ("global_jump", "std_dvars", "slice_z", "outlier_z", "outlier_fraction"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.outlier_fraction > 1:
            raise ValueError(f"outlier_fraction is a fraction of the voxels (0-1], got {self.outlier_fraction}")
        if self.censor_fd_mm < 0 or self.maps_every < 0:
            raise ValueError("censor_fd_mm and maps_every must not be negative")
        if self.warmup < 2 or self.window < self.warmup:
            raise ValueError(f"warmup must be at least 2 and window at least warmup, got {self.warmup}, {self.window}")

    def as_dict(self) -> dict[str, Any]:
        """The thresholds by name (what the bundle's manifest and the run's records keep)."""
        return asdict(self)
