"""Trial estimates on synthetic runs with known responses: window estimates, GLM betas, contrast, averaging."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from offline.datasets.bids import BidsRun
from offline.decoding.estimates import RealignedRun, average_by_stimulus, face_contrast, glm_patterns, window_patterns
from service.window import WindowSpec

TR = 2.0


def _hrf(t):
    from scipy.stats import gamma

    return gamma.pdf(t, 6) - gamma.pdf(t, 16) / 6


def _synthetic_run(rng, n_vol=150, n_vox=30, noise=0.2):
    """Faces every 3 s (4 images, each shown several times) with voxel patterns per image, plus fixations."""
    onsets = np.arange(4.0, n_vol * TR - 30, 3.0)
    kinds = np.where(np.arange(len(onsets)) % 5 == 4, "Fix", "train_face")
    stims = [f"train/train_{i % 4:05d}.png" if k != "Fix" else None for i, k in enumerate(kinds)]
    patterns = {f"train/train_{i:05d}.png": rng.normal(size=n_vox) for i in range(4)}
    t_fine = np.arange(0, n_vol * TR, 0.1)
    signal = np.zeros((len(t_fine), n_vox))
    for onset, stim in zip(onsets, stims):
        if stim is not None:
            box = ((t_fine >= onset) & (t_fine < onset + 1)).astype(float)
            signal += box[:, None] * (patterns[stim] + 2.0)  # every face also drives a shared response
    kernel = _hrf(np.arange(0, 32, 0.1)) * 0.1
    bold = np.stack([np.convolve(signal[:, v], kernel)[: len(t_fine)] for v in range(n_vox)], axis=1)
    bold = bold[:: int(TR / 0.1)]
    drift = np.linspace(0, 3, n_vol)[:, None]
    x = 1000 + 10 * (bold + drift) + noise * 10 * rng.normal(size=(n_vol, n_vox))
    events = pd.DataFrame({"onset": onsets, "duration": 1.0, "trial_type": kinds, "stim_file": stims})
    run = BidsRun(bold=None, subject="01", session="01", task="faces", run="01", tr=TR, events=events)  # type: ignore[arg-type]
    return RealignedRun(run=run, x=x.astype(np.float32), motion=np.zeros((n_vol, 6))), patterns


def test_glm_betas_recover_image_patterns(rng):
    rr, patterns = _synthetic_run(rng)
    betas, images = glm_patterns(rr, ["train_face"])
    stims = images["stim_file"].tolist()
    assert stims == sorted(patterns) and betas.shape == (4, 30)
    corr = np.corrcoef(np.vstack([betas, np.stack([patterns[s] for s in stims])]))[:4, 4:]
    assert np.all(np.argmax(corr, axis=1) == np.arange(4))
    assert np.all(np.diag(corr) > 0.8)  # the simulated HRF is not nilearn's Glover HRF


def test_window_estimates_recover_image_patterns(rng):
    rr, patterns = _synthetic_run(rng)
    est, trials = window_patterns(rr, ["train_face"], WindowSpec())
    assert len(est) == len(trials) and set(trials["trial_type"]) == {"train_face"}
    avg, stims, _, counts = average_by_stimulus(est, trials["stim_file"].tolist())
    assert counts.sum() == len(trials)
    # overlapping responses (3 s apart) blur single-trial windows; averaged over repeats each image stands out
    corr = np.corrcoef(np.vstack([avg, np.stack([patterns[s] for s in stims])]))[:4, 4:]
    assert np.all(np.argmax(corr, axis=1) == np.arange(4))
    assert np.all(np.diag(corr) > 0.5)


def test_face_contrast_marks_responsive_voxels(rng):
    rr, _ = _synthetic_run(rng)
    rr.x[:, :10] = 1000 + 2 * rng.normal(size=(rr.n_volumes, 10))  # ten silent voxels
    t = face_contrast([rr])
    assert t[10:].min() > t[:10].max()
    with pytest.raises(ValueError, match="no run has face trials"):
        empty = RealignedRun(
            run=rr.run.__class__(**{**rr.run.__dict__, "events": rr.run.events.iloc[:0]}), x=rr.x, motion=rr.motion
        )
        face_contrast([empty])


def test_average_by_stimulus():
    pats = np.array([[1.0, 0.0], [3.0, 2.0], [5.0, 4.0]])
    avg, ids, groups, counts = average_by_stimulus(pats, ["b", "a", "b"], groups=[7, 8, 9])
    assert ids == ["b", "a"]
    np.testing.assert_allclose(avg, [[3.0, 2.0], [3.0, 2.0]])
    assert groups.tolist() == [7, 8] and counts.tolist() == [2, 1]


def test_every_registered_estimator_takes_the_spec_and_names_its_rows(rng):
    """The registry's offline forms share one signature ``(run, trial_types, spec, options)`` and return one
    ``stim_file`` row per pattern; the spec's settings reach them (a bare WindowSpec is the default spec's)."""
    from offline.decoding.estimates import EstimateOptions
    from service.preprocess import ESTIMATORS, PreprocessSpec

    rr, patterns = _synthetic_run(rng)
    rr.motion = np.cumsum(rng.normal(0, 0.05, (rr.n_volumes, 6)), axis=0)
    for name, estimator in ESTIMATORS.items():
        x, rows = estimator.offline_function()(rr, ["train_face"], PreprocessSpec(estimate=name), EstimateOptions())
        assert len(x) == len(rows) and set(rows["stim_file"]) == set(patterns), name
    spec = PreprocessSpec(window=WindowSpec(4.0, 10.0))
    np.testing.assert_array_equal(
        window_patterns(rr, ["train_face"], spec.window)[0], window_patterns(rr, ["train_face"], spec)[0]
    )
    assert not np.allclose(
        window_patterns(rr, ["train_face"], spec)[0],
        window_patterns(rr, ["train_face"], spec.replace(scale="zscore"))[0],
    )
    without_motion = glm_patterns(rr, ["train_face"], PreprocessSpec(estimate="glm", motion_regressors=False))[0]
    assert not np.allclose(glm_patterns(rr, ["train_face"])[0], without_motion)
    slow = glm_patterns(rr, ["train_face"], None, EstimateOptions(high_pass=0.001))[0]
    assert not np.allclose(glm_patterns(rr, ["train_face"])[0], slow)
