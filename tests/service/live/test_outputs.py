"""The output interface: an in-process output beside the ZeroMQ publisher receives every frame, trial, status, qa
and end once, in order, with the headers the subscribers receive; one that raises does not stop the live path; one
written before ``qa`` existed still works."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest
import zmq

from fmriface.benchmarks.synth import make_bundle, make_run
from service import protocol
from service.jsonsafe import dumps, loads
from service.live.outputs import Output, Outputs
from service.live.publisher import Publisher
from service.live.serve import Service
from service.protocol import SeqCounter
from tests.service.harness import QueueSource, make_volume, serve_config

TR = 2.0
N_VOL = 24
TRIALS = [(6.0, 1), (16.0, 2), (26.0, 3)]


class Recorder:
    """An output that keeps what it is given: ``(method, header as JSON would carry it, image bytes)``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any], bytes]] = []
        self.closed = 0

    def _keep(self, method: str, header: dict[str, Any], image: np.ndarray | None = None) -> int | None:
        pixels = b"" if image is None else np.ascontiguousarray(image).tobytes()
        self.calls.append((method, loads(dumps(header)), pixels))
        return None

    def frame(self, header: dict[str, Any], image: np.ndarray) -> int | None:
        return self._keep("frame", header, image)

    def trial(self, header: dict[str, Any], image: np.ndarray) -> int | None:
        return self._keep("trial", header, image)

    def status(self, header: dict[str, Any]) -> None:
        self._keep("status", header)

    def qa(self, header: dict[str, Any], image: np.ndarray) -> None:
        self._keep("qa", header, image)

    def end(self, header: dict[str, Any]) -> None:
        self._keep("end", header)

    def close(self) -> None:
        self.closed += 1


class Broken(Recorder):
    """An output whose every message raises."""

    def _keep(self, method: str, header: dict[str, Any], image: np.ndarray | None = None) -> int | None:
        raise RuntimeError(f"broken output: {method}")


class Numbering(Recorder):
    """A primary without sockets: numbers frames and trials as the publisher does."""

    def __init__(self) -> None:
        super().__init__()
        self.seq = SeqCounter()

    def _keep(self, method: str, header: dict[str, Any], image: np.ndarray | None = None) -> int:
        if method in ("frame", "trial"):
            header["seq"] = self.seq.next(method)
        super()._keep(method, header, image)
        return header.get("seq")

    def counts(self) -> dict[str, dict[str, int]]:
        return {"sent": {"frame": self.seq.peek("frame")}, "dropped": {}}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("bundle") / "b", n_voxels=80, latent_size=8, image_size=8, tr=TR)


@pytest.fixture(scope="module")
def run_data(synth):
    return make_run(synth, TRIALS, N_VOL, amplitude=3.0, noise=2.0, drift=5.0, seed=4)


def _serve(synth, run_data, tmp_path, outputs: tuple[Output, ...]) -> tuple[Service, list[protocol.Message]]:
    """Serve ``N_VOL`` volumes with the trials of an events.tsv and ``outputs`` beside the publisher; every
    message a subscriber got from the first heartbeat it saw to ``end``."""
    events = tmp_path / "events.tsv"
    rows = [f"{onset}\t1.0\ttest_face\t{synth.stim_ids[s]}" for onset, s in TRIALS]
    events.write_text("onset\tduration\ttrial_type\tstim_file\n" + "\n".join(rows) + "\n")
    cfg = serve_config(synth.path, tmp_path, max_volumes=N_VOL, events=events)
    source = QueueSource()
    svc = Service(cfg, source=source, outputs=outputs).start()
    ctx = zmq.Context()
    sub = protocol.subscriber(ctx, cfg.pub, hwm=100000)
    thread = threading.Thread(target=svc.run, daemon=True)
    thread.start()
    messages: list[protocol.Message] = []
    try:
        deadline = time.monotonic() + 30
        while not messages:  # the subscription is up once a heartbeat arrives
            assert time.monotonic() < deadline, "no status heartbeat within 30 s"
            msg = protocol.recv(sub, 200, protocol.SERVICE_TOPICS)
            if msg is not None and msg.topic == "status":
                messages.append(msg)
        for i in range(N_VOL):
            source.q.put(make_volume(i, run_data[i], synth.affine, TR))
        while messages[-1].topic != "end":
            msg = protocol.recv(sub, 30000, protocol.SERVICE_TOPICS)
            assert msg is not None, "the service went silent for 30 s"
            messages.append(msg)
    finally:
        svc.stop("test")
        thread.join(30)
        sub.close(linger=0)
        ctx.term()
    assert not thread.is_alive()
    return svc, messages


def _as_recorded(messages: list[protocol.Message]) -> list[tuple[str, dict[str, Any], bytes]]:
    return [(m.topic, {k: v for k, v in m.header.items() if k != "schema"}, m.payload) for m in messages]


def _check_same_as_subscriber(rec: Recorder, messages: list[protocol.Message]) -> None:
    wire = _as_recorded(messages)
    assert wire[0] in rec.calls, "the subscriber's first heartbeat never reached the output"
    start = rec.calls.index(wire[0])  # the subscriber joined after the first heartbeats
    assert rec.calls[start:] == wire  # every message once, in order, same header, same image
    assert all(method == "status" for method, _, _ in rec.calls[:start])
    frames = [h for method, h, _ in rec.calls if method == "frame"]
    assert [h["volume"] for h in frames] == list(range(N_VOL))
    assert [h["seq"] for h in frames] == list(range(N_VOL))
    trials = [h for method, h, _ in rec.calls if method == "trial"]
    assert trials and [h["seq"] for h in trials] == list(range(len(trials)))
    assert [method for method, _, _ in rec.calls].count("end") == 1 and rec.calls[-1][0] == "end"
    assert rec.closed == 1


def test_an_output_beside_the_publisher_gets_what_the_subscriber_gets(synth, run_data, tmp_path):
    rec = Recorder()
    svc, messages = _serve(synth, run_data, tmp_path, (rec,))
    _check_same_as_subscriber(rec, messages)
    assert rec.calls[-1][1]["summary"]["sent"]["frame"] == N_VOL
    assert svc.outputs_.failures == {}


def test_an_output_that_raises_does_not_stop_the_live_path(synth, run_data, tmp_path, monkeypatch):
    monkeypatch.delenv("FMRIFACE_RAISE", raising=False)  # the live policy: log, count, go on
    broken, rec = Broken(), Recorder()
    svc, messages = _serve(synth, run_data, tmp_path, (broken, rec))
    _check_same_as_subscriber(rec, messages)  # the output after the broken one misses nothing either
    end = messages[-1].header
    assert end["reason"] == "max_volumes" and end["summary"]["volumes_ok"] == N_VOL
    assert end["summary"]["volumes_failed"] == 0
    assert svc.outputs_.failures == {1: len(rec.calls)}  # every message it was given, not the close


def test_the_primary_numbers_before_the_others_see_the_header():
    primary, other = Numbering(), Recorder()
    out = Outputs(primary, other)
    image = np.zeros((2, 2, 3), np.uint8)
    assert [out.frame({"volume": v}, image) for v in range(3)] == [0, 1, 2]
    assert out.trial({"trial": "a"}, image) == 0
    out.status({"state": "running"})
    out.end({"reason": "end"})
    assert [h.get("seq") for _, h, _ in other.calls] == [0, 1, 2, 0, None, None]
    assert [m for m, _, _ in other.calls] == ["frame"] * 3 + ["trial", "status", "end"]
    assert out.seq is primary.seq and out.seq.state() == {"frame": 3, "trial": 1}
    assert out.counts() == {"sent": {"frame": 3}, "dropped": {}}
    out.close()
    assert primary.closed == other.closed == 1


def test_an_output_is_checked_when_added_and_a_failure_raises_under_fmriface_raise(monkeypatch):
    out = Outputs(Numbering())
    with pytest.raises(TypeError, match="not an Output"):
        out.add(object())  # type: ignore[arg-type]
    out.add(Broken())
    monkeypatch.setenv("FMRIFACE_RAISE", "1")
    with pytest.raises(RuntimeError, match="broken output: status"):
        out.status({})
    monkeypatch.delenv("FMRIFACE_RAISE")
    out.status({})
    out.status({})
    assert out.failures == {1: 2}


class BeforeQA:
    """An output written before the ``qa`` message existed: frame, trial, status, end and close only."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def frame(self, header: dict[str, Any], image: np.ndarray) -> None:
        self.calls.append("frame")

    def trial(self, header: dict[str, Any], image: np.ndarray) -> None:
        self.calls.append("trial")

    def status(self, header: dict[str, Any]) -> None:
        self.calls.append("status")

    def end(self, header: dict[str, Any]) -> None:
        self.calls.append("end")

    def close(self) -> None:
        self.calls.append("close")


def test_a_qa_message_reaches_an_output_and_a_subscriber_once():
    from service.qa import render_maps

    shape = (12, 14, 10)
    mask = np.zeros(shape, bool)
    mask[3:9, 4:11, 2:8] = True
    maps = render_maps(np.where(mask, 500.0, 20.0), np.where(mask, 60.0, np.nan), mask)
    pub = Publisher("tcp://127.0.0.1:*")
    rec, old = Recorder(), BeforeQA()
    out = Outputs(pub, old, rec)
    ctx = zmq.Context()
    sub = protocol.subscriber(ctx, pub.pub_address, hwm=1000)
    got: list[protocol.Message] = []
    try:
        deadline = time.monotonic() + 20
        while not got:  # the subscription is up once a heartbeat arrives
            assert time.monotonic() < deadline, "no status within 20 s"
            out.status({"run_id": "r", "state": "running"})
            while (msg := protocol.recv(sub, 50, protocol.SERVICE_TOPICS)) is not None:
                got.append(msg)
        header = {"run_id": "r", "volume": 19, "tsnr_mean": 61.5, "kind": "maps", "slices": [3, 5, 6]}
        out.qa(header, maps)
        out.end({"run_id": "r", "reason": "test"})
        while got[-1].topic != "end":
            msg = protocol.recv(sub, 10000, protocol.SERVICE_TOPICS)
            assert msg is not None, "the subscriber got no end within 10 s"
            got.append(msg)
    finally:
        out.close()
        sub.close(linger=0)
        ctx.term()
    wire = [m for m in got if m.topic == "qa"]
    assert len(wire) == 1
    msg = wire[0]
    assert msg.header["seq"] == 0 and msg.header["shape"] == list(maps.shape) and msg.header["dtype"] == "uint8"
    assert {k: msg.header[k] for k in header} == header
    assert np.array_equal(msg.image(), maps)
    qa_calls = [(h, pixels) for method, h, pixels in rec.calls if method == "qa"]
    assert len(qa_calls) == 1
    assert qa_calls[0][0] == {k: v for k, v in msg.header.items() if k != "schema"}  # the header the wire carried
    assert qa_calls[0][1] == maps.tobytes()
    assert "qa" not in old.calls and old.calls.count("end") == 1 and old.calls[-1] == "close"
    assert out.failures == {} and pub.counts()["sent"]["qa"] == 1
