"""Trial estimates from BIDS runs: realignment to one reference, window estimates and GLM betas.

1. :func:`realign_subject`: the reference is the mean of the first run's volumes, and its session is the
   reference session. Every other session (its own slab and head position: another affine, maybe another
   matrix) is registered to the reference across grids (on the mean of the session's first run: the session
   offset); each volume is then tracked on its own grid, warm-started from the offset, and its brain voxels
   sampled on the reference grid through the composed transform in one interpolation, so each run becomes
   ``x [T, V]``. The motion kept (the regressors, FD) is the motion within the session: the composed transform
   with the offset taken out. Both steps are the service's own tracker (:class:`service.motion.MotionTracker`).
2. :func:`window_patterns`: the service's estimate. Each run is detrended with the service's own model
   (:meth:`service.preprocess.PreprocessSpec.detrend`: Legendre drift + the six motion parameters, residuals
   scaled per voxel, percent signal change by default), then :func:`service.window.window_estimate` (mean of
   4-8 s after onset minus the pre-onset baseline).
3. :func:`glm_patterns`: GLM betas with nilearn's design matrices (one regressor per unique image, canonical
   HRF, cosine drift, motion regressors), solved by least squares with numpy on the voxels (percent signal
   change), which is what FirstLevelModel does per voxel, without its per-voxel overhead.
4. :func:`lss_patterns`: least-squares-separate betas (or t-values), one GLM per trial, by the service's own
   code (:func:`service.lss.lss_estimates`), which the service runs live on the volumes so far.
5. :func:`face_contrast`: the face-vs-fixation t-statistic (fixed effects over runs) for voxel selection.

The estimators are registered by name in :data:`service.preprocess.ESTIMATORS` and share one signature,
``(run, trial_types, spec, options)`` -> ``(patterns, rows)``, so the fit calls each through the registry.
Repeated presentations (one-back repeats, the test faces' repeats) are averaged by :func:`average_by_stimulus`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from offline.datasets.bids import BidsError, BidsRun, BidsSubject
from service.preprocess import PreprocessSpec
from service.qa import QAConfig, QualityTracker, RefusedVolumeError, check_volume
from service.window import CensoredWindowError, WindowSpec, last_volume_needed, usable, window_estimate, window_indices

if TYPE_CHECKING:
    from service.motion import MotionTracker

__all__ = [
    "RealignedRun",
    "SessionOffset",
    "register_run_session",
    "track_run",
    "iter_realigned",
    "realign_subject",
    "trials_of",
    "EstimateOptions",
    "window_patterns",
    "glm_patterns",
    "lss_events",
    "lss_patterns",
    "face_contrast",
    "contrast_terms",
    "combine_contrasts",
    "average_by_stimulus",
]


@dataclass(frozen=True)
class SessionOffset:
    """Where a session lies relative to the reference: the transform reference -> session (motion convention).

    ``label`` is the BIDS session (``""`` without one); ``registration`` is
    :meth:`service.motion.SessionRegistration.as_record` (residual, overlap, time), None for the reference session.
    """

    label: str
    params: np.ndarray  # [6] mm, degrees: reference world -> the session's world
    shape: tuple[int, ...]
    affine: np.ndarray  # [4, 4] the session's grid
    source: str  # what was registered: "reference" or "mean of the volumes of <run>"
    registration: dict[str, Any] | None = None
    runs: list[str] = field(default_factory=list)

    def as_record(self) -> dict[str, Any]:
        """JSON-ready, for the bundle's manifest."""
        return {
            "offset": [round(float(v), 4) for v in self.params],
            "grid": {"shape": list(self.shape), "affine": np.round(self.affine, 6).tolist()},
            "registered": self.source,
            **({"registration": self.registration} if self.registration is not None else {}),
            "runs": list(self.runs),
        }


@dataclass
class RealignedRun:
    """A run realigned to the subject's reference: brain voxels over time and the estimated motion."""

    run: BidsRun
    x: np.ndarray  # float32 [T, V]: the brain mask's voxels, np.flatnonzero order
    motion: np.ndarray  # [T, 6] mm, degrees: within the run's session (the session offset taken out)
    session: SessionOffset | None = None  # the run's session (None: not recorded)
    qa: list[dict[str, Any]] | None = None  # each volume's QA record (service.qa; None: not judged)

    @property
    def n_volumes(self) -> int:
        """Volumes in the run."""
        return self.x.shape[0]

    @property
    def censored(self) -> np.ndarray | None:
        """The volumes the QA censored, bool [T] (left out of the detrending and of every estimate); None when the
        run was not judged."""
        return None if self.qa is None else np.array([bool(q["censored"]) for q in self.qa], dtype=bool)


def _same_grid(shape, affine, ref_shape, ref_affine) -> bool:
    return tuple(shape) == tuple(ref_shape) and bool(np.allclose(affine, ref_affine, atol=1e-3))


def register_run_session(
    tracker: MotionTracker,
    data: np.ndarray,
    affine: np.ndarray,
    label: str = "",
    name: str = "the run",
) -> SessionOffset:
    """Register a session (the mean of ``data [X, Y, Z, T]``, one of its runs, on any grid) to the reference
    ``tracker`` is fitted on (:meth:`service.motion.MotionTracker.register`).

    Raises :class:`service.motion.SessionRegistrationError` naming the run and what was measured.
    """
    from service.motion import SessionRegistrationError

    mean = data.mean(axis=3, dtype=np.float64).astype(np.float32)
    try:
        result = tracker.register(mean, affine)
    except SessionRegistrationError as exc:
        where = f"session {label} " if label else ""
        raise SessionRegistrationError(
            f"{name} ({where}mean volume) cannot be registered to the reference: {exc}"
        ) from None
    return SessionOffset(
        label,
        np.asarray(result.params, dtype=np.float64),
        tuple(data.shape[:3]),
        np.asarray(affine, dtype=np.float64),
        f"mean of the volumes of {name}",
        result.as_record(),
    )


def track_run(
    tracker: MotionTracker,
    data: np.ndarray,
    affine: np.ndarray,
    mask: np.ndarray,
    offset: np.ndarray | None = None,
    on_volume: Callable[[], None] | None = None,
    qa: QualityTracker | None = None,
    qa_records: list[dict[str, Any]] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Track every volume of a run (any grid) and sample ``mask``'s voxels on the reference grid.

    ``tracker`` is a :class:`service.motion.MotionTracker` fitted on the reference; the run's first volume starts
    from ``offset`` (the session offset, reference -> session; None or zeros: the reference's grid, from zero), each
    later one from the volume before it. Returns ``(x float32 [T, V], motion [T, 6] within the session, total
    [T, 6] reference -> volume)``: ``rigid(total) = rigid(motion) @ rigid(offset)``.

    With ``qa`` (a :class:`service.qa.QualityTracker` fitted for the run) every volume is judged as the service
    judges it, in order: an all-zero or constant volume is refused (:class:`service.qa.RefusedVolumeError` naming
    it), and each volume's ``qa`` record is appended to ``qa_records``.
    """
    n = data.shape[3]
    x = np.empty((n, int(np.count_nonzero(mask))), dtype=np.float32)
    motion, total = np.zeros((n, 6)), np.zeros((n, 6))
    # each run starts from its session's offset (not from the previous run's end), then warm-starts
    on_offset = offset is not None and bool(np.any(offset))
    tracker.set_session(offset if on_offset else None, (tuple(data.shape[:3]), affine))
    for k in range(n):
        vol = np.ascontiguousarray(data[..., k])
        if qa is not None:
            try:
                check_volume(vol)
            except RefusedVolumeError as exc:
                raise RefusedVolumeError(f"volume {k} (0-based): {exc}", exc.reason) from None
        motion[k], x[k] = tracker.track(vol, mask, affine=affine)
        total[k] = tracker.total_
        if qa is not None:
            record = qa.update(vol, x[k], tracker.fd_)
            if qa_records is not None:
                qa_records.append(record)
        if on_volume is not None:
            on_volume()
    return x, motion, total


def iter_realigned(
    subject: BidsSubject,
    runs: Sequence[BidsRun] | None = None,
    on_volume: Callable[[], None] | None = None,
    interpolation: str = "linear",
    qa: QAConfig | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, RealignedRun]]:
    """Realign the runs (default all) to the mean of the first run's volumes, one run at a time.

    ``interpolation`` (``linear`` or ``cubic`` B-spline) is the kernel each volume is resampled with onto the
    reference grid; ``serve`` resamples live volumes with the bundle's (``manifest.json`` ``interpolation``).

    Yields ``(reference float32 [X, Y, Z], affine [4, 4], brain_mask bool [X, Y, Z], RealignedRun)`` per run,
    in the given order, so a caller that keeps only what it derives from each run holds one run in memory.
    The brain mask is nilearn's EPI mask of the reference. The first run's session is the reference session;
    each other session (a BIDS session, and within one a grid of its own) is registered to the reference when
    its first run comes (:func:`register_run_session`), and its runs tracked from that offset
    (:func:`track_run`); ``RealignedRun.session`` says which, and ``motion`` is within the session.

    Every volume is judged by the service's QA (``qa``: its thresholds, default :class:`service.qa.QAConfig`, the
    serve's defaults) on the brain mask's voxels, one tracker per run, against the reference's mean in the mask:
    ``RealignedRun.qa`` holds the records, ``RealignedRun.censored`` the volumes every estimate leaves out. An
    all-zero or constant volume is refused (:class:`service.qa.RefusedVolumeError` naming the run and volume).
    """
    import nibabel as nib
    from nilearn.masking import compute_epi_mask

    from service.motion import MotionTracker

    runs = list(subject.runs if runs is None else runs)
    first, affine = runs[0].load()
    reference = first.mean(axis=3, dtype=np.float64).astype(np.float32)
    brain = np.asarray(compute_epi_mask(nib.Nifti1Image(reference, affine)).dataobj) > 0
    brain.flags.writeable = False  # one mask for every run: motion correction finds its points by identity
    tracker = MotionTracker(interpolation=interpolation).fit(reference, affine)
    reference_mean = float(reference[brain].mean(dtype=np.float64))
    sessions: list[SessionOffset] = [
        SessionOffset(runs[0].session, np.zeros(6), reference.shape, np.asarray(affine, np.float64), "reference")
    ]
    for i, run in enumerate(runs):
        data, aff = (first, affine) if i == 0 else run.load()
        if i == 0:
            first = None  # the caller may drop the run after its turn
        if data.ndim != 4 or min(data.shape) < 2:
            raise BidsError(f"{run.bold} has shape {data.shape}: not a run of 3-D volumes")
        ses = next(
            (s for s in sessions if s.label == run.session and _same_grid(data.shape[:3], aff, s.shape, s.affine)),
            None,
        )
        if ses is None:  # a new session (or a new grid within one): register it to the reference
            label = run.session + (
                f" (grid {sum(s.label == run.session for s in sessions) + 1})"
                if any(s.label == run.session for s in sessions)
                else ""
            )
            ses = register_run_session(tracker, data, aff, label, run.name)
            sessions.append(ses)
        ses.runs.append(run.name)
        records: list[dict[str, Any]] = []
        judge = QualityTracker(qa, reference_mean)
        try:
            x, motion, _ = track_run(tracker, data, aff, brain, ses.params, on_volume, qa=judge, qa_records=records)
        except RefusedVolumeError as exc:
            raise RefusedVolumeError(f"{run.bold}: {exc}", exc.reason) from None
        del data
        yield reference, affine, brain, RealignedRun(run=run, x=x, motion=motion, session=ses, qa=records)


def realign_subject(
    subject: BidsSubject,
    runs: Sequence[BidsRun] | None = None,
    on_volume: Callable[[], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[RealignedRun]]:
    """All runs realigned at once (see :func:`iter_realigned`): ``(reference, affine, brain_mask, runs)``."""
    out = list(iter_realigned(subject, runs, on_volume))
    return out[0][0], out[0][1], out[0][2], [item[3] for item in out]


def trials_of(run: BidsRun, trial_types: Sequence[str]) -> pd.DataFrame:
    """The run's events of the given types with a stimulus (``onset, duration, trial_type, stim_file``)."""
    ev = run.events
    keep = ev["trial_type"].astype(str).isin(list(trial_types)) & ev["stim_file"].notna()
    return ev.loc[keep, ["onset", "duration", "trial_type", "stim_file"]].reset_index(drop=True)


@dataclass(frozen=True)
class EstimateOptions:
    """The fit's options of the estimators that the :class:`~service.preprocess.PreprocessSpec` does not hold
    (the service never computes them): the GLM's HRF model and the high-pass cut-off of its cosine drift, Hz."""

    hrf_model: str = "glover"
    high_pass: float = 0.01


# Every trial estimator's offline form (service.preprocess.ESTIMATORS) takes ``(run, trial_types, spec, options)``
# and returns ``(patterns [n, V], rows)``: ``rows`` a table with a ``stim_file`` column, one row per pattern.


def window_patterns(
    rr: RealignedRun,
    trial_types: Sequence[str],
    spec: PreprocessSpec | WindowSpec,
    options: EstimateOptions | None = None,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Window estimates ``[n, V]`` of the run's trials whose window lies inside the run, and those trials.

    ``spec`` gives the window and the service's detrending and scaling (:meth:`PreprocessSpec.detrend`:
    :func:`service.online.detrend_offline`), which the bundle records so the service computes the same; a bare
    :class:`WindowSpec` is that window with the default detrending. ``options`` is unused (the common signature).
    """
    if isinstance(spec, WindowSpec):
        spec = PreprocessSpec(window=spec)
    trials = trials_of(rr.run, trial_types)
    tr = rr.run.tr
    censored = rr.censored
    valid = None if censored is None else ~censored
    # a trial whose window lies past the run, or keeps no uncensored volume (the service's rule), is left out
    complete = [
        last_volume_needed(o, tr, spec.window) < rr.n_volumes and _uncensored(o, tr, spec.window, valid)
        for o in trials["onset"]
    ]
    trials = trials.loc[complete].reset_index(drop=True)
    resid = spec.detrend(rr.x, rr.motion, exclude=censored)
    return window_estimate(resid, trials["onset"].to_numpy(float), tr, spec.window, valid=valid), trials


def _uncensored(onset: float, tr: float, window: WindowSpec, valid: np.ndarray | None) -> bool:
    try:
        usable(*window_indices(onset, tr, window), valid)
    except CensoredWindowError:
        return False
    return True


def _design(
    rr: RealignedRun, events: pd.DataFrame, hrf_model: str, high_pass: float, motion: bool = True
) -> pd.DataFrame:
    from nilearn.glm.first_level import make_first_level_design_matrix

    frame_times = np.arange(rr.n_volumes) * rr.run.tr
    names = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]
    # a constant column would duplicate the mean
    moving = [j for j in range(6) if np.ptp(rr.motion[:, j]) > 1e-9] if motion else []
    return make_first_level_design_matrix(
        frame_times,
        events[["onset", "duration", "trial_type"]],
        hrf_model=hrf_model,
        drift_model="cosine",
        high_pass=high_pass,
        add_regs=rr.motion[:, moving] if moving else None,
        add_reg_names=[names[j] for j in moving] if moving else None,
        oversampling=16,  # 1/8-s resolution at TR 2 s: ample for 1-s events, 3x faster than nilearn's 50
    )


def _ols(design: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares coefficients for many voxels: one pseudo-inverse of the design, then a matrix product
    (LAPACK's lstsq with tens of thousands of right-hand sides is many times slower)."""
    return np.linalg.pinv(design) @ y


def _kept(rr: RealignedRun) -> np.ndarray | slice:
    """The rows a GLM fits: the uncensored volumes (every volume of a run the QA did not judge)."""
    censored = rr.censored
    return slice(None) if censored is None or not censored.any() else ~censored


def _psc(x: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=0)
    mean[np.abs(mean) < 1e-6] = 1.0
    return (x / mean - 1.0) * 100.0


def glm_patterns(
    rr: RealignedRun,
    trial_types: Sequence[str],
    spec: PreprocessSpec | None = None,
    options: EstimateOptions | None = None,
) -> tuple[np.ndarray, pd.DataFrame]:
    """GLM betas ``[n_images, V]`` (percent signal change), one regressor per unique image of the given types, and
    the images (``stim_file``, sorted).

    Fixation events get their own regressor; the other events are left in the implicit baseline. The drift is
    nilearn's cosine basis (``options.high_pass``), not the spec's Legendre terms; the six motion parameters are
    regressors unless ``spec.motion_regressors`` is false.
    """
    spec = spec or PreprocessSpec(estimate="glm")
    options = options or EstimateOptions()
    ev = rr.run.events
    faces = trials_of(rr.run, trial_types)
    stims = sorted(faces["stim_file"].astype(str).unique())
    names = {s: f"img{i:05d}" for i, s in enumerate(stims)}
    model_ev = faces.assign(trial_type=faces["stim_file"].astype(str).map(names))
    fix = ev.loc[ev["trial_type"].astype(str) == "Fix", ["onset", "duration", "trial_type"]]
    events = pd.concat([model_ev[["onset", "duration", "trial_type"]], fix])
    design = _design(rr, events, options.hrf_model, options.high_pass, spec.motion_regressors)
    keep = _kept(rr)
    beta = _ols(design.to_numpy()[keep], _psc(rr.x[keep].astype(np.float64)))
    cols = [design.columns.get_loc(names[s]) for s in stims]
    return beta[cols].astype(np.float32), pd.DataFrame({"stim_file": stims})


def lss_events(events: pd.DataFrame) -> pd.DataFrame:
    """The events an LSS model holds: every event of the run with a finite onset (``onset, duration,
    trial_type``; a missing duration is 0), as the service reads them from the run's events.tsv."""
    ev = events.loc[pd.to_numeric(events["onset"], errors="coerce").notna()]
    return pd.DataFrame(
        {
            "onset": pd.to_numeric(ev["onset"]).to_numpy(float),
            "duration": pd.to_numeric(ev["duration"], errors="coerce").fillna(0.0).to_numpy(float),
            "trial_type": ev["trial_type"].astype(str).to_numpy(),
            "stim_file": ev["stim_file"].to_numpy(),
        }
    )


def lss_patterns(
    rr: RealignedRun,
    trial_types: Sequence[str],
    spec: PreprocessSpec | None = None,
    options: EstimateOptions | None = None,
    n_volumes: int | None = None,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Least-squares-separate estimates ``[n, V]`` of the run's trials of the given types that start before its
    last volume (strictly), and those trials (``onset, duration, trial_type, stim_file``).

    Each trial's GLM (:func:`service.lss.lss_estimates`, the service's code): its regressor, one for the rest of
    its trial type, one per other trial type of the run's events, the cosine drift and the motion parameters
    (unless ``spec.motion_regressors`` is false), the QA's censored volumes left out; the settings are
    ``spec.lss`` (the bundle records them), so ``options`` is unused. ``n_volumes``: only the run's first volumes
    (what the service has when it estimates a trial live), and only the trials whose lag (``spec.lss.lag``) is in.
    """
    from service.lss import lss_estimates, ready_volume

    spec = spec or PreprocessSpec(estimate="lss")
    n = rr.n_volumes if n_volumes is None else int(n_volumes)
    events = lss_events(rr.run.events)
    is_trial = events["trial_type"].isin(list(trial_types)) & events["stim_file"].notna()
    onsets = events["onset"].to_numpy()
    if n_volumes is None:  # the whole run: every trial that starts before its last volume
        in_run = onsets < (n - 1) * rr.run.tr
    else:  # the run so far: the trials the service has estimated by now (their lag is in)
        in_run = np.array([ready_volume(o, rr.run.tr, spec.lss.lag) < n for o in onsets], dtype=bool)
    targets = np.flatnonzero(is_trial.to_numpy() & in_run)
    censored = rr.censored
    patterns = lss_estimates(
        rr.x[:n],
        rr.run.tr,
        events["onset"],
        events["duration"],
        events["trial_type"],
        targets,
        motion=rr.motion[:n] if spec.motion_regressors else None,
        exclude=None if censored is None else censored[:n],
        options=spec.lss,
    )
    return patterns.astype(np.float32), events.iloc[targets].reset_index(drop=True)


def contrast_terms(
    rr: RealignedRun, hrf_model: str = "glover", high_pass: float = 0.01
) -> tuple[np.ndarray, np.ndarray] | None:
    """One run's face-minus-fixation effect ``[V]`` and its variance ``[V]`` (None without face trials)."""
    ev = rr.run.events
    types = ev["trial_type"].astype(str)
    is_face = types.isin(["train_face", "test_face"])
    if not is_face.any():
        return None
    model_ev = pd.concat(
        [
            ev.loc[is_face, ["onset", "duration"]].assign(trial_type="face"),
            ev.loc[types == "Fix", ["onset", "duration"]].assign(trial_type="Fix"),
        ]
    )
    design = _design(rr, model_ev, hrf_model, high_pass)
    keep = _kept(rr)
    xmat = design.to_numpy()[keep]
    y = _psc(rr.x[keep].astype(np.float64))
    beta = _ols(xmat, y)
    dof = max(len(y) - np.linalg.matrix_rank(xmat), 1)
    sigma2 = ((y - xmat @ beta) ** 2).sum(axis=0) / dof
    c = np.zeros(xmat.shape[1])
    c[design.columns.get_loc("face")] = 1.0
    if "Fix" in design.columns:
        c[design.columns.get_loc("Fix")] = -1.0
    return c @ beta, sigma2 * float(c @ np.linalg.pinv(xmat.T @ xmat) @ c)


def combine_contrasts(terms: Sequence[tuple[np.ndarray, np.ndarray] | None]) -> np.ndarray:
    """Fixed-effects t ``[V]`` over runs: summed effects over the square root of the summed variances."""
    terms = [t for t in terms if t is not None]
    if not terms:
        raise ValueError("no run has face trials: the face-vs-fixation contrast cannot be computed")
    effect = np.sum([t[0] for t in terms], axis=0)
    variance = np.sum([t[1] for t in terms], axis=0)
    return (effect / np.sqrt(np.maximum(variance, 1e-12))).astype(np.float32)


def face_contrast(runs: Sequence[RealignedRun], hrf_model: str = "glover", high_pass: float = 0.01) -> np.ndarray:
    """t-statistic ``[V]`` of faces minus fixation (faces minus baseline where a run has no fixation events)."""
    return combine_contrasts([contrast_terms(rr, hrf_model, high_pass) for rr in runs])


def average_by_stimulus(
    patterns: np.ndarray, stim_files: Sequence[str], groups: Sequence[int] | None = None
) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
    """Average the patterns of repeated stimuli.

    Returns
    -------
    patterns [S, V], stimulus ids [S] (first-seen order), group of each (its first trial's), repeats [S]
    """
    stim_files = [str(s) for s in stim_files]
    order: dict[str, int] = {}
    for s in stim_files:
        order.setdefault(s, len(order))
    idx = np.array([order[s] for s in stim_files], dtype=np.int64)
    counts = np.bincount(idx, minlength=len(order))
    # sums in float64, in trial order, a block of voxels at a time (the same numbers as one np.add.at into a
    # float64 array of every stimulus and voxel, without that array or its slowness)
    rows = np.argsort(idx, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    out = np.empty((len(order), patterns.shape[1]), dtype=np.float32)
    block = 4096
    for c0 in range(0, patterns.shape[1] if len(order) else 0, block):
        part = np.asarray(patterns[rows, c0 : c0 + block], dtype=np.float64)
        sums = part[starts]  # each stimulus's first trial, then its j-th repeat added for j = 1, 2, ...
        for j in range(1, int(counts.max())):
            more = np.flatnonzero(counts > j)
            sums[more] += part[starts[more] + j]
        out[:, c0 : c0 + block] = sums / counts[:, None]
    first = np.zeros(len(order), dtype=np.int64)
    if groups is not None:
        g = np.asarray(groups)
        for s, i in reversed(list(zip(stim_files, range(len(stim_files))))):
            first[order[s]] = g[i]
    return out, list(order), first, counts
