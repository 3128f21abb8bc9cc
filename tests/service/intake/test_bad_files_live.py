"""Bad files in the watch folder never stop or stall the live path (issue #16): a symlink loop, a huge
zero-filled file with a DICM preamble, a text file named .dcm, the folder itself deleted mid-run."""

from __future__ import annotations

import os
import shutil

import numpy as np

from fmriface.benchmarks.synth import make_bundle
from service.intake.inspect import inspect_path
from service.intake.watcher import VolumeWatcher
from service.scanner.writers import write_volume
from service.volume import IntakeEvent, Volume

AFFINE = np.diag([3.0, 3.0, 3.5, 1.0])


def _volume(folder, acq):
    data = np.random.default_rng(acq).integers(100, 900, (12, 14, 8)).astype(np.float32)
    return write_volume(data, AFFINE, folder / f"vol{acq:04d}.dcm", "mosaic", acquisition=acq, tr=2.0)[0]


def _collect(watcher, until, limit=200):
    out = []
    while not until(out) and len(out) < limit:
        got = watcher.get(timeout=5.0)
        assert got is not None, [getattr(o, "reason", o) for o in out]
        out.append(got)
    return out


def _events(out, kind):
    return [o for o in out if isinstance(o, IntakeEvent) and o.kind == kind]


def test_a_symlink_loop_is_reported_once_and_does_not_stop_intake(tmp_path):
    os.symlink(tmp_path / "b.dcm", tmp_path / "a.dcm")
    os.symlink(tmp_path / "a.dcm", tmp_path / "b.dcm")  # a -> b -> a, there at start
    _volume(tmp_path, 1)
    with VolumeWatcher(str(tmp_path), polling="on", poll_interval_s=0.01) as w:
        out = _collect(w, lambda o: sum(isinstance(x, Volume) for x in o) >= 1 and len(_events(o, "ignored")) >= 2)
        os.symlink(tmp_path / "d.dcm", tmp_path / "c.dcm")  # another loop, mid-run
        os.symlink(tmp_path / "c.dcm", tmp_path / "d.dcm")
        _volume(tmp_path, 2)
        out += _collect(w, lambda o: any(isinstance(x, Volume) for x in o) and len(_events(o, "ignored")) >= 2)
        _volume(tmp_path, 3)  # many polls later, the loops are not reported again
        out += _collect(w, lambda o: any(isinstance(x, Volume) for x in o))
    loops = [e for e in _events(out, "ignored") if "loops" in e.reason]
    assert sorted(os.path.basename(str(e.path)) for e in loops) == ["a.dcm", "b.dcm", "c.dcm", "d.dcm"]
    assert [v.acquisition for v in out if isinstance(v, Volume)] == [1, 2, 3]


def test_a_huge_file_is_skipped_unread_and_a_zero_filled_one_refused_at_once(tmp_path):
    huge = tmp_path / ".staging"
    with open(huge, "wb") as f:  # 30 MB of zeros behind a DICM preamble
        f.write(bytes(128) + b"DICM")
        f.truncate(30 << 20)
    zeros = tmp_path / ".zeros"
    zeros.write_bytes(bytes(128) + b"DICM" + bytes(2 << 20))  # 2 MB, under the size limit
    with VolumeWatcher(str(tmp_path), polling="on", poll_interval_s=0.01, max_file_bytes=16 << 20) as w:
        _volume(tmp_path, 1)
        huge.rename(tmp_path / "huge.dcm")
        zeros.rename(tmp_path / "zeros.dcm")
        _volume(tmp_path, 2)
        out = _collect(
            w,
            lambda o: (
                sum(isinstance(x, Volume) for x in o) >= 2 and len(_events(o, "ignored") + _events(o, "corrupt")) >= 2
            ),
        )
    skipped = [e for e in _events(out, "ignored") if os.path.basename(str(e.path)) == "huge.dcm"]
    assert skipped and "skipped unread" in skipped[0].reason and str(30 << 20) in skipped[0].reason
    refused = [e for e in _events(out, "corrupt") if os.path.basename(str(e.path)) == "zeros.dcm"]
    assert refused and "file meta group" in refused[0].reason
    assert [v.acquisition for v in out if isinstance(v, Volume)] == [1, 2]


def test_a_text_file_named_dcm_is_ignored_not_a_failed_volume(tmp_path):
    (tmp_path / "notes.dcm").write_text("operator notes: the participant moved at volume 40\n" * 20)
    _volume(tmp_path, 1)
    with VolumeWatcher(str(tmp_path), polling="on", poll_interval_s=0.01) as w:
        out = _collect(w, lambda o: any(isinstance(x, Volume) for x in o) and _events(o, "ignored"))
    assert not _events(out, "corrupt")
    (ignored,) = _events(out, "ignored")
    assert os.path.basename(str(ignored.path)) == "notes.dcm" and "not a DICOM file" in ignored.reason


def test_inspect_does_not_read_a_file_too_large_for_a_volume(tmp_path):
    big = tmp_path / "big.dcm"
    with open(big, "wb") as f:
        f.write(bytes(128) + b"DICM")
        f.truncate(400 << 20)  # sparse: no 400 MB written
    report = inspect_path(tmp_path)
    assert report["problems"][0]["kind"] == "too-large" and "not read" in report["problems"][0]["reason"]


def test_a_watch_folder_deleted_mid_run_ends_the_run_saying_so(tmp_path):
    import threading

    import zmq

    from service import protocol
    from service.live.serve import ServeConfig, Service
    from tests.conftest import free_port

    sb = make_bundle(tmp_path / "bundle", shape=(12, 14, 8), n_voxels=40, tr=2.0)
    watch = tmp_path / "watch"
    watch.mkdir()
    cfg = ServeConfig(
        bundle=sb.path,
        watch=watch,
        runs=tmp_path / "runs",
        pub=f"tcp://127.0.0.1:{free_port()}",
        pull="",
        heartbeat=0.1,
    )
    cfg = ServeConfig(**{**cfg.__dict__, "watcher": cfg.watcher.__class__(polling="on", poll_interval_s=0.02)})
    svc = Service(cfg).start()
    ctx = zmq.Context()
    sub = protocol.subscriber(ctx, cfg.pub, hwm=1000)
    thread = threading.Thread(target=svc.run, daemon=True)
    thread.start()
    try:
        while (msg := protocol.recv(sub, 30000, protocol.SERVICE_TOPICS)) is None or msg.topic != "status":
            assert msg is not None
        shutil.rmtree(watch)
        while (msg := protocol.recv(sub, 30000, protocol.SERVICE_TOPICS)) is None or msg.topic != "end":
            assert msg is not None, "no end message after the folder went"
        assert msg.header["reason"].startswith("watch folder lost")
    finally:
        svc.stop("test")
        thread.join(10)
        sub.close(linger=0)
        ctx.term()


def test_the_soak_with_bad_files_dropped_in_keeps_every_volume(tmp_path):
    """bench soak --bad-files, short: every kind dropped into the folder during a replay; nothing lost."""
    from fmriface.benchmarks.soak import soak

    result = soak(tmp_path / "soak", n_volumes=40, fault_rate=0.0, rate=20.0, seed=2, bad_files=5)
    assert result["problems"] == [] and result["volumes_ok"] == 40 and result["accounted"]
    assert sorted(result["bad_files"]) == ["fifo", "garbage-after-dicm", "symlink-loop", "text-dcm", "zero-dicm-30mb"]
