"""Run records: valid files at every moment, crash-torn tails cut, resume without duplicates, no patient fields."""

from __future__ import annotations

import json

import numpy as np
import pytest

from service.live.npy import AppendNpy
from service.live.runlog import RunLog, read_volumes


def test_append_npy_is_a_valid_npy_after_every_row(tmp_path, rng):
    arr = AppendNpy(tmp_path / "x.npy", (3, 2)).open()
    rows = rng.normal(size=(5, 3, 2)).astype(np.float32)
    for i, row in enumerate(rows):
        assert arr.append(row) == i
        np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), rows[: i + 1])
    arr.close()
    again = AppendNpy(tmp_path / "x.npy", (3, 2)).open(keep_rows=2)  # a restart that keeps 2 rows
    assert again.rows == 2
    again.append(rows[4])
    again.close()
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), rows[[0, 1, 4]])
    with pytest.raises(ValueError, match="another run configuration"):
        AppendNpy(tmp_path / "x.npy", (4,)).open()


def test_a_torn_row_is_dropped_on_reopen(tmp_path):
    arr = AppendNpy(tmp_path / "x.npy", (4,)).open()
    arr.append(np.arange(4))
    arr.close()
    with open(tmp_path / "x.npy", "ab") as f:
        f.write(b"\x00" * 7)  # a crash half-way through the next row
    again = AppendNpy(tmp_path / "x.npy", (4,)).open()
    assert again.rows == 1
    again.close()
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), [np.arange(4)])


def _record(i: int) -> dict:
    return {"volume": i, "acquisition": i + 1, "file": f"v{i:03d}.nii", "sha256": f"h{i}", "status": "ok"}


def test_resume_keeps_what_was_recorded_and_cuts_a_torn_line(tmp_path, rng):
    log = RunLog(tmp_path, "r1", latent_size=3, n_voxels=5)
    rs = log.open({"config": {"x": 1}})
    assert not rs.resumed
    vox = rng.normal(size=(4, 5)).astype(np.float32)
    for i in range(3):
        rec = log.volume({**_record(i), "motion": [0.0] * 6}, vox[i], np.full(3, i, np.float32))
        assert rec["voxel_row"] == i and rec["latent_row"] == i
    log.volume({"volume": 3, "status": "error", "error": "CorruptFileError: bad"}, None, None)
    log.trial({"trial": "0", "stim_id": "a.png", "onset": 3.0, "seq": 0}, np.ones(3, np.float32))
    log.event({"kind": "onset", "onset": 3.0, "stim_id": "a.png", "PatientName": "DOE^JOHN"})
    log.save_state({"seq": {"frame": 3, "trial": 1}})
    # a crash: arrays of a 4th volume written, its line torn
    log.voxels.append(vox[3])
    log.latents.append(np.zeros(3, np.float32))
    log._files["volumes.jsonl"].write('{"volume": 4, "sta')
    log._files["volumes.jsonl"].flush()
    # the process dies without close()

    log2 = RunLog(tmp_path, "r1", latent_size=3, n_voxels=5)
    rs = log2.open({"config": {"x": 1}})
    assert rs.resumed and [v["volume"] for v in rs.volumes] == [0, 1, 2, 3]
    np.testing.assert_array_equal(rs.voxels, vox[:3])  # the orphan row is gone
    assert log2.latents.rows == 3 and len(rs.trials) == 1 and rs.trials[0]["stim_id"] == "a.png"
    assert rs.state["seq"] == {"frame": 3, "trial": 1}
    assert rs.events == [{"kind": "onset", "onset": 3.0, "stim_id": "a.png"}]  # whitelisted fields only
    log2.volume({**_record(4), "motion": [0.0] * 6}, vox[3], np.zeros(3, np.float32))
    log2.close({"volumes_ok": 4})
    assert [v["volume"] for v in read_volumes(tmp_path / "r1")] == [0, 1, 2, 3, 4]
    assert np.load(tmp_path / "r1" / "latents.npy").shape == (4, 3)
    manifest = json.loads((tmp_path / "r1" / "manifest.json").read_text())
    assert manifest["state"] == "ended" and manifest["restarts"] == 1 and manifest["summary"]["volumes_ok"] == 4
    with pytest.raises(FileExistsError, match="already ended"):
        RunLog(tmp_path, "r1", 3, 5).open({})
    _drop(log)


def _drop(log: RunLog) -> None:
    """Release the handles of a log that 'crashed' (nothing more is written)."""
    for f in log._files.values():
        f.close()
    for arr in (log.voxels, log.latents, log.trial_latents):
        if arr._f is not None:
            arr._f.close()


def test_a_stopped_run_is_resumable_and_trials_tsv_is_readable(tmp_path):
    log = RunLog(tmp_path, "r2", latent_size=2, n_voxels=2)
    log.open({})
    log.trial({"trial": "7", "stim_id": "x\ty.png", "onset": 1.5, "feedback": None}, np.zeros(2, np.float32))
    log.close(ended=False)
    assert json.loads((tmp_path / "r2" / "manifest.json").read_text())["state"] == "stopped"
    lines = (tmp_path / "r2" / "trials.tsv").read_text().splitlines()
    header, row = lines[0].split("\t"), lines[1].split("\t")
    assert len(header) == len(row) and dict(zip(header, row))["stim_id"] == "x y.png"
    assert dict(zip(header, row))["feedback"] == "n/a"
    again = RunLog(tmp_path, "r2", 2, 2)
    rs = again.open({})
    assert rs.resumed and rs.trials[0]["trial"] == "7"
    again.close()


def test_state_with_a_pre_encoded_target_reads_back(tmp_path):
    log = RunLog(tmp_path, "r2", latent_size=3, n_voxels=5)
    log.open({"config": {}})
    target = {"source": {"stim_id": "a.png"}, "latent": [0.5, -1.0, 2.0]}
    log.save_state({"seq": {"frame": 2}, "saved": 1.0}, target_json=json.dumps(target))
    assert json.loads((log.dir / "state.json").read_text()) == {"seq": {"frame": 2}, "saved": 1.0, "target": target}
    log.save_state({"seq": {"frame": 3}}, target_json="null")
    assert json.loads((log.dir / "state.json").read_text()) == {"seq": {"frame": 3}, "target": None}
    log.close()
