"""The service on the digital twin (slow): a bundle fitted on the twin's training runs with the offline code
(realignment, window estimates, ridge), the held-out test run replayed by the scanner emulator with its events,
the service's trial latents against the offline pipeline's, and neurofeedback toward one face while the twin
views it (test run) or imagines it (imagery run)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fmriface.benchmarks.synth import write_onnx_pair
from fmriface.config import load_config, preset_path
from service.live.serve import ServeConfig
from service.window import WindowSpec
from tests.conftest import free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    """A tiny twin with longer runs (the online detrending needs a realistic run length)."""
    from offline.twin import SimulateConfig, simulate

    out = tmp_path_factory.mktemp("twin") / "bids"
    cfg = load_config(
        SimulateConfig,
        preset_path("simulate-tiny"),
        {"paradigm.volumes_per_run": 110, "paradigm.imagery_trials_per_run": 6, "seed": 1},
    )
    simulate(cfg, out)
    return out


@pytest.fixture(scope="module")
def fitted(twin, tmp_path_factory):
    """Bundle fitted with the offline modules: ridge from the training runs' window estimates to the codes."""
    import nibabel as nib

    from offline.datasets.bids import load_bids
    from offline.decoding.estimates import realign_subject, window_patterns
    from offline.decoding.mapping import RidgeMapping
    from service.bundle import write_manifest

    subject = load_bids(twin)
    faces = [r for r in subject.runs if "task-faces" in r.name]
    reference, affine, brain, realigned = realign_subject(subject, faces)
    responsive = np.asarray(nib.load(twin / "derivatives/twin/sub-01/responsive_mask.nii.gz").dataobj) > 0
    mask = responsive & brain
    cols = np.searchsorted(np.flatnonzero(brain), np.flatnonzero(mask))
    codes = np.load(twin / "derivatives/twin/codes.npz")
    code_of = dict(zip(codes["stim_files"].tolist(), codes["codes"].astype(np.float32)))
    spec = WindowSpec()
    xs, ys = [], []
    for rr in realigned:
        if (rr.run.events["trial_type"] == "train_face").any():
            x, trials = window_patterns(rr, ["train_face"], spec)
            xs.append(x[:, cols])
            ys += [code_of[s] for s in trials["stim_file"]]
    mapping = RidgeMapping(alphas=(1.0, 10.0, 100.0, 1000.0), n_splits=3).fit(np.concatenate(xs), np.stack(ys))
    weights, bias = mapping.linear_map_()
    latent = weights.shape[1]
    folder = tmp_path_factory.mktemp("bundle") / "b"
    folder.mkdir()
    nib.save(nib.Nifti1Image(reference, affine), folder / "reference.nii.gz")
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), folder / "mask.nii.gz")
    np.savez(folder / "mapping.npz", weights=weights, bias=bias, x_mean=mapping.x_mean_, x_scale=mapping.x_scale_)
    write_onnx_pair(folder, latent, 16)
    ids = sorted(code_of)
    test_ids = [s for s in ids if s.startswith("test/")]
    train_ids = [s for s in ids if not s.startswith("test/")]
    np.savez(
        folder / "attributes.npz",
        names=np.array(["Male"]),
        directions=np.ones((1, latent), np.float32),
        train_ids=np.array(train_ids),
        train_latents=np.stack([code_of[s] for s in train_ids]),
        test_ids=np.array(test_ids),
        test_latents=np.stack([code_of[s] for s in test_ids]),
    )
    write_manifest(
        folder,
        {
            "latent_size": latent,
            "image_shape": [16, 16, 3],
            "n_voxels": int(mask.sum()),
            "tr": 2.0,
            "mapping_method": "ridge",
        },
    )
    test_rr = next(rr for rr in realigned if (rr.run.events["trial_type"] == "test_face").any())
    imagery = next(r for r in subject.runs if "task-imagery" in r.name)
    return folder, mapping, cols, test_rr, imagery


def _serve_run(folder, run, target: str, tmp_path):
    """Replay one BIDS run through the service (emulator + its events) with a target; all messages."""
    import zmq

    from service import protocol
    from service.live.serve import Service
    from service.scanner.replay import ScannerEmulator
    from tests.service.harness import _collect_until_end

    data, affine = run.load()
    watch = tmp_path / "scanner"
    watch.mkdir()
    overrides = {"bundle": str(folder), "watch": str(watch), "runs": str(tmp_path / "runs"), "hwm": 1000}
    overrides.update(pub=f"tcp://127.0.0.1:{free_port()}", pull=f"tcp://127.0.0.1:{free_port()}")
    overrides.update(max_volumes=int(data.shape[3]), target_stim=target)
    svc = Service(load_config(ServeConfig, preset_path("serve-tiny"), overrides)).start()
    ctx = zmq.Context()
    sub = protocol.subscriber(ctx, svc.cfg.pub, hwm=100000)
    events = run.events.to_dict("records")
    emu = ScannerEmulator(
        data, affine, run.tr, watch, fmt="nifti", speed=25.0, events=events, event_address=svc.cfg.pull
    )
    try:
        return svc, _collect_until_end(svc, sub, start=emu.start)
    finally:
        emu.stop()
        sub.close(linger=0)
        ctx.term()


def test_feedback_is_higher_while_the_twin_imagines_the_target(fitted, tmp_path):
    folder, _, _, _, imagery = fitted
    ev = imagery.events
    img = ev[ev["trial_type"] == "Img"]
    target = img["stim_file"].value_counts().index[0]
    _, messages = _serve_run(folder, imagery, target, tmp_path)
    on, off = [], []
    for m in messages:
        if m.topic != "frame" or not m.header["ready"]:
            continue
        t = m.header["stim_time"]  # the moment of the paradigm this frame's BOLD reflects
        trial = img[(img["onset"] + 2 <= t) & (t < img["onset"] + img["duration"])]
        if len(trial):
            (on if trial["stim_file"].iloc[0] == target else off).append(m.header["feedback"]["value"])
    print(f"twin imagery: feedback {np.mean(on):.3f} (target, {len(on)} frames) vs {np.mean(off):.3f} ({len(off)})")
    assert on and off and np.mean(on) > np.mean(off)


def test_the_twin_test_run_through_the_service(fitted, tmp_path):
    from offline.decoding.estimates import window_patterns

    folder, mapping, cols, rr, _ = fitted
    events = rr.run.events
    test_trials = events[events["trial_type"] == "test_face"]
    target = test_trials["stim_file"].value_counts().index[0]
    svc, messages = _serve_run(folder, rr.run, target, tmp_path)
    n = rr.n_volumes
    frames = [m for m in messages if m.topic == "frame"]
    assert [m.header["volume"] for m in frames] == list(range(n))
    trials = [m for m in messages if m.topic == "trial" and m.header["trial_type"] == "test_face"]

    # the offline pipeline's window estimates of the same run -> the same mapping
    x, offline_trials = window_patterns(rr, ["test_face"], WindowSpec())
    offline = mapping.predict(x[:, cols])
    online = np.array([m.header["latent"] for m in trials])
    assert [m.header["stim_id"] for m in trials] == offline_trials["stim_file"].tolist()
    r = np.corrcoef(online.ravel(), offline.ravel())[0, 1]
    print(f"twin: online vs offline trial latents r = {r:.4f} over {len(trials)} trials")
    # the service's motion estimates are the offline realignment's (same reference, same estimator)
    recs = [json.loads(line) for line in (svc.run_dir_ / "volumes.jsonl").read_text().splitlines()]
    assert np.abs(np.array([rec["motion"] for rec in recs]) - rr.motion).max() < 1e-3
    assert r >= 0.99

    # neurofeedback: closer to the target while the twin views the target face
    fb = np.array([m.header["feedback"]["value"] for m in trials])
    on_target = np.array([m.header["stim_id"] == target for m in trials])
    assert fb[on_target].mean() > fb[~on_target].mean()
