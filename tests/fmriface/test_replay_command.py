from __future__ import annotations

import pytest

from fmriface.cli import main
from fmriface.commands.replay import main as replay
from fmriface.common import UsageError
from service.intake.assembly import read_volume


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    out = tmp_path_factory.mktemp("twin") / "bids"
    assert main(["simulate", "--preset", "tiny", "--out", str(out)]) == 0
    return out


def test_replay_a_bids_run_as_the_scanner_names_it(twin, tmp_path):
    to = tmp_path / "scanner"
    assert replay(["--bids", str(twin), "--session", "01", "--task", "faces", "--run", "1", "--to", str(to), "--format", "mosaic",
                   "--asap", "--max-volumes", "5"]) == 0  # fmt: skip
    files = sorted(to.iterdir())
    assert [f.name for f in files] == [f"001_000001_{k:06d}.dcm" for k in range(1, 6)]
    vols = [read_volume(f) for f in files]
    assert [v.acquisition for v in vols] == [1, 2, 3, 4, 5]
    assert vols[0].tr == pytest.approx(2.0)


def test_replay_with_faults_lists_them(twin, tmp_path):
    to = tmp_path / "scanner"
    bold = next(twin.glob("sub-01/ses-01/func/*task-faces_run-01_bold.nii.gz"))
    args = ["--run", str(bold), "--to", str(to), "--format", "nifti", "--asap", "--faults", "drop,duplicate",
            "--fault-rate", "0.5", "--seed", "3", "--max-volumes", "12"]  # fmt: skip
    assert replay(args) == 0
    log = (tmp_path / "scanner_faults.tsv").read_text().splitlines()
    assert len(log) > 1 and {row.split("\t")[2] for row in log[1:]} <= {"drop", "duplicate"}


def test_replay_bad_input_names_the_problem(twin, tmp_path):
    with pytest.raises(UsageError, match="several bold files match run-01.*--task"):
        replay(["--bids", str(twin), "--run", "1", "--to", str(tmp_path / "s")])
    with pytest.raises(UsageError, match="no bold file.*run-99"):
        replay(["--bids", str(twin), "--run", "99", "--to", str(tmp_path / "s")])
    with pytest.raises(UsageError, match="does not exist"):
        replay(["--run", str(tmp_path / "nope.nii.gz"), "--to", str(tmp_path / "s")])
    three_d = tmp_path / "vol.nii.gz"
    import nibabel as nib
    import numpy as np

    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), np.float32), np.eye(4)), three_d)
    with pytest.raises(UsageError, match="not a 4-D run"):
        replay(["--run", str(three_d), "--to", str(tmp_path / "s")])
    with pytest.raises(UsageError, match="unknown fault"):
        replay(["--run", str(next(twin.rglob("*_bold.nii.gz"))), "--to", str(tmp_path / "s"), "--faults", "boom"])
