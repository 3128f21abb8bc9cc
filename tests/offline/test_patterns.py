"""The fit's named data: trial patterns joined, selected and reordered; face spaces' features."""

from __future__ import annotations

import numpy as np

from offline.decoding.estimates import average_by_stimulus
from offline.decoding.facespaces import FaceSpaces
from offline.decoding.patterns import EstimatePatterns, TrialPatterns


def _run(rng, ids, run):
    return TrialPatterns(rng.normal(size=(len(ids), 6)), list(ids), np.full(len(ids), run))


def test_runs_join_in_order_and_average_as_before(rng):
    a, b = _run(rng, ["f1", "f2", "f1"], 0), _run(rng, ["f2", "f3"], 1)
    joined = TrialPatterns.concat([a, b])
    assert joined.ids == ["f1", "f2", "f1", "f2", "f3"] and list(joined.runs) == [0, 0, 0, 1, 1]
    np.testing.assert_array_equal(joined.x, np.concatenate([a.x, b.x]))
    # the runs of the joined trials are those the lists of run numbers gave average_by_stimulus
    avg, uids, first, _ = average_by_stimulus(joined.x, joined.ids, joined.runs)
    avg_l, uids_l, first_l, _ = average_by_stimulus(joined.x, joined.ids, [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(avg, avg_l)
    assert uids == uids_l == ["f1", "f2", "f3"] and list(first) == list(first_l) == [0, 0, 1]
    assert len(TrialPatterns.concat([TrialPatterns(a.x, a.ids), b])) == 5  # no runs: None
    assert TrialPatterns.concat([TrialPatterns(a.x, a.ids), b]).runs is None


def test_select_and_reorder_keep_rows_with_their_ids(rng):
    p = _run(rng, ["a", "b", "c"], 2)
    cols = np.array([True, False, True, False, False, True])
    sel = p.select(cols)
    assert sel.x.shape == (3, 3) and sel.ids == p.ids and sel.runs is p.runs
    other = TrialPatterns(np.zeros((3, 6)), ["c", "a", "b"], np.array([7, 8, 9]))
    moved = p.in_order_of(other)
    assert moved.ids == ["c", "a", "b"] and list(moved.runs) == [7, 8, 9]
    np.testing.assert_array_equal(moved.x, p.x[[2, 0, 1]])


def test_estimate_patterns_select_every_split_present(rng):
    e = EstimatePatterns(_run(rng, ["a", "b"], 0), _run(rng, ["c"], 1), imagery_trials=_run(rng, ["i", "i"], 2))
    sel = e.select(np.array([0, 3]))
    assert sel.train.x.shape == (2, 2) and sel.test.x.shape == (1, 2) and sel.imagery_trials.x.shape == (2, 2)
    assert sel.imagery is None and sel.test_trials is None


def test_face_spaces_features_follow_the_perceptual_space():
    images = {"train": np.ones((2, 4, 4, 3)), "test": np.zeros((1, 4, 4, 3))}
    plain = FaceSpaces({"s": object()}, {"s": {"train": np.zeros((2, 3))}}, images)
    assert plain.names == ["s"] and plain.features("test") is None
    feats = FaceSpaces(plain.spaces, plain.latents, images, perceptual=lambda im: im.reshape(len(im), -1)[:, :5])
    np.testing.assert_array_equal(feats.features("train"), np.ones((2, 5)))
