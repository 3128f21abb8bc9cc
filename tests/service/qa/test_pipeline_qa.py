"""The QA in the live pipeline (issue 27's headline): a x100 volume, a one-slice x10 spike and an all-zero volume
injected into a run are censored (the zero one refused), their frames held, and every later uncensored volume's
latent matches the clean run's."""

from __future__ import annotations

import numpy as np
import pytest

from fmriface.benchmarks.synth import make_bundle, make_run
from service.live.runlog import read_volumes
from tests.service.harness import make_volume, serve
from tests.service.live.test_pipeline import TR, TRIALS, _cfg

N_VOL = 64
FAULTS = {20: "spike", 30: "slice", 40: "zero"}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("bundle") / "b", n_voxels=80, latent_size=8, image_size=8, tr=TR)


def _faulty(data: np.ndarray) -> np.ndarray:
    bad = data.copy()
    bad[20] *= 100.0
    z = int(np.argmax(bad[30].mean(axis=(0, 1))))  # the brightest slice
    bad[30][:, :, z] *= 10.0
    bad[40] = 0.0
    return bad


def _run(synth, data, tmp_path, monkeypatch):
    monkeypatch.setenv("FMRIFACE_RAISE", "0")  # the zero volume is refused as an error, and the run goes on
    vols = [make_volume(i, data[i], synth.affine, TR) for i in range(len(data))]
    return serve(_cfg(synth, tmp_path, max_volumes=N_VOL - 1), vols)


def test_faults_are_censored_held_and_later_latents_match_the_clean_run(synth, tmp_path, monkeypatch):
    clean = make_run(synth, TRIALS, N_VOL, amplitude=3.0, noise=2.0, drift=25.0, seed=3)
    ref = _run(synth, clean, tmp_path / "clean", monkeypatch)
    out = _run(synth, _faulty(clean), tmp_path / "faulty", monkeypatch)
    clean_frames = {m.header["volume"]: m.header for m in ref.topic("frame")}
    frames = {m.header["volume"]: m.header for m in out.topic("frame")}
    # 80 voxels with a strong task signal: DVARS spreads more than on a brain mask (docs/qa.md); at most one
    assert sum(h["qa"]["censored"] for h in clean_frames.values()) <= 1
    assert 40 not in frames  # refused
    assert frames[20]["qa"]["censored"] and "spike" in frames[20]["qa"]["reasons"]
    assert frames[30]["qa"]["censored"] and "slice" in frames[30]["qa"]["reasons"]
    assert frames[20]["latent"] == frames[19]["latent"]  # held
    assert frames[30]["latent"] == frames[29]["latent"]
    later = [v for v in frames if v > 20 and not frames[v]["qa"]["censored"] and not clean_frames[v]["qa"]["censored"]]
    assert len(later) >= 38
    r = [np.corrcoef(frames[v]["latent"], clean_frames[v]["latent"])[0, 1] for v in later]
    print(f"later uncensored latents vs the clean run's: median r {np.median(r):.5f}, min {np.min(r):.5f}")
    assert np.median(r) >= 0.99
    recs = {r["volume"]: r for r in read_volumes(out.service.run_dir_)}
    assert recs[40]["status"] == "error" and "voxels are zero" in recs[40]["error"]
    assert recs[20]["qa"]["censored"] and recs[21]["qa"]["censored"] is False
    status = [m.header["qa"] for m in out.topic("status")]
    assert all(set(q) == {"censored", "by_reason", "tsnr_mean", "volumes"} for q in status)
    final = out.topic("end")[0].header["summary"]["qa"]  # Pipeline.summary: the status's qa at the end
    assert final["censored"] >= 2 and final["by_reason"]["spike"] >= 1 and final["tsnr_mean"] > 0


def test_the_run_report_gives_the_qa(synth, tmp_path, monkeypatch):
    from service.live.report import format_reports, run_report

    clean = make_run(synth, TRIALS, N_VOL, amplitude=3.0, noise=2.0, drift=25.0, seed=3)
    out = _run(synth, _faulty(clean), tmp_path, monkeypatch)
    report = run_report(out.service.run_dir_)
    qa = report["qa"]
    assert qa["censored"] >= 2 and qa["by_reason"]["spike"] >= 1 and qa["judged"] == N_VOL - 2
    assert qa["tsnr_mean"] > 0 and qa["std_dvars"]["max"] > 10
    assert "volumes censored (QA)" in format_reports([report])
