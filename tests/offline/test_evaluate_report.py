"""The fit report: evaluation.json with every number, HTML with the three figures."""

from __future__ import annotations

import json

import numpy as np

from offline.decoding.evaluate import pairwise_accuracy
from offline.reports.fit_report import write_report


def _evaluation(rng):
    true = rng.normal(size=(6, 8))
    details = {}
    for est in ("window", "glm"):
        for mapping in ("ridge", "encoding"):
            for space in ("vaegan", "pca"):
                pred = true + rng.normal(size=true.shape)
                entry = {k: pairwise_accuracy(pred, true).as_dict() for k in ("latent", "pixel", "perceptual")}
                details.setdefault(est, {}).setdefault(mapping, {})[space] = {**entry, "alpha": 10.0, "cv_score": 0.2}
    main = details["window"]["ridge"]
    imag = {
        "latent": pairwise_accuracy(true[:2], true[:2]).as_dict(),
        "trials": {"accuracy": 0.6, "n_trials": 10, "n_comparisons": 10, "p_value": 0.37},
    }
    return {
        "pairwise": {s: {k: main[s][k]["accuracy"] for k in ("latent", "pixel", "perceptual")} for s in main},
        "estimate": "window",
        "mapping": "ridge",
        "chance": 0.5,
        "details": details,
        "permutation": {
            "ridge": {"n_permutations": 3, "mean": 0.49, "std": 0.02, "accuracies": [0.47, 0.5, 0.5]},
            "mean": 0.49,
        },
        "gender": {
            "vaegan": {
                "ridge": {
                    "projection": {"accuracy": 0.7, "n": 6, "p_value": 0.3, "scores": [0.1]},
                    "classifier": {"accuracy": 0.8, "n": 6, "p_value": 0.1},
                }
            }
        },
        "imagery": {"vaegan": imag, "details": {"window": {"ridge": {"vaegan": imag}}}},
        "perceptual_space": "a hidden layer of the trained VAE-GAN's discriminator (no pretrained network)",
    }


def test_report_files_and_numbers(tmp_path, rng):
    ev = _evaluation(rng)
    images = rng.random((6, 16, 16, 3)).astype(np.float32)
    path = write_report(
        tmp_path / "report",
        evaluation=ev,
        test_images=images,
        recon={"vaegan": images[::-1], "pca": images * 0.5},
        motion={"run-01": rng.normal(size=(30, 6)) * 0.1, "run-02": rng.normal(size=(20, 6)) * 0.1},
        training={"subject": "01", "bids": "/data", "train_stimuli": 100, "test_stimuli": 6, "volumes": 50},
        timing={"total_s": 1.0},
    )
    saved = json.loads((tmp_path / "report" / "evaluation.json").read_text())
    assert saved["pairwise"] == ev["pairwise"] and saved["training"]["subject"] == "01"
    assert 0 <= saved["pairwise"]["pca"]["pixel"] <= 1
    html = path.read_text()
    for fig in ("faces.png", "accuracy.png", "motion.png"):
        assert f"figures/{fig}" in html
        assert (tmp_path / "report" / "figures" / fig).stat().st_size > 1000
    assert "hidden layer of the trained VAE-GAN's discriminator" in html
    assert "permutation control" in html.lower() and "10 trials" in html
    assert html.count("<tr>") >= 1 + 8  # the details table: header + 2 estimates x 2 mappings x 2 spaces
