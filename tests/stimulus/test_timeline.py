from __future__ import annotations

import csv

import numpy as np
import pytest

from stimulus.records import EventsWriter, RunLog
from stimulus.schedule import Timing, faces_run, imagery_run
from stimulus.timeline import RunRecorder, Timeline

FRAME = 1 / 60


def read_events(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def test_trial_at_is_frame_locked():
    trials = imagery_run(["a.png"], Timing(lead_in=1.0))
    tl = Timeline(trials, FRAME)
    assert tl.trial_at(0.5) is None
    assert tl.trial_at(1.0 - 0.4 * FRAME) == 0  # within half a frame of the onset: that frame shows it
    assert tl.trial_at(1.0 - 0.6 * FRAME) is None
    assert tl.trial_at(3.0) == 1 and tl.trial_at(3.0 - 0.6 * FRAME) == 0
    assert tl.trial_at(100.0) is None and tl.upcoming(0.0) == 0 and tl.upcoming(30.0) is None


def test_recorder_measures_onsets_durations_and_responses(tmp_path, rng):
    timing = Timing(soa=0.5, face_duration=0.25, lead_in=0.5)
    trials = faces_run([f"f{i}.png" for i in range(10)], "test", timing, rng)
    onsets_seen = []
    path = tmp_path / "events.tsv"
    writer = EventsWriter(path)
    rec = RunRecorder(trials, writer, on_onset=lambda t, onset: onsets_seen.append((t.index, onset)))
    tl = Timeline(trials, FRAME)
    end = trials[-1].end + 0.2
    for k in range(int(end / FRAME)):
        t = k * FRAME
        rec.flipped(tl.trial_at(t), t)
        if k == 40:  # while trial 0 is on screen... a response
            assert rec.respond("1", t).trial.index == 0
        if k == 41:
            assert rec.respond("2", t) is None  # only the first response counts
        if k == 61:  # trial 1 started a frame ago: trial 0 may still get a response (grace)
            assert writer.rows == 0
        if k == 80:  # 0.33 s into trial 1: trial 0's row is final and on disk
            assert writer.rows == 1 and len(read_events(path)) == 1
    rows = rec.close(end)
    assert writer.rows == len(trials) == len(rows)
    writer.close()
    got = read_events(path)
    for row, trial in zip(got, trials):
        assert abs(float(row["onset"]) - trial.onset) <= FRAME / 2 + 1e-9
        assert abs(float(row["duration"]) - trial.duration) <= FRAME + 1e-9
        assert row["stim_file"] == trial.stim_file and int(row["oneback"]) == trial.oneback
    assert got[0]["response"] == "1" and float(got[0]["response_time"]) == pytest.approx(40 * FRAME - 0.5, abs=FRAME)
    assert all(r["response"] == "n/a" and r["response_time"] == "n/a" for r in got[1:])
    assert [i for i, _ in onsets_seen] == list(range(len(trials)))
    assert (tmp_path / "events.json").is_file()


def test_abort_keeps_what_was_shown(tmp_path):
    trials = imagery_run(["a.png", "b.png"], Timing(lead_in=0.0))
    path = tmp_path / "events.tsv"
    with EventsWriter(path) as writer:
        rec = RunRecorder(trials, writer)
        tl = Timeline(trials, FRAME)
        ts = np.arange(0, 5.0, FRAME)  # abort 5 s in: during the first Img
        for t in ts:
            rec.flipped(tl.trial_at(t), t)
        assert len(read_events(path)) == 1  # the Cue is on disk already
        rec.close(ts[-1])
    got = read_events(path)
    assert [r["trial_type"] for r in got] == ["Cue", "Img"]
    assert float(got[1]["duration"]) == pytest.approx(ts[-1] - 2.0, abs=FRAME)


def test_run_log(tmp_path):
    log = RunLog(tmp_path / "log.tsv")
    log("before")
    log.t0 = 100.0
    log("trigger 2", 102.5)
    log.close()
    lines = (tmp_path / "log.tsv").read_text().splitlines()
    assert lines[0].split("\t")[1:] == ["n/a", "before"] and lines[1].split("\t")[1:] == ["2.5000", "trigger 2"]


class _FakeWindow:
    """Flips advance a fake clock by ``interval`` (a screen with vsync) or not at all (Xvfb)."""

    def __init__(self, clock, interval: float) -> None:
        self.clock, self.interval = clock, interval

    def flip(self) -> None:
        self.clock.t += self.interval


class _Clock:
    def __init__(self) -> None:
        self.t = 5.0

    def __call__(self) -> float:
        return self.t


def test_frame_pacer_measures_vsync_and_predicts_flips():
    from stimulus.window import FramePacer, WindowConfig

    clock = _Clock()
    pacer = FramePacer(_FakeWindow(clock, 1 / 59.9), WindowConfig(refresh_hz=60.0), clock)
    assert not pacer.sleep and pacer.period == pytest.approx(1 / 59.9)
    pacer.flipped(clock())
    clock.t += 0.004  # drawing took 4 ms: the next flip is one refresh after the last
    assert pacer.wait() == pytest.approx(clock.t - 0.004 + 1 / 59.9)
    clock.t += 0.05  # a stall: the prediction moves to the next refresh after now
    assert pacer.next_flip() == pytest.approx(5.0 + 12 / 59.9 + 4 / 59.9)


def test_frame_pacer_sleeps_on_an_absolute_grid_without_vsync():
    import time

    from stimulus.window import FramePacer, WindowConfig

    pacer = FramePacer(_FakeWindow(_Clock(), 0.0), WindowConfig(refresh_hz=100.0), time.perf_counter)
    assert pacer.sleep and pacer.period == pytest.approx(0.01)
    targets = []
    for _ in range(5):
        target = pacer.wait()
        assert time.perf_counter() >= target  # never flips early
        pacer.flipped(time.perf_counter())
        targets.append(target)
    steps = np.diff(targets[1:]) / 0.01  # after the first flip: whole frames on the grid of the first
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-6)
    assert (steps > 1 - 1e-6).all()
