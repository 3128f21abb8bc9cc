"""Series selection and volume ordering for the watcher (no threads, no I/O: plain state machines).

:class:`SeriesFilter` decides which series intake follows: a configured series number, or the first EPI series
(derived, MoCo, phase and localizer series are skipped by ImageType / SeriesDescription). :class:`Sequencer`
hands volumes on in acquisition order, holds early arrivals until the gap before them fills, and reports gaps,
duplicates, late arrivals and matrix mismatches as :class:`~service.volume.IntakeEvent`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from service.volume import IntakeEvent, Volume

__all__ = ["SeriesFilter", "Sequencer", "series_label"]


def series_label(number: int | None, description: str) -> str:
    """How intake names a series in its reports: ``series 7 (ep2d_bold)``."""
    return f"series {number if number is not None else '?'} ({description or 'no description'})"


@dataclass
class SeriesFilter:
    """Which series to follow: ``number`` (SeriesNumber) or, when None, the first EPI series offered."""

    number: int | None = None
    chosen: str | None = None
    chosen_label: str = ""
    prefer: str | None = None  # while catching up at start: the run UID of the newest EPI series (on the grid)
    prefer_reason: str = "newest EPI series present"
    prefer_why: dict[str, str] = field(default_factory=dict)  # run UID -> why it is not the preferred one
    stale: dict[str, str] = field(default_factory=dict)  # run UID of an earlier run -> why its new files are refused
    _reported: set[str] = field(default_factory=set)

    def offer(
        self, uid: str, number: int | None, description: str, exclusion: str | None, path, aliases: tuple = ()
    ) -> tuple[bool, list[IntakeEvent]]:
        """Whether a file of series ``uid`` is taken, and the events to report (each series reported once).

        ``uid`` identifies the run (every volume of a Siemens XA MFSPLIT run shares one); ``aliases`` are other
        series numbers a configured ``number`` may call it by (:attr:`DicomImage.series_numbers`).
        """
        label = series_label(number, description)
        if uid in self.stale and uid != self.chosen:  # a run that began before the service started
            return False, self._once(uid, path, f"{label} {self.stale[uid]}")
        if self.chosen is not None:
            if uid == self.chosen:
                return True, []
            if uid in self.prefer_why:  # present at start, and passed over then
                reason = f"{label} {self.prefer_why[uid]} ({self.prefer_reason})"
            elif exclusion is None and self.number is None:
                reason = (
                    f"{label} is a new EPI series while {self.chosen_label} is followed (a run restarted on the "
                    "console, or the next run): ignored; start serve again for it, or set [watcher] series"
                )
            else:
                reason = f"{label} is not the series being followed" + (f": {exclusion}" if exclusion else "")
            return False, self._once(uid, path, reason)
        if self.number is not None:
            if number != self.number and self.number not in aliases:
                return False, self._once(uid, path, f"{label} is not the configured series {self.number}")
        elif exclusion is not None:
            return False, self._once(uid, path, f"{label} is not an EPI series: {exclusion}")
        elif self.prefer is not None and uid != self.prefer:
            why = self.prefer_why.get(uid, f"is not the {self.prefer_reason}")
            return False, self._once(uid, path, f"{label} {why} ({self.prefer_reason})")
        self.chosen, self.chosen_label = uid, label
        how = (
            "configured"
            if self.number is not None
            else self.prefer_reason
            if self.prefer is not None
            else "first EPI series"
        )
        return True, [IntakeEvent("series", f"following {label} ({how})", path=path)]

    def _once(self, uid: str, path, reason: str) -> list[IntakeEvent]:
        if uid in self._reported:
            return []
        self._reported.add(uid)
        return [IntakeEvent("ignored", reason, path=path)]


@dataclass
class Sequencer:
    """Acquisition-ordered hand-off with gap, duplicate and mismatch reports.

    Parameters
    ----------
    first_acquisition : int or None
        Acquisition number of index 0; None: 0 if the first volume seen is numbered 0, else 1.
    reorder_window : int
        A gap is declared once this many later volumes wait behind it ...
    gap_timeout_s : float
        ... or once the oldest waiting volume has waited this long.
    """

    first_acquisition: int | None = None
    reorder_window: int = 2
    gap_timeout_s: float = 3.0
    next_expected: int | None = None
    shape: tuple[int, int, int] | None = None
    handed: dict[int, tuple[str, str]] = field(default_factory=dict)  # acquisition -> (sha256, path)
    missing: set[int] = field(default_factory=set)
    pending: dict[int, tuple[Volume, float]] = field(default_factory=dict)
    refused: set[int] = field(default_factory=set)  # acquisitions reported already (mismatch): never a gap too

    def refuse(self, acquisition: int) -> None:
        """An acquisition that arrived and was refused (reported as such): counted once, so never declared missing."""
        if self.next_expected is None or acquisition >= self.next_expected:
            self.refused.add(acquisition)

    def push(self, vol: Volume, now: float | None = None) -> list[Volume | IntakeEvent]:
        """Take one volume; return what can be handed on now (volumes in order, and events)."""
        now = time.time() if now is None else now
        acq = vol.acquisition
        if self.next_expected is None:
            base = self.first_acquisition if self.first_acquisition is not None else (0 if acq == 0 else 1)
            self.first_acquisition, self.next_expected = base, base
        if self.shape is not None and vol.shape != self.shape:
            reason = f"matrix {vol.shape} differs from the series' matrix {self.shape}; volume refused"
            self.refuse(acq)
            return [IntakeEvent("mismatch", reason, path=vol.path, acquisition=acq)]
        earlier = self.handed.get(acq) or (
            (self.pending[acq][0].sha256, self.pending[acq][0].path.name) if acq in self.pending else None
        )
        if earlier is not None:
            same = "same content" if earlier[0] == vol.sha256 else "different content"
            reason = f"acquisition {acq} seen again ({same} as {earlier[1]}); the second copy is not handed on"
            return [IntakeEvent("duplicate", reason, path=vol.path, acquisition=acq)]
        if acq < self.next_expected:
            why = "after its gap was reported" if acq in self.missing else "before the first acquisition"
            return [
                IntakeEvent("late", f"acquisition {acq} arrived {why}; not handed on", path=vol.path, acquisition=acq)
            ]
        if self.shape is None:
            self.shape = vol.shape
        self.pending[acq] = (vol, now)
        return self.flush(now)

    def flush(self, now: float | None = None) -> list[Volume | IntakeEvent]:
        """Hand on what is in order; declare gaps that waited long enough."""
        now = time.time() if now is None else now
        out: list[Volume | IntakeEvent] = []
        while True:
            while self.next_expected in self.refused:  # reported when it came: not a gap
                self.refused.discard(self.next_expected)
                self.next_expected += 1
            if not self.pending:
                break
            if self.next_expected in self.pending:
                vol, _ = self.pending.pop(self.next_expected)
                vol.index = vol.acquisition - int(self.first_acquisition or 0)
                self.handed[vol.acquisition] = (vol.sha256, vol.path.name)
                self.next_expected += 1
                out.append(vol)
                continue
            oldest = min(t for _, t in self.pending.values())
            if len(self.pending) < self.reorder_window and now - oldest < self.gap_timeout_s:
                break
            resume = min(self.pending)
            gap = tuple(a for a in range(self.next_expected, resume) if a not in self.refused)
            self.refused.difference_update(range(self.next_expected, resume))
            self.missing.update(gap)
            contiguous = gap[-1] - gap[0] == len(gap) - 1
            span = f"{gap[0]}" if len(gap) == 1 else f"{gap[0]}-{gap[-1]}" if contiguous else ",".join(map(str, gap))
            reason = f"acquisition{'s' if len(gap) > 1 else ''} {span} never arrived (resuming at {resume})"
            out.append(IntakeEvent("gap", reason, acquisition=gap[0], acquisitions=gap))
            self.next_expected = resume
        return out

    def due(self) -> float | None:
        """When the oldest waiting volume times out (time.time() seconds), or None."""
        if not self.pending:
            return None
        return min(t for _, t in self.pending.values()) + self.gap_timeout_s
