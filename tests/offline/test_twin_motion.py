"""The twin's motion follows the project convention, and its ground truth undoes the motion it applied."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from fmriface.config import load_config, preset_path
from offline.twin import SimulateConfig, rigid_matrix, simulate
from offline.twin.anatomy import scanner_affine
from offline.twin.motion import MovedGrid


@pytest.mark.parametrize(
    ("params", "point", "expected"),
    [
        ((0, 0, 0, 0, 0, 90), (1, 0, 0), (0, 1, 0)),  # right-handed about z: x -> y
        ((0, 0, 0, 90, 0, 0), (0, 1, 0), (0, 0, 1)),  # about x: y -> z
        ((0, 0, 0, 0, 90, 0), (0, 0, 1), (1, 0, 0)),  # about y: z -> x
        ((0, 0, 0, 90, 0, 90), (0, 1, 0), (0, 0, 1)),  # Rz @ Ry @ Rx: x first, then z (which leaves z alone)
        ((0, 0, 0, 90, 0, 90), (1, 0, 0), (0, 1, 0)),
        ((1, -2, 3, 0, 0, 0), (5, 5, 5), (6, 3, 8)),  # translation in mm
    ],
)
def test_rigid_matrix_convention(params, point, expected):
    moved = rigid_matrix(params) @ np.array([*point, 1.0])
    assert np.allclose(moved[:3], expected, atol=1e-12)


def test_a_blob_moves_to_r_x_plus_t():
    shape, vox = (40, 44, 30), (3.0, 3.0, 3.5)
    affine = scanner_affine(shape, vox, oblique_deg=7.0)
    x0 = np.array([12.0, -20.0, 9.0])  # world mm
    ijk = np.indices(shape).reshape(3, -1).T
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    blob = np.exp(-np.sum((world - x0) ** 2, 1) / (2 * 5.0**2)).reshape(shape).astype(np.float32)
    params = np.array([2.0, -1.5, 1.0, 3.0, -2.0, 4.0])
    grid = MovedGrid(affine, shape, np.ones(shape, bool), order=1)
    moved = grid.move(blob, params).reshape(-1)
    centroid = (world * moved[:, None]).sum(0) / moved.sum()
    m = rigid_matrix(params)
    assert np.allclose(centroid, m[:3, :3] @ x0 + m[:3, 3], atol=0.1)


def test_motion_ground_truth_matches_the_transform_applied(tmp_path):
    overrides = {
        "grid.shape": [32, 32, 20],
        "grid.voxel_size": [6.0, 6.0, 6.3],
        "grid.oblique_deg": 8.0,
        "paradigm.train_runs_per_session": 1,
        "paradigm.test_runs_per_session": 0,
        "paradigm.imagery_runs_per_session": 0,
        "noise.tsnr": 2000.0,
        "noise.drift_percent": 0.0,
        "motion.max_mm": 6.0,
        "motion.order": 3,
        "motion.max_deg": 6.0,
        "motion.drift_mm": 5.0,
        "motion.jerk_mm": 3.0,
    }
    cfg = load_config(SimulateConfig, preset_path("simulate-tiny"), overrides)
    simulate(cfg, tmp_path)
    stem = "sub-01_ses-01_task-faces_run-01"
    img = nib.load(tmp_path / "sub-01/ses-01/func" / f"{stem}_bold.nii.gz")
    data, affine = img.get_fdata(dtype=np.float32), img.affine
    motion = pd.read_csv(tmp_path / "derivatives/twin/sub-01/ses-01/func" / f"{stem}_motion.tsv", sep="\t").to_numpy()
    assert motion.shape == (data.shape[3], 6)
    deriv = tmp_path / "derivatives/twin/sub-01"
    reference = nib.load(deriv / "anatomy.nii.gz").get_fdata(dtype=np.float32)
    brain = ndimage.binary_erosion(nib.load(deriv / "brain_mask.nii.gz").get_fdata() > 0)
    inv = np.linalg.inv(affine)

    def error(volume, params) -> float:
        # Resample the moved volume at R @ x + t for every reference grid point x (plain scipy).
        back = ndimage.affine_transform(volume, inv @ rigid_matrix(params) @ affine, order=3)
        return float(np.sqrt(np.mean((back - reference)[brain] ** 2)) / reference[brain].mean())

    biggest = np.argsort(-np.abs(motion).max(1))[:3]
    assert np.abs(motion[biggest]).max() > 1.5  # there is motion worth undoing
    for t in biggest:
        right = error(data[..., t], motion[t])
        inverse = np.linalg.inv(rigid_matrix(motion[t]))
        wrong_way = error(data[..., t], np.r_[inverse[:3, 3], -motion[t, 3:]])  # the opposite convention, roughly
        none = error(data[..., t], np.zeros(6))
        assert right < 0.03  # interpolation blur and noise only (measured ~0.02)
        assert right < 0.4 * none and right < 0.25 * wrong_way  # measured ~0.07 and ~0.18
