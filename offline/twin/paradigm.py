"""The twin's paradigm (docs/paper.md): training, test and imagery runs as BIDS events.

Face runs: after ``lead_in_s``, one trial every ``soa_s`` s, each shown ``stim_s`` s: new faces, Fix events
(``stim_file`` 'n/a') and one-back repeats (the previous face again, ``oneback`` 1). Training runs show each
training face once; test runs show every test face ``test_repeats_per_run`` times (any leftover slots become
Fix). Imagery runs: Img trials of ``imagery_s`` s (``stim_file`` the imagined face) each followed by a Fix of
``imagery_fix_s`` s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from offline.twin.config import ParadigmConfig

__all__ = ["RunPlan", "plan_runs", "face_run_events", "imagery_run_events", "EVENT_COLUMNS"]

EVENT_COLUMNS = ("onset", "duration", "trial_type", "stim_file", "oneback")


@dataclass(frozen=True)
class RunPlan:
    """One run: where it goes in BIDS and what it shows."""

    session: int
    task: str  # "faces" | "imagery"
    run: int  # 1-based within (session, task)
    kind: str  # "train" | "test" | "imagery"
    n_volumes: int
    index: int  # 0-based over the whole data set (seeds the run's noise)


def face_slots(cfg: ParadigmConfig) -> tuple[int, int, int]:
    """(new-face slots, one-back slots, Fix slots) of a face run."""
    n = cfg.slots_per_run
    n_fix = int(round(n * cfg.fix_fraction))
    n_oneback = int(round(n * cfg.oneback_fraction))
    return cfg.new_face_slots, n_oneback, n_fix


def imagery_volumes(cfg: ParadigmConfig) -> int:
    """Volumes of an imagery run."""
    length = cfg.lead_in_s + cfg.imagery_trials_per_run * (cfg.imagery_s + cfg.imagery_fix_s) + cfg.tail_s
    return int(math.ceil(length / cfg.tr))


def plan_runs(cfg: ParadigmConfig) -> list[RunPlan]:
    """All runs, session by session: training runs with the test runs in their middle, then imagery runs."""
    runs: list[RunPlan] = []
    for ses in range(1, cfg.sessions + 1):
        half = (cfg.train_runs_per_session + 1) // 2
        kinds = ["train"] * half + ["test"] * cfg.test_runs_per_session
        kinds += ["train"] * (cfg.train_runs_per_session - half)
        for k, kind in enumerate(kinds, start=1):
            runs.append(RunPlan(ses, "faces", k, kind, cfg.volumes_per_run, len(runs)))
        for k in range(1, cfg.imagery_runs_per_session + 1):
            runs.append(RunPlan(ses, "imagery", k, "imagery", imagery_volumes(cfg), len(runs)))
    return runs


def _no_immediate_repeats(items: list[int], rng: np.random.Generator) -> list[int]:
    """A random order in which no item follows itself (repeats are only the deliberate one-back trials).

    Up to 200 plain shuffles first (so every twin that simulated before keeps its trials), then, where those all
    failed (1 seed in 8 of the demo preset), an order built step by step: each step draws among the items left,
    in proportion to how many copies are left, never the previous one, and takes the most frequent item when
    leaving it for later would force a repeat. That succeeds whenever an order exists at all, that is when no
    item fills more than half the list (rounded up).
    """
    items = list(items)
    for _ in range(200):
        rng.shuffle(items)
        if all(a != b for a, b in zip(items, items[1:])):
            return items
    counts: dict[int, int] = {}
    for it in items:
        counts[it] = counts.get(it, 0) + 1
    left = len(items)
    if left and max(counts.values()) > (left + 1) // 2:
        raise ValueError("cannot order the test trials without accidental repeats; use more test faces")
    out: list[int] = []
    prev = None
    while left:
        top = max((c, k) for k, c in counts.items() if k != prev and c > 0)[1] if left > 1 else None
        if top is not None and counts[top] > left // 2:
            pick = top  # more than half of what is left: it must come now, or two copies would meet
        else:
            keys = sorted(k for k, c in counts.items() if c > 0 and k != prev)
            weights = np.array([counts[k] for k in keys], dtype=float)
            pick = keys[int(rng.choice(len(keys), p=weights / weights.sum()))]
        out.append(pick)
        counts[pick] -= 1
        left -= 1
        prev = pick
    return out


def face_run_events(
    cfg: ParadigmConfig, faces: list[str], rng: np.random.Generator, trial_type: str, shuffle: bool
) -> pd.DataFrame:
    """Events of one face run showing ``faces`` (stim_file values) in order, or shuffled without repeats.

    One-back repeats follow randomly chosen faces; Fix events fill the remaining slots (never between a face
    and its repeat).
    """
    n_new, n_oneback, n_fix = face_slots(cfg)
    if len(faces) > n_new:
        raise ValueError(f"{len(faces)} faces do not fit the {n_new} face slots of a run")
    n_fix += n_new - len(faces)
    order = _no_immediate_repeats(faces, rng) if shuffle else list(faces)
    repeated = set(rng.choice(len(order), size=min(n_oneback, len(order)), replace=False).tolist())
    seq: list[tuple[str, int]] = []
    for i, face in enumerate(order):
        seq.append((face, 0))
        if i in repeated:
            seq.append((face, 1))
    allowed = [g for g in range(len(seq) + 1) if g == len(seq) or seq[g][1] == 0]
    gaps = np.sort(rng.choice(allowed, size=n_fix, replace=True))
    rows = []
    slot = 0
    gi = 0
    for g in range(len(seq) + 1):
        while gi < len(gaps) and gaps[gi] == g:
            rows.append((slot, "Fix", "n/a", 0))
            slot += 1
            gi += 1
        if g < len(seq):
            rows.append((slot, trial_type, seq[g][0], seq[g][1]))
            slot += 1
    onset = [cfg.lead_in_s + s * cfg.soa_s for s, *_ in rows]
    return pd.DataFrame(
        {
            "onset": np.round(onset, 3),
            "duration": cfg.stim_s,
            "trial_type": [r[1] for r in rows],
            "stim_file": [r[2] for r in rows],
            "oneback": np.array([r[3] for r in rows], dtype=int),
        }
    )


def imagery_run_events(cfg: ParadigmConfig, faces: list[str], rng: np.random.Generator) -> pd.DataFrame:
    """Events of one imagery run: Img (imagined face) then Fix, ``imagery_trials_per_run`` times."""
    n = cfg.imagery_trials_per_run
    cycle = [faces[i % len(faces)] for i in range(n)]
    rng.shuffle(cycle)
    rows = []
    for k, face in enumerate(cycle):
        t0 = cfg.lead_in_s + k * (cfg.imagery_s + cfg.imagery_fix_s)
        rows.append((t0, cfg.imagery_s, "Img", face, 0))
        if cfg.imagery_fix_s > 0:
            rows.append((t0 + cfg.imagery_s, cfg.imagery_fix_s, "Fix", "n/a", 0))
    return pd.DataFrame(rows, columns=list(EVENT_COLUMNS)).astype({"oneback": int})
