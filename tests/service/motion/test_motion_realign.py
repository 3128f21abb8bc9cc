"""``fmriface realign`` end to end on a small synthetic run, and its errors."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from fmriface.commands import realign
from fmriface.common import UsageError
from service.motion import GridMismatchError, SessionRegistrationError, framewise_displacement
from tests.service.motion.test_motion import Phantom, assert_close_params, grid_affine, make_run


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A 6-volume run with known motion (volume 0 unmoved), its unmoved reference and a mask, as NIfTI files."""
    folder = tmp_path_factory.mktemp("run")
    phantom = Phantom(1)
    aff = grid_affine(voxel=(3.0, 3.0, 3.5), tilt_deg=(10.0, 0.0, 0.0))
    run, true = make_run(phantom, aff, np.random.default_rng(7))
    img = nib.Nifti1Image(run, aff)
    img.header.set_zooms((3.0, 3.0, 3.5, 2.0))
    nib.save(img, folder / "sub-01_task-faces_run-01_bold.nii.gz")
    nib.save(nib.Nifti1Image(phantom.volume(aff), aff), folder / "reference.nii.gz")
    nib.save(nib.Nifti1Image(phantom.mask(aff).astype(np.uint8), aff), folder / "mask.nii.gz")
    return folder, true, run


def read_motion(path):
    lines = path.read_text().splitlines()
    return lines[0].split("\t"), np.loadtxt(path, skiprows=1, delimiter="\t", ndmin=2)


def test_realign_writes_motion_tsv_and_the_realigned_run(recorded, tmp_path, capsys):
    folder, true, run = recorded
    bold = folder / "sub-01_task-faces_run-01_bold.nii.gz"
    out = tmp_path / "qc"
    code = realign.main(
        [str(bold), "--reference", str(folder / "reference.nii.gz"), "--mask", str(folder / "mask.nii.gz")]
        + ["--out", str(out), "--write-realigned", "--json"]
    )
    assert code == 0
    header, table = read_motion(out / "motion.tsv")
    assert header == ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z", "fd"]
    assert table.shape == (run.shape[3], 7)
    for row, t in zip(table, true):
        assert_close_params(row[:6], t)
    np.testing.assert_allclose(table[:, 6], framewise_displacement(table[:, :6]), atol=1e-5)
    realigned = nib.load(out / "sub-01_task-faces_run-01_bold_realigned.nii.gz")
    assert realigned.shape == run.shape
    np.testing.assert_allclose(realigned.affine, nib.load(bold).affine)
    assert realigned.header.get_zooms()[3] == pytest.approx(2.0)
    summary = json.loads(capsys.readouterr().out)
    assert summary["volumes"] == run.shape[3]
    assert summary["max_fd_mm"] == pytest.approx(table[:, 6].max(), abs=1e-5)


def test_realign_to_a_volume_of_the_run_and_to_the_mean(recorded, tmp_path):
    folder, true, _ = recorded
    bold = str(folder / "sub-01_task-faces_run-01_bold.nii.gz")
    assert realign.main([bold, "--reference-volume", "0", "--out", str(tmp_path / "v0")]) == 0
    _, table = read_motion(tmp_path / "v0" / "motion.tsv")
    for row, t in zip(table, true):
        assert_close_params(row[:6], t, mm=0.15, deg=0.15)
    assert realign.main([bold, "--out", str(tmp_path / "mean")]) == 0
    _, mean_table = read_motion(tmp_path / "mean" / "motion.tsv")
    # Relative to the mean the offsets differ, but the motion between volumes is the same.
    np.testing.assert_allclose(np.diff(mean_table[:, :6], axis=0), np.diff(true, axis=0), atol=0.25)
    assert not (tmp_path / "mean" / "sub-01_task-faces_run-01_bold_realigned.nii.gz").exists()


def test_realign_errors(recorded, tmp_path):
    folder, _, run = recorded
    bold = str(folder / "sub-01_task-faces_run-01_bold.nii.gz")
    with pytest.raises(UsageError, match="does not exist"):
        realign.main([str(tmp_path / "missing.nii.gz"), "--out", str(tmp_path / "a")])
    with pytest.raises(UsageError, match="3-D image .* needs a 4-D run"):
        realign.main([str(folder / "reference.nii.gz"), "--out", str(tmp_path / "b")])
    other = tmp_path / "other.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(run.shape[:3], np.float32), grid_affine()), other)
    # a reference on another grid is registered across grids (another session's); an empty one cannot be
    with pytest.raises(SessionRegistrationError, match="other.nii.gz .* is empty or constant"):
        realign.main([bold, "--reference", str(other), "--out", str(tmp_path / "c")])
    mask = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((5, 6, 7), np.uint8), grid_affine()), mask)
    with pytest.raises(GridMismatchError, match="mask.nii.gz .* is not on the grid of"):
        realign.main([bold, "--mask", str(mask), "--out", str(tmp_path / "c2")])
    with pytest.raises(UsageError, match="outside the run's 6 volumes"):
        realign.main([bold, "--reference-volume", "9", "--out", str(tmp_path / "d")])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(UsageError, match="not empty"):
        realign.main([bold, "--out", str(tmp_path / "full")])


def test_realign_config_file(recorded, tmp_path):
    folder, true, _ = recorded
    cfg = tmp_path / "realign.toml"
    cfg.write_text("levels = [2, 1]\nn_points = [1500, 4000]\nmax_iter = [12, 8]\n")
    bold = str(folder / "sub-01_task-faces_run-01_bold.nii.gz")
    ref = str(folder / "reference.nii.gz")
    assert realign.main([bold, "--reference", ref, "--config", str(cfg), "--out", str(tmp_path / "o")]) == 0
    _, table = read_motion(tmp_path / "o" / "motion.tsv")
    for row, t in zip(table, true):
        assert_close_params(row[:6], t)
    bad = tmp_path / "bad.toml"
    bad.write_text("levels = [3, 1]\nn_points = [100, 100]\nmax_iter = [5, 5]\n")
    from fmriface.config import ConfigError

    with pytest.raises(ConfigError, match="powers of two"):
        realign.main([bold, "--config", str(bad), "--out", str(tmp_path / "p")])


def test_the_front_door_prints_one_line_for_a_grid_mismatch(recorded, tmp_path, monkeypatch, capsys):
    from fmriface.cli import main

    folder, _, run = recorded
    other = tmp_path / "other.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((5, 6, 7), np.float32), grid_affine()), other)
    monkeypatch.delenv("FMRIFACE_RAISE", raising=False)
    bold = str(folder / "sub-01_task-faces_run-01_bold.nii.gz")
    assert main(["realign", bold, "--reference", str(other), "--out", str(tmp_path / "q")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fmriface realign: error:") and "(5, 6, 7)" in err[0]
