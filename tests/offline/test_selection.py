"""Voxel selection on synthetic patterns where the informative voxels are known."""

from __future__ import annotations

import numpy as np
import pytest

from offline.decoding.mapping import cv_splits
from offline.decoding.selection import SelectionConfig, encoding_scores, mask_selection, select_voxels, top_k


def _data(rng, n=240, v=300, informative=40, latent=10):
    z = rng.normal(size=(n, latent))
    x = rng.normal(size=(n, v))
    x[:, :informative] += z @ rng.normal(size=(latent, informative)) * 0.8
    groups = np.repeat(np.arange(6), n // 6)
    return x, z, groups


def test_top_k_and_mask():
    assert top_k(np.array([0.1, np.nan, 3.0, 2.0]), 2).tolist() == [False, False, True, True]
    assert top_k(np.array([np.nan, 1.0]), 5).tolist() == [False, True]
    brain = np.zeros((3, 4, 5), bool)
    brain[1] = True
    given = np.zeros((3, 4, 5), np.uint8)
    given[1, 0] = 1
    sel = mask_selection(given, brain)
    assert sel.shape == (20,) and sel.sum() == 5
    with pytest.raises(ValueError, match="shape"):
        mask_selection(given[:2], brain)


def test_encoding_scores_find_the_informative_voxels(rng):
    x, z, groups = _data(rng)
    scores = encoding_scores(x, z, groups, n_components=10)
    assert scores[:40].min() > np.percentile(scores[40:], 99)
    sel = select_voxels(SelectionConfig("encoding", 40), x=x, z=z, groups=groups)
    assert sel.index[:40].mean() > 0.95 and sel.index.sum() == 40


def test_contrast_and_auto(rng):
    x, z, groups = _data(rng)
    contrast = rng.normal(size=300)  # an uninformative contrast: auto must prefer the encoding ranking
    sel = select_voxels(SelectionConfig("contrast", 50), x=x, z=z, groups=groups, contrast=contrast)
    assert sel.method == "contrast" and sel.index.sum() == 50
    auto = select_voxels(
        SelectionConfig("auto", 0, candidates=(40, 150), n_components=10), x=x, z=z, groups=groups, contrast=contrast
    )
    assert auto.method == "auto:encoding" and auto.k in (40, 150)
    assert set(auto.cv) == {"contrast:40", "contrast:150", "encoding:40", "encoding:150"}
    assert auto.cv[f"encoding:{auto.k}"] == max(auto.cv.values())


def test_bad_requests(rng):
    x, z, groups = _data(rng, n=60, v=50)
    with pytest.raises(ValueError, match="needs a voxel mask"):
        select_voxels(SelectionConfig("mask", 0, mask="given.nii.gz"), x=x, z=z, groups=groups)
    with pytest.raises(ValueError, match="contrast"):
        select_voxels(SelectionConfig("contrast", 10), x=x, z=z, groups=groups)
    with pytest.raises(ValueError, match="unknown selection"):
        select_voxels(SelectionConfig("magic", 10), x=x, z=z, groups=groups)


def test_auto_uses_the_configured_number_of_folds(rng, monkeypatch):
    import offline.decoding.selection as S

    x, z, groups = _data(rng, n=120, v=80)
    asked = []

    def folds(n, g, n_splits):
        asked.append(("folds", n_splits))
        return cv_splits(n, g, n_splits)

    def ranking(x, z, g, n_components, n_splits):
        asked.append(("ranking", n_splits))
        return x.std(0)

    monkeypatch.setattr(S, "cv_splits", folds)
    monkeypatch.setattr(S, "encoding_scores", ranking)
    select_voxels(SelectionConfig("auto", 20, candidates=(20,), n_components=5, n_splits=4), x=x, z=z, groups=groups)
    # the ranking on all trials and auto's outer folds follow the config (4, not a fixed 5); the ranking
    # redone inside each of the 4 folds uses 3
    assert asked == [("ranking", 4), ("folds", 4)] + [("ranking", 3)] * 4
