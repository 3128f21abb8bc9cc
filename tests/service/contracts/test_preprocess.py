"""PreprocessSpec: the one value fit and serve agree on, its manifest record, and the estimator registry."""

from __future__ import annotations

import numpy as np
import pytest

from service.online import OnlinePreprocessor, detrend_offline
from service.preprocess import ESTIMATORS, PreprocessSpec, get_estimator, online_estimators
from service.window import WindowSpec


def test_manifest_round_trip_keeps_every_setting():
    spec = PreprocessSpec(
        estimate="glm", window=WindowSpec(3.0, 9.0, -4.0, 0.0), poly_order=3, scale="zscore", interpolation="cubic"
    )
    assert PreprocessSpec.from_manifest(spec.to_manifest()) == spec


def test_older_manifest_takes_the_defaults():
    assert PreprocessSpec.from_manifest({}) == PreprocessSpec()
    assert PreprocessSpec.from_manifest({"window": {"stop": 10.0}}).window == WindowSpec(stop=10.0)


def test_differences_name_each_setting_and_window_field():
    a = PreprocessSpec()
    b = PreprocessSpec(window=WindowSpec(stop=10.0), scale="zscore")
    diff = a.differences(b)
    assert diff == ["window.stop = 8.0 (the bundle's: 10.0)", "scale = 'psc' (the bundle's: 'zscore')"]
    assert a.differences(b.replace(scale="psc"), ignore=("window.stop",)) == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"estimate": "lsx"}, "unknown trial estimate 'lsx'"),
        ({"scale": "max"}, "scale must be one of"),
        ({"interpolation": "nearest"}, "interpolation must be one of"),
        ({"poly_order": -1}, "poly_order"),
    ],
)
def test_bad_settings_are_refused_with_their_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PreprocessSpec(**kwargs)


def test_offline_and_online_detrending_agree_at_the_end_of_a_run():
    """The spec builds both forms; after the last volume the online residual is the offline one's last row."""
    rng = np.random.default_rng(0)
    t, v = 60, 40
    motion = np.cumsum(rng.normal(0, 0.05, (t, 6)), axis=0)
    x = 1000 + rng.normal(0, 5, (t, v)) + np.linspace(0, 20, t)[:, None] + motion[:, :1] * 30
    for spec in (PreprocessSpec(scale="none"), PreprocessSpec(motion_regressors=False, scale="none", poly_order=1)):
        offline = spec.detrend(x, motion)
        online = spec.online_preprocessor(v, min_volumes=10)
        assert isinstance(online, OnlinePreprocessor)
        for i in range(t):
            last = online.update(x[i].astype(np.float32), i, motion[i] if spec.motion_regressors else None)
        np.testing.assert_allclose(last, offline[-1], rtol=1e-3, atol=1e-3)
    # motion_regressors = false really leaves the motion out of the offline model
    with_m, without = PreprocessSpec(scale="none"), PreprocessSpec(scale="none", motion_regressors=False)
    np.testing.assert_array_equal(without.detrend(x, motion), detrend_offline(x, None, scale="none"))
    assert not np.allclose(with_m.detrend(x, motion), without.detrend(x, motion))


def test_registry_knows_forms_and_which_run_live():
    assert set(ESTIMATORS) >= {"window", "glm"}
    assert online_estimators() == ["window", "lss"]
    assert get_estimator("window").offline_function().__name__ == "window_patterns"
    assert get_estimator("glm").offline_function().__name__ == "glm_patterns"
