"""A live run from a later session: the slab re-prescribed (another affine, here also another matrix and voxel
size) and the head repositioned. serve registers the new session to the bundle's reference at its first volume,
tracks every volume from the composed transform, and refuses what cannot be registered with what it measured."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fmriface.benchmarks.synth import make_bundle
from offline.twin.anatomy import anatomy_on_grid, make_anatomy, scanner_affine
from service.live.runlog import read_volumes
from service.motion import rigid_matrix
from tests.service.harness import make_volume, serve, serve_config

TR = 2.0
SHAPE, VOXEL = (32, 32, 20), (6.0, 6.0, 7.0)
HEAD = np.array([6.0, -4.0, 5.0, 7.0, -5.0, 6.0])  # where the head lies in the new session (mm, degrees)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    data, affine, brain = make_anatomy(SHAPE, VOXEL)
    return make_bundle(
        tmp_path_factory.mktemp("bundle") / "b",
        n_voxels=60,
        latent_size=8,
        image_size=8,
        tr=TR,
        anatomy=(data, affine, brain),
    )


def _slab(shape=SHAPE, voxel=VOXEL) -> np.ndarray:
    """Session 2's slab: rotated 8 degrees about x and 4 about z, shifted 9 mm, as an operator re-prescribes it."""
    return rigid_matrix([3.0, 9.0, -5.0, 8.0, 0.0, 4.0]) @ scanner_affine(shape, voxel)


def _session_run(n: int, shape=SHAPE, voxel=VOXEL, seed=0):
    rng = np.random.default_rng(seed)
    affine = _slab(shape, voxel)
    motion = np.zeros((n, 6))
    motion[:, 0] = np.linspace(0.0, 0.6, n)  # a slow 0.6 mm drift within the run
    vols = []
    for i in range(n):
        pose = rigid_matrix(motion[i]) @ rigid_matrix(HEAD)  # within-session motion on top of the session offset
        from service.motion import params_from_matrix

        data, _ = anatomy_on_grid(affine, shape, params_from_matrix(pose))
        vols.append(make_volume(i, data + rng.normal(0, 8, data.shape).astype(np.float32), affine, TR))
    return vols, motion


def _cfg(synth, tmp_path, n, **kw):
    return serve_config(synth.path, tmp_path, max_volumes=n, min_volumes=3, **kw)


def _displacement(a, b, synth) -> float:
    """Mean displacement (mm) between two transforms over the bundle reference's brain points."""
    ijk = np.argwhere(synth.reference > 0.3 * synth.reference.max()).T
    pts = np.vstack([synth.affine[:3, :3] @ ijk + synth.affine[:3, 3:], np.ones(ijk.shape[1])])
    return float(np.linalg.norm(((rigid_matrix(a) - rigid_matrix(b)) @ pts)[:3], axis=0).mean())


def test_a_later_sessions_run_on_another_grid_is_registered_and_decoded(synth, tmp_path):
    n = 8
    vols, motion = _session_run(n)
    out = serve(_cfg(synth, tmp_path, n), vols)
    run_dir = tmp_path / "runs" / out.service.runlog_.run_id
    records = read_volumes(run_dir)
    assert [r["status"] for r in records] == ["ok"] * n, [r.get("error") for r in records]
    session = json.loads((run_dir / "session.json").read_text())
    assert _displacement(session["offset"], HEAD, synth) < 0.3, session
    assert session["grid"]["shape"] == list(SHAPE) and session["seconds"] > 0
    # the motion recorded and published is the within-session motion (the offset taken out)
    recorded = np.array([r["motion"] for r in records])
    assert max(_displacement(recorded[i], motion[i], synth) for i in range(n)) < 0.3
    frames = out.topic("frame")
    assert [m.header["volume"] for m in frames] == list(range(n))
    assert out.summary["session"]["offset"] == session["offset"]
    assert all("session" in m.header for m in out.topic("status"))  # the heartbeat carries it once registered
    # the bundle's voxels, sampled from the live grid, are the reference's anatomy
    voxels = np.load(run_dir / "voxels.npy", mmap_mode="r")
    expected = synth.reference[synth.mask]
    assert np.corrcoef(np.asarray(voxels[0]), expected)[0, 1] > 0.95


def test_a_volume_of_another_protocol_mid_run_is_refused_and_the_run_goes_on(synth, tmp_path, monkeypatch):
    monkeypatch.setenv("FMRIFACE_RAISE", "0")
    n = 6
    vols, _ = _session_run(n)
    other = _session_run(1, shape=(40, 40, 24), voxel=(5.0, 5.0, 6.0), seed=3)[0][0]
    other.index, other.acquisition = 3, 4
    vols[3] = other
    out = serve(_cfg(synth, tmp_path, n), vols)
    records = read_volumes(tmp_path / "runs" / out.service.runlog_.run_id)
    status = {r["volume"]: r["status"] for r in records}
    assert status[3] == "error" and [status[i] for i in (0, 1, 2, 4, 5)] == ["ok"] * 5
    err = next(r["error"] for r in records if r["volume"] == 3)
    assert "another protocol" in err and "(40, 40, 24)" in err


def test_an_empty_first_volume_is_refused_with_what_was_measured_and_the_next_registers(synth, tmp_path, monkeypatch):
    monkeypatch.setenv("FMRIFACE_RAISE", "0")
    n = 5
    vols, _ = _session_run(n)
    vols[0].data = np.full(SHAPE, 5.0, np.float32)
    out = serve(_cfg(synth, tmp_path, n), vols)
    records = read_volumes(tmp_path / "runs" / out.service.runlog_.run_id)
    assert records[0]["status"] == "error" and "empty or constant" in records[0]["error"]
    assert [r["status"] for r in records[1:]] == ["ok"] * (n - 1)


def test_a_flipped_slab_is_refused():
    from service.motion.session import SessionRegistrationError, register_session

    shape, voxel = (64, 64, 36), (3.0, 3.0, 3.5)  # at 6 mm the twin's brain is too symmetric to tell a flip
    ref, affine, brain = make_anatomy(shape, voxel)
    slab = _slab(shape, voxel)
    live, _ = anatomy_on_grid(slab, shape, HEAD)
    live += np.random.default_rng(1).normal(0, 8, live.shape).astype(np.float32)
    assert register_session(ref, affine, live, slab, brain).cost < 0.05  # the right way round: taken
    with pytest.raises(SessionRegistrationError, match="mirror image"):  # voxels flipped, affine unchanged
        register_session(ref, affine, np.ascontiguousarray(live[::-1]), slab, brain)
