"""Load a BIDS data set laid out like ds001761: the digital twin, ds001761 itself or a lab's own data.

Reads ``sub-XX[/ses-YY]/func/*_bold.nii.gz`` with their ``_events.tsv`` (``onset, duration, trial_type,
stim_file``; trial types ``train_face | test_face | Fix | Img``) and the RepetitionTime of the ``_bold.json``
sidecar (inherited from the top-level ``task-X_bold.json`` per the BIDS inheritance rule, else the NIfTI
header). Stimuli are found from ``stim_file``, a path relative to ``stimuli/``. Plain pathlib + pandas: pybids
is a development extra only.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "BidsError",
    "BidsRun",
    "BidsSubject",
    "bold_files",
    "load_bids",
    "load_stimuli",
    "stimulus_table",
    "SHARED_LIST",
]

#: The faces every subject of a group saw, in a data set (one ``stim_file`` per row): what ``fit --align-to``
#: aligns a new subject on (:mod:`offline.decoding.alignment`); the group twin writes it (:mod:`offline.twin.group`).
SHARED_LIST = "stimuli/shared.tsv"

_ENTITY = re.compile(r"(sub|ses|task|acq|run)-([a-zA-Z0-9]+)")


class BidsError(ValueError):
    """A BIDS folder or file that cannot be used; the message names it."""

    user_error = True


@dataclass(frozen=True)
class BidsRun:
    """One functional run: its files, TR, events and what kind of run it is."""

    bold: Path
    subject: str
    session: str
    task: str
    run: str
    tr: float
    events: pd.DataFrame = field(repr=False)

    @property
    def name(self) -> str:
        """The file stem without ``_bold``, e.g. ``sub-01_ses-01_task-faces_run-01``."""
        return self.bold.name.split(".nii")[0].removesuffix("_bold")

    @property
    def kind(self) -> str:
        """``train``, ``test``, ``imagery``, ``localizer`` or ``other``, from the trial types present."""
        types = set(self.events["trial_type"].astype(str)) if len(self.events) else set()
        if "train_face" in types:
            return "train"
        if "test_face" in types:
            return "test"
        if "Img" in types or self.task == "imagery":
            return "imagery"
        if self.task.startswith("loc"):
            return "localizer"
        return "other"

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """The run's data ``float32 [X, Y, Z, T]`` (scaled as the header says) and its affine."""
        import nibabel as nib

        try:
            img = nib.load(str(self.bold))
            data = np.asarray(img.dataobj, dtype=np.float32)
        except Exception as exc:  # noqa: BLE001 - nibabel raises many kinds
            raise BidsError(f"{self.bold} is not a readable NIfTI file: {exc}") from None
        if data.ndim != 4:
            raise BidsError(f"{self.bold} must be 4-D (x, y, z, time), has shape {data.shape}")
        return data, np.asarray(img.affine, dtype=np.float64)


@dataclass(frozen=True)
class BidsSubject:
    """A subject's functional runs in acquisition order (session, then run number, then task)."""

    root: Path
    subject: str
    runs: tuple[BidsRun, ...]

    def of_kind(self, kind: str) -> list[BidsRun]:
        """The runs of one kind (as :attr:`BidsRun.kind` names it), in acquisition order."""
        return [r for r in self.runs if r.kind == kind]

    def summary(self) -> dict:
        """A JSON-friendly summary: root folder, subject, and the number of runs of each kind."""
        kinds: dict[str, int] = {}
        for r in self.runs:
            kinds[r.kind] = kinds.get(r.kind, 0) + 1
        return {"root": str(self.root), "subject": self.subject, "runs": kinds}


def _entities(name: str) -> dict[str, str]:
    return dict(_ENTITY.findall(name))


def _sidecar_tr(bold: Path, root: Path, task: str) -> float | None:
    """RepetitionTime from the nearest ``_bold.json`` (run file first, then up the BIDS inheritance chain)."""
    stem = bold.name.split(".nii")[0]
    candidates = [bold.with_name(stem + ".json")]
    parent = bold.parent
    while parent != root.parent and root in (parent, *parent.parents):
        candidates += sorted(parent.glob(f"*task-{task}*_bold.json"))
        parent = parent.parent
    for path in candidates:
        if path.is_file():
            try:
                meta = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise BidsError(f"{path} is not valid JSON: {exc}") from None
            if "RepetitionTime" in meta:
                return float(meta["RepetitionTime"])
    return None


def _read_events(path: Path) -> pd.DataFrame:
    if not path.is_file():
        return pd.DataFrame({"onset": [], "duration": [], "trial_type": [], "stim_file": []})
    try:
        ev = pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False)
    except Exception as exc:  # noqa: BLE001
        raise BidsError(f"{path} is not a readable TSV file: {exc}") from None
    missing = [c for c in ("onset", "duration", "trial_type") if c not in ev.columns]
    if missing:
        raise BidsError(f"{path} lacks the column{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    if "stim_file" not in ev.columns:
        ev["stim_file"] = np.nan
    return ev


def bold_files(root: str | Path, subject: str | None = None) -> tuple[str, list[Path]]:
    """The subject's label and its functional runs' NIfTI files, sorted by path; a BidsError names what is
    missing (the folder, ``dataset_description.json``, the subject, any run)."""
    root = Path(root)
    if not root.is_dir():
        raise BidsError(f"--bids {root} is not a folder")
    if not (root / "dataset_description.json").is_file():
        raise BidsError(f"{root} is not a BIDS data set (no dataset_description.json)")
    subjects = sorted(p.name.removeprefix("sub-") for p in root.glob("sub-*") if p.is_dir())
    if not subjects:
        raise BidsError(f"{root} has no sub-* folder")
    sub = subjects[0] if subject is None else str(subject).removeprefix("sub-")
    if sub not in subjects:
        raise BidsError(f"{root} has no subject {sub!r}; it has {', '.join(subjects)}")
    bolds = sorted((root / f"sub-{sub}").glob("**/func/*_bold.nii*"))
    if not bolds:
        raise BidsError(f"{root / ('sub-' + sub)} has no functional runs (*/func/*_bold.nii[.gz])")
    return sub, bolds


def load_bids(root: str | Path, subject: str | None = None) -> BidsSubject:
    """Index a subject's functional runs (``subject``: ``01`` or ``sub-01``; default the only / first one)."""
    root = Path(root)
    sub, bolds = bold_files(root, subject)
    runs = []
    for bold in bolds:
        ent = _entities(bold.name)
        tr = _sidecar_tr(bold, root, ent.get("task", ""))
        if tr is None:
            import nibabel as nib

            zooms = nib.load(str(bold)).header.get_zooms()
            if len(zooms) < 4 or not zooms[3] > 0:
                raise BidsError(f"{bold}: no RepetitionTime in any _bold.json and none in the NIfTI header")
            tr = float(zooms[3])
        stem = bold.name.split(".nii")[0].removesuffix("_bold")
        events = _read_events(bold.with_name(stem + "_events.tsv"))
        runs.append(BidsRun(bold, sub, ent.get("ses", ""), ent.get("task", ""), ent.get("run", ""), tr, events))
    runs.sort(key=lambda r: (r.session, int(r.run) if r.run.isdigit() else 0, r.task))
    return BidsSubject(root=root, subject=sub, runs=tuple(runs))


def _stimulus_path(root: Path, stim_file: str, index: dict[str, Path]) -> Path:
    for cand in (root / "stimuli" / stim_file, root / stim_file):
        if cand.is_file():
            return cand
    hit = index.get(Path(stim_file).name)
    if hit is None:
        raise BidsError(f"stimulus {stim_file!r} not found under {root / 'stimuli'}")
    return hit


def load_stimuli(root: str | Path, stim_files: list[str], size: int, framing: str = "square") -> np.ndarray:
    """Stimulus images ``uint8 [N, size, size, 3]`` in the given order, framed as the face space's training
    images were (``framing``: ``central-80``, ``square`` or ``resize``, see
    :func:`service.framing.frame_image`), then resized."""
    from PIL import Image

    from service.framing import check_framing, frame_image

    check_framing(framing)
    root = Path(root)
    index: dict[str, Path] = {}
    if not all((root / "stimuli" / s).is_file() for s in stim_files):
        index = {p.name: p for p in (root / "stimuli").rglob("*") if p.is_file()}
    out = np.empty((len(stim_files), size, size, 3), dtype=np.uint8)
    for i, s in enumerate(stim_files):
        path = _stimulus_path(root, s, index)
        try:
            with Image.open(path) as im:
                out[i] = frame_image(im, size, framing)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise BidsError(f"stimulus {path} cannot be read as an image: {exc}") from None
    return out


def stimulus_table(root: str | Path) -> pd.DataFrame | None:
    """Attributes of the stimuli when the data set carries them (the twin's ``derivatives/twin/stimuli.tsv``)."""
    root = Path(root)
    for path in (root / "derivatives" / "twin" / "stimuli.tsv", root / "stimuli" / "stimuli.tsv"):
        if path.is_file():
            return pd.read_csv(path, sep="\t")
    return None
