"""Online preprocessing: incremental detrending equals the whole-run fit at each step; drift and motion removed."""

from __future__ import annotations

import numpy as np
import pytest

from service.online import OnlinePreprocessor, design_row, detrend_offline


def _design(t: int, motion: np.ndarray | None, order: int = 2, horizon: float = 200.0) -> np.ndarray:
    k = 1 + order + (6 if motion is not None else 0)
    out = np.zeros((t, k))
    for i in range(t):
        design_row(i, None if motion is None else motion[i], order, horizon, out[i])
    return out


def test_legendre_rows():
    row = design_row(50, None, 3, 100.0, np.zeros(4))  # s = 0
    np.testing.assert_allclose(row, [1.0, 0.0, -0.5, 0.0])
    row = design_row(100, np.arange(6.0), 2, 100.0, np.zeros(9))  # s = 1: every P_k(1) = 1
    np.testing.assert_allclose(row, [1, 1, 1, 0, 1, 2, 3, 4, 5])


def test_each_residual_is_that_of_the_fit_on_the_volumes_so_far(rng):
    t, v = 37, 11
    motion = rng.normal(scale=0.3, size=(t, 6))
    x = (rng.normal(size=(t, v)) + np.linspace(0, 5, t)[:, None]).astype(np.float32)
    pre = OnlinePreprocessor(v, poly_order=2, motion_regressors=True, horizon=t, prior=0.0, scale="none")
    for i in range(t):
        out = pre.update(x[i], i, motion[i])
        expected = detrend_offline(x[: i + 1], motion[: i + 1], horizon=t, scale="none", prior=0.0)[-1]
        np.testing.assert_allclose(out, expected, rtol=1e-3, atol=1e-3)
    # with the whole run in, the token drift ridge is immaterial: ordinary least squares
    design = _design(t, motion, horizon=t)
    beta, *_ = np.linalg.lstsq(design, x, rcond=None)
    np.testing.assert_allclose(out, x[-1] - design[-1] @ beta, rtol=1e-3, atol=1e-3)
    assert pre.n_ == t and pre.ready


def test_drift_is_removed_and_residuals_scaled(rng):
    t, v = 120, 50
    times = np.arange(t)
    drift = 40.0 * (times / t) ** 2 + 10.0 * times / t
    x = 1000.0 + drift[:, None] * rng.uniform(0.5, 1.5, size=v) + rng.normal(scale=2.0, size=(t, v))
    for scale, noise in (("psc", 0.2), ("zscore", 1.0)):  # noise SD 2 on a mean of ~1000: 0.2 %, or 1 SD
        pre = OnlinePreprocessor(v, poly_order=2, motion_regressors=False, scale=scale)
        late = np.stack([pre.update(x[i].astype(np.float32), i).copy() for i in range(t)])[30:]
        # residuals are centred noise of the expected scale: the drift (tens of units, ~25 noise SDs) is gone
        assert abs(late.mean()) < 0.15 * noise
        assert 0.7 * noise < late.std() < 1.3 * noise
        assert late.mean(1).std() < 0.3 * noise


def test_motion_regressors_remove_motion_locked_signal(rng):
    t, v = 100, 20
    motion = np.cumsum(rng.normal(scale=0.1, size=(t, 6)), axis=0)
    x = 500.0 + motion @ rng.normal(scale=20.0, size=(6, v)) + rng.normal(size=(t, v))
    with_m = OnlinePreprocessor(v, motion_regressors=True, scale="none")
    without = OnlinePreprocessor(v, motion_regressors=False, scale="none")
    a = np.stack([with_m.update(x[i].astype(np.float32), i, motion[i]).copy() for i in range(t)])[40:]
    b = np.stack([without.update(x[i].astype(np.float32), i).copy() for i in range(t)])[40:]
    assert a.std() < 1.5 < 0.5 * b.std()


def test_offline_detrend_is_the_same_model(rng):
    t, v = 60, 9
    motion = rng.normal(scale=0.2, size=(t, 6))
    x = rng.normal(size=(t, v)) + np.linspace(0, 3, t)[:, None] ** 2
    off = detrend_offline(x, motion, scale="none", prior=0.0)
    pre = OnlinePreprocessor(v, prior=0.0, scale="none")
    for i in range(t):
        last = pre.update(x[i].astype(np.float32), i, motion[i])
    np.testing.assert_allclose(last, off[-1], rtol=1e-4, atol=1e-4)  # the last step has seen the whole run
    z = detrend_offline(x, motion, scale="zscore", prior=0.0)
    np.testing.assert_allclose(np.sqrt((z**2).sum(0) / (t - 9)), 1.0, rtol=1e-5)
    psc = detrend_offline(x + 100.0, motion, prior=0.0)  # percent of each voxel's mean intensity
    np.testing.assert_allclose(psc, 100.0 * off / (x + 100.0).mean(0), rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match="scale must be"):
        detrend_offline(x, motion, scale="robust")


def test_residuals_of_earlier_volumes_are_the_offline_detrend_of_the_run_so_far(rng):
    t, v = 45, 13
    motion = rng.normal(scale=0.2, size=(t, 6))
    x = (800 + rng.normal(size=(t, v)) * rng.uniform(1, 3, v) + np.linspace(0, 4, t)[:, None]).astype(np.float32)
    for scale in ("psc", "zscore"):
        _check_so_far(x, motion, scale)


def _check_so_far(x, motion, scale):
    t, v = x.shape
    pre = OnlinePreprocessor(v, prior=1.0, scale=scale)
    for i in range(t):
        out = pre.update(x[i], i, motion[i])
        if i in (20, t - 1):
            so_far = detrend_offline(x[: i + 1], motion[: i + 1], prior=1.0, scale=scale)
            np.testing.assert_allclose(out, so_far[-1], rtol=1e-2, atol=1e-2)  # scale from running sums
            idx = np.array([3, 9, i])
            np.testing.assert_allclose(pre.residuals(x[idx], idx, motion[idx]), so_far[idx], rtol=1e-2, atol=1e-2)


def test_wrong_size_is_refused_and_reset_forgets():
    pre = OnlinePreprocessor(4)
    with pytest.raises(ValueError, match="expected 4 voxels"):
        pre.update(np.zeros(5, np.float32), 0)
    pre.update(np.ones(4, np.float32), 0)
    pre.reset()
    assert pre.n_ == 0 and not pre.rtx_.any()
