"""Which run is live (issue 28): files written before the start are an earlier run's, not followed, reported once per
series; a resumed run and --take-earlier-run still take them; a volume's wait is timed from its file's last write;
intake's lines name their file and are rate-limited by kind."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pytest

from fmriface.commands.serve import _live_run_only
from service.intake.inspect import format_report, inspect_path
from service.intake.stale import StaleFiles, acquired_at, age_text
from service.intake.watcher import VolumeWatcher
from service.live.config import ServeConfig
from service.live.startup import choose_run_id
from service.scanner.writers import write_volume
from service.volume import IntakeEvent, Volume
from tests.service.dicom.test_formats import make_volume
from tests.service.intake.test_watcher import AFFINE, collect, fast

HOURS_2 = 2 * 3600.0


def series_file(folder: Path, series: int, acq: int, age_s: float = 0.0, **kw) -> Path:
    """A mosaic of ``series``; ``age_s`` > 0 sets its file time (and, by the writer's clock, its acquisition time)
    that many seconds in the past."""
    path = folder / f"s{series:02d}_{acq:04d}.dcm"
    staged = folder / ".staging" / path.name if age_s else path  # dated before it is moved in: no race
    write_volume(make_volume(acq), AFFINE, staged, "mosaic", acquisition=acq, tr=2.0, series_number=series, **kw)
    if age_s:
        t = time.time() - age_s
        os.utime(staged, (t, t))
        os.replace(staged, path)
    return path


@pytest.fixture
def two_hours_ago(monkeypatch):
    """Files written under this fixture's ``writing()`` say they were acquired two hours ago (DICOM AcquisitionTime)."""
    real_gmtime = time.gmtime

    class Writing:
        def __enter__(self):
            monkeypatch.setattr(time, "gmtime", lambda *a: real_gmtime((a[0] if a else time.time()) - HOURS_2))

        def __exit__(self, *exc):
            monkeypatch.setattr(time, "gmtime", real_gmtime)

    return Writing


def events_of(events: list[IntakeEvent], kind: str) -> list[IntakeEvent]:
    return [e for e in events if e.kind == kind]


def wait_event(watcher: VolumeWatcher, test, timeout: float = 10.0) -> tuple[list[Volume], list[IntakeEvent]]:
    """Items until an event for which ``test`` is true (or the timeout)."""
    volumes, events = [], []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        item = watcher.get(timeout=0.05)
        if isinstance(item, Volume):
            volumes.append(item)
        elif item is not None:
            events.append(item)
            if test(item):
                break
    return volumes, events


def test_a_stale_series_two_hours_old_is_set_aside_and_the_live_one_followed(tmp_path, two_hours_ago):
    with two_hours_ago():
        for acq in range(1, 9):
            series_file(tmp_path, 7, acq, age_s=HOURS_2)
    with VolumeWatcher(fast(tmp_path, since=time.time())) as watcher:
        for acq in (1, 2, 3):
            series_file(tmp_path, 8, acq)
        volumes, events = collect(watcher, 3, timeout=8.0, settle=0.3)
    assert [(v.series_number, v.acquisition) for v in volumes] == [(8, 1), (8, 2), (8, 3)]
    stale = [e for e in events_of(events, "ignored") if "before serve started" in e.reason]
    assert len(stale) == 1, [e.reason for e in events]  # once for the series, not per file
    assert "series 7 (ep2d_bold): 8 files" in stale[0].reason and "2 h 00 min" in stale[0].reason
    assert "--take-earlier-run" in stale[0].reason and stale[0].path.name.startswith("s07_")
    assert "series 8" in events_of(events, "series")[0].reason


def test_a_file_copied_in_keeps_its_acquisition_time(tmp_path, two_hours_ago):
    with two_hours_ago():
        old = series_file(tmp_path, 7, 1)  # a fresh file time, an acquisition two hours ago
    assert acquired_at(old.read_bytes()) < time.time() - HOURS_2 + 60
    with VolumeWatcher(fast(tmp_path, since=time.time() - 1.0)) as watcher:
        series_file(tmp_path, 8, 1)
        volumes, events = collect(watcher, 1, timeout=8.0, settle=0.3)
    assert [v.series_number for v in volumes] == [8]
    assert any("series 7" in e.reason and "before serve started" in e.reason for e in events_of(events, "ignored"))


def test_a_run_that_began_before_the_start_is_not_followed_when_it_goes_on(tmp_path):
    for acq in (1, 2, 3):
        series_file(tmp_path, 7, acq, age_s=30.0)
    with VolumeWatcher(fast(tmp_path, since=time.time())) as watcher:
        series_file(tmp_path, 7, 4)  # its next volume, after the start
        refused = lambda e: "began before serve started" in e.reason  # noqa: E731
        volumes, events = wait_event(watcher, refused)
        assert volumes == [] and any(refused(e) for e in events), [e.reason for e in events]
        series_file(tmp_path, 8, 1)  # the next run is the live one
        volumes, _ = collect(watcher, 1, timeout=8.0)
    assert [(v.series_number, v.acquisition) for v in volumes] == [(8, 1)]


def test_a_resumed_run_goes_on_with_its_series_written_before_the_start(tmp_path):
    for acq in (1, 2):
        series_file(tmp_path, 6, acq, age_s=HOURS_2)  # an earlier run: still set aside
    for acq in (1, 2, 3, 4):  # the run being resumed: 1-2 recorded, 3-4 written while serve was down
        series_file(tmp_path, 7, acq, age_s=60.0 - acq)
    cfg = fast(tmp_path, since=time.time(), resume_files=("s07_0001.dcm", "s07_0002.dcm"))
    with VolumeWatcher(cfg) as watcher:
        volumes, events = collect(watcher, 4, timeout=8.0)
        series_file(tmp_path, 7, 5)
        more, later = collect(watcher, 1, timeout=8.0, settle=0.2)
    assert [(v.series_number, v.acquisition) for v in volumes + more] == [(7, a) for a in range(1, 6)]
    assert "the series of the run being resumed" in events_of(events, "series")[0].reason
    stale = [e.reason for e in events_of(events + later, "ignored") if "before serve started" in e.reason]
    assert len(stale) == 1 and "series 6" in stale[0] and "2 files" in stale[0]


def test_a_resumed_run_whose_recorded_files_are_all_just_written_goes_on(tmp_path):
    """A restart seconds after a crash: the run's older files are before the start, the ones its records name last
    were written within the tolerance (so are not "earlier"); the run is still the one followed, from volume 1."""
    for acq in (1, 2, 3):
        series_file(tmp_path, 7, acq, age_s=30.0 - acq)
    for acq in (4, 5):
        series_file(tmp_path, 7, acq, age_s=0.5)  # just written: fresh by the tolerance
    cfg = fast(tmp_path, since=time.time(), resume_files=("s07_0004.dcm", "s07_0005.dcm"))
    with VolumeWatcher(cfg) as watcher:
        volumes, events = collect(watcher, 5, timeout=8.0)
    assert [(v.series_number, v.acquisition) for v in volumes] == [(7, a) for a in range(1, 6)]
    assert not [e.reason for e in events_of(events, "ignored") if "before serve started" in e.reason]


def test_take_earlier_follows_the_run_that_began_before_the_start(tmp_path):
    for acq in (1, 2, 3):
        series_file(tmp_path, 7, acq, age_s=HOURS_2)
    with VolumeWatcher(fast(tmp_path, since=time.time(), take_earlier=True)) as watcher:
        volumes, events = collect(watcher, 3, timeout=8.0)
    assert [(v.series_number, v.acquisition) for v in volumes] == [(7, 1), (7, 2), (7, 3)]
    assert "take_earlier" in events_of(events, "series")[0].reason
    # the wait is honest: two hours from the file's last write to handing it on
    assert all(v.t_ready - v.t_written >= HOURS_2 - 5 for v in volumes)


def test_hundreds_of_old_files_delay_no_live_volume(tmp_path):
    """Stale files are only stat'ed at start; their series is read while intake is idle (one TR is 2 s here)."""
    n_old = 300
    series_file(tmp_path, 7, 1)
    blob = (tmp_path / "s07_0001.dcm").read_bytes()
    t_old = time.time() - HOURS_2
    for acq in range(2, n_old + 1):  # same bytes, other names: what matters is their number
        path = tmp_path / f"s07_{acq:04d}.dcm"
        path.write_bytes(blob)
        os.utime(path, (t_old, t_old))
    os.utime(tmp_path / "s07_0001.dcm", (t_old, t_old))
    watcher = VolumeWatcher(fast(tmp_path, since=time.time()))
    t0 = time.monotonic()
    with watcher:
        started = time.monotonic() - t0
        t_written = time.time()
        series_file(tmp_path, 8, 1)
        volumes, events = collect(watcher, 1, timeout=10.0)
        t_arrived = time.time()
        _, more = wait_event(watcher, lambda e: "before serve started" in e.reason, timeout=30.0)
    assert [(v.series_number, v.acquisition) for v in volumes] == [(8, 1)]
    assert t_arrived - t_written < 2.0, f"the live volume waited {t_arrived - t_written:.2f} s"
    assert started < 1.0, f"start-up took {started:.2f} s for {n_old} old files"
    stale = [e.reason for e in events + more if "before serve started" in e.reason]
    assert len(stale) == 1 and f"{n_old} files" in stale[0]


def test_the_wait_is_timed_from_the_files_last_write(tmp_path):
    with VolumeWatcher(fast(tmp_path, since=time.time() - 60.0)) as watcher:
        # queued: written 3 s before the watcher saw it (a slow start, or serve down)
        series_file(tmp_path, 7, 1, age_s=3.0)
        # written slowly in place: timed from its last write, not its first half
        series_file(tmp_path, 7, 2, chunked=True, chunk_delay=0.1, n_chunks=4)
        volumes, _ = collect(watcher, 2, timeout=8.0)
    first, second = volumes
    assert first.t_ready - first.t_written >= 3.0 and first.t_seen - first.t_written >= 2.9
    assert second.t_written - second.t_seen >= 0.2  # the file was noticed at its first chunk
    assert second.t_written <= second.t_ready


def test_every_intake_line_names_its_file_and_repeats_are_counted(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="service.intake")
    with VolumeWatcher(fast(tmp_path, log_interval_s=60.0)) as watcher:
        for i in range(30):
            (tmp_path / f"junk{i:02d}.dcm").write_bytes(b"\x01" * 400)  # "not a DICOM file", 30 times
        _, events = wait_event(watcher, lambda e: e.path is not None and e.path.name == "junk29.dcm")
        while len(events_of(events, "ignored")) < 30:
            item = watcher.get(timeout=5.0)
            assert item is not None, "intake went silent"
            events.append(item)
    assert len(events_of(events, "ignored")) == 30  # every one recorded
    lines = [r.getMessage() for r in caplog.records if r.name == "service.intake"]
    ignored = [line for line in lines if line.startswith("intake ignored")]
    assert len(ignored) == 1 and "junk" in ignored[0] and "not a DICOM file" in ignored[0], lines
    assert any("ignored: 29 more lines like it held back" in line for line in lines), lines


def test_inspect_gives_each_series_its_age_and_the_command_to_run(tmp_path):
    for acq in (1, 2):
        series_file(tmp_path, 7, acq, age_s=HOURS_2 + 60 * acq)
    report = inspect_path(tmp_path)
    (series,) = report["series"]
    assert HOURS_2 + 60 <= series["age_s"] < HOURS_2 + 90 and series["oldest_age_s"] >= HOURS_2 + 120
    assert report["next"][0].startswith(f"fmriface serve --bundle BUNDLE --watch {tmp_path}")
    assert "--take-earlier-run" in report["next"][1] and "series 7" in report["next"][1]
    text = format_report(report)
    assert "written 2 h 01 min ago" in text and "next: fmriface serve" in text


def test_the_rule_and_its_words():
    rule = StaleFiles(since=1000.0, tolerance_s=2.0)
    assert rule.before_start(997.0) and not rule.before_start(998.5) and not rule.before_start(1005.0)
    assert rule.before_start(1001.0, acquired=1000.0 - 3600) and not rule.before_start(1001.0, acquired=990.0)
    assert not StaleFiles().before_start(0.0)  # no start given: nothing is judged
    assert [age_text(s) for s in (4.24, 95, 7384, 3 * 86400)] == ["4.2 s", "1 min 35 s", "2 h 03 min", "3 days 0 h"]


def test_serve_sets_the_start_the_flag_and_the_resumed_runs_files(tmp_path):
    """What ``fmriface serve`` hands intake: its start, --take-earlier-run, and the files the run to resume recorded."""
    watch, runs = tmp_path / "watch", tmp_path / "runs"
    watch.mkdir()
    cfg = ServeConfig(bundle=tmp_path / "bundle", watch=watch, runs=runs)
    fresh = _live_run_only(cfg, 1234.5, take_earlier=False).watcher
    assert (fresh.since, fresh.take_earlier, fresh.resume_files) == (1234.5, False, ())
    assert _live_run_only(cfg, 1234.5, take_earlier=True).watcher.take_earlier
    run = runs / choose_run_id(cfg)  # a run in progress, stopped: serve resumes it
    run.mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps({"state": "running"}))
    records = [
        {"volume": 0, "file": "s07_0001.dcm", "status": "discarded"},
        {"volume": 1, "file": "s07_0002.dcm", "status": "ok"},
        {"volume": None, "file": "junk.dcm", "status": "skipped"},
    ]
    (run / "volumes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    resumed = _live_run_only(cfg, 1234.5, take_earlier=False).watcher
    assert resumed.resume_files == ("s07_0001.dcm", "s07_0002.dcm")


def test_a_new_file_is_followed_though_its_file_server_clock_is_behind(tmp_path):
    """A file that was not in the folder at the start is new by that alone, unless its time is older than clocks
    can be apart (stale.CLOCK_SKEW_S)."""
    with VolumeWatcher(fast(tmp_path, since=time.time())) as watcher:
        series_file(tmp_path, 8, 1, age_s=30.0)  # written now, stamped by a clock 30 s behind
        volumes, events = collect(watcher, 1, timeout=8.0)
    assert [(v.series_number, v.acquisition) for v in volumes] == [(8, 1)]
    assert not [e for e in events if "before serve started" in e.reason]
