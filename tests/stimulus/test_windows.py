"""PsychoPy window tests under X (Xvfb): the experiment's timing, the display's frames, acks and restarts."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zmq
from PIL import Image

from service import protocol
from tests.stimulus.conftest import ROOT, run_fmriface, smooth_image

pytestmark = pytest.mark.display

FRAME = 1 / 60  # the windows are paced at 60 Hz (Xvfb has no vsync: flips are paced by the clock)

TEST_CONFIG = """
subject = "01"
emulate_responses = true
service = ""
feedback_sub = ""

[plan]
seed = 2
sessions = 1
layout = ["test", "train"]
test_repeats = 1

[timing]
soa = 0.4
face_duration = 0.2
lead_in = 0.4
lead_out = 0.2
oneback_fraction = 0.2
fix_fraction = 0.1
cue_duration = 0.3
feedback_duration = 0.6
feedback_rest = 0.3

[trigger]
source = "emulated"
tr = 0.5
delay = 0.2

[window]
size = [320, 240]
face_size = 96
pacing = "sleep"
"""


def read_tsv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def test_emulated_run_matches_its_saved_schedule(stimuli_dir, tmp_path, window_env, tcp_address):
    cfg = tmp_path / "experiment.toml"
    cfg.write_text(TEST_CONFIG)
    out = tmp_path / "bids"
    args = ["experiment", "--config", str(cfg), "--stimuli", str(stimuli_dir), "--out", str(out), "--json"]
    plan = json.loads(run_fmriface([*args, "--run", "2", "--plan-only"], window_env).stdout)
    assert plan["plan_created"] and plan["run_type"] == "train"
    # Resume at run 2: the saved order is what runs. Edit it (faces in reverse order) to prove it is reused.
    order_file = Path(plan["order"])
    order = read_tsv(order_file)
    faces = [r["stim_file"] for r in order]
    with open(order_file, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(order[0]), delimiter="\t", lineterminator="\n")
        w.writeheader()
        w.writerows({**r, "stim_file": s} for r, s in zip(order, faces[::-1]))
    order = read_tsv(order_file)

    ctx = zmq.Context()
    pull = protocol.puller(ctx, tcp_address)
    try:
        result = json.loads(run_fmriface([*args, "--run", "2", "--service", tcp_address], window_env).stdout)
        messages = []
        while (m := protocol.recv(pull, 2000, ("event",))) is not None:
            messages.append(m.header)
            if len(messages) == 1 + len(order):
                break
    finally:
        ctx.destroy(linger=0)
    assert not result["plan_created"] and not result["aborted"] and result["pacing"] == "sleep"
    events = read_tsv(Path(result["events"]))
    assert len(events) == len(order) == result["n_events"]
    log = Path(result["log"]).read_text()
    # Flips the OS made late (this machine may be loaded) are logged as frame drops; the others are on time.
    drops = [float(line.split("\t")[1]) for line in log.splitlines() if "frame drop" in line]
    late = 0
    for ev, sched in zip(events, order):
        assert (ev["trial_type"], ev["stim_file"], ev["oneback"]) == (
            sched["trial_type"], sched["stim_file"], sched["oneback"],
        )  # fmt: skip
        onset, end = float(ev["onset"]), float(ev["onset"]) + float(ev["duration"])
        dropped_at_onset = any(abs(d - onset) < 1e-3 for d in drops)
        dropped_at_end = any(abs(d - end) < 2e-3 for d in drops)
        late += dropped_at_onset
        if not dropped_at_onset:
            assert abs(onset - float(sched["onset"])) <= FRAME, (ev, sched)
        if not (dropped_at_onset or dropped_at_end):
            assert abs(float(ev["duration"]) - float(sched["duration"])) <= FRAME, (ev, sched)
    assert late <= len(events) // 3, f"{late} of {len(events)} onsets on dropped frames: {drops}"
    answered = [e for e in events if e["response"] != "n/a"]
    assert answered, "the emulated participant answers the one-back repeats"
    for e in answered:  # responses 0.15-0.3 SOA after a repeat's onset
        assert e["oneback"] == "1" and 0.06 - FRAME <= float(e["response_time"]) <= 0.12 + FRAME
    assert messages[0]["kind"] == "trigger" and messages[0]["run"] == 2
    onsets = [m for m in messages if m["kind"] == "onset"]
    assert [m["stim_id"] for m in onsets] == [e["stim_file"] for e in events]
    np.testing.assert_allclose([m["onset"] for m in onsets], [float(e["onset"]) for e in events], atol=1e-3)
    assert "first trigger" in log and "end:" in log


ABORT_SCRIPT = """
import json, sys
from pathlib import Path
from fmriface.config import load_config
from stimulus.window import import_psychopy
from stimulus.experiment import ExperimentConfig, run_experiment

_, core, event = import_psychopy()
real_get_keys, calls = event.getKeys, [0]

def get_keys(*args, **kwargs):  # the scanner's trigger key, a button press, then Escape, as key events
    calls[0] += 1
    for at, key in ((3, "5"), (70, "2"), (120, "escape")):
        if calls[0] == at:
            event._onPygletKey(key, 0, emulated=True)
    return real_get_keys(*args, **kwargs)

event.getKeys = get_keys
overrides = {"stimuli": Path(sys.argv[2]), "out": Path(sys.argv[3]), "run": 2, "trigger.source": "key",
             "trigger.key": "5", "emulate_responses": False}
cfg = load_config(ExperimentConfig, sys.argv[1], overrides)
print(json.dumps(run_experiment(cfg), default=str))
"""


def test_key_trigger_key_response_and_escape(stimuli_dir, tmp_path, window_env):
    cfg = tmp_path / "experiment.toml"
    cfg.write_text(TEST_CONFIG)
    script = tmp_path / "abort.py"
    script.write_text(ABORT_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), str(cfg), str(stimuli_dir), str(tmp_path / "bids")],
        env=window_env, capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["aborted"] and result["n_triggers"] == 1  # the key trigger started the run
    events = read_tsv(Path(result["events"]))
    assert 0 < len(events) == result["n_events"] < result["n_trials"]
    assert all(float(e["duration"]) > 0 for e in events)
    assert [e["response"] for e in events if e["response"] != "n/a"] == ["2"]  # the button press, recorded
    log = Path(result["log"]).read_text()
    assert "first trigger" in log and "response 2 to event" in log and "aborted by escape" in log


def _wait_subscribed(xpub, timeout_ms: int = 60000) -> None:
    """Block until the display has subscribed to ``frame`` (XPUB sees subscriptions)."""
    deadline = time.monotonic() + timeout_ms / 1000
    while time.monotonic() < deadline:
        if xpub.poll(200) and xpub.recv() == b"\x01frame":
            return
    raise AssertionError("the display never subscribed")


def _xpub(ctx, address):
    sock = ctx.socket(zmq.XPUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(address)
    return sock


def _send_frame(pub, pull, run_id, seq, image, timeout_ms=20000) -> dict:
    fields, payload = protocol.encode_image(image)
    protocol.send(pub, "frame", {"run_id": run_id, "seq": seq, "volume": seq, "fd": 0.1, **fields}, payload)
    deadline = time.monotonic() + timeout_ms / 1000
    while time.monotonic() < deadline:
        msg = protocol.recv(pull, 500, ("flip",))
        if msg is not None and msg.header["shown_seq"] == seq and msg.header["run_id"] == run_id:
            return msg.header
    raise AssertionError(f"no flip ack for {run_id} frame {seq}")


def test_operator_display_shows_sent_frames_acks_them_and_survives_a_restart(tmp_path, window_env, tcp_address, rng):
    from tests.conftest import free_port

    pub_address, frames_dir = f"tcp://127.0.0.1:{free_port()}", tmp_path / "frames"
    cmd = [
        sys.executable, "-m", "fmriface", "display", "--sub", pub_address, "--ack", tcp_address, "--headless",
        "--save-frames", str(frames_dir), "--timeout", "60", "--size", "640x480", "--face-size", "128", "--json",
        "--mode", "operator",
    ]  # fmt: skip
    ctx = zmq.Context()
    pull = protocol.puller(ctx, tcp_address)
    pub = _xpub(ctx, pub_address)
    proc = subprocess.Popen(cmd, env=window_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        _wait_subscribed(pub)
        images = [smooth_image(rng, 24, 32) for _ in range(3)]
        acks = [_send_frame(pub, pull, "r1", k, img) for k, img in enumerate(images)]
        pub.send_multipart([b"frame", b"{not json", b""])
        pub.send_multipart([b"frame", json.dumps({"schema": 1, "seq": 9, "shape": [2, 2, 3]}).encode(), b"x"])
        pub.close()  # the service restarts on the same port, with a new run
        time.sleep(0.3)
        pub = _xpub(ctx, pub_address)
        _wait_subscribed(pub)
        images.append(smooth_image(rng, 24, 32))
        acks.append(_send_frame(pub, pull, "r2", 0, images[-1]))
        protocol.send(pub, "end", {"run_id": "r2", "seq": 0})
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        ctx.destroy(linger=0)
    assert proc.returncode == 0, stderr
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["stopped"] == "end" and summary["shown"] == 4 and summary["acks_sent"] == 4
    assert summary["malformed"] == 2 and summary["restarts"] == 1
    for ack in acks:
        assert ack["shown_topic"] == "frame" and ack["flip_time"] >= ack["received"] and ack["display"] == "display"
    assert [a["seq"] for a in acks] == [0, 1, 2, 3]
    index = read_tsv(frames_dir / "frames.tsv")
    assert [(r["run_id"], r["seq"]) for r in index] == [("r1", "0"), ("r1", "1"), ("r1", "2"), ("r2", "0")]
    assert (frames_dir / "wait.png").is_file()
    for row, sent in zip(index, images):
        shot = np.asarray(Image.open(frames_dir / row["file"]).convert("RGB"))
        assert shot.shape == (480, 640, 3)
        face = shot[240 - 48 : 240 + 48, 320 - 64 : 320 + 64]  # 32 x 24 shown 4x, centred
        small = np.asarray(Image.fromarray(face).resize((32, 24), Image.BOX)).astype(float)
        rms = np.sqrt(np.mean((small - sent.astype(float)) ** 2))
        assert rms < 6.0, f"{row['file']}: RMS {rms:.1f} from the sent image"
        assert np.sqrt(np.mean((small - 128.0) ** 2)) > 20  # not the grey background
        assert (shot[:120, :300] > 200).all(axis=2).sum() > 200  # the operator's white text, top left


@pytest.mark.slow
def test_display_stops_after_timeout_without_messages(tmp_path, window_env):
    from tests.conftest import free_port

    proc = run_fmriface(
        ["display", "--sub", f"tcp://127.0.0.1:{free_port()}", "--no-ack", "--headless", "--timeout", "1",
         "--mode", "operator", "--save-frames", str(tmp_path / "f"), "--size", "320x240", "--json"],
        window_env,
    )  # fmt: skip
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["stopped"] == "timeout" and summary["shown"] == 0
    wait = np.asarray(Image.open(tmp_path / "f" / "wait.png").convert("RGB")).astype(int)
    assert (np.abs(wait - 128) > 60).any()  # the fixation cross and the operator text are drawn


def test_feedback_run_sends_the_target_and_reads_the_live_value(stimuli_dir, tmp_path, window_env, tcp_address, rng):
    import threading

    from tests.conftest import free_port

    cfg = tmp_path / "experiment.toml"
    cfg.write_text(TEST_CONFIG.replace('layout = ["test", "train"]', 'layout = ["feedback"]\nfeedback_blocks = 2'))
    pub_address = f"tcp://127.0.0.1:{free_port()}"
    ctx = zmq.Context()
    pull = protocol.puller(ctx, tcp_address)
    pub = protocol.publisher(ctx, pub_address)
    stop = threading.Event()

    def service() -> None:  # a decoded face with a feedback value every 50 ms
        fields, payload = protocol.encode_image(smooth_image(rng, 24, 32))
        seq = 0
        while not stop.wait(0.05):
            protocol.send(pub, "frame", {"run_id": "r1", "seq": seq, "feedback": {"value": 0.5}, **fields}, payload)
            seq += 1

    thread = threading.Thread(target=service, daemon=True)
    thread.start()
    try:
        args = ["experiment", "--config", str(cfg), "--stimuli", str(stimuli_dir), "--out", str(tmp_path / "b")]
        args += ["--service", tcp_address, "--feedback-sub", pub_address, "--json"]
        result = json.loads(run_fmriface(args, window_env).stdout)
        kinds = []
        while (m := protocol.recv(pull, 1000, ("event",))) is not None:
            kinds.append((m.header["kind"], m.header.get("stim_id"), m.header.get("trial_type")))
    finally:
        stop.set()
        thread.join(5)
        ctx.destroy(linger=0)
    events = read_tsv(Path(result["events"]))
    target = events[0]["stim_file"]
    assert [e["trial_type"] for e in events] == ["Cue", "Feedback", "Fix"] * 2
    assert kinds[0][0] == "trigger" and kinds[1] == ("target", target, None) and kinds[-1][0] == "clear_target"
    assert [k[2] for k in kinds if k[0] == "onset"] == ["Cue", "Feedback", "Fix"] * 2
    fb = result["feedback_messages"]
    assert fb["frames"] > 5 and fb["malformed"] == 0
