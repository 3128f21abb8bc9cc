"""Run boundaries that operators cause: dummy volumes to discard, a run restarted on the console (a new series),
two runs in one folder, a scout on another grid; which series is followed, and why, in the log and the record."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from fmriface.benchmarks.synth import make_bundle, make_run
from service.intake.watcher import VolumeWatcher
from service.live.runlog import read_volumes
from service.live.serve import ServeConfig
from service.scanner.writers import write_volume
from service.volume import IntakeEvent, Volume
from tests.service.harness import make_volume, serve, serve_config

TR = 2.0
N_VOL = 24


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("bundle") / "b", n_voxels=60, latent_size=8, image_size=8, tr=TR)


def _cfg(synth, tmp_path, **kw) -> ServeConfig:
    return serve_config(synth.path, tmp_path, **{"max_volumes": N_VOL, "min_volumes": 4, **kw})


def test_discarded_volumes_are_recorded_but_kept_out_of_frames_and_preprocessing(synth, tmp_path):
    data = make_run(synth, [(8.0, 0), (20.0, 1)], N_VOL, amplitude=3.0, noise=2.0, drift=5.0, seed=1)
    vols = [make_volume(i, data[i], synth.affine, TR) for i in range(N_VOL)]
    cfg = _cfg(synth, tmp_path, discard=4)
    out = serve(cfg, vols)
    frames = out.topic("frame")
    assert [m.header["volume"] for m in frames] == list(range(4, N_VOL))  # no frame for a dummy volume
    records = read_volumes(tmp_path / "runs" / out.service.runlog_.run_id)
    dummies = [r for r in records if r["status"] == "discarded"]
    assert [r["volume"] for r in dummies] == [0, 1, 2, 3] and all(len(r["motion"]) == 6 for r in dummies)
    assert "discard" in dummies[0]["reason"] and "voxel_row" not in dummies[0]
    assert out.summary["volumes_discarded"] == 4 and out.summary["volumes_ok"] == N_VOL - 4
    assert out.summary["volumes_failed"] == 0
    assert all("discarded" in m.header for m in out.topic("status"))  # the heartbeat counts them too
    assert out.topic("end")[0].header["summary"]["volumes_discarded"] == 4
    # the online detrending and scaling saw the kept volumes only
    online = out.service.pipeline_.online_
    assert online.n_ == N_VOL - 4
    assert not out.service.pipeline_.history.valid[:4].any() and out.service.pipeline_.history.valid[4:N_VOL].all()


def test_discard_must_not_be_negative(synth, tmp_path):
    with pytest.raises(ValueError, match="discard"):
        _cfg(synth, tmp_path, discard=-1)


def _write_series(folder, n, series, shape=(14, 16, 10), fmt="mosaic", description="ep2d_bold", image_type=None):
    affine = np.diag([3.0, 3.0, 3.5, 1.0])
    rng = np.random.default_rng(series)
    for acq in range(1, n + 1):
        data = rng.integers(100, 900, shape).astype(np.float32)
        name = folder / f"s{series:03d}_{acq:04d}.dcm"
        write_volume(
            data,
            affine,
            name,
            fmt,
            acquisition=acq,
            tr=TR,
            series_number=series,
            series_description=description,
            image_type=image_type,
        )


def _drain(watcher, n_volumes, kinds=()):
    out = []
    while sum(isinstance(o, Volume) for o in out) < n_volumes or not set(kinds) <= {
        o.kind for o in out if isinstance(o, IntakeEvent)
    }:
        got = watcher.get(timeout=5.0)
        if got is None:
            break
        out.append(got)
    return out


def test_at_start_the_newest_epi_series_on_the_bundles_grid_is_followed(tmp_path):
    # an earlier run (series 3), the run in progress (series 5), then a later scout of another matrix (series 6)
    _write_series(tmp_path, 3, 3)
    _write_series(tmp_path, 2, 5)
    _write_series(tmp_path, 2, 6, shape=(20, 20, 10))
    newest = tmp_path / "s006_0002.dcm"
    later = newest.stat().st_mtime_ns + 10**9
    for f in tmp_path.glob("s006_*"):
        os.utime(f, ns=(later, later))
    with VolumeWatcher(str(tmp_path), reference_shape=(14, 16, 10), polling="on") as w:
        out = _drain(w, 2)
    followed = [o for o in out if isinstance(o, IntakeEvent) and o.kind == "series"]
    assert len(followed) == 1 and "series 5" in followed[0].reason and "bundle's grid" in followed[0].reason
    ignored = {o.reason for o in out if isinstance(o, IntakeEvent) and o.kind == "ignored"}
    assert any("series 3" in r and "earlier EPI series" in r for r in ignored)
    assert any("series 6" in r and "not on the bundle's grid 14x16x10" in r for r in ignored)
    assert [o.series_number for o in out if isinstance(o, Volume)] == [5, 5]


def test_a_run_restarted_on_the_console_is_reported_not_mixed_in(tmp_path):
    watch = tmp_path / "watch"
    staging = tmp_path / "staging"
    watch.mkdir()
    staging.mkdir()
    _write_series(staging, 3, 7)
    _write_series(staging, 3, 8)  # the operator stopped the run and started it again: a new series
    localizer = staging / "loc"
    localizer.mkdir()
    _write_series(localizer, 1, 2, description="localizer", image_type=["ORIGINAL", "PRIMARY", "M", "ND"])
    with VolumeWatcher(str(watch), polling="on", poll_interval_s=0.01) as w:
        for f in [*sorted(localizer.glob("*.dcm")), *sorted(staging.glob("*.dcm"))]:
            shutil.copy(f, watch / f".{f.name}.part")
            (watch / f".{f.name}.part").rename(watch / f.name)
        out = _drain(w, 3, kinds=("ignored",))
        while not any(isinstance(o, IntakeEvent) and "new EPI series" in o.reason for o in out):
            got = w.get(timeout=5.0)
            assert got is not None, [getattr(o, "reason", o) for o in out]
            out.append(got)
    assert [o.acquisition for o in out if isinstance(o, Volume)] == [1, 2, 3]
    assert {o.series_number for o in out if isinstance(o, Volume)} == {7}
    reasons = [o.reason for o in out if isinstance(o, IntakeEvent)]
    assert any("series 2" in r and "localizer" in r.lower() for r in reasons)
    restart = [r for r in reasons if "new EPI series" in r]
    assert len(restart) == 1 and "series 8" in restart[0] and "series 7" in restart[0] and "serve" in restart[0]


def test_the_followed_series_is_in_the_log_and_the_run_record(synth, tmp_path):
    from service.volume import IntakeEvent as Ev

    data = make_run(synth, [], 6, amplitude=0.0, noise=1.0, drift=0.0, seed=2)
    vols = [make_volume(i, data[i], synth.affine, TR) for i in range(6)]
    events = [Ev("series", "following series 9 (ep2d_bold) (first EPI series)", path="/export/patient/x.dcm")]
    cfg = _cfg(synth, tmp_path, max_volumes=6)
    out = serve(cfg, [*events, *vols])
    run_dir = tmp_path / "runs" / out.service.runlog_.run_id
    lines = [json.loads(x) for x in (run_dir / "intake.jsonl").read_text().splitlines()]
    assert lines[0]["kind"] == "series" and "series 9" in lines[0]["reason"] and lines[0]["file"] == "x.dcm"
    assert out.summary["series"].startswith("following series 9")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["summary"]["series"].startswith("following series 9")


def test_serve_restarted_on_an_ended_runs_folder_does_not_decode_its_volumes_again(synth, tmp_path):
    import threading

    import zmq

    from fmriface.benchmarks.soak_harness import synthetic_run
    from service import protocol
    from service.live.serve import Service
    from service.scanner.replay import ScannerEmulator

    watch, runs = tmp_path / "watch", tmp_path / "runs"
    watch.mkdir()
    ScannerEmulator(synthetic_run(synth.reference, 6, seed=2), synth.affine, TR, watch, asap=True).start().wait(30)

    def run_once(**kw):
        cfg = _cfg(synth, tmp_path, watch=watch, runs=runs, max_volumes=6, **kw)
        svc = Service(cfg).start()
        ctx = zmq.Context()
        sub = protocol.subscriber(ctx, cfg.pub, hwm=10000)
        thread = threading.Thread(target=svc.run, daemon=True)
        thread.start()
        frames, end = [], None
        while end is None:
            msg = protocol.recv(sub, 30000, protocol.SERVICE_TOPICS)
            assert msg is not None
            frames += [msg] if msg.topic == "frame" else []
            end = msg if msg.topic == "end" else None
        thread.join(10)
        sub.close(linger=0)
        ctx.term()
        return svc, frames, end

    first, frames, end = run_once()
    assert len(frames) == 6 and end.header["reason"] == "max_volumes"
    second, frames, end = run_once(startup_timeout=1.0, idle_timeout=1.0)
    assert second.runlog_.run_id != first.runlog_.run_id  # a new run
    assert frames == [] and end.header["summary"]["skipped_from_ended_runs"] == 6
