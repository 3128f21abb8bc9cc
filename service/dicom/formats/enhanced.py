"""Enhanced (multi-frame) MR images, one volume per file: Siemens XA, Philips, legacy-converted enhanced."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from service.dicom.formats.base import FormatReader, Layout
from service.dicom.values import apply_scale, blank_frames, first_item, group_value, pixel_values, scale_factors, to_int
from service.volume import CorruptFileError, UnsupportedFileError

__all__ = ["ENHANCED_SOP_CLASSES", "EnhancedReader"]

#: Enhanced MR Image and Legacy Converted Enhanced MR Image.
ENHANCED_SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.4.1", "1.2.840.10008.5.1.4.1.1.4.4"}


class EnhancedReader(FormatReader):
    """Frames from the pixel data, each with its functional groups (per frame, else shared): position, scaling.

    A file holding more than one temporal position is refused: intake takes one volume per file.
    """

    fmt = "enhanced"

    def read(self, ds: Dataset, path: Path, pixels: bool, vendor: str) -> Layout:
        """The frames with their per-frame (else shared) positions and scaling; refuses a file of several volumes."""
        n_frames = to_int(ds.get("NumberOfFrames")) or 1
        frames_seq = ds.get("PerFrameFunctionalGroupsSequence") or []
        if len(frames_seq) != n_frames:
            raise CorruptFileError(path, f"{len(frames_seq)} per-frame groups for {n_frames} frames")
        shared = first_item(ds, "SharedFunctionalGroupsSequence")
        if pixels:
            philips = vendor == "philips"
            raw_px = pixel_values(ds, path, n_frames)
            frames = apply_scale(raw_px, [scale_factors(fr, ds, fr, philips, shared) for fr in frames_seq])
        else:
            frames = blank_frames(ds, n_frames, 1)
        temporal, positions = set(), []
        for fr in frames_seq:
            temporal.add(to_int(group_value(ds, fr, "FrameContentSequence", "TemporalPositionIndex", shared)))
            positions.append(
                [float(v) for v in group_value(ds, fr, "PlanePositionSequence", "ImagePositionPatient", shared)]
            )
        if len(temporal - {None}) > 1:
            raise UnsupportedFileError(path, f"enhanced file holds {len(temporal)} volumes; export one volume per file")
        positions = np.array(positions)
        first = frames_seq[0]

        def measure(keyword: str):
            return group_value(ds, first, "PixelMeasuresSequence", keyword, shared)

        iop = group_value(ds, first, "PlaneOrientationSequence", "ImageOrientationPatient", shared)
        spacing_px, between, thickness = (
            measure(k) for k in ("PixelSpacing", "SpacingBetweenSlices", "SliceThickness")
        )
        tr_ms = group_value(ds, first, "MRTimingAndRelatedParametersSequence", "RepetitionTime", shared)
        acq = to_int(ds.get("AcquisitionNumber")) or to_int(ds.get("InstanceNumber"))
        acq = acq or to_int(group_value(ds, first, "FrameContentSequence", "FrameAcquisitionNumber"))
        return Layout(
            fmt=self.fmt,
            frames=frames,
            iop=iop,
            pixel_spacing=spacing_px,
            positions=positions,
            between=between,
            thickness=thickness,
            tr_ms=tr_ms,
            slices_expected=n_frames,
            slices_from="NumberOfFrames",
            acquisition=acq,
            volume_from="one volume per file (AcquisitionNumber)",
        )
