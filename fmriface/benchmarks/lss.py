"""Per-trial cost of the live least-squares-separate estimate at the paper's scale (service.lss).

A synthetic run of ``--volumes`` volumes (TR 2 s, a face every 3 s, fixation events, drifting motion) over
``--voxels`` voxels; each trial is estimated as the service does live (:func:`service.lss.lss_estimates` on the
volumes up to its onset + ``--lag``, all events so far, one trial per call), and the whole run's trials in one
call as the fit does. Reported: median and p95 milliseconds per live trial (beta and t-value) and the whole
run's time per trial, with numpy's threads as given (``OMP_NUM_THREADS``). The goal: <= 20 ms per live trial.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The run's size and the lag."""
    p.add_argument("--voxels", type=int, default=3500, help="voxels (default 3500: the paper's 3,000-4,000)")
    p.add_argument("--volumes", type=int, default=195, help="volumes in the run (default 195: the paper's runs)")
    p.add_argument("--lag", type=float, default=12.0, help="seconds after onset a trial is estimated (default 12)")


def _run(voxels: int, volumes: int, seed: int = 0):
    from service.lss import event_regressors, frame_times

    rng = np.random.default_rng(seed)
    tr = 2.0
    onsets = np.arange(4.0, (volumes - 4) * tr, 3.0)
    kinds = np.where(np.arange(onsets.size) % 10 == 9, "Fix", "face")
    regs = event_regressors(onsets, np.ones(onsets.size), frame_times(volumes, tr))
    y = 1000 + regs @ rng.normal(0, 2, (onsets.size, voxels)) + rng.normal(0, 5, (volumes, voxels))
    motion = np.cumsum(rng.normal(0, 0.05, (volumes, 6)), axis=0)
    return tr, onsets, kinds, y.astype(np.float32), motion


def run(args: argparse.Namespace) -> dict:
    """Time every live trial of one run (beta and t) and the whole run at once; returns the timings."""
    from service.lss import LSSOptions, lss_estimates, ready_volume

    tr, onsets, kinds, y, motion = _run(args.voxels, args.volumes)
    durations = np.ones(onsets.size)
    faces = np.flatnonzero(kinds == "face")
    result: dict = {"voxels": args.voxels, "volumes": args.volumes, "lag_s": args.lag, "trials": int(faces.size)}
    for output in ("beta", "t"):
        options = LSSOptions(lag=args.lag, output=output)
        ms = []
        for j in faces:
            n = ready_volume(onsets[j], tr, args.lag) + 1
            if n > args.volumes:
                continue
            known = np.flatnonzero(onsets <= (n - 1) * tr)
            t0 = time.perf_counter()
            try:
                lss_estimates(y[:n], tr, onsets[known], durations[known], kinds[known], [j], motion[:n], None, options)
            except ValueError:  # the run's first trial: too few volumes yet for a t-value (the service skips it)
                continue
            ms.append(1e3 * (time.perf_counter() - t0))
        result[f"live_{output}_ms"] = {
            "median": round(float(np.median(ms)), 2),
            "p95": round(float(np.percentile(ms, 95)), 2),
            "n": len(ms),
        }
        t0 = time.perf_counter()
        lss_estimates(y, tr, onsets, durations, kinds, faces, motion, None, options)
        result[f"whole_run_{output}_ms_per_trial"] = round(1e3 * (time.perf_counter() - t0) / faces.size, 3)
    result["goal_ms"] = 20.0
    return result
