"""Watch the scanner's export folder and hand on each volume of one series, in order, exactly once.

File events come from watchdog (inotify close-write and rename on Linux). When events do not arrive (network
shares), a slow background scan notices files no event announced and the watcher switches to polling; polling
can also be forced (``polling="on"``) or disabled (``"off"``). Files already in the folder at start are
processed first, in acquisition order, so a restarted service catches up; with ``since`` set (``serve`` sets it
to its start), files written before it are an earlier run's and are not followed (:mod:`service.intake.stale`):
they are only stat'ed at start, and their headers read later, a few milliseconds at a time while intake is idle,
to report them once per series.

A file is read only when its content is complete (DICOM pixel data as long as the header says, NIfTI data
as long as its header says, gzip stream ended); incomplete files are retried until they stop changing for
``complete_timeout_s`` (or ``complete_retries`` reads without change), then reported ``incomplete``. Every
problem becomes an :class:`~service.volume.IntakeEvent`, logged on ``service.intake`` naming its file (at most one
line per kind per ``log_interval_s``, with counts: :class:`service.logs.RateLimitedLog`), and intake goes on.
Symlinks that point outside the folder are never followed.

Examples
--------
>>> with VolumeWatcher(WatcherConfig(folder="/data/export")) as watcher:  # doctest: +SKIP
...     item = watcher.get(timeout=2.5)  # Volume, IntakeEvent or None
"""

from __future__ import annotations

import fnmatch
import hashlib
import heapq
import logging
import os
import queue
import stat
import sys
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, NamedTuple

from service.dicom.parse import DicomImage
from service.intake.assembly import assemble, read_image, sniff
from service.intake.parse_offload import ParseOffload
from service.intake.series import Sequencer, SeriesFilter, series_label
from service.intake.stale import StaleFiles, acquired_at
from service.logs import RateLimitedLog
from service.policy import raise_errors
from service.volume import (
    CorruptFileError,
    IncompleteFileError,
    IntakeError,
    IntakeEvent,
    ShapeMismatchError,
    UnsupportedFileError,
    Volume,
)

__all__ = ["WatcherConfig", "VolumeWatcher", "IntakeEvent", "Volume"]


def _not_the_stop_race(record: logging.LogRecord) -> bool:
    """False for watchdog's "queue_events() called when the thread is inactive": its inotify emitter logs it as an
    error when ``stop()`` lands while it is reading (watchdog 6-7); nothing is lost, so an operator need not see it."""
    return "called when the thread is inactive" not in record.getMessage()


logging.getLogger("watchdog.observers.inotify").addFilter(_not_the_stop_race)
log = logging.getLogger("service.intake")
#: Event kinds logged as warnings (a volume lost or a problem with intake itself); the others are information.
_WARNINGS = ("incomplete", "corrupt", "mismatch", "gap", "duplicate", "late", "lost", "parse-process")
#: Bytes read of a file set aside as an earlier run's, to name its series (DICOM puts the series first).
_HEAD_BYTES = 16384


@dataclass(frozen=True)
class WatcherConfig:
    """Intake settings (TOML table ``[watcher]``; every key can be given as a keyword).

    Attributes
    ----------
    folder : str
        The scanner's export folder.
    pattern : str
        File-name globs, comma separated (``"*.dcm,*.IMA,*.nii*"``); hidden and ``*.tmp`` files never match.
    polling : {"auto", "on", "off"}
        ``auto``: file events, switching to polling when files turn up that no event announced.
    poll_interval_s : float
        Folder scan period while polling.
    event_grace_s : float
        ``auto``: how long a file may sit unannounced before polling takes over; the check scan runs at
        half this period.
    retry_interval_s, complete_retries, complete_timeout_s
        An incomplete file is re-read every ``retry_interval_s``; it is reported incomplete after
        ``complete_retries`` reads or ``complete_timeout_s`` seconds without the file changing.
    series : int or None
        SeriesNumber to follow; None: the first EPI series (at start: the newest one already present).
    first_acquisition : int or None
        Acquisition number of volume index 0; None: 0 when the first volume is numbered 0, else 1.
    reorder_window, gap_timeout_s
        An acquisition is declared missing once ``reorder_window`` later volumes wait or the oldest waited
        ``gap_timeout_s``.
    parse_process : {"auto", "off"}
        ``auto``: while volumes wait for the worker (a fast replay, a restart catching up), files are parsed in
        one helper process so that parsing and motion correction use both cores (:mod:`service.intake.parse_offload`);
        in a live run, where the worker is idle when a file arrives, they are parsed in the intake thread.
    slices_per_volume : int or None
        Slices in one volume of a slice-per-file export whose headers do not say (Siemens XA interoperability
        without its protocol, for one): ``serve`` sets it from the bundle's reference grid, so that a volume is
        handed on as soon as its last slice is in. Headers that state it win.
    max_file_bytes : int
        A file larger than this is skipped unread (reported as ``ignored``), so one huge file dropped into the
        folder cannot hold up the next volume; ``serve`` sets it from the reference grid (16 MiB at least).
        0: no limit.
    reference_shape : tuple of int or None
        The bundle's grid (``serve`` sets it): at start, the newest EPI series on this matrix is followed, so a
        scout or a run of another protocol saved later is not taken for the run.
    since : float or None
        The service's start, ``time.time()`` (``serve`` sets it): a file last written before it (``st_mtime``, with
        ``stale_tolerance_s``; a DICOM file also by its acquisition time) is an earlier run's, not followed, and its
        series is reported once with its age; a series with such files is not followed when new files of it come
        either (it began before the service did). None: every file present is taken (as ``take_earlier``).
    take_earlier : bool
        Take a run that began before ``since`` (``serve --take-earlier-run``): at start, the newest EPI series
        present is followed, however old its files.
    resume_files : tuple of str
        Names of the files the run being resumed already recorded (``serve`` sets them from
        ``runs/<run_id>/volumes.jsonl``): their series is that run's, and is followed with its files written
        while the service was down, whatever ``since`` says.
    stale_tolerance_s : float
        A file last written this long before ``since`` still counts as written after it.
    log_interval_s : float
        Intake's log lines: at most one per event kind per this many seconds, then one with the count held back.
    """

    folder: str = "."
    pattern: str = "*"
    polling: Literal["auto", "on", "off"] = "auto"
    poll_interval_s: float = 0.05
    event_grace_s: float = 1.0
    retry_interval_s: float = 0.02
    complete_retries: int = 100
    complete_timeout_s: float = 3.0
    series: int | None = None
    first_acquisition: int | None = None
    reorder_window: int = 2
    gap_timeout_s: float = 3.0
    parse_process: Literal["auto", "off"] = "auto"
    slices_per_volume: int | None = None
    reference_shape: tuple[int, ...] | None = None
    max_file_bytes: int = 64 << 20
    since: float | None = None
    take_earlier: bool = False
    resume_files: tuple[str, ...] = ()
    stale_tolerance_s: float = 2.0
    log_interval_s: float = 10.0

    def __post_init__(self) -> None:
        if self.polling not in ("auto", "on", "off"):
            raise ValueError(f"polling must be auto, on or off, not {self.polling!r}")
        if self.parse_process not in ("auto", "off"):
            raise ValueError(f"parse_process must be auto or off, not {self.parse_process!r}")
        for name in ("poll_interval_s", "event_grace_s", "retry_interval_s", "complete_timeout_s", "gap_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, not {getattr(self, name)!r}")
        if self.slices_per_volume is not None and not (
            isinstance(self.slices_per_volume, int) and self.slices_per_volume >= 1
        ):
            raise ValueError(f"slices_per_volume must be a whole number >= 1, not {self.slices_per_volume!r}")
        if self.complete_retries < 1 or self.reorder_window < 1:
            raise ValueError("complete_retries and reorder_window must be >= 1")
        if self.stale_tolerance_s < 0 or self.log_interval_s < 0:
            raise ValueError("stale_tolerance_s and log_interval_s must be >= 0")


@dataclass
class _File:
    """What the watcher knows about one file."""

    t_seen: float
    signature: tuple[int, int] = (-1, -1)
    t_changed: float = 0.0
    tries: int = 0
    state: str = "new"  # new | waiting | done
    announced: bool = False
    sha256: str = ""


@dataclass
class _SliceSet:
    images: dict[tuple[float, ...], DicomImage] = field(default_factory=dict)
    t_seen: float = 0.0
    t_written: float = 0.0  # the last slice's last write


class _Present(NamedTuple):
    """A file present at start, by its header."""

    epi: bool
    mtime: float
    acquisition: int
    name: str
    run: str | None  # the run (series) UID
    on_grid: bool
    label: str = ""
    signature: tuple[int, int] = (-1, -1)


class VolumeWatcher:
    """Folder watcher: ``start()``/``stop()`` (or a ``with`` block) and ``get(timeout)``.

    Parameters
    ----------
    config : WatcherConfig or path
        The settings, or the folder (then ``overrides`` are WatcherConfig fields).
    observer_factory : callable, optional
        Builds the watchdog observer (tests pass one whose events never arrive).

    Attributes
    ----------
    mode : {"events", "polling"}
        How new files are found now (``auto`` starts with events and may switch, reporting a ``polling`` event).
    counts : dict
        Volumes handed on and events by kind, so far.
    """

    def __init__(self, config: WatcherConfig | str | Path, observer_factory=None, **overrides: Any):
        if not isinstance(config, WatcherConfig):
            config = WatcherConfig(folder=str(config))
        self.config = replace(config, **overrides) if overrides else config
        self.folder = Path(self.config.folder)
        self.mode = "polling" if self.config.polling == "on" else "events"
        self._observer_factory = observer_factory
        self._patterns = [p.strip() for p in self.config.pattern.split(",") if p.strip()] or ["*"]
        self._inbox: queue.SimpleQueue[tuple[str, float]] = queue.SimpleQueue()
        self._out: queue.Queue[Volume | IntakeEvent] = queue.Queue()
        self._files: dict[str, _File] = {}
        self._retries: list[tuple[float, str]] = []
        self._slices: dict[tuple[str, int], _SliceSet] = {}
        self._series = SeriesFilter(number=self.config.series)
        self._seq = Sequencer(self.config.first_acquisition, self.config.reorder_window, self.config.gap_timeout_s)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._observer = None
        self._parser = ParseOffload(
            enabled=self.config.parse_process == "auto",
            on_give_up=lambda reason, path: self._emit(IntakeEvent("parse-process", reason, path=path)),
        )
        self.counts: dict[str, int] = {"volumes": 0}
        self._lost = False
        self._log = RateLimitedLog(log, self.config.log_interval_s)
        rule = None if self.config.take_earlier else self.config.since
        self._stale = StaleFiles(rule, self.config.stale_tolerance_s)
        self._stale_queue: list[tuple[float, str]] = []  # (last write, name) set aside at start, oldest first
        self._earlier_ok: set[str] = set()  # run UIDs taken although written before the start (a resumed run)
        self._present: set[str] = set()  # the files in the folder at the start

    # ------------------------------------------------------------------ public
    def start(self) -> VolumeWatcher:
        """Process the files already present, then watch for new ones (returns self)."""
        if not self.folder.is_dir():
            raise NotADirectoryError(f"watch folder {self.folder} does not exist or is not a folder")
        self._root = self.folder.resolve()
        self._folder_text = os.fspath(self.folder)
        if self.config.polling != "on":
            self._start_observer()
        existing = [e.path for e in self._scan()]
        self._catch_up(existing)
        self._thread = threading.Thread(target=self._run, name="fmriface-intake", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching (what was already handed on stays in the queue)."""
        self._stop.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            if self._thread.is_alive():  # waiting on the parse process: ending it ends the wait
                self._parser.kill()
                self._thread.join(timeout=5)
            if self._thread.is_alive():
                return  # still busy: the parse process is dead; its pipes close when this process exits
            self._thread = None
        self._parser.close()
        self._log.flush(force=True)

    def __enter__(self) -> VolumeWatcher:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def get(self, timeout: float | None = None) -> Volume | IntakeEvent | None:
        """The next volume or event, or None when nothing came within ``timeout`` seconds."""
        try:
            return self._out.get(timeout=timeout)
        except queue.Empty:
            return None

    # ------------------------------------------------------------------ events
    def _start_observer(self) -> None:
        from watchdog.events import FileSystemEventHandler

        inbox, modified_too = self._inbox, sys.platform != "linux"  # Linux: close-write makes modify redundant

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event) -> None:
                if event.is_directory:
                    return
                kind = event.event_type
                if kind in ("closed", "created", "moved") or (kind == "modified" and modified_too):
                    inbox.put((os.fsdecode(getattr(event, "dest_path", "") or event.src_path), time.time()))

        try:
            if self._observer_factory is not None:
                observer = self._observer_factory()
            else:
                from watchdog.observers import Observer

                observer = Observer()
            observer.schedule(Handler(), str(self.folder), recursive=False)
            observer.start()
            self._observer = observer
        except OSError as exc:
            if self.config.polling == "off":
                raise OSError(f"file events are unavailable for {self.folder} ({exc}) and polling is 'off'") from exc
            self._switch_to_polling(f"file events unavailable ({exc})")

    def _switch_to_polling(self, reason: str) -> None:
        if self.mode != "polling":
            self.mode = "polling"
            self._emit(IntakeEvent("polling", f"switched to polling every {self.config.poll_interval_s} s: {reason}"))

    # ------------------------------------------------------------------ loop
    def _run(self) -> None:
        next_scan = time.time()
        while not self._stop.is_set():
            now = time.time()
            scan_period = self.config.poll_interval_s if self.mode == "polling" else self.config.event_grace_s / 2
            if self.config.polling != "off" and now >= next_scan:
                self._poll(now)
                next_scan = now + scan_period
            while self._retries and self._retries[0][0] <= now:
                self._consider(heapq.heappop(self._retries)[1], now)
            self._tick(now)
            self._log.flush()
            if self._stale_queue and self._inbox.empty():  # the earlier runs' headers, a little at a time when idle
                self._stale_step(0.01)
            wake = [next_scan if self.config.polling != "off" else now + 0.5]
            wake += [time.time() + 0.01] if self._stale_queue else []
            wake += [self._retries[0][0]] if self._retries else []
            wake += [d for d in (self._seq.due(),) if d is not None]
            try:
                name, t = self._inbox.get(timeout=max(0.0, min(wake) - time.time()))
            except queue.Empty:
                continue
            self._consider(name, t, announced=True)
            while True:  # drain what else is there
                try:
                    name, t = self._inbox.get_nowait()
                except queue.Empty:
                    break
                self._consider(name, t, announced=True)

    def _poll(self, now: float) -> None:
        for entry in self._scan():
            name = entry.path
            known = self._files.get(name)
            if known is not None and known.state == "done" and not entry.is_symlink():
                try:  # the common case, every poll: a file already read and unchanged since (one lstat)
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    st = None
                if st is not None and (st.st_size, st.st_mtime_ns) == known.signature:
                    continue
            if self.mode != "polling":
                if known is None:
                    self._files[name] = _File(t_seen=now)
                    continue
                if known.state == "new" and not known.announced and now - known.t_seen >= self.config.event_grace_s:
                    self._switch_to_polling(f"{Path(name).name} appeared without a file event")
                else:
                    continue
            if known is not None and known.state == "waiting":
                continue  # its retries are scheduled
            self._consider(name, now)

    def _scan(self) -> list[os.DirEntry]:
        try:
            entries = sorted(os.scandir(self.folder), key=lambda e: e.name)
        except FileNotFoundError:
            self._folder_lost()
            return []
        except OSError:
            return []
        return [e for e in entries if self._matches(e.name)]

    def _folder_lost(self) -> None:
        """The watch folder itself is gone (deleted, unmounted): reported once as ``lost``; serve ends the run."""
        if not self._lost:
            self._lost = True
            self._emit(IntakeEvent("lost", f"the watch folder {self.folder} no longer exists (deleted or unmounted)"))

    def _matches(self, name: str) -> bool:
        if name.startswith(".") or name.endswith(".tmp"):
            return False
        return any(fnmatch.fnmatch(name, p) for p in self._patterns)

    def _tick(self, now: float) -> None:
        for key, group in list(self._slices.items()):
            if now - group.t_seen > self.config.complete_timeout_s:
                del self._slices[key]
                first = next(iter(group.images.values()))
                reason = f"acquisition {key[1]}: {len(group.images)} of {first.slices_expected} slices after {self.config.complete_timeout_s} s"
                self._emit(IntakeEvent("incomplete", reason, path=first.path, acquisition=key[1]))
        for item in self._seq.flush(now):
            self._emit(item)

    def _emit(self, item: Volume | IntakeEvent) -> None:
        """Hand on a volume (stamping ``t_ready``) or an event (logged naming its file, at most one line per kind
        per ``log_interval_s`` with the count held back)."""
        self._hand_on(item, limit=True)

    def _emit_series(self, event: IntakeEvent) -> None:
        """Hand on an event that comes once per series (followed, ignored, set aside): logged, never held back."""
        self._hand_on(event, limit=False)

    def _hand_on(self, item: Volume | IntakeEvent, limit: bool) -> None:
        if isinstance(item, Volume):
            item.t_ready = time.time()
            self.counts["volumes"] += 1
        else:
            self.counts[item.kind] = self.counts.get(item.kind, 0) + 1
            level = logging.WARNING if item.kind in _WARNINGS else logging.INFO
            where = (item.path.name,) if item.path is not None else ()
            msg = "intake %s: " + ("%s: " if where else "") + "%s"
            if limit:
                self._log.log(level, item.kind, msg, item.kind, *where, item.reason)
            else:
                log.log(level, msg, item.kind, *where, item.reason)
        self._out.put(item)

    # ------------------------------------------------------------------ files
    def _consider(self, name: str, t: float, announced: bool = False) -> None:
        """Look at one file; an unexpected failure is reported and intake goes on (FMRIFACE_RAISE=1 re-raises)."""
        try:
            self._look(name, t, announced)
        except Exception as exc:  # noqa: BLE001 - the real-time loop must survive any one file
            if raise_errors():
                raise
            self._files.setdefault(name, _File(t_seen=t)).state = "done"
            self._emit(IntakeEvent("corrupt", f"unexpected {type(exc).__name__}: {exc}", path=Path(name)))

    def _look(self, name: str, t: float, announced: bool) -> None:
        folder, base = os.path.split(name)
        if not self._matches(base) or (folder != self._folder_text and Path(folder).resolve() != self._root):
            return  # only the folder's own files (no sub-folders)
        path = Path(name)
        info = self._files.setdefault(name, _File(t_seen=t))
        info.announced |= announced
        try:
            checked = self._target(path)
        except FileNotFoundError:
            return
        if isinstance(checked, str):
            if info.state != "done":
                info.state = "done"
                self._emit(IntakeEvent("ignored", checked, path=path))
            return
        target, st = checked
        signature = (st.st_size, st.st_mtime_ns)
        if info.state == "done" and signature == info.signature:
            return
        if signature != info.signature:
            info.signature, info.t_changed, info.tries = signature, time.time(), 0
        self._read(path, target, info, t)

    def _target(self, path: Path) -> tuple[Path, os.stat_result] | str:
        """The file to read for ``path`` (itself, or a link's target inside the folder) or why not to open it."""
        st = os.stat(path, follow_symlinks=False)
        target = path
        if stat.S_ISLNK(st.st_mode):
            try:
                target = path.resolve()
            except (RuntimeError, OSError):  # a loop: a -> b -> a
                return "symlink that loops (a link to a link back to it); not followed"
            if self._root not in target.parents:
                return "symlink pointing outside the watch folder; not followed"
            st = os.stat(target)
        if not stat.S_ISREG(st.st_mode):
            return "not a regular file (a FIFO, device or folder); not opened"
        return target, st

    @staticmethod
    def _read_bytes(target: Path) -> tuple[bytes, os.stat_result]:
        """All bytes of a regular file; never blocks on a FIFO swapped in after the check, never follows a link."""
        fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise IsADirectoryError(f"{target.name} is not a regular file")
            raw = f.read()
            return raw, os.fstat(fd)

    def _read(self, path: Path, target: Path, info: _File, t: float) -> None:
        cap = self.config.max_file_bytes
        if cap and info.signature[0] > cap:  # never read: one huge file must not hold up the next volume
            info.state = "done"
            reason = f"{info.signature[0]} bytes, more than any volume here can take ({cap} bytes); skipped unread"
            self._emit(IntakeEvent("ignored", reason, path=path))
            return
        try:
            raw, st = self._read_bytes(target)
            seen = (st.st_size, st.st_mtime_ns)
            if st.st_size == len(raw) and seen != info.signature:  # a write landed after the stat: that is a change
                info.signature, info.t_changed, info.tries = seen, time.time(), 0
            digest = hashlib.sha256(raw).hexdigest()
            if info.state == "done" and digest == info.sha256:
                return  # touched or rewritten with the same bytes: nothing new
            info.sha256 = digest
            kind = sniff(path, raw[:132])
            if kind is None:
                if len(raw) >= 132 or time.time() - info.t_changed > self.config.complete_timeout_s:
                    info.state = "done"  # an unrelated file: ignored without a report
                    return
                raise IncompleteFileError(path, f"only {len(raw)} bytes")
            acquired = acquired_at(raw) if kind == "dicom" and self._stale.active else None
            # volumes waiting for the worker: parse in the helper process (service.intake.parse_offload)
            got = self._parser.read(path, raw, digest, kind, backlog=self._out.qsize() >= 2)
        except FileNotFoundError:
            return
        except IncompleteFileError as exc:
            info.tries += 1
            quiet = time.time() - info.t_changed
            if info.tries >= self.config.complete_retries or quiet >= self.config.complete_timeout_s:
                info.state = "done"
                reason = f"{exc.reason} (unchanged for {quiet:.2f} s, {info.tries} reads)"
                self._emit(IntakeEvent("incomplete", reason, path=path))
            else:
                info.state = "waiting"
                heapq.heappush(self._retries, (time.time() + self.config.retry_interval_s, str(path)))
            return
        except UnsupportedFileError as exc:
            info.state = "done"
            self._emit(IntakeEvent("ignored", exc.reason, path=path))
            return
        except (CorruptFileError, IntakeError, OSError) as exc:
            info.state = "done"
            self._emit(IntakeEvent("corrupt", getattr(exc, "reason", str(exc)), path=path))
            return
        info.state = "done"
        written = min(info.signature[1] / 1e9, time.time())  # the complete file's last write, never in the future
        self._take(got, info.t_seen if info.t_seen else t, written, acquired)

    def _take(self, got: DicomImage | Volume, t_seen: float, written: float, acquired: float | None = None) -> None:
        if isinstance(got, Volume):
            uid, number, description, exclusion = f"nifti:{got.series}", got.series_number, "NIfTI", None
        else:
            uid, number, description, exclusion = got.run_uid, got.series_number, got.series_description, got.exclusion
        present = str(got.path) in self._present
        if uid not in self._earlier_ok and self._stale.before_start(written, acquired, present):
            self._set_aside(uid, series_label(number, description), got.path, written)
            return
        aliases = got.series_numbers if isinstance(got, DicomImage) else ()
        taken, events = self._series.offer(uid, number, description, exclusion, got.path, aliases)
        for event in events:
            self._emit_series(event)
        if not taken:
            return
        if isinstance(got, DicomImage):
            vol = self._slice(got, t_seen, written) if got.fmt == "slice" else self._assemble([got], t_seen, written)
            if vol is None:
                return
        else:
            vol = got
            vol.t_seen, vol.t_written = t_seen, written
        for item in self._seq.push(vol):
            self._emit(item)

    def _assemble(self, images: list[DicomImage], t_seen: float, written: float) -> Volume | None:
        try:
            vol = assemble(images, t_seen)
        except IntakeError as exc:
            mismatch = isinstance(exc, ShapeMismatchError)
            if mismatch:  # reported here, once: the sequencer must not declare it missing as well
                self._seq.refuse(images[0].acquisition)
            kind = "mismatch" if mismatch else "corrupt"
            self._emit(IntakeEvent(kind, exc.reason, path=exc.path, acquisition=images[0].acquisition))
            return None
        vol.t_written = written
        return vol

    def _slice(self, img: DicomImage, t_seen: float, written: float) -> Volume | None:
        if not img.slices_expected and self.config.slices_per_volume:
            img.with_slices_per_volume(self.config.slices_per_volume, "the reference grid (slices_per_volume)")
        if not img.slices_expected:
            reason = (
                "slice file whose headers do not say how many slices a volume has (no ImagesInAcquisition, "
                "vendor field or protocol) and no reference grid was given: set [watcher] slices_per_volume"
            )
            self._emit(IntakeEvent("corrupt", reason, path=img.path))
            return None
        key = (img.run_uid, img.acquisition)
        group = self._slices.setdefault(key, _SliceSet(t_seen=t_seen))
        group.t_written = max(group.t_written, written)
        position = tuple(round(float(v), 3) for v in img.positions[0])
        if position in group.images:
            reason = f"slice at {list(position)} of acquisition {img.acquisition} arrived twice; keeping the first"
            self._emit(IntakeEvent("duplicate", reason, path=img.path, acquisition=img.acquisition))
            return None
        group.images[position] = img
        if len(group.images) < img.slices_expected:
            return None
        del self._slices[key]
        return self._assemble(list(group.images.values()), group.t_seen, group.t_written)

    def _on_grid(self, got: DicomImage | Volume) -> bool:
        """Whether a file's volume has the reference grid's matrix (True when no reference is given)."""
        ref = self.config.reference_shape
        if ref is None:
            return True
        if isinstance(got, Volume):
            return tuple(got.shape) == tuple(ref)
        frames, rows, cols = got.frames.shape
        slices = frames if got.fmt != "slice" else (got.slices_expected or self.config.slices_per_volume or 0)
        return (cols, rows, slices) == tuple(ref)

    def _catch_up(self, names: list[str]) -> None:
        """Process the files present at start: EPI files first, in acquisition order.

        With ``since`` (and not ``take_earlier``), files written before the start are only stat'ed here and set
        aside (their headers are read later, while intake is idle, to report them once per series); the newest of
        them are read now, so that a run already in progress is known before its next file comes. A file the run
        being resumed recorded makes its series followed, files written while the service was down included.
        """
        now = time.time()
        self._present = {str(Path(name)) for name in names}
        fresh, earlier = [], []  # earlier: (last write, name)
        for name in names:
            info = self._files[name] = _File(t_seen=now)
            checked = None
            if self._stale.active:
                try:
                    checked = self._target(Path(name))
                except OSError:
                    checked = None
            if isinstance(checked, tuple) and self._stale.before_start(checked[1].st_mtime_ns / 1e9):
                info.signature, info.state = (checked[1].st_size, checked[1].st_mtime_ns), "done"
                earlier.append((checked[1].st_mtime_ns / 1e9, name))
            else:
                fresh.append(name)
        resume = set(self.config.resume_files)
        if any(os.path.basename(name) in resume for name in names):  # its newest files may all be fresh ones
            for _, name in earlier:  # a restart mid-run: every file is read, the resumed run's series followed
                self._files[name] = _File(t_seen=now)
            self._follow_present(names, resume)
            return
        self._stale_queue = sorted(earlier)
        read_now, newest = 0, max(earlier)[0] if earlier else 0.0
        while self._stale_queue and read_now < 50 and newest - self._stale_queue[-1][0] < 10.0:  # a run in progress
            self._note_stale(*self._stale_queue.pop())
            read_now += 1
        if not self._stale_queue:
            self._report_stale()
        self._follow_present(fresh)

    def _follow_present(self, names: list[str], resume: Collection[str] = ()) -> None:
        """Read the headers of ``names`` and consider them in acquisition order, EPI first.

        Without a configured series, the newest EPI series present (by file time) is followed: a restarted service
        goes on with the run in progress, not with an earlier run left in the folder. With ``resume`` (the names
        the run being resumed recorded), that run's series is followed, and the other series written before the
        start are set aside.
        """
        now = time.time()
        rows: list[_Present] = []
        for name in names:
            try:
                checked = self._target(Path(name))
                if isinstance(checked, str):
                    raise IsADirectoryError(checked)  # reported when considered below
                raw, st = self._read_bytes(checked[0])
                got = read_image(name, raw, pixels=False)
                nifti = isinstance(got, Volume)
                run = f"nifti:{got.series}" if nifti else got.run_uid
                label = series_label(got.series_number, "NIfTI" if nifti else got.series_description)
                epi = nifti or got.exclusion is None
                sig = (st.st_size, st.st_mtime_ns)
                rows.append(_Present(epi, st.st_mtime, got.acquisition, name, run, self._on_grid(got), label, sig))
            except (IntakeError, OSError, RuntimeError):  # RuntimeError: a symlink loop (reported when considered)
                rows.append(_Present(False, 0.0, 0, name, None, False))
        resumed = {r.run for r in rows if r.run is not None and os.path.basename(r.name) in resume}
        if resumed:
            self._earlier_ok |= resumed
            keep = []
            for row in rows:
                if row.run is not None and row.run not in resumed and self._stale.before_start(row.mtime):
                    info = self._files[row.name]
                    info.state, info.signature = "done", row.signature
                    self._set_aside(row.run, row.label, Path(row.name), row.mtime, report=False)
                else:
                    keep.append(row)
            rows = keep
            self._report_stale()
        epi_rows = [r for r in rows if r.epi]
        on_grid = [r for r in epi_rows if r.on_grid]
        if resumed:
            self._series.prefer = max((r for r in rows if r.run in resumed), key=lambda r: r.mtime).run
            self._series.prefer_reason = "the series of the run being resumed"
            self._series.prefer_why = {r.run: "is not the series of the run being resumed" for r in epi_rows}
        elif epi_rows:
            self._series.prefer = max(on_grid or epi_rows, key=lambda r: r.mtime).run
            gridded = bool(on_grid) and self.config.reference_shape is not None
            self._series.prefer_reason = (
                "newest EPI series on the bundle's grid" if gridded else "newest EPI series present"
            ) + (", an earlier run taken (take_earlier)" if self.config.take_earlier else "")
            grid = "x".join(map(str, self.config.reference_shape or ()))
            self._series.prefer_why = {
                r.run: "is an earlier EPI series than the one followed"
                if r.on_grid or not on_grid
                else f"is not on the bundle's grid {grid}"
                for r in epi_rows
            }
        for row in sorted(rows, key=lambda r: (not r.epi, r.acquisition, r.name)):
            self._consider(row.name, now)
        self._series.prefer = None

    # ------------------------------------------------------------------ earlier runs
    def _set_aside(self, uid: str, label: str, path: Path, written: float, report: bool = True) -> None:
        """A file of an earlier run (written before the start): counted for its series' report, never followed;
        the series' new files are refused too (a run that began before the service did)."""
        new = self._stale.add(uid, label, path, written)
        self._series.stale.setdefault(
            uid,
            "began before serve started (files written before it): its new files are not followed either; to decode "
            "it, start serve again with --take-earlier-run",
        )
        if new and report and not self._stale_queue:  # after the start-up report: a series of its own line
            self._report_stale()

    def _report_stale(self) -> None:
        """One line per series set aside and not yet reported."""
        for _, path, reason in self._stale.unreported():
            self._emit_series(IntakeEvent("ignored", reason, path=path))

    def _note_stale(self, written: float, name: str) -> None:
        """Read the head of one file set aside at start, to name its series (a file that is no scanner volume is
        left out of the report, as it would be ignored anyway)."""
        try:
            with open(name, "rb") as f:
                head = f.read(_HEAD_BYTES)
                kind = sniff(Path(name), head[:132])
                if kind == "nifti":  # small, and its series may be in the data's name or header only
                    head += f.read()
                elif kind is None:
                    return
            try:
                got = read_image(name, head, pixels=False, sha256="-", kind=kind)
            except IncompleteFileError:  # a header longer than the head read (enhanced DICOM): the whole file
                got = read_image(name, Path(name).read_bytes(), pixels=False, sha256="-", kind=kind)
        except (IntakeError, OSError, RuntimeError, ValueError):
            return
        if isinstance(got, Volume):
            uid, label = f"nifti:{got.series}", series_label(got.series_number, "NIfTI")
        else:
            uid, label = got.run_uid, series_label(got.series_number, got.series_description)
        self._set_aside(uid, label, Path(name), written, report=False)

    def _stale_step(self, budget_s: float) -> None:
        """Name the series of the files set aside at start, newest first, for about ``budget_s`` seconds; once all
        are named, report each series once."""
        deadline = time.perf_counter() + budget_s
        while self._stale_queue:
            self._note_stale(*self._stale_queue.pop())
            if time.perf_counter() >= deadline:
                break
        if not self._stale_queue:
            self._report_stale()
