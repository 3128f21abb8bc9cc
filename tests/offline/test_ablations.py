"""Issue 18's analyses: the twin's ground truth read back, the accuracy against repeats, the ablation ladder,
the paper's table; and the fit's face contrast taken from training runs only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fmriface.config import load_config, preset_path
from offline.decoding.ablations import repeats_curve, responsive_on_grid
from offline.decoding.facespaces import FaceSpaces
from offline.decoding.patterns import TrialPatterns
from offline.fit import FitConfig, prepare
from offline.twin.truth import TruthError, clean_signal, load_plan, run_names


def _simulate(out: Path, **overrides) -> Path:
    from offline.twin.config import SimulateConfig
    from offline.twin.simulate import simulate

    simulate(load_config(SimulateConfig, preset_path("simulate-tiny"), overrides), out)
    return out


@pytest.fixture(scope="module")
def twin(tmp_path_factory) -> Path:
    return _simulate(tmp_path_factory.mktemp("abl") / "twin")


def test_the_plan_rebuilt_from_the_data_set_is_the_one_that_wrote_it(twin):
    plan = load_plan(twin)
    deriv = twin / "derivatives" / "twin"
    with np.load(deriv / "codes.npz") as z:
        assert np.array_equal(z["codes"], plan.codes)
    with np.load(deriv / "sub-01" / "readout.npz") as z:
        assert np.array_equal(z["weights"], plan.subject.weights)
        assert np.array_equal(z["voxel_index"], np.flatnonzero(plan.responsive))
    written = np.asarray(nib.load(deriv / "sub-01" / "responsive_mask.nii.gz").dataobj) > 0
    assert np.array_equal(written, plan.responsive)
    bolds = sorted(p.name.split("_bold")[0] for p in twin.glob("sub-01/ses-*/func/*_bold.nii.gz"))
    assert sorted(run_names(plan)) == bolds


def test_a_data_set_without_ground_truth_is_refused_by_name(tmp_path, twin):
    with pytest.raises(TruthError, match="simulate_config.json is missing"):
        load_plan(tmp_path)
    bad = tmp_path / "bad"
    (bad / "derivatives" / "twin").mkdir(parents=True)
    (bad / "derivatives" / "twin" / "simulate_config.json").write_text("{not json")
    with pytest.raises(TruthError, match="cannot be read"):
        load_plan(bad)
    (bad / "derivatives" / "twin" / "simulate_config.json").write_text(json.dumps({"grid": 3}))
    with pytest.raises(TruthError, match=r"\[grid\] is not a table"):
        load_plan(bad)


def test_the_clean_signal_is_the_signal_inside_a_noise_free_run(tmp_path):
    """With the scanner's noise and the head's motion turned off, a run's data at the responsive voxels are S0 times
    (1 + clean_signal / 100), up to int16 rounding; another draw of the trial variability fits clearly worse."""
    quiet = {
        "noise.tsnr": 1e6,
        "noise.physio_share": 0.0,
        "noise.drift_percent": 0.0,
        "motion.enabled": False,
        "paradigm.sessions": 1,
    }
    bids = _simulate(tmp_path / "quiet", **quiet)
    plan = load_plan(bids)
    i = next(k for k, r in enumerate(plan.runs) if r.kind == "train")
    name = run_names(plan)[i]
    data = np.asarray(nib.load(next(bids.glob(f"sub-01/ses-01/func/{name}_bold.nii.gz"))).dataobj, float)
    resp = data.reshape(-1, data.shape[-1])[np.flatnonzero(plan.responsive)].T  # [T, V]
    s0 = plan.subject.s0[plan.subject.resp_in_head]
    measured = (resp / s0 - 1.0) * 100.0
    expected = clean_signal(plan, i)
    rounding = 100.0 * 0.5 / s0.min()  # half an int16 step, in percent of the dimmest responsive voxel
    assert np.abs(measured - expected).max() <= rounding + 1e-6
    # the trial-to-trial variability is the run's own draw, not any draw
    from offline.twin.bold import run_signal

    code_of = dict(zip(plan.stimuli["stim_file"], plan.codes))
    other = run_signal(
        plan.subject, plan.events[i], code_of, plan.runs[i].n_volumes, 2.0, plan.cfg.signal, np.random.default_rng(99)
    )
    assert np.abs(measured - other).mean() > 3 * np.abs(measured - expected).mean()


def test_a_mask_moves_onto_another_grid_by_its_affine():
    rng = np.random.default_rng(0)
    mask = rng.random((6, 7, 5)) > 0.7
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    assert np.array_equal(responsive_on_grid(mask, affine, mask.shape, affine), mask)
    shifted = affine.copy()
    shifted[0, 3] = 2.0  # the target's voxel i lies on the source's voxel i + 1
    out = responsive_on_grid(mask, affine, mask.shape, shifted)
    assert np.array_equal(out[:-1], mask[1:]) and not out[-1].any()


class _Linear:
    def __init__(self, w):
        self.w = w

    def predict(self, x):
        return x @ self.w


class _Space:
    def decode(self, z):
        return np.repeat(z[:, :4, None, None], 2, axis=2).repeat(2, axis=3).transpose(0, 2, 3, 1)[..., :3]


def test_the_repeats_curve_rises_with_repeats_and_clamps_what_is_missing(rng):
    """Planted faces: each trial is the face's pattern plus noise; averaging more repeats must decode better."""
    n_faces, n_rep, n_vox = 12, 10, 40
    faces = rng.standard_normal((n_faces, n_vox))
    ids = [f"f{i}" for i in range(n_faces)]
    x = np.concatenate([faces + 3.0 * rng.standard_normal(faces.shape) for _ in range(n_rep)])
    trial_ids = ids * n_rep
    w = np.eye(n_vox)[:, :8]
    space = FaceSpaces({"s": _Space()}, {"s": {"test": faces @ w}}, {"test": _Space().decode(faces @ w)})
    trials = TrialPatterns(x, trial_ids)
    out = repeats_curve({("ridge", "s"): _Linear(w)}, trials, ids, space, [1, 10, 40], 8, rng)
    assert out["counts"] == [1, 10] and out["max_repeats"] == n_rep and out["requested"] == [1, 10, 40]
    latent = out["curves"]["s ridge"]["latent"]
    assert latent["draws"] == [8, 1]  # every repeat: one draw only
    assert latent["mean"][1] > latent["mean"][0] + 0.1
    with pytest.raises(ValueError, match="no single test trials"):
        repeats_curve({("ridge", "s"): _Linear(w)}, trials, [*ids, "ghost"], space, [1], 2, rng)


def test_the_face_contrast_never_sees_the_test_runs(tmp_path, twin):
    """Voxel selection ranks by the face contrast: replacing the test runs' data must leave it unchanged."""
    copy = tmp_path / "copy"
    shutil.copytree(twin, copy)
    for bold in copy.glob("sub-01/ses-*/func/*_bold.nii.gz"):
        events = bold.with_name(bold.name.replace("_bold.nii.gz", "_events.tsv")).read_text()
        if "test_face" in events:
            img = nib.load(bold)
            data = np.asarray(img.dataobj)[..., ::-1]  # the test run's volumes in reverse order
            nib.save(nib.Nifti1Image(data, img.affine, img.header), bold)
    cfg = load_config(FitConfig, preset_path("fit-tiny"), {"compare_estimates": False})
    a = prepare(cfg, twin, log=lambda _: None)
    b = prepare(cfg, copy, log=lambda _: None)
    assert np.array_equal(a.contrast, b.contrast)
    assert not np.array_equal(a.estimates["window"].test.x, b.estimates["window"].test.x)


def test_fit_reports_repeats_ablations_and_the_papers_table(tmp_path, twin):
    import torch

    from fmriface.commands.fit import main as fit_main
    from fmriface.commands.train_vaegan import main as train_main
    from offline.reports.paper import write_paper_report

    torch.set_num_threads(1)
    assert train_main(["--config", "vaegan-tiny", "--out", str(tmp_path / "vaegan")]) == 0
    cfg = tmp_path / "fit.toml"
    tiny = preset_path("fit-tiny").read_text().replace('mapping = "ridge"', 'mapping = "auto"')
    cfg.write_text("repeats = [1, 4, 8]\nrepeat_draws = 3\nablations = true\n" + tiny)
    out = tmp_path / "fit"
    argv = ["--config", str(cfg), "--bids", str(twin), "--vaegan", str(tmp_path / "vaegan"), "--threads", "1"]
    assert fit_main([*argv, "--out", str(out)]) == 0
    ev = json.loads((out / "report" / "evaluation.json").read_text())
    # mapping = auto: the bundle takes the mapping with the better cross-validated score on the training runs
    cv = ev["mapping_choice"]["cv_score"]
    assert ev["mapping"] == ev["mapping_choice"]["chosen"] == max(cv, key=cv.get)
    assert cv[ev["mapping"]] == ev["details"]["window"][ev["mapping"]]["vaegan"]["cv_score"]
    assert json.loads((out / "bundle" / "manifest.json").read_text())["mapping_method"] == ev["mapping"]
    assert ev["repeats"]["counts"] == [1, 4, 8] and set(ev["repeats"]["curves"]) == {
        "vaegan ridge",
        "pca ridge",
        "vaegan encoding",
        "pca encoding",
    }
    abl = ev["ablations"]
    assert set(abl) == {"true_voxels", "noise_free_bold", "hidden_code"}
    assert abl["true_voxels"]["responsive"] == 60 and 0 < abl["true_voxels"]["in_brain_mask"] <= 60
    assert abl["hidden_code"]["features"] == 16  # simulate-tiny's code size
    for rung in abl.values():
        for space in ("vaegan", "pca"):
            assert set(rung[space]) == {"latent", "pixel", "perceptual", "alpha"}
            assert all(0.0 <= rung[space][k] <= 1.0 for k in ("latent", "pixel", "perceptual"))
    html = (out / "report" / "report.html").read_text()
    assert "Where the accuracy goes" in html and "noise-free BOLD" in html
    assert (out / "report" / "figures" / "repeats.png").stat().st_size > 1000

    rep = write_paper_report(tmp_path / "paper", ev, json.loads((tmp_path / "vaegan" / "facespace.json").read_text()))
    md = rep["md"].read_text()
    for text in ("| ridge | vaegan |", "ceiling", "hidden_code", "permutation control", "1 repeats", "not met"):
        assert text in md
    ceiling = abl["hidden_code"]["vaegan"]["latent"]
    assert f"(ceiling {100 * ceiling:.1f}%)" in md
    # every trial estimate the fit scored, beside the window estimate, with the points it gains or loses
    lss = ev["details"]["lss"]["ridge"]["vaegan"]["latent"]["accuracy"]
    gain = 100 * (lss - ev["details"]["window"]["ridge"]["vaegan"]["latent"]["accuracy"])
    assert "Trial estimates side by side" in md
    assert f"| lss | ridge | vaegan | {100 * lss:.1f}% ({gain:+.1f}) |" in md
    assert len(rep["summary"]["goals"]) == 6
    # gender from the true test latents read both ways, the classifier shown beside the goal (not counted)
    g_true = ev["gender"]["vaegan"]["true_latents"]
    assert rep["summary"]["gender"]["true_classifier"] == g_true["classifier"]["accuracy"]
    assert (
        f"| gender, true latents (classifier on true training latents) | {100 * g_true['classifier']['accuracy']:.1f}% |"
        in md
    )
    goal = next(g for g in rep["summary"]["goals"] if g["goal"].startswith("gender from the true"))
    assert goal["value"] == g_true["projection"]["accuracy"] and goal["met"] == (goal["value"] >= 0.9)

    # a data set that is not a twin's: the fit goes on and says why the ablations are missing
    (twin / "derivatives" / "twin" / "simulate_config.json").rename(tmp_path / "saved.json")
    try:
        assert fit_main([*argv, "--out", str(tmp_path / "fit2")]) == 0
    finally:
        (tmp_path / "saved.json").rename(twin / "derivatives" / "twin" / "simulate_config.json")
    ev2 = json.loads((tmp_path / "fit2" / "report" / "evaluation.json").read_text())
    assert "simulate_config.json is missing" in ev2["ablations"]["skipped"]
    assert "Ablations: skipped" in (tmp_path / "fit2" / "report" / "report.html").read_text()
