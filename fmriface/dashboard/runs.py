"""The session's run records, read for the dashboard: the list of runs, one run in full, and the live run's tail.

``serve`` writes ``<runs>/<run_id>/`` (``service/live/runlog.py``; ``docs/`` describes the layout). The published
stream does not carry the intake's problems (skipped volumes: incomplete, corrupt, gap, duplicate, late) nor the
displays' flip acks (on-screen latency); both are in the run's records, so with ``--runs`` the dashboard tails
``volumes.jsonl`` and ``flips.jsonl`` of the run it sees on the stream (:class:`Tail`, only complete lines), and
fills in the volumes it did not see published (a dashboard started or restarted during a run).

Only whitelisted fields leave this module: no path of the watched folder (which may name the patient), no
config. A run id is a folder name directly under the runs folder, never a path.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

from fmriface.dashboard.state import INTAKE_KINDS, as_int, as_number, as_text, record_point, scalars

__all__ = ["Tail", "list_runs", "run_detail", "valid_run_id"]

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
#: Runs listed at most (the newest first).
MAX_RUNS = 200


def valid_run_id(run_id: str) -> bool:
    """A run folder's name: letters, digits, ``.``, ``_``, ``-``; no path."""
    return bool(_RUN_ID.match(run_id)) and ".." not in run_id


class Tail:
    """The complete lines appended to a JSON-lines file since the last :meth:`read` (a torn last line waits).

    A file that shrank (a new run of the same name) is read again from the start; a line that is not JSON is
    skipped and counted in ``bad``.
    """

    def __init__(self, path: Path, max_bytes: int = 8 << 20) -> None:
        self.path = Path(path)
        self.offset = 0
        self.max_bytes = max_bytes
        self.bad = 0
        self._partial = b""

    def read(self) -> list[dict[str, Any]]:
        """The records completed since the last call; a line still being written waits for the next call."""
        try:
            size = self.path.stat().st_size
        except OSError:
            return []
        if size < self.offset:
            self.offset, self._partial = 0, b""
        if size == self.offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            chunk = f.read(min(size - self.offset, self.max_bytes))
        self.offset += len(chunk)
        data = self._partial + chunk
        cut = data.rfind(b"\n") + 1
        self._partial = data[cut:]
        out = []
        for line in data[:cut].splitlines():
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except (UnicodeDecodeError, json.JSONDecodeError):
                self.bad += 1
                continue
            if isinstance(rec, dict):
                out.append(rec)
        return out


def _manifest(run_dir: Path) -> dict[str, Any] | None:
    try:
        m = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return m if isinstance(m, dict) else None


def _brief(run_dir: Path, m: dict[str, Any]) -> dict[str, Any]:
    summary = m.get("summary") if isinstance(m.get("summary"), dict) else {}
    lat = summary.get("latency_ms") if isinstance(summary.get("latency_ms"), dict) else {}
    return {
        "run_id": run_dir.name,
        "state": as_text(m.get("state"), 20),
        "created": as_text(m.get("created"), 40),
        "ended": as_text(m.get("ended") or m.get("stopped"), 40),
        "restarts": as_int(m.get("restarts")) or 0,
        "reason": as_text(summary.get("reason"), 60),
        "volumes_ok": as_int(summary.get("volumes_ok")),
        "volumes_failed": as_int(summary.get("volumes_failed")),
        "trials": as_int(summary.get("trials")),
        "latency_p50_ms": as_number(lat.get("p50")),
        "latency_p99_ms": as_number(lat.get("p99")),
    }


def list_runs(root: Path | None) -> list[dict[str, Any]]:
    """The runs under ``root`` (newest first, at most :data:`MAX_RUNS`), each as a short summary."""
    if root is None or not Path(root).is_dir():
        return []
    dirs = []
    for d in Path(root).iterdir():
        if d.is_dir() and not d.is_symlink() and valid_run_id(d.name) and (d / "manifest.json").is_file():
            try:
                dirs.append(((d / "manifest.json").stat().st_mtime, d))
            except OSError:
                continue
    out = []
    for _, d in sorted(dirs, key=lambda x: x[0], reverse=True)[:MAX_RUNS]:
        m = _manifest(d)
        if m is not None:
            out.append(_brief(d, m))
    return out


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return Tail(path, max_bytes=1 << 30).read()


def run_detail(root: Path, run_id: str, limit: int = 4000) -> dict[str, Any] | None:
    """One run from its records: summary, per-volume points (the last ``limit``), problems, trials and flips;
    None when there is no such run."""
    if root is None or not valid_run_id(run_id):
        return None
    run_dir = Path(root) / run_id
    if not run_dir.is_dir() or run_dir.is_symlink():
        return None
    m = _manifest(run_dir)
    if m is None:
        return None
    points, problems = [], []
    intake = {k: 0 for k in INTAKE_KINDS}
    errors = discarded = 0
    for rec in _read_jsonl(run_dir / "volumes.jsonl"):
        status = rec.get("status")
        if status in ("ok", "discarded"):
            p = record_point(rec)
            if p["v"] is not None:
                points.append(p)
            discarded += status == "discarded"
        elif status in ("skipped", "error"):
            err = as_text(rec.get("error"), 300) or ""
            kind = "error" if status == "error" else err.split(":", 1)[0].strip()
            if kind in intake:
                intake[kind] += 1
            errors += status == "error"
            problems.append(
                {"kind": kind, "text": err, "v": as_int(rec.get("volume")), "acq": as_int(rec.get("acquisition"))}
            )
    flips = []
    for rec in _read_jsonl(run_dir / "flips.jsonl"):
        e2e = as_number(rec.get("e2e_s"))
        if e2e is not None:
            flips.append({"v": as_int(rec.get("volume")), "e2e": round(1000 * e2e, 3)})
    trials = []
    try:
        with open(run_dir / "trials.tsv", encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                trials.append(
                    {
                        "trial": as_text(row.get("trial"), 60),
                        "stim_id": as_text(row.get("stim_id")),
                        "trial_type": as_text(row.get("trial_type"), 60),
                        "first_volume": as_text(row.get("first_volume"), 12),
                        "last_volume": as_text(row.get("last_volume"), 12),
                        "feedback": as_text(row.get("feedback"), 20),
                    }
                )
    except (OSError, csv.Error, UnicodeDecodeError):
        pass
    points.sort(key=lambda p: p["v"])
    summary = m.get("summary") if isinstance(m.get("summary"), dict) else {}
    bundle = m.get("bundle_summary") if isinstance(m.get("bundle_summary"), dict) else {}
    return {
        **_brief(run_dir, m),
        "tr": as_number(m.get("tr")),
        "provider": as_text(m.get("provider"), 60),
        "bundle": scalars(bundle, limit=10),
        "summary": scalars(summary, limit=60),
        "counts": {
            "ok": len(points) - discarded,
            "discarded": discarded,
            "intake": intake,
            "errors": errors,
            "problems": len(problems),
        },
        "points": points[-limit:],
        "points_total": len(points),
        "problems": problems[-500:],
        "trials": trials[-500:],
        "flips": flips[-limit:],
    }
