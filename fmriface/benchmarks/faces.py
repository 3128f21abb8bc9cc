"""Procedural face rendering throughput (images/s on one core, 64x64 and 128x128).

Keys: ``images_per_s`` (64x64, wall clock, the target is >= 500 on one core), ``images_per_s_128``, the same
from CPU time (``images_per_s_cpu``, ``images_per_s_128_cpu``: steadier on a shared machine), ``ms_per_batch_64``,
``ms_per_batch_128``, ``batch_size``, ``threads`` (1), ``repeats``, ``load_average_1min``. Parameters are sampled once; the timing
covers rendering to uint8 images (what ``iter_faces`` adds on top is the sampling, negligible).
"""

from __future__ import annotations

import argparse
import os
import time


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add this benchmark's options to the parser of ``fmriface bench faces``."""
    p.add_argument("--n", type=int, default=512, help="faces per timed repeat (default 512)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats; the median is reported (default 5)")
    p.add_argument("--batch-size", type=int, default=32, help="faces rendered together (default 32)")


def _measure(params, size: int, batch: int, repeats: int, render) -> tuple[list[float], list[float]]:
    """Wall and CPU (process) seconds of each repeat."""
    render(params[:batch], size, batch)  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        render(params, size, batch)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return wall, cpu


def run(args: argparse.Namespace) -> dict:
    """Time procedural face rendering on one thread at 64 and 128 pixels; returns the throughput keys listed above."""
    from contextlib import nullcontext

    import numpy as np

    from offline.faces import render_faces, sample_params

    try:
        from threadpoolctl import threadpool_limits

        one_thread = threadpool_limits(1)
    except ImportError:  # pragma: no cover - the renderer is elementwise numpy, single-threaded anyway
        one_thread = nullcontext()
    n128 = max(args.n // 4, args.batch_size)
    with one_thread:
        params = sample_params(args.n, np.random.default_rng(0))
        w64, c64 = (sorted(t) for t in _measure(params, 64, args.batch_size, args.repeats, render_faces))
        w128, c128 = (sorted(t) for t in _measure(params[:n128], 128, args.batch_size, args.repeats, render_faces))
    t64, t128 = w64, w128
    med64, med128 = t64[len(t64) // 2], t128[len(t128) // 2]
    return {
        "images_per_s": round(args.n / med64, 1),
        "images_per_s_128": round(n128 / med128, 1),
        "images_per_s_best": round(args.n / t64[0], 1),
        "images_per_s_cpu": round(args.n / c64[len(c64) // 2], 1),
        "images_per_s_128_cpu": round(n128 / c128[len(c128) // 2], 1),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "ms_per_batch_64": round(1000 * med64 / (args.n / args.batch_size), 2),
        "ms_per_batch_128": round(1000 * med128 / (n128 / args.batch_size), 2),
        "batch_size": args.batch_size,
        "n": args.n,
        "repeats": args.repeats,
        "threads": 1,
    }
