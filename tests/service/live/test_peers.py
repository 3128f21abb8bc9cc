"""Peers that misbehave around the real service (`fmriface serve` in a subprocess, fed by the scanner emulator):
a display killed with SIGKILL and restarted, a subscriber that stops reading, an experiment that sends garbage.
The service must carry on untouched, and say what it saw (status heartbeats, end summary, log)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time

import numpy as np
import pytest
import zmq

from fmriface.benchmarks.soak_harness import (
    Collector,
    ServeProcess,
    free_address,
    read_jsonl,
    synthetic_run,
    wait_until,
)
from fmriface.benchmarks.synth import make_bundle
from service import protocol
from service.scanner.replay import ScannerEmulator

TR = 2.0
N_VOL = 48

_DISPLAY = """
import sys
from service import protocol
import zmq
ctx = zmq.Context()
sub = protocol.subscriber(ctx, sys.argv[1], topics=("frame", "status"))
connected = False
while True:
    m = protocol.recv(sub, 1000, protocol.SERVICE_TOPICS)
    if m is not None and m.topic == "status" and not connected:
        connected = True
        print("connected", flush=True)
    elif m is not None and m.topic == "frame":
        print(m.header["volume"], m.header["seq"], flush=True)
"""


def _garbage() -> tuple[list[list[bytes]], list[list[bytes]]]:
    """(bad messages, each must be refused and counted once; odd but valid messages, to be taken)."""
    ok_event = json.dumps(protocol.event_header("trigger", 90, trigger_time=time.time())).encode()
    bad = [
        [b"event"],  # one part
        [b"event", ok_event, b"", b"extra", b"parts"],  # five parts
        [b"event", b"{not json", b""],
        [b"telemetry", ok_event, b""],  # unknown topic
        [b"\xff\xfeevent", ok_event, b""],  # non-ASCII topic
        [b"event", b"[1, 2, 3]", b""],  # header not an object
        [b"event", json.dumps({"schema": 99, "kind": "onset", "onset": 1.0}).encode(), b""],
        [b"event", ok_event, b"\x00" * (protocol.MAX_PAYLOAD_BYTES + 1)],  # huge payload
        [b"event", b'{"schema": 1, "pad": "' + b"x" * protocol.MAX_HEADER_BYTES + b'"}', b""],  # huge header
        [b"event", json.dumps({"schema": 1, "kind": "explode", "seq": 1}).encode(), b""],  # unknown kind
        [b"event", json.dumps({"schema": 1, "kind": "target", "stim_id": "no/such_face.png"}).encode(), b""],
        [
            b"event",
            json.dumps({"schema": 1, "kind": "target", "shape": [2, 2, 3], "dtype": "uint8"}).encode(),
            b"12345",
        ],
        [b"flip", json.dumps({"schema": 1, "seq": 0, "shown_seq": "abc", "flip_time": "never"}).encode(), b""],
        [b"event", json.dumps({"schema": 1, "kind": "onset"}).encode(), b""],  # onset without its time
    ]
    # decodable, but absurd: refused by the service (and counted)
    bad += [
        [b"event", b'{"schema": 1, "kind": "onset", "onset": NaN, "trial": "nan-trial"}', b""],
        [b"event", b'{"schema": 1, "kind": "onset", "onset": -1e300, "trial": "past"}', b""],
        [b"event", b'{"schema": 1, "kind": "onset", "onset": 1e300, "trial": "future"}', b""],
    ]
    # odd but valid: a flip for a frame never sent, an event with an extra (patient) field
    odd = [
        [b"flip", json.dumps(protocol.flip_header(0, "frame", 10**12, time.time())).encode(), b""],
        [
            b"event",
            json.dumps({**protocol.event_header("onset", 7, onset=6.0, trial=7), "PatientName": "X"}).encode(),
            b"",
        ],
    ]
    return bad, odd


def _listening(pid: int) -> list[tuple[str, int]]:
    import psutil

    conns = psutil.Process(pid).net_connections(kind="inet")
    return sorted((c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN)


@pytest.fixture(scope="module")
def peer_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("peers")
    sb = make_bundle(tmp / "bundle", shape=(14, 16, 10), n_voxels=60, image_size=16, tr=TR)
    watch, runs = tmp / "scanner", tmp / "runs"
    watch.mkdir()
    pub, pull = free_address(), free_address()
    values = dict(bundle=sb.path, watch=watch, runs=runs, run_id="peers", pub=pub, pull=pull, heartbeat=0.2)
    values.update(idle_timeout=2.5, startup_timeout=60.0, min_volumes=3)
    collector = Collector(pub)
    collector.start()
    ctx = zmq.Context()
    stalled = protocol.subscriber(ctx, pub, hwm=1)  # reads two messages, then never again
    stalled.setsockopt(zmq.RCVBUF, 4096)
    push = protocol.pusher(ctx, pull)
    bad, odd = _garbage()
    serve = ServeProcess(values, tmp).start()
    displays: list[subprocess.Popen] = []
    outputs = [tmp / "display-0.txt", tmp / "display-1.txt"]

    def display(k: int) -> subprocess.Popen:
        with open(outputs[k], "w") as f:
            proc = subprocess.Popen([sys.executable, "-c", _DISPLAY, pub], stdout=f, stderr=subprocess.STDOUT)
        displays.append(proc)
        assert wait_until(lambda: "connected" in outputs[k].read_text(), 30), outputs[k].read_text()
        return proc

    emu = ScannerEmulator(
        data=synthetic_run(sb.reference, N_VOL, seed=5),
        affine=sb.affine,
        tr=TR,
        out_dir=watch,
        fmt="nifti",
        speed=TR * 10,
    )
    try:
        assert wait_until(lambda: collector.ready.is_set() or not serve.alive(), 60), serve.log()
        listening = _listening(serve.pid)
        first = display(0)
        protocol.recv(stalled, 2000)
        protocol.recv(stalled, 2000)
        for frames in bad[: len(bad) // 2] + odd:
            push.send_multipart(frames)
        emu.start()
        assert wait_until(lambda: len(outputs[0].read_text().splitlines()) >= 9, 30), outputs[0].read_text()
        first.kill()  # SIGKILL: the display dies without closing its socket
        first.wait(5)
        for frames in bad[len(bad) // 2 :]:
            push.send_multipart(frames)
        time.sleep(0.3)
        display(1)
        assert emu.wait(60)
        rc = serve.wait(60)
        wait_until(collector.ended.is_set, 5)
    finally:
        emu.stop()
        collector.close()
        for proc in displays:
            proc.kill()
            proc.wait(5)
        stalled.close(linger=0)
        push.close(linger=0)
        ctx.term()
        serve.kill()
    return {
        "rc": rc,
        "records": read_jsonl(runs / "peers" / "volumes.jsonl"),
        "events": read_jsonl(runs / "peers" / "events.jsonl"),
        "collector": collector,
        "displays": [
            [tuple(map(int, ln.split())) for ln in o.read_text().splitlines() if ln[:1].isdigit()] for o in outputs
        ],
        "log": serve.log(),
        "n_bad": len(bad),
        "listening": listening,
        "addresses": (pub, pull),
    }


def test_service_is_unaffected_by_its_peers(peer_run):
    assert peer_run["rc"] == 0, peer_run["log"][-3000:]
    ok = [r for r in peer_run["records"] if r.get("status") == "ok"]
    assert [r["volume"] for r in ok] == list(range(N_VOL)), [r for r in peer_run["records"] if r not in ok]
    frames = peer_run["collector"].frames()  # the subscriber that kept reading got every frame, in order
    assert [f["volume"] for f in frames] == list(range(N_VOL))
    assert [f["seq"] for f in frames] == list(range(N_VOL))
    end = peer_run["collector"].messages["end"][-1]
    assert end["summary"]["volumes_ok"] == N_VOL and end["reason"] == "idle_timeout"


def test_the_service_listens_on_its_two_loopback_addresses_only(peer_run):
    expected = sorted(("127.0.0.1", int(a.rsplit(":", 1)[1])) for a in peer_run["addresses"])
    assert peer_run["listening"] == expected


def test_a_display_killed_and_restarted_gets_frames_again(peer_run):
    before, after = peer_run["displays"]
    assert len(before) >= 8 and len(after) >= 5, (before, after)
    assert after[0][0] > before[-1][0]  # the new display picks up the live stream, not old frames
    assert [v for v, _ in after] == sorted(v for v, _ in after) and after[-1][0] == N_VOL - 1
    assert all(seq == vol for vol, seq in before + after)  # the same numbering the records hold


def test_a_subscriber_that_stops_reading_holds_nothing_up(peer_run):
    ok = [r for r in peer_run["records"] if r.get("status") == "ok"]
    publish_ms = np.array([1000.0 * (r["t"]["sent"] - r["t"]["decoded"]) for r in ok])
    assert np.percentile(publish_ms, 99) < 20.0, publish_ms  # a send never waits for a peer
    status = peer_run["collector"].messages["status"]
    gaps = np.diff([s["_received"] for s in status])
    assert gaps.max() < 2.0  # the heartbeat never stalled either


def test_garbage_from_the_experiment_is_counted_logged_and_ignored(peer_run):
    n_bad = peer_run["n_bad"]
    end = peer_run["collector"].messages["end"][-1]
    assert end["summary"]["malformed_inbound"] == n_bad, end["summary"]  # each refused once, nothing else
    counts = [s.get("malformed_inbound", 0) for s in peer_run["collector"].messages["status"]]
    assert counts == sorted(counts) and counts[-1] == n_bad  # heartbeats said so while it happened
    log = peer_run["log"]
    assert log.count("malformed inbound") + log.count("ignored an inbound") == n_bad, log[-3000:]
    assert "payload of" in log and "unknown topic 'telemetry'" in log and "'explode'" in log  # says what it saw
    # the well-formed onset was kept, its extra (patient) field dropped; the absurd onsets were not recorded
    kept = [e for e in peer_run["events"] if e.get("trial") == 7]
    assert kept and all("PatientName" not in e for e in peer_run["events"])
    for e in peer_run["events"]:
        assert all(not (isinstance(v, float) and not math.isfinite(v)) for v in e.values()), e


@pytest.mark.slow
def test_a_stalled_subscriber_holds_nothing_back(tmp_path):
    """A fast replay while a subscriber never reads (a one-message queue, a 4 kB socket buffer): every volume is
    processed and every frame reaches the subscriber that reads. What it costs in time is `bench service`'s to
    measure, not a test's."""
    sb = make_bundle(tmp_path / "bundle", shape=(14, 16, 10), n_voxels=60, image_size=64, tr=TR)
    data = synthetic_run(sb.reference, 150, seed=2)
    watch, runs = tmp_path / "scanner", tmp_path / "runs"
    watch.mkdir(parents=True)
    pub = free_address()
    values = dict(bundle=sb.path, watch=watch, runs=runs, run_id="t", pub=pub, pull=free_address(), hwm=1000)
    values.update(idle_timeout=2.0, startup_timeout=60.0, min_volumes=3, heartbeat=0.2)
    collector = Collector(pub)
    collector.start()
    ctx = zmq.Context()
    lazy = protocol.subscriber(ctx, pub, hwm=1)
    lazy.setsockopt(zmq.RCVBUF, 4096)
    serve = ServeProcess(values, tmp_path).start()
    try:
        assert wait_until(lambda: collector.ready.is_set() or not serve.alive(), 60)
        emu = ScannerEmulator(data=data, affine=sb.affine, tr=TR, out_dir=watch, fmt="nifti", asap=True)
        with emu:
            emu.wait(60)
        assert serve.wait(60) == 0
        assert collector.ended.wait(30)
    finally:
        collector.close()
        lazy.close(linger=0)
        ctx.term()
        serve.kill()
    ok = [r for r in read_jsonl(runs / "t" / "volumes.jsonl") if r.get("status") == "ok"]
    assert len(ok) == 150
    assert [f["volume"] for f in collector.frames()] == list(range(150))
