"""Procedural face rendering throughput (images/s on one core, 64x64 and 128x128).

Keys: ``images_per_s`` (64x64, the target is >= 500 on one core), ``images_per_s_128``, ``ms_per_batch_64``,
``ms_per_batch_128``, ``batch_size``, ``threads`` (1), ``repeats``. Parameters are sampled once; the timing
covers rendering to uint8 images (what ``iter_faces`` adds on top is the sampling, negligible).
"""

from __future__ import annotations

import argparse
import time


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=int, default=512, help="faces per timed repeat (default 512)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats; the median is reported (default 5)")
    p.add_argument("--batch-size", type=int, default=32, help="faces rendered together (default 32)")


def _measure(params, size: int, batch: int, repeats: int, render) -> list[float]:
    render(params[:batch], size, batch)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        render(params, size, batch)
        times.append(time.perf_counter() - t0)
    return times


def run(args: argparse.Namespace) -> dict:
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
        t64 = sorted(_measure(params, 64, args.batch_size, args.repeats, render_faces))
        t128 = sorted(_measure(params[:n128], 128, args.batch_size, args.repeats, render_faces))
    med64, med128 = t64[len(t64) // 2], t128[len(t128) // 2]
    return {
        "images_per_s": round(args.n / med64, 1),
        "images_per_s_128": round(n128 / med128, 1),
        "images_per_s_best": round(args.n / t64[0], 1),
        "ms_per_batch_64": round(1000 * med64 / (args.n / args.batch_size), 2),
        "ms_per_batch_128": round(1000 * med128 / (n128 / args.batch_size), 2),
        "batch_size": args.batch_size,
        "n": args.n,
        "repeats": args.repeats,
        "threads": 1,
    }
