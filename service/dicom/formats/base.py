"""What every format reader gives :func:`service.dicom.parse.parse_dicom`: the interface and its result."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydicom.dataset import Dataset

__all__ = ["Layout", "FormatReader"]


@dataclass
class Layout:
    """One file's frames and the header values whose place depends on its format.

    Geometry values are as the header holds them (``parse_dicom`` checks and converts them for every format
    alike); ``acquisition`` is the volume number and ``volume_from``/``slices_from`` say which header told it.
    """

    fmt: str  # "mosaic" | "enhanced" | "slice"
    frames: np.ndarray = field(repr=False)  # float32 [F, rows, cols], scaled to real values
    iop: Any  # ImageOrientationPatient (6 values) or None
    pixel_spacing: Any  # PixelSpacing (2 values) or None
    positions: np.ndarray  # [F, 3] LPS position of each frame (mosaic: the first slice only)
    between: Any  # SpacingBetweenSlices
    thickness: Any  # SliceThickness
    slices_expected: int | None
    slices_from: str
    acquisition: int | None
    volume_from: str
    normal_hint: Any = None  # the slice normal the header states (Siemens CSA SliceNormalVector), or None
    tr_ms: Any = None  # a repetition time of the format's own (enhanced: the functional groups'), or None


class FormatReader(ABC):
    """Reads the frames and geometry of one DICOM format (nibabel's wrapper classes play this part).

    :func:`service.dicom.formats.reader_for` picks the reader of a dataset; a new format, or a new layout of
    one, is a new reader and a new fixture, nothing else.
    """

    #: the ``DicomImage.fmt`` it gives
    fmt: ClassVar[str]

    @abstractmethod
    def read(self, ds: Dataset, path: Path, pixels: bool, vendor: str) -> Layout:
        """The file's :class:`Layout`; with ``pixels=False`` the frames are a read-only block of zeros.

        Raises the intake errors (:class:`~service.volume.CorruptFileError`, ...) that name what is wrong.
        """
