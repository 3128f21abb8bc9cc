"""Run records: everything a ``serve`` run did, on disk, flushed volume by volume, resumable after a crash.

Layout of ``<root>/<run_id>/``:

``manifest.json``    run id, config, bundle path and hash, software versions, state (running, stopped or
                     ended), summary
``volumes.jsonl``    one line per volume taken: file (relative to the watched folder), SHA-256, acquisition,
                     stage timestamps, motion, FD, status (``ok``/``error``/``skipped``/``discarded``) and the error
``voxels.npy``       masked motion-corrected voxels of each ``ok`` volume [n, V] (resume replays them)
``latents.npy``      per-volume decoded latents [n, L]; ``volumes.jsonl`` gives each volume's row
``trial_latents.npy`` per-trial latents [m, L]; ``trials.tsv`` one row per published trial
``events.jsonl``     the experiment's events (whitelisted fields only); ``flips.jsonl`` display flip acks
                     with the end-to-end latency (file ready -> on screen)
``feedback.jsonl``   one line per frame and trial sent: the feedback shown, its latent row, and in a sham run
                     the participant's own (``real``) and which source frame or trial was shown
``session.json``     a run on another session's grid: its registration to the bundle's reference (offset,
                     residual, overlap, time) and the live grid
``intake.jsonl``     intake's decisions: which series is followed and why, which are ignored and why
``state.json``       sequence counters and the neurofeedback target, rewritten atomically
``serve.lock``       the one-writer lock (:class:`RunLock`): who holds the run (pid, host, start time)
``space.reserve``    space held back while the run is open, given up to close it on a full disk

A line is written and flushed after its arrays, so after a crash every line refers to rows that exist; on
restart rows beyond the last line are dropped and the run goes on with the same numbering. No patient field is
ever written: records are built from whitelisted keys.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from service import jsonsafe as strict_json
from service.jsonsafe import jsonable as _jsonable
from service.live.npy import AppendNpy

log = logging.getLogger("service.runlog")

__all__ = [
    "RunLog",
    "RunLock",
    "RunLockedError",
    "ResumeState",
    "TRIAL_COLUMNS",
    "EVENT_FIELDS",
    "TSV_FIELD_MAX",
    "read_volumes",
    "read_records",
    "read_trials",
    "RecordError",
]

TRIAL_COLUMNS = (
    "trial",
    "stim_id",
    "trial_type",
    "onset",
    "duration",
    "first_volume",
    "last_volume",
    "seq",
    "latent_row",
    "feedback",
    "t_sent",
)
#: Fields of an inbound event kept in the record (anything else the experiment sends is dropped).
EVENT_FIELDS = (
    "kind",
    "seq",
    "sent",
    "received",
    "trigger_time",
    "onset",
    "duration",
    "trial_type",
    "stim_id",
    "trial",
)
#: The longest value a ``trials.tsv`` field is written with (longer ones are cut, ending in ``...``): the
#: inbound limits keep peers' strings far shorter; this bounds what any reader of the table must take.
TSV_FIELD_MAX = 4096
#: Bytes held back in ``space.reserve`` while a run is open: on a full disk they are given up so that the
#: manifest and ``report.md`` can still say how the run ended.
RESERVE_BYTES = 256 << 10


class RunLockedError(RuntimeError):
    """Another process holds the run (its :class:`RunLock`); the message names it."""

    user_error = True


class RunLock:
    """One writer per run: an exclusive ``fcntl.flock`` on ``<run>/serve.lock``, held for the writer's lifetime.

    The kernel releases it when the process dies (a SIGKILL too), so a crashed run can be resumed at once, while
    a second ``serve`` on a run that is being written is refused before it writes anything. The holder writes its
    pid, host and start time into the file, so the refusal can name it.

    Parameters
    ----------
    run_dir : path
        The run's folder (created if missing).
    """

    NAME = "serve.lock"

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / self.NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._fd is not None

    def acquire(self) -> RunLock:
        """Take the lock without waiting; raise :class:`RunLockedError` naming the holder if another has it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise RunLockedError(
                f"run {self.path.parent} is being written by another process ({_holder_text(holder)}); "
                "stop that serve first, or pass another --run-id or --runs folder"
            ) from None
        started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        text = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started}) + "\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Let the lock go (the file stays: it names the last holder)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:  # a holder dropped without release (a start that failed in a test)
        self.release()


def _holder_text(raw: str) -> str:
    try:
        h = json.loads(raw)
        return f"pid {h['pid']} on {h['host']}, started {h['started']}"
    except (ValueError, KeyError, TypeError):
        return "a process that has not yet written its name"


@dataclass
class ResumeState:
    """What an earlier process of the same run left behind."""

    resumed: bool = False
    volumes: list[dict[str, Any]] = field(default_factory=list)
    voxels: np.ndarray | None = None  # [n_ok, V]
    events: list[dict[str, Any]] = field(default_factory=list)
    trials: list[dict[str, str]] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)
    session: dict[str, Any] | None = None  # session.json: the registration of a run on another grid


def _cut_torn_line(path: Path) -> bytes:
    """The complete lines of a record file; a torn last line (crash mid-write) is cut off the file."""
    raw = path.read_bytes()
    keep = raw.rfind(b"\n") + 1
    if keep != len(raw):
        with open(path, "r+b") as f:
            f.truncate(keep)
    return raw[:keep]


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Complete lines of a JSON-lines file (a torn last line is cut off the file)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in _cut_torn_line(path).decode("utf-8").splitlines() if line.strip()]


class RecordError(ValueError):
    """A run record that is damaged (not a crash's torn last line); the message names the file and the line."""

    user_error = True


def read_records(path: str | Path, torn: list[int] | None = None) -> list[dict[str, Any]]:
    """The lines of a JSON-lines record, read without changing the file (another run's, or one still written):
    a torn last line (a crash while it was written) is left out, and its number (1-based) appended to ``torn``
    when given, so that the caller can say so; any other line that is not JSON raises :class:`RecordError`; a
    missing file has no lines."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if n != len(lines):
                raise RecordError(f"{path} line {n} is not JSON: {exc.msg}") from None
            if torn is not None:
                torn.append(n)
    return out


def read_trials(path: str | Path) -> list[dict[str, str]]:
    """The rows of a run's ``trials.tsv`` (header, then one row per trial), read without changing the file.

    The writer never quotes (tabs and newlines in a value become spaces), so the table is split on tabs: no
    field is too large to read and no quote character changes the columns. A torn last line (a crash while it
    was written) is left out.
    """
    path = Path(path)
    if not path.exists():
        return []
    raw = path.read_bytes()
    lines = raw[: raw.rfind(b"\n") + 1].decode("utf-8", "replace").splitlines()
    if not lines:
        return []
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"))) for line in lines[1:] if line]


def read_volumes(run_dir: str | Path) -> list[dict[str, Any]]:
    """The volume records of a run folder."""
    return _read_jsonl(Path(run_dir) / "volumes.jsonl")


def _atomic_json(path: Path, obj: Any) -> None:
    _atomic_text(path, json.dumps(obj, indent=1, default=_jsonable) + "\n")


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


class RunLog:
    """The records of one run; :meth:`open` creates them or resumes them.

    Parameters
    ----------
    root : path
        Folder holding the runs (``runs/``).
    run_id : str
        The run's folder name.
    latent_size, n_voxels : int
        Row sizes of the latent and voxel arrays.
    fsync : bool
        Also ``os.fsync`` each volume line (survives a power cut, costs ~1 ms on most disks).
    """

    def __init__(self, root: str | Path, run_id: str, latent_size: int, n_voxels: int, fsync: bool = False) -> None:
        self.dir = Path(root) / run_id
        self.run_id = run_id
        self.fsync = fsync
        self.latents = AppendNpy(self.dir / "latents.npy", (latent_size,))
        self.trial_latents = AppendNpy(self.dir / "trial_latents.npy", (latent_size,))
        self.voxels = AppendNpy(self.dir / "voxels.npy", (n_voxels,))
        self.manifest: dict[str, Any] = {}
        self._files: dict[str, Any] = {}

    def open(self, manifest: dict[str, Any]) -> ResumeState:
        """Create the run folder, or resume it if an unfinished run of this id is there."""
        self.dir.mkdir(parents=True, exist_ok=True)
        mpath = self.dir / "manifest.json"
        rs = ResumeState()
        if mpath.exists():
            old = json.loads(mpath.read_text())
            if old.get("state") == "ended":
                raise FileExistsError(f"run {self.dir} already ended; choose another --run-id or --runs folder")
            rs.resumed = True
            rs.volumes = _read_jsonl(self.dir / "volumes.jsonl")
            rs.events = _read_jsonl(self.dir / "events.jsonl")
            spath = self.dir / "state.json"
            rs.state = json.loads(spath.read_text()) if spath.exists() else {}
            session = self.dir / "session.json"
            rs.session = json.loads(session.read_text()) if session.exists() else None
            rs.trials = self._read_trials()
            manifest = {**old, **manifest, "created": old.get("created"), "restarts": old.get("restarts", 0) + 1}
        ok = [v for v in rs.volumes if v.get("status") == "ok"]
        self.voxels.open(keep_rows=len(ok))
        self.latents.open(keep_rows=sum(1 for v in ok if v.get("latent_row") is not None))
        self.trial_latents.open(keep_rows=len(rs.trials))
        if len(ok) and self.voxels.rows != len(ok):
            raise ValueError(f"{self.voxels.path} has {self.voxels.rows} rows, volumes.jsonl records {len(ok)}")
        rs.voxels = self.voxels.read() if rs.resumed else None
        self.manifest = {"state": "running", **manifest, "run_id": self.run_id}
        self.manifest.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        _atomic_json(mpath, self.manifest)
        self._reserve()
        if (self.dir / "feedback.jsonl").exists():
            _cut_torn_line(self.dir / "feedback.jsonl")
        for name in ("volumes.jsonl", "events.jsonl", "flips.jsonl", "intake.jsonl", "feedback.jsonl"):
            self._files[name] = open(self.dir / name, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        new_tsv = not (self.dir / "trials.tsv").exists()
        self._files["trials.tsv"] = open(self.dir / "trials.tsv", "a", encoding="utf-8", newline="")  # noqa: SIM115
        if new_tsv:
            self._files["trials.tsv"].write("\t".join(TRIAL_COLUMNS) + "\n")
            self._files["trials.tsv"].flush()
        return rs

    def _read_trials(self) -> list[dict[str, str]]:
        path = self.dir / "trials.tsv"
        if not path.exists():
            return []
        _cut_torn_line(path)
        return read_trials(path)

    def _reserve(self) -> None:
        """Hold :data:`RESERVE_BYTES` back in ``space.reserve`` (given up by :meth:`release_space`)."""
        try:
            with open(self.dir / "space.reserve", "wb") as f:
                f.write(bytes(RESERVE_BYTES))
        except OSError as exc:  # a disk already full: the run fails at its first record, and says so
            log.warning("run %s: no space could be held back for its close: %s", self.run_id, exc.strerror or exc)

    def release_space(self) -> None:
        """Give up the space held back for the close (``space.reserve``), so the manifest and the report can
        be written on a disk that filled up during the run."""
        (self.dir / "space.reserve").unlink(missing_ok=True)

    def _line(self, name: str, record: dict[str, Any], sync: bool = False) -> None:
        f = self._files[name]
        f.write(strict_json.dumps(record) + "\n")
        f.flush()
        if sync:
            os.fsync(f.fileno())

    def volume(self, record: dict[str, Any], voxels: np.ndarray | None, latent: np.ndarray | None) -> dict[str, Any]:
        """Record one volume (arrays first, then its line); returns the record with its array rows."""
        if voxels is not None:
            record["voxel_row"] = self.voxels.append(voxels)
        if latent is not None:
            record["latent_row"] = self.latents.append(latent)
        self._line("volumes.jsonl", record, self.fsync)
        return record

    def trial(self, row: dict[str, Any], latent: np.ndarray) -> int:
        """Record one published trial and its latent; returns its row in ``trial_latents.npy``."""
        row = {**row, "latent_row": self.trial_latents.append(latent)}
        f = self._files["trials.tsv"]
        f.write("\t".join(_tsv(row.get(c)) for c in TRIAL_COLUMNS) + "\n")
        f.flush()
        return row["latent_row"]

    def feedback(self, record: dict[str, Any]) -> None:
        """Record the feedback of one message sent (``topic``, ``volume`` or ``trial``, ``seq``, ``latent_row``,
        ``shown``; in a sham run also ``real`` and ``source``), after the record it refers to."""
        self._line("feedback.jsonl", record)

    def event(self, header: dict[str, Any]) -> None:
        """Record an inbound event (whitelisted fields)."""
        self._line("events.jsonl", {k: header[k] for k in EVENT_FIELDS if k in header})

    def save_session(self, record: dict[str, Any]) -> None:
        """The session registration of a run on another grid (offset, residual, time, the live grid), atomically."""
        _atomic_json(self.dir / "session.json", record)

    def intake(self, kind: str, reason: str, path: Any = None) -> None:
        """Record one of intake's decisions (the series followed, a series or file ignored): the file name only,
        never its folder (export folders are often named after the patient)."""
        record: dict[str, Any] = {"kind": kind, "reason": reason, "t": time.time()}
        if path is not None:
            record["file"] = Path(path).name
        self._line("intake.jsonl", record)

    def flip(self, record: dict[str, Any]) -> None:
        """Record a display's flip ack."""
        self._line("flips.jsonl", record)

    def save_state(self, state: dict[str, Any], target_json: str | None = None) -> None:
        """Sequence counters and target, rewritten atomically (read back on resume). ``target_json``: the
        target already encoded as JSON, stored under ``"target"`` without encoding it again."""
        if target_json is None:
            _atomic_json(self.dir / "state.json", state)
            return
        text = json.dumps(state, default=_jsonable)
        _atomic_text(self.dir / "state.json", f'{text[:-1]}{", " if state else ""}"target": {target_json}}}\n')

    def close(self, summary: dict[str, Any] | None = None, ended: bool = True) -> None:
        """Close the files; the manifest is marked ``ended`` (a later start makes a new run) or ``stopped``
        (interrupted, or stopped by an error: a later start with the same run id resumes it).

        The space held back at :meth:`open` is given up first, so a disk that filled up during the run still
        takes the manifest; a file that cannot be closed (its last buffered write failing) does not keep the
        manifest from being written, and the first such error is raised after it.
        """
        self.release_space()
        first_error: OSError | None = None
        for f in [*self._files.values(), self.voxels, self.latents, self.trial_latents]:
            try:
                f.close()
            except OSError as exc:
                first_error = first_error or exc
        self._files.clear()
        if summary is not None:
            self.manifest["summary"] = summary
        self.manifest["state"] = "ended" if ended else "stopped"
        self.manifest["ended" if ended else "stopped"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        _atomic_json(self.dir / "manifest.json", self.manifest)
        if first_error is not None:
            raise first_error


def _tsv(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.6f}"
    text = str(v).replace("\t", " ").replace("\n", " ").replace("\r", " ")
    return text if len(text) <= TSV_FIELD_MAX else text[: TSV_FIELD_MAX - 3] + "..."


class GuardedRunLog:
    """A :class:`RunLog` whose writes cannot take the live path down: the first write that fails (disk full,
    permissions, the folder gone) is kept as :attr:`failure`, logged once, and later writes are skipped; ``serve``
    then ends the run cleanly, with an ``end`` message that says why. Everything else is the run log's own."""

    _WRITES = ("volume", "trial", "event", "flip", "intake", "save_state", "save_session", "feedback")

    def __init__(self, runlog: RunLog) -> None:
        self._runlog = runlog
        self.failure: str | None = None

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._runlog, name)
        if name not in self._WRITES:
            return value

        def guarded(*args: Any, **kwargs: Any) -> Any:
            if self.failure is not None:
                return None
            try:
                return value(*args, **kwargs)
            except OSError as exc:
                self.failure = f"run records cannot be written ({name}): {exc.strerror or exc}"
                log.error("%s; the run ends", self.failure)
                return None

        return guarded
