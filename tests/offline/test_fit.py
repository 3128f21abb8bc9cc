"""``fmriface fit`` end to end on the tiny twin, and decoding accuracy against the twin's noise."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fmriface.config import load_config, preset_path
from offline.decoding.evaluate import pairwise_accuracy
from offline.decoding.mapping import RidgeMapping
from offline.decoding.selection import top_k
from offline.fit import FitConfig, prepare
from service.bundle import BUNDLE_FILES, load_bundle


def _simulate(out: Path, **overrides) -> Path:
    from offline.twin.config import SimulateConfig
    from offline.twin.simulate import simulate

    cfg = load_config(SimulateConfig, preset_path("simulate-tiny"), overrides)
    simulate(cfg, out)
    return out


def _codes(bids: Path) -> dict[str, np.ndarray]:
    with np.load(bids / "derivatives" / "twin" / "codes.npz", allow_pickle=False) as z:
        return dict(zip((str(s) for s in z["stim_files"]), z["codes"]))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    """The tiny twin and a vaegan-tiny face space, made once for this module's tests."""
    import torch

    from fmriface.commands.train_vaegan import main as train_main

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("tiny")
    bids = _simulate(root / "twin")
    assert train_main(["--config", "vaegan-tiny", "--out", str(root / "vaegan")]) == 0
    return bids, root / "vaegan"


def test_fit_end_to_end_on_the_tiny_twin(tmp_path, tiny):
    """Simulate-tiny + vaegan-tiny + fit-tiny: about 10 s of CPU (the VAE-GAN's 12 steps included)."""
    import torch

    from fmriface.commands.fit import main as fit_main

    torch.set_num_threads(1)
    bids, vaegan = tiny
    out = tmp_path / "fit"
    assert (
        fit_main(
            [
                "--config",
                "fit-tiny",
                "--bids",
                str(bids),
                "--vaegan",
                str(vaegan),
                "--out",
                str(out),
                "--threads",
                "1",
                "--json",
            ]
        )
        == 0
    )

    # the bundle: exactly docs/bundle.md's files, accepted by the service's loader
    bundle_dir = out / "bundle"
    assert sorted(p.name for p in bundle_dir.iterdir()) == sorted([*BUNDLE_FILES, "manifest.json"])
    bundle = load_bundle(bundle_dir)
    manifest = bundle.manifest
    assert manifest["tr"] == 2.0 and manifest["window"]["start"] == 4.0 and manifest["estimate"] == "window"
    assert manifest["preprocessing"]["scale"] == "psc" and manifest["preprocessing"]["poly_order"] == 2
    assert manifest["mapping_method"] == "ridge" and "pairwise" in manifest["evaluation"]
    assert manifest["training"]["train_stimuli"] > 0
    assert manifest["image_framing"] == "resize"  # the twin's faces are framed like vaegan-tiny's procedural ones
    assert bundle.n_voxels == int(bundle.mask.sum()) > 0
    assert all(sid.startswith(("train/", "test/")) for sid in bundle.stimulus_ids)
    assert "Male" in bundle.attribute_names
    # two sessions: the reference is session 1's; session 2 (another slab, the head moved) registered to it
    assert manifest["reference_session"] == "01" and sorted(manifest["sessions"]) == ["01", "02"]
    assert manifest["sessions"]["01"]["offset"] == [0.0] * 6 and manifest["sessions"]["01"]["registered"] == "reference"
    second = manifest["sessions"]["02"]
    assert max(abs(v) for v in second["offset"]) > 2.0 and second["registration"]["cost"] < 0.2
    assert len(second["runs"]) == 3 and np.asarray(second["grid"]["affine"]).shape == (4, 4)

    # every number in evaluation.json
    ev = json.loads((out / "report" / "evaluation.json").read_text())
    for space in ("vaegan", "pca"):
        for kind in ("latent", "pixel", "perceptual"):
            assert 0.0 <= ev["pairwise"][space][kind] <= 1.0
    for est in ("window", "glm"):
        for mapping in ("ridge", "encoding"):
            assert set(ev["details"][est][mapping]) == {"vaegan", "pca"}
    assert 0.0 <= ev["permutation"]["mean"] <= 1.0 and ev["permutation"]["ridge"]["n_permutations"] == 5
    assert set(ev["gender"]["vaegan"]["ridge"]) == set(ev["gender"]["pca"]["encoding"]) == {"projection", "classifier"}
    assert 0 <= ev["gender"]["vaegan"]["true_latents"]["projection"]["p_value"] <= 1
    assert ev["imagery"]["vaegan"]["latent"]["n_items"] == 2  # the bundle's estimate and mapping
    assert ev["imagery"]["vaegan"]["trials"]["n_trials"] == 6  # simulate-tiny: 3 imagery trials in each of 2 sessions
    assert set(ev["imagery"]["details"]["glm"]["encoding"]) == {"vaegan", "pca"}
    assert "discriminator" in ev["perceptual_space"]
    html = (out / "report" / "report.html").read_text()
    assert "hidden layer of the trained VAE-GAN's discriminator" in html
    for fig in ("faces.png", "accuracy.png", "motion.png"):
        assert (out / "report" / "figures" / fig).stat().st_size > 1000


def test_accuracy_rises_as_the_twins_noise_falls(tmp_path):
    """The same tiny twin at two temporal SNRs: decoding its hidden face code is better with less noise."""
    paradigm = {
        "paradigm.volumes_per_run": 80,
        "paradigm.n_test_faces": 8,
        "paradigm.test_repeats_per_run": 4,
        "paradigm.train_runs_per_session": 3,
        "paradigm.imagery_runs_per_session": 0,
    }
    cfg = load_config(FitConfig, preset_path("fit-tiny"), {"compare_estimates": False})
    accuracy = {}
    for tsnr in (400.0, 15.0):
        bids = _simulate(tmp_path / f"tsnr{tsnr:g}", **paradigm, **{"noise.tsnr": tsnr})
        data = prepare(cfg, bids, log=lambda _: None)
        codes = _codes(bids)
        train, test = data.estimates["window"].train, data.estimates["window"].test
        x, ids, groups = train.x, train.ids, train.runs
        xt, tids = test.x, test.ids
        keep = top_k(data.contrast, 100)
        z = np.stack([codes[s] for s in ids])
        zt = np.stack([codes[s] for s in tids])
        mapping = RidgeMapping(alphas=cfg.alphas, n_splits=3).fit(x[:, keep], z, groups=groups)
        accuracy[tsnr] = pairwise_accuracy(mapping.predict(xt[:, keep]), zt).accuracy
    print("pairwise accuracy by tSNR:", accuracy)
    assert accuracy[400.0] > accuracy[15.0]
    assert accuracy[400.0] >= 0.75


def test_bench_fit_runs_the_real_fit_and_reports_every_score(tmp_path, tiny):
    """bench fit on the tiny twin with fit-tiny: the agreed keys, the child's own time and memory, every score."""
    import argparse

    from fmriface.benchmarks import fit as bench

    bids, vaegan = tiny
    p = argparse.ArgumentParser()
    bench.add_arguments(p)
    argv = ["--config", "fit-tiny", "--bids", str(bids), "--vaegan", str(vaegan), "--work", str(tmp_path)]
    out = bench.run(p.parse_args([*argv, "--threads", "1", "--permutations", "2"]))
    assert out["wall_s"] > 0 and out["cpu_s"] > 0 and out["peak_rss_mb"] > 50 and out["threads"] == 1
    assert {"realign + estimates", "voxel selection", "mappings", "permutation control"} <= set(out["steps_s"])
    for est in ("window", "glm"):
        for mapping in ("ridge", "encoding"):
            for space in ("vaegan", "pca"):
                assert set(out["scores"][est][mapping][space]) == {"latent", "pixel", "perceptual"}
    assert set(out["permutation"]) == {"ridge", "encoding"} and out["n_permutations"] == {"ridge": 2, "encoding": 2}
    assert (tmp_path / "fit" / "bundle" / "manifest.json").is_file() and "prepare_s" not in out


def test_heartbeat_times_steps_and_paces_a_bar_into_a_log():
    """The heartbeat's bookkeeping (its firing is left to the end-to-end runs: no test waits on a clock)."""
    import sys

    from offline.fit import Heartbeat

    lines, made = [], []

    class Bar:
        def __init__(self, **kw):
            made.append(kw)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

    with Heartbeat(lines.append, interval=3600.0) as hb:
        hb.step("one", "starting one")
        with hb.bar(Bar)(total=3, desc="d"):
            assert hb._bars == 1
        hb.step("two")
    assert lines == ["starting one"] and set(hb.times) == {"one", "two"} and hb._bars == 0
    assert made[0]["total"] == 3
    if not sys.stderr.isatty():  # into a log (pytest captures stderr): a bar line every ~5 s
        assert made[0]["mininterval"] == 5.0 and made[0]["miniters"] == 1
    assert hb.bar(None) is None


def test_the_preprocess_table_is_one_spec_and_the_bundles_record(tmp_path):
    """``[preprocess]`` and ``[preprocess.window]`` build the config's PreprocessSpec; ``--estimate`` overrides
    ``preprocess.estimate``; the imagery window is the trial window to ``imagery_window_stop``; the old loose
    options are unknown keys; a bad value names what is wrong."""
    from fmriface.config import ConfigError
    from service.preprocess import ESTIMATORS, PreprocessSpec
    from service.window import WindowSpec

    toml = tmp_path / "fit.toml"
    toml.write_text(
        'imagery_window_stop = 12.0\n[preprocess]\nestimate = "glm"\nscale = "zscore"\ninterpolation = "cubic"\n'
        "[preprocess.window]\nstop = 10.0\n"
    )
    cfg = load_config(FitConfig, toml)
    assert cfg.preprocess == PreprocessSpec(
        estimate="glm", window=WindowSpec(stop=10.0), scale="zscore", interpolation="cubic"
    )
    assert cfg.window == WindowSpec(stop=10.0) and cfg.imagery_window == WindowSpec(stop=12.0)
    assert cfg.estimates == tuple(ESTIMATORS)
    only = load_config(FitConfig, toml, {"preprocess.estimate": "window", "compare_estimates": False})
    assert only.estimates == ("window",) and only.preprocess.scale == "zscore"
    assert load_config(FitConfig, preset_path("fit-tiny")).preprocess == PreprocessSpec()
    for bad, message in (
        ({"detrend_scale": "psc"}, "unknown key 'detrend_scale'"),
        ({"preprocess.estimate": "lsx"}, "unknown trial estimate 'lsx'"),
        ({"preprocess.window.stop": 1.0}, "window stop"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_config(FitConfig, None, bad)
