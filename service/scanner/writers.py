"""Write one volume as a scanner would: Siemens mosaic, enhanced multi-frame, slice-per-file DICOM, or NIfTI.

The scanner emulator (``fmriface replay``) and the tests use these writers; :func:`service.intake.assembly.read_volume`
gives back the same array and affine for every format (DICOM stores 16-bit integers: integer-valued data that
fits is stored exactly, other data is scaled with a rescale slope/intercept and rounded).

Files appear atomically (written under a hidden temporary name in the same folder, then renamed) unless
``chunked=True``: then the final file is written in ``n_chunks`` pieces with ``chunk_delay`` seconds between
them, through one open handle, so a watcher can see it half written.
"""

from __future__ import annotations

import gzip
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite

from service.dicom.build import Labels
from service.dicom.geometry import geometry_from_affine
from service.dicom.write import enhanced_dataset, mosaic_dataset, slice_datasets

__all__ = ["FORMATS", "WriteOptions", "write_volume", "write_bytes", "slice_paths"]

#: Formats :func:`write_volume` writes.
FORMATS = ("mosaic", "enhanced", "slices", "nifti")


def slice_paths(prefix: str | Path, n_slices: int) -> list[Path]:
    """The files of a slice-per-file volume written with ``path=prefix``: ``<prefix>_s0001.dcm``, ..."""
    prefix = Path(prefix)
    return [prefix.with_name(f"{prefix.name}_s{k + 1:04d}.dcm") for k in range(n_slices)]


@dataclass(frozen=True)
class WriteOptions:
    """How :func:`write_volume` writes one volume: what the files say (:attr:`labels`, ``image_type``), the NIfTI
    version, and how the bytes reach the folder (:attr:`delivery`).

    Parameters
    ----------
    acquisition : int
        Volume number (DICOM AcquisitionNumber / TemporalPositionIdentifier; NIfTI ``descrip`` ``acq=N``).
    tr : float or None
        Repetition time in seconds.
    series_number : int
        DICOM SeriesNumber; the SeriesInstanceUID is derived from ``session`` and this number, so every
        volume written with the same pair belongs to one series.
    chunked, chunk_delay, n_chunks
        Write the final file in pieces (a partial write on purpose) instead of temp name + rename.
    vendor : {"siemens", "philips", "ge"}
        DICOM flavour for ``enhanced`` and ``slices``: Philips writes a private scale slope and display
        rescale values; Philips and GE keep AcquisitionNumber at 1 and number volumes by
        TemporalPositionIdentifier (``slices``). Mosaic is Siemens only.
    series_description, image_type
        Let tests write MoCo, derived, phase or localizer series.
    patient : mapping
        DICOM patient keywords to set (PatientName, PatientID, PatientBirthDate, ...).
    session : str
        Seeds the study, series and instance UIDs (deterministic).
    nifti_version : {1, 2}
    """

    acquisition: int
    tr: float | None
    series_number: int = 1
    chunked: bool = False
    chunk_delay: float = 0.05
    n_chunks: int = 4
    vendor: str = "siemens"
    series_description: str = "ep2d_bold"
    image_type: Sequence[str] | None = None
    patient: Mapping[str, str] | None = None
    session: str = "fmriface"
    nifti_version: int = 1

    @property
    def labels(self) -> Labels:
        """What the DICOM files say about where they come from."""
        return Labels(
            acquisition=self.acquisition,
            tr=self.tr,
            series_number=self.series_number,
            vendor=self.vendor,
            series_description=self.series_description,
            patient=self.patient,
            session=self.session,
        )

    @property
    def delivery(self) -> dict[str, Any]:
        """:func:`write_bytes`' keywords: atomic, or in chunks."""
        return {"chunked": self.chunked, "chunk_delay": self.chunk_delay, "n_chunks": self.n_chunks}


def write_volume(data: np.ndarray, affine: np.ndarray, path: str | Path, fmt: str, **options: Any) -> list[Path]:
    """Write one 3-D volume; returns the files written, in slice order for ``slices``.

    Parameters
    ----------
    data : array [X, Y, Z]
        Values (float32 on reading back). ``data[i, j, k]``: i = column index, j = row index, k = slice.
    affine : array 4x4
        Voxel -> RAS+ mm. DICOM needs an unsheared grid.
    path : path
        The file to write (``mosaic``, ``enhanced``; ``nifti``: ``.nii`` or ``.nii.gz``), or for ``slices``
        a file-name prefix: slice k goes to ``<path>_s<k+1:04d>.dcm`` (see :func:`slice_paths`).
    fmt : {"mosaic", "enhanced", "slices", "nifti"}
    **options
        The fields of :class:`WriteOptions` as keywords: ``acquisition`` and ``tr`` always, the others as needed
        (``series_number``, ``vendor``, ``patient``, ``chunked``, ...).
    """
    opts = WriteOptions(**options)
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, not {fmt!r}")
    data = np.asarray(data)
    if data.ndim != 3:
        raise ValueError(f"write_volume takes one 3-D volume, got shape {data.shape}")
    path = Path(path)
    if fmt == "nifti":
        blobs = {path: _nifti_bytes(data, affine, path, opts)}
    else:
        blobs = _dicom_blobs(data, affine, path, fmt, opts)
    for target, blob in blobs.items():
        write_bytes(target, blob, **opts.delivery)
    return list(blobs)


def _dicom_blobs(data: np.ndarray, affine: np.ndarray, path: Path, fmt: str, opts: WriteOptions) -> dict[Path, bytes]:
    """The encoded DICOM files of one volume, by the path each goes to."""
    labels, geom = opts.labels, geometry_from_affine(affine, data.shape[2])
    if fmt == "mosaic":
        if opts.vendor != "siemens":
            raise ValueError("mosaic is a Siemens format; use vendor='siemens'")
        return {path: _encode(mosaic_dataset(data, geom, opts.image_type, labels))}
    if fmt == "enhanced":
        return {path: _encode(enhanced_dataset(data, geom, opts.image_type, labels))}
    files = slice_paths(path, data.shape[2])
    return {f: _encode(ds) for f, ds in zip(files, slice_datasets(data, geom, opts.image_type, labels))}


def write_bytes(
    path: Path, blob: bytes, *, chunked: bool = False, chunk_delay: float = 0.05, n_chunks: int = 4
) -> None:
    """Put ``blob`` at ``path`` atomically (hidden temp name + rename) or deliberately in chunks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if chunked:
        step = max(1, -(-len(blob) // max(1, n_chunks)))
        with open(path, "wb") as f:
            for start in range(0, len(blob), step):
                if start:
                    time.sleep(chunk_delay)
                f.write(blob[start : start + step])
                f.flush()
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(blob)
    os.replace(tmp, path)


def _encode(ds: Dataset) -> bytes:
    buf = DicomBytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def _nifti_bytes(data: np.ndarray, affine: np.ndarray, path: Path, opts: WriteOptions) -> bytes:
    cls = {1: nib.Nifti1Image, 2: nib.Nifti2Image}[opts.nifti_version]
    img = cls(np.asarray(data, dtype=np.float32), np.asarray(affine, dtype=np.float64))
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    hdr = img.header
    hdr.set_xyzt_units("mm", "sec")
    if opts.tr is not None:
        hdr["pixdim"][4] = opts.tr
    hdr["descrip"] = f"fmriface acq={opts.acquisition} series={opts.series_number}".encode()
    raw = img.to_bytes()
    if path.name.endswith(".gz"):
        return gzip.compress(raw, compresslevel=1, mtime=0)
    return raw
