"""The four LSL streams of a run, their channels, units and metadata, and the samples a message makes.

=====================  ===========  =========================================================================
stream                 rate         channels
=====================  ===========  =========================================================================
``fmriface-feedback``  per volume   ``value`` (the frame's ``feedback.value``; NaN while there is none)
``fmriface-latent``    per trial    ``latent_0`` ... ``latent_{L-1}`` (the trial's decoded latent)
``fmriface-motion``    per volume   six motion parameters (mm, deg), ``fd`` (mm), the QA metrics of the frame
                                    header's ``qa`` (NaN where not yet defined) and ``censored`` (0 or 1)
``fmriface-markers``   irregular    one string: a JSON object (``run_start``, ``run_end``, ``trial``,
                                    ``censored``)
=====================  ===========  =========================================================================

Every stream is irregular (a volume may fail or be censored); its description holds its channels (label, unit,
type) and ``fmriface`` (the run id, the bundle's manifest SHA-256, the software version and what the timestamps
mean). Nothing about the patient is in it: the service sends none.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["STREAM_NAMES", "MOTION_CHANNELS", "RunStreams", "lsl_config", "motion_sample", "feedback_sample"]

STREAM_NAMES = ("fmriface-feedback", "fmriface-latent", "fmriface-motion", "fmriface-markers")
#: (label, unit) of the motion stream's channels, in order.
MOTION_CHANNELS = (
    ("trans_x", "mm"),
    ("trans_y", "mm"),
    ("trans_z", "mm"),
    ("rot_x", "deg"),
    ("rot_y", "deg"),
    ("rot_z", "deg"),
    ("fd", "mm"),
    ("dvars", "scanner units"),
    ("std_dvars", "ratio"),
    ("global_signal", "scanner units"),
    ("outlier_fraction", "fraction"),
    ("slice_z", "robust z"),
    ("censored", "bool"),
)
_QA_KEYS = ("dvars", "std_dvars", "global_signal", "outlier_fraction", "slice_z")
TIMESTAMPS = (
    "the volume's file was ready (frame header t.file_ready, the file's last write on the service's wall clock) "
    "mapped onto this machine's LSL clock; a trial: its last volume's"
)


def lsl_config(session_id: str = "fmriface", machine_only: bool = True) -> str:
    """The text of an ``lsl_api.cfg``: discovery within this machine (ResolveScope ``machine``), IPv4 only, the
    loopback as the one known peer, and a session id that keeps other sessions' streams apart."""
    scope = "machine" if machine_only else "site"
    return (
        f"[ports]\nIPv6 = disable\n\n[multicast]\nResolveScope = {scope}\n\n"
        f"[lab]\nKnownPeers = {{127.0.0.1}}\nSessionID = {session_id}\n"
    )


def _num(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else math.nan


def feedback_sample(header: dict[str, Any]) -> list[float]:
    """The feedback stream's sample of a frame: its value, NaN without one (no target, a disabled plugin)."""
    return [_num((header.get("feedback") or {}).get("value"))]


def motion_sample(header: dict[str, Any]) -> list[float]:
    """The motion stream's sample of a frame: motion, FD, the QA metrics (NaN where null) and censored."""
    motion = list(header.get("motion") or [])[:6]
    qa = header.get("qa") or {}
    out = [_num(v) for v in motion + [math.nan] * (6 - len(motion))]
    out.append(_num(header.get("fd")))
    out.extend(_num(qa.get(k)) for k in _QA_KEYS)
    out.append(1.0 if qa.get("censored") else 0.0)
    return out


def marker(event: str, **fields: Any) -> str:
    """A marker string: one JSON object, ``event`` first."""
    return json.dumps({"event": event, **fields}, separators=(",", ":"), default=str)


@dataclass
class RunStreams:
    """The outlets of one run (made when its first message arrives; the latent's once its size is known).

    Parameters
    ----------
    run_id : str
    bundle_sha256 : str
        The bundle's manifest SHA-256 (``--bundle``), or empty when not known.
    latent_size : int
        0: made from the first trial that carries its latent.
    """

    run_id: str
    bundle_sha256: str = ""
    latent_size: int = 0
    outlets: dict[str, Any] = field(default_factory=dict)

    def open(self) -> RunStreams:
        """Make the feedback, motion and markers outlets (and the latent's when its size is known)."""
        import pylsl

        self.outlets["fmriface-feedback"] = self._outlet("fmriface-feedback", "Feedback", [("value", "a.u.")])
        self.outlets["fmriface-motion"] = self._outlet("fmriface-motion", "Motion", list(MOTION_CHANNELS))
        self.outlets["fmriface-markers"] = self._outlet(
            "fmriface-markers", "Markers", [("marker", "")], fmt=pylsl.cf_string
        )
        if self.latent_size:
            self.latent_outlet(self.latent_size)
        return self

    def latent_outlet(self, size: int) -> Any:
        """The latent stream's outlet (made on first use with ``size`` channels)."""
        if "fmriface-latent" not in self.outlets:
            self.latent_size = size
            channels = [(f"latent_{i}", "a.u.") for i in range(size)]
            self.outlets["fmriface-latent"] = self._outlet("fmriface-latent", "Latent", channels)
        return self.outlets["fmriface-latent"]

    def _outlet(self, name: str, kind: str, channels: list[tuple[str, str]], fmt: Any = None) -> Any:
        import pylsl

        from fmriface import __version__

        fmt = pylsl.cf_float32 if fmt is None else fmt
        info = pylsl.StreamInfo(name, kind, len(channels), pylsl.IRREGULAR_RATE, fmt, f"fmriface-{self.run_id}-{name}")
        desc = info.desc()
        chans = desc.append_child("channels")
        for label, unit in channels:
            ch = chans.append_child("channel")
            ch.append_child_value("label", label)
            ch.append_child_value("unit", unit)
            ch.append_child_value("type", kind)
        meta = desc.append_child("fmriface")
        meta.append_child_value("run_id", self.run_id)
        meta.append_child_value("bundle_sha256", self.bundle_sha256 or "unknown")
        meta.append_child_value("software", f"fmriface {__version__}")
        meta.append_child_value("timestamps", TIMESTAMPS)
        return pylsl.StreamOutlet(info, chunk_size=1, max_buffered=360)

    def close(self) -> None:
        """Drop every outlet (inlets see the streams end)."""
        self.outlets.clear()
