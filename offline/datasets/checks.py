"""Every input of a fit checked before the first expensive step, every problem named at once.

``fmriface fit`` realigns for minutes before it reads the stimuli, and reads each run only when its turn comes: a
missing stimulus or a truncated run used to surface after half a minute, one at a time. :func:`check_inputs` reads
what the fit will read, cheaply (headers, tables, file sizes, one streaming pass over a compressed run, no
array kept) and returns a list of problems, each naming its file; ``offline.fit.prepare`` refuses to start while
the list is not empty.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from offline.datasets.bids import (
    BidsError,
    BidsRun,
    _entities,
    _read_events,
    _sidecar_tr,
    _stimulus_path,
    bold_files,
)

__all__ = ["check_inputs", "FIT_KINDS", "STIMULUS_TRIAL_TYPES"]

#: The kinds of run a fit uses.
FIT_KINDS = ("train", "test", "imagery")
#: The trial types whose rows must name a stimulus file, by kind of run.
STIMULUS_TRIAL_TYPES = {"train": ("train_face",), "test": ("test_face",), "imagery": ("Img",)}
_LISTED = 5  # names listed per problem before "and N more"


def check_inputs(root: str | Path, subject: str | None = None, kinds: tuple[str, ...] = FIT_KINDS) -> list[str]:
    """The problems of a subject's inputs to a fit (empty when it can start), each naming its file.

    Checks, for every run of the ``kinds`` the fit uses: the NIfTI header loads, the image is 4-D and its data
    is all there (a truncated file, compressed or not, is found without loading it); the events table parses,
    with ``onset``, ``duration``, ``trial_type`` and ``stim_file``, finite onsets and durations, and a stimulus on
    every face and imagery row; every stimulus file exists; the runs share one TR, the runs of a session one grid,
    and there are training and test runs.
    """
    root = Path(root)
    try:
        sub, bolds = bold_files(root, subject)
    except BidsError as exc:
        return [str(exc)]
    problems: list[str] = []
    stimuli: dict[str, Path] = {}  # stim_file -> the events file that first names it
    used: list[tuple[str, str, tuple[int, ...], float | None]] = []  # (run, session, shape, tr)
    for bold in bolds:
        ent = _entities(bold.name)
        stem = bold.name.split(".nii")[0].removesuffix("_bold")
        events_path = bold.with_name(stem + "_events.tsv")
        try:
            events = _read_events(events_path)
        except BidsError as exc:
            problems.append(str(exc))
            continue
        kind = BidsRun(bold, sub, ent.get("ses", ""), ent.get("task", ""), ent.get("run", ""), 0.0, events).kind
        if kind not in kinds:
            continue
        problems += _event_problems(events_path, events, STIMULUS_TRIAL_TYPES.get(kind, ()), stimuli)
        shape, problem = _image_problem(bold)
        if problem:
            problems.append(problem)
        try:
            tr = _sidecar_tr(bold, root, ent.get("task", ""))
        except BidsError as exc:
            problems.append(str(exc))
            tr = None
        if tr is None and shape is not None and len(shape) == 4:
            tr = _header_tr(bold)
        used.append((kind, ent.get("ses", ""), shape or (), tr))
    problems += _stimulus_problems(root, stimuli)
    problems += _consistency_problems(root, sub, used)
    return problems


def _event_problems(path: Path, ev: pd.DataFrame, stim_types: tuple[str, ...], stimuli: dict[str, Path]) -> list[str]:
    out = []
    for col in ("onset", "duration"):
        values = pd.to_numeric(ev[col], errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            out.append(f"{path}: {col} is not a finite number on {_rows(bad)}")
    faces = ev["trial_type"].astype(str).isin(stim_types)
    missing = np.flatnonzero(faces.to_numpy() & ev["stim_file"].isna().to_numpy())
    if missing.size:
        out.append(f"{path}: no stim_file on {_rows(missing)} ({', '.join(stim_types)} trials name their stimulus)")
    for s in ev.loc[faces & ev["stim_file"].notna(), "stim_file"].astype(str):
        stimuli.setdefault(s, path)
    return out


def _rows(index: np.ndarray) -> str:
    rows = [str(int(i) + 2) for i in index[:_LISTED]]  # the file's line: the header is line 1
    more = f" and {index.size - _LISTED} more" if index.size > _LISTED else ""
    return f"line{'s' if index.size > 1 else ''} {', '.join(rows)}{more}"


def _image_problem(bold: Path) -> tuple[tuple[int, ...] | None, str | None]:
    """(shape, problem): the NIfTI header loads, the image is 4-D, and all its data is in the file."""
    import nibabel as nib

    try:
        img = nib.load(str(bold))
        shape = tuple(int(n) for n in img.shape)
        offset = int(getattr(img.dataobj, "offset", 0) or img.header.get_data_offset())  # where the data begins
        nbytes = int(np.prod(shape)) * img.header.get_data_dtype().itemsize
    except Exception as exc:  # noqa: BLE001 - nibabel raises many kinds
        return None, f"{bold} is not a readable NIfTI file: {exc}"
    if len(shape) != 4:
        return shape, f"{bold} must be 4-D (x, y, z, time), has shape {shape}"
    need = offset + nbytes
    try:
        have = _gzip_size(bold) if bold.name.endswith(".gz") else bold.stat().st_size
    except (OSError, EOFError, zlib.error) as exc:
        return (
            shape,
            f"{bold} is truncated or damaged ({type(exc).__name__}: {exc}); its {shape[3]} volumes cannot be read",
        )
    if have < need:
        return shape, f"{bold} is truncated: {have} bytes of image data where shape {shape} needs {need}"
    return shape, None


def _gzip_size(path: Path) -> int:
    """The uncompressed size of a gzip file, by one streaming pass (EOFError if it is cut short)."""
    total = 0
    with gzip.open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            total += len(chunk)
    return total


def _header_tr(bold: Path) -> float | None:
    import nibabel as nib

    zooms = nib.load(str(bold)).header.get_zooms()
    return float(zooms[3]) if len(zooms) > 3 and zooms[3] > 0 else None


def _stimulus_problems(root: Path, stimuli: dict[str, Path]) -> list[str]:
    index: dict[str, Path] = {}
    if not all((root / "stimuli" / s).is_file() for s in stimuli) and (root / "stimuli").is_dir():
        index = {p.name: p for p in (root / "stimuli").rglob("*") if p.is_file()}
    missing: dict[Path, list[str]] = {}
    for s, events in stimuli.items():
        try:
            _stimulus_path(root, s, index)
        except BidsError:
            missing.setdefault(events, []).append(s)
    out = []
    for events, names in missing.items():
        more = f" and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
        listed = ", ".join(repr(n) for n in names[:_LISTED])
        out.append(f"{events}: {len(names)} stimulus file(s) not found under {root / 'stimuli'}: {listed}{more}")
    return out


def _consistency_problems(
    root: Path, sub: str, used: list[tuple[str, str, tuple[int, ...], float | None]]
) -> list[str]:
    out = []
    kinds = {kind for kind, *_ in used}
    if "train" not in kinds or "test" not in kinds:
        found = {k: sum(u[0] == k for u in used) for k in FIT_KINDS}
        out.append(f"{root / ('sub-' + sub)}: fitting needs training and test runs of faces; found {found}")
    trs = sorted({round(tr, 6) for *_, tr in used if tr is not None})
    if len(trs) > 1:
        out.append(f"{root / ('sub-' + sub)}: runs have different TRs {trs}; fit one TR at a time")
    grids: dict[str, set[tuple[int, ...]]] = {}
    for _, ses, shape, _ in used:
        if len(shape) == 4:
            grids.setdefault(ses, set()).add(shape[:3])
    for ses, shapes in grids.items():
        if len(shapes) > 1:
            label = f"session {ses}" if ses else "the subject's runs"
            out.append(f"{root / ('sub-' + sub)}: {label} has runs on different grids {sorted(shapes)}")
    return out
