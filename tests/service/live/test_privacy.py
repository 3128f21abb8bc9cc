"""Privacy: DICOMs that carry a patient's name, ID, birth date and address go through a full `fmriface serve`
run (with intake faults, an experiment event carrying a patient field, a text and a JSON log), and not one of
those values appears in any byte the service wrote: messages on the wire, log lines, run records, summary."""

from __future__ import annotations

from pathlib import Path

import pytest
import zmq

from fmriface.benchmarks.soak_harness import Collector, ServeProcess, free_address, synthetic_run, wait_until
from fmriface.benchmarks.synth import make_bundle
from service import protocol
from service.scanner.replay import ScannerEmulator

TR = 2.0
N_VOL = 30
PATIENT = {
    "PatientName": "QUIXBY^WILHELMINA^ZOE",
    "PatientID": "PID83629145",
    "PatientBirthDate": "19770412",
    "PatientAddress": "17 Larkspur Crescent",
    "OtherPatientIDs": "ALT55120973",
}
#: What must never appear (the fields, their parts, the birth date written other ways), any case.
NEEDLES = ["QUIXBY", "WILHELMINA", "PID83629145", "83629145", "19770412", "1977-04-12", "LARKSPUR", "ALT55120973"]


def _leaks(blob: bytes, needles: list[str]) -> list[str]:
    low = blob.lower()
    return [n for n in needles if n.lower().encode() in low]


def _serve_with_patient(tmp: Path, fmt: str, json_log: bool, export_name: str = "export") -> dict:
    sb = make_bundle(tmp / "bundle", shape=(14, 16, 10), n_voxels=60, tr=TR)
    watch, runs = tmp / export_name, tmp / "runs"
    watch.mkdir()
    pub, pull = free_address(), free_address()
    values = dict(bundle=sb.path, watch=watch, runs=runs, pub=pub, pull=pull, heartbeat=0.2, json_log=json_log)
    values.update(idle_timeout=4.0, startup_timeout=60.0, min_volumes=3)
    collector = Collector(pub, raw=True)
    collector.start()
    ctx = zmq.Context()
    push = protocol.pusher(ctx, pull)
    serve = ServeProcess(values, tmp).start()
    emu = ScannerEmulator(
        data=synthetic_run(sb.reference, N_VOL, seed=9),
        affine=sb.affine,
        tr=TR,
        out_dir=watch,
        fmt=fmt,
        speed=TR * 20,
        faults=("truncate", "corrupt", "duplicate", "drop"),
        fault_rate=0.15,
        seed=3,
        patient=PATIENT,
    )
    try:
        assert wait_until(lambda: collector.ready.is_set() or not serve.alive(), 60), serve.log()
        header = protocol.event_header("onset", 0, onset=4.0, duration=1.0, trial_type="test_face", trial=0)
        push.send_multipart(protocol.encode("event", {**header, **PATIENT, "note": PATIENT["PatientName"]}))
        with emu:
            assert emu.wait(60)
        rc = serve.wait(60)
        wait_until(collector.ended.is_set, 5)
    finally:
        collector.close()
        push.close(linger=0)
        ctx.term()
        serve.kill()
    return {"rc": rc, "watch": watch, "runs": runs, "collector": collector, "log": serve.log_path, "emu": emu}


def _check_no_leak(out: dict, needles: list[str], skip_path_leaks: bool = False) -> None:
    """Fail on any needle in what the service wrote; ``skip_path_leaks``: ignore hits that are only the watched
    folder's path (its name is the patient's here) so the DICOM fields are judged on their own."""
    assert out["rc"] == 0, out["log"].read_text()[-3000:]
    # the scanner's files do hold the patient's data (else this test would prove nothing)
    written = b"".join(p.read_bytes() for p in out["watch"].iterdir() if p.is_file())
    assert "QUIXBY" in _leaks(written, needles) and "19770412" in _leaks(written, needles)
    assert out["emu"].injected, "the run had no intake faults"
    messages = out["collector"].raw
    assert len(out["collector"].messages["frame"]) >= N_VOL // 2 and out["collector"].messages["end"]
    if skip_path_leaks:
        messages = [m.replace(str(out["watch"]).encode(), b"<watch>") for m in messages]
    found = {}
    for i, blob in enumerate(messages):
        if leaks := _leaks(blob, needles):
            found[f"message {i}"] = leaks
    files = [p for p in out["runs"].rglob("*") if p.is_file()] + [out["log"]]
    assert any(p.name == "volumes.jsonl" for p in files) and any(p.suffix == ".npy" for p in files)
    for path in files:
        blob = path.read_bytes()
        if skip_path_leaks:
            blob = blob.replace(str(out["watch"]).encode(), b"<watch>")
        if leaks := _leaks(blob, needles):
            found[str(path.relative_to(path.parents[1]))] = leaks
    for path in out["runs"].rglob("*"):  # names of files and folders too
        if leaks := _leaks(str(path.relative_to(out["runs"])).encode(), needles):
            found[f"name {path.name}"] = leaks
    assert not found, f"patient data found in what the service wrote: {found}"


#: Scanner export folders are often named after the patient: the folder's name must not be written either.
EXPORT_FOLDER = "QUIXBY_WILHELMINA_PID83629145"


@pytest.fixture(scope="module")
def mosaic_run(tmp_path_factory):
    return _serve_with_patient(tmp_path_factory.mktemp("privacy"), "mosaic", False, export_name=EXPORT_FOLDER)


def test_no_patient_field_leaves_the_service(mosaic_run):
    _check_no_leak(mosaic_run, NEEDLES, skip_path_leaks=True)


def test_an_export_folder_named_after_the_patient_is_not_repeated(mosaic_run):
    _check_no_leak(mosaic_run, NEEDLES)


@pytest.mark.slow
def test_no_patient_field_leaves_the_service_slices_json_log(tmp_path):
    _check_no_leak(_serve_with_patient(tmp_path, "slices", True), NEEDLES)
