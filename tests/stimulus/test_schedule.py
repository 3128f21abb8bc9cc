from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from stimulus.schedule import (
    Timing,
    faces_run,
    feedback_run,
    imagery_run,
    run_duration,
    spread_without_neighbours,
)

STIMS = [f"train/train_{i:03d}.png" for i in range(40)]


def test_faces_run_paradigm(rng):
    timing = Timing()
    trials = faces_run(STIMS, "train", timing, rng)
    faces = [t for t in trials if t.trial_type == "train_face"]
    repeats = [t for t in faces if t.oneback]
    fixes = [t for t in trials if t.trial_type == "Fix"]
    assert len(repeats) == 4 and len(fixes) == 4  # 10% of 40 each
    assert [t.stim_file for t in faces if not t.oneback] == STIMS  # the given order, each once
    onsets = np.array([t.onset for t in trials])
    np.testing.assert_allclose(onsets, timing.lead_in + timing.soa * np.arange(len(trials)))
    assert all(t.duration == 1.0 for t in trials)
    for i, t in enumerate(trials):
        if t.oneback:  # a repeat follows its face directly (no Fix between)
            assert trials[i - 1].stim_file == t.stim_file and trials[i - 1].oneback == 0
    assert all(t.stim_file == "n/a" for t in fixes)


def test_faces_run_is_seeded():
    a = faces_run(STIMS, "test", Timing(), np.random.default_rng(5))
    b = faces_run(STIMS, "test", Timing(), np.random.default_rng(5))
    c = faces_run(STIMS, "test", Timing(), np.random.default_rng(6))
    assert a == b and a != c
    assert {t.trial_type for t in a} == {"test_face", "Fix"}


def test_imagery_and_feedback_runs():
    timing = Timing()
    trials = imagery_run(["test/a.png", "test/b.png"], timing)
    assert [t.trial_type for t in trials] == ["Cue", "Img", "Fix"] * 2
    img = trials[1]
    assert img.duration == 12.0 and img.stim_file == "test/a.png" and img.onset == timing.lead_in + 2.0
    assert trials[2].duration == 6.0 and trials[3].onset == pytest.approx(timing.lead_in + 20.0)
    assert run_duration(trials, timing) == pytest.approx(timing.lead_in + 40.0 + timing.lead_out)
    fb = feedback_run("test/b.png", 3, timing)
    assert Counter(t.trial_type for t in fb) == {"Cue": 3, "Feedback": 3, "Fix": 3}
    assert all(t.stim_file == "test/b.png" for t in fb if t.trial_type != "Fix")


def test_spread_without_neighbours(rng):
    items = [f"t{i}" for i in range(5)] * 3
    order = spread_without_neighbours(items, rng)
    assert sorted(order) == sorted(items)
    assert all(a != b for a, b in zip(order, order[1:]))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"face_duration": 3.0}, "shorter than timing.soa"),
        ({"soa": 0.0}, "timing.soa must be > 0"),
        ({"oneback_fraction": 0.6}, "oneback_fraction"),
        ({"lead_in": -1.0}, "lead_in"),
    ],
)
def test_timing_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Timing(**kwargs)
