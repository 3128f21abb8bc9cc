"""The one motion tracker (:class:`service.motion.MotionTracker`): the live pipeline, the fit's realignment
(``estimates.track_run``) and ``fmriface realign`` give the same motion on the same volumes, on the reference's
grid and on a later session's; a resumed run takes up where its records left off; the FD is the convention's.

The data are the twin's anatomy on a small 6 mm grid (as ``test_serve_sessions``), a later session's slab rotated
and shifted, the head repositioned, a slow drift within the run and scanner-like noise.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from fmriface.benchmarks.synth import make_bundle
from fmriface.commands import realign
from offline.decoding.estimates import register_run_session, track_run
from offline.twin.anatomy import anatomy_on_grid, make_anatomy, scanner_affine
from service.live.runlog import read_volumes
from service.motion import (
    MotionTracker,
    TrackingError,
    framewise_displacement,
    params_from_matrix,
    rigid_matrix,
)
from tests.service.harness import make_volume, serve, serve_config

TR = 2.0
SHAPE, VOXEL = (32, 32, 20), (6.0, 6.0, 7.0)
HEAD = np.array([6.0, -4.0, 5.0, 7.0, -5.0, 6.0])  # the head in the later session (mm, degrees)
N = 8


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    anatomy = make_anatomy(SHAPE, VOXEL)
    return make_bundle(
        tmp_path_factory.mktemp("bundle") / "b", n_voxels=60, latent_size=8, image_size=8, tr=TR, anatomy=anatomy
    )


def _slab() -> np.ndarray:
    """The later session's slab: rotated 8 degrees about x and 4 about z, shifted 9 mm."""
    return rigid_matrix([3.0, 9.0, -5.0, 8.0, 0.0, 4.0]) @ scanner_affine(SHAPE, VOXEL)


def _run(affine: np.ndarray, head: np.ndarray, seed: int) -> np.ndarray:
    """``[X, Y, Z, N]`` float32: the head at ``head`` plus a drift of 0.6 mm and 0.8 degrees over the run."""
    rng = np.random.default_rng(seed)
    motion = np.zeros((N, 6))
    motion[:, 0], motion[:, 4] = np.linspace(0.0, 0.6, N), np.linspace(0.0, 0.8, N)
    vols = []
    for m in motion:
        data, _ = anatomy_on_grid(affine, SHAPE, params_from_matrix(rigid_matrix(m) @ rigid_matrix(head)))
        vols.append(data + rng.normal(0, 8, data.shape).astype(np.float32))
    return np.stack(vols, axis=3)


@pytest.fixture(scope="module", params=["reference", "session"])
def grid(request, synth):
    """``(kind, run [X, Y, Z, N], affine)``: a run on the bundle's grid, or on a later session's."""
    if request.param == "reference":
        return request.param, _run(synth.affine, np.zeros(6), 1), synth.affine
    return request.param, _run(_slab(), HEAD, 2), _slab()


def _volumes(run: np.ndarray, affine: np.ndarray, indices) -> list:
    return [make_volume(i, np.ascontiguousarray(run[..., i]), affine, TR) for i in indices]


def _tracker(synth) -> MotionTracker:
    return MotionTracker().fit(synth.reference, synth.affine)


def test_the_pipeline_and_track_run_give_the_same_motion_and_voxels(synth, grid, tmp_path):
    kind, run, affine = grid
    out = serve(serve_config(synth.path, tmp_path, max_volumes=N, min_volumes=3), _volumes(run, affine, range(N)))
    run_dir = out.service.run_dir_
    records = read_volumes(run_dir)
    assert [r["status"] for r in records] == ["ok"] * N, [r.get("error") for r in records]
    offset = None
    if kind == "session":  # the offset the service took: its first volume's, as session.json keeps it
        offset = np.asarray(json.loads((run_dir / "session.json").read_text())["offset"])
    assert (offset is None) == (kind == "reference")
    x, motion, total = track_run(_tracker(synth), run, affine, synth.mask, offset)
    np.testing.assert_array_equal(motion, np.array([r["motion"] for r in records]))
    np.testing.assert_array_equal(x, np.load(run_dir / "voxels.npy"))
    # the FD recorded is the convention's on the recorded motion
    np.testing.assert_allclose([r["fd"] for r in records], framewise_displacement(motion), rtol=0, atol=5e-6)
    if kind == "session":  # rigid(total) = rigid(motion) @ rigid(offset), and the offset was taken out
        for m, t in zip(motion, total):
            np.testing.assert_allclose(rigid_matrix(m) @ rigid_matrix(offset), rigid_matrix(t), atol=1e-9)
        assert np.abs(motion).max() < 2.0 < np.abs(total).max()
    else:
        np.testing.assert_array_equal(motion, total)


def test_realign_and_track_run_give_the_same_motion(synth, grid, tmp_path):
    kind, run, affine = grid
    bold, reference = tmp_path / "run_bold.nii.gz", tmp_path / "reference.nii.gz"
    nib.save(nib.Nifti1Image(run, affine), bold)
    nib.save(nib.Nifti1Image(synth.reference.astype(np.float32), synth.affine), reference)
    assert realign.main([str(bold), "--reference", str(reference), "--out", str(tmp_path / "qc")]) == 0
    table = np.loadtxt(tmp_path / "qc" / "motion.tsv", skiprows=1, delimiter="\t", ndmin=2)
    # the affines as the files hold them (a NIfTI sform is float32)
    affine, ref = nib.load(bold).affine, nib.load(reference)
    tracker = MotionTracker().fit(ref.get_fdata(dtype=np.float32), ref.affine)
    offset = None
    if kind == "session":  # realign and the fit both register the mean of the run
        offset = register_run_session(tracker, run, affine).params
        written = json.loads((tmp_path / "qc" / "session.json").read_text())["offset"]
        np.testing.assert_array_equal(written, np.round(offset, 4))
    else:
        assert not (tmp_path / "qc" / "session.json").exists()
    _, motion, _ = track_run(tracker, run, affine, synth.mask, offset)
    np.testing.assert_allclose(table[:, :6], motion, rtol=0, atol=6e-7)  # motion.tsv's 6 decimals
    np.testing.assert_allclose(table[:, 6], framewise_displacement(motion), rtol=0, atol=6e-7)


def test_a_resumed_run_tracks_its_next_volumes_as_a_tracker_restored_from_its_records(synth, grid, tmp_path):
    kind, run, affine = grid
    cfg = serve_config(synth.path, tmp_path, run_id="r", max_volumes=0, min_volumes=3)
    serve(cfg, _volumes(run, affine, range(4)), stop_after=True)
    cfg = serve_config(synth.path, tmp_path, run_id="r", max_volumes=N - 4, min_volumes=3)
    resumed = serve(cfg, _volumes(run, affine, range(N)))
    records = read_volumes(resumed.service.run_dir_)
    assert [r["volume"] for r in records] == list(range(N))
    # what a restart reads back: session.json's record (a later session) and the last volume's motion
    tracker = _tracker(synth)
    if kind == "session":
        record = json.loads((resumed.service.run_dir_ / "session.json").read_text())
        tracker.set_session(record["offset"], (tuple(record["grid"]["shape"]), record["grid"]["affine"]), record)
        assert tracker.grid_of(SHAPE, affine) == "session"
    tracker.restore(records[3]["motion"])
    for k in range(4, N):
        motion, _ = tracker.track(run[..., k], synth.mask, affine=affine)
        np.testing.assert_array_equal(motion, records[k]["motion"])
        assert round(tracker.fd_, 5) == records[k]["fd"]
    # the same motion, up to the warm start's intensity state, as tracking on without the restart
    uninterrupted = track_run(_tracker(synth), run, affine, synth.mask, _offset_of(tracker))[1]
    np.testing.assert_allclose(np.array([r["motion"] for r in records]), uninterrupted, atol=2e-3)


def _offset_of(tracker: MotionTracker) -> np.ndarray | None:
    return None if tracker.session_ is None else np.asarray(tracker.session_["offset"])


def test_restoring_the_same_records_twice_gives_the_same_next_estimate(synth, grid):
    kind, run, affine = grid
    first = _tracker(synth)
    offset = None if kind == "reference" else register_run_session(first, run, affine).params
    _, motion, _ = track_run(first, run[..., :4], affine, synth.mask, offset)
    estimates = []
    for _ in range(2):
        tracker = _tracker(synth)
        if offset is not None:
            tracker.set_session(offset, (SHAPE, affine))
        tracker.restore(motion[-1])
        estimates.append(tracker.track(run[..., 4], synth.mask, affine=affine)[0])
        assert tracker.fd_ == framewise_displacement(np.stack([motion[-1], estimates[-1]]))[-1]
    np.testing.assert_array_equal(*estimates)


def test_the_fd_is_framewise_displacement_of_the_motion_kept(synth):
    run = _run(synth.affine, np.zeros(6), 3)
    for radius in (50.0, 40.0):
        tracker = MotionTracker(fd_radius=radius).fit(synth.reference, synth.affine)
        motion, fd = np.zeros((N, 6)), np.zeros(N)
        for k in range(N):
            motion[k], values = tracker.track(run[..., k], affine=synth.affine, resample=False)
            fd[k] = tracker.fd_
            assert values is None
        np.testing.assert_array_equal(fd, framewise_displacement(motion, radius=radius))
        assert fd[0] == 0.0 and fd[1:].min() > 0.05


def test_a_live_run_stays_on_one_grid(synth):
    tracker = _tracker(synth)
    assert tracker.admit(SHAPE, synth.affine) == "reference" and tracker.on_reference_grid_
    with pytest.raises(TrackingError, match=r"another protocol in the middle of the run"):
        tracker.admit(SHAPE, _slab())
    tracker = _tracker(synth)
    assert tracker.admit(SHAPE, _slab()) == "new"  # the first volume on another grid: register it
    result = tracker.register(_run(_slab(), HEAD, 4)[..., 0], _slab())
    tracker.set_session(result.params, (SHAPE, _slab()), result.as_record())
    assert tracker.admit(SHAPE, _slab()) == "session" and tracker.session_["cost"] == round(result.cost, 4)
    with pytest.raises(TrackingError, match="on the bundle's grid, but this run's volumes are on another session"):
        tracker.admit(SHAPE, synth.affine)
    with pytest.raises(TrackingError, match=r"shape \(30, 32, 20\)"):
        tracker.admit((30, 32, 20), _slab())


def test_a_volume_with_non_finite_values_is_refused_before_its_motion_is_kept(synth):
    run = _run(synth.affine, np.zeros(6), 5)
    tracker = _tracker(synth)
    kept, _ = tracker.track(run[..., 0], synth.mask, affine=synth.affine, finite=True)
    kept = kept.copy()
    bad = run[..., 1].copy()
    bad[synth.mask] = np.nan
    with pytest.raises(TrackingError, match="non-finite values inside the mask"):
        tracker.track(bad, synth.mask, affine=synth.affine, finite=True)
    np.testing.assert_array_equal(tracker.motion_, kept)
    assert tracker.fd_ == 0.0
