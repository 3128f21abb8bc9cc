"""BIDS files of the twin: data set description, runs (NIfTI, sidecar, events), stimuli and ground truth.

Layout (F's loader reads it)::

    dataset_description.json, participants.tsv, README
    stimuli/train/train_00000.png ..., stimuli/test/test_00.png ...
    sub-01/ses-01/func/sub-01_ses-01_task-faces_run-01_bold.nii.gz (+ _bold.json, _events.tsv)
    derivatives/twin/dataset_description.json, stimuli.tsv, codes.npz, simulate_config.json
    derivatives/twin/sub-01/{responsive_mask,brain_mask,anatomy}.nii.gz, readout.npz
    derivatives/twin/sub-01/ses-01/func/sub-01_ses-01_task-faces_run-01_motion.tsv
    derivatives/twin/sub-01/ses-01/sub-01_ses-01_session.json

The masks and the anatomy are on session 1's grid with the head at rest (the reference). A run's ``_motion.tsv``
is its motion within the session; ``_session.json`` gives the session's grid (shape, voxel size, affine), its slab
prescription and the head's pose (``offline.twin.sessions``): volume t of a run of session s lies at
``rigid_matrix(motion_t) @ rigid_matrix(head_s)`` from session 1's head at rest.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from offline.twin.paradigm import EVENT_COLUMNS, RunPlan

__all__ = ["run_stem", "write_json", "write_tsv", "write_nifti", "write_dataset_files", "MOTION_COLUMNS"]

MOTION_COLUMNS = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("fmriface")
    except Exception:  # noqa: BLE001 - not installed as a distribution (e.g. a source checkout)
        return "unknown"


def run_stem(subject: str, run: RunPlan) -> str:
    """``sub-01_ses-01_task-faces_run-01`` (the BIDS entities of a run, without suffix)."""
    return f"sub-{subject}_ses-{run.session:02d}_task-{run.task}_run-{run.run:02d}"


def func_dir(root: Path, subject: str, session: int) -> Path:
    """``root/sub-XX/ses-YY/func`` (created)."""
    path = root / f"sub-{subject}" / f"ses-{session:02d}" / "func"
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_json(path: Path, obj: dict) -> None:
    """Write ``obj`` as indented JSON (parent folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def write_tsv(path: Path, table: pd.DataFrame, float_format: str | None = None) -> None:
    """Write ``table`` as BIDS TSV: tab-separated, no index, ``n/a`` for missing values (parent folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, sep="\t", index=False, na_rep="n/a", float_format=float_format, lineterminator="\n")


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray, tr: float | None = None) -> None:
    """A NIfTI-1 file with scanner-space sform and qform (code 1), mm and seconds, slope 1 for int16."""
    import nibabel as nib

    img = nib.Nifti1Image(data, affine)
    hdr = img.header
    hdr.set_xyzt_units("mm", "sec")
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    if tr is not None:
        zooms = list(hdr.get_zooms())
        zooms[3] = float(tr)
        hdr.set_zooms(zooms)
    if np.issubdtype(data.dtype, np.integer):
        hdr.set_slope_inter(1.0, 0.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))


def bold_sidecar(run: RunPlan, tr: float) -> dict:
    """The ``_bold.json`` of a run."""
    return {
        "TaskName": run.task,
        "RepetitionTime": float(tr),
        "EchoTime": 0.03,
        "FlipAngle": 75,
        "MagneticFieldStrength": 3.0,
        "Manufacturer": "fmriface digital twin",
        "TaskDescription": {
            "faces": "1 s faces every 3 s with one-back repeats and fixation trials",
            "imagery": "12 s imagery of a face followed by 6 s fixation",
        }[run.task],
    }


def write_run(
    root: Path, deriv: Path, subject: str, run: RunPlan, events: pd.DataFrame, motion: np.ndarray, tr: float
) -> Path:
    """Events, sidecar and motion ground truth of one run; returns the path the BOLD image goes to."""
    stem = run_stem(subject, run)
    func = func_dir(root, subject, run.session)
    write_json(func / f"{stem}_bold.json", bold_sidecar(run, tr))
    write_tsv(func / f"{stem}_events.tsv", events[list(EVENT_COLUMNS)], float_format="%.3f")
    table = pd.DataFrame(np.round(motion, 6), columns=list(MOTION_COLUMNS))
    write_tsv(func_dir(deriv, subject, run.session) / f"{stem}_motion.tsv", table, float_format="%.6f")
    return func / f"{stem}_bold.nii.gz"


def write_dataset_files(root: Path, deriv: Path, subject: str, config: dict) -> None:
    """Top-level BIDS files of the raw data set and of the ground-truth derivative."""
    version = _version()
    write_json(
        root / "dataset_description.json",
        {
            "Name": "fmriface digital twin",
            "BIDSVersion": "1.9.0",
            "DatasetType": "raw",
            "License": "CC0",
            "Authors": ["fmriface simulate"],
            "GeneratedBy": [{"Name": "fmriface simulate", "Version": version}],
        },
    )
    write_tsv(
        root / "participants.tsv", pd.DataFrame({"participant_id": [f"sub-{subject}"], "species": ["homo sapiens"]})
    )
    (root / "README").write_text(
        "A simulated subject written by `fmriface simulate`: procedural face stimuli, EPI-like BOLD with drift,\n"
        "AR(1) and thermal noise and rigid head motion. Ground truth (motion, responsive voxels, hidden codes)\n"
        "is under derivatives/twin/.\n",
        encoding="utf-8",
    )
    write_json(
        deriv / "dataset_description.json",
        {
            "Name": "fmriface twin ground truth",
            "BIDSVersion": "1.9.0",
            "DatasetType": "derivative",
            "GeneratedBy": [{"Name": "fmriface simulate", "Version": version}],
        },
    )
    write_json(deriv / "simulate_config.json", config)
