"""Real scanner exports for the tests (``tests/data/scanner-data``, see its PROVENANCE.md): decompressed into a
temporary folder, ordered as the scanner wrote them, with what an independent reader says they hold.

Nothing here uses fmriface's readers: the order comes from the DICOM headers read with pydicom, the expected
voxels and affines from dcm2niix (its reference conversions, or the ``dcm2niix`` program run here).
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom

DATA = Path(__file__).resolve().parents[1] / "data" / "scanner-data"


@dataclass(frozen=True)
class RealSeries:
    """One real export and what is known of it independently (the data set's README, dcm2niix)."""

    name: str
    matrix: tuple[int, int, int]
    voxel_mm: tuple[float, float, float]
    tr_s: float
    volumes: int
    export: str
    #: values of the patient fields (pseudonyms) that must never reach an output; short IDs are left out
    #: (a 3-digit ID also occurs inside any number)
    patient: tuple[str, ...]

    @property
    def source(self) -> Path:
        return DATA / self.name

    @property
    def reference(self) -> Path | None:
        found = sorted(self.source.glob("dcm2niix-reference.nii*"))
        return found[0] if found else None


SERIES = (
    RealSeries(
        "siemens-xa30-interoperability",
        (64, 64, 33),
        (3.375, 3.375, 3.4),
        1.0,
        3,
        "siemens-xa-interoperability",
        ("Development", "19990101"),
    ),
    RealSeries("ge-epirt", (64, 64, 8), (3.2969, 3.2969, 3.3), 1.5, 3, "ge-slices", ("Phantom", "Test01", "19800101")),
    RealSeries(
        "siemens-xa30-enhanced",
        (64, 64, 33),
        (3.375, 3.375, 3.4),
        1.0,
        5,
        "siemens-xa-enhanced",
        ("XAtest", "12343@hucheng", "19910101"),
    ),
    RealSeries("siemens-e11-mosaic", (86, 86, 51), (2.5, 2.5, 2.5), 1.3, 2, "siemens-mosaic", ("crlab", "19900101")),
)
BY_NAME = {s.name: s for s in SERIES}


def decompress(series: RealSeries, into: Path) -> list[Path]:
    """The series' files decompressed into ``into`` (one flat folder), in acquisition order."""
    into.mkdir(parents=True, exist_ok=True)
    out = []
    for gz in sorted(series.source.rglob("*.dcm.gz")):
        target = into / gz.name[: -len(".gz")]
        with gzip.open(gz, "rb") as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
        out.append(target)
    return acquisition_order(out)


def _seconds(value: str) -> float:
    """``HHMMSS.frac`` or ``YYYYMMDDHHMMSS.frac`` as seconds (for ordering only)."""
    text = str(value or "0")
    whole, _, frac = text.partition(".")
    hms = whole[-6:].rjust(6, "0")
    day = int(whole[:-6]) if len(whole) > 6 else 0
    return day * 86400 + int(hms[:2]) * 3600 + int(hms[2:4]) * 60 + int(hms[4:6]) + float(f"0.{frac or 0}")


def acquisition_order(files: list[Path]) -> list[Path]:
    """Files in the order the scanner acquired them: by acquisition date-time, then instance number."""

    def key(path: Path) -> tuple[float, int]:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        when = ds.get("AcquisitionDateTime") or ds.get("AcquisitionTime") or ds.get("ContentTime")
        return _seconds(when), int(ds.get("InstanceNumber") or 0)

    return sorted(files, key=key)


def canonical(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Voxels and affine after reorientation to the closest canonical (RAS+) orientation, as nibabel gives."""
    img = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(data), affine))
    return np.asarray(img.dataobj), img.affine


def reference_volumes(series: RealSeries, workdir: Path) -> tuple[np.ndarray, np.ndarray]:
    """dcm2niix's reading of the series, canonical: ``[X, Y, Z, T]`` voxels and the affine.

    From the shipped reference conversion where there is one, else by running the ``dcm2niix`` program (the
    dev extra's PyPI package) on the decompressed files here.
    """
    path = series.reference
    if path is None:
        files = decompress(series, workdir / "dicom")
        out = workdir / "dcm2niix"
        out.mkdir(parents=True, exist_ok=True)
        exe = shutil.which("dcm2niix") or str(Path(sys.executable).parent / "dcm2niix")
        proc = subprocess.run(
            [exe, "-z", "n", "-b", "n", "-f", "ref", "-o", str(out), str(files[0].parent)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        path = next(out.glob("ref*.nii"))
    img = nib.as_closest_canonical(nib.load(str(path)))
    data = np.asarray(img.dataobj)
    return (data if data.ndim == 4 else data[..., None]), img.affine
