"""Soak: the accounting of run records against injected faults (fast), and a shorter soak of the real service
with 5% faults of every kind (slow): everything accounted for, frames in order, bounded memory."""

from __future__ import annotations

import json

import pytest

from fmriface.benchmarks.soak import MEMORY_LIMIT_MB, soak
from fmriface.benchmarks.soak_harness import account, acquisition_of_file, record_label


def _ok(acq: int, seq: int) -> dict:
    return {
        "volume": acq - 1,
        "acquisition": acq,
        "file": f"001_000001_{acq:06d}.dcm",
        "status": "ok",
        "frame_seq": seq,
    }


def _skip(kind: str, file: str | None = None, **kw) -> dict:
    rec = {"status": "skipped", "error": f"{kind}: something", **kw}
    if file:
        rec["file"] = file
    return rec


def test_accounting_matches_each_fault_to_its_records():
    records = [
        _ok(1, 0),
        _skip("gap", acquisition=2, acquisitions=[2, 3]),  # two dropped volumes in a row
        _ok(4, 1),
        _skip("incomplete", "001_000001_000005.dcm"),  # truncated: reported by file name
        _skip("gap", acquisition=5),
        _ok(6, 2),
        _skip("duplicate", "001_000001_000006_dup.dcm", acquisition=6),
        _skip("corrupt", "001_000001_000007.dcm"),
        _ok(8, 3),
    ]
    faults = {2: "drop", 3: "drop", 5: "truncate", 6: "duplicate", 7: "corrupt"}
    acc = account(records, 8, faults)
    assert acc.accounted, acc.summary()
    assert acc.per_status == {"ok": 4, "gap": 2, "incomplete": 1, "duplicate": 1, "corrupt": 1}
    assert acc.duplicates_recorded == 1 and acc.labels[3] == ["gap"]


def test_accounting_flags_lost_doubled_and_misfiled_volumes():
    records = [_ok(1, 0), _ok(1, 1), _skip("corrupt", "001_000001_000003.dcm"), _skip("gap", volume=2)]
    acc = account(records, 4, {3: "delay"})
    assert not acc.accounted
    assert acc.ok_twice == [1]  # published twice
    assert acc.unaccounted == [2, 4]  # a gap record without its acquisition number accounts for nothing
    assert acc.unexpected == [(3, "delay", ["corrupt"])]  # a delayed volume must end ok (or late), not corrupt
    assert acc.unattributed and record_label(records[3]) == "gap"
    assert acquisition_of_file("001_000007_000123_dup.dcm") == 123 and acquisition_of_file("vol.nii") is None


@pytest.mark.slow
def test_soak_with_faults_of_every_kind(tmp_path):
    result = soak(tmp_path / "soak", n_volumes=300, fault_rate=0.05, rate=100.0, fmt="mosaic", seed=4)
    detail = json.dumps(result, indent=1)
    assert result["faults_total"] >= 5, detail
    assert result["service_alive_until_end"] and result["exit_status"] == 0, detail
    assert result["accounted"], detail
    assert result["frames_in_order"] and result["seq_gaps"] == 0, detail
    assert result["frames"] == result["volumes_ok"] >= 300 - result["faults_total"], detail
    assert result["memory_growth_mb"] is not None and result["memory_growth_mb"] < MEMORY_LIMIT_MB, detail
    assert result["problems"] == [], detail
