"""The values intake hands on: one :class:`Volume` per scanner volume, :class:`IntakeEvent` for everything else.

A ``Volume`` carries the image and where it came from, never who was scanned: no patient-identifying DICOM
field (name, ID, birth date, ...) is copied into it. The series is identified by its ``SeriesInstanceUID`` (DICOM)
or by its series number (NIfTI) only.

Array convention (the same for every format): ``data[i, j, k]`` with ``i`` along a DICOM row (the column
index), ``j`` down the columns (the row index) and ``k`` the slice, float32; ``affine`` maps ``(i, j, k, 1)``
to RAS+ millimetres, as a NIfTI sform does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "Volume",
    "IntakeEvent",
    "IntakeError",
    "IncompleteFileError",
    "CorruptFileError",
    "ShapeMismatchError",
    "UnsupportedFileError",
    "EVENT_KINDS",
]


@dataclass
class Volume:
    """One volume of a series, as read from one file (or one set of slice files).

    Attributes
    ----------
    index : int
        Position in the series: ``acquisition - first acquisition number`` (0 for the first volume), so a
        missing volume leaves its index unused and ``index * tr`` stays the acquisition time.
    acquisition : int
        Acquisition (volume) number from the file: DICOM AcquisitionNumber (else InstanceNumber or
        TemporalPositionIdentifier), NIfTI ``descrip`` ``acq=N`` (else the last number in the file name).
    data : np.ndarray
        float32 ``[X, Y, Z]``, scaled to real values (rescale slope/intercept, Philips scale slope).
    affine : np.ndarray
        float64 4x4, voxel -> RAS+ mm.
    tr : float or None
        Repetition time in seconds, when the file states it.
    path : Path
        The source file (for slice-per-file series: the first slice's file).
    sha256 : str
        SHA-256 of the source bytes (of all slice files, in slice order, for slice-per-file series).
    series : str
        SeriesInstanceUID (DICOM) or the series number as text (NIfTI).
    t_seen, t_ready : float
        ``time.time()`` when the watcher first noticed the file and when the volume was ready to hand on.
    fmt : str
        Detected format: ``mosaic``, ``enhanced``, ``slices``, ``philips-enhanced``, ``philips-slices`` or
        ``nifti``.
    series_number : int or None
        DICOM SeriesNumber (or the NIfTI ``series=N`` note), when known.
    t_written : float
        When the file was last written: its ``st_mtime_ns`` as read complete, in ``time.time()`` seconds (for
        slice files: the last slice's), never later than when it was read (a file server whose clock runs ahead); 0.0
        when not known. A volume queued behind a slow start or written while the service was down shows its real
        wait from this time, and a file written slowly in place is timed from its last write.
    """

    index: int
    acquisition: int
    data: np.ndarray
    affine: np.ndarray
    tr: float | None
    path: Path
    sha256: str
    series: str
    t_seen: float
    t_ready: float
    fmt: str = ""
    series_number: int | None = None
    t_written: float = 0.0

    @property
    def shape(self) -> tuple[int, int, int]:
        """The matrix ``(X, Y, Z)``."""
        return tuple(int(n) for n in self.data.shape)  # type: ignore[return-value]

    @property
    def voxel_size(self) -> tuple[float, float, float]:
        """Voxel size in mm (column norms of the affine)."""
        return tuple(float(v) for v in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))  # type: ignore[return-value]

    def summary(self) -> dict[str, Any]:
        """A JSON-ready description without the array (for logs)."""
        return {
            "index": self.index,
            "acquisition": self.acquisition,
            "shape": list(self.shape),
            "tr": self.tr,
            "path": str(self.path),
            "sha256": self.sha256,
            "series": self.series,
            "series_number": self.series_number,
            "format": self.fmt,
            "t_seen": self.t_seen,
            "t_ready": self.t_ready,
            "t_written": self.t_written,
        }


#: Kinds of :class:`IntakeEvent`.
EVENT_KINDS = (
    "series",  # the series the watcher follows was chosen
    "ignored",  # a file or a whole series not taken (foreign series, derived/MoCo/phase/localizer, not an image)
    "incomplete",  # a file (or a slice set) still incomplete when its retries ran out
    "corrupt",  # a file whose header or pixel data cannot be used
    "mismatch",  # a volume whose matrix differs from the series'
    "gap",  # acquisitions that never arrived
    "duplicate",  # an acquisition seen twice (second copy not handed on)
    "late",  # an acquisition that arrived after its gap had been reported
    "polling",  # file events did not arrive: the watcher switched to polling
)


@dataclass(frozen=True)
class IntakeEvent:
    """Something intake noticed that is not a volume: each has a kind, a reason and, where known, the file."""

    kind: str
    reason: str
    path: Path | None = None
    acquisition: int | None = None
    acquisitions: tuple[int, ...] = ()
    t: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for the run log)."""
        return {
            "kind": self.kind,
            "reason": self.reason,
            "path": None if self.path is None else str(self.path),
            "acquisition": self.acquisition,
            "acquisitions": list(self.acquisitions),
            "t": self.t,
        }


class IntakeError(Exception):
    """A scanner file that cannot be turned into a volume; the message names the file and the reason.

    ``kind`` names the problem in reports (``fmriface inspect``) and intake events.
    """

    user_error = True
    kind = "intake"

    def __init__(self, path: str | Path | None, reason: str):
        self.path = None if path is None else Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}" if self.path is not None else reason)

    def __reduce__(self):  # pickled by its arguments: a file parsed in the helper process raises the same error
        return type(self), (self.path, self.reason)


class IncompleteFileError(IntakeError):
    """The file is shorter than its own header says (still being written, or truncated)."""

    kind = "incomplete"


class CorruptFileError(IntakeError):
    """The header or the pixel data is unusable (not explained by the file being incomplete)."""

    kind = "corrupt"


class UnsupportedFileError(IntakeError):
    """Not an image volume this reader takes (non-image DICOM, an unrelated file, a 4-D NIfTI)."""

    kind = "unsupported"


class ShapeMismatchError(IntakeError):
    """A volume whose matrix differs from its series'; the message names both shapes."""

    kind = "mismatch"

    def __init__(self, path: str | Path | None, shape: tuple[int, ...], expected: tuple[int, ...]):
        self.shape = tuple(shape)
        self.expected = tuple(expected)
        super().__init__(path, f"matrix {self.shape} differs from the series' matrix {self.expected}")

    def __reduce__(self):
        return type(self), (self.path, self.shape, self.expected)
