"""The absolute check against the reference in a run whose units differ from the reference's."""

from __future__ import annotations

import numpy as np

from service.qa import QualityTracker


def _run(rng, n, level, spikes=()):
    base = rng.normal(1000.0, 50.0, 400).astype(np.float32)
    out = []
    for i in range(n):
        x = base * level + rng.normal(0, 5.0, base.size).astype(np.float32) * level
        out.append(x * 100 if i in spikes else x)
    return out


def test_a_run_in_other_units_loses_only_its_first_volume():
    """16 x the reference's units (a DICOM export's scaling): volume 0 is censored, the rest are not."""
    rng = np.random.default_rng(0)
    qa = QualityTracker(reference_mean=1000.0)
    verdicts = [qa.update(None, x)["censored"] for x in _run(rng, 30, 16.0)]
    assert verdicts[0] and not any(verdicts[1:])
    assert abs(qa.summary()["units_ratio"] - 16.0) < 0.2


def test_a_first_volume_spike_in_the_reference_units_stays_caught():
    rng = np.random.default_rng(1)
    qa = QualityTracker(reference_mean=1000.0)
    verdicts = [qa.update(None, x)["censored"] for x in _run(rng, 30, 1.0, spikes={0, 17})]
    assert [i for i, v in enumerate(verdicts) if v] == [0, 17]
    assert "units_ratio" not in qa.summary()


def test_a_first_volume_spike_in_other_units_costs_two_volumes_and_later_spikes_are_caught():
    rng = np.random.default_rng(2)
    qa = QualityTracker(reference_mean=1000.0)
    verdicts = [qa.update(None, x)["censored"] for x in _run(rng, 40, 16.0, spikes={0, 25})]
    assert [i for i, v in enumerate(verdicts) if v] == [0, 1, 25]
