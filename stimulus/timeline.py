"""What the experiment shows now, and what it measured: plain functions driven by flip times (no window).

:meth:`Timeline.trial_at` answers "which scheduled event does the next frame belong to" with frame-locked
rounding (an event starts on the first frame whose flip is within half a frame of its onset), so durations
are whole numbers of frames. :class:`RunRecorder` turns the sequence of flips into measured events: an event's
onset is the flip time of its first frame, its duration lasts to the first flip without it; responses go to
the last event that started before them; rows are written once the next event has started.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence

import numpy as np

from stimulus.records import EventRow, EventsWriter, assign_response
from stimulus.schedule import Trial

__all__ = ["Timeline", "RunRecorder"]


class Timeline:
    """The scheduled trials of a run, queried by time from the first trigger."""

    def __init__(self, trials: Sequence[Trial], frame_period: float) -> None:
        self.trials = list(trials)
        self.half = frame_period / 2.0
        self._onsets = [t.onset for t in self.trials]
        if np.any(np.diff(self._onsets) < 0):
            raise ValueError("trials must be sorted by onset")

    def trial_at(self, t: float) -> int | None:
        """Index of the trial on screen for a flip at ``t`` (s from trigger), or None (fixation between)."""
        i = bisect.bisect_right(self._onsets, t + self.half) - 1
        if i < 0:
            return None
        return i if t + self.half < self.trials[i].end else None

    def upcoming(self, t: float) -> int | None:
        """Index of the next trial whose onset is after ``t``, or None."""
        i = bisect.bisect_right(self._onsets, t + self.half)
        return i if i < len(self.trials) else None


class RunRecorder:
    """Measured events from flips: call :meth:`flipped` after every flip, :meth:`respond` for every key.

    ``on_onset(trial, onset)`` is called at each event's first frame (to send the ``onset`` message and let an
    emulated participant respond). ``grace`` seconds after an event's successor started, its row is final.
    """

    def __init__(
        self,
        trials: Sequence[Trial],
        writer: EventsWriter,
        on_onset: Callable[[Trial, float], None] | None = None,
        grace: float = 0.1,
    ) -> None:
        self.trials = list(trials)
        self.writer = writer
        self.on_onset = on_onset
        self.grace = grace
        self.showing: int | None = None
        self.open: list[EventRow] = []
        self.done: list[EventRow] = []

    def flipped(self, index: int | None, t: float) -> None:
        """A flip at ``t`` (s from trigger) showed trial ``index`` (None: fixation between trials)."""
        if index == self.showing:
            self._finalise(t)
            return
        if self.showing is not None and self.open:
            self.open[-1].duration = t - self.open[-1].onset
        self.showing = index
        if index is not None:
            row = EventRow(self.trials[index], onset=t)
            self.open.append(row)
            if self.on_onset is not None:
                self.on_onset(row.trial, t)
        self._finalise(t)

    def respond(self, key: str, t: float) -> EventRow | None:
        """Give a response at ``t`` to the last event that started at or before ``t`` (first response only)."""
        for row in reversed(self.open):
            if row.onset <= t:
                return row if assign_response(row, key, t) else None
        return None

    def _finalise(self, now: float) -> None:
        while len(self.open) > 1 and now >= self.open[1].onset + self.grace:
            self._write(self.open.pop(0))

    def close(self, t: float) -> list[EventRow]:
        """End of run (or abort) at ``t``: the event on screen ends now; every open row is written."""
        if self.showing is not None and self.open:
            self.open[-1].duration = t - self.open[-1].onset
            self.showing = None
        while self.open:
            self._write(self.open.pop(0))
        return self.done

    def _write(self, row: EventRow) -> None:
        self.writer.write(row)
        self.done.append(row)
