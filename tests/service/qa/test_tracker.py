"""Each QA metric against an offline computation over the whole run, written here with numpy (a clean run: no
volume censored, so the running estimates are plain prefix statistics), and the refusals and censoring rules."""

from __future__ import annotations

import numpy as np
import pytest

from service.qa import QAConfig, QualityTracker, RefusedVolumeError, check_volume, median5
from service.qa.tracker import CENTER, SLICE_FLOOR, SLICE_MIN_LEVEL


def _run(seed: int = 0, t: int = 40, shape=(7, 8, 9)):
    rng = np.random.default_rng(seed)
    base = rng.uniform(200, 1000, size=shape).astype(np.float32)
    drift = np.linspace(0, 5, t)[:, None, None, None]
    return (base[None] + drift + rng.normal(0, 10, size=(t, *shape))).astype(np.float32)


def _offline(data: np.ndarray, mask: np.ndarray, cfg: QAConfig):
    """The metrics at every volume from the volumes before it, over the whole run at once."""
    x = data[:, mask].astype(np.float64)
    t = len(x)
    gs = x.mean(1)
    d = np.diff(x, axis=0)
    dvars = np.r_[np.nan, np.sqrt((d**2).mean(1))]
    std = np.full(t, np.nan)
    for k in range(3, t):
        std[k] = dvars[k] / d[: k - 1].std(axis=0, ddof=1).mean()
    xn = x / gs[:, None]
    outl = np.full(t, np.nan)
    devs = [np.abs(xn[k] - np.median(xn[k - CENTER : k], axis=0)) for k in range(CENTER, t)]
    for k in range(CENTER + cfg.warmup, t):
        scale = np.mean(devs[: k - CENTER], axis=0) * np.sqrt(np.pi / 2) * cfg.outlier_z
        outl[k] = np.mean(devs[k - CENTER] > scale)
    means = data.mean(axis=(1, 2))
    slz = np.full(t, np.nan)
    for k in range(cfg.warmup, t):
        hist = means[max(0, k - cfg.window) : k]
        head = np.median(hist, 0) >= SLICE_MIN_LEVEL * np.median(hist, 0).max()
        r = hist[:, head] / np.median(hist[:, head], 1, keepdims=True)
        cur = means[k, head] / np.median(means[k, head])
        c = np.median(r, 0)
        scale = np.maximum(1.4826 * np.median(np.abs(r - c), 0), SLICE_FLOOR * np.abs(c))
        slz[k] = np.max(np.abs(cur - c) / scale)
    tsnr = (x.mean(0) / x.std(0, ddof=1)).mean()
    raw_tsnr = data.mean(0) / data.std(0, ddof=1)
    return gs, dvars, std, outl, slz, tsnr, data.mean(0), raw_tsnr


def test_every_metric_matches_the_offline_computation():
    data = _run()
    mask = data.mean(0) > 500
    cfg = QAConfig()
    qa = QualityTracker(cfg, reference_mean=float(data.mean(0)[mask].mean()))
    recs = [qa.update(v, v[mask], 0.1) for v in data]
    gs, dvars, std, outl, slz, tsnr, mean, raw_tsnr = _offline(data, mask, cfg)
    assert not any(r["censored"] for r in recs)

    def col(key):
        return np.array([np.nan if r[key] is None else r[key] for r in recs])

    for key, want in [("global_signal", gs), ("dvars", dvars), ("std_dvars", std), ("slice_z", slz)]:
        got = col(key)
        assert np.array_equal(np.isnan(got), np.isnan(want)), key
        np.testing.assert_allclose(got[~np.isnan(want)], want[~np.isnan(want)], rtol=2e-4, err_msg=key)
    got = col("outlier_fraction")
    assert np.array_equal(np.isnan(got), np.isnan(outl))
    np.testing.assert_allclose(got[~np.isnan(outl)], outl[~np.isnan(outl)], atol=2.0 / mask.sum())
    assert qa.summary()["tsnr_mean"] == pytest.approx(tsnr, rel=1e-3)
    m, t = qa.maps()
    np.testing.assert_allclose(m, mean, rtol=1e-4)
    np.testing.assert_allclose(t, raw_tsnr, rtol=2e-3)


def test_median5_is_the_median():
    a = np.random.default_rng(1).normal(size=(5, 1000)).astype(np.float32)
    np.testing.assert_array_equal(median5(*a), np.median(a, axis=0))


@pytest.mark.parametrize("fill, reason", [(0.0, "zero"), (7.0, "constant")])
def test_an_empty_or_constant_volume_is_refused(fill, reason):
    with pytest.raises(RefusedVolumeError, match="refused") as info:
        check_volume(np.full((4, 5, 6), fill, np.float32))
    assert info.value.reason == reason


@pytest.mark.parametrize("at", [0, 3, 25])
def test_a_x100_volume_is_censored_wherever_it_comes_and_the_next_one_is_not(at):
    data = _run(seed=2)
    data[at] *= 100.0
    mask = data.mean(0) > 5
    qa = QualityTracker(reference_mean=float(_run(seed=2).mean(0)[mask].mean()))
    recs = [qa.update(v, v[mask]) for v in data]
    assert recs[at]["censored"] and "spike" in recs[at]["reasons"]
    assert [k for k, r in enumerate(recs) if r["censored"]] == [at]
    assert qa.summary()["censored"] == 1


def test_slice_faults_and_a_step_are_censored_once_and_not_sticky():
    data = _run(seed=3, t=60)
    data[20][:, :, 4] *= 10.0
    data[30][:, :, 5] = 0.0
    data[40:] *= 1.05
    mask = data.mean(0) > 500
    qa = QualityTracker(reference_mean=float(data[0][mask].mean()))
    recs = [qa.update(v, v[mask]) for v in data]
    assert [k for k, r in enumerate(recs) if r["censored"]] == [20, 30, 40]
    assert "slice" in recs[20]["reasons"] and "slice" in recs[30]["reasons"]


def test_flushing_early_or_late_gives_the_same_records_and_maps():
    """``flush`` (the running estimates' share of a volume, which the pipeline runs once the frame is out) may come
    right after ``update`` or be left to the next one: the same records, summary and maps, bit for bit."""
    data = _run(seed=4, t=50)
    data[12] *= 100.0
    data[25][:, :, 3] = 0.0
    mask = data.mean(0) > 500
    ref = float(data[0][mask].mean())
    early, late = QualityTracker(reference_mean=ref), QualityTracker(reference_mean=ref)
    for k, v in enumerate(data):
        a = early.update(v, v[mask], 0.1)
        early.flush()
        early.flush()  # a second one does nothing
        assert a == late.update(v, v[mask], 0.1)
        if k % 9 == 0:
            assert early.summary() == late.summary() and early.expected_dvars() == late.expected_dvars()
    assert early.summary()["censored"] == 2
    for m_early, m_late in zip(early.maps(), late.maps()):
        np.testing.assert_array_equal(m_early, m_late)
