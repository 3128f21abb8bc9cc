"""The twin's ground truth read back from a simulated data set, for analyses that need it (the ablations).

``fmriface simulate`` writes its whole config into ``derivatives/twin/simulate_config.json``; the plan (subject,
stimuli, hidden codes, events, motion) is rebuilt from it exactly, because every draw is seeded by the config.
What a data set's files cannot say, the plan can: which voxels respond to faces and the BOLD signal they carry
before any scanner noise or head motion is added.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

import numpy as np

from offline.twin.bold import run_signal
from offline.twin.config import SimulateConfig
from offline.twin.simulate import Plan, prepare
from offline.twin.writer import run_stem

__all__ = ["TruthError", "config_from_record", "load_plan", "run_names", "clean_signal"]


class TruthError(ValueError):
    """The data set carries no twin ground truth, or one that cannot be read."""


def _build(cls, record: dict, where: str):
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in record:
            continue  # a field added after the data set was written keeps its default
        value, kind = record[f.name], hints[f.name]
        if dataclasses.is_dataclass(kind):
            if not isinstance(value, dict):
                raise TruthError(f"{where}: [{f.name}] is not a table")
            value = _build(kind, value, where)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)


def config_from_record(record: dict, where: str = "simulate_config.json") -> SimulateConfig:
    """The :class:`SimulateConfig` of a data set from its recorded config (``dataclasses.asdict`` of it)."""
    try:
        return _build(SimulateConfig, record, where)
    except (TypeError, ValueError) as exc:
        raise TruthError(f"{where}: not a twin config: {exc}") from exc


def load_plan(bids: str | Path) -> Plan:
    """Rebuild the plan of the twin that wrote ``bids`` (raises :class:`TruthError` if it is not a twin's)."""
    path = Path(bids) / "derivatives" / "twin" / "simulate_config.json"
    if not path.is_file():
        raise TruthError(f"{bids}: no twin ground truth ({path} is missing): not a data set of `fmriface simulate`")
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TruthError(f"{path}: cannot be read: {exc}") from exc
    if not isinstance(record, dict):
        raise TruthError(f"{path}: not a JSON object")
    plan = prepare(config_from_record(record, str(path)))
    codes = Path(bids) / "derivatives" / "twin" / "codes.npz"
    if codes.is_file():  # the rebuilt plan must be the one that wrote the data (same code, same config)
        with np.load(codes) as z:
            if z["codes"].shape != plan.codes.shape or not np.allclose(z["codes"], plan.codes, atol=1e-5):
                raise TruthError(f"{codes}: the hidden codes differ from the rebuilt plan's (another twin version?)")
    return plan


def run_names(plan: Plan) -> list[str]:
    """Each run's BIDS stem (``sub-01_ses-01_task-faces_run-01``), in plan order."""
    return [run_stem(plan.cfg.subject, r) for r in plan.runs]


def clean_signal(plan: Plan, i: int) -> np.ndarray:
    """Run ``i``'s BOLD signal in the responsive voxels, ``[T, V]`` percent signal change, in the head's frame:
    the trials' responses with their trial-to-trial neural variability exactly as in the data set, without drift,
    physiological or thermal noise and without head motion (the columns follow ``plan.responsive``'s voxels in
    C order, on the first session's grid, ``plan.affine``)."""
    cfg, run = plan.cfg, plan.runs[i]
    code_of = dict(zip(plan.stimuli["stim_file"], plan.codes))
    return run_signal(
        plan.subject_of(run), plan.events[i], code_of, run.n_volumes, cfg.paradigm.tr, cfg.signal, plan.run_rng(run)
    )
