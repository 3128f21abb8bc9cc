"""`fmriface serve` on a real watched folder: files written as a scanner exports them, the start-up checks,
SIGTERM, the idle timeout, JSON logs and privacy."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from fmriface import cli
from fmriface.benchmarks.synth import make_bundle, make_run
from fmriface.config import resolve_config
from service import protocol
from service.live.runlog import read_volumes
from service.scanner.replay import ScannerEmulator
from tests.conftest import free_port

TR = 2.0
PATIENT = {"PatientName": "DOE^JOHN", "PatientID": "PAT-93817", "PatientBirthDate": "19700101"}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("bundle") / "b", n_voxels=80, latent_size=8, image_size=8, tr=TR)


def _argv(synth, watch: Path, runs: Path, pub: str, pull: str, *extra: str) -> list[str]:
    base = ["--config", "serve-tiny", "--bundle", str(synth.path), "--watch", str(watch), "--runs", str(runs)]
    return ["serve", *base, "--pub", pub, "--pull", pull, *extra]


def _wait_status(sub, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        msg = protocol.recv(sub, 200, protocol.SERVICE_TOPICS)
        if msg is not None and msg.topic == "status":
            return
    raise AssertionError(f"no status heartbeat within {seconds} s")


def test_serve_a_watched_folder_of_dicom_files_until_idle(synth, tmp_path, capsys):
    watch, runs = tmp_path / "export" / "DOE_JOHN_19700101", tmp_path / "runs"
    watch.mkdir(parents=True)
    pub, pull = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    n = 12
    data = make_run(synth, [(4.0, 1)], n, amplitude=3.0, seed=2)
    events = tmp_path / "events.tsv"
    events.write_text("onset\tduration\ttrial_type\tstim_file\n4.0\t1.0\ttest_face\ttest/test_00.png\n")
    ctx = zmq.Context()
    sub = protocol.subscriber(ctx, pub, hwm=10000)
    argv = _argv(synth, watch, runs, pub, pull, "--events", str(events), "--idle-timeout", "1.5")
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(rc=cli.main(argv)), daemon=True)
    thread.start()
    try:
        _wait_status(sub)
        emulator = ScannerEmulator(np.moveaxis(data, 0, -1), synth.affine, TR, watch, fmt="mosaic", speed=40.0)
        emulator.patient = PATIENT
        emulator.start()
        messages = []
        while True:
            msg = protocol.recv(sub, 10000, protocol.SERVICE_TOPICS)
            assert msg is not None, "the service went silent"
            messages.append(msg)
            if msg.topic == "end":
                break
        emulator.wait(10)
    finally:
        thread.join(20)
        sub.close(linger=0)
        ctx.term()
    assert result["rc"] == 0
    frames = [m for m in messages if m.topic == "frame"]
    assert [m.header["volume"] for m in frames] == list(range(n))
    assert [m.header["seq"] for m in frames] == list(range(n))
    assert all(m.header["t"]["file_ready"] <= m.header["t"]["read"] <= m.header["t"]["sent"] for m in frames)
    trials = [m for m in messages if m.topic == "trial"]
    assert len(trials) == 1 and trials[0].header["stim_id"] == "test/test_00.png"
    end = messages[-1].header
    assert end["reason"] == "idle_timeout" and end["summary"]["volumes_ok"] == n
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    run_dir = Path(summary["run_dir"])
    assert [r["volume"] for r in read_volumes(run_dir)] == list(range(n))
    # privacy: nothing of the patient, nor the patient-named folder, in any message or record
    assert b"DOE^JOHN" in next(watch.glob("*.dcm")).read_bytes()  # the scanner files do carry the patient
    blob = b"".join(json.dumps(m.header).encode() for m in messages)
    for f in run_dir.rglob("*"):  # the records and the run's BIDS copy (its volumes decompressed)
        if f.is_file() and f.suffix != ".npy":
            blob += gzip.decompress(f.read_bytes()) if f.suffix == ".gz" else f.read_bytes()
    assert (run_dir / "bids/sub-01/ses-01/func/sub-01_ses-01_task-live_run-01_bold.json").is_file()
    for secret in ("DOE", "JOHN", "PAT-93817", "19700101"):
        assert secret.encode() not in blob, secret


def _expect_error(capsys, monkeypatch, argv: list[str], *fragments: str) -> None:
    monkeypatch.setenv("FMRIFACE_RAISE", "0")
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("fmriface serve: error:") and "\n" not in err, err
    for frag in fragments:
        assert frag in err, err


def test_startup_checks_say_what_to_fix(synth, tmp_path, capsys, monkeypatch):
    watch, runs = tmp_path / "watch", tmp_path / "runs"
    watch.mkdir()
    pub, pull = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    _expect_error(capsys, monkeypatch, _argv(synth, tmp_path / "nowhere", runs, pub, pull), "does not exist", "--watch")
    missing = _argv(synth, watch, runs, pub, pull)
    missing[missing.index("--bundle") + 1] = str(tmp_path / "no_bundle")
    _expect_error(capsys, monkeypatch, missing, "is not a folder", "fmriface fit")
    import shutil

    tampered = tmp_path / "tampered"
    shutil.copytree(synth.path, tampered)
    with open(tampered / "mapping.npz", "ab") as f:
        f.write(b"\0")
    bad = _argv(synth, watch, runs, pub, pull)
    bad[bad.index("--bundle") + 1] = str(tampered)
    _expect_error(capsys, monkeypatch, bad, "mapping.npz does not match the hash")
    _expect_error(
        capsys, monkeypatch, _argv(synth, watch, runs, pub, pull, "--target-stim", "nobody.png"), "target_stim"
    )
    ctx = zmq.Context()
    busy = ctx.socket(zmq.PUB)
    busy.bind(pub)
    try:
        _expect_error(capsys, monkeypatch, _argv(synth, watch, runs, pub, pull), "cannot bind the pub address", pub)
    finally:
        busy.close(linger=0)
        ctx.term()
    _expect_error(capsys, monkeypatch, _argv(synth, watch, runs, pub, pull, "--heartbeat", "0"), "heartbeat")
    # a bundle fitted on estimates the service cannot compute live is refused, naming them
    other = tmp_path / "bundle_glm"
    shutil.copytree(synth.path, other)
    manifest = json.loads((other / "manifest.json").read_text())
    (other / "manifest.json").write_text(json.dumps({**manifest, "estimate": "glm"}))
    argv = _argv(synth, watch, runs, pub, pull)
    argv[argv.index("--bundle") + 1] = str(other)
    _expect_error(capsys, monkeypatch, argv, "manifest.json", "fitted on 'glm' estimates", "estimate = 'window'")
    # a serve config that states preprocessing other than the bundle's is refused, naming each setting
    stated = tmp_path / "serve-stated.toml"
    stated.write_text(
        (resolve_config("serve-tiny").read_text())
        + '\n[preprocess]\nscale = "zscore"\n[preprocess.window]\nstop = 10.0\n'
    )
    argv = _argv(synth, watch, runs, pub, pull)
    argv[argv.index("--config") + 1] = str(stated)
    _expect_error(
        capsys,
        monkeypatch,
        argv,
        "manifest.json",
        "window.stop = 10.0 (the bundle's: 8.0)",
        "scale = 'zscore' (the bundle's: 'psc')",
    )
    no_events = _argv(synth, watch, runs, pub, pull, "--events", str(tmp_path / "missing_events.tsv"))
    _expect_error(capsys, monkeypatch, no_events, "missing_events.tsv does not exist", "fix --events")


def test_sigterm_ends_the_run_cleanly_and_it_resumes(synth, tmp_path):
    watch, runs = tmp_path / "watch", tmp_path / "runs"
    watch.mkdir()
    pub, pull = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    data = make_run(synth, [(4.0, 1)], 6, seed=7)
    argv = [sys.executable, "-m", "fmriface", *_argv(synth, watch, runs, pub, pull, "--json-log", "--run-id", "r1")]
    env = {**os.environ, "FMRIFACE_RAISE": "0"}
    ctx = zmq.Context()
    sub = protocol.subscriber(ctx, pub, hwm=1000)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    try:
        _wait_status(sub, 60)
        from service.scanner.writers import write_volume

        for i in range(3):
            write_volume(data[i], synth.affine, watch / f"vol_{i + 1:04d}.nii", "nifti", acquisition=i + 1, tr=TR)
        frames = []
        while len(frames) < 3:
            msg = protocol.recv(sub, 10000, protocol.SERVICE_TOPICS)
            assert msg is not None
            frames += [msg] if msg.topic == "frame" else []
        proc.send_signal(signal.SIGTERM)
        end = None
        while end is None:
            msg = protocol.recv(sub, 10000, protocol.SERVICE_TOPICS)
            assert msg is not None, "no end message after SIGTERM"
            end = msg if msg.topic == "end" else None
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        sub.close(linger=0)
        ctx.term()
    assert proc.returncode == 0, err.decode()
    assert end.header["reason"] == "SIGTERM" and end.header["summary"]["volumes_ok"] == 3
    logs = [json.loads(line) for line in err.decode().splitlines() if line.strip()]
    assert logs and all({"time", "level", "msg"} <= set(entry) for entry in logs)
    manifest = json.loads((runs / "r1" / "manifest.json").read_text())
    assert manifest["state"] == "stopped" and manifest["summary"]["reason"] == "SIGTERM"
    assert json.loads(out.decode().strip().splitlines()[-1])["volumes_ok"] == 3


def test_a_corrupt_file_is_recorded_as_skipped_and_the_run_goes_on(synth, tmp_path, monkeypatch):
    from service.live.serve import Service
    from service.scanner.writers import write_volume
    from tests.service.harness import _collect_until_end

    monkeypatch.setenv("FMRIFACE_RAISE", "0")  # the production error policy
    watch = tmp_path / "watch"
    watch.mkdir()
    data = make_run(synth, [(4.0, 1)], 6, seed=8)
    from fmriface.config import load_config, preset_path
    from service.live.serve import ServeConfig

    overrides = {"bundle": str(synth.path), "watch": str(watch), "runs": str(tmp_path / "runs"), "max_volumes": 5}
    overrides.update(pub=f"tcp://127.0.0.1:{free_port()}", pull=f"tcp://127.0.0.1:{free_port()}")
    cfg = load_config(ServeConfig, preset_path("serve-tiny"), overrides)
    svc = Service(cfg).start()
    ctx = zmq.Context()
    sub = protocol.subscriber(ctx, cfg.pub, hwm=1000)

    def scanner():
        for i in range(6):
            path = watch / f"vol_{i + 1:04d}.nii"
            if i == 2:
                path.write_bytes(b"\x5c\x01\x00\x00" + os.urandom(400))  # a NIfTI-1 size field, then garbage
            else:
                write_volume(data[i], synth.affine, path, "nifti", acquisition=i + 1, tr=TR)
            time.sleep(0.1)

    try:
        messages = _collect_until_end(svc, sub, start=lambda: threading.Thread(target=scanner, daemon=True).start())
    finally:
        sub.close(linger=0)
        ctx.term()
    frames = [m.header["acquisition"] for m in messages if m.topic == "frame"]
    assert frames == [1, 2, 4, 5, 6]
    recs = read_volumes(svc.run_dir_)
    skipped = [r for r in recs if r["status"] == "skipped"]
    assert (
        skipped
        and skipped[0]["file"] == "vol_0003.nii"
        and skipped[0]["error"].split(":")[0] in ("corrupt", "incomplete")
    )


def test_json_log_keeps_library_messages_json_and_hides_watchdogs_stop_race():
    # A subprocess: setup_logging installs a root handler, which must not leak into pytest's own logging.
    code = """
import logging
import service.intake.watcher
from service.live.serve import setup_logging
setup_logging(json_log=True)
logging.getLogger("service.live.serve").info("ours")
logging.getLogger("zmq.auth").warning("a library warning")
logging.getLogger("zmq.auth").info("a library info, below the libraries' level")
logging.getLogger("watchdog.observers.inotify").error("InotifyEmitter.queue_events() called when the thread is inactive")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert [(r["logger"], r["level"], r["msg"]) for r in lines] == [
        ("service.live.serve", "INFO", "ours"),
        ("zmq.auth", "WARNING", "a library warning"),
    ]
