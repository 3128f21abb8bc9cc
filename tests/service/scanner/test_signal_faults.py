"""Signal faults of the scanner emulator: what the ground truth says was written is what an independent reader
(nibabel for NIfTI, pydicom's own pixel decoding and the files' rescale fields for DICOM) reads back; every clean
volume is written bit for bit as without signal faults (DICOM: the same pixel bytes and rescale; only the files'
acquisition and content times differ); the plan is deterministic with the seed."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pydicom
import pytest

from service.scanner.replay import FAULT_KINDS, ScannerEmulator, volume_file_name
from service.scanner.signal import SIGNAL_FAULT_KINDS, SignalFaults, gains
from service.scanner.writers import slice_paths

SHAPE = (10, 12, 7)
N = 14
#: One of each kind, in this order: spike at 3, slice-spike at 5, slice-dropout at 7, zero at 9, step at 11.
VOLUMES = (3, 5, 7, 9, 11)


def _run(n: int = N) -> tuple[np.ndarray, np.ndarray]:
    """Integer scanner-like data (about 1,000-2,400), bright enough in every slice to be a slice fault's target."""
    rng = np.random.default_rng(0)
    base = rng.integers(900, 1100, size=SHAPE).astype(np.float32)
    data = np.stack([base + 100.0 * (k + 1) for k in range(n)], axis=-1)
    affine = np.diag([3.0, 3.0, 3.5, 1.0])
    affine[:3, 3] = [-15, -18, -12]
    return data, affine


def _replay(tmp_path, name, fmt, signal=None, **kw):
    data, affine = _run()
    emu = ScannerEmulator(data, affine, tr=2.0, out_dir=tmp_path / name, fmt=fmt, asap=True, signal_faults=signal, **kw)
    with emu:
        assert emu.wait(60)
    return emu


def _read_nifti(folder, k):
    return np.asarray(nib.load(folder / volume_file_name("nifti", k + 1)).dataobj, np.float64)


def _read_dicom(folder, fmt, k):
    """Volume k [X, Y, Z] as pydicom decodes the pixels, with the file's rescale applied; and the rescale slope."""
    path = folder / volume_file_name(fmt, k + 1)
    if fmt == "slices":
        planes, slopes = [], []
        for f in slice_paths(path, SHAPE[2]):
            ds = pydicom.dcmread(f)
            planes.append(ds.pixel_array.T * float(ds.RescaleSlope) + float(ds.RescaleIntercept))
            slopes.append(float(ds.RescaleSlope))
        assert len(set(slopes)) == 1
        return np.stack(planes, axis=-1), slopes[0]
    ds = pydicom.dcmread(path)
    if fmt == "enhanced":
        rescale = ds.PerFrameFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
        slope, icpt = float(rescale.RescaleSlope), float(rescale.RescaleIntercept)
        return np.moveaxis(ds.pixel_array, 0, -1).transpose(1, 0, 2) * slope + icpt, slope
    slope, icpt = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    tiles, (cols, rows, n) = ds.pixel_array, SHAPE
    m = math.ceil(math.sqrt(n))
    planes = [tiles[(z // m) * rows : (z // m + 1) * rows, (z % m) * cols : (z % m + 1) * cols].T for z in range(n)]
    return np.stack(planes, axis=-1) * slope + icpt, slope


def _expected(clean: np.ndarray, emu: ScannerEmulator, k: int) -> np.ndarray:
    """What the ground truth says volume k holds, from the clean data and the records."""
    out = clean * gains(emu.signal_plan(), emu.n_volumes)[k]
    for f in emu.injected:
        if f.volume != k:
            continue
        if f.kind in ("spike", "zero"):
            out = out * f.magnitude
        elif f.kind in ("slice-spike", "slice-dropout"):
            out[:, :, f.slice] *= f.magnitude
    return out


def test_each_signal_fault_is_in_the_nifti_files_as_recorded(tmp_path):
    signal = SignalFaults(SIGNAL_FAULT_KINDS, volumes=VOLUMES)
    emu = _replay(tmp_path, "scan", "nifti", signal)
    data, _ = _run()
    rows = {f.volume: f for f in emu.injected}
    assert {k: rows[k].kind for k in VOLUMES} == dict(zip(VOLUMES, SIGNAL_FAULT_KINDS))
    assert [rows[k].magnitude for k in VOLUMES] == [100.0, 10.0, 0.0, 0.0, 1.05]
    assert rows[5].slice is not None and rows[7].slice is not None and rows[3].slice is None
    assert all(f.acquisition == f.volume + 1 and f.quantum == 0.0 for f in emu.injected)
    for k in range(N):
        got, clean = _read_nifti(tmp_path / "scan", k), data[..., k].astype(np.float64)
        if k in VOLUMES or k > VOLUMES[-1]:
            np.testing.assert_allclose(got, _expected(clean, emu, k), rtol=1e-6, err_msg=f"volume {k}")
        else:
            np.testing.assert_array_equal(got, data[..., k], err_msg=f"clean volume {k}")
    # the dropped slice is zero and only it; the spiked slice is x10 and only it
    np.testing.assert_array_equal(_read_nifti(tmp_path / "scan", 7)[:, :, rows[7].slice], 0.0)
    assert np.all(_read_nifti(tmp_path / "scan", 9) == 0.0)
    assert np.allclose(_read_nifti(tmp_path / "scan", 12), data[..., 12] * 1.05, rtol=1e-6)  # the step persists
    log = (tmp_path / "scan_faults.tsv").read_text().splitlines()
    assert log[0].split("\t") == ["volume", "acquisition", "fault", "file", "slice", "magnitude", "quantum"]
    spike = next(r.split("\t") for r in log[1:] if r.split("\t")[2] == "slice-spike")
    assert spike == ["5", "6", "slice-spike", "001_000001_000006.nii", str(rows[5].slice), "10", "0"]


@pytest.mark.parametrize("fmt", ["mosaic", "enhanced", "slices"])
def test_each_signal_fault_is_in_the_dicom_files_as_recorded(tmp_path, fmt):
    clean_emu = _replay(tmp_path, "clean", fmt)
    emu = _replay(tmp_path, "scan", fmt, SignalFaults(SIGNAL_FAULT_KINDS, volumes=VOLUMES))
    for k in range(N):
        got, slope = _read_dicom(tmp_path / "scan", fmt, k)
        clean, clean_slope = _read_dicom(tmp_path / "clean", fmt, k)
        assert clean_slope == 1.0  # integer data that fit 16 bits: stored exactly
        if k < VOLUMES[-1] and k not in VOLUMES:  # clean volumes: the same pixel bytes as a replay without faults
            files = sorted((tmp_path / "scan").glob(f"001_000001_{k + 1:06d}*"))
            for a, b in zip(files, sorted(clean_emu.written[k][2]), strict=True):
                assert pydicom.dcmread(a).PixelData == pydicom.dcmread(b).PixelData, f"volume {k}: {a.name}"
            assert slope == 1.0
            np.testing.assert_array_equal(got, clean)
            continue
        want = np.rint(_expected(clean, emu, k))  # a scanner writes integers
        record = next((f for f in emu.injected if f.volume == k), None)
        quantum = record.quantum if record is not None else 1.0
        assert slope == pytest.approx(quantum, rel=1e-6)
        # no value clipped: each within half a stored unit (plus the rounding to integers before storing)
        np.testing.assert_allclose(got, want, atol=quantum / 2 + 0.5 + 1e-6, rtol=0, err_msg=f"volume {k}")
    spike, _ = _read_dicom(tmp_path / "scan", fmt, 3)
    clean3, _ = _read_dicom(tmp_path / "clean", fmt, 3)
    assert spike.max() > 65535 and np.median(spike / clean3) == pytest.approx(100.0, rel=1e-3)  # x100, not clipped


def test_the_plan_is_deterministic_and_leaves_the_file_faults_alone(tmp_path):
    data, affine = _run(200)
    signal = SignalFaults(SIGNAL_FAULT_KINDS, rate=0.2)
    kw = dict(tr=2.0, fmt="nifti", asap=True, faults=FAULT_KINDS, fault_rate=0.1, signal_faults=signal)
    a = ScannerEmulator(data, affine, out_dir=tmp_path / "a", seed=5, **kw)
    b = ScannerEmulator(data, affine, out_dir=tmp_path / "b", seed=5, **kw)
    c = ScannerEmulator(data, affine, out_dir=tmp_path / "c", seed=6, **kw)
    plain = ScannerEmulator(data, affine, out_dir=tmp_path / "p", seed=5, **{**kw, "signal_faults": None})
    assert a.signal_plan() == b.signal_plan() and a.signal_plan() != c.signal_plan()
    assert {f.kind for f in a.signal_plan().values()} == set(SIGNAL_FAULT_KINDS)
    # the file faults' plan is the one a replay without signal faults makes, and no volume gets both
    assert [(j.volume, j.fault) for j in a.plan()] == [(j.volume, j.fault) for j in plain.plan()]
    busy = {j.volume for j in a.plan() if j.fault}
    assert not busy & set(a.signal_plan()) and min(a.signal_plan()) >= 5
    with a, b:
        assert a.wait(60) and b.wait(60)
    assert (tmp_path / "a_faults.tsv").read_text() == (tmp_path / "b_faults.tsv").read_text()
    recorded = {(f.volume, f.kind) for f in a.injected if f.kind in SIGNAL_FAULT_KINDS}
    assert recorded == {(k, f.kind) for k, f in a.signal_plan().items()}


def test_the_factors_are_options_and_bad_ones_are_refused():
    data, _ = _run()
    plan = SignalFaults(("spike", "slice-spike", "step"), volumes=(2, 4, 6), spike_factor=7.0, slice_factor=3.0,
                        step_factor=0.9).plan(data, seed=0)  # fmt: skip
    assert [(f.kind, f.magnitude) for f in plan.values()] == [("spike", 7.0), ("slice-spike", 3.0), ("step", 0.9)]
    np.testing.assert_allclose(gains(plan, N)[[5, 6, 13]], [1.0, 0.9, 0.9])
    with pytest.raises(ValueError, match="unknown signal fault"):
        SignalFaults(("boom",))
    with pytest.raises(ValueError, match="spike_factor"):
        SignalFaults(("spike",), spike_factor=float("nan"))
    with pytest.raises(ValueError, match="outside the run"):
        SignalFaults(("zero",), volumes=(N,)).plan(data, seed=0)
    assert not SignalFaults(("zero",), rate=0.0).active and SignalFaults(("zero",), volumes=(1,)).active


def test_a_slice_fault_hits_a_slice_through_the_head():
    data, _ = _run(40)
    data[:, :, [0, 6], :] = 3.0  # two empty slices at the edges of the field of view
    plan = SignalFaults(("slice-dropout",), rate=1.0, skip_first=0).plan(data, seed=1)
    assert len(plan) == 40 and {f.slice for f in plan.values()} <= set(range(1, 6))
