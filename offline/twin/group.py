"""A group of twins: one data set per subject, each with its own brain, slab, head and voxel tuning, all reading a
face code partly shared between them (:class:`offline.twin.config.GroupConfig`).

:func:`member_configs` derives each subject's config from the group's; :func:`write_group` writes
``OUT/sub-NN/`` (a complete twin data set each, as ``fmriface simulate`` writes one subject) and ``OUT/group.json``
(the subjects, the shared fraction, the shared faces). Subject 1 keeps the group config's seed, slab and tilt;
every later subject gets another seed (its stimuli, trial order, noise, motion and head position), another code
seed (its own part of the code, its responsive voxels and their tuning maps) and a slab tilted by up to 8 degrees.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from offline.datasets.bids import SHARED_LIST
from offline.twin.config import SimulateConfig

__all__ = ["member_configs", "write_group", "shared_names"]


def shared_names(n: int) -> list[str]:
    """The ``stim_file`` names of the first ``n`` shared faces (the same in every subject's data set)."""
    return [f"train/shared_{i:05d}.png" for i in range(n)]


def member_configs(cfg: SimulateConfig) -> list[SimulateConfig]:
    """Each subject's config (``sub-01`` ... ``sub-NN``); a config without a group is returned as it is."""
    group = cfg.group
    if group.subjects == 1 and not group.index:
        return [cfg]
    out = []
    for i in range(1, group.subjects + 1):
        rng = np.random.default_rng([cfg.seed, 41, i])
        tilt = cfg.grid.oblique_deg + (float(rng.uniform(-8.0, 8.0)) if i > 1 else 0.0)
        out.append(
            dataclasses.replace(
                cfg,
                subject=f"{i:02d}",
                seed=cfg.seed + 1000 * (i - 1),
                grid=dataclasses.replace(cfg.grid, oblique_deg=float(np.clip(tilt, -30.0, 30.0))),
                signal=dataclasses.replace(cfg.signal, code_seed=cfg.signal.code_seed + 7919 * i),
                group=dataclasses.replace(group, index=i, shared_seed=cfg.signal.code_seed),
            )
        )
    return out


def write_group(
    cfg: SimulateConfig,
    out_dir: str | Path,
    write_one: Callable[[SimulateConfig, Path], dict],
) -> dict:
    """Write every subject's data set with ``write_one(member_config, folder)`` and ``group.json``; the summary."""
    out = Path(out_dir)
    members = member_configs(cfg)
    summaries = {}
    for member in members:
        folder = out / f"sub-{member.subject}"
        folder.mkdir(parents=True, exist_ok=True)
        summaries[member.subject] = write_one(member, folder)
    shared = shared_names(cfg.group.shared_faces)
    record = {
        "subjects": [f"sub-{m.subject}" for m in members],
        "shared_fraction": cfg.group.shared_fraction,
        "shared_faces": shared,
        "shared_list": SHARED_LIST,
        "code": "each subject's hidden code is sqrt(f) * shared + sqrt(1 - f) * its own (f: shared_fraction)",
        "config": dataclasses.asdict(cfg),
    }
    (out / "group.json").write_text(json.dumps(record, indent=1))
    return {
        "group": str(out),
        "subjects": summaries,
        "shared_fraction": cfg.group.shared_fraction,
        "shared_faces": len(shared),
    }
