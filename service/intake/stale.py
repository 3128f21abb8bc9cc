"""Which files are an earlier run's: written before the service started, so not the live run.

A scanner's export folder keeps earlier runs. Following one of them as if it were live decodes hours-old data and
then ignores the real run, so intake follows only files written after the service started (a small tolerance
allowed), unless told to take an earlier run (``[watcher] take_earlier``, ``serve --take-earlier-run``) or the
run being resumed is that series. A file's time is its own: its last write (``st_mtime``) and, for DICOM, its
acquisition date and time. The files set aside are reported once per series, with their number and age.

This module holds the rule and the bookkeeping (no threads, no folder access): :class:`StaleFiles`, and
:func:`acquired_at`, which finds a DICOM file's acquisition time in its first bytes without parsing it.
"""

from __future__ import annotations

import calendar
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["StaleFiles", "acquired_at", "age_text", "CLOCK_SKEW_S"]

#: The scanner console's clock and this host's may differ; a DICOM acquisition time is also written without a
#: time zone. A file is an earlier run's by its acquisition time only when that is this much before the start.
CLOCK_SKEW_S = 300.0

_TAGS = {  # (group, element) little endian -> VR
    "date": (b"\x08\x00\x22\x00", b"DA"),
    "time": (b"\x08\x00\x32\x00", b"TM"),
    "datetime": (b"\x08\x00\x2a\x00", b"DT"),
}
_DIGITS = re.compile(rb"^\s*(\d{8})?(\d{2})(\d{2})?(\d{2})?(?:\.\d*)?")


def _element(raw: bytes, tag: bytes, vr: bytes, limit: int) -> bytes | None:
    """The value of a top-level element of group 0008 in little-endian DICOM, explicit or implicit VR."""
    at = raw.find(tag, 132, limit)
    while at >= 0:
        if raw[at + 4 : at + 6] == vr:  # explicit VR: 2-byte length
            n = int.from_bytes(raw[at + 6 : at + 8], "little")
            start = at + 8
        else:  # implicit VR: 4-byte length
            n = int.from_bytes(raw[at + 4 : at + 8], "little")
            start = at + 8
        if 0 < n <= 32:
            return raw[start : start + n]
        at = raw.find(tag, at + 1, limit)
    return None


def acquired_at(raw: bytes, limit: int = 65536) -> float | None:
    """When a DICOM file says it was acquired, in ``time.time()`` seconds; None when it does not say.

    AcquisitionDateTime, else AcquisitionDate with AcquisitionTime, found in the first ``limit`` bytes (group 0008
    comes first). DICOM gives these in the scanner's local time without a zone (a writer may use UTC): the later of
    the two readings is returned, so a file is never taken for older than it is.
    """
    text = None
    value = _element(raw, *_TAGS["datetime"], limit)
    if value is not None:
        text = value
    else:
        day, clock = _element(raw, *_TAGS["date"], limit), _element(raw, *_TAGS["time"], limit)
        if day is not None and clock is not None:
            text = day.strip() + clock.strip()
    if text is None:
        return None
    m = _DIGITS.match(text)
    if m is None or m.group(1) is None:
        return None
    stamp = b"".join((m.group(1), m.group(2), m.group(3) or b"00", m.group(4) or b"00")).decode()
    try:
        fields = time.strptime(stamp, "%Y%m%d%H%M%S")
    except ValueError:
        return None
    return max(time.mktime(fields), float(calendar.timegm(fields)))


def age_text(seconds: float) -> str:
    """``7384`` -> ``"2 h 03 min"``; ``95`` -> ``"1 min 35 s"``; ``4.2`` -> ``"4.2 s"``."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    return f"{hours // 24} days {hours % 24} h"


@dataclass
class _Series:
    label: str
    files: int = 0
    newest: float = 0.0
    oldest: float = float("inf")
    sample: Path | None = None
    reported: bool = False


@dataclass
class StaleFiles:
    """The rule (a file written before ``since``) and the files it set aside, per series.

    Parameters
    ----------
    since : float or None
        The service's start (``time.time()``); None: every file is taken (no rule).
    tolerance_s : float
        A file last written up to this long before ``since`` still counts as written after it.
    """

    since: float | None = None
    tolerance_s: float = 2.0
    series: dict[str, _Series] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        """Whether files are judged at all."""
        return self.since is not None

    def before_start(self, written: float, acquired: float | None = None, present: bool = True) -> bool:
        """Whether a file last written at ``written`` (acquired at ``acquired``, when known) is an earlier run's.

        ``present``: the file was in the folder at the start, so its time is only asked whether it was still being
        written then (``tolerance_s``). A file that came later is new by that alone unless its time is older than
        clocks can be apart (``CLOCK_SKEW_S``: a file server's clock behind this host's must not hide the live run;
        an old file moved in is still caught).
        """
        if self.since is None:
            return False
        skew = max(self.tolerance_s, CLOCK_SKEW_S)
        if written < self.since - (self.tolerance_s if present else skew):
            return True
        return acquired is not None and acquired < self.since - skew

    def add(self, uid: str, label: str, path: Path, written: float) -> bool:
        """Count one file of series ``uid`` set aside; True when the series is new here."""
        entry = self.series.get(uid)
        new = entry is None
        if entry is None:
            entry = self.series[uid] = _Series(label=label, sample=path)
        entry.files += 1
        entry.newest, entry.oldest = max(entry.newest, written), min(entry.oldest, written)
        return new

    def unreported(self) -> list[tuple[str, Path | None, str]]:
        """``(uid, a file, reason)`` for each series set aside and not yet reported, newest first; marks them."""
        out = []
        for uid, entry in sorted(self.series.items(), key=lambda kv: -kv[1].newest):
            if entry.reported:
                continue
            entry.reported = True
            out.append((uid, entry.sample, self.reason(entry)))
        return out

    def reason(self, entry: _Series) -> str:
        """Why a series is not followed: its files, their age at the start, and how to take it anyway."""
        since = self.since if self.since is not None else time.time()
        files = f"{entry.files} file{'s' if entry.files != 1 else ''}"
        age = age_text(since - entry.newest)
        span = "" if entry.files == 1 else f", the oldest {age_text(since - entry.oldest)}"
        return (
            f"{entry.label}: {files} written before serve started (the newest {age} before it{span}): an earlier "
            "run, not followed; to decode it, start serve with --take-earlier-run ([watcher] take_earlier = true)"
        )
