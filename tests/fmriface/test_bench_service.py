"""`fmriface bench service` end to end on a short run: serve in its own process, every frame timed (no speed
is asserted here; targets are read from the benchmark's output, not tested)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_bench_service_times_every_frame_of_a_short_run(tmp_path):
    argv = [sys.executable, "-m", "fmriface", "bench", "service", "--json"]
    argv += ["--n-paced", "12", "--n-asap", "30", "--tr", "0.2", "--decoder", "matmul", "--voxels", "500"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    assert out["asap"]["frames_received"] == out["asap"]["volumes_ok"] == 30
    assert out["service_summary_paced"]["volumes_ok"] == 12 and out["service_summary_paced"]["volumes_failed"] == 0
    assert 0 < out["p50_ms"] <= out["p95_ms"] <= out["p99_ms"] and out["volumes_per_s"] > 0
    assert set(out["stages"]) == {"detect", "read", "queue", "motion", "decode", "send", "subscriber"}


@pytest.mark.slow
def test_bench_service_runs_a_later_sessions_grid_beside_the_bundles(tmp_path):
    argv = [sys.executable, "-m", "fmriface", "bench", "service", "--json", "--grids", "same,other"]
    argv += ["--n-paced", "10", "--n-asap", "20", "--tr", "0.2", "--decoder", "matmul", "--voxels", "500"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    same, other = json.loads(done.stdout)["side_by_side"]
    assert same["grid"] == "same" and same.get("session") is None
    assert other["grid"] == "other" and other["p50_ms"] > 0 and other["volumes_per_s"] > 0
    # serve registered the later session at its first volume: the drawn head offset, seen from the new slab
    session = other["session"]
    assert session["overlap"] > 0.8 and session["cost"] < 0.1 and len(session["offset"]) == 6


def test_bench_service_refuses_an_unknown_grid(capsys, monkeypatch):
    from fmriface import cli

    monkeypatch.setenv("FMRIFACE_RAISE", "0")
    assert cli.main(["bench", "service", "--grids", "same,tilted"]) == 1
    assert "--grids must be a comma list of same and other; got 'same,tilted'" in capsys.readouterr().err


def test_bench_service_refuses_an_lsl_list_it_cannot_read(capsys, monkeypatch):
    from fmriface import cli

    monkeypatch.setenv("FMRIFACE_RAISE", "0")
    assert cli.main(["bench", "service", "--lsl", "0,yes"]) == 1
    assert "--lsl must be a comma list of 0 and 1 like 0,1,0,1; got '0,yes'" in capsys.readouterr().err


def test_frame_to_sample_refuses_a_lost_sample():
    from fmriface.lsl.probe import frame_to_sample_ms

    assert frame_to_sample_ms([1.0, 2.0], [1.002, 2.004]) == pytest.approx([2.0, 4.0])
    with pytest.raises(RuntimeError, match="got 1 motion samples for 2 frames"):
        frame_to_sample_ms([1.0, 2.0], [1.002])


@pytest.mark.slow
def test_bench_service_with_and_without_the_lsl_bridge_in_its_own_namespace(tmp_path):
    """``--lsl 0,1``: the same run without and with ``fmriface lsl``; every frame's sample timed at an inlet, the
    whole benchmark rerun in a network namespace with only the loopback."""
    from fmriface.lsl.isolation import namespace_missing

    if namespace_missing():
        pytest.skip(namespace_missing())
    argv = [sys.executable, "-m", "fmriface", "bench", "service", "--json", "--lsl", "0,1"]
    argv += ["--n-paced", "12", "--n-asap", "20", "--tr", "0.2", "--decoder", "matmul", "--voxels", "500"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    assert out["network"] == "a namespace with only the loopback"
    without, with_lsl = out["side_by_side"]
    assert not without["lsl"] and "lsl_ms" not in without
    assert with_lsl["lsl"] and 0 < with_lsl["lsl_ms"]["p50"] <= with_lsl["lsl_ms"]["p99"]
    bridge = with_lsl["lsl_bridge"]
    assert bridge["paced"]["counts"]["frame"] == 12 and bridge["asap"]["counts"]["frame"] == 20
    assert bridge["paced"]["counts"]["missed"] == 0
