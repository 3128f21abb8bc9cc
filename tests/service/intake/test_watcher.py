"""The watcher: event path, polling fallback, slow writes, ordering, gaps, duplicates, foreign series, bad files."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest

from service.intake.watcher import VolumeWatcher, WatcherConfig
from service.scanner.writers import write_bytes, write_volume
from service.volume import IntakeEvent, Volume
from tests.service.dicom.test_formats import AFFINES, make_volume

AFFINE = AFFINES["ras"]


def collect(
    watcher: VolumeWatcher, n_volumes: int, timeout: float = 5.0, settle: float = 0.0
) -> tuple[list[Volume], list[IntakeEvent]]:
    """Volumes and events until ``n_volumes`` volumes arrived (then ``settle`` s more) or ``timeout``."""
    volumes, events = [], []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        item = watcher.get(timeout=0.05)
        if isinstance(item, Volume):
            volumes.append(item)
            if len(volumes) == n_volumes:
                deadline = min(deadline, time.monotonic() + settle)
        elif item is not None:
            events.append(item)
        elif len(volumes) >= n_volumes and time.monotonic() >= deadline:
            break
    return volumes, events


def kinds(events: list[IntakeEvent]) -> list[str]:
    return [e.kind for e in events if e.kind != "series"]


def mosaic(folder: Path, acq: int, name: str | None = None, **kw) -> Path:
    return write_volume(
        make_volume(acq), AFFINE, folder / (name or f"vol{acq:04d}.dcm"), "mosaic", acquisition=acq, tr=2.0, **kw
    )[0]


def fast(folder: Path, **kw) -> WatcherConfig:
    defaults = dict(
        folder=str(folder), poll_interval_s=0.02, complete_timeout_s=0.4, gap_timeout_s=0.6, event_grace_s=0.3
    )
    defaults.update(kw)
    return WatcherConfig(**defaults)


def check_in_order(volumes: list[Volume], acquisitions: list[int]) -> None:
    assert [v.acquisition for v in volumes] == acquisitions
    assert [v.index for v in volumes] == [a - 1 for a in acquisitions]
    for v in volumes:
        assert v.data[0, 0, 0] == v.acquisition  # the index encoded in the data: right file, right volume
        assert v.t_seen <= v.t_ready


@pytest.mark.parametrize("polling", ["off", "on"])
def test_event_and_polling_paths_hand_on_each_volume(tmp_path, polling):
    with VolumeWatcher(fast(tmp_path, polling=polling)) as watcher:
        for acq in (1, 2, 3):
            mosaic(tmp_path, acq)
        volumes, events = collect(watcher, 3)
        assert watcher.mode == ("polling" if polling == "on" else "events")
    check_in_order(volumes, [1, 2, 3])
    assert kinds(events) == [] and events[0].kind == "series"
    assert volumes[0].sha256 == hashlib.sha256((tmp_path / "vol0001.dcm").read_bytes()).hexdigest()


class _SilentObserver:
    """A watchdog observer whose events never arrive (a network share)."""

    def schedule(self, *args, **kwargs):
        return None

    def start(self):
        return None

    def stop(self):
        return None

    def join(self, timeout=None):
        return None


def test_auto_switches_to_polling_when_events_do_not_arrive(tmp_path):
    with VolumeWatcher(fast(tmp_path, polling="auto"), observer_factory=_SilentObserver) as watcher:
        assert watcher.mode == "events"
        mosaic(tmp_path, 1)
        mosaic(tmp_path, 2)
        volumes, events = collect(watcher, 2)
        assert watcher.mode == "polling"
    check_in_order(volumes, [1, 2])
    assert "polling" in kinds(events)
    assert "without a file event" in next(e.reason for e in events if e.kind == "polling")


@pytest.mark.parametrize(
    ("polling", "fmt", "name"), [("off", "mosaic", "v.dcm"), ("on", "enhanced", "v.dcm"), ("off", "nifti", "v.nii.gz")]
)
def test_slow_chunked_write_is_never_read_early(tmp_path, polling, fmt, name):
    data = make_volume(1)
    # a writer thread starved for 0.4 s on a loaded machine would rightly be reported incomplete: allow 2 s
    with VolumeWatcher(fast(tmp_path, polling=polling, complete_timeout_s=2.0)) as watcher:
        done = {}

        def writer():
            done["start"] = time.time()
            write_volume(
                data, AFFINE, tmp_path / name, fmt, acquisition=1, tr=2.0, chunked=True, chunk_delay=0.12, n_chunks=5
            )

        thread = threading.Thread(target=writer)
        thread.start()
        volumes, events = collect(watcher, 1, timeout=5.0, settle=0.2)
        thread.join(timeout=5)
    assert kinds(events) == []  # no incomplete or corrupt report for a file that was still being written
    assert len(volumes) == 1 and volumes[0].t_ready >= done["start"] + 4 * 0.12  # not before the last chunk
    np.testing.assert_array_equal(volumes[0].data, data)
    assert volumes[0].sha256 == hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()


def test_out_of_order_arrival_is_handed_on_in_order(tmp_path):
    with VolumeWatcher(fast(tmp_path, polling="off", gap_timeout_s=2.0, reorder_window=3)) as watcher:
        for acq in (1, 3, 4, 2, 5):
            mosaic(tmp_path, acq)
            time.sleep(0.02)
        volumes, events = collect(watcher, 5)
    check_in_order(volumes, [1, 2, 3, 4, 5])
    assert kinds(events) == []


def test_missing_volume_is_reported_as_a_gap(tmp_path):
    with VolumeWatcher(fast(tmp_path, polling="off", reorder_window=2)) as watcher:
        for acq in (1, 2, 4, 5, 6):
            mosaic(tmp_path, acq)
        volumes, events = collect(watcher, 5)
    check_in_order(volumes, [1, 2, 4, 5, 6])
    gap = next(e for e in events if e.kind == "gap")
    assert gap.acquisitions == (3,) and "never arrived" in gap.reason


def test_gap_declared_after_timeout_and_late_arrival_reported(tmp_path):
    with VolumeWatcher(fast(tmp_path, polling="off", reorder_window=5, gap_timeout_s=0.3)) as watcher:
        mosaic(tmp_path, 1)
        mosaic(tmp_path, 3)
        volumes, events = collect(watcher, 2)
        mosaic(tmp_path, 2)
        _, later = collect(watcher, 0, timeout=1.0)
    check_in_order(volumes, [1, 3])
    assert [e.acquisitions for e in events if e.kind == "gap"] == [(2,)]
    assert kinds(later) == ["late"]


def test_duplicate_acquisition_is_reported_once_and_not_handed_on(tmp_path):
    with VolumeWatcher(fast(tmp_path, polling="off")) as watcher:
        mosaic(tmp_path, 1)
        mosaic(tmp_path, 2)
        write_bytes(tmp_path / "copy_of_2.dcm", (tmp_path / "vol0002.dcm").read_bytes())
        mosaic(tmp_path, 3)
        volumes, events = collect(watcher, 3, settle=0.3)
    check_in_order(volumes, [1, 2, 3])
    dup = [e for e in events if e.kind == "duplicate"]
    assert len(dup) == 1 and dup[0].acquisition == 2 and "same content" in dup[0].reason


def test_foreign_series_in_the_same_folder_are_ignored(tmp_path):
    with VolumeWatcher(fast(tmp_path, polling="off")) as watcher:
        write_volume(
            make_volume(1),
            AFFINE,
            tmp_path / "loc.dcm",
            "enhanced",
            acquisition=1,
            tr=None,
            series_number=1,
            series_description="AAHead_Scout_localizer",
        )
        mosaic(
            tmp_path,
            1,
            name="moco1.dcm",
            series_number=4,
            series_description="MoCoSeries",
            image_type=["DERIVED", "PRIMARY", "M", "ND", "MOSAIC", "MOCO"],
        )
        mosaic(
            tmp_path,
            1,
            name="phase1.dcm",
            series_number=5,
            series_description="ep2d_bold_phase",
            image_type=["ORIGINAL", "PRIMARY", "P", "ND", "MOSAIC"],
        )
        for acq in (1, 2):
            mosaic(tmp_path, acq, series_number=3)
        mosaic(
            tmp_path,
            3,
            name="moco3.dcm",
            series_number=4,
            series_description="MoCoSeries",
            image_type=["DERIVED", "PRIMARY", "M", "ND", "MOSAIC", "MOCO"],
        )
        mosaic(tmp_path, 3, series_number=3)
        mosaic(tmp_path, 4, name="other_run4.dcm", series_number=6)  # a second EPI series: not followed
        volumes, events = collect(watcher, 3, settle=0.3)
    check_in_order(volumes, [1, 2, 3])
    assert {v.series_number for v in volumes} == {3}
    ignored = [e.reason for e in events if e.kind == "ignored"]
    assert len(ignored) == 4  # localizer, MoCo, phase, the other EPI series: each reported once
    assert (
        any("MOCO" in r for r in ignored) and any("localizer" in r for r in ignored) and any("P" in r for r in ignored)
    )


def test_configured_series_number(tmp_path):
    with VolumeWatcher(fast(tmp_path, polling="on", series=7)) as watcher:
        for acq in (1, 2):
            mosaic(tmp_path, acq, name=f"s5_{acq}.dcm", series_number=5)
            mosaic(tmp_path, acq, name=f"s7_{acq}.dcm", series_number=7)
        volumes, events = collect(watcher, 2, settle=0.2)
    assert [v.series_number for v in volumes] == [7, 7]
    assert any(e.kind == "ignored" and "configured series 7" in e.reason for e in events)


def test_files_present_at_start_are_processed_in_order(tmp_path):
    for acq in (1, 2):  # an earlier run left in the folder, written a minute before the current one
        old = mosaic(tmp_path, acq, name=f"old_{acq}.dcm", series_number=2)
        when = time.time() - 60.0
        os.utime(old, (when, when))
    for acq in (3, 1, 4, 2):
        mosaic(tmp_path, acq, series_number=4)
    with VolumeWatcher(fast(tmp_path, polling="off")) as watcher:
        mosaic(tmp_path, 5, series_number=4)
        volumes, events = collect(watcher, 5)
    check_in_order(volumes, [1, 2, 3, 4, 5])
    assert {v.series_number for v in volumes} == {4}
    chosen = [e.reason for e in events if e.kind == "series"]
    assert len(chosen) == 1 and "series 4" in chosen[0] and "newest EPI series present" in chosen[0]
    assert any(e.kind == "ignored" and "earlier EPI series" in e.reason for e in events)


def test_slice_per_file_volumes_complete_when_all_slices_arrived(tmp_path, rng):
    staging = tmp_path / "staging"
    watch = tmp_path / "watch"
    watch.mkdir()
    with VolumeWatcher(fast(watch, polling="off")) as watcher:
        for acq in (1, 2):
            paths = write_volume(
                make_volume(acq), AFFINE, staging / f"vol{acq}", "slices", acquisition=acq, tr=2.0, vendor="ge"
            )
            for k in rng.permutation(len(paths)):
                write_bytes(watch / paths[k].name, paths[k].read_bytes())
        paths = write_volume(make_volume(3), AFFINE, staging / "vol3", "slices", acquisition=3, tr=2.0)
        for p in paths[:-2]:  # two slices never come
            write_bytes(watch / p.name, p.read_bytes())
        volumes, events = collect(watcher, 2, settle=0.8)
    check_in_order(volumes, [1, 2])
    np.testing.assert_array_equal(volumes[1].data, make_volume(2))
    incomplete = [e for e in events if e.kind == "incomplete"]
    assert len(incomplete) == 1 and "5 of 7 slices" in incomplete[0].reason


def test_bad_inputs_are_recorded_and_intake_goes_on(tmp_path):
    outside = tmp_path / "outside"
    watch = tmp_path / "watch"
    outside.mkdir()
    watch.mkdir()
    good = mosaic(outside, 9, name="elsewhere.dcm")
    with VolumeWatcher(fast(watch, polling="off")) as watcher:
        mosaic(watch, 1)
        raw = mosaic(outside, 2, name="cut.dcm").read_bytes()
        write_bytes(watch / "vol0002.dcm", raw[: len(raw) // 2])  # the writer died half way
        garbled = bytearray(mosaic(outside, 3, name="garbled.dcm").read_bytes())
        garbled[400:480] = b"\xff" * 80
        write_bytes(watch / "vol0003.dcm", bytes(garbled))
        ds = pydicom.dcmread(mosaic(outside, 4, name="report.dcm"))
        del ds.PixelData
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.66"
        ds.save_as(watch / "report.dcm")
        (watch / "notes.txt").write_text("operator notes\n" * 20)
        (watch / "link.dcm").symlink_to(good)
        write_volume(make_volume(5, shape=(10, 12, 6)), AFFINE, watch / "vol0005.dcm", "mosaic", acquisition=5, tr=2.0)
        for acq in (6, 7, 8):
            mosaic(watch, acq)
        volumes, events = collect(watcher, 4, timeout=6.0, settle=0.6)
    assert [v.acquisition for v in volumes] == [1, 6, 7, 8]  # intake went on past every bad file
    by_kind = {}
    for e in events:
        by_kind.setdefault(e.kind, []).append(e)
    assert [e.path.name for e in by_kind["incomplete"]] == ["vol0002.dcm"]
    assert [e.path.name for e in by_kind["corrupt"]] == ["vol0003.dcm"]
    assert "(10, 12, 6)" in by_kind["mismatch"][0].reason and "(10, 12, 7)" in by_kind["mismatch"][0].reason
    ignored = {e.path.name: e.reason for e in by_kind["ignored"]}
    assert "not an MR image" in ignored["report.dcm"] and "outside the watch folder" in ignored["link.dcm"]
    assert "notes.txt" not in ignored
    # acquisition 5 was refused (mismatch) and is counted once: not in the gap as well (issue 28)
    assert [e.acquisitions for e in by_kind["gap"]] == [(2, 3, 4)]
    assert by_kind["mismatch"][0].acquisition == 5


def test_config_validation_and_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="polling"):
        WatcherConfig(folder=str(tmp_path), polling="sometimes")
    with pytest.raises(ValueError, match="poll_interval_s"):
        WatcherConfig(folder=str(tmp_path), poll_interval_s=0)
    with pytest.raises(NotADirectoryError):
        VolumeWatcher(tmp_path / "nope").start()


def test_links_inside_are_followed_special_files_never_opened(tmp_path):
    import os

    with VolumeWatcher(fast(tmp_path, polling="on", pattern="*.dcm")) as watcher:
        os.mkfifo(tmp_path / "vol0001.dcm")  # would block a reader that opened it
        mosaic(tmp_path, 2, name="stored_2.bin")  # not matched by the pattern itself...
        (tmp_path / "vol0002.dcm").symlink_to(tmp_path / "stored_2.bin")  # ...but through a link inside
        mosaic(tmp_path, 3)
        volumes, events = collect(watcher, 2, settle=0.2)
    assert [v.acquisition for v in volumes] == [2, 3] and volumes[0].path.name == "vol0002.dcm"
    assert any(e.kind == "ignored" and "not a regular file" in e.reason for e in events)


class _BrokenObserver(_SilentObserver):
    def start(self):
        raise OSError(28, "inotify watch limit reached")


def test_observer_failure_falls_back_to_polling_unless_polling_is_off(tmp_path):
    with VolumeWatcher(fast(tmp_path, polling="auto"), observer_factory=_BrokenObserver) as watcher:
        assert watcher.mode == "polling"
        mosaic(tmp_path, 1)
        volumes, events = collect(watcher, 1)
    assert [v.acquisition for v in volumes] == [1] and "inotify watch limit" in events[0].reason
    with pytest.raises(OSError, match="polling is 'off'"):
        VolumeWatcher(fast(tmp_path, polling="off"), observer_factory=_BrokenObserver).start()
