"""`fmriface bench service --matrix`: every matrix keeps the twin's field of view and the mask's size in mm^3; the
options are checked before any work; a short run on two matrices as slice files (slow)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fmriface.benchmarks.service import _matrix_list, _tr_list, mask_voxels, voxel_size
from fmriface.common import UsageError


def test_a_matrix_keeps_the_field_of_view_and_the_mask_its_volume():
    assert voxel_size((64, 64, 36)) == (3.0, 3.0, 3.5) and mask_voxels(5000, (3.0, 3.0, 3.5)) == 5000
    vox = voxel_size((104, 104, 72))
    assert vox == pytest.approx((1.846, 1.846, 1.75), abs=1e-3)
    assert mask_voxels(5000, vox) == pytest.approx(5000 * 31.5 / (vox[0] * vox[1] * vox[2]), abs=1)  # ~26,400
    assert _matrix_list("64x64x36, 104X104x72") == [(64, 64, 36), (104, 104, 72)]
    assert _tr_list("0.8", 2) == [0.8, 0.8] and _tr_list("2,0.8", 2) == [2.0, 0.8]


@pytest.mark.parametrize("text", ["64x64", "64x64xA", "", "4x4x4"])
def test_a_bad_matrix_is_refused(text):
    with pytest.raises(UsageError, match="--matrix must be"):
        _matrix_list(text)


def test_a_tr_list_must_match_the_matrices(capsys, monkeypatch):
    from fmriface import cli

    with pytest.raises(UsageError, match="one per --matrix"):
        _tr_list("2,0.8,1", 2)
    monkeypatch.setenv("FMRIFACE_RAISE", "0")
    assert cli.main(["bench", "service", "--matrix", "64x64x36,104x104x72", "--tr", "-1"]) == 1
    assert "--tr must be one positive TR or one per --matrix (2)" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_service_runs_two_matrices_as_slice_files(tmp_path):
    argv = [sys.executable, "-m", "fmriface", "bench", "service", "--json", "--matrix", "32x32x18,40x40x24"]
    argv += ["--format", "slices", "--n-paced", "8", "--n-asap", "12", "--tr", "0.2,0.3", "--decoder", "matmul"]
    argv += ["--voxels", "500", "--warmup", "2"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=tmp_path)  # two runs: 45 s idle
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    small, large = out["side_by_side"]
    assert (small["matrix"], small["tr_s"], large["matrix"], large["tr_s"]) == ("32x32x18", 0.2, "40x40x24", 0.3)
    assert small["mask_voxels"] < large["mask_voxels"]  # smaller voxels: more of them in the same cortex
    assert out["service_summary_paced"]["volumes_ok"] == 8 and out["asap"]["frames_received"] == 12
    assert 0 < large["ready_p50_ms"] <= large["ready_p99_ms"] and out["setup"]["voxel_mm"] == [6.0, 6.0, 7.0]
