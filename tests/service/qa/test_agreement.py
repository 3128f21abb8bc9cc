"""One censoring rule online and offline (issue 27): the same run with the scanner emulator's signal faults,
judged by the live ``Pipeline``, by the fit's realignment (``track_run``, ``iter_realigned``) and by ``fmriface
realign`` (``confounds.tsv``), censors the same volumes with the same metrics; and ``confounds.tsv`` holds
fMRIPrep's columns with the values an independent numpy computation gives on the realigned run."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from fmriface.benchmarks.synth import make_bundle, make_run
from service.live.runlog import read_volumes
from service.qa import QAConfig, QualityTracker
from service.scanner.signal import SignalFaults, apply, gains
from tests.service.harness import make_volume, serve
from tests.service.live.test_pipeline import TR, TRIALS, _cfg

N_VOL = 56
#: volume -> kind: the emulator's default sizes (x100 volume, x10 slice, dropped slice, 5% step)
FAULTS = {12: "spike", 20: "slice-spike", 28: "slice-dropout", 36: "step"}
#: fMRIPrep's confound names (``desc-confounds_timeseries.tsv``) and the censoring flag
COLUMNS = [
    "trans_x",
    "trans_y",
    "trans_z",
    "rot_x",
    "rot_y",
    "rot_z",
    "framewise_displacement",
    "dvars",
    "std_dvars",
    "global_signal",
    "censored",
]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("bundle") / "b", n_voxels=400, latent_size=8, image_size=8, tr=TR)


@pytest.fixture(scope="module")
def faulty(synth):
    """The run [T, X, Y, Z] as the faulty scanner writes it (the emulator's own plan and arithmetic)."""
    clean = make_run(synth, TRIALS, N_VOL, amplitude=3.0, noise=2.0, drift=25.0, seed=3)
    kinds = list(FAULTS.values())
    faults = SignalFaults(kinds=kinds, volumes=list(FAULTS))
    plan = faults.plan(np.moveaxis(clean, 0, -1), seed=0)
    assert {k: f.kind for k, f in plan.items()} == FAULTS
    gain = gains(plan, N_VOL)
    return np.stack([apply(clean[k], plan.get(k), float(gain[k]), integral=False) for k in range(N_VOL)])


@pytest.fixture(scope="module")
def judged(synth, faulty, tmp_path_factory, request):
    """Each path's QA records of the faulty run: live, track_run (the bundle's reference and mask), realign."""
    from fmriface.commands import realign
    from offline.decoding.estimates import track_run
    from service.motion import MotionTracker

    tmp = tmp_path_factory.mktemp("agree")
    mp = pytest.MonkeyPatch()
    request.addfinalizer(mp.undo)
    mp.setenv("FMRIFACE_RAISE", "0")
    out = serve(
        _cfg(synth, tmp / "live", max_volumes=N_VOL),
        [make_volume(i, v, synth.affine, TR) for i, v in enumerate(faulty)],
    )
    live = [r["qa"] for r in sorted(read_volumes(out.service.run_dir_), key=lambda r: r["volume"])]

    ref_mean = float(synth.reference[synth.mask].mean(dtype=np.float64))
    tracker = MotionTracker(interpolation=out.service.pipeline_.interpolation).fit(synth.reference, synth.affine)
    offline: list[dict] = []
    x, _, _ = track_run(
        tracker,
        np.moveaxis(faulty, 0, -1),
        synth.affine,
        synth.mask,
        qa=QualityTracker(QAConfig(), ref_mean),
        qa_records=offline,
    )

    bold = tmp / "run_bold.nii.gz"
    nib.save(nib.Nifti1Image(np.moveaxis(faulty, 0, -1), synth.affine), bold)
    args = [str(bold), "--reference", str(synth.path / "reference.nii.gz"), "--mask", str(synth.path / "mask.nii.gz")]
    assert realign.main([*args, "--out", str(tmp / "realign"), "--write-realigned"]) == 0
    confounds = pd.read_csv(tmp / "realign" / "confounds.tsv", sep="\t", na_values="n/a")
    realigned = np.asarray(nib.load(tmp / "realign" / "run_bold_realigned.nii.gz").dataobj, np.float32)
    return live, offline, confounds, realigned


def _censored(records) -> list[int]:
    return [k for k, q in enumerate(records) if q["censored"]]


def test_live_track_run_and_realign_censor_the_same_volumes(judged):
    live, offline, confounds, _ = judged
    assert len(live) == len(offline) == len(confounds) == N_VOL
    want = _censored(live)
    assert want == _censored(offline) == list(np.flatnonzero(confounds["censored"].to_numpy()))
    assert set(FAULTS) <= set(want) and len(want) <= len(FAULTS) + 1  # every fault; a clean one at most
    for k in FAULTS:
        assert live[k]["reasons"] == offline[k]["reasons"]


def test_live_and_offline_metrics_agree(judged):
    live, offline, confounds, _ = judged
    for key in ("global_signal", "dvars", "std_dvars", "outlier_fraction", "slice_z", "fd"):
        a = np.array([np.nan if q[key] is None else q[key] for q in live])
        b = np.array([np.nan if q[key] is None else q[key] for q in offline])
        assert np.array_equal(np.isnan(a), np.isnan(b)), key
        # the same motion correction (the bundle's reference and interpolation): the same numbers
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4, equal_nan=True, err_msg=key)
    # realign's registration options (RealignConfig) differ a little from the service's: close, not equal
    for key, col in (("global_signal", "global_signal"), ("dvars", "dvars"), ("std_dvars", "std_dvars")):
        a = np.array([np.nan if q[key] is None else q[key] for q in live])
        b = confounds[col].to_numpy(float)
        clean = np.array([k not in FAULTS and k - 1 not in FAULTS for k in range(N_VOL)])
        np.testing.assert_allclose(b[clean], a[clean], rtol=0.05, equal_nan=True, err_msg=col)


def test_iter_realigned_and_realign_agree_on_a_bids_run(faulty, tmp_path, monkeypatch):
    """The fit's path (``iter_realigned``: its own reference and EPI mask) against ``fmriface realign`` given the
    same reference and mask: the same censored volumes, and the faults among them."""
    from fmriface.commands import realign
    from offline.datasets.bids import BidsRun, BidsSubject
    from offline.decoding.estimates import iter_realigned

    bold = tmp_path / "sub-01_task-faces_run-01_bold.nii.gz"
    affine = np.diag([3.0, 3.0, 3.5, 1.0])
    nib.save(nib.Nifti1Image(np.moveaxis(faulty, 0, -1), affine), bold)
    run = BidsRun(bold, "01", "", "faces", "01", TR, pd.DataFrame({"onset": [], "duration": [], "trial_type": []}))
    reference, ref_affine, brain, rr = next(iter_realigned(BidsSubject(tmp_path, "01", (run,))))
    nib.save(nib.Nifti1Image(reference, ref_affine), tmp_path / "ref.nii.gz")
    nib.save(nib.Nifti1Image(brain.astype(np.uint8), ref_affine), tmp_path / "brain.nii.gz")
    args = [str(bold), "--reference", str(tmp_path / "ref.nii.gz"), "--mask", str(tmp_path / "brain.nii.gz")]
    assert realign.main([*args, "--out", str(tmp_path / "out")]) == 0
    with open(tmp_path / "out" / "confounds.tsv", encoding="utf-8") as f:
        flags = [int(row["censored"]) for row in csv.DictReader(f, delimiter="\t")]
    censored = list(np.flatnonzero(rr.censored))
    assert censored == list(np.flatnonzero(flags))
    assert set(FAULTS) <= set(censored) and len(censored) <= len(FAULTS) + 1


def test_confounds_have_fmriprep_columns_and_independent_values(judged, synth):
    """``confounds.tsv`` against numpy on ``--write-realigned``'s run, in the mask: the global signal, DVARS
    (RMS of the backward difference; n/a at volume 0) and std DVARS (over the mean over voxels of the SD of the
    uncensored consecutive differences before the volume; n/a until two such pairs), and FD (Power: the
    absolute backward differences of the translations plus 50 mm x those of the rotations in radians).

    The rotations are written in degrees, as ``motion.tsv`` (fMRIPrep writes radians under the same names)."""
    _, _, confounds, realigned = judged
    assert list(confounds.columns) == COLUMNS
    x = realigned[synth.mask].T.astype(np.float64)  # [T, V]
    t = len(x)
    censored = confounds["censored"].to_numpy(bool)
    assert set(np.unique(confounds["censored"])) <= {0, 1}
    np.testing.assert_allclose(confounds["global_signal"], x.mean(1), rtol=2e-5)
    d = np.diff(x, axis=0)
    dvars = np.r_[np.nan, np.sqrt((d**2).mean(1))]
    np.testing.assert_allclose(confounds["dvars"], dvars, rtol=2e-4, equal_nan=True)
    pair_ok = ~censored[1:] & ~censored[:-1]  # pair k: volumes k, k + 1
    std = np.full(t, np.nan)
    for k in range(1, t):
        pairs = d[: k - 1][pair_ok[: k - 1]]
        if len(pairs) >= 2:
            std[k] = dvars[k] / pairs.std(axis=0, ddof=1).mean()
    np.testing.assert_allclose(confounds["std_dvars"], std, rtol=2e-4, equal_nan=True)
    motion = confounds[COLUMNS[:6]].to_numpy(float)
    fd = np.r_[
        0.0,
        np.abs(np.diff(motion[:, :3], axis=0)).sum(1)
        + 50.0 * np.deg2rad(np.abs(np.diff(motion[:, 3:], axis=0))).sum(1),
    ]
    np.testing.assert_allclose(confounds["framewise_displacement"], fd, rtol=2e-5, atol=2e-5)  # 5 digits
