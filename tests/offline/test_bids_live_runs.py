"""The loop closed: a twin run replayed as the scanner writes it (NIfTI) and kept by the service's BIDS copy
(service.live.bids_writer) is read back by the fit's BIDS loader voxel-exact (bit for bit), with the same TR,
events and kind as the original, alone or beside the twin's own runs in one data set (``--bids-out`` into it)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from fmriface.config import load_config, preset_path
from offline.datasets.bids import load_bids, load_stimuli
from service.intake.assembly import read_volume
from service.live.bids_writer import BidsArchive
from service.scanner.writers import write_volume


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    from offline.twin import SimulateConfig, simulate

    out = tmp_path_factory.mktemp("twin") / "bids"
    simulate(load_config(SimulateConfig, preset_path("simulate-tiny"), {"seed": 2}), out)
    return out


def _replay_into(run, root, tmp_path, name: str):
    """The run's volumes written as NIfTI files, read as intake reads them, kept by a BidsArchive under ``root``."""
    data, affine = run.load()
    run_dir = tmp_path / name
    run_dir.mkdir()
    events = tmp_path / f"{name}_events.tsv"
    run.events.to_csv(events, sep="\t", index=False, na_rep="n/a")
    # the events file in the twin's data set (its stimuli are copied from there), as `serve --events` names it
    given = run.bold.with_name(run.bold.name.split(".nii")[0].removesuffix("_bold") + "_events.tsv")
    (run_dir / "manifest.json").write_text(json.dumps({"config": {"events": str(given)}}))
    archive = BidsArchive(root, run_dir, run.tr, {"subject": run.subject, "session": run.session, "task": run.task})
    archive.start()
    for t in range(data.shape[3]):
        path = write_volume(
            data[..., t], affine, tmp_path / name / f"vol{t:04d}.nii", "nifti", acquisition=t + 1, tr=run.tr
        )[0]
        vol = read_volume(path)
        vol.index = t
        archive.volume(vol)
    return archive.close(), data


def test_a_live_copy_reads_back_bit_for_bit_alone_and_beside_the_originals(twin, tmp_path):
    original = load_bids(twin)
    run = original.of_kind("train")[0]
    # alone: a BIDS root of its own (runs/<run_id>/bids)
    bold, data = _replay_into(run, tmp_path / "alone", tmp_path, "a")
    copy = load_bids(tmp_path / "alone")
    assert len(copy.runs) == 1
    live = copy.runs[0]
    back, affine = live.load()
    assert back.dtype == data.dtype and np.array_equal(back, data)  # bit for bit
    np.testing.assert_allclose(affine, run.load()[1], atol=1e-5)
    assert live.tr == run.tr and live.kind == run.kind == "train"
    cols = ["onset", "duration", "trial_type", "stim_file"]
    np.testing.assert_allclose(live.events["onset"], run.events["onset"], atol=5e-4)
    assert live.events[cols[2:]].astype(str).values.tolist() == run.events[cols[2:]].astype(str).values.tolist()
    stims = [s for s in run.events["stim_file"].dropna().unique() if s != "n/a"][:3]
    np.testing.assert_array_equal(load_stimuli(tmp_path / "alone", stims, 16), load_stimuli(twin, stims, 16))
    # mixed: into the twin's own data set, as the next run index of the same subject, session and task
    mixed = tmp_path / "mixed"
    shutil.copytree(twin, mixed)
    _replay_into(run, mixed, tmp_path, "b")
    both = load_bids(mixed)
    assert len(both.runs) == len(original.runs) + 1
    added = [r for r in both.runs if r.name not in {o.name for o in original.runs}]
    assert len(added) == 1 and added[0].kind == "train" and np.array_equal(added[0].load()[0], data)
