"""One writer per run, and failure that says so (issue #28).

A second ``serve`` on a run that another process is writing is refused at once, naming the holder; a SIGKILLed
holder's lock goes with it, so its run resumes. A run whose records cannot be written (a full disk) stops with a
non-zero exit, its manifest ``stopped`` with the reason and a report that says so, never an empty one.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from fmriface.benchmarks.soak_harness import (
    Collector,
    ServeProcess,
    free_address,
    read_jsonl,
    synthetic_run,
    wait_until,
)
from fmriface.benchmarks.synth import make_bundle, make_run
from service.live.runlog import RunLock, RunLockedError, RunLog
from service.scanner.replay import ScannerEmulator
from tests.service.harness import make_volume, serve, serve_config

TR = 2.0


def test_a_run_lock_is_exclusive_names_its_holder_and_is_released(tmp_path):
    first = RunLock(tmp_path / "r").acquire()
    holder = json.loads(first.path.read_text())
    assert holder["pid"] == os.getpid() and holder["host"] and holder["started"]
    with pytest.raises(RunLockedError, match=rf"being written by another process \(pid {os.getpid()} on "):
        RunLock(tmp_path / "r").acquire()
    first.release()
    again = RunLock(tmp_path / "r").acquire()
    assert again.held
    again.release()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("writer") / "bundle", shape=(14, 16, 10), n_voxels=60, tr=TR)


def _values(bundle, watch, runs, pub, pull) -> dict:
    return dict(
        bundle=bundle.path,
        watch=watch,
        runs=runs,
        run_id="shared",
        pub=pub,
        pull=pull,
        hwm=1000,
        heartbeat=0.2,
        idle_timeout=2.0,
        startup_timeout=60.0,
        min_volumes=3,
    )


def test_a_second_serve_on_a_locked_run_exits_at_once_and_a_killed_holder_resumes(bundle, tmp_path):
    watch, runs = tmp_path / "scanner", tmp_path / "runs"
    watch.mkdir()
    n = 14
    pub = free_address()
    collector = Collector(pub)
    collector.start()
    emu = ScannerEmulator(
        data=synthetic_run(bundle.reference, n, seed=2),
        affine=bundle.affine,
        tr=TR,
        out_dir=watch,
        fmt="nifti",
        speed=TR * 8,
    )
    lives = []
    try:
        first = ServeProcess(_values(bundle, watch, runs, pub, free_address()), tmp_path, name="first").start()
        lives.append(first)
        assert wait_until(lambda: collector.ready.is_set() or not first.alive(), 60), first.log()
        # another serve on the same run, other ports: refused before it writes anything, naming the holder
        second = ServeProcess(
            _values(bundle, watch, runs, free_address(), free_address()), tmp_path, name="second"
        ).start()
        lives.append(second)
        assert second.wait(60) not in (0, None)
        assert f"being written by another process (pid {first.pid} on " in second.log(), second.log()[-2000:]
        assert first.alive()
        emu.start()
        assert wait_until(lambda: any(f["volume"] >= 4 for f in collector.frames()), 60), first.log()[-3000:]
        first.kill()  # SIGKILL: the kernel lets the lock go with the process
        collector.ready.clear()
        third = ServeProcess(_values(bundle, watch, runs, pub, free_address()), tmp_path, name="third").start()
        lives.append(third)
        assert emu.wait(120)
        assert third.wait(60) == 0, third.log()[-3000:]
    finally:
        emu.stop()
        collector.close()
        for s in lives:
            s.kill()
    records = read_jsonl(runs / "shared" / "volumes.jsonl")
    ok = [r["acquisition"] for r in records if r.get("status") == "ok"]
    assert sorted(ok) == list(range(1, n + 1)), records  # one line per volume: the refused serve wrote none
    manifest = json.loads((runs / "shared" / "manifest.json").read_text())
    assert manifest["state"] == "ended" and manifest["restarts"] == 1


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("bundle") / "b", n_voxels=60, latent_size=8, image_size=8, tr=TR)


def _disk_full_after(monkeypatch, k: int) -> list[int]:
    real_volume = RunLog.volume
    written: list[int] = []

    def volume(self, record, voxels, latent):
        if len(written) >= k:
            raise OSError(28, "No space left on device")
        written.append(record["volume"])
        return real_volume(self, record, voxels, latent)

    monkeypatch.setattr(RunLog, "volume", volume)
    return written


def test_a_full_disk_stops_the_run_as_a_failure_with_its_reason_in_manifest_and_report(synth, tmp_path, monkeypatch):
    from service.live.report import run_report

    monkeypatch.setenv("FMRIFACE_RAISE", "0")
    n = 8
    data = make_run(synth, [], n, amplitude=0.0, noise=1.0, drift=0.0, seed=1)
    vols = [make_volume(i, data[i], synth.affine, TR) for i in range(n)]
    written = _disk_full_after(monkeypatch, 3)
    out = serve(serve_config(synth.path, tmp_path, max_volumes=n), vols)
    svc = out.service
    # the record first, then the frame: every frame published is recorded, none without
    assert [m.header["volume"] for m in out.topic("frame")] == written == [0, 1, 2]
    assert svc.error_ is not None and "No space left" in svc.error_
    manifest = json.loads((svc.run_dir_ / "manifest.json").read_text())
    assert manifest["state"] == "stopped" and "run records cannot be written" in manifest["summary"]["reason"]
    report = (svc.run_dir_ / "report.md").read_text()
    assert "stopped (run records cannot be written" in report
    assert run_report(svc.run_dir_)["state"] == "stopped"
    assert not (svc.run_dir_ / "space.reserve").exists() and not (svc.run_dir_ / "report.md.tmp").exists()
    lock = RunLock(svc.run_dir_).acquire()  # the lock went with the run
    lock.release()


def test_serve_exits_non_zero_when_its_records_cannot_be_written(synth, tmp_path, monkeypatch, capsys):
    from fmriface.commands import serve as serve_command

    class FiniteSource:
        def __init__(self, vols):
            self.vols = list(vols)

        def start(self):
            pass

        def stop(self):
            pass

        def get(self, timeout):
            return self.vols.pop(0) if self.vols else None

    data = make_run(synth, [], 6, amplitude=0.0, noise=1.0, drift=0.0, seed=2)
    vols = [make_volume(i, data[i], synth.affine, TR) for i in range(6)]
    monkeypatch.setenv("FMRIFACE_RAISE", "0")
    monkeypatch.setattr("service.live.serve._make_watcher", lambda cfg, shape: FiniteSource(vols))
    _disk_full_after(monkeypatch, 2)
    watch = tmp_path / "watch"
    watch.mkdir()
    argv = ["--bundle", str(synth.path), "--watch", str(watch), "--runs", str(tmp_path / "runs")]
    argv += ["--pub", free_address(), "--pull", free_address(), "--max-volumes", "6", "--no-verify"]
    assert serve_command.main(argv) == 1
    err = capsys.readouterr().err
    assert "stopped by an error: run records cannot be written (volume): No space left on device" in err
    run_dir = next((tmp_path / "runs").iterdir())
    assert json.loads((run_dir / "manifest.json").read_text())["state"] == "stopped"
    assert (run_dir / "report.md").stat().st_size > 0
    assert np.load(run_dir / "latents.npy").shape[0] == 2


def test_fmriface_report_names_torn_lines_and_reads_session_json(synth, tmp_path, monkeypatch, capsys):
    from fmriface.commands import report as report_command

    monkeypatch.setenv("FMRIFACE_RAISE", "0")
    n = 5
    data = make_run(synth, [], n, amplitude=0.0, noise=1.0, drift=0.0, seed=3)
    out = serve(
        serve_config(synth.path, tmp_path, max_volumes=n), [make_volume(i, data[i], synth.affine, TR) for i in range(n)]
    )
    run_dir = out.service.run_dir_
    with open(run_dir / "volumes.jsonl", "a", encoding="utf-8") as f:
        f.write('{"volume": 99, "sta')  # a crash's torn last line
    (run_dir / "session.json").write_text(json.dumps({"offset": [1.0, 0, 0, 0, 0, 2.0], "residual": 0.1}))
    assert report_command.main([str(run_dir)]) == 0
    captured = capsys.readouterr()
    assert f"volumes.jsonl: 1 torn line not read (line {n + 1})" in captured.out
    assert "warning" in captured.err and f"(line {n + 1})" in captured.err
    assert "[1.0, 0, 0, 0, 0, 2.0]" in captured.out  # the session offset from session.json
    assert f"{n} / {n}" in captured.out  # every line that could be read is counted


@pytest.fixture
def tiny_disk(tmp_path):
    """A 512 KiB tmpfs (root only; skipped where it cannot be mounted), unmounted after the test."""
    import subprocess

    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_runs_folder_that_really_fills_up_stops_the_run_with_manifest_and_report(synth, tiny_disk, monkeypatch):
    import threading
    import time

    from service.live.serve import Service
    from tests.service.harness import QueueSource

    monkeypatch.setenv("FMRIFACE_RAISE", "0")
    n = 40
    data = make_run(synth, [], n, amplitude=0.0, noise=1.0, drift=0.0, seed=4)
    source = QueueSource()
    svc = Service(serve_config(synth.path, tiny_disk, runs=tiny_disk / "runs", max_volumes=n), source=source).start()
    assert (svc.run_dir_ / "space.reserve").stat().st_size > 0
    with open(tiny_disk / "filler", "wb", buffering=0) as f:  # the disk fills up: someone else takes it all
        try:
            while True:
                f.write(bytes(4096))
        except OSError:
            pass
    thread = threading.Thread(target=svc.run, daemon=True)
    thread.start()
    for i in range(n):
        v = make_volume(i, data[i], synth.affine, TR)
        v.t_seen = v.t_ready = time.time()
        source.q.put(v)
    thread.join(60)
    assert not thread.is_alive()
    assert svc.error_ is not None and "No space left" in svc.error_
    manifest = json.loads((svc.run_dir_ / "manifest.json").read_text())
    assert manifest["state"] == "stopped" and "run records cannot be written" in manifest["summary"]["reason"]
    report = (svc.run_dir_ / "report.md").read_text()
    assert report.strip() and "stopped" in report
