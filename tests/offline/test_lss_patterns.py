"""The LSS estimator's offline form (offline.decoding.estimates.lss_patterns), its registry entry and its record."""

from __future__ import annotations

import numpy as np

from offline.decoding.estimates import average_by_stimulus, lss_patterns, window_patterns
from service.lss import LSSOptions, lss_estimates
from service.preprocess import PreprocessSpec, get_estimator
from service.window import WindowSpec
from tests.offline.test_estimates import _synthetic_run


def test_lss_recovers_image_patterns(rng):
    rr, patterns = _synthetic_run(rng)
    est, trials = lss_patterns(rr, ["train_face"])
    assert set(trials["trial_type"]) == {"train_face"} and len(est) == len(trials)
    # the same trials as the window estimates (every window lies inside this run)
    assert trials["onset"].tolist() == window_patterns(rr, ["train_face"], WindowSpec())[1]["onset"].tolist()
    avg, stims, _, _ = average_by_stimulus(est, trials["stim_file"].tolist())
    corr = np.corrcoef(np.vstack([avg, np.stack([patterns[s] for s in stims])]))[:4, 4:]
    assert np.all(np.argmax(corr, axis=1) == np.arange(4))
    assert np.all(np.diag(corr) > 0.6)  # single-trial betas at a 3-s pace, averaged over repeats


def test_lss_patterns_is_the_service_code_on_the_run_so_far(rng):
    """The offline form on the first n volumes is service.lss on those volumes, with the events before the last."""
    rr, _ = _synthetic_run(rng)
    rr.motion = np.cumsum(rng.normal(0, 0.05, (rr.n_volumes, 6)), axis=0)
    rr.qa = [{"censored": k in (10, 11, 40)} for k in range(rr.n_volumes)]
    n = 60
    est, trials = lss_patterns(rr, ["train_face"], n_volumes=n)
    assert trials["onset"].max() + 12.0 <= (n - 1) * rr.run.tr  # the trials whose lag is in
    ev = rr.run.events
    in_time = (ev["onset"] + 12.0 <= (n - 1) * 2.0).to_numpy()
    targets = np.flatnonzero((ev["trial_type"] == "train_face").to_numpy() & in_time)
    direct = lss_estimates(
        rr.x[:n], 2.0, ev["onset"], ev["duration"], ev["trial_type"], targets, rr.motion[:n], rr.censored[:n]
    )
    np.testing.assert_array_equal(est, direct.astype(np.float32))


def test_lss_output_and_motion_settings_reach_it(rng):
    rr, _ = _synthetic_run(rng)
    rr.motion = np.cumsum(rng.normal(0, 0.05, (rr.n_volumes, 6)), axis=0)
    beta = lss_patterns(rr, ["train_face"])[0]
    t = lss_patterns(rr, ["train_face"], PreprocessSpec(estimate="lss", lss=LSSOptions(output="t")))[0]
    still = lss_patterns(rr, ["train_face"], PreprocessSpec(estimate="lss", motion_regressors=False))[0]
    assert not np.allclose(beta, t) and not np.allclose(beta, still)
    assert np.all(np.sign(beta) == np.sign(t))


def test_lss_is_registered_and_recorded():
    assert get_estimator("lss").offline_function() is lss_patterns
    spec = PreprocessSpec(estimate="lss", lss=LSSOptions(lag=10.0, output="t"))
    manifest = spec.to_manifest()
    assert manifest["lss"] == {"lag": 10.0, "high_pass": 0.01, "oversampling": 16, "output": "t"}
    assert PreprocessSpec.from_manifest(manifest) == spec
    assert "lss" not in PreprocessSpec().to_manifest()
    assert spec.differences(spec.replace(lss=LSSOptions())) == [
        "lss.lag = 10.0 (the bundle's: 12.0)",
        "lss.output = 't' (the bundle's: 'beta')",
    ]
    # the LSS settings of a window spec are not compared
    assert PreprocessSpec(lss=LSSOptions(lag=3.0)).differences(PreprocessSpec()) == []
