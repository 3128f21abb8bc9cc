from __future__ import annotations

import json

import numpy as np
import pytest

from service import protocol
from stimulus.messages import DisplayState, feedback_value, operator_lines, what_to_show


def frame(seq: int, value: int = 0, run_id: str = "r1", topic: str = "frame", **extra) -> list[bytes]:
    img = np.full((6, 5, 3), value, np.uint8)
    fields, payload = protocol.encode_image(img)
    return protocol.encode(topic, {"run_id": run_id, "seq": seq, "volume": seq, **fields, **extra}, payload)


def test_newest_frame_wins_and_stale_are_counted():
    s = DisplayState("frame")
    for k in range(3):
        assert s.ingest(frame(k, value=10 * k), received=float(k))
    shown = s.take()
    assert shown.seq == 2 and shown.image[0, 0, 0] == 20 and shown.received == 2.0
    assert s.take() is None and s.current is shown
    assert s.counts["stale"] == 2 and s.counts["shown"] == 1 and s.counts["frames"] == 3


def test_gaps_restarts_and_end():
    s = DisplayState("frame")
    for k in (0, 1, 4):
        s.ingest(frame(k), 0.0)
    assert s.counts["gaps"] == 2
    s.ingest(protocol.encode("end", {"run_id": "r1", "seq": 0}), 0.0)
    assert s.ended is not None
    s.ingest(frame(0, run_id="r2"), 0.0)  # the service restarted with a new run
    assert s.counts["restarts"] == 1 and s.ended is None and s.run_id == "r2"
    s.ingest(frame(0, run_id="r2"), 0.0)  # same run, seq reset: a restart too
    assert s.counts["restarts"] == 2


@pytest.mark.parametrize(
    "frames",
    [
        [b"frame", b"{bad", b""],
        [b"frame"],
        [b"frame", json.dumps({"schema": 1, "seq": 0, "shape": [2, 2, 3], "dtype": "uint8"}).encode(), b"xx"],
        [b"frame", json.dumps({"schema": 1, "seq": 0}).encode(), b""],  # a frame without an image
        [b"frame", json.dumps({"schema": 1, "shape": [1, 1, 3], "dtype": "uint8"}).encode(), b"abc"],  # no seq
        [b"nonsense", json.dumps({"schema": 1}).encode(), b""],
        [b"frame", json.dumps({"schema": 7, "seq": 0}).encode(), b""],
    ],
)
def test_malformed_messages_are_counted_and_ignored(frames):
    s = DisplayState("frame")
    s.ingest(frame(0, value=9), 0.0)
    assert not s.ingest(frames, 1.0)
    assert s.counts["malformed"] == 1 and s.last_error
    assert s.take().image[0, 0, 0] == 9


def test_other_topic_is_ignored():
    s = DisplayState("trial")
    s.ingest(frame(0), 0.0)
    assert s.take() is None
    s.ingest(frame(0, topic="trial"), 0.0)
    assert s.take().topic == "trial"


def test_feedback_value():
    assert feedback_value({"feedback": 0.3}) == 0.3
    assert feedback_value({"feedback": {"projections": {"Male": 1.0}, "value": -0.2, "correlation": 0.1}}) == -0.2
    assert feedback_value({"feedback": {"correlation": 0.1}}) == 0.1
    assert feedback_value({"feedback": {"projections": {"Male": 1.0}}}) is None
    assert feedback_value({"feedback": True}) is None and feedback_value({}) is None


def test_what_to_show_by_mode():
    s = DisplayState("frame")
    assert what_to_show(s, "face").kind == "wait"
    assert what_to_show(s, "operator").lines[0].startswith("run -")
    s.ingest(frame(3, motion=[0.1, 0.2, 0.3, 1.0, 2.0, 3.0], fd=0.25, feedback={"value": 0.4}), 0.0)
    s.take()
    face = what_to_show(s, "face")
    assert face.kind == "face" and face.image.shape == (6, 5, 3) and face.lines == []
    fb = what_to_show(s, "feedback")
    assert fb.kind == "feedback" and fb.value == 0.4
    lines = what_to_show(s, "operator").lines
    assert "volume 3" in lines[0] and "FD 0.25 mm" in lines and "+1.00 +2.00 +3.00" in lines[3]
    with pytest.raises(ValueError, match="mode"):
        what_to_show(s, "bogus")


def test_operator_lines_use_status_before_first_frame():
    s = DisplayState("frame")
    s.ingest(protocol.encode("status", {"run_id": "rX", "seq": 0, "volume": 7, "fd": 0.5}), 0.0)
    lines = operator_lines(s)
    assert lines[0].startswith("run rX   volume 7") and lines[1] == "FD 0.50 mm"


@pytest.mark.parametrize(("condition", "marked"), [("sham", "SHAM FEEDBACK"), ("blinded", "blinded"), ("live", None)])
def test_the_operator_view_marks_a_sham_run_and_the_participants_view_does_not(condition, marked):
    s = DisplayState("frame")
    s.ingest(protocol.encode("status", {"run_id": "rX", "seq": 0, "fd": 0.1, "condition": condition}), 0.0)
    s.ingest(protocol.encode("frame", {"run_id": "rX", "seq": 0, "volume": 0, "feedback": {"value": 0.3}}), 0.0)
    operator = " | ".join(what_to_show(s, "operator").lines)
    assert (marked in operator) if marked else ("SHAM" not in operator and "blinded" not in operator)
    for mode in ("face", "feedback"):  # what the participant sees carries no text at all
        assert what_to_show(s, mode).lines == []
