"""Volume intake: read time per volume by format (64x64x36) and file-ready -> hand-off delay (events, polling).

``read_ms``: median milliseconds for :func:`service.intake.assembly.read_volume` (the slice layouts: reading and
assembling the 36 slice files of one volume, as Siemens XA interoperability, GE real-time EPI and Philips classic
export them) on files written by :mod:`service.scanner.writers`, seeded integer data. The design
target for a mosaic is 5 ms. ``handoff_ms``: median delay from the moment a volume's file is in place (the
writer's rename returned) to the :class:`~service.intake.watcher.VolumeWatcher` handing the volume on (``t_ready``),
on the file-event path and the polling path (``--poll-interval``); ``slice_handoff_ms``: the same from the moment a
slice volume's last file is in place, per slice layout (the next volume is written only after the hand-off, so a
volume that waited for the next one to be known complete would time out). p95 values are reported beside them, and
``read_cpu_ms`` (process CPU time per read) with the load average, since wall times on a shared machine
include waiting for a core.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from fmriface.common import progress

SHAPE = (64, 64, 36)
#: name -> (write_volume fmt, vendor, file name pattern)
FORMATS = {
    "mosaic": ("mosaic", "siemens", "vol{acq:04d}.dcm"),
    "enhanced": ("enhanced", "siemens", "vol{acq:04d}.dcm"),
    "philips-enhanced": ("enhanced", "philips", "vol{acq:04d}.dcm"),
    "xa-interop-slices": ("slices", "siemens", "vol{acq:04d}"),
    "ge-slices": ("slices", "ge", "vol{acq:04d}"),
    "philips-slices": ("slices", "philips", "vol{acq:04d}"),
    "nifti": ("nifti", "siemens", "vol{acq:04d}.nii"),
    "nifti-gz": ("nifti", "siemens", "vol{acq:04d}.nii.gz"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add this benchmark's options to the parser of ``fmriface bench intake``."""
    p.add_argument("--n", type=int, default=30, help="volumes per format (default 30)")
    p.add_argument("--handoff-n", type=int, default=20, help="volumes per hand-off path (default 20)")
    p.add_argument("--poll-interval", type=float, default=0.05, help="polling period in seconds (default 0.05)")
    p.add_argument("--seed", type=int, default=0)


def _affine() -> np.ndarray:
    aff = np.diag([-3.0, 3.0, 3.5, 1.0])
    aff[:3, 3] = (94.5, -94.5, -61.25)
    return aff


def _volumes(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.integers(200, 3000, size=SHAPE).astype(np.float32)
    return [base + rng.integers(0, 40, size=SHAPE).astype(np.float32) for _ in range(n)]


def _read_times(folder: Path, n: int, seed: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall-clock and CPU (process time) milliseconds per volume read, by format."""
    from service.intake.assembly import read_slices, read_volume
    from service.scanner.writers import write_volume

    times: dict[str, list[float]] = {}
    cpu_times: dict[str, list[float]] = {}
    data = _volumes(n, seed)
    bar = progress(total=len(FORMATS) * n, desc="read")
    for name, (fmt, vendor, pattern) in FORMATS.items():
        sub = folder / name
        files = [
            write_volume(vol, _affine(), sub / pattern.format(acq=k + 1), fmt, acquisition=k + 1, tr=2.0, vendor=vendor)
            for k, vol in enumerate(data)
        ]
        read_slices(files[0]) if fmt == "slices" else read_volume(files[0][0])  # warm caches and imports
        out, cpu = [], []
        for k, paths in enumerate(files):
            c0, t0 = time.process_time(), time.perf_counter()
            vol = read_slices(paths) if fmt == "slices" else read_volume(paths[0])
            out.append((time.perf_counter() - t0) * 1000.0)
            cpu.append((time.process_time() - c0) * 1000.0)
            if not np.array_equal(vol.data, data[k]):
                raise RuntimeError(f"{name}: volume {k + 1} did not read back exactly")
            bar.update(1)
        times[name], cpu_times[name] = out, cpu
    bar.close()
    return times, cpu_times


def _handoff(
    folder: Path, n: int, polling: str, poll_interval: float, seed: int, fmt: str = "mosaic", vendor: str = "siemens"
) -> tuple[list[float], str]:
    from service.intake.watcher import VolumeWatcher, WatcherConfig
    from service.scanner.writers import write_volume
    from service.volume import Volume

    folder.mkdir(parents=True)
    data = _volumes(n, seed)
    cfg = WatcherConfig(folder=str(folder), polling=polling, poll_interval_s=poll_interval)
    delays = []
    with VolumeWatcher(cfg) as watcher:
        for k, vol in enumerate(data):
            name = folder / (f"vol{k + 1:04d}" if fmt == "slices" else f"vol{k + 1:04d}.dcm")
            write_volume(vol, _affine(), name, fmt, acquisition=k + 1, tr=2.0, vendor=vendor)
            t_in_place = time.time()  # the last file of the volume is in place
            deadline = time.monotonic() + 10.0
            while time.monotonic() < deadline:
                item = watcher.get(timeout=1.0)
                if isinstance(item, Volume):
                    delays.append((item.t_ready - t_in_place) * 1000.0)
                    break
            else:
                raise RuntimeError(f"volume {k + 1} was not handed on within 10 s ({polling} path)")
            time.sleep(0.03 + 0.07 * ((k * 7919) % 10) / 10)  # spread the writes across the poll phase
        mode = watcher.mode
    return delays, mode


def _stats(values: list[float]) -> tuple[float, float]:
    return round(float(np.median(values)), 3), round(float(np.percentile(values, 95)), 3)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Time reading each format's volume and the hand-off delay on the event and polling paths; returns both."""
    with tempfile.TemporaryDirectory(prefix="fmriface-bench-intake-") as tmp:
        tmp_path = Path(tmp)
        reads, cpu = _read_times(tmp_path / "read", args.n, args.seed)
        events, events_mode = _handoff(tmp_path / "events", args.handoff_n, "off", args.poll_interval, args.seed)
        polled, polled_mode = _handoff(tmp_path / "polling", args.handoff_n, "on", args.poll_interval, args.seed)
        slice_handoff = {
            name: _handoff(
                tmp_path / f"handoff-{name}", args.handoff_n, "off", args.poll_interval, args.seed, fmt, vendor
            )[0]
            for name, (fmt, vendor, _) in FORMATS.items()
            if fmt == "slices"
        }
    read_ms = {k: _stats(v)[0] for k, v in reads.items()}
    return {
        "shape": list(SHAPE),
        "read_ms": read_ms,
        "read_ms_p95": {k: _stats(v)[1] for k, v in reads.items()},
        "read_cpu_ms": {k: _stats(v)[0] for k, v in cpu.items()},
        "load_average_1min": round(os.getloadavg()[0], 2),
        "handoff_ms": {"events": _stats(events)[0], "polling": _stats(polled)[0]},
        "handoff_ms_p95": {"events": _stats(events)[1], "polling": _stats(polled)[1]},
        "handoff_paths": {"events": events_mode, "polling": polled_mode},
        "slice_handoff_ms": {k: _stats(v)[0] for k, v in slice_handoff.items()},
        "slice_handoff_ms_p95": {k: _stats(v)[1] for k, v in slice_handoff.items()},
        "poll_interval_s": args.poll_interval,
        "target_mosaic_read_ms": 5.0,
        "mosaic_within_target": read_ms["mosaic"] <= 5.0,
        "volumes_per_format": args.n,
        "volumes_per_handoff_path": args.handoff_n,
        "cpu_count": os.cpu_count(),
    }
