"""The pipeline end to end (queue-fed volumes -> ZeroMQ + run records) on a synthetic bundle whose voxels
encode known latents: order and sequence numbers, neurofeedback, trial latents against the offline estimate,
bad volumes, restart, slow subscribers, inbound events and flip acks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fmriface.benchmarks.synth import make_bundle, make_run
from service import protocol
from service.bundle import load_bundle
from service.live.decoder import LatentDecoder
from service.live.runlog import read_volumes
from service.live.serve import ServeConfig
from service.online import detrend_offline
from service.window import window_estimate
from tests.conftest import free_port
from tests.service.harness import make_volume, serve

TR = 2.0
N_VOL = 64
# (onset s, stimulus index): a face every 10 s, stimulus 1 is the neurofeedback target
TRIALS = [(6.0 + 10.0 * k, s) for k, s in enumerate([0, 1, 2, 1, 3, 4, 1, 5, 0, 1, 2])]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("bundle") / "b", n_voxels=80, latent_size=8, image_size=8, tr=TR)


@pytest.fixture(scope="module")
def run_data(synth):
    return make_run(synth, TRIALS, N_VOL, amplitude=3.0, noise=2.0, drift=25.0, seed=3)


def _cfg(synth, tmp_path, **kw) -> ServeConfig:
    tmp_path.mkdir(parents=True, exist_ok=True)
    base = dict(
        bundle=synth.path,
        watch=tmp_path,
        runs=tmp_path / "runs",
        pub=f"tcp://127.0.0.1:{free_port()}",
        pull=f"tcp://127.0.0.1:{free_port()}",
        heartbeat=0.1,
        max_volumes=N_VOL,
        hwm=1000,  # the test's subscriber must get every message even when a backlog is sent in bursts
    )
    base.update(kw)
    return ServeConfig(**base)


def _onsets(synth) -> list[bytes]:
    out = []
    for k, (onset, s) in enumerate(TRIALS):
        h = protocol.event_header(
            "onset", k, onset=onset, duration=1.0, trial_type="test_face", stim_id=synth.stim_ids[s], trial=k
        )
        out.append(protocol.encode("event", h))
    return out


def _volumes(synth, data, indices=None):
    return [make_volume(i, data[i], synth.affine, TR) for i in (range(len(data)) if indices is None else indices)]


def test_every_volume_published_in_order_with_feedback_and_trials(synth, run_data, tmp_path):
    target = synth.stim_ids[1]
    cfg = _cfg(synth, tmp_path, target_stim=target.split("/")[-1])
    out = serve(cfg, _volumes(synth, run_data), inbound=_onsets(synth))
    frames = out.topic("frame")
    assert [m.header["volume"] for m in frames] == list(range(N_VOL))
    assert [m.header["seq"] for m in frames] == list(range(N_VOL))
    h = frames[-1].header
    assert set(h["t"]) == {"file_ready", "seen", "read", "dequeued", "motion", "decoded", "sent"}
    assert h["t"]["file_ready"] <= h["t"]["motion"] <= h["t"]["decoded"] <= h["t"]["sent"]
    assert len(h["motion"]) == 6 and max(abs(p) for p in h["motion"]) < 0.2  # the run has no head motion
    assert frames[0].image().shape == (8, 8, 3) and len(h["latent"]) == 8
    status = out.topic("status")
    assert [m.header["seq"] for m in status] == list(range(status[0].header["seq"], status[-1].header["seq"] + 1))
    end = out.topic("end")[0].header
    assert end["reason"] == "max_volumes" and end["summary"]["volumes_ok"] == N_VOL

    # trials: one per onset, in order, with its stimulus id
    trials = out.topic("trial")
    assert [m.header["trial"] for m in trials] == [str(k) for k in range(len(TRIALS))]
    assert [m.header["seq"] for m in trials] == list(range(len(TRIALS)))
    assert [m.header["stim_id"] for m in trials] == [synth.stim_ids[s] for _, s in TRIALS]

    # neurofeedback: higher while the target is on than for the other faces, per trial and per frame
    is_target = np.array([s == 1 for _, s in TRIALS])
    fb_trial = np.array([m.header["feedback"]["value"] for m in trials])
    assert fb_trial[is_target].mean() > fb_trial[~is_target].mean() + 0.5
    fb_frame, on_target = [], []
    for m in frames[12:]:  # after the preprocessing has settled
        t = m.header["volume"] * TR
        k = [i for i, (o, _) in enumerate(TRIALS) if o + 4 <= t < o + 8]
        if k:
            fb_frame.append(m.header["feedback"]["value"])
            on_target.append(is_target[k[0]])
    fb_frame, on_target = np.array(fb_frame), np.array(on_target)
    assert fb_frame[on_target].mean() > fb_frame[~on_target].mean() + 0.3
    assert set(frames[-1].header["feedback"]["projections"]) == {"Male", "Smiling"}

    # the records: one line per volume, arrays in step, trials.tsv, manifest summary
    run_dir = out.service.run_dir_
    recs = read_volumes(run_dir)
    assert [r["volume"] for r in recs] == list(range(N_VOL)) and all(r["status"] == "ok" for r in recs)
    assert np.load(run_dir / "latents.npy").shape == (N_VOL, 8)
    lines = (run_dir / "trials.tsv").read_text().splitlines()
    assert len(lines) == 1 + len(TRIALS)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["state"] == "ended" and manifest["summary"]["trials"] == len(TRIALS)
    assert str(tmp_path) not in json.dumps(manifest["config"]["watch"])  # the watched path is not recorded


def test_online_trial_latents_match_the_offline_window_estimate(synth, tmp_path):
    # a run as long as the paper's face runs' order of magnitude (150 volumes, 14 trials)
    n = 150
    trials = [(6.0 + 10.0 * k, s) for k, s in enumerate([0, 1, 2, 1, 3, 4, 1, 5, 0, 1, 2, 3, 4, 5])]
    data = make_run(synth, trials, n, amplitude=3.0, noise=2.0, drift=25.0, seed=5)
    events = [
        protocol.encode("event", protocol.event_header("onset", k, onset=o, stim_id=synth.stim_ids[s], trial=k))
        for k, (o, s) in enumerate(trials)
    ]
    out = serve(_cfg(synth, tmp_path, max_volumes=n), _volumes(synth, data), inbound=events)
    run_dir = out.service.run_dir_
    online = np.load(run_dir / "trial_latents.npy")
    recs = read_volumes(run_dir)
    voxels = np.load(run_dir / "voxels.npy")  # the motion-corrected mask voxels, as the service saw them
    motion = np.array([r["motion"] for r in recs])
    offline_x = window_estimate(detrend_offline(voxels, motion), np.array([o for o, _ in trials]), TR)
    offline = LatentDecoder(load_bundle(synth.path)).build().latents(offline_x)
    r = np.corrcoef(online.ravel(), offline.ravel())[0, 1]
    ready = np.array([m.header["ready"] for m in out.topic("trial")])
    r_ready = np.corrcoef(online[ready].ravel(), offline[ready].ravel())[0, 1]
    print(f"online vs offline trial latents: r = {r:.4f} (all {len(ready)}), {r_ready:.4f} ({ready.sum()} ready)")
    assert r_ready >= 0.99 and r >= 0.98, (r, r_ready)
    # and both recover the stimuli's latents
    truth = synth.stim_latents[[s for _, s in trials]]
    assert np.corrcoef(online.ravel(), truth.ravel())[0, 1] > 0.8


def test_a_bad_volume_is_recorded_and_skipped(synth, run_data, tmp_path, monkeypatch):
    monkeypatch.setenv("FMRIFACE_RAISE", "0")
    vols = _volumes(synth, run_data[:20])
    vols[7].data = vols[7].data.copy()
    vols[7].data[np.nonzero(synth.mask)] = np.nan  # e.g. a reconstruction failure
    vols[11].data = vols[11].data[:, :, :-1]  # a volume with another matrix
    out = serve(_cfg(synth, tmp_path, max_volumes=20), vols)  # failed volumes count as taken
    frames = out.topic("frame")
    assert [m.header["volume"] for m in frames] == [i for i in range(20) if i not in (7, 11)]
    assert [m.header["seq"] for m in frames] == list(range(18))
    recs = {r["volume"]: r for r in read_volumes(out.service.run_dir_)}
    assert recs[7]["status"] == "error" and "non-finite" in recs[7]["error"]
    assert recs[11]["status"] == "error" and "shape" in recs[11]["error"]
    assert out.summary["volumes_failed"] == 2 and out.summary["volumes_ok"] == 18


def test_a_restarted_run_resumes_without_duplicates(synth, run_data, tmp_path):
    ref = serve(_cfg(synth, tmp_path / "a"), _volumes(synth, run_data), inbound=_onsets(synth))
    cfg = _cfg(synth, tmp_path / "b", run_id="resumed", max_volumes=0)
    first = serve(cfg, _volumes(synth, run_data, range(30)), inbound=_onsets(synth), stop_after=True)
    assert first.topic("end")[0].header["reason"] == "SIGTERM"
    # the restarted service sees every file again (the watcher rescans the folder) plus the new ones
    cfg2 = _cfg(synth, tmp_path / "b", run_id="resumed", max_volumes=N_VOL - 30)
    second = serve(cfg2, _volumes(synth, run_data))
    frames = second.topic("frame")
    assert [m.header["volume"] for m in frames] == list(range(30, N_VOL))
    assert [m.header["seq"] for m in frames] == list(range(30, N_VOL))
    assert second.summary["duplicates_ignored"] == 30
    run_dir = second.service.run_dir_
    assert [r["volume"] for r in read_volumes(run_dir)] == list(range(N_VOL))
    # same outputs as the uninterrupted run: frames' latents and every trial exactly once (up to the motion
    # estimator's internal warm-start state, which a restart rebuilds from the recorded parameters only)
    np.testing.assert_allclose(
        np.load(run_dir / "latents.npy"), np.load(ref.service.run_dir_ / "latents.npy"), atol=0.01
    )
    trials = [m.header["trial"] for m in first.topic("trial") + second.topic("trial")]
    assert trials == [str(k) for k in range(len(TRIALS))]
    np.testing.assert_allclose(
        np.load(run_dir / "trial_latents.npy"), np.load(ref.service.run_dir_ / "trial_latents.npy"), atol=0.01
    )
    assert json.loads((run_dir / "manifest.json").read_text())["restarts"] == 1


def test_a_subscriber_that_never_reads_does_not_slow_the_service(tmp_path_factory, tmp_path):
    big = make_bundle(tmp_path_factory.mktemp("big") / "b", n_voxels=80, latent_size=8, image_size=128, tr=TR)
    data = make_run(big, [(6.0, 0)], 20, seed=4)
    n = 300
    vols = [make_volume(i, data[i % 20], big.affine, TR) for i in range(n)]
    for i, v in enumerate(vols):
        v.sha256 = f"{i:064x}"  # distinct files
    out = serve(_cfg(big, tmp_path, max_volumes=n, hwm=16), vols, extra_sub=True, pace=0.004)
    frames = out.topic("frame")
    seqs = [m.header["seq"] for m in frames]
    # the reading subscriber got the frames in order (all, unless the loaded test machine starved it for a
    # burst longer than the high-water mark: a display shows the newest frame, by design)
    assert seqs == sorted(set(seqs)) and len(seqs) >= 0.95 * n
    # the other one got only what the bounded queues held: the service dropped, it did not wait
    assert out.lazy_count < n // 2
    # and sending never waited on it: from decoded to sent (header + send) stays a fraction of a millisecond
    send = np.array([m.header["t"]["sent"] - m.header["t"]["decoded"] for m in frames])
    assert np.median(send) < 0.005 and send.max() < 0.2


def test_inbound_events_flips_and_malformed_messages(synth, run_data, tmp_path):
    flips = []

    def ack(msg, push):
        if msg.header["seq"] % 5 == 0:
            push.send_multipart(
                protocol.encode("flip", protocol.flip_header(len(flips), "frame", msg.header["seq"], msg.received))
            )
            flips.append(msg.header["seq"])

    bad = [
        [b"event", b"{not json", b""],
        [b"bogus", json.dumps({"schema": 1}).encode(), b""],
        protocol.encode("event", {"schema": 1, "kind": "dance", "seq": 0}),
        protocol.encode("event", protocol.event_header("target", 1, stim_id="no_such_face.png")),
        protocol.encode("event", protocol.event_header("target", 2, stim_id=synth.stim_ids[2], PatientName="DOE^JOHN")),
    ]
    out = serve(_cfg(synth, tmp_path, max_volumes=30), _volumes(synth, run_data[:30]), inbound=bad, on_frame=ack)
    assert out.summary["malformed_inbound"] == 4  # bad JSON, unknown topic, unknown kind, unknown stimulus
    frames = out.topic("frame")
    assert frames[-1].header["feedback"]["target"] == synth.stim_ids[2]
    run_dir = out.service.run_dir_
    records = [json.loads(line) for line in (run_dir / "flips.jsonl").read_text().splitlines()]
    # every ack that reached the service before the run ended is recorded (the last may come after the end)
    assert [r["shown_seq"] for r in records] == flips[: len(records)] and len(records) >= len(flips) - 1
    assert all(r["e2e_s"] > 0 and r["e2e_s"] == round(r["flip_time"] - r["file_ready"], 6) for r in records)
    assert "DOE" not in (run_dir / "events.jsonl").read_text()


def test_a_target_given_as_an_image_is_encoded_with_the_bundle_encoder(synth, run_data, tmp_path):
    from PIL import Image

    decoder = LatentDecoder(load_bundle(synth.path)).build()
    face = decoder.decode(synth.stim_latents[3]).copy()  # the face of stimulus 3, as an image
    fields, payload = protocol.encode_image(face)
    event = protocol.encode("event", protocol.event_header("target", 0, **fields), payload)
    out = serve(_cfg(synth, tmp_path, max_volumes=12), _volumes(synth, run_data[:12]), inbound=[event])
    assert out.topic("frame")[-1].header["feedback"]["target"] == "image"
    target = np.array(json.loads((out.service.run_dir_ / "state.json").read_text())["target"]["latent"])
    assert np.corrcoef(target, synth.stim_latents[3])[0, 1] > 0.99
    # the same from the config: an image file resized to the bundle's faces
    Image.fromarray(face).resize((32, 32), Image.NEAREST).save(tmp_path / "target.png")
    cfg = _cfg(synth, tmp_path / "cfg", max_volumes=4, target_image=tmp_path / "target.png")
    out = serve(cfg, _volumes(synth, run_data[:4]))
    assert out.topic("frame")[0].header["feedback"]["target"] == "image"


def test_a_target_image_file_is_framed_as_the_face_space_was_trained(tmp_path):
    from types import SimpleNamespace

    from PIL import Image

    from service.live.startup import StartupError, read_target_image

    photo = np.full((60, 40, 3), 30, np.uint8)  # a portrait photograph: a bright face inside the central 80%
    photo[14:46, 4:36] = 220
    Image.fromarray(photo).save(tmp_path / "target.png")

    def bundle(**manifest):
        return SimpleNamespace(image_shape=(16, 16, 3), manifest=manifest, path=tmp_path / "bundle")

    framed = read_target_image(tmp_path / "target.png", bundle(image_framing="central-80"))
    assert framed.shape == (16, 16, 3) and framed.min() == 220  # only the face is left
    assert read_target_image(tmp_path / "target.png", bundle())[0].max() == 30  # an older bundle: resized only
    with pytest.raises(StartupError, match="image_framing: unknown framing 'tight'"):
        read_target_image(tmp_path / "target.png", bundle(image_framing="tight"))
    (tmp_path / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(StartupError, match="cut.png cannot be read"):
        read_target_image(tmp_path / "cut.png", bundle(image_framing="square"))


def test_the_run_resamples_with_the_bundles_interpolation_unless_told_otherwise(synth, run_data, tmp_path, caplog):
    import shutil

    cubic = tmp_path / "cubic-bundle"
    shutil.copytree(synth.path, cubic)
    manifest = json.loads((cubic / "manifest.json").read_text())
    (cubic / "manifest.json").write_text(json.dumps({**manifest, "interpolation": "cubic"}))
    vols = _volumes(synth, run_data, range(12))
    runs = {}
    for name, bundle, asked in (("default", synth.path, ""), ("fitted", cubic, ""), ("asked", cubic, "linear")):
        cfg = _cfg(synth, tmp_path / name, bundle=bundle, interpolation=asked, max_volumes=12, verify_bundle=False)
        out = serve(cfg, vols)
        assert out.service.pipeline_.reg_.interpolation == out.service.pipeline_.interpolation
        runs[name] = json.loads((out.service.run_dir_ / "manifest.json").read_text())["interpolation"]
    assert runs == {"default": "linear", "fitted": "cubic", "asked": "linear"}
    assert "interpolation linear was asked for, but the bundle's training volumes were resampled cubic" in caplog.text
