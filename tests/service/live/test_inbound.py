"""Bounded inbound messages (issue #28): nothing a peer sends can make a record unwritable, the report unreadable
or the frames late. Over-limit messages are dropped and counted by kind, their log lines rate-limited."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import zmq

from fmriface.benchmarks.synth import make_bundle, make_run
from service import protocol
from service.live.inbound import InboundGate, InboundLimits, OverLimit
from service.live.runlog import TSV_FIELD_MAX, RunLog, read_trials
from tests.service.harness import make_volume, serve, serve_config

TR = 2.0


def _encode(header: dict, topic: str = "event", payload: bytes = b"") -> list[bytes]:
    return protocol.encode(topic, header, payload)


@pytest.fixture
def pipe():
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.bind("inproc://gate")
    push = ctx.socket(zmq.PUSH)
    push.connect("inproc://gate")
    yield push, pull
    push.close(linger=0)
    pull.close(linger=0)
    ctx.term()


def _through(gate: InboundGate, push, pull, frames: list[bytes]):
    push.send_multipart(frames)
    assert pull.poll(5000)
    return gate.receive(pull)


def test_the_gate_drops_each_kind_of_over_limit_message_and_counts_it(pipe, caplog):
    push, pull = pipe
    now = [0.0]
    waiting = [0]
    limits = InboundLimits(max_header_bytes=2000, max_fields=8, max_field_chars=64, max_events_per_s=2.0)
    gate = InboundGate(limits, open_trials=lambda: waiting[0], clock=lambda: now[0])
    ok = protocol.event_header("onset", 0, onset=1.0, trial="1", stim_id="a.png")
    assert _through(gate, push, pull, _encode(ok)).header["stim_id"] == "a.png"
    cases = {
        "size": {**ok, "stim_id": "x" * 5000},
        "field_length": {**ok, "stim_id": "x" * 65},
        "fields": {**ok, "extra": list(range(10))},
    }
    caplog.set_level(logging.WARNING, "service.live.inbound")
    for kind, header in cases.items():
        with pytest.raises(OverLimit) as err:
            _through(gate, push, pull, _encode(header))
        assert err.value.kind == kind
    assert _through(gate, push, pull, _encode(ok)) is not None  # the second of the burst of 2
    with pytest.raises(OverLimit, match="faster than 2 per second"):
        _through(gate, push, pull, _encode(ok))
    now[0] += 0.5  # one token back
    waiting[0] = limits.max_open_trials
    with pytest.raises(OverLimit, match="trials wait"):
        _through(gate, push, pull, _encode(ok))
    flip = protocol.flip_header(0, "frame", 0, 1.0)
    assert _through(gate, push, pull, _encode(flip, "flip")) is not None  # not an event: no rate, no trials
    assert gate.counts() == {"size": 1, "field_length": 1, "fields": 1, "rate": 1, "open_trials": 1}
    assert len([r for r in caplog.records if "dropped an inbound message" in r.getMessage()]) == 5  # one per kind
    for _ in range(50):  # more of one kind in the interval: held back, not logged
        with pytest.raises(OverLimit):
            _through(gate, push, pull, _encode(cases["size"]))
    assert len([r for r in caplog.records if "dropped an inbound message" in r.getMessage()]) == 5
    assert gate.counts()["size"] == 51 and gate.lines.held("inbound size") == 50


def test_limits_are_checked():
    with pytest.raises(ValueError, match="max_events_per_s must be positive"):
        InboundLimits(max_events_per_s=0)
    with pytest.raises(ValueError, match="max_payload_bytes must be at most"):
        InboundLimits(max_payload_bytes=protocol.MAX_PAYLOAD_BYTES + 1)


def test_the_inbound_table_of_a_serve_config_is_read(tmp_path):
    from fmriface.config import load_config
    from service.live.config import ServeConfig

    path = tmp_path / "serve.toml"
    path.write_text("[inbound]\nmax_field_chars = 100\nmax_open_trials = 20\n")
    cfg = load_config(ServeConfig, path, {})
    assert cfg.inbound == InboundLimits(max_field_chars=100, max_open_trials=20)


def test_trials_tsv_fields_are_capped_and_a_huge_field_still_reads(tmp_path):
    log = RunLog(tmp_path, "r", latent_size=2, n_voxels=2)
    log.open({})
    log.trial({"trial": "1", "stim_id": "s" * 900_000, "onset": 1.0}, np.zeros(2, np.float32))
    log.close()
    rows = read_trials(tmp_path / "r" / "trials.tsv")
    assert len(rows[0]["stim_id"]) == TSV_FIELD_MAX and rows[0]["stim_id"].endswith("...")
    # a table written before the cap (or by hand) with a 900 KB field: csv's field limit would refuse it
    path = tmp_path / "old.tsv"
    path.write_text("trial\tstim_id\tonset\n1\t" + '"' + "s" * 900_000 + "\t2.0\n")
    rows = read_trials(path)
    assert len(rows[0]["stim_id"]) == 900_001 and rows[0]["onset"] == "2.0"


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("bundle") / "b", n_voxels=60, latent_size=8, image_size=8, tr=TR)


def test_a_900_kb_stim_id_is_dropped_and_the_run_and_its_report_stay_whole(synth, tmp_path, monkeypatch):
    from service.live.report import run_report

    monkeypatch.setenv("FMRIFACE_RAISE", "0")
    n = 12
    data = make_run(synth, [], n, amplitude=0.0, noise=1.0, drift=0.0, seed=1)
    vols = [make_volume(i, data[i], synth.affine, TR) for i in range(n)]
    huge = protocol.event_header("onset", 0, onset=2.0, duration=1.0, trial="t0", trial_type="face")
    huge["stim_id"] = "x" * 900_000
    long_name = {**huge, "seq": 1, "trial": "t1", "stim_id": "y" * 1000}
    valid = {**huge, "seq": 2, "trial": "t2", "stim_id": synth.stim_ids[0]}
    cfg = serve_config(synth.path, tmp_path, max_volumes=n, min_volumes=2)
    out = serve(cfg, vols, inbound=[_encode(huge), _encode(long_name), _encode(valid)])
    assert out.topic("end")[0].header["reason"] == "max_volumes"
    assert out.summary["inbound_dropped"] == {"size": 1, "field_length": 1}
    assert out.summary["volumes_ok"] == n
    assert all("inbound_dropped" in m.header for m in out.topic("status"))
    assert out.topic("end")[0].header["summary"]["inbound_dropped"] == {"size": 1, "field_length": 1}
    run_dir = out.service.run_dir_
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert [e["trial"] for e in events] == ["t2"]
    assert json.loads((run_dir / "manifest.json").read_text())["state"] == "ended"
    report = run_report(run_dir)
    assert report["state"] == "ended" and report["trials"] == 1


def _frame_delays(out) -> np.ndarray:
    return np.array([m.header["t"]["sent"] - m.header["t"]["file_ready"] for m in out.topic("frame")])


@pytest.mark.parametrize(
    "limits",
    [InboundLimits(), InboundLimits(max_events_per_s=1e6)],
    ids=["defaults", "rate-lifted-open-trials-bound"],
)
def test_5000_valid_events_do_not_delay_frames(synth, tmp_path, monkeypatch, limits):
    monkeypatch.setenv("FMRIFACE_RAISE", "0")
    n = 24
    data = make_run(synth, [], n, amplitude=0.0, noise=1.0, drift=0.0, seed=2)
    vols = [make_volume(i, data[i], synth.affine, TR) for i in range(n)]
    flooded = []

    def flood(msg, push):  # at the second frame: 5,000 onsets with distinct trials, as fast as ZeroMQ takes them
        if msg.header["volume"] == 1:
            ready = zmq.Poller()
            ready.register(push, zmq.POLLOUT)
            sent = 0
            for k in range(5000):
                header = protocol.event_header("onset", k, onset=0.001 * k, trial=f"f{k}", trial_type="face")
                frames = _encode({**header, "stim_id": synth.stim_ids[k % len(synth.stim_ids)]})
                try:  # never block for good: the run ends after its volumes and then takes no more events
                    push.send_multipart(frames, flags=zmq.NOBLOCK)
                except zmq.Again:
                    if not ready.poll(5000):
                        break
                    push.send_multipart(frames, flags=zmq.NOBLOCK)
                sent += 1
            flooded.append(sent)

    cfg = serve_config(synth.path, tmp_path, max_volumes=n, min_volumes=2, inbound=limits)
    out = serve(cfg, vols, on_frame=flood, pace=0.05)
    # the run may end before the flood does (its volumes keep coming): enough events to overrun every bound
    assert flooded and flooded[0] > max(limits.max_open_trials, 1000) and out.summary["volumes_ok"] == n
    # every frame went out; how long they waited is a benchmark's business on a loaded machine, not this test's
    # (printed for the record): what keeps them prompt is the bound below on the trials the service holds open
    delays = _frame_delays(out)
    assert len(delays) == n
    print(f"frame delays with 5,000 events: max {delays.max():.3f} s, median {np.median(delays):.3f} s")
    dropped = out.summary["inbound_dropped"]
    kept = len((out.service.run_dir_ / "events.jsonl").read_text().splitlines())
    assert kept <= max(limits.max_open_trials, limits.max_events_per_s * 2)
    assert kept + sum(dropped.values()) <= 5000


def test_a_flood_of_malformed_messages_is_counted_each_and_logged_once_per_kind(caplog):
    from service.live.publisher import Publisher

    pub = Publisher("tcp://127.0.0.1:*", "tcp://127.0.0.1:*")
    ctx = zmq.Context()
    push = protocol.pusher(ctx, pub.pull_address)
    caplog.set_level(logging.WARNING)
    try:
        for _ in range(1000):
            push.send_multipart([b"event", b"{not json", b""])
        for _ in range(1000):
            push.send_multipart([b"telemetry", b"{}", b""])
        got = []
        while pub.inbound < 2000:
            got += pub.receive()
            pub.wait_inbound(2000, 0.05)
        assert got == [] and pub.malformed == 2000
        lines = [r for r in caplog.records if "malformed inbound" in r.getMessage()]
        assert len(lines) == 2, [r.getMessage() for r in lines]  # one per kind of fault, the rest held back
        pub.close(linger_ms=0)
        told = [r.getMessage() for r in caplog.records if "more lines like it held back" in r.getMessage()]
        assert sorted(int(t.split(": ")[2].split()[0]) for t in told) == [999, 999], told
    finally:
        push.close(linger=0)
        ctx.term()
