"""What the dashboard knows of the current run, in bounded memory, and the events that tell a page about it.

:class:`RunState` takes *items*: messages already decoded off the wire by the feed (:func:`prepare`, which runs
on the subscriber's thread and also encodes the face images), and record lines of the run's folder
(``volumes.jsonl``, ``flips.jsonl``, read by :mod:`fmriface.dashboard.runs`). A frame's or record's ``qa``
(the volume's quality check) rides on its point; the status's ``qa`` counts and the newest ``qa`` maps image are
kept once each. :meth:`RunState.apply` returns the
events to push to the browsers: ``(name, data)`` pairs with plain JSON data. :meth:`RunState.snapshot` is the
whole state, sent to a page when it connects and whenever its queue overflowed.

Everything a header carries is checked before it is used: a field of the wrong type, a non-finite number or an
unknown field is left out, never raised (receivers must tolerate unknown fields, ``service.protocol``). Every
collection is a ring of fixed size: the per-volume points (``history``), the trials with their faces, the
problems, the flip acks; counters are plain integers, and the set of volume numbers seen is a bit per volume.
"""

from __future__ import annotations

import base64
import bisect
import io
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from service import protocol

__all__ = [
    "as_int",
    "as_number",
    "as_text",
    "scalars",
    "STAGES",
    "INTAKE_KINDS",
    "StateConfig",
    "RunState",
    "prepare",
    "encode_image",
    "frame_point",
    "record_point",
    "qa_point",
    "qa_counts",
]

#: Latency stages of a frame: (name, from, to) timestamps of the header's ``t``.
STAGES = (
    ("read", "file_ready", "read"),
    ("queue", "read", "dequeued"),
    ("motion", "dequeued", "motion"),
    ("decode", "motion", "decoded"),
    ("send", "decoded", "sent"),
)
#: The per-volume QA metrics a frame's ``qa`` carries (docs/protocol.md) and their short names in a point.
QA_METRICS = (
    ("dvars", "dv"),
    ("std_dvars", "sd"),
    ("global_signal", "gs"),
    ("outlier_fraction", "of"),
    ("slice_z", "sz"),
)
#: What the service records of a volume the intake did not hand on (``volumes.jsonl``, status ``skipped``).
INTAKE_KINDS = ("incomplete", "corrupt", "mismatch", "gap", "duplicate", "late")


@dataclass(frozen=True)
class StateConfig:
    """Sizes and thresholds of the state (the page shows the same)."""

    history: int = 1000
    fd_threshold: float = 0.5
    trials_kept: int = 24
    film: int = 8
    problems_kept: int = 200


# --- checking header values -------------------------------------------------------------------------------


def as_number(x: Any) -> float | None:
    """``x`` as a float when it is a finite int or float (bools are not numbers here), else None."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def as_int(x: Any) -> int | None:
    """``x`` when it is an int within the range a JSON double holds exactly (not a bool), else None."""
    if isinstance(x, bool) or not isinstance(x, int) or abs(x) > 2**53:
        return None
    return x


def as_text(x: Any, n: int = 200) -> str | None:
    """``x`` cut to ``n`` characters when it is a string, else None."""
    return x[:n] if isinstance(x, str) else None


def _motion(x: Any) -> list[float] | None:
    if not isinstance(x, list) or len(x) != 6:
        return None
    vals = [as_number(v) for v in x]
    return None if any(v is None for v in vals) else [round(v, 5) for v in vals]  # type: ignore[arg-type]


def _ms(t: dict[str, Any], a: str, b: str) -> float | None:
    ta, tb = as_number(t.get(a)), as_number(t.get(b))
    return None if ta is None or tb is None else round(1000.0 * (tb - ta), 3)


def _feedback(x: Any) -> float | None:
    if isinstance(x, dict):
        for key in ("value", "correlation"):
            if as_number(x.get(key)) is not None:
                return round(as_number(x[key]), 5)  # type: ignore[arg-type]
        return None
    v = as_number(x)
    return None if v is None else round(v, 5)


def scalars(h: Any, limit: int = 40, depth: int = 2, prefix: str = "") -> dict[str, Any]:
    """The scalar fields of a (nested) dict as ``{"a.b": value}``: strings cut at 200, finite numbers, bools,
    None, lists of up to 8 numbers; at most ``limit`` of them. What the page shows of fields it has no panel for."""
    out: dict[str, Any] = {}
    if not isinstance(h, dict):
        return out
    for k, v in h.items():
        if len(out) >= limit:
            break
        if not isinstance(k, str):
            continue
        key = f"{prefix}{k[:60]}"
        if isinstance(v, dict):
            if depth > 0:
                out.update(scalars(v, limit - len(out), depth - 1, f"{key}."))
        elif isinstance(v, bool) or v is None:
            out[key] = v
        elif isinstance(v, str):
            out[key] = v[:200]
        elif as_number(v) is not None:
            out[key] = round(as_number(v), 6)  # type: ignore[arg-type]
        elif isinstance(v, list) and len(v) <= 8 and all(as_number(e) is not None for e in v):
            out[key] = [round(as_number(e), 5) for e in v]  # type: ignore[arg-type]
    return out


# --- the points of one volume ------------------------------------------------------------------------------


def _stages(t: Any) -> dict[str, float | None]:
    if not isinstance(t, dict):
        return {}
    out = {name: _ms(t, a, b) for name, a, b in STAGES}
    out["total"] = _ms(t, "file_ready", "sent")
    return {k: v for k, v in out.items() if v is not None}


def qa_point(x: Any) -> dict[str, Any] | None:
    """The plotted QA of a frame's (or a record's) ``qa`` object: ``c`` (censored), ``r`` (reasons, at most 8
    names of 40 characters) and the metrics of :data:`QA_METRICS` under their short names; None without one."""
    if not isinstance(x, dict):
        return None
    reasons = x.get("reasons")
    out: dict[str, Any] = {
        "c": x.get("censored") is True,
        "r": [r[:40] for r in reasons[:8] if isinstance(r, str)] if isinstance(reasons, list) else [],
    }
    for name, short in QA_METRICS:
        out[short] = as_number(x.get(name))
    return out


def qa_counts(x: Any) -> dict[str, Any] | None:
    """The status message's ``qa`` (``censored``, ``by_reason``, ``tsnr_mean``, ``volumes``) checked; None without
    one (a service from before QA, or an old run)."""
    if not isinstance(x, dict):
        return None
    by = x.get("by_reason")
    by_reason = {}
    if isinstance(by, dict):
        for k, v in list(by.items())[:16]:
            if isinstance(k, str) and as_int(v) is not None:
                by_reason[k[:40]] = as_int(v)
    return {
        "censored": as_int(x.get("censored")),
        "by_reason": by_reason,
        "tsnr_mean": as_number(x.get("tsnr_mean")),
        "volumes": as_int(x.get("volumes")),
    }


def frame_point(h: dict[str, Any], received: float | None = None) -> dict[str, Any]:
    """The plotted values of one frame header: volume ``v``, frame ``q``, motion ``m``, FD ``fd``, feedback
    ``fb``, stage latencies ``s`` (ms), sent time ``sent``, on the wire ``wire`` (sent -> received, ms) and, when
    the frame carries one, its QA ``qa`` (:func:`qa_point`)."""
    t = h.get("t") if isinstance(h.get("t"), dict) else {}
    p: dict[str, Any] = {
        "v": as_int(h.get("volume")),
        "q": as_int(h.get("seq")),
        "m": _motion(h.get("motion")),
        "fd": as_number(h.get("fd")),
        "fb": _feedback(h.get("feedback")),
        "s": _stages(t),
        "sent": as_number(t.get("sent")),
    }
    if received is not None and p["sent"] is not None:
        p["wire"] = round(1000.0 * (received - p["sent"]), 3)
    qa = qa_point(h.get("qa"))
    if qa is not None:
        p["qa"] = qa
    return p


def record_point(rec: dict[str, Any]) -> dict[str, Any]:
    """The plotted values of an ``ok`` line of ``volumes.jsonl`` (as :func:`frame_point` of its frame)."""
    h = {"volume": rec.get("volume"), "seq": rec.get("frame_seq"), "motion": rec.get("motion"), "fd": rec.get("fd")}
    h.update(feedback=rec.get("feedback"), t=rec.get("t"), qa=rec.get("qa"))
    return frame_point(h)


# --- decoding off the wire (the feed's thread) --------------------------------------------------------------


def encode_image(image: Any, fmt: str = "png") -> str:
    """A ``data:`` URL of an ``H x W x 3`` uint8 image (PNG, or JPEG at quality 90)."""
    from PIL import Image

    buf = io.BytesIO()
    img = Image.fromarray(image, "RGB")
    if fmt == "jpeg":
        img.save(buf, "JPEG", quality=90)
    else:
        img.save(buf, "PNG", compress_level=1)
    return f"data:image/{fmt};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def prepare(
    frames: list[bytes], received: float, with_image: bool = True, fmt: str = "png", keep_raw: bool = False
) -> dict[str, Any]:
    """One raw message as an item for :meth:`RunState.apply`: ``kind`` is its topic (``malformed`` when it
    cannot be decoded), ``header``, ``received`` and, for a face, ``image`` (a data URL; None when
    ``with_image`` is False: a newer face was already waiting, or one was sent moments ago) or ``image_error``.
    With ``keep_raw`` a face not encoded is kept as ``image_raw`` (the pixels, checked), to be encoded later."""
    try:
        msg = protocol.decode(frames, protocol.SERVICE_TOPICS)
    except protocol.ProtocolError as exc:
        return {"kind": "malformed", "error": str(exc)[:300], "received": received}
    item: dict[str, Any] = {"kind": msg.topic, "header": msg.header, "received": received, "image": None}
    if msg.topic == "qa":  # the QA maps: every few volumes, always encoded, always PNG (sharp outlines)
        if not msg.payload:
            item["image_error"] = "no image payload"
        else:
            try:
                item["image"] = encode_image(protocol.decode_image(msg.header, msg.payload), "png")
            except (protocol.ProtocolError, ValueError, OSError) as exc:
                item["image_error"] = str(exc)[:300]
    elif msg.topic in ("frame", "trial"):
        if not msg.payload:
            item["image_error"] = "no image payload"
        elif with_image or keep_raw:
            try:
                pixels = protocol.decode_image(msg.header, msg.payload)
                if with_image:
                    item["image"] = encode_image(pixels, fmt)
                else:
                    item["image_raw"] = pixels
            except (protocol.ProtocolError, ValueError, OSError) as exc:
                item["image_error"] = str(exc)[:300]
    return item


# --- bounded containers -------------------------------------------------------------------------------------


class VolumeSeries:
    """Points keyed by volume number, in order, at most ``capacity`` (the oldest volumes go first)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, int(capacity))
        self.volumes: list[int] = []
        self.points: dict[int, dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self.volumes)

    def add(self, p: dict[str, Any]) -> str:
        """``"end"`` (appended), ``"inside"`` (inserted before the last), ``"known"`` or ``"old"`` (too old)."""
        v = p["v"]
        if v in self.points:
            return "known"
        if len(self.volumes) >= self.capacity and v < self.volumes[0]:
            return "old"
        where = "end"
        if not self.volumes or v > self.volumes[-1]:
            self.volumes.append(v)
        else:
            bisect.insort(self.volumes, v)
            where = "inside"
        self.points[v] = p
        while len(self.volumes) > self.capacity:
            del self.points[self.volumes.pop(0)]
        return where

    def list(self) -> list[dict[str, Any]]:
        return [self.points[v] for v in self.volumes]


class Seen:
    """Which volume numbers have been seen: one bit each (a 2-hour run at TR 1 s is 900 bytes)."""

    LIMIT = 1 << 24

    def __init__(self) -> None:
        self.bits = bytearray()
        self.count = 0
        self.last = -1

    def add(self, v: int) -> bool:
        if v < 0 or v >= self.LIMIT:
            return False
        byte, bit = divmod(v, 8)
        if byte >= len(self.bits):
            self.bits.extend(bytes(byte + 1 - len(self.bits)))
        if self.bits[byte] & (1 << bit):
            return False
        self.bits[byte] |= 1 << bit
        self.count += 1
        self.last = max(self.last, v)
        return True

    @property
    def missing(self) -> int:
        return self.last + 1 - self.count


# --- the state ----------------------------------------------------------------------------------------------


def _new_counts() -> dict[str, Any]:
    return {
        "messages": 0,
        "frames": 0,
        "volumes_known": 0,
        "seen": None,
        "ok": None,
        "failed": None,
        "missing": 0,
        "lost": 0,
        "trials": 0,
        "trials_pending": None,
        "malformed": 0,
        "restarts": 0,
        "fd_above": 0,
        "duplicates_ignored": None,
        "discarded": None,
        "skipped": 0,
        "errors": 0,
        "intake": {k: 0 for k in INTAKE_KINDS},
        "images_skipped": 0,
        "flips": 0,
        "censored_seen": 0,
        "qa_maps": 0,
    }


class RunState:
    """The dashboard's knowledge of the current run (a new ``run_id`` on the stream starts a new one).

    Parameters
    ----------
    cfg : StateConfig
    stimulus_url : callable, optional
        ``stim_id -> URL or None``: where the page finds a stimulus image (``--stimuli``).
    info : dict, optional
        What the page shows about the dashboard itself (addresses, folders), sent with every snapshot.
    """

    def __init__(
        self,
        cfg: StateConfig | None = None,
        stimulus_url: Callable[[str], str | None] | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        self.cfg = cfg or StateConfig()
        self.stimulus_url = stimulus_url or (lambda stim_id: None)
        self.info = dict(info or {})
        self.runs: list[dict[str, Any]] = []
        self.runs_note = ""
        self._reset(None)

    def _reset(self, run_id: str | None) -> None:
        cfg = self.cfg
        self.run_id = run_id
        self.counts = _new_counts()
        self.points = VolumeSeries(cfg.history)
        self.trial_points: deque[dict[str, Any]] = deque(maxlen=cfg.history)
        self.flips: deque[dict[str, Any]] = deque(maxlen=cfg.history)
        self.trials: deque[dict[str, Any]] = deque(maxlen=cfg.trials_kept)
        self.film: deque[dict[str, Any]] = deque(maxlen=cfg.film)
        self.problems: deque[dict[str, Any]] = deque(maxlen=cfg.problems_kept)
        self.latest: dict[str, Any] | None = None
        self.pending_face: dict[str, Any] | None = None
        self.status: dict[str, Any] | None = None
        self.status_extra: dict[str, Any] = {}
        self.end: dict[str, Any] | None = None
        self.target: dict[str, Any] | None = None
        self.qa: dict[str, Any] | None = None  # the status's QA counts
        self.qa_maps: dict[str, Any] | None = None  # the latest QA maps image
        self.tr: float | None = None
        self.seen = Seen()
        self.last_seq: dict[str, int] = {}
        self.last_uptime: float | None = None
        self.last_message: float | None = None
        self._problem_id = 0

    # --- applying items ---------------------------------------------------------------------------------

    def apply(self, item: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """Take one item; returns the events for the pages (a ``snapshot`` when the run changed)."""
        kind = item.get("kind")
        if kind == "records":
            return self._records(item)
        if kind == "runs":
            self.runs, self.runs_note = list(item.get("runs") or []), str(item.get("note") or "")
            return [("runs", {"runs": self.runs, "note": self.runs_note})]
        self.counts["messages"] += 1
        if kind == "malformed":
            self.counts["malformed"] += 1
            return [self._problem("stream", "malformed", f"malformed message ignored: {item.get('error')}")]
        h = item.get("header")
        if not isinstance(h, dict):
            return []
        self.last_message = as_number(item.get("received")) or time.time()
        events: list[tuple[str, dict[str, Any]]] = []
        run_id = as_text(h.get("run_id"), 120)
        if run_id and run_id != self.run_id:  # a new run: the pages start again from its (empty) state
            self._reset(run_id)
            self.last_message = as_number(item.get("received")) or time.time()
            events.append(("snapshot", self.snapshot()))
        handler = {"frame": self._frame, "trial": self._trial, "status": self._status, "end": self._end}.get(kind)
        handler = self._qa if kind == "qa" else handler
        if handler is not None:
            events += handler(h, item)
        return events

    def _track_seq(self, topic: str, h: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        seq = as_int(h.get("seq"))
        if seq is None:
            return []
        last = self.last_seq.get(topic)
        self.last_seq[topic] = seq
        if last is not None and seq > last + 1:
            n = seq - last - 1
            self.counts["lost"] += n
            return [self._problem("stream", "lost", f"{n} {topic} message{'s' if n > 1 else ''} lost on the way")]
        return []

    def _frame(self, h: dict[str, Any], item: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        c = self.counts
        c["frames"] += 1
        events = self._track_seq("frame", h)
        p = frame_point(h, as_number(item.get("received")))
        self.tr = as_number(h.get("tr")) or self.tr
        fb = h.get("feedback")
        if isinstance(fb, dict) and as_text(fb.get("target")):
            name = fb["target"][:200]
            self.target = {"name": name, "url": self.stimulus_url(name)}
        added = self._add_point(p) if p["v"] is not None else None
        image = item.get("image")
        if image:
            self.latest = {"v": p["v"], "q": p["q"], "img": image, "fb": p["fb"], "sent": p["sent"]}
            self.film.append({"v": p["v"], "q": p["q"], "img": image})
            self.pending_face = None
        elif item.get("image_raw") is not None:  # sent with the next "face" event, unless a newer face comes first
            self.pending_face = {"v": p["v"], "q": p["q"], "raw": item["image_raw"], "fb": p["fb"], "sent": p["sent"]}
            c["images_skipped"] += 1
        elif not item.get("image_error"):
            c["images_skipped"] += 1
        else:
            events.append(self._problem("stream", "image", f"frame {p['q']}: {item['image_error']}", p["v"]))
        if added == "inside":  # an older volume than the page's last: the page takes the whole state again
            return [*events, ("snapshot", self.snapshot())]
        events.append(("frame", {"p": p, "img": image, "counts": c, "target": self.target}))
        return events

    def flush_face(self, encode: Callable[[Any], str]) -> list[tuple[str, dict[str, Any]]]:
        """The newest face not sent yet (a burst's faces are sent at most so often), encoded now."""
        pending, self.pending_face = self.pending_face, None
        if pending is None:
            return []
        face = {"v": pending["v"], "q": pending["q"], "img": encode(pending["raw"])}
        self.latest = {**face, "fb": pending["fb"], "sent": pending["sent"]}
        self.film.append(face)
        return [("face", {"face": self.latest})]

    def _add_point(self, p: dict[str, Any]) -> str:
        where = self.points.add(p)
        if self.seen.add(p["v"]):
            self.counts["volumes_known"] = self.seen.count
            if p["fd"] is not None and p["fd"] > self.cfg.fd_threshold:
                self.counts["fd_above"] += 1
            if p.get("qa") and p["qa"]["c"]:
                self.counts["censored_seen"] += 1
        self.counts["missing"] = self.seen.missing
        return where

    def _trial(self, h: dict[str, Any], item: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        self.counts["trials"] += 1
        events = self._track_seq("trial", h)
        stim = as_text(h.get("stim_id"))
        window = h.get("window")
        tr = {
            "trial": as_text(h.get("trial"), 60) if isinstance(h.get("trial"), str) else as_int(h.get("trial")),
            "q": as_int(h.get("seq")),
            "v": as_int(h.get("volume")),
            "stim_id": stim,
            "trial_type": as_text(h.get("trial_type"), 60),
            "onset": as_number(h.get("onset")),
            "window": [as_int(w) for w in window] if isinstance(window, list) and len(window) == 2 else None,
            "fb": _feedback(h.get("feedback")),
            "img": item.get("image"),
            "stim_url": self.stimulus_url(stim) if stim else None,
        }
        self.trials.append(tr)
        if tr["v"] is not None:
            self.trial_points.append({"v": tr["v"], "fb": tr["fb"]})
        if item.get("image_error"):
            events.append(self._problem("stream", "image", f"trial {tr['q']}: {item['image_error']}", tr["v"]))
        events.append(("trial", {"trial": tr, "counts": self.counts}))
        return events

    def _qa(self, h: dict[str, Any], item: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """The QA maps: the newest replaces the one before (the page shows one)."""
        events = self._track_seq("qa", h)
        slices = h.get("slices")
        maps = {
            "v": as_int(h.get("volume")),
            "q": as_int(h.get("seq")),
            "kind": as_text(h.get("kind"), 40),
            "tsnr_mean": as_number(h.get("tsnr_mean")),
            "slices": [as_int(z) for z in slices[:64]] if isinstance(slices, list) else [],
            "img": item.get("image"),
        }
        if item.get("image_error"):
            return [*events, self._problem("stream", "image", f"qa maps {maps['q']}: {item['image_error']}", maps["v"])]
        self.counts["qa_maps"] += 1
        self.qa_maps = maps
        events.append(("qa", {"maps": maps, "counts": self.counts}))
        return events

    def _status(self, h: dict[str, Any], item: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        c = self.counts
        uptime = as_number(h.get("uptime_s"))
        if uptime is not None and self.last_uptime is not None and uptime + 0.5 < self.last_uptime:
            c["restarts"] += 1
        self.last_uptime = uptime if uptime is not None else self.last_uptime
        known = ("run_id", "state", "uptime_s", "volumes", "failed", "last_volume", "motion", "fd", "trials")
        known += ("trials_pending", "target", "malformed_inbound", "seq", "schema", "discarded", "condition", "qa")
        st = {
            "state": as_text(h.get("state"), 40),
            "uptime_s": uptime,
            "volumes": as_int(h.get("volumes")),
            "failed": as_int(h.get("failed")),
            "discarded": as_int(h.get("discarded")),
            "last_volume": as_int(h.get("last_volume")),
            "motion": _motion(h.get("motion")),
            "fd": as_number(h.get("fd")),
            "trials": as_int(h.get("trials")),
            "trials_pending": as_int(h.get("trials_pending")),
            "malformed_inbound": as_int(h.get("malformed_inbound")),
            "condition": as_text(h.get("condition"), 20),
            "received": as_number(item.get("received")),
        }
        target = h.get("target")
        if isinstance(target, dict):
            name = as_text(target.get("stim_id")) or as_text(target.get("image")) or as_text(target.get("kind"))
            if name:
                self.target = {"name": name, "url": self.stimulus_url(name) if target.get("stim_id") else None}
        elif target is None and "target" in h:
            self.target = None
        if "qa" in h:
            self.qa = qa_counts(h.get("qa"))
        self.status = st
        self.status_extra = scalars({k: v for k, v in h.items() if k not in known}, limit=20)
        c["ok"], c["failed"], c["trials_pending"] = st["volumes"], st["failed"], st["trials_pending"]
        if st["discarded"] is not None:
            c["discarded"] = st["discarded"]
        self._seen()
        return [
            ("status", {"status": st, "extra": self.status_extra, "counts": c, "target": self.target, "qa": self.qa})
        ]

    def _end(self, h: dict[str, Any], item: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        summary = h.get("summary") if isinstance(h.get("summary"), dict) else {}
        c = self.counts
        c["ok"] = as_int(summary.get("volumes_ok")) if as_int(summary.get("volumes_ok")) is not None else c["ok"]
        c["failed"] = (
            as_int(summary.get("volumes_failed")) if summary.get("volumes_failed") is not None else c["failed"]
        )
        c["duplicates_ignored"] = as_int(summary.get("duplicates_ignored"))
        if as_int(summary.get("volumes_discarded")) is not None:
            c["discarded"] = as_int(summary.get("volumes_discarded"))
        self._seen()
        self.end = {
            "reason": as_text(h.get("reason"), 120),
            "received": as_number(item.get("received")),
            "summary": scalars(summary, limit=60),
        }
        return [("end", {"end": self.end, "counts": c})]

    def _seen(self) -> None:
        """Volumes the service has taken: ok + failed (intake problems included) + discarded."""
        c = self.counts
        if c["ok"] is not None and c["failed"] is not None:
            c["seen"] = c["ok"] + c["failed"] + (c["discarded"] or 0)

    # --- the run's records (the run folder) ---------------------------------------------------------------

    def _records(self, item: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        if item.get("run_id") != self.run_id or self.run_id is None:
            return []
        events: list[tuple[str, dict[str, Any]]] = []
        appended: list[dict[str, Any]] = []
        resync = False
        c = self.counts
        for rec in item.get("volumes") or ():
            if not isinstance(rec, dict):
                continue
            status = rec.get("status")
            if status in ("ok", "discarded"):  # a discarded (dummy) volume has its motion
                p = record_point(rec)
                if p["v"] is None:
                    continue
                where = self._add_point(p)
                if where == "end":
                    appended.append(p)
                elif where == "inside":
                    resync = True
            elif status in ("skipped", "error"):
                events.append(self._record_problem(rec))
        for rec in item.get("flips") or ():
            if not isinstance(rec, dict):
                continue
            e2e, flip, sent = as_number(rec.get("e2e_s")), as_number(rec.get("flip_time")), as_number(rec.get("sent"))
            c["flips"] += 1
            if e2e is None:
                continue
            f = {"v": as_int(rec.get("volume")), "e2e": round(1000 * e2e, 3)}
            if flip is not None and sent is not None:
                f["sf"] = round(1000 * (flip - sent), 3)
            self.flips.append(f)
            appended_flip = events and events[-1][0] == "flips"
            if appended_flip:
                events[-1][1]["flips"].append(f)
            else:
                events.append(("flips", {"flips": [f], "counts": c}))
        if resync:
            return [("snapshot", self.snapshot())]
        if appended:
            events.append(("points", {"points": appended, "counts": c}))
        return events

    def _record_problem(self, rec: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        c = self.counts
        err = as_text(rec.get("error"), 300) or ""
        if rec.get("status") == "error":
            c["errors"] += 1
            return self._problem("volume", "error", err, as_int(rec.get("volume")), as_int(rec.get("acquisition")))
        kind = err.split(":", 1)[0].strip()
        c["skipped"] += 1
        if kind in c["intake"]:
            c["intake"][kind] += 1
        return self._problem(
            "intake", kind or "skipped", err, None, as_int(rec.get("acquisition")), as_text(rec.get("file"))
        )

    def _problem(
        self,
        source: str,
        kind: str,
        text: str,
        volume: int | None = None,
        acquisition: int | None = None,
        file: str | None = None,
    ) -> tuple[str, dict[str, Any]]:
        self._problem_id += 1
        pr = {"id": self._problem_id, "t": round(time.time(), 3), "src": source, "kind": kind[:40], "text": text}
        pr.update(v=volume, acq=acquisition, file=file)
        self.problems.append(pr)
        return ("problem", {"problem": pr, "counts": self.counts})

    # --- the whole state ------------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything the page shows, as one JSON-able dict."""
        return {
            "run_id": self.run_id,
            "counts": self.counts,
            "status": self.status,
            "status_extra": self.status_extra,
            "end": self.end,
            "target": self.target,
            "qa": self.qa,
            "qa_maps": self.qa_maps,
            "tr": self.tr,
            "points": self.points.list(),
            "trial_points": list(self.trial_points),
            "flips": list(self.flips),
            "trials": list(self.trials),
            "film": list(self.film),
            "latest": self.latest,
            "problems": list(self.problems),
            "last_message": self.last_message,
            "runs": self.runs,
            "runs_note": self.runs_note,
            "config": {
                "history": self.cfg.history,
                "fd_threshold": self.cfg.fd_threshold,
                "trials_kept": self.cfg.trials_kept,
                "film": self.cfg.film,
                "problems_kept": self.cfg.problems_kept,
                "stages": [s[0] for s in STAGES],
            },
            "info": self.info,
            "now": time.time(),
        }
