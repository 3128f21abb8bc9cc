"""The twin's sessions and the fit across them.

Every session after the first lies on its own slab (another affine, optionally another matrix or voxel size) with
the head repositioned; the twin writes each session's grid and head pose as ground truth. The fit registers each
later session to the reference (session 1's) and resamples every volume once onto the reference grid; its result
is checked against that ground truth.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from fmriface.config import load_config, preset_path
from offline.twin import SimulateConfig, simulate
from offline.twin.anatomy import coil_shading, scanner_affine
from offline.twin.motion import params_from_matrix, rigid_matrix, rotation_about

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
SUB = "sub-01"


def _cfg(**overrides) -> SimulateConfig:
    return load_config(SimulateConfig, preset_path("simulate-tiny"), overrides)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, SimulateConfig]:
    cfg = _cfg()
    out = tmp_path_factory.mktemp("twin") / "tiny"
    simulate(cfg, out)
    return out, cfg


def _session(root: Path, ses: int) -> dict:
    return json.loads((root / f"derivatives/twin/{SUB}/ses-{ses:02d}/{SUB}_ses-{ses:02d}_session.json").read_text())


def _motion(root: Path, stem: str) -> np.ndarray:
    ses = stem.split("_")[1]
    return np.loadtxt(root / f"derivatives/twin/{SUB}/{ses}/func/{stem}_motion.tsv", skiprows=1, ndmin=2)


def _angle(m: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(m[:3, :3]) - 1) / 2, -1, 1))))


def test_rotation_about_and_params_from_matrix_follow_the_convention():
    for axis, deg in (([1, 0, 0], 7.0), ([0, 1, 0], -5.0), ([1, 2, -1], 9.0)):
        r = rotation_about(axis, deg)
        assert np.allclose(r @ r.T, np.eye(3)) and np.isclose(_angle(np.pad(r, (0, 1))), abs(deg))
    p = np.array([3.0, -2.0, 5.0, 6.0, -4.0, 8.0])
    assert np.allclose(params_from_matrix(rigid_matrix(p)), p)
    assert np.allclose(rotation_about([0, 0, 1], 90.0) @ [1, 0, 0], [0, 1, 0])  # right-handed


def test_each_session_writes_its_grid_and_head_pose(tiny):
    root, cfg = tiny
    first, second = _session(root, 1), _session(root, 2)
    assert first["slab"] == [0.0] * 6 and first["head"] == [0.0] * 6
    a1 = scanner_affine(cfg.grid.shape, cfg.grid.voxel_size, cfg.grid.oblique_deg)
    assert np.allclose(first["affine"], a1, atol=1e-5)
    slab, head = rigid_matrix(second["slab"]), rigid_matrix(second["head"])
    # within the configured ranges: half the maximum to the maximum, as a rotation about one axis and a shift
    s = cfg.sessions
    assert s.slab_max_deg / 2 - 1e-6 <= _angle(slab) <= s.slab_max_deg + 1e-6
    assert s.slab_max_mm / 2 - 1e-6 <= np.linalg.norm(slab[:3, 3]) <= s.slab_max_mm + 1e-6
    assert s.head_max_deg / 2 - 1e-6 <= _angle(head) <= s.head_max_deg + 1e-6
    assert s.head_max_mm / 2 - 1e-6 <= np.linalg.norm(head[:3, 3]) <= s.head_max_mm + 1e-6
    assert np.allclose(second["affine"], slab @ a1, atol=1e-5)
    for ses, record in ((1, first), (2, second)):
        for bold in sorted((root / SUB / f"ses-{ses:02d}" / "func").glob("*_bold.nii.gz")):
            img = nib.load(bold)
            assert img.shape[:3] == tuple(record["shape"])
            assert np.allclose(img.affine, record["affine"], atol=1e-4)  # each run on its session's grid


def test_another_matrix_and_voxel_size_for_later_sessions(tmp_path):
    cfg = _cfg(
        **{
            "sessions.matrix": [24, 28, 18],
            "sessions.voxel_size": [8.0, 7.0, 7.0],
            "paradigm.test_runs_per_session": 0,
            "paradigm.imagery_runs_per_session": 0,
        }
    )
    simulate(cfg, tmp_path)
    record = _session(tmp_path, 2)
    img = nib.load(tmp_path / SUB / "ses-02/func" / f"{SUB}_ses-02_task-faces_run-01_bold.nii.gz")
    assert img.shape[:3] == (24, 28, 18) == tuple(record["shape"]) and record["voxel_size"] == [8.0, 7.0, 7.0]
    assert np.allclose(np.linalg.norm(img.affine[:3, :3], axis=0), [8.0, 7.0, 7.0])
    assert nib.load(tmp_path / SUB / "ses-01/func" / f"{SUB}_ses-01_task-faces_run-01_bold.nii.gz").shape[:3] == (
        20,
        24,
        16,
    )


def test_a_later_session_is_the_head_frame_moved_by_motion_after_the_session_pose(tmp_path):
    """Voxel j of session 2's grid samples the head frame at inv(A) @ inv(rigid(m_t) @ rigid(head)) @ A_2 @ j:
    checked with scipy on the twin's own head frame (noise and drift off), against the other order too."""
    from offline.twin.simulate import prepare, write

    cfg = _cfg(
        **{
            "noise.tsnr": 1e6,
            "noise.physio_share": 0.0,
            "noise.drift_percent": 0.0,
            "motion.max_mm": 6.0,
            "motion.max_deg": 6.0,
            "motion.drift_mm": 5.0,
            "motion.jerk_mm": 3.0,
            "sessions.matrix": [22, 26, 17],
            "paradigm.test_runs_per_session": 0,
            "paradigm.imagery_runs_per_session": 0,
        }
    )
    plan = prepare(cfg)
    write(plan, tmp_path)
    stem = f"{SUB}_ses-02_task-faces_run-01"
    data = nib.load(tmp_path / SUB / "ses-02/func" / f"{stem}_bold.nii.gz").get_fdata(dtype=np.float32)
    record, motion = _session(tmp_path, 2), _motion(tmp_path, stem)
    subject = plan.session_subjects[2]
    frame = np.zeros(subject.head.shape, np.float32)
    frame[subject.head] = subject.s0  # the head frame at baseline (volume 0 precedes any BOLD response)
    a_src, a2, shape2 = subject.grid.source_affine, np.array(record["affine"]), tuple(record["shape"])
    coil = coil_shading(a2, shape2)
    for t in (0, 1):
        m, head = rigid_matrix(motion[t]), rigid_matrix(record["head"])
        want = {}
        for name, pose in (("motion after the session pose", m @ head), ("the other order", head @ m)):
            voxel_map = np.linalg.inv(a_src) @ np.linalg.inv(pose) @ a2
            moved = ndimage.affine_transform(frame, voxel_map, output_shape=shape2, order=1, mode="grid-constant")
            want[name] = moved * coil
        inside = want["motion after the session pose"] > 100
        err = {k: float(np.abs(v - data[..., t])[inside].mean()) for k, v in want.items()}
        assert err["motion after the session pose"] < 1.0, err  # int16 rounding and the magnitude's 0.5
        assert err["the other order"] > 10 * err["motion after the session pose"], err


def test_session_one_is_unchanged_by_later_sessions(tiny, tmp_path):
    """Session 1 keeps the one-session twin's grid, head and data: a session added leaves its bytes alone."""
    root, _ = tiny
    one = tmp_path / "one"
    simulate(_cfg(**{"paradigm.sessions": 1}), one)
    for bold in sorted((one / SUB / "ses-01/func").glob("*_bold.nii.gz")):
        a, b = nib.load(bold), nib.load(root / bold.relative_to(one))
        assert np.array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj)) and np.allclose(a.affine, b.affine)


def _interior(brain, affine, record, margin=1.5):
    """Reference brain voxels that the session's slab covers, ``margin`` voxels inside both grids."""
    ijk = np.argwhere(brain).T
    world = rigid_matrix(record["head"]) @ np.vstack([affine[:3, :3] @ ijk + affine[:3, 3:], np.ones(ijk.shape[1])])
    c = (np.linalg.inv(np.array(record["affine"])) @ world)[:3]
    inside = np.all((c >= margin) & (c <= np.array(record["shape"])[:, None] - 1 - margin), axis=0)
    return inside & np.all((ijk >= margin) & (ijk <= np.array(brain.shape)[:, None] - 1 - margin), axis=0)


def test_realigned_later_session_lies_on_the_reference_like_the_first(tiny):
    """realign_subject: the reference session's offset is zero, session 2's matches the twin's ground truth, and
    the realigned mean of a session-2 run correlates with the reference like a session-1 run's does."""
    from offline.datasets.bids import load_bids
    from offline.decoding.estimates import realign_subject

    root, _ = tiny
    reference, affine, brain, runs = realign_subject(load_bids(root))
    record = _session(root, 2)
    by_session = {r.session.label for r in runs}
    assert by_session == {"01", "02"}
    assert all(np.all(r.session.params == 0) for r in runs if r.session.label == "01")
    assert all(r.session.registration is None for r in runs if r.session.label == "01")
    later = [r for r in runs if r.session.label == "02"]
    assert len(later) == 3 and all(r.session is later[0].session for r in later)  # registered once
    assert later[0].session.runs == [r.run.name for r in later]
    # the composed transform of every volume against the ground truth, relative to session 1's first volume
    # (the reference, a mean image, has no exact pose of its own)
    first = next(r for r in runs if r.session.label == "01")
    t1 = rigid_matrix(first.motion[0])
    truth1 = rigid_matrix(_motion(root, first.run.name)[0])
    pts = t1 @ np.vstack([affine[:3, :3] @ np.argwhere(brain).T + affine[:3, 3:], np.ones(int(brain.sum()))])
    for rr in later:
        truth = _motion(root, rr.run.name)
        errors = []
        for m_est, m_true in zip(rr.motion, truth):
            est = rigid_matrix(m_est) @ rigid_matrix(rr.session.params) @ np.linalg.inv(t1)
            true = rigid_matrix(m_true) @ rigid_matrix(record["head"]) @ np.linalg.inv(truth1)
            errors.append(np.linalg.norm(((est - true) @ pts)[:3], axis=0).mean())
        # on 9.6 x 8 x 7.9 mm voxels; a 3 mm twin gets about 0.1 mm (the slow test below)
        assert np.mean(errors) < 0.5 and np.max(errors) < 0.6, (rr.run.name, np.mean(errors))
        # the motion kept is within the session: about the twin's own spread, not the 10 mm offset
        assert np.abs(rr.motion).max() < np.abs(truth).max() + 1.0
    twin_brain = np.asarray(nib.load(root / f"derivatives/twin/{SUB}/brain_mask.nii.gz").dataobj) > 0
    keep = _interior(brain, affine, record) & twin_brain[brain]

    def smooth_corr(x):
        vol = np.zeros(brain.shape, np.float32)
        vol[brain] = x
        ref = np.where(brain, reference, 0).astype(np.float32)
        a, b = ndimage.gaussian_filter(vol, 1.0)[brain][keep], ndimage.gaussian_filter(ref, 1.0)[brain][keep]
        return float(np.corrcoef(a, b)[0, 1])

    r1 = min(smooth_corr(r.x.mean(0)) for r in runs if r.session.label == "01" and r is not first)
    r2 = [smooth_corr(r.x.mean(0)) for r in later]
    raw = later[0].run.load()[0].mean(axis=3)  # session 2's voxels read as if on the reference grid
    r_raw = smooth_corr(raw[brain])
    assert min(r2) > r1 - 0.01 and min(r2) > 0.99, (r1, r2)
    assert r_raw < 0.9, r_raw


def _copy_bids(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("derivatives"))
    return dst


def test_fit_refuses_a_session_that_cannot_be_registered(tiny, tmp_path):
    from offline.datasets.bids import load_bids
    from offline.decoding.estimates import realign_subject
    from service.motion import SessionRegistrationError

    root, _ = tiny
    bids = _copy_bids(root, tmp_path / "bids")
    bold = bids / SUB / "ses-02/func" / f"{SUB}_ses-02_task-faces_run-01_bold.nii.gz"
    img = nib.load(bold)
    nib.save(nib.Nifti1Image(np.full(img.shape, 300, np.int16), img.affine, img.header), bold)
    with pytest.raises(SessionRegistrationError, match=r"ses-02_task-faces_run-01 \(session 02 .*empty or constant"):
        realign_subject(load_bids(bids))


@pytest.mark.slow
def test_a_later_session_of_a_3mm_twin_is_registered_within_about_a_tenth(tmp_path):
    """The demo's grid (64x64x36 at 3x3x3.5 mm), short runs: the composed transforms of session 2 against the
    ground truth (measured: 0.11 mm mean; the registration itself on noise-free templates: 0.03-0.09 mm)."""
    from offline.datasets.bids import load_bids
    from offline.decoding.estimates import realign_subject

    overrides = {
        "paradigm.volumes_per_run": 40,
        "paradigm.train_runs_per_session": 1,
        "paradigm.test_runs_per_session": 0,
        "paradigm.imagery_runs_per_session": 0,
        "paradigm.lead_in_s": 4.0,
        "paradigm.tail_s": 10.0,
    }
    simulate(load_config(SimulateConfig, preset_path("simulate-demo"), overrides), tmp_path)
    reference, affine, brain, runs = realign_subject(load_bids(tmp_path))
    record = _session(tmp_path, 2)
    first, second = runs
    t1, truth1 = rigid_matrix(first.motion[0]), rigid_matrix(_motion(tmp_path, first.run.name)[0])
    pts = t1 @ np.vstack([affine[:3, :3] @ np.argwhere(brain).T + affine[:3, 3:], np.ones(int(brain.sum()))])
    errors = []
    for m_est, m_true in zip(second.motion, _motion(tmp_path, second.run.name)):
        est = rigid_matrix(m_est) @ rigid_matrix(second.session.params) @ np.linalg.inv(t1)
        true = rigid_matrix(m_true) @ rigid_matrix(record["head"]) @ np.linalg.inv(truth1)
        errors.append(np.linalg.norm(((est - true) @ pts)[:3], axis=0).mean())
    assert np.mean(errors) < 0.15, np.mean(errors)
