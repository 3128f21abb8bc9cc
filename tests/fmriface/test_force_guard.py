"""``--force`` never deletes a command's own input: one guard (``fmriface.common.prepare_out_dir``) for every
command that has the option. Each case below deleted the input on the old main (exit 0)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from fmriface import cli
from fmriface.common import UsageError, prepare_out_dir


@pytest.fixture(autouse=True)
def _as_a_user(monkeypatch):
    monkeypatch.setenv("FMRIFACE_RAISE", "0")  # the front door's behaviour: one line and exit status 1


def _files(folder):
    return sorted(p.relative_to(folder) for p in folder.rglob("*"))


def test_the_guard_refuses_an_out_that_is_or_holds_an_input(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "run.nii").write_bytes(b"x")
    with pytest.raises(UsageError, match=r"input .*run.nii is inside it"):
        prepare_out_dir(data, True, inputs=[data / "run.nii"])
    with pytest.raises(UsageError, match="is that folder"):
        prepare_out_dir(data, True, inputs=[data])
    assert (data / "run.nii").exists()
    # an --out inside an input folder (BIDS derivatives) and unrelated inputs are fine
    (data / "derivatives").mkdir()
    (data / "derivatives" / "old").write_text("old")
    assert prepare_out_dir(data / "derivatives", True, inputs=[data, None]) == data / "derivatives"
    assert (data / "run.nii").exists() and not (data / "derivatives" / "old").exists()


def test_export_with_out_its_own_face_space_deletes_nothing(tmp_path, capsys):
    from offline.facespace import fit_pca

    rng = np.random.default_rng(0)
    space = fit_pca((rng.random((12, 16, 16, 3)) * 255).astype(np.uint8), 4)
    folder = tmp_path / "space"
    space.save(folder)
    before = _files(folder)
    assert cli.main(["export", "--vaegan", str(folder), "--out", str(folder), "--force"]) == 1
    assert "--force would delete" in capsys.readouterr().err
    assert _files(folder) == before


def test_realign_into_the_runs_folder_deletes_nothing(tmp_path, capsys):
    folder = tmp_path / "func"
    folder.mkdir()
    run = folder / "run.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(1).random((8, 8, 6, 3)).astype(np.float32), np.eye(4)), run)
    assert cli.main(["realign", str(run), "--out", str(folder), "--force"]) == 1
    assert "run.nii.gz is inside it" in capsys.readouterr().err
    assert run.exists()


def test_fit_into_its_bids_folder_deletes_nothing(tmp_path, capsys):
    from offline.facespace import fit_pca

    bids = tmp_path / "bids"
    assert cli.main(["simulate", "--preset", "tiny", "--out", str(bids)]) == 0
    capsys.readouterr()
    space = tmp_path / "space"
    fit_pca((np.random.default_rng(0).random((12, 16, 16, 3)) * 255).astype(np.uint8), 4).save(space)
    before = _files(bids)
    assert (
        cli.main(
            ["fit", "--config", "fit-tiny", "--bids", str(bids), "--vaegan", str(space), "--out", str(bids), "--force"]
        )
        == 1
    )
    assert "--force would delete" in capsys.readouterr().err
    assert _files(bids) == before


def test_realign_refuses_an_all_zero_mask_and_a_nan_volume_naming_them(tmp_path, capsys):
    rng = np.random.default_rng(2)
    data = rng.random((8, 8, 6, 4)).astype(np.float32)
    run = tmp_path / "run.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), run)
    mask = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 6), np.uint8), np.eye(4)), mask)
    assert cli.main(["realign", str(run), "--mask", str(mask), "--out", str(tmp_path / "a")]) == 1
    assert "mask.nii.gz selects no voxel" in capsys.readouterr().err
    data[2, 3, 1, 2] = np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4)), run)
    assert cli.main(["realign", str(run), "--out", str(tmp_path / "b")]) == 1
    assert "volume(s) 2 hold NaN" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
