"""`fmriface replay --signal-faults`: the volumes asked for get the faults asked for, at the sizes asked for, listed
in ``<to>_faults.tsv``; bad options are refused before anything is written."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from fmriface.commands.replay import main as replay
from fmriface.common import UsageError


@pytest.fixture
def run_file(tmp_path):
    rng = np.random.default_rng(0)
    data = (1000 + rng.integers(0, 50, size=(8, 9, 6, 20))).astype(np.float32)
    path = tmp_path / "run_bold.nii.gz"
    img = nib.Nifti1Image(data, np.diag([3.0, 3.0, 3.5, 1.0]))
    img.header.set_zooms((3.0, 3.0, 3.5, 2.0))
    nib.save(img, path)
    return path, data


def test_replay_injects_the_signal_faults_asked_for(run_file, tmp_path):
    path, data = run_file
    to = tmp_path / "scanner"
    argv = ["--run", str(path), "--to", str(to), "--format", "nifti", "--asap", "--signal-faults", "spike,zero,step",
            "--signal-fault-volumes", "4,9,15", "--spike-factor", "20", "--step-factor", "0.8"]  # fmt: skip
    assert replay(argv) == 0
    rows = [r.split("\t") for r in (tmp_path / "scanner_faults.tsv").read_text().splitlines()]
    assert rows[0] == ["volume", "acquisition", "fault", "file", "slice", "magnitude", "quantum"]
    assert [(r[0], r[2], r[5]) for r in rows[1:]] == [("4", "spike", "20"), ("9", "zero", "0"), ("15", "step", "0.8")]
    got = [np.asarray(nib.load(to / f"001_000001_{k + 1:06d}.nii").dataobj) for k in (3, 4, 9, 16)]
    np.testing.assert_array_equal(got[0], data[..., 3])
    np.testing.assert_allclose(got[1], data[..., 4] * 20, rtol=1e-6)
    assert not got[2].any()
    np.testing.assert_allclose(got[3], data[..., 16] * 0.8, rtol=1e-6)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--signal-faults", "boom"], "unknown signal fault"),
        (["--signal-faults", "spike", "--spike-factor", "-3"], "--spike-factor -3 must be a positive factor"),
        (["--signal-faults", "spike", "--signal-fault-rate", "2"], "--signal-fault-rate 2 must be between 0 and 1"),
        (["--signal-faults", "spike", "--signal-fault-volumes", "a,b"], "must be a comma list of volume indices"),
        (["--signal-fault-volumes", "3"], "without a signal fault kind"),
        (["--signal-faults", "zero", "--signal-fault-volumes", "3,20"], r"\[20\] beyond the run's 20 volumes"),
    ],
)
def test_replay_refuses_bad_signal_fault_options(run_file, tmp_path, extra, message):
    with pytest.raises(UsageError, match=message):
        replay(["--run", str(run_file[0]), "--to", str(tmp_path / "s"), "--asap", *extra])
    assert not (tmp_path / "s").exists()
