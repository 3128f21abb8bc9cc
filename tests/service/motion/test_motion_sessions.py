"""Registration across sessions against the twin's ground truth: a later session's slab (re-prescribed: another
affine, maybe another matrix or voxel size) and head (repositioned) registered to session 1's reference, as `fit`,
`realign --reference` and `serve` do it (:func:`service.motion.register_session`); what cannot be registered (no
overlap, an empty or constant volume, a flipped slab) is refused with what was measured.

The volumes are the twin's EPI anatomy sampled straight from the MNI templates on each grid and head pose
(:func:`offline.twin.anatomy.anatomy_on_grid`), with scanner-like noise, so a registration between two of them is
a real one; the session geometry is the twin's own (:func:`offline.twin.sessions.draw_sessions`).
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from fmriface.config import load_config, preset_path
from offline.twin import SimulateConfig
from offline.twin.anatomy import anatomy_on_grid, make_anatomy, scanner_affine
from offline.twin.sessions import draw_sessions
from service.motion import SessionRegistrationError, register_session, rigid_matrix

SHAPE, VOXEL = (64, 64, 36), (3.0, 3.0, 3.5)  # the demo's EPI grid
NOISE = 15.0  # grey matter ~900: temporal SNR 60, as the demo twin


@pytest.fixture(scope="module")
def reference():
    data, affine, brain = make_anatomy(SHAPE, VOXEL)
    rng = np.random.default_rng(0)
    return data + rng.normal(0, NOISE, data.shape).astype(np.float32), affine, brain


def brain_error(a, b, affine, brain) -> float:
    """Mean displacement (mm) between two rigid transforms over the reference's brain points."""
    ijk = np.argwhere(brain).T
    pts = np.vstack([affine[:3, :3] @ ijk + affine[:3, 3:], np.ones(ijk.shape[1])])
    return float(np.linalg.norm(((rigid_matrix(a) - rigid_matrix(b)) @ pts)[:3], axis=0).mean())


def _axis_angle(shift_mm, axis, deg) -> np.ndarray:
    """Six parameters of a shift and a rotation by ``deg`` about ``axis`` (through the isocentre)."""
    from offline.twin.motion import params_from_matrix, rotation_about

    m = np.eye(4)
    m[:3, :3] = rotation_about(axis, deg)
    m[:3, 3] = shift_mm
    return params_from_matrix(m)


def _session(seed, **sessions):
    """Session 2 of a twin drawn with ``seed`` (its slab and head), at the largest offsets of the issue."""
    overrides = {"seed": seed, "grid.shape": list(SHAPE), "grid.voxel_size": list(VOXEL)}
    overrides.update({f"sessions.{k}": v for k, v in sessions.items()})
    cfg = load_config(SimulateConfig, preset_path("simulate-tiny"), overrides)
    return draw_sessions(cfg, scanner_affine(SHAPE, VOXEL))[1]


def _register(reference, affine_b, shape_b, head, seed=1):
    ref, affine, brain = reference
    vol, _ = anatomy_on_grid(affine_b, shape_b, head)
    vol = vol + np.random.default_rng(seed).normal(0, NOISE, vol.shape).astype(np.float32)
    result = register_session(ref, affine, vol, affine_b)
    return result, brain_error(result.params, head, affine, brain)


# The offsets: the head up to 10 mm / 10 degrees, the slab rotated up to 8 degrees and shifted up to 10 mm.
EXTREMES = [
    (_axis_angle([0, 0, 0], [1, 0, 0], 0), _axis_angle([10, 0, 0], [0, 0, 1], 10)),
    (_axis_angle([0, 0, 10], [1, 0, 0], 8), _axis_angle([0, 10, 0], [1, 0, 0], 10)),
    (_axis_angle([6, -6, 5], [1, 1, 0], 8), _axis_angle([-6, 5, -6], [1, -1, 1], 10)),
    (_axis_angle([-5, 8, -4], [0, 1, 1], 8), _axis_angle([7, 7, 0], [0, 1, 0], 10)),
]


@pytest.mark.parametrize(("slab", "head"), EXTREMES)
def test_a_later_session_registers_within_a_tenth_of_a_millimetre(reference, slab, head):
    affine_b = rigid_matrix(slab) @ scanner_affine(SHAPE, VOXEL)
    result, err = _register(reference, affine_b, SHAPE, head)
    assert err <= 0.1, (err, result)
    assert result.cost < 0.1 and result.overlap > 0.8


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_twins_own_sessions_register_within_a_tenth_of_a_millimetre(reference, seed):
    """The twin's session draws at the full range (slab 8 degrees / 10 mm, head 10 mm / 10 degrees)."""
    ses = _session(seed)
    result, err = _register(reference, ses.affine, ses.shape, ses.head, seed)
    assert err <= 0.1, (err, ses.slab, ses.head)


@pytest.mark.parametrize(
    ("matrix", "voxel"),
    [((72, 72, 40), (2.7, 2.7, 3.2)), ((80, 80, 30), (2.5, 2.5, 4.0)), ((56, 56, 32), (3.5, 3.5, 3.8))],
)
def test_another_matrix_or_voxel_size_registers_within_two_tenths(reference, matrix, voxel):
    ses = _session(3, matrix=list(matrix), voxel_size=list(voxel))
    assert ses.shape == matrix
    result, err = _register(reference, ses.affine, ses.shape, ses.head)
    assert err <= 0.2, (err, matrix, voxel)


def test_a_reference_that_does_not_overlap_the_field_of_view_is_refused(reference):
    ref, affine, _ = reference
    far = rigid_matrix([0, 0, 140, 0, 0, 0]) @ scanner_affine((64, 64, 12), VOXEL)  # a slab above the head
    vol, _ = anatomy_on_grid(far, (64, 64, 12), None)
    vol = vol + np.random.default_rng(2).normal(0, NOISE, vol.shape).astype(np.float32)
    with pytest.raises(SessionRegistrationError, match="field of view|residual|beyond"):
        register_session(ref, affine, vol, far)


@pytest.mark.parametrize("value", [0.0, 700.0])
def test_an_empty_or_constant_volume_is_refused(reference, value):
    ref, affine, _ = reference
    with pytest.raises(SessionRegistrationError, match="empty or constant"):
        register_session(ref, affine, np.full(SHAPE, value, np.float32), affine)


def test_a_flipped_slab_is_refused(reference):
    """The data flipped left-right with the affine unchanged: no rigid motion explains it."""
    ref, affine, _ = reference
    ses = _session(4)
    vol, _ = anatomy_on_grid(ses.affine, ses.shape, ses.head)
    vol = vol + np.random.default_rng(5).normal(0, NOISE, vol.shape).astype(np.float32)
    register_session(ref, affine, vol, ses.affine)  # as acquired: fine
    with pytest.raises(SessionRegistrationError, match="mirror"):
        register_session(ref, affine, np.ascontiguousarray(vol[::-1]), ses.affine)


# ------------------------------------------------------------------------- realign --reference across grids
@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    """The tiny twin: two sessions, the second on its own slab with the head moved."""
    pytest.importorskip("nilearn")
    from offline.twin import simulate

    out = tmp_path_factory.mktemp("twin") / "bids"
    simulate(load_config(SimulateConfig, preset_path("simulate-tiny")), out)
    return out


def _truth(twin, stem):
    deriv = twin / "derivatives" / "twin" / "sub-01"
    ses = stem.split("_")[1]
    motion = np.loadtxt(deriv / ses / "func" / f"{stem}_motion.tsv", skiprows=1, delimiter="\t", ndmin=2)
    session = json.loads((deriv / ses / f"sub-01_{ses}_session.json").read_text())
    return motion, session


def test_realign_takes_a_reference_on_another_grid(twin, tmp_path):
    """A session-2 run against session 1's anatomy (the head at rest): the offset and every volume's composed
    transform against the twin's ground truth, the realigned run on the reference's grid."""
    from fmriface.commands import realign

    stem = "sub-01_ses-02_task-faces_run-01"
    bold = twin / "sub-01" / "ses-02" / "func" / f"{stem}_bold.nii.gz"
    ref_path = twin / "derivatives" / "twin" / "sub-01" / "anatomy.nii.gz"
    ref_img, run_img = nib.load(ref_path), nib.load(bold)
    assert not np.allclose(ref_img.affine, run_img.affine, atol=1e-3)  # another slab
    out = tmp_path / "qc"
    assert realign.main([str(bold), "--reference", str(ref_path), "--out", str(out), "--write-realigned"]) == 0
    session = json.loads((out / "session.json").read_text())
    motion = np.loadtxt(out / "motion.tsv", skiprows=1, delimiter="\t", ndmin=2)[:, :6]
    truth, gt = _truth(twin, stem)
    brain = np.asarray(nib.load(ref_path.with_name("brain_mask.nii.gz")).dataobj) > 0
    # volume t: rigid(motion_t) @ rigid(offset), against the twin's rigid(m_t) @ rigid(head)
    points = _points(ref_img.affine, brain)
    errors = [
        float(np.linalg.norm(((est - true) @ points)[:3], axis=0).mean())
        for est, true in (
            (rigid_matrix(m) @ rigid_matrix(session["offset"]), rigid_matrix(t) @ rigid_matrix(gt["head"]))
            for m, t in zip(motion, truth)
        )
    ]
    # 9.6 x 8 x 7.9 mm voxels: a few hundredths of a voxel (the 3 mm cases above reach 0.1 mm)
    assert np.mean(errors) < 0.5 and np.max(errors) < 0.6, errors
    assert brain_error(session["offset"], np.zeros(6), ref_img.affine, brain) > 5.0  # the session did move
    # within the session: the motion's spread is the twin's (the offset taken out)
    assert np.abs(motion - motion.mean(0)).max() < np.abs(truth - truth.mean(0)).max() + 0.3
    realigned = nib.load(out / f"{stem}_bold_realigned.nii.gz")
    assert realigned.shape == (*ref_img.shape, run_img.shape[3])
    assert np.allclose(realigned.affine, ref_img.affine, atol=1e-4)


def _points(affine, brain):
    ijk = np.argwhere(brain).T
    return np.vstack([affine[:3, :3] @ ijk + affine[:3, 3:], np.ones(ijk.shape[1])])


def test_realign_refuses_what_cannot_be_registered_across_grids(twin, tmp_path):
    from fmriface.commands import realign

    ref_path = twin / "derivatives" / "twin" / "sub-01" / "anatomy.nii.gz"
    bold = twin / "sub-01" / "ses-02" / "func" / "sub-01_ses-02_task-faces_run-01_bold.nii.gz"
    img = nib.load(bold)
    empty = tmp_path / "empty_bold.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(img.shape, np.int16), img.affine), empty)
    with pytest.raises(SessionRegistrationError, match="empty_bold.nii.gz .* empty or constant"):
        realign.main([str(empty), "--reference", str(ref_path), "--out", str(tmp_path / "a")])
    ref = nib.load(ref_path)
    far = tmp_path / "far.nii.gz"  # the same reference, 200 mm away: no overlap with the run's field of view
    nib.save(nib.Nifti1Image(ref.get_fdata(dtype=np.float32), rigid_matrix([0, 0, 200, 0, 0, 0]) @ ref.affine), far)
    with pytest.raises(SessionRegistrationError, match="cannot be registered to .*far.nii.gz"):
        realign.main([str(bold), "--reference", str(far), "--out", str(tmp_path / "b")])
    assert not (tmp_path / "a" / "motion.tsv").exists() and not (tmp_path / "b" / "motion.tsv").exists()


def test_realign_refuses_a_flipped_slab_on_another_grid(reference, tmp_path):
    """A later session's run at 3 mm, its data flipped left-right with the affine unchanged."""
    from fmriface.commands import realign

    ref, affine, _ = reference
    ses = _session(6)
    vol, _ = anatomy_on_grid(ses.affine, ses.shape, ses.head)
    rng = np.random.default_rng(7)
    run = np.stack([vol + rng.normal(0, NOISE, vol.shape).astype(np.float32) for _ in range(3)], axis=-1)
    ref_path, good, flipped = tmp_path / "ref.nii.gz", tmp_path / "good_bold.nii.gz", tmp_path / "flipped_bold.nii.gz"
    nib.save(nib.Nifti1Image(ref, affine), ref_path)
    nib.save(nib.Nifti1Image(run, ses.affine), good)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(run[::-1]), ses.affine), flipped)
    assert realign.main([str(good), "--reference", str(ref_path), "--out", str(tmp_path / "good")]) == 0
    offset = json.loads((tmp_path / "good" / "session.json").read_text())["offset"]
    assert brain_error(offset, ses.head, affine, reference[2]) < 0.1
    with pytest.raises(SessionRegistrationError, match="flipped_bold.nii.gz .* mirror image"):
        realign.main([str(flipped), "--reference", str(ref_path), "--out", str(tmp_path / "flipped")])
