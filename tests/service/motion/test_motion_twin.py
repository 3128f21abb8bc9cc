"""Cross-check with the digital twin, which generates head motion in the same convention independently.

``fmriface simulate`` (the tiny preset) writes runs and their true motion; ``fmriface realign`` must recover that
motion (relative to the reference volume) from the images alone, BOLD signal, drift and noise included.
"""

from __future__ import annotations

import numpy as np
import pytest

from service.motion import rigid_matrix


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    pytest.importorskip("nilearn")
    from fmriface.commands import simulate

    out = tmp_path_factory.mktemp("twin")
    assert simulate.main(["--config", "simulate-tiny", "--out", str(out / "bids")]) == 0
    return out


def test_realign_recovers_the_twins_motion(twin):
    import nibabel as nib

    from fmriface.commands import realign

    bids = twin / "bids"
    bolds = sorted((bids / "sub-01" / "ses-01" / "func").glob("*task-faces*_bold.nii.gz"))
    brain_path = bids / "derivatives" / "twin" / "sub-01" / "brain_mask.nii.gz"
    assert bolds and brain_path.is_file()
    for bold in bolds[:2]:
        stem = bold.name.removesuffix("_bold.nii.gz")
        truth_path = next((bids / "derivatives" / "twin").rglob(f"{stem}*_motion.tsv"))
        truth = np.loadtxt(truth_path, skiprows=1, delimiter="\t", ndmin=2)
        out = twin / f"qc-{stem}"
        assert realign.main([str(bold), "--reference-volume", "0", "--mask", str(brain_path), "--out", str(out)]) == 0
        est = np.loadtxt(out / "motion.tsv", skiprows=1, delimiter="\t", ndmin=2)[:, :6]
        img = nib.load(bold)
        ijk = np.argwhere(np.asarray(nib.load(brain_path).dataobj) > 0).T
        points = img.affine @ np.vstack([ijk, np.ones((1, ijk.shape[1]))])
        # Volume t relative to volume 0: a point at M_0 x (volume 0) is at M_t x, so T = M_t M_0^-1.
        to_ref = np.linalg.inv(rigid_matrix(truth[0]))
        err = np.array(
            [
                np.linalg.norm(((rigid_matrix(e) - rigid_matrix(t) @ to_ref) @ points)[:3], axis=0).mean()
                for e, t in zip(est, truth)
            ]
        )
        moved = np.array(
            [np.linalg.norm(((np.eye(4) - rigid_matrix(t) @ to_ref) @ points)[:3], axis=0).mean() for t in truth]
        )
        assert moved.max() > 0.3, "the twin's run should move"
        # On the tiny preset's 9.6 x 8 x 7.9 mm voxels: a tenth of a millimetre.
        assert err.mean() < 0.1 and err.max() < 0.2, (err.mean(), err.max(), moved.max())
