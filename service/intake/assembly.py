"""Assemble volumes from files: one scanner volume, whatever the format, into a :class:`~service.volume.Volume`.

Parsing one DICOM file is :func:`service.dicom.parse_dicom`'s; here files are sniffed, NIfTI is read, and the
parsed images of one volume (one mosaic or enhanced file, or a set of slice files) are put together.

Formats: Siemens classic mosaic (CSA header), Siemens XA / Philips enhanced multi-frame, one file per slice
(GE, Philips or Siemens classic, assembled by position along the slice normal), NIfTI-1 and NIfTI-2 3-D
(``.nii``, ``.nii.gz``). The same volume gives the same float32 array and RAS+ affine in every format (see
:mod:`service.volume` for the array convention). Every file is read in one go and judged by its content:
shorter than its header says -> :class:`IncompleteFileError`; unusable -> :class:`CorruptFileError`; not an
image volume -> :class:`UnsupportedFileError`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom

from service.dicom.formats import volume_key
from service.dicom.geometry import affine_from_dicom, check_even_spacing
from service.dicom.parse import DicomImage, parse_dicom
from service.dicom.vendor import vendor_of
from service.volume import (
    CorruptFileError,
    IncompleteFileError,
    IntakeError,
    ShapeMismatchError,
    UnsupportedFileError,
    Volume,
)

__all__ = [
    "read_volume",
    "read_slices",
    "read_image",
    "assemble",
    "sniff",
    "IntakeError",
    "IncompleteFileError",
    "CorruptFileError",
    "ShapeMismatchError",
    "UnsupportedFileError",
]

_NIFTI_SUFFIXES = (".nii", ".nii.gz")


def sniff(path: str | Path, head: bytes) -> str | None:
    """``"dicom"``, ``"nifti"`` or None (not a scanner file) from the name and the first 132 bytes."""
    name = Path(path).name.lower()
    if name.endswith(_NIFTI_SUFFIXES):
        return "nifti"
    if (len(head) >= 132 and head[128:132] == b"DICM") or name.endswith((".dcm", ".ima")):
        return "dicom"
    return None


def read_image(
    path: str | Path,
    raw: bytes | None = None,
    *,
    pixels: bool = True,
    sha256: str | None = None,
    kind: str | None = None,
) -> DicomImage | Volume:
    """Parse one file: a :class:`DicomImage` for DICOM (a slice may need its siblings), a Volume for NIfTI.

    ``raw`` is the file's content when already read; ``pixels=False`` parses a DICOM header only. A caller that
    has already hashed and sniffed ``raw`` (the watcher) passes ``sha256`` and ``kind`` so neither is redone.
    """
    path = Path(path)
    t_seen = time.time()
    raw = path.read_bytes() if raw is None else raw
    kind = kind or sniff(path, raw[:132])
    sha256 = sha256 or hashlib.sha256(raw).hexdigest()
    if kind == "nifti":
        return _nifti_volume(raw, path, t_seen, sha256)
    if kind != "dicom":
        raise UnsupportedFileError(path, "neither DICOM nor NIfTI")
    img = parse_dicom(raw, path, pixels=pixels)
    img.sha256 = sha256
    return img


def read_volume(path: str | Path) -> Volume:
    """Read the volume in ``path`` (any supported format).

    For one file of a slice-per-file series the sibling files in the same folder with the same series and
    acquisition are gathered (:func:`read_slices`). ``index`` is ``acquisition - 1`` here (the watcher sets
    the real position in the series).
    """
    path = Path(path)
    t_seen = time.time()
    got = read_image(path)
    if isinstance(got, Volume):
        return got
    if got.fmt != "slice":
        return assemble([got], t_seen)
    siblings = [got]
    for other in sorted(path.parent.iterdir()):
        if other == path or other.name.startswith(".") or not other.is_file():
            continue
        if not _same_volume(other, got):
            continue
        try:
            img = read_image(other)
        except IntakeError:
            continue
        if (
            isinstance(img, DicomImage)
            and img.fmt == "slice"
            and img.run_uid == got.run_uid
            and img.acquisition == got.acquisition
        ):
            siblings.append(img)
    return assemble(siblings, t_seen)


def _same_volume(path: Path, img: DicomImage) -> bool:
    """A header look (no pixel data read): the same run and volume number as ``img``, by intake's rules?"""
    # Anything unreadable is simply not a sibling: pydicom converts values lazily, so a damaged header can
    # raise on any access below, not only in dcmread (an unknown VR, a multi-valued or garbled number).
    try:
        run, volume = volume_key(pydicom.dcmread(path, stop_before_pixels=True))
        return run == img.run_uid and volume == img.acquisition
    except Exception:  # noqa: BLE001
        return False


def read_slices(paths: Sequence[str | Path]) -> Volume:
    """Assemble one volume from its slice files (any order)."""
    t_seen = time.time()
    images = [read_image(p) for p in paths]
    if not all(isinstance(i, DicomImage) for i in images):
        raise UnsupportedFileError(Path(paths[0]), "read_slices takes DICOM slice files only")
    return assemble(images, t_seen)  # type: ignore[arg-type]


def _order(images: list[DicomImage], normal: np.ndarray) -> list[DicomImage]:
    """Slice order: instance numbers when positions run monotonically along them, else position."""
    by_instance = sorted(images, key=lambda i: (i.instance is None, i.instance or 0))
    along = np.array([float(i.positions[0] @ normal) for i in by_instance])
    steps = np.diff(along)
    if len(steps) and (np.all(steps > 0) or np.all(steps < 0)):
        return by_instance
    return sorted(images, key=lambda i: float(i.positions[0] @ normal))


def assemble(images: list[DicomImage], t_seen: float | None = None) -> Volume:
    """Build the Volume of one mosaic / enhanced file or of one complete set of slice files."""
    first = images[0]
    normal = np.cross(first.iop[:3], first.iop[3:])
    normal /= np.linalg.norm(normal)
    if first.fmt == "slice":
        if first.slices_expected is not None and len(images) < first.slices_expected:
            raise IncompleteFileError(
                first.path, f"acquisition {first.acquisition}: {len(images)} of {first.slices_expected} slices"
            )
        for img in images[1:]:
            if img.frames.shape[1:] != first.frames.shape[1:]:
                raise ShapeMismatchError(img.path, img.matrix, first.matrix)
            if not (np.allclose(img.iop, first.iop, atol=1e-4) and np.allclose(img.pixel_spacing, first.pixel_spacing)):
                raise CorruptFileError(img.path, "slice orientation or pixel spacing differs from its volume's")
        images = _order(images, normal)
        first = images[0]
        frames = np.concatenate([i.frames for i in images])
        positions = np.concatenate([i.positions for i in images])
        sha = hashlib.sha256("".join(i.sha256 for i in images).encode()).hexdigest()
    else:
        frames, positions, sha = first.frames, first.positions, first.sha256
        if first.fmt == "enhanced":
            along = positions @ normal
            if len(along) > 1 and not (np.all(np.diff(along) > 0) or np.all(np.diff(along) < 0)):
                order = np.argsort(along, kind="stable")
                frames, positions = frames[order], positions[order]
    if len(positions) > 1:
        problem = check_even_spacing(positions, normal)
        if problem:
            raise CorruptFileError(first.path, problem)
    affine = affine_from_dicom(first.iop, first.pixel_spacing, positions, first.spacing, first.normal_hint)
    _check_affine(affine, first.path)
    fmt = first.fmt if first.fmt != "slice" else "slices"
    if vendor_of(first.vendor) == "philips":
        fmt = f"philips-{fmt}"
    return Volume(
        index=max(first.acquisition - 1, 0),
        acquisition=first.acquisition,
        data=np.ascontiguousarray(frames.transpose(2, 1, 0), dtype=np.float32),
        affine=affine,
        tr=first.tr,
        path=first.path,
        sha256=sha,
        series=first.run_uid,
        t_seen=t_seen if t_seen is not None else time.time(),
        t_ready=time.time(),
        fmt=fmt,
        series_number=first.series_number,
    )


def _nifti_layout(hdr, size: int, path: Path) -> tuple[tuple[int, ...], np.dtype, int, np.ndarray]:
    """Shape, dtype, data offset and affine of a single-file NIfTI header, or a named error."""
    magic = bytes(hdr["magic"]).rstrip(b"\x00")
    if magic[:3] not in (b"n+1", b"n+2"):
        raise CorruptFileError(path, f"NIfTI magic {magic!r}: not a single-file NIfTI")
    dim = [int(v) for v in hdr["dim"]]
    if not 1 <= dim[0] <= 7 or min(dim[1 : dim[0] + 1]) < 1:
        raise CorruptFileError(path, f"NIfTI dim {dim[: max(1, min(dim[0], 7)) + 1]} is not a valid image size")
    shape = tuple(dim[1 : dim[0] + 1])
    shape = shape[:3] if len(shape) == 4 and shape[3] == 1 else shape
    if len(shape) != 3:
        raise UnsupportedFileError(path, f"NIfTI image of shape {shape}; intake takes one 3-D volume per file")
    try:
        dtype = hdr.get_data_dtype()
    except Exception:  # noqa: BLE001 - an unknown datatype code
        raise CorruptFileError(path, f"NIfTI datatype code {int(hdr['datatype'])} is not supported") from None
    if dtype.kind not in "iuf":
        raise UnsupportedFileError(path, f"NIfTI data type {dtype} is not a real scalar")
    offset = float(hdr["vox_offset"])
    if not np.isfinite(offset) or offset < size + 4:
        raise CorruptFileError(path, f"NIfTI vox_offset {offset} lies inside the header")
    affine = np.asarray(hdr.get_best_affine(), dtype=np.float64)
    _check_affine(affine, path)
    return shape, dtype, int(offset), affine


def _check_affine(affine: np.ndarray, path: Path) -> None:
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise CorruptFileError(path, f"voxel-to-world affine is not usable: {np.round(affine, 4).tolist()}")


def _nifti_volume(raw: bytes, path: Path, t_seen: float, sha: str) -> Volume:
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except EOFError:
            raise IncompleteFileError(path, "gzip stream ends before its end-of-stream marker") from None
        except (OSError, zlib.error) as exc:
            raise CorruptFileError(path, f"gzip stream unreadable: {exc}") from None
    if len(raw) < 4:
        raise IncompleteFileError(path, f"only {len(raw)} bytes of NIfTI header")
    sizes = {int.from_bytes(raw[:4], "little"): "<", int.from_bytes(raw[:4], "big"): ">"}
    klass = {348: nib.Nifti1Header, 540: nib.Nifti2Header}
    size = next((s for s in sizes if s in klass), None)
    if size is None:
        raise CorruptFileError(path, f"not a NIfTI header (sizeof_hdr {int.from_bytes(raw[:4], 'little')})")
    if len(raw) < size:
        raise IncompleteFileError(path, f"{len(raw)} bytes, the NIfTI header alone needs {size}")
    try:
        hdr = klass[size].from_fileobj(io.BytesIO(raw[: size + 4]), check=False)
        shape, dtype, offset, affine = _nifti_layout(hdr, size, path)
    except IntakeError:
        raise
    except Exception as exc:  # nibabel raises several types for a bad header
        raise CorruptFileError(path, f"NIfTI header unreadable: {type(exc).__name__}: {exc}") from None
    needed = offset + int(np.prod(shape)) * dtype.itemsize
    if len(raw) < needed:
        raise IncompleteFileError(path, f"{len(raw)} bytes, the NIfTI header implies {needed}")
    data = np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape)), offset=offset).reshape(shape, order="F")
    data = np.ascontiguousarray(data, dtype=np.float32)
    slope, inter = float(hdr["scl_slope"]), float(hdr["scl_inter"])
    if slope != 0.0 and not np.isnan(slope):  # NIfTI: a slope of 0 or NaN means unscaled
        if not (np.isfinite(slope) and np.isfinite(inter)):
            raise CorruptFileError(path, f"NIfTI scaling slope {slope}, intercept {inter} is not usable")
        if slope != 1.0:
            data *= np.float32(slope)
        if inter != 0.0:
            data += np.float32(inter)
    descrip = bytes(hdr["descrip"]).split(b"\x00", 1)[0].decode("latin-1", "replace")
    acq = re.search(r"acq=(\d+)", descrip)
    numbers = re.findall(r"\d+", path.name.split(".")[0])
    acquisition = int(acq.group(1)) if acq else (int(numbers[-1]) if numbers else 0)
    series = re.search(r"series=(\d+)", descrip)
    tr = float(hdr["pixdim"][4])
    try:
        unit = hdr.get_xyzt_units()[1]
    except KeyError:  # an unknown units code: take seconds, the usual case
        unit = "sec"
    tr = tr / 1000.0 if unit == "msec" else tr / 1e6 if unit == "usec" else tr
    return Volume(
        index=max(acquisition - 1, 0),
        acquisition=acquisition,
        data=data,
        affine=affine,
        tr=tr if np.isfinite(tr) and tr > 0 else None,
        path=path,
        sha256=sha,
        series=series.group(1) if series else "",
        t_seen=t_seen,
        t_ready=time.time(),
        fmt="nifti",
        series_number=int(series.group(1)) if series else None,
    )
