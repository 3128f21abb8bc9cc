"""What a run records, written as it happens: BIDS ``events.tsv`` rows and a plain-text log.

Each row is flushed when it is complete, so Escape or a crash keeps everything shown so far.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from stimulus.schedule import NA, Trial

__all__ = ["EVENT_COLUMNS", "EventRow", "EventsWriter", "RunLog", "assign_response", "bids_stem", "EVENTS_SIDECAR"]

EVENT_COLUMNS = ("onset", "duration", "trial_type", "stim_file", "oneback", "response", "response_time")

#: The ``_events.json`` sidecar describing the columns (BIDS).
EVENTS_SIDECAR = {
    "onset": {"Description": "first frame of the event, seconds from the first scanner trigger", "Units": "s"},
    "duration": {
        "Description": "measured from the event's first frame to the next event's first frame",
        "Units": "s",
    },  # fmt: skip
    "trial_type": {
        "Levels": {
            "train_face": "a training face",
            "test_face": "a test face (repeated across runs)",
            "Fix": "fixation null event or rest",
            "Cue": "the face to imagine is shown",
            "Img": "imagery of stim_file",
            "Feedback": "imagery of stim_file with the live decoded feedback value on screen",
        }
    },
    "stim_file": {"Description": "image shown or imagined, relative to the stimuli/ folder"},
    "oneback": {"Description": "1 when the face repeats the previous one (one-back target)"},
    "response": {"Description": "first response key during the event (until the next event), n/a if none"},
    "response_time": {"Description": "response time from the event's onset", "Units": "s"},
}


def bids_stem(subject: str, session: int, task: str, run: int) -> str:
    """The BIDS file name stem of one run, ``sub-S_ses-SS_task-T_run-RR``."""
    return f"sub-{subject}_ses-{session:02d}_task-{task}_run-{run:02d}"


@dataclass
class EventRow:
    """One measured event: the scheduled trial plus what really happened (times from the first trigger)."""

    trial: Trial
    onset: float
    duration: float = float("nan")
    response: str = NA
    response_time: float | None = None

    def cells(self) -> list[str]:
        """The row's cells in :data:`EVENT_COLUMNS` order, times with 4 decimals, ``n/a`` for no response."""
        rt = NA if self.response_time is None else f"{self.response_time:.4f}"
        return [
            f"{self.onset:.4f}",
            f"{self.duration:.4f}",
            self.trial.trial_type,
            self.trial.stim_file,
            str(self.trial.oneback),
            self.response,
            rt,
        ]


def assign_response(row: EventRow, key: str, t: float) -> bool:
    """Record the first response ``key`` at ``t`` (s from trigger) on ``row``; False if it already has one."""
    if row.response != NA:
        return False
    row.response, row.response_time = key, max(0.0, t - row.onset)
    return True


class EventsWriter:
    """Append-only BIDS events file: the header at creation, one flushed line per completed event."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f: TextIO | None = open(self.path, "w", encoding="utf-8", newline="")
        self._f.write("\t".join(EVENT_COLUMNS) + "\n")
        self._f.flush()
        self.rows = 0
        sidecar = self.path.with_suffix("").with_suffix(".json")
        sidecar.write_text(json.dumps(EVENTS_SIDECAR, indent=2) + "\n", encoding="utf-8")

    def write(self, row: EventRow) -> None:
        """Append the row's line and flush it, so the file holds every completed event; ValueError once closed."""
        if self._f is None:
            raise ValueError(f"{self.path} is closed")
        self._f.write("\t".join(row.cells()) + "\n")
        self._f.flush()
        self.rows += 1

    def close(self) -> None:
        """Close the file; later calls do nothing."""
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> EventsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RunLog:
    """A tab-separated log: wall-clock time, seconds from the first trigger (or n/a), what happened."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f: TextIO | None = open(self.path, "a", encoding="utf-8")
        self.t0: float | None = None

    def __call__(self, what: str, t: float | None = None) -> None:
        """Append one line: wall-clock time, seconds from the first trigger (of ``t``, else of now), ``what``."""
        if self._f is None:
            return
        now = time.time()
        rel = NA if self.t0 is None else f"{(now if t is None else t) - self.t0:.4f}"
        self._f.write(f"{now:.4f}\t{rel}\t{what}\n")
        self._f.flush()

    def close(self) -> None:
        """Close the log; later lines and calls are ignored."""
        if self._f is not None:
            self._f.close()
            self._f = None
