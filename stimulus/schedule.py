"""Run schedules of the face experiment: what is shown when, as plain data (no window).

A run is a list of :class:`Trial` rows with onsets in seconds from the first scanner trigger. Four run types:

``train`` / ``test`` (BIDS task ``faces``)
    a face every ``soa`` seconds for ``face_duration`` seconds, a fixation cross in between; about
    ``oneback_fraction`` of the faces are immediately repeated (``oneback`` = 1, the one-back task) and about
    ``fix_fraction`` of the slots are fixation null events (``Fix``).
``imagery`` (task ``imagery``)
    per trial: the face to imagine is cued (``Cue``), then ``imagery_duration`` seconds of imagery (``Img``,
    ``stim_file`` = the imagined face), then ``imagery_rest`` seconds of fixation (``Fix``).
``feedback`` (task ``feedback``)
    per block: the target face is cued (``Cue``), then ``feedback_duration`` seconds of imagery with the live
    feedback value on screen (``Feedback``), then ``feedback_rest`` seconds of fixation (``Fix``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "RUN_TYPES",
    "TASKS",
    "Timing",
    "Trial",
    "faces_run",
    "imagery_run",
    "feedback_run",
    "run_duration",
    "spread_without_neighbours",
]

RUN_TYPES = ("train", "test", "imagery", "feedback")
#: BIDS task label of each run type.
TASKS = {"train": "faces", "test": "faces", "imagery": "imagery", "feedback": "feedback"}
NA = "n/a"


@dataclass(frozen=True)
class Timing:
    """Durations (seconds) of the paradigm; the paper's values by default."""

    soa: float = 3.0
    face_duration: float = 1.0
    lead_in: float = 6.0
    lead_out: float = 12.0
    oneback_fraction: float = 0.1
    fix_fraction: float = 0.1
    cue_duration: float = 2.0
    imagery_duration: float = 12.0
    imagery_rest: float = 6.0
    feedback_duration: float = 20.0
    feedback_rest: float = 10.0

    def __post_init__(self) -> None:
        for name in ("soa", "face_duration", "cue_duration", "imagery_duration", "feedback_duration"):
            if getattr(self, name) <= 0:
                raise ValueError(f"timing.{name} must be > 0, got {getattr(self, name)}")
        for name in ("lead_in", "lead_out", "imagery_rest", "feedback_rest"):
            if getattr(self, name) < 0:
                raise ValueError(f"timing.{name} must be >= 0, got {getattr(self, name)}")
        if self.face_duration >= self.soa:
            raise ValueError(
                f"timing.face_duration ({self.face_duration}) must be shorter than timing.soa ({self.soa})"
            )
        for name in ("oneback_fraction", "fix_fraction"):
            if not 0.0 <= getattr(self, name) < 0.5:
                raise ValueError(f"timing.{name} must be in [0, 0.5), got {getattr(self, name)}")


@dataclass(frozen=True)
class Trial:
    """One scheduled event; ``onset`` in seconds from the first trigger, ``stim_file`` relative to stimuli/."""

    index: int
    onset: float
    duration: float
    trial_type: str
    stim_file: str = NA
    oneback: int = 0

    @property
    def end(self) -> float:
        """Scheduled end of the event in seconds from the first trigger (``onset + duration``)."""
        return self.onset + self.duration


def spread_without_neighbours(items: Sequence[str], rng: np.random.Generator, tries: int = 200) -> list[str]:
    """A random order of ``items`` in which no item directly follows itself (where that is possible)."""
    items = list(items)
    order = [items[i] for i in rng.permutation(len(items))]
    for _ in range(tries):
        clash = [i for i in range(1, len(order)) if order[i] == order[i - 1]]
        if not clash:
            return order
        i = clash[0]
        j = int(rng.integers(len(order)))
        order[i], order[j] = order[j], order[i]
    return order


def faces_run(stims: Sequence[str], run_type: str, timing: Timing, rng: np.random.Generator) -> list[Trial]:
    """A training or test run showing ``stims`` in the given order, with one-back repeats and Fix events.

    The number of repeats is ``round(oneback_fraction * n)`` and of Fix events ``round(fix_fraction * n)``,
    at random positions; a Fix never separates a repeat from the face it repeats.
    """
    if run_type not in ("train", "test"):
        raise ValueError(f"faces_run builds train or test runs, not {run_type!r}")
    if not stims:
        raise ValueError(f"a {run_type} run needs at least one stimulus")
    n = len(stims)
    trial_type = f"{run_type}_face"
    repeat_after = set(rng.choice(n, size=round(timing.oneback_fraction * n), replace=False).tolist())
    fix_before = set(rng.choice(n, size=round(timing.fix_fraction * n), replace=False).tolist())
    slots: list[tuple[str, str, int]] = []
    for i, stim in enumerate(stims):
        if i in fix_before:
            slots.append(("Fix", NA, 0))
        slots.append((trial_type, stim, 0))
        if i in repeat_after:
            slots.append((trial_type, stim, 1))
    return [
        Trial(k, round(timing.lead_in + k * timing.soa, 6), timing.face_duration, tt, sf, ob)
        for k, (tt, sf, ob) in enumerate(slots)
    ]


def imagery_run(faces: Sequence[str], timing: Timing) -> list[Trial]:
    """An imagery run: for each face, Cue, then Img (``imagery_duration``), then Fix (``imagery_rest``)."""
    trials: list[Trial] = []
    t = timing.lead_in
    for face in faces:
        t = _block(trials, t, face, "Img", timing.imagery_duration, timing.imagery_rest, timing)
    return trials


def feedback_run(target: str, n_blocks: int, timing: Timing) -> list[Trial]:
    """A neurofeedback run: ``n_blocks`` times Cue (the target), Feedback (imagine, live value), Fix."""
    if n_blocks < 1:
        raise ValueError(f"a feedback run needs at least one block, got {n_blocks}")
    trials: list[Trial] = []
    t = timing.lead_in
    for _ in range(n_blocks):
        t = _block(trials, t, target, "Feedback", timing.feedback_duration, timing.feedback_rest, timing)
    return trials


def _block(trials: list[Trial], t: float, face: str, kind: str, dur: float, rest: float, timing: Timing) -> float:
    trials.append(Trial(len(trials), round(t, 6), timing.cue_duration, "Cue", face))
    t += timing.cue_duration
    trials.append(Trial(len(trials), round(t, 6), dur, kind, face))
    t += dur
    if rest > 0:
        trials.append(Trial(len(trials), round(t, 6), rest, "Fix", NA))
        t += rest
    return t


def run_duration(trials: Sequence[Trial], timing: Timing) -> float:
    """Seconds from the first trigger to the end of the run (last event, then ``lead_out`` of fixation)."""
    last = max((t.end for t in trials), default=timing.lead_in)
    return last + timing.lead_out
