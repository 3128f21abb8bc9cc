"""Crash and restart: `fmriface serve` killed with SIGKILL at a random volume while the scanner goes on writing,
then restarted on the same folder and run id, resumes the run: every volume recorded exactly once across the
lives, latents rows in step, frame ``seq`` continuing without gaps or repeats, the run marked ended."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fmriface.benchmarks.soak_harness import (
    Collector,
    ServeProcess,
    free_address,
    read_jsonl,
    synthetic_run,
    wait_until,
)
from fmriface.benchmarks.synth import make_bundle
from service.scanner.replay import ScannerEmulator

TR = 2.0


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("crash") / "bundle", shape=(14, 16, 10), n_voxels=60, tr=TR)


def _values(bundle, watch, runs, pub, pull) -> dict:
    return dict(
        bundle=bundle.path,
        watch=watch,
        runs=runs,
        run_id="crashy",
        pub=pub,
        pull=pull,
        hwm=1000,
        heartbeat=0.2,
        idle_timeout=2.0,
        startup_timeout=60.0,
        min_volumes=3,
    )


def _crash_run(bundle, tmp_path, n_volumes: int, kills: list[int], rate: float, seed: int) -> dict:
    """Serve a replay, SIGKILL the service once the frame of each volume in ``kills`` is out, restart it."""
    watch, runs = tmp_path / "scanner", tmp_path / "runs"
    watch.mkdir()
    pub, pull = free_address(), free_address()
    values = _values(bundle, watch, runs, pub, pull)
    collector = Collector(pub)
    collector.start()
    lives: list[ServeProcess] = []
    killed_at: list[int] = []
    data = synthetic_run(bundle.reference, n_volumes, seed=seed)
    emu = ScannerEmulator(data=data, affine=bundle.affine, tr=TR, out_dir=watch, fmt="nifti", speed=TR * rate)
    try:
        serve = ServeProcess(values, tmp_path, name="serve-0").start()
        lives.append(serve)
        assert wait_until(lambda: collector.ready.is_set() or not serve.alive(), 60), serve.log()
        emu.start()
        for k, at in enumerate(kills):
            got = wait_until(lambda at=at: any(f["volume"] >= at for f in collector.frames()), 60)
            assert got and serve.alive(), f"no frame for volume {at} before the kill:\n{serve.log()[-3000:]}"
            serve.kill()
            killed_at.append(max(f["volume"] for f in collector.frames()))
            assert serve.proc.returncode == -9
            collector.ready.clear()
            serve = ServeProcess(values, tmp_path, name=f"serve-{k + 1}").start()
            lives.append(serve)
            assert wait_until(lambda s=serve: collector.ready.is_set() or not s.alive(), 60), serve.log()
            assert serve.alive(), serve.log()[-3000:]
        assert emu.wait(120)
        assert serve.wait(60) == 0, serve.log()[-3000:]
        wait_until(collector.ended.is_set, 5)
    finally:
        emu.stop()
        collector.close()
        for s in lives:
            s.kill()
    return {"run": runs / "crashy", "frames": collector.frames(), "killed_at": killed_at, "lives": lives}


def _check_resumed(out: dict, n_volumes: int, n_kills: int) -> None:
    run = out["run"]
    records = read_jsonl(run / "volumes.jsonl")
    ok = [r for r in records if r.get("status") == "ok"]
    # every volume exactly once across the lives, none lost
    assert sorted(r["acquisition"] for r in ok) == list(range(1, n_volumes + 1)), [
        r for r in records if r.get("status") != "ok"
    ]
    assert sorted(r["volume"] for r in ok) == list(range(n_volumes))
    # latents and voxels: one row per ok volume, rows numbered without holes
    latents = np.load(run / "latents.npy")
    assert latents.shape[0] == n_volumes
    assert sorted(r["latent_row"] for r in ok) == list(range(n_volumes))
    assert sorted(r["voxel_row"] for r in ok) == list(range(n_volumes))
    assert np.all(np.isfinite(latents))
    # frame seq across the lives: 0..n-1, each once (no repeat after a restart, no gap)
    seqs = sorted(r["frame_seq"] for r in ok)
    assert seqs == list(range(n_volumes)), f"frame seq repeated or skipped across restarts: {_dupes(seqs)}"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["state"] == "ended" and manifest.get("restarts") == n_kills
    # what the subscriber saw agrees with the records (a frame's seq is its volume's recorded seq), and
    # within each life frames left in order
    by_volume = {r["volume"]: r["frame_seq"] for r in ok}
    frames = out["frames"]
    mismatched = [
        (f["volume"], f["seq"], by_volume.get(f["volume"])) for f in frames if by_volume.get(f["volume"]) != f["seq"]
    ]
    # only the volume in flight at a kill may have been published without being recorded (then re-published)
    assert len(mismatched) <= n_kills, mismatched
    # the display's subscriber reconnected by itself and got the restarted service's frames up to the end
    # (frames published during catch-up, before it reconnected, it may miss: PUB/SUB keeps no history)
    after = [f["volume"] for f in frames if f["volume"] > out["killed_at"][-1]]
    assert after and after[-1] == n_volumes - 1 and after == sorted(after)


def _dupes(values: list[int]) -> dict:
    from collections import Counter

    c = Counter(values)
    return {
        "repeated": sorted(v for v, n in c.items() if n > 1)[:10],
        "missing": sorted(set(range(len(values))) - set(c))[:10],
    }


def test_sigkill_mid_run_then_restart_resumes_without_loss_or_duplicates(bundle, tmp_path):
    kill_at = int(np.random.default_rng(20261126).integers(8, 22))
    out = _crash_run(bundle, tmp_path, n_volumes=36, kills=[kill_at], rate=8.0, seed=3)
    _check_resumed(out, 36, 1)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_several_crashes_in_one_run(bundle, tmp_path, seed):
    rng = np.random.default_rng(seed)
    kills = sorted(int(k) for k in rng.choice(np.arange(10, 140), size=3, replace=False))
    kills = [k for i, k in enumerate(kills) if i == 0 or k - kills[i - 1] >= 15] or kills[:1]
    out = _crash_run(bundle, tmp_path, n_volumes=160, kills=kills, rate=8.0, seed=seed)
    _check_resumed(out, 160, len(kills))
