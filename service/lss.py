"""Least-squares-separate single-trial estimates (Mumford et al. 2012), shared by the fit and the service.

For each trial, a GLM with the trial's HRF-convolved regressor, one regressor for every other trial of its
condition, one per other condition, the cosine drift (with the constant) and the motion parameters, fitted on the
uncensored volumes (the censored rows dropped, as nilearn would be given them); the trial's beta (or its t-value)
is its pattern. The data are in percent signal change over the kept volumes, as nilearn's ``FirstLevelModel``
(``signal_scaling=0``) scales them.

The design is nilearn's: :func:`glover_hrf` is its canonical Glover HRF and :func:`event_regressors` its
``compute_regressor`` for one event (box sampled on the oversampled grid, convolved, sampled at the frame
times), written in numpy so that the service, which never imports nilearn, computes the same numbers as the fit;
:func:`cosine_drift` is its ``create_cosine_drift``. The tests compare each with nilearn, and the estimates with
``FirstLevelModel`` on the same design.

Fast by construction: every event's regressor comes from the HRF's cumulative sum (a box convolved with the
kernel is a difference of two cumulative sums), the nuisance part is projected out once per condition (one SVD
of a design of ~20 columns), and each trial's two-column problem is solved in closed form over all voxels: the
trial's and its condition's residualised regressors against the data, one matrix product for every trial.

numpy only: the service imports this module.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "LSSOptions",
    "LSS_OUTPUTS",
    "glover_hrf",
    "frame_times",
    "cosine_drift",
    "event_regressors",
    "lss_estimates",
    "ready_volume",
]

#: What a trial's pattern is: its beta (percent signal change) or its t-value.
LSS_OUTPUTS = ("beta", "t")

#: nilearn's ``min_onset``: the oversampled grid starts this many seconds before the first frame.
MIN_ONSET = -24.0


@dataclass(frozen=True)
class LSSOptions:
    """The settings of the least-squares-separate estimate that the fit and the service share.

    Parameters
    ----------
    lag : float
        Seconds after a trial's onset before the service estimates it live: the first volume acquired at or after
        ``onset + lag`` completes it (:func:`ready_volume`), and the estimate uses the volumes up to it.
    high_pass : float
        Cut-off of the cosine drift, Hz (nilearn's ``high_pass``).
    oversampling : int
        Time resolution of the regressors' convolution, samples per TR (nilearn's ``oversampling``).
    output : {"beta", "t"}
        The trial's pattern: its beta (percent signal change) or its t-value.
    """

    lag: float = 12.0
    high_pass: float = 0.01
    oversampling: int = 16
    output: str = "beta"

    def __post_init__(self) -> None:
        if self.output not in LSS_OUTPUTS:
            raise ValueError(f"lss output must be one of {', '.join(LSS_OUTPUTS)}, got {self.output!r}")
        if not self.lag >= 0:
            raise ValueError(f"lss lag must be >= 0 s, got {self.lag}")
        if not self.high_pass >= 0:
            raise ValueError(f"lss high_pass must be >= 0 Hz, got {self.high_pass}")
        if int(self.oversampling) != self.oversampling or self.oversampling < 1:
            raise ValueError(f"lss oversampling must be a positive integer, got {self.oversampling}")

    def as_dict(self) -> dict[str, float | int | str]:
        """JSON-ready, for the bundle's manifest."""
        return asdict(self)


def ready_volume(onset: float, tr: float, lag: float) -> int:
    """Index of the first volume acquired at or after ``onset + lag`` (and after the onset): the service estimates
    the trial once it is in."""
    return max(int(math.ceil((onset + lag) / tr - 1e-9)), int(math.floor(onset / tr)) + 1, 0)


def frame_times(n_volumes: int, tr: float) -> np.ndarray:
    """The acquisition time of each volume, s (the first at 0, as the fit's design matrices take them)."""
    return np.arange(n_volumes) * float(tr)


def _gamma_pdf(t: np.ndarray, shape: float, loc: float, scale: float) -> np.ndarray:
    """scipy.stats.gamma.pdf(t, shape, loc=loc, scale=scale)."""
    z = (t - loc) / scale
    out = np.zeros_like(z)
    pos = z > 0
    out[pos] = np.exp((shape - 1.0) * np.log(z[pos]) - z[pos] - math.lgamma(shape)) / scale
    return out


def glover_hrf(tr: float, oversampling: int = 16, time_length: float = 32.0) -> np.ndarray:
    """The canonical Glover HRF sampled every ``tr / oversampling`` s, summing to 1 (nilearn's ``glover_hrf``)."""
    dt = tr / oversampling
    t = np.linspace(0, time_length, int(np.rint(float(time_length) / dt)))
    # delay 6 s, undershoot 12 s, dispersions 0.9, ratio 0.48: nilearn's Glover parameters
    hrf = _gamma_pdf(t, 6.0 / 0.9, dt, 0.9) - 0.48 * _gamma_pdf(t, 12.0 / 0.9, dt, 0.9)
    return hrf / hrf.sum()


def cosine_drift(high_pass: float, times: np.ndarray) -> np.ndarray:
    """The discrete cosine basis up to ``high_pass`` Hz, the constant last (nilearn's ``create_cosine_drift``)."""
    n = len(times)
    dt = (times[-1] - times[0]) / (n - 1)
    order = min(n - 1, int(np.floor(2 * n * high_pass * dt)))
    drift = np.zeros((n, order + 1))
    k = np.arange(1, order + 1)
    drift[:, :order] = np.sqrt(2.0 / n) * np.cos((np.pi / n) * (np.arange(n)[:, None] + 0.5) * k[None, :])
    drift[:, -1] = 1.0
    return drift


def event_regressors(
    onsets: np.ndarray, durations: np.ndarray, times: np.ndarray, oversampling: int = 16
) -> np.ndarray:
    """Each event's HRF-convolved regressor at the frame ``times``, ``[T, n_events]``.

    nilearn's ``compute_regressor`` for one event of amplitude 1 (Glover HRF): a box from the onset to the offset
    on the oversampled grid (a zero duration lasts one sample), convolved with the HRF and linearly interpolated
    at the frame times. A condition's regressor is the sum of its events' (the model is linear).
    """
    onsets, durations = np.asarray(onsets, float), np.asarray(durations, float)
    times = np.asarray(times, float)
    n = times.size
    tr = float(np.min(np.diff(times)))
    lo_t, hi_t = times.min(), times.max()
    n_hr = (n - 1) / (hi_t - lo_t) * (hi_t * (1 + 1.0 / (n - 1)) - lo_t - MIN_ONSET) * oversampling + 1
    hr = np.linspace(lo_t + MIN_ONSET, hi_t * (1 + 1.0 / (n - 1)), int(np.rint(n_hr)))
    tmax = hr.size
    start = np.minimum(np.searchsorted(hr, onsets), tmax - 1)
    stop = np.minimum(np.searchsorted(hr, onsets + durations), tmax - 1)
    stop = np.where((stop < tmax - 1) & (stop == start), stop + 1, stop)
    # the box [start, stop) convolved with the kernel h: C(i - start) - C(i - stop), C the kernel's cumulative sum
    cum = np.cumsum(glover_hrf(tr, oversampling))

    def conv(i: np.ndarray) -> np.ndarray:
        def c(m: np.ndarray) -> np.ndarray:
            return np.where(m < 0, 0.0, cum[np.clip(m, 0, cum.size - 1)])

        return c(i[:, None] - start[None, :]) - c(i[:, None] - stop[None, :])

    # linear interpolation at the frame times (scipy's interp1d: the sample before and the one after)
    hi = np.clip(np.searchsorted(hr, times), 1, tmax - 1)
    lo = hi - 1
    w = ((times - hr[lo]) / (hr[hi] - hr[lo]))[:, None]
    y_lo, y_hi = conv(lo), conv(hi)
    return (y_hi - y_lo) * w + y_lo


def _psc(y: np.ndarray) -> np.ndarray:
    """Percent signal change over the rows given (nilearn's ``mean_scaling``)."""
    mean = np.maximum(y.mean(axis=0), 1.0)
    return 100.0 * (y / mean - 1.0)


def _basis(nuisance: np.ndarray) -> tuple[np.ndarray, int]:
    """An orthonormal basis of the nuisance columns' span, and its rank."""
    u, s, _ = np.linalg.svd(nuisance, full_matrices=False)
    rank = int(np.sum(s > s.max() * max(nuisance.shape) * np.finfo(float).eps)) if s.size else 0
    return u[:, :rank], rank


def lss_estimates(
    y: np.ndarray,
    tr: float,
    onsets: Sequence[float],
    durations: Sequence[float],
    conditions: Sequence[str],
    targets: Sequence[int],
    motion: np.ndarray | None = None,
    exclude: np.ndarray | None = None,
    options: LSSOptions | None = None,
) -> np.ndarray:
    """Least-squares-separate estimates ``[len(targets), V]`` of the events ``targets`` (indices into the events).

    Parameters
    ----------
    y : array [T, V]
        The run's voxels (before any scaling), one row per volume acquired so far.
    tr : float
        Seconds between volumes.
    onsets, durations, conditions : sequences [n_events]
        Every event of the run (known so far), s, and its condition (the trial type). An event after the last
        volume is left out of the model.
    targets : sequence of int
        The events to estimate; each must start before the last volume (strictly: its regressor must not be 0).
    motion : array [T, 6], optional
        The motion parameters; those that vary over the kept volumes are regressors.
    exclude : bool array [T], optional
        The volumes left out (censored by the QA, or lost): their rows are dropped from the data and the design.
    options : LSSOptions, optional
        Drift, oversampling, and beta or t-value.
    """
    options = options or LSSOptions()
    y = np.asarray(y)
    n = y.shape[0]
    times = frame_times(n, tr)
    onsets, durations = np.asarray(onsets, float), np.asarray(durations, float)
    conditions = np.asarray([str(c) for c in conditions])
    targets = np.asarray(targets, dtype=np.int64)
    if targets.size and onsets[targets].max() >= times[-1]:
        raise ValueError("a target event starts at or after the last volume: it cannot be estimated yet")
    inside = np.flatnonzero(onsets <= times[-1])
    keep = np.ones(n, bool) if exclude is None else ~np.asarray(exclude, bool)[:n]
    regs = event_regressors(onsets[inside], durations[inside], times, options.oversampling)[keep]
    cond_of = conditions[inside]
    column = np.full(onsets.size, -1)
    column[inside] = np.arange(inside.size)
    fixed = [cosine_drift(options.high_pass, times)[keep]]
    if motion is not None:
        m = np.asarray(motion, float)[:n][keep]
        fixed.append(m[:, np.ptp(m, axis=0) > 1e-9])
    data = _psc(np.asarray(y[keep], dtype=np.float64))
    out = np.empty((targets.size, y.shape[1]), dtype=np.float64)
    labels = sorted(set(cond_of))
    sums = {c: regs[:, cond_of == c].sum(axis=1) for c in labels}
    for c in sorted(set(conditions[targets])):
        rows = np.flatnonzero(conditions[targets] == c)
        others = [sums[o][:, None] for o in labels if o != c]
        basis, rank = _basis(np.hstack(others + fixed))
        x = regs[:, column[targets[rows]]]
        s = sums[c]
        x = x - basis @ (basis.T @ x)
        s = s - basis @ (basis.T @ s)
        out[rows] = _solve(x, s, data, basis, rank, options.output)
    return out


def _solve(x: np.ndarray, s: np.ndarray, data: np.ndarray, basis: np.ndarray, rank: int, output: str) -> np.ndarray:
    """Each trial's coefficient (or t) in ``[x_j, s - x_j]`` against ``data``, all residualised on the nuisance.

    ``x [T, n]`` the trials' residualised regressors, ``s [T]`` their condition's sum; closed-form 2x2 normal
    equations per trial, over every voxel at once; a trial alone in its condition is a one-column problem.
    """
    xy = x.T @ data  # [n, V]; x is residualised, so x' y = x' M y
    sy = s @ data  # [V]
    g11 = np.einsum("ti,ti->i", x, x)
    if np.any(g11 <= 1e-12):
        raise ValueError("a target's regressor is 0 on the kept volumes (all censored, or explained by the nuisance)")
    xs = x.T @ s
    ss = float(s @ s)
    g12, g22 = xs - g11, ss - 2 * xs + g11
    r1, r2 = xy, sy[None, :] - xy
    det = g11 * g22 - g12**2
    alone = g22 <= 1e-10 * np.maximum(g11, 1e-300)
    det_safe = np.where(alone, 1.0, det)[:, None]
    b1 = np.where(alone[:, None], r1 / g11[:, None], (g22[:, None] * r1 - g12[:, None] * r2) / det_safe)
    if output == "beta":
        return b1
    b2 = np.where(alone[:, None], 0.0, (g11[:, None] * r2 - g12[:, None] * r1) / det_safe)
    resid = data - basis @ (basis.T @ data)
    yy = np.einsum("tv,tv->v", resid, resid)
    rss = yy[None, :] - b1 * r1 - b2 * r2
    dof = data.shape[0] - rank - np.where(alone, 1, 2)
    if np.any(dof < 1):
        raise ValueError(f"{data.shape[0]} kept volumes leave no degrees of freedom for a trial's t-value")
    c11 = np.where(alone, 1.0 / g11, g22 / np.where(alone, 1.0, det))
    var = np.maximum(rss, 0.0) / dof[:, None] * c11[:, None]
    return b1 / np.sqrt(np.maximum(var, 1e-300))
