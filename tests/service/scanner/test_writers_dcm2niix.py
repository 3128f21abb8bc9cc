"""The scanner emulator's DICOM layouts read by an independent reader: dcm2niix (the dev extra's PyPI package)
converts what the writers wrote, and its voxels and affine equal fmriface's own reading of the same files.

This is what keeps the writers honest: a writer and a reader written by one hand can share a mistake; dcm2niix
shares none of ours.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from service.intake.assembly import read_volume
from service.scanner.writers import slice_paths, write_volume
from tests.service.realdata import canonical

SHAPE = (16, 18, 10)
LAYOUTS = [
    ("slices", "siemens"),  # XA interoperability (MFSPLIT)
    ("slices", "ge"),  # real-time EPI
    ("slices", "philips"),  # classic, temporal positions
    ("mosaic", "siemens"),
    ("enhanced", "siemens"),
    ("enhanced", "philips"),
]


def _dcm2niix() -> str:
    exe = shutil.which("dcm2niix") or str(Path(sys.executable).parent / "dcm2niix")
    if not Path(exe).exists():
        pytest.skip("dcm2niix is not installed (pip install dcm2niix; it is in the dev extra)")
    return exe


def _oblique_affine() -> np.ndarray:
    """A slab rotated 12 degrees about z and 5 about x, 3 x 3 x 3.5 mm."""
    a, b = np.deg2rad(12.0), np.deg2rad(5.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag([3.0, 3.0, 3.5])
    affine[:3, 3] = [-22.0, -31.0, -12.0]
    return affine


@pytest.mark.parametrize(("fmt", "vendor"), LAYOUTS, ids=[f"{f}-{v}" for f, v in LAYOUTS])
def test_dcm2niix_reads_the_emulators_files_as_fmriface_does(fmt, vendor, tmp_path):
    exe = _dcm2niix()
    rng = np.random.default_rng(3)
    affine = _oblique_affine()
    src, out = tmp_path / "dicom", tmp_path / "nifti"
    out.mkdir()
    volumes = [rng.integers(0, 3000, SHAPE).astype(np.float32) for _ in range(3)]
    first_files = []
    for acq, data in enumerate(volumes, start=1):
        name = src / (f"vol{acq:03d}" if fmt == "slices" else f"vol{acq:03d}.dcm")
        written = write_volume(data, affine, name, fmt, acquisition=acq, tr=2.0, vendor=vendor, series_number=5)
        assert written == (slice_paths(name, SHAPE[2]) if fmt == "slices" else [name])
        first_files.append(written[0])
    # Philips: dcm2niix's "precise" values (-p y), the values fmriface reads (stored x RS + RI, over RS x SS:
    # comparable across volumes whatever their scaling, PMC3998685). Enhanced files are converted one call each:
    # given several of these one-volume files in one folder, dcm2niix 1.0.20260724 converts each on its own and
    # saves all but the first as float32 holding the 16-bit values' bytes (seen here; its own reading of one file
    # is right, so that is what is compared)
    folders = [src] if fmt != "enhanced" else []
    for f in first_files if fmt == "enhanced" else []:
        folders.append(tmp_path / f.stem)
        folders[-1].mkdir()
        shutil.copy(f, folders[-1] / f.name)
    for k, folder in enumerate(folders):
        argv = [exe, "-p", "y", "-z", "n", "-b", "n", "-f", f"%s_{k}_%r", "-o", str(out), str(folder)]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    theirs = []
    for path in sorted(out.glob("*.nii")):  # one 4-D file, or (XA MFSPLIT, enhanced) one file per volume
        img = nib.as_closest_canonical(nib.load(path))
        data = np.asarray(img.dataobj)
        theirs += [(d, img.affine) for d in (np.moveaxis(data, 3, 0) if data.ndim == 4 else [data])]
    assert len(theirs) == len(volumes), [p.name for p in out.glob("*")]
    for acq, (path, written) in enumerate(zip(first_files, volumes), start=1):
        vol = read_volume(path)
        assert vol.acquisition == acq
        ours, ours_affine = canonical(vol.data, vol.affine)
        ref, ref_affine = theirs[acq - 1]
        np.testing.assert_array_equal(ours, ref)
        np.testing.assert_array_equal(ours, canonical(written, affine)[0])  # and what was written
        np.testing.assert_allclose(ours_affine, ref_affine, atol=1e-3)
