"""The tables of a run's BIDS copy, built from its records: ``_events.tsv``, the confounds and the trial latents.

All three are written when the run closes (or by ``fmriface bids-finish``), from ``manifest.json``,
``events.jsonl``, ``volumes.jsonl``, ``trials.tsv`` and ``trial_latents.npy`` (docs/runs.md), so a run finished
after a crash gets the same tables as one that closed. Values are tab-separated, ``n/a`` where missing.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["run_events", "write_events", "write_confounds", "write_trial_latents", "CONFOUND_COLUMNS"]

MOTION = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")
#: fMRIPrep's names of the QA's columns, and the ``volumes.jsonl`` QA keys they come from.
QA_COLUMNS = {
    "framewise_displacement": "fd",
    "dvars": "dvars",
    "std_dvars": "std_dvars",
    "global_signal": "global_signal",
}
CONFOUND_COLUMNS = (*MOTION, *QA_COLUMNS, "censored")
_UNITS = {"trans_x": "mm", "trans_y": "mm", "trans_z": "mm", "rot_x": "rad", "rot_y": "rad", "rot_z": "rad"}


def _text(value: Any, fmt: str = "{:.6g}") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return fmt.format(value)
    text = " ".join(str(value).split())
    return text or "n/a"


def _write_tsv(path: Path, columns: list[str] | tuple[str, ...], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    lines = ["\t".join(columns), *("\t".join(r) for r in rows)]
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)


def _jsonl(path: Path) -> list[dict[str, Any]]:
    """The whole lines of a JSON-lines record (a torn last line is left out)."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def run_events(run_dir: str | Path) -> list[dict[str, Any]]:
    """The run's onset events in order of onset: the ``--events`` file its manifest names, then the
    experiment's (``events.jsonl``); a trial key seen before is not repeated (as the service's ``TrialBook``)."""
    from service.live.trials import read_events_tsv

    run_dir = Path(run_dir)
    try:
        manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        manifest = {}
    given = (manifest.get("config") or {}).get("events")
    events = read_events_tsv(given) if given and Path(given).is_file() else []
    events += [e for e in _jsonl(run_dir / "events.jsonl") if e.get("kind") == "onset"]
    seen: set[str] = set()
    out = []
    for e in events:
        key = None if e.get("trial") is None else str(e["trial"])
        if key is not None and key in seen:
            continue
        seen.add(key) if key is not None else None
        out.append(e)
    return sorted(out, key=lambda e: float(e["onset"]))


def _stimulus_sources(run_dir: Path) -> list[Path]:
    """``stimuli/`` folders of the data set the ``--events`` file belongs to (its nearest ancestor with one)."""
    try:
        given = (json.loads((run_dir / "manifest.json").read_text(encoding="utf-8")).get("config") or {}).get("events")
    except (OSError, json.JSONDecodeError):
        return []
    if not given:
        return []
    return [p / "stimuli" for p in Path(given).resolve().parents if (p / "stimuli").is_dir()][:1]


def _stim_file(stim: str, root: Path, sources: list[Path]) -> str | None:
    """``stim`` when it is (or has just been copied) under ``root/stimuli``, else None (BIDS: it must exist)."""
    import shutil

    target = root / "stimuli" / stim
    if ".." in Path(stim).parts or Path(stim).is_absolute():
        return None
    if target.is_file():
        return stim
    for src in sources:
        if (src / stim).is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / stim, target)
            return stim
    return None


def _copy_attribute_table(root: Path, sources: list[Path]) -> None:
    """The stimuli's attribute table (``stimuli/stimuli.tsv``) beside the copied images, when the source data set
    has one and the copy does not: the fit reads the attributes (its gender evaluation) from there."""
    import shutil

    target = root / "stimuli" / "stimuli.tsv"
    if target.is_file():
        return
    for src in sources:
        for table in (src / "stimuli.tsv", src.parent / "derivatives" / "twin" / "stimuli.tsv"):
            if table.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(table, target)
                return


def write_events(run_dir: str | Path, path: Path, root: Path | None = None) -> Path:
    """``_events.tsv``: onset, duration, trial_type, stim_file of every onset event the run had.

    A stimulus is copied into ``root/stimuli/`` from the ``--events`` file's data set when it is not there; one
    found nowhere has ``stim_file`` ``n/a`` (BIDS requires the file) and its id in a ``stim_id`` column.
    """
    run_dir = Path(run_dir)
    sources = _stimulus_sources(run_dir)
    if root is not None:
        _copy_attribute_table(root, sources)
    rows, missing = [], False
    for e in run_events(run_dir):
        stim = str(e.get("stim_id") or "")
        found = _stim_file(stim, root, sources) if stim and root is not None else None
        missing = missing or bool(stim and found is None)
        row = [f"{float(e['onset']):.3f}", f"{float(e.get('duration') or 0.0):.3f}", _text(e.get("trial_type"))]
        rows.append([*row, _text(found), _text(stim or None)])
    columns = ["onset", "duration", "trial_type", "stim_file", "stim_id"]
    if not missing:
        columns, rows = columns[:4], [r[:4] for r in rows]
    _write_tsv(path, columns, rows)
    return path


def write_confounds(run_dir: str | Path, path: Path, tr: float | None = None) -> Path:
    """``_desc-confounds_timeseries.tsv`` (+ ``.json``): one row per volume of the BIDS run, fMRIPrep's names.

    The motion within the session (``trans_*`` mm, ``rot_*`` radians, fMRIPrep's units: the records keep
    degrees), the QA's framewise displacement, DVARS, standardised DVARS and global signal, and ``censored`` (0/1);
    ``n/a`` where a volume was not processed or a metric is not yet defined.
    """
    records = {int(r["volume"]): r for r in _jsonl(Path(run_dir) / "volumes.jsonl") if r.get("volume") is not None}
    n = max(records, default=-1) + 1
    rows = []
    for k in range(n):
        rec = records.get(k, {})
        motion = rec.get("motion") or [None] * 6
        values = [_text(v, "{:.6f}") for v in motion[:3]]
        values += [_text(None if v is None else math.radians(v), "{:.8f}") for v in motion[3:6]]
        qa = rec.get("qa") or {}
        values += [_text(qa.get(key)) for key in QA_COLUMNS.values()]
        values.append("n/a" if not qa else str(int(bool(qa.get("censored")))))
        rows.append(values)
    _write_tsv(path, CONFOUND_COLUMNS, rows)
    meta: dict[str, Any] = {c: {"Units": u} for c, u in _UNITS.items()}
    meta["framewise_displacement"] = {"Units": "mm", "Description": "the service's FD (docs/motion.md)"}
    meta["censored"] = {"Description": "1: the service's QA censored the volume (docs/qa.md)"}
    if tr:
        meta["RepetitionTime"] = float(tr)
    path.with_name(path.name.replace(".tsv", ".json")).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return path


def write_trial_latents(run_dir: str | Path, path: Path) -> Path:
    """``_desc-decoded_trials.tsv``: each published trial (onset, duration, trial_type, stim_file, trial) and its
    decoded latent (``latent_000`` ...), from ``trials.tsv`` and ``trial_latents.npy``."""
    run_dir = Path(run_dir)
    trials: list[dict[str, str]] = []
    if (run_dir / "trials.tsv").is_file():
        with open(run_dir / "trials.tsv", encoding="utf-8", newline="") as f:
            trials = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    latents = np.zeros((0, 0), np.float32)
    if (run_dir / "trial_latents.npy").is_file():
        latents = np.load(run_dir / "trial_latents.npy", mmap_mode="r")
    width = latents.shape[1] if latents.ndim == 2 else 0
    columns = ["onset", "duration", "trial_type", "stim_file", "trial", *(f"latent_{i:03d}" for i in range(width))]
    rows = []
    for t in trials:
        row = t.get("latent_row", "n/a")
        if not row.isdigit() or int(row) >= len(latents):
            continue
        values = [
            t.get("onset", "n/a"),
            t.get("duration", "n/a"),
            t.get("trial_type", "n/a"),
            t.get("stim_id") or "n/a",
        ]
        rows.append([*values, t.get("trial", "n/a"), *(f"{v:.6g}" for v in latents[int(row)])])
    _write_tsv(path, columns, rows)
    return path
