"""The trial window estimate shared by the offline fit and the service."""

from __future__ import annotations

import numpy as np
import pytest

from service.window import (
    IncompleteWindowError,
    TrialWindows,
    WindowSpec,
    last_volume_needed,
    window_estimate,
    window_indices,
)


def test_indices_for_tr2():
    # onset 3 s, TR 2 s: window 7-11 s -> volumes at 8 and 10 s; baseline 1-3 s -> the volume at 2 s
    window, baseline = window_indices(3.0, 2.0)
    assert window.tolist() == [4, 5]
    assert baseline.tolist() == [1]
    # onset on a volume: 6 s -> window 10-14 s (volumes 5, 6), baseline 4-6 s inclusive (volumes 2, 3)
    window, baseline = window_indices(6.0, 2.0)
    assert window.tolist() == [5, 6]
    assert baseline.tolist() == [2, 3]
    # a trial at the start of the run: the baseline is volume 0
    window, baseline = window_indices(0.0, 2.0)
    assert window.tolist() == [2, 3]
    assert baseline.tolist() == [0]


def test_float_onsets_from_tsv_do_not_shift_the_window():
    # 5.9999999 is 6 written with float noise; it must select the same volumes as 6.0
    assert window_indices(5.9999999, 2.0)[0].tolist() == window_indices(6.0, 2.0)[0].tolist()
    assert window_indices(6.0000001, 2.0)[1].tolist() == window_indices(6.0, 2.0)[1].tolist()


def test_estimate_is_window_mean_minus_baseline(rng):
    t, v = 23, 7
    data = rng.normal(size=(t, v)).astype(np.float32)
    onsets = np.array([0.0, 3.0, 10.5, 20.0])
    est = window_estimate(data, onsets, tr=2.0)
    assert est.shape == (4, v) and est.dtype == np.float32
    for i, onset in enumerate(onsets):
        times = np.arange(t) * 2.0
        win = (times >= onset + 4) & (times < onset + 8)
        base = (times >= onset - 2) & (times <= onset)
        if not base.any():
            base[0] = True
        expected = data[win].mean(0) - data[base].mean(0)
        np.testing.assert_allclose(est[i], expected, rtol=1e-5, atol=1e-6)
    # one onset gives one pattern; volumes may be 3-D
    vol = rng.normal(size=(t, 3, 4, 5))
    assert window_estimate(vol, 3.0, tr=2.0).shape == (3, 4, 5)


def test_a_constant_response_in_the_window_is_recovered():
    tr = 1.5
    data = np.zeros((40, 2))
    onset = 9.0
    times = np.arange(40) * tr
    data[(times >= onset + 4) & (times < onset + 8)] = [2.0, -1.0]
    data += 5.0  # any offset cancels against the baseline
    np.testing.assert_allclose(window_estimate(data, onset, tr), [2.0, -1.0], atol=1e-6)


def test_incomplete_window_is_refused():
    data = np.zeros((5, 3))
    with pytest.raises(IncompleteWindowError, match="volume 5"):
        window_estimate(data, 3.0, tr=2.0)


def test_spec_validation():
    with pytest.raises(ValueError, match="after its start"):
        WindowSpec(start=8.0, stop=4.0)
    with pytest.raises(ValueError, match="shorter than the TR"):
        window_indices(3.0, 5.0)
    with pytest.raises(ValueError, match="before the response"):
        WindowSpec(baseline_stop=5.0)


def test_tracker_returns_each_trial_once_when_its_last_volume_arrives():
    tr = 2.0
    tw = TrialWindows(tr=tr)
    onsets = {"a": 0.0, "b": 3.0, "c": 6.0, "d": 40.0}
    for key, onset in onsets.items():
        tw.add(key, onset)
    seen: dict[str, int] = {}
    for k in range(20):
        for trial in tw.advance(k):
            assert trial.key not in seen
            seen[trial.key] = k
            assert trial.window[-1] == k == last_volume_needed(onsets[trial.key], tr)
    assert seen == {"a": 3, "b": 5, "c": 6}
    assert tw.pending == 1 and tw.last_volume == 19
    # a trial registered late (its window already acquired) comes out at the next volume
    tw.add("late", 2.0)
    assert [t.key for t in tw.advance(20)] == ["late"]


def test_tracker_agrees_with_the_batch_estimate(rng):
    tr = 2.0
    data = rng.normal(size=(60, 11))
    onsets = np.arange(2.0, 100.0, 3.0)
    tw = TrialWindows(tr=tr)
    for i, onset in enumerate(onsets):
        tw.add(i, float(onset))
    online = {}
    for k in range(data.shape[0]):
        for trial in tw.advance(k):
            online[trial.key] = window_estimate(data[: k + 1], trial.onset, tr)
    complete = [i for i in range(len(onsets)) if i in online]
    assert len(complete) == sum(last_volume_needed(o, tr) < 60 for o in onsets)
    offline = window_estimate(data, onsets[complete], tr)
    np.testing.assert_allclose(np.stack([online[i] for i in complete]), offline, rtol=1e-6)
