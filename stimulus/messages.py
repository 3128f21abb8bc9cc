"""What a display knows and should show: decoding of the service's messages, as plain functions (no window).

:class:`DisplayState` is fed raw multipart messages; it keeps the newest face not yet shown (older queued
frames are counted as stale and dropped), the last ``status`` and ``end`` headers, and counters (malformed
messages, sequence gaps, restarts). :func:`what_to_show` turns it into a :class:`Screen`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.protocol import SERVICE_TOPICS, ProtocolError, decode, decode_image

__all__ = ["Shown", "Screen", "DisplayState", "feedback_value", "operator_lines", "what_to_show", "MODES"]

MODES = ("face", "feedback", "operator")
#: Keys of a ``feedback`` dict that may hold the value to show, in order of preference.
FEEDBACK_KEYS = ("value", "correlation", "r", "target_correlation", "similarity")


@dataclass
class Shown:
    """A decoded face ready for the screen."""

    topic: str
    seq: int
    run_id: str
    header: dict[str, Any]
    image: np.ndarray
    received: float

    @property
    def volume(self) -> Any:
        """The volume number the service's header gives for this face, or None."""
        return self.header.get("volume")


@dataclass
class Screen:
    """What to draw: ``kind`` is ``wait`` (fixation/placeholder), ``face``, ``feedback`` or ``ended``."""

    kind: str
    image: np.ndarray | None = None
    value: float | None = None
    lines: list[str] = field(default_factory=list)
    key: int | None = None  # changes with every new face (the texture is uploaded once per key)


def feedback_value(header: dict[str, Any]) -> float | None:
    """The neurofeedback value of a header: ``feedback`` as a number, or the first numeric known key of it."""
    fb = header.get("feedback")
    if isinstance(fb, dict):
        fb = next((fb[k] for k in FEEDBACK_KEYS if isinstance(fb.get(k), (int, float))), None)
    if isinstance(fb, bool) or not isinstance(fb, (int, float)) or not math.isfinite(fb):
        return None
    return float(fb)


class DisplayState:
    """The display's knowledge of the stream it subscribes to (``topic`` is ``frame`` or ``trial``)."""

    def __init__(self, topic: str = "frame") -> None:
        if topic not in ("frame", "trial"):
            raise ValueError(f"a display shows topic 'frame' or 'trial', not {topic!r}")
        self.topic = topic
        self.pending: Shown | None = None
        self.current: Shown | None = None
        self.status: dict[str, Any] | None = None
        self.ended: dict[str, Any] | None = None
        self.run_id: str | None = None
        self.last_seq: int | None = None
        self.last_error = ""
        self.counts = {"received": 0, "frames": 0, "shown": 0, "stale": 0, "malformed": 0, "gaps": 0, "restarts": 0}

    def ingest(self, frames: list[Any], received: float) -> bool:
        """Take one raw message; False (and counted) when malformed. Other topics than ours are ignored."""
        self.counts["received"] += 1
        try:
            msg = decode(frames, SERVICE_TOPICS)
            if msg.topic == self.topic:
                image = decode_image(msg.header, msg.payload)
                seq = msg.header.get("seq")
                if isinstance(seq, bool) or not isinstance(seq, int):
                    raise ProtocolError(f"{msg.topic} header has no integer seq: {seq!r}")
        except ProtocolError as exc:
            self.counts["malformed"] += 1
            self.last_error = str(exc)
            return False
        header = msg.header
        if msg.topic == "status":
            self.status = header
        elif msg.topic == "end":
            self.ended = header
        elif msg.topic == self.topic:
            self._track(str(header.get("run_id", "")), seq)
            if self.pending is not None:
                self.counts["stale"] += 1
            self.counts["frames"] += 1
            self.pending = Shown(msg.topic, seq, str(header.get("run_id", "")), header, image, received)
        return True

    def _track(self, run_id: str, seq: int) -> None:
        """Detect a new run or a restarted service (new run_id, or seq going back) and count gaps."""
        if self.run_id is not None and (run_id != self.run_id or (self.last_seq is not None and seq <= self.last_seq)):
            self.counts["restarts"] += 1
            self.ended = None
        elif self.last_seq is not None and seq > self.last_seq + 1:
            self.counts["gaps"] += seq - self.last_seq - 1
        self.run_id, self.last_seq = run_id, seq

    def take(self) -> Shown | None:
        """The newest frame not yet shown (it becomes ``current``), or None."""
        shown, self.pending = self.pending, None
        if shown is not None:
            self.current = shown
            self.counts["shown"] += 1
        return shown


def operator_lines(state: DisplayState) -> list[str]:
    """The operator's text: run, volume, motion and FD, latency, counters."""
    h = state.current.header if state.current is not None else {}
    st = state.status or {}
    run = h.get("run_id") or st.get("run_id") or "-"
    lines = [f"run {run}   volume {_fmt(h.get('volume', st.get('volume')), 'd')}   seq {_fmt(h.get('seq'), 'd')}"]
    condition = st.get("condition")
    if condition == "sham":  # the operator's view marks a sham run; the participant's modes never show it
        lines.append("SHAM FEEDBACK (yoked to a recorded run)")
    elif condition == "blinded":
        lines.append("feedback condition: blinded (allocation file)")
    motion = h.get("motion", st.get("motion"))
    fd = h.get("fd", st.get("fd"))
    if isinstance(motion, list) and len(motion) == 6:
        mm = " ".join(_fmt(v, "+.2f") for v in motion[:3])
        deg = " ".join(_fmt(v, "+.2f") for v in motion[3:])
        lines += [f"FD {_fmt(fd, '.2f')} mm", f"shift {mm} mm", f"rot {deg} deg"]
    else:
        lines.append(f"FD {_fmt(fd, '.2f')} mm")
    t = h.get("t") if isinstance(h.get("t"), dict) else {}
    if isinstance(t.get("file_ready"), (int, float)) and isinstance(t.get("sent"), (int, float)):
        lines.append(f"file -> sent {1000 * (t['sent'] - t['file_ready']):.1f} ms")
    c = state.counts
    lines.append(
        f"shown {c['shown']}  stale {c['stale']}  gaps {c['gaps']}  malformed {c['malformed']}  restarts {c['restarts']}"
    )
    if state.ended is not None:
        lines.append("run ended")
    return lines


def what_to_show(state: DisplayState, mode: str) -> Screen:
    """The screen for the display's current knowledge (``mode``: face, feedback or operator)."""
    if mode not in MODES:
        raise ValueError(f"display mode must be one of {MODES}, got {mode!r}")
    cur = state.current
    lines = operator_lines(state) if mode == "operator" else []
    if cur is None:
        return Screen("ended" if state.ended is not None else "wait", lines=lines)
    if mode == "feedback":
        return Screen("feedback", cur.image, feedback_value(cur.header), lines, state.counts["shown"])
    return Screen("face", cur.image, lines=lines, key=state.counts["shown"])


def _fmt(v: Any, spec: str) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return "-"
    if spec == "d":
        return str(int(v))
    return format(v, spec)
