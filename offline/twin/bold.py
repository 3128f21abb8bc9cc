"""BOLD time series of one run: trial amplitudes, HRF convolution, drift, AR(1) and thermal noise, motion.

``BOLD = S0 * (1 + psc/100 * (HRF * response) + drift + physiological AR(1))``, built in the head's frame,
moved rigidly into the scanner's frame (trilinear resampling), then thermal noise is added and the magnitude
stored as int16. The signal is sampled at the middle of each volume's acquisition, ``n * TR + TR / 2``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import gammaln

from offline.twin.config import NoiseConfig, SignalConfig
from offline.twin.motion import MovedGrid

__all__ = ["hrf", "event_regressors", "Subject", "run_signal", "synthesize_run"]

_DT = 0.05


def hrf(t: np.ndarray) -> np.ndarray:
    """SPM's canonical double-gamma haemodynamic response (peak near 5 s, undershoot near 15 s)."""
    t = np.maximum(np.asarray(t, dtype=float), 0.0)
    with np.errstate(divide="ignore"):
        lt = np.where(t > 0, np.log(np.maximum(t, 1e-12)), -np.inf)
    peak = np.exp(5.0 * lt - t - gammaln(6.0))
    under = np.exp(15.0 * lt - t - gammaln(16.0)) / 6.0
    return np.where(t > 0, peak - under, 0.0)


_GRID = np.arange(0.0, 40.0, _DT)
_CUM = np.concatenate([[0.0], np.cumsum(hrf(_GRID[:-1] + _DT / 2)) * _DT])
_NORM = float(np.max(np.interp(_GRID, _GRID, _CUM) - np.interp(_GRID - 1.0, _GRID, _CUM, left=0.0)))


def event_regressors(times: np.ndarray, onsets: np.ndarray, durations: np.ndarray) -> np.ndarray:
    """HRF-convolved boxcars ``[T, K]`` at ``times``, scaled so a 1-s event peaks at 1."""
    lag = times[:, None] - onsets[None, :]
    on = np.interp(lag, _GRID, _CUM, left=0.0, right=_CUM[-1])
    off = np.interp(lag - durations[None, :], _GRID, _CUM, left=0.0, right=_CUM[-1])
    return (on - off) / _NORM


@dataclass
class Subject:
    """The twin's fixed properties, shared by every run (head voxels in ``np.flatnonzero(head)`` order)."""

    s0: np.ndarray  # [H] baseline intensity of the head voxels
    head: np.ndarray  # bool [X, Y, Z]
    brain_in_head: np.ndarray  # [B] positions (in head order) of brain voxels
    resp_in_head: np.ndarray  # [V] positions (in head order) of responsive voxels
    base: np.ndarray  # [V] face response, percent signal change
    ident: np.ndarray  # [V] scale of the face-specific modulation, percent
    weights: np.ndarray  # [V, C] readout of the code
    s0_grey: float  # mean baseline in grey matter (defines tSNR)
    grid: MovedGrid  # head frame -> the scanner grid the run is written on
    coil: np.ndarray | None = None  # coil shading on that grid, applied after the move (None: in s0 already)


def trial_amplitudes(
    subject: Subject, codes: np.ndarray, kinds: np.ndarray, sig: SignalConfig, rng: np.random.Generator
) -> np.ndarray:
    """Amplitudes ``[K, V]`` (percent) of K trials with hidden codes ``[K, C]``; kinds: 0 seen, 1 imagined, 2 cue."""
    tuned = subject.base[None, :] + subject.ident[None, :] * (codes @ subject.weights.T)
    gain = np.where(kinds == 0, 1.0, np.where(kinds == 1, sig.imagery_gain, sig.cue_gain))
    state = 1.0 + 0.15 * rng.standard_normal(len(kinds))  # shared trial-to-trial fluctuation (attention)
    noise = sig.trial_noise * rng.standard_normal(tuned.shape)
    return (gain * state)[:, None] * tuned + np.where(gain > 0, 1.0, 0.0)[:, None] * noise


def run_signal(
    subject: Subject,
    events: pd.DataFrame,
    code_of: dict[str, np.ndarray],
    n_volumes: int,
    tr: float,
    sig: SignalConfig,
    rng: np.random.Generator,
) -> np.ndarray:
    """The responsive voxels' BOLD signal ``[T, V]`` in percent: the trials' amplitudes (with their trial-to-trial
    variability, drawn first from ``rng``) convolved with the HRF; no drift, physiological or thermal noise, no
    motion. :func:`synthesize_run` draws it first from its ``rng``, so the same generator state gives the very
    signal inside a run's data (``offline.twin.truth`` reads it back for the ablations)."""
    times = np.arange(n_volumes) * tr + tr / 2.0
    is_face = events["trial_type"].isin(["train_face", "test_face"]).to_numpy()
    is_img = (events["trial_type"] == "Img").to_numpy()
    rows = events[is_face | is_img]
    kinds = np.where(rows["trial_type"] == "Img", 1, 0)
    onsets = rows["onset"].to_numpy(float)
    durations = rows["duration"].to_numpy(float)
    if sig.cue_gain > 0 and is_img.any():  # a visual cue: the imagined face seen for the first second
        cue = events[is_img]
        rows = pd.concat([rows, cue])
        kinds = np.concatenate([kinds, np.full(len(cue), 2)])
        onsets = np.concatenate([onsets, cue["onset"].to_numpy(float)])
        durations = np.concatenate([durations, np.ones(len(cue))])
    codes = np.stack([code_of[s] for s in rows["stim_file"]]) if len(rows) else np.zeros((0, subject.weights.shape[1]))
    amps = trial_amplitudes(subject, codes.astype(np.float64), kinds, sig, rng)
    return event_regressors(times, onsets, durations) @ amps


def synthesize_run(
    subject: Subject,
    events: pd.DataFrame,
    code_of: dict[str, np.ndarray],
    n_volumes: int,
    tr: float,
    motion: np.ndarray,
    sig: SignalConfig,
    noise: NoiseConfig,
    rng: np.random.Generator,
) -> np.ndarray:
    """One run's volumes as int16 ``[X, Y, Z, T]`` (scanner frame, magnitude)."""
    times = np.arange(n_volumes) * tr + tr / 2.0
    signal = run_signal(subject, events, code_of, n_volumes, tr, sig, rng)  # [T, V] percent
    n_head = subject.s0.size
    basis = np.cos(np.pi * np.outer(times / (n_volumes * tr), np.arange(1, 4)))  # [T, 3] slow cosines
    coef = 0.7 * rng.standard_normal((3, 1)) + 0.5 * rng.standard_normal((3, n_head))
    drift = ((noise.drift_percent / 100.0 / np.sqrt(3.0)) * (basis @ coef)).astype(np.float32)  # [T, H]
    phys_sd = np.sqrt(noise.physio_share) / noise.tsnr
    rho = np.float32(noise.ar1)
    b = subject.brain_in_head
    state = rng.standard_normal(b.size, dtype=np.float32) * np.float32(phys_sd)  # stationary AR(1) start
    innov_sd = np.float32(phys_sd * np.sqrt(1 - noise.ar1**2))
    thermal = np.float32(subject.s0_grey / noise.tsnr * np.sqrt(1.0 - noise.physio_share))

    shape = subject.grid.shape  # the scanner grid (a later session's may differ from the head frame's)
    result = np.empty((n_volumes, *shape), np.int16)
    chunk = 16  # volumes per block: bounded memory, no page-fault storm on large runs
    clean = np.zeros((chunk, *shape), np.float32)  # outside the motion support it stays 0
    noisy = np.empty_like(clean)
    frame = np.zeros(subject.head.shape, np.float32)
    flat_head = np.flatnonzero(subject.head)
    resp = subject.resp_in_head
    for t0 in range(0, n_volumes, chunk):
        t1 = min(t0 + chunk, n_volumes)
        rel = drift[t0:t1].copy()  # fractional change of S0
        for k in range(t1 - t0):
            state = rho * state + innov_sd * rng.standard_normal(b.size, dtype=np.float32)
            rel[k, b] += state
        rel[:, resp] += (signal[t0:t1] / 100.0).astype(np.float32)
        rel += 1.0
        rel *= subject.s0
        for k, t in enumerate(range(t0, t1)):
            frame.reshape(-1)[flat_head] = rel[k]
            subject.grid.move(frame, motion[t], out=clean[k])
            if subject.coil is not None:
                clean[k] *= subject.coil
        n = t1 - t0
        rng.standard_normal(out=noisy[:n], dtype=np.float32)
        noisy[:n] *= thermal
        noisy[:n] += clean[:n]
        np.abs(noisy[:n], out=noisy[:n])  # magnitude image (a folded Gaussian where there is no signal)
        noisy[:n] += 0.5  # round half up on the cast; EPI intensities stay far below the int16 limit
        result[t0:t1] = noisy[:n]
    return result.transpose(1, 2, 3, 0)
