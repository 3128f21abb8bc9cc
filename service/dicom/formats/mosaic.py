"""Siemens classic mosaic: one volume per file, its slices tiled in one image, described by the CSA header."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from service.dicom.csa import CSA_CREATOR, CSAError, csa_int, csa_vector, read_csa
from service.dicom.formats.base import FormatReader, Layout
from service.dicom.values import apply_scale, blank_frames, pixel_values, scale_factors, to_int
from service.volume import CorruptFileError

__all__ = ["MosaicReader", "image_csa"]


def image_csa(ds: Dataset, path: Path) -> dict[str, list[str]]:
    """The Siemens image CSA header (0029,xx10), ``{}`` when there is none; a broken one is a corrupt file."""
    try:
        block = ds.private_block(0x0029, CSA_CREATOR)
        return read_csa(block[0x10].value) if 0x10 in block else {}
    except KeyError:
        return {}
    except CSAError as exc:
        raise CorruptFileError(path, f"Siemens CSA header: {exc}") from None


class MosaicReader(FormatReader):
    """Tiles cut from the mosaic, the stated corner position moved to the first tile's (as nibabel does).

    Parameters
    ----------
    csa : dict
        The image CSA header (:func:`image_csa`).
    n_images : int
        Its NumberOfImagesInMosaic: the slices of the volume.
    """

    fmt = "mosaic"

    def __init__(self, csa: dict[str, list[str]], n_images: int) -> None:
        self.csa = csa
        self.n_images = n_images

    @classmethod
    def of(cls, ds: Dataset, csa: dict[str, list[str]]) -> MosaicReader | None:
        """The reader of ``ds`` when it is a mosaic (the CSA header counts images in a mosaic and the ImageType
        says MOSAIC), else None."""
        n_images = csa_int(csa, "NumberOfImagesInMosaic")
        if n_images and any(str(t).upper() == "MOSAIC" for t in ds.get("ImageType") or ()):
            return cls(csa, n_images)
        return None

    def read(self, ds: Dataset, path: Path, pixels: bool, vendor: str) -> Layout:
        """The mosaic's tiles as frames, the first tile's position (moved from the mosaic's corner), the CSA normal."""
        n_mosaic = self.n_images
        m = int(np.ceil(np.sqrt(n_mosaic)))
        mosaic_shape = (int(ds.get("Rows") or 0), int(ds.get("Columns") or 0))
        if pixels:
            raw_px = pixel_values(ds, path, 1)[0]
            if raw_px.shape[0] % m or raw_px.shape[1] % m:
                raise CorruptFileError(path, f"mosaic {raw_px.shape} does not split into {m}x{m} tiles")
            r, c = raw_px.shape[0] // m, raw_px.shape[1] // m
            tiles = raw_px.reshape(m, r, m, c).transpose(0, 2, 1, 3).reshape(m * m, r, c)[:n_mosaic]
            frames = apply_scale(tiles, [scale_factors(ds, ds, None, vendor == "philips")])
        else:
            frames = blank_frames(ds, n_mosaic, m)
        iop, spacing_px = ds.get("ImageOrientationPatient"), ds.get("PixelSpacing")
        if iop is None or spacing_px is None or ds.get("ImagePositionPatient") is None:
            raise CorruptFileError(path, "mosaic lacks ImageOrientationPatient, PixelSpacing or ImagePositionPatient")
        iop_a, (dy, dx) = np.array([float(v) for v in iop]), (float(v) for v in spacing_px)
        # the stated position is the mosaic's corner; move it to the first tile's (as nibabel does)
        shift_rows, shift_cols = ((n - n / m) / 2 for n in mosaic_shape)
        fix = iop_a[3:] * dy * shift_rows + iop_a[:3] * dx * shift_cols
        positions = (np.array([float(v) for v in ds.ImagePositionPatient]) + fix)[None, :]
        between, thickness = ds.get("SpacingBetweenSlices"), ds.get("SliceThickness")
        hint = csa_vector(self.csa, "SliceNormalVector", 3)
        return Layout(
            fmt=self.fmt,
            frames=frames,
            iop=iop,
            pixel_spacing=spacing_px,
            positions=positions,
            between=between,
            thickness=thickness,
            normal_hint=hint,
            slices_expected=n_mosaic,
            slices_from="CSA NumberOfImagesInMosaic",
            acquisition=to_int(ds.get("AcquisitionNumber")) or to_int(ds.get("InstanceNumber")),
            volume_from="one volume per file (AcquisitionNumber)",
        )
