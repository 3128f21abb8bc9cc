"""service.lss: the Glover HRF, the regressors and the drift against nilearn's, and the least-squares-separate
estimates against nilearn's FirstLevelModel fitted on each trial's own design."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from service.lss import (
    LSSOptions,
    cosine_drift,
    event_regressors,
    frame_times,
    glover_hrf,
    lss_estimates,
    ready_volume,
)

TR = 2.0


@pytest.mark.parametrize("tr, oversampling", [(2.0, 16), (1.5, 50), (0.8, 16)])
def test_glover_hrf_is_nilearns(tr, oversampling):
    from nilearn.glm.first_level import glover_hrf as nilearn_glover

    np.testing.assert_allclose(glover_hrf(tr, oversampling), nilearn_glover(tr, oversampling), atol=1e-14)


def test_event_regressors_and_drift_are_nilearns():
    from nilearn.glm.first_level import compute_regressor
    from nilearn.signal import create_cosine_drift

    times = frame_times(60, TR)
    onsets = np.array([0.0, 3.0, 7.3, 50.0, 117.9, 118.5, 130.0])
    durations = np.array([1.0, 0.0, 2.5, 1.0, 1.0, 0.0, 1.0])
    mine = event_regressors(onsets, durations, times, 16)
    for j in range(onsets.size):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref, _ = compute_regressor(np.array([[onsets[j]], [durations[j]], [1.0]]), "glover", times, oversampling=16)
        np.testing.assert_allclose(mine[:, j], ref[:, 0], atol=1e-12)
    for high_pass in (0.01, 0.03, 0.0):
        np.testing.assert_allclose(cosine_drift(high_pass, times), create_cosine_drift(high_pass, times), atol=1e-14)


def _run(seed=0, n=80, shape=(3, 4, 5)):
    """A small run: faces every 3 s (one condition), a few fixation events, motion, a response per trial."""
    rng = np.random.default_rng(seed)
    onsets = np.arange(4.0, 4.0 + 3.0 * 40, 3.0)
    onsets = onsets[onsets < (n - 8) * TR]
    events = pd.DataFrame({"onset": onsets, "duration": 1.0, "trial_type": "face"})
    fix = pd.DataFrame({"onset": [1.0, 70.0, 140.0], "duration": [2.0, 2.0, 2.0], "trial_type": "Fix"})
    events = pd.concat([events, fix], ignore_index=True)
    v = int(np.prod(shape))
    motion = np.cumsum(rng.normal(0, 0.05, (n, 6)), axis=0)
    regs = event_regressors(events["onset"].to_numpy(), events["duration"].to_numpy(), frame_times(n, TR))
    amps = rng.normal(0, 2.0, (len(events), v))
    y = 1000.0 + rng.normal(0, 5.0, (n, v)) + regs @ amps + motion @ rng.normal(0, 3.0, (6, v))
    y += np.linspace(0, 20, n)[:, None]
    return y, events, motion, shape


def _nilearn_lss(y, events, motion, shape, target, keep, output):
    """The target's beta (or t) from nilearn's FirstLevelModel on its own LSS design."""
    import nibabel as nib
    from nilearn.glm.first_level import FirstLevelModel, make_first_level_design_matrix

    n = y.shape[0]
    ev = events.copy()
    cond = ev.loc[target, "trial_type"]
    ev.loc[ev["trial_type"] == cond, "trial_type"] = "others"
    ev.loc[target, "trial_type"] = "trial"
    names = [f"m{j}" for j in range(6)]
    design = make_first_level_design_matrix(
        frame_times(n, TR),
        ev,
        hrf_model="glover",
        drift_model="cosine",
        high_pass=0.01,
        add_regs=motion,
        add_reg_names=names,
        oversampling=16,
    )
    design = design.iloc[np.flatnonzero(keep)]
    img = nib.Nifti1Image(y[keep].T.reshape(*shape, -1).astype(np.float64), np.eye(4))
    mask = nib.Nifti1Image(np.ones(shape, np.uint8), np.eye(4))
    model = FirstLevelModel(mask_img=mask, signal_scaling=0, noise_model="ols", minimize_memory=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(img, design_matrices=[design.reset_index(drop=True)])
        out = model.compute_contrast("trial", output_type="effect_size" if output == "beta" else "stat")
    return np.asarray(out.dataobj).reshape(-1)


@pytest.mark.parametrize("output", ["beta", "t"])
@pytest.mark.parametrize("censor", [False, True])
def test_lss_equals_nilearn_first_level_model(output, censor):
    y, events, motion, shape = _run()
    n = y.shape[0]
    exclude = np.zeros(n, bool)
    if censor:
        exclude[[5, 6, 30, 61]] = True
    targets = [0, 7, 20, len(events) - 4]
    got = lss_estimates(
        y,
        TR,
        events["onset"],
        events["duration"],
        events["trial_type"],
        targets,
        motion=motion,
        exclude=exclude,
        options=LSSOptions(output=output),
    )
    for row, target in enumerate(targets):
        ref = _nilearn_lss(y, events, motion, shape, target, ~exclude, output)
        np.testing.assert_allclose(got[row], ref, atol=1e-6, rtol=1e-6)


def test_a_trial_alone_in_its_condition_is_a_one_column_problem():
    y, events, motion, shape = _run(seed=1)
    events = pd.concat([events, pd.DataFrame({"onset": [60.0], "duration": [1.0], "trial_type": ["Img"]})])
    events = events.reset_index(drop=True)
    target = len(events) - 1
    got = lss_estimates(y, TR, events["onset"], events["duration"], events["trial_type"], [target], motion=motion)
    ref = _nilearn_lss(y, events, motion, shape, target, np.ones(y.shape[0], bool), "beta")
    np.testing.assert_allclose(got[0], ref, atol=1e-6, rtol=1e-6)


def test_truncated_run_leaves_later_events_out():
    """On the first k volumes, an event after the last of them is not in the model: the same estimate as without it."""
    y, events, motion, _ = _run(seed=2)
    k = 40
    args = (events["onset"], events["duration"], events["trial_type"])
    early = events.index[events["onset"] <= (k - 1) * TR]
    a = lss_estimates(y[:k], TR, *args, [3], motion=motion[:k])
    b = lss_estimates(y[:k], TR, *(c[early] for c in args), [3], motion=motion[:k])
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="after the last volume"):
        lss_estimates(y[:k], TR, *args, [int(early[-1]) + 1], motion=motion[:k])
    at_last = events.index[events["onset"] < (k - 1) * TR][-1]
    lss_estimates(y[:k], TR, *args, [at_last], motion=motion[:k])


def test_ready_volume_is_the_first_at_or_after_the_lag():
    assert ready_volume(4.0, 2.0, 12.0) == 8
    assert ready_volume(5.0, 2.0, 12.0) == 9
    assert ready_volume(0.0, 2.0, 0.0) == 1  # at least one volume after the onset
    assert ready_volume(3.0, 2.0, 0.0) == 2


def test_options_are_checked():
    with pytest.raises(ValueError, match="output"):
        LSSOptions(output="z")
    with pytest.raises(ValueError, match="lag"):
        LSSOptions(lag=-1.0)
