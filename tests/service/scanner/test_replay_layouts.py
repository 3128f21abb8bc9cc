"""A full ``serve`` run on twin-like data replayed in each of the emulator's real-world layouts (Siemens XA
interoperability, GE real-time EPI and Philips classic slices, Siemens and Philips enhanced, Siemens mosaic,
NIfTI) accounts for every volume, with the patient's fields in every file and none in any output."""

from __future__ import annotations

import threading

import pytest
import zmq

from fmriface.benchmarks.soak_harness import synthetic_run
from fmriface.benchmarks.synth import make_bundle
from service import protocol
from service.live.runlog import read_volumes
from service.live.serve import ServeConfig, Service
from service.scanner.replay import ScannerEmulator
from tests.conftest import free_port

TR = 2.0
N_VOL = 14
LAYOUTS = [
    ("slices", "siemens"),
    ("slices", "ge"),
    ("slices", "philips"),
    ("enhanced", "siemens"),
    ("enhanced", "philips"),
    ("mosaic", "siemens"),
    ("nifti", "siemens"),
]
PATIENT = {"PatientName": "ZORVATH^ILSE", "PatientID": "PX55012877", "PatientBirthDate": "19660823"}
NEEDLES = ["ZORVATH", "ILSE", "PX55012877", "55012877", "19660823"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("bundle") / "b", shape=(14, 16, 10), n_voxels=60, tr=TR)


def _serve_replay(synth, tmp_path, fmt, vendor, asap: bool, speed: float = 1.0):
    watch, runs = tmp_path / "watch", tmp_path / "runs"
    watch.mkdir()
    cfg = ServeConfig(
        bundle=synth.path,
        watch=watch,
        runs=runs,
        pub=f"tcp://127.0.0.1:{free_port()}",
        pull="",
        heartbeat=0.2,
        max_volumes=N_VOL,
        startup_timeout=60.0,
        hwm=1000,
        min_volumes=3,
    )
    svc = Service(cfg).start()
    ctx = zmq.Context()
    sub = protocol.subscriber(ctx, cfg.pub, hwm=100000)
    thread = threading.Thread(target=svc.run, daemon=True)
    thread.start()
    messages = []
    emu = ScannerEmulator(
        data=synthetic_run(synth.reference, N_VOL, seed=4),
        affine=synth.affine,
        tr=TR,
        out_dir=watch,
        fmt=fmt,
        vendor=vendor,
        asap=asap,
        speed=speed,
        patient=PATIENT,
    )
    try:
        while (msg := protocol.recv(sub, 30000, protocol.SERVICE_TOPICS)) is None or msg.topic != "status":
            assert msg is not None, "no heartbeat"
        with emu:
            while True:
                msg = protocol.recv(sub, 30000, protocol.SERVICE_TOPICS)
                assert msg is not None, f"service silent for 30 s; got {len(messages)} messages"
                messages.append(msg)
                if msg.topic == "end":
                    break
            assert emu.wait(30)
    finally:
        svc.stop("test")
        thread.join(10)
        sub.close(linger=0)
        ctx.term()
    return svc, messages, runs / svc.runlog_.run_id, emu


@pytest.mark.parametrize(("fmt", "vendor"), LAYOUTS, ids=[f"{f}-{v}" for f, v in LAYOUTS])
def test_every_volume_of_a_fast_replay_is_decoded_once_in_order(synth, tmp_path, fmt, vendor):
    svc, messages, run_dir, emu = _serve_replay(synth, tmp_path, fmt, vendor, asap=True)
    watch = emu.out_dir
    frames = [m for m in messages if m.topic == "frame"]
    assert [m.header["volume"] for m in frames] == list(range(N_VOL))
    records = read_volumes(run_dir)
    assert [r["status"] for r in records] == ["ok"] * N_VOL, [r.get("error") for r in records]
    assert svc.summary_["volumes_ok"] == N_VOL and svc.summary_["volumes_failed"] == 0
    # the voxel-0 channel carries each volume's index: no mix-up between volumes or slices
    written = b"".join(p.read_bytes() for p in watch.iterdir() if p.is_file())
    if fmt != "nifti":
        assert b"ZORVATH" in written  # the files hold the patient's fields, else this proves nothing
    outputs = [m.header.__repr__().encode() for m in messages] + [
        p.read_bytes() for p in run_dir.rglob("*") if p.is_file()
    ]
    leaks = sorted({n for blob in outputs for n in NEEDLES if n.lower().encode() in blob.lower()})
    assert not leaks, f"patient fields in the service's output: {leaks}"


@pytest.mark.slow
@pytest.mark.parametrize(("fmt", "vendor"), LAYOUTS[:3], ids=[f"{f}-{v}" for f, v in LAYOUTS[:3]])
def test_a_paced_slice_volume_is_handed_on_before_the_next_volume_is_written(synth, tmp_path, fmt, vendor):
    svc, messages, run_dir, emu = _serve_replay(synth, tmp_path, fmt, vendor, asap=False, speed=2.0)
    frames = {m.header["volume"]: m for m in messages if m.topic == "frame"}
    assert sorted(frames) == list(range(N_VOL))
    first_file_of = {k: min(f.stat().st_mtime for f in files) for k, _, files in emu.written}
    for k in range(N_VOL - 1):  # no volume waited for the next one to be known complete
        assert frames[k].header["t"]["sent"] < first_file_of[k + 1], k
