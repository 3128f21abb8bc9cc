"""`fmriface bench dashboard` (latency in the browser, memory over a replay) and `bench service --browsers` end to
end on short runs: every frame timed, the samples taken, the side-by-side runs listed (no speed is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.dashboard.live import browser_missing

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _needs_a_browser():
    reason = browser_missing()
    if reason:
        pytest.skip(reason)


def _bench(tmp_path, *args: str, timeout: float = 400) -> dict:
    argv = [sys.executable, "-m", "fmriface", "bench", *args, "--json"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_bench_dashboard_times_every_frame_in_the_browser(tmp_path):
    out = _bench(tmp_path, "dashboard", "--frames", "40", "--rate", "20")
    assert out["count"] == out["frames_sent"] == 40 and out["page_errors"] == 0
    assert 0 < out["p50_ms"] <= out["p99_ms"] and out["sent_to_dashboard_p50_ms"] <= out["p50_ms"]
    assert out["targets"] == {"p50_ms": 100.0, "p99_ms": 250.0}


def test_bench_dashboard_samples_the_pages_memory_over_a_replay(tmp_path):
    out = _bench(tmp_path, "dashboard", "--memory", "--volumes", "240", "--replay-rate", "60", "--sample-every", "60")
    assert len(out["samples"]) >= 4 and all(s["js_heap_used_mb"] > 0 for s in out["samples"])
    assert out["frames_on_page"] == out["volumes_ok"] == out["points_plotted"] > 200 and out["page_errors"] == 0


def test_bench_service_runs_side_by_side_with_and_without_browsers(tmp_path):
    args = ["--n-paced", "12", "--n-asap", "30", "--tr", "0.2", "--decoder", "matmul", "--voxels", "500"]
    out = _bench(tmp_path, "service", *args, "--browsers", "0,1")
    side = out["side_by_side"]
    assert [r["browsers"] for r in side] == [0, 1] and out["browsers"] == 0
    assert side[1]["page_frames"]["asap"] == [30] and side[1]["page_errors"] == 0
    assert side[1]["pages_got_end"] == {"paced": [True], "asap": [True]}
    assert all(r["p50_ms"] > 0 and r["volumes_per_s"] > 0 for r in side)
