"""The fit compares estimate types on the stimuli every type estimated (a censored trial drops out of all)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from offline.decoding.patterns import TrialPatterns
from offline.fit import FitConfig, _averaged_patterns


def _parts(ids, value):
    x = np.stack([np.full(3, value + i, np.float32) for i in range(len(ids))])
    return [TrialPatterns(x, list(ids), np.zeros(len(ids), np.int64))]


def test_a_stimulus_one_estimate_lacks_drops_out_of_every_estimate_type(caplog, tmp_path):
    parts = {
        # the window estimate of "b" is missing (its window volumes censored); the GLM fitted it
        "window": {"train": _parts(["a", "c", "d"], 0.0), "test": _parts(["t1", "t2"], 0.0), "imagery": []},
        "glm": {"train": _parts(["d", "c", "b", "a"], 10.0), "test": _parts(["t2", "t1"], 10.0), "imagery": []},
    }
    caplog.set_level(logging.WARNING, "offline.fit")
    out = _averaged_patterns(FitConfig(), parts, ("window", "glm"), tmp_path)
    assert out["window"].train.ids == out["glm"].train.ids == ["a", "c", "d"]
    assert out["window"].test.ids == out["glm"].test.ids == ["t1", "t2"]
    # rows follow their stimulus: glm's "a" was its 4th row (value 13)
    assert out["glm"].train.x[0, 0] == 13.0 and out["window"].train.x[0, 0] == 0.0
    assert any("1 train stimuli of the glm estimates left out" in r.getMessage() for r in caplog.records)


def test_no_common_stimulus_is_an_error_naming_the_runs(tmp_path):
    from offline.datasets.bids import BidsError

    empty = {"test": [], "imagery": []}
    parts = {"window": {"train": _parts(["a"], 0.0), **empty}, "glm": {"train": _parts(["b"], 0.0), **empty}}
    with pytest.raises(BidsError, match="share no stimulus"):
        _averaged_patterns(FitConfig(), parts, ("window", "glm"), tmp_path)
