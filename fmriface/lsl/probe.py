"""An `fmriface lsl` bridge attached to a running service, with an LSL inlet timing its samples (for benchmarks).

:func:`attach_bridge` starts ``fmriface lsl`` (its own process, as in a session) on the service's PUB address,
opens an inlet on its ``fmriface-motion`` stream (one sample per frame) and records, per sample, this host's
``time.time()`` when the inlet handed it over. A frame's ``t.sent`` (the service's clock, the same host) to that
time is the frame -> LSL sample latency. Run it in an isolated namespace (:mod:`fmriface.lsl.isolation`).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["attach_bridge", "frame_to_sample_ms"]


def _pull(inlet, out: list[float], stop: threading.Event) -> None:
    while not stop.is_set():
        sample, _ = inlet.pull_sample(timeout=0.2)
        if sample is not None:
            out.append(time.time())


@contextlib.contextmanager
def attach_bridge(pub: str, bundle: Path, timeout: float = 20.0) -> Iterator[dict[str, Any]]:
    """Run ``fmriface lsl`` on ``pub`` while the block runs; the yielded dict gets, at the end, ``received`` (wall
    time of each motion sample at the inlet, in order) and ``bridge`` (the bridge's JSON summary)."""
    import pylsl

    argv = [sys.executable, "-m", "fmriface", "lsl", "--sub", pub, "--bundle", str(bundle), "--exit-on-end", "--json"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out: dict[str, Any] = {"received": [], "bridge": None}
    stop = threading.Event()
    thread = None
    try:
        found = pylsl.resolve_byprop("name", "fmriface-motion", 1, timeout)
        if not found:
            proc.kill()
            raise RuntimeError(
                f"fmriface lsl opened no fmriface-motion stream within {timeout:.0f} s:\n"
                f"{proc.communicate()[1][-2000:]}"
            )
        inlet = pylsl.StreamInlet(found[0], max_buflen=360, processing_flags=0)
        inlet.open_stream(timeout=5.0)  # connected: nothing pushed from here on is missed
        thread = threading.Thread(target=_pull, args=(inlet, out["received"], stop), name="lsl-inlet", daemon=True)
        thread.start()
        yield out
        stdout, stderr = proc.communicate(timeout=30)  # --exit-on-end: it stops at the run's end message
        if proc.returncode != 0:
            raise RuntimeError(f"fmriface lsl exited with status {proc.returncode}:\n{stderr[-2000:]}")
        out["bridge"] = json.loads(stdout.strip().splitlines()[-1])
        deadline = time.monotonic() + 5.0
        while len(out["received"]) < out["bridge"]["counts"].get("frame", 0) and time.monotonic() < deadline:
            time.sleep(0.02)  # the last samples still in flight to the inlet
    finally:
        stop.set()
        if thread is not None:
            thread.join(5)
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def frame_to_sample_ms(sent: list[float], received: list[float]) -> list[float]:
    """Per frame, ``t.sent`` -> its motion sample at the inlet (ms); frames and samples are both in volume order.

    Raises
    ------
    RuntimeError
        When the inlet got another number of samples than frames were sent (a sample lost or doubled).
    """
    if len(sent) != len(received):
        raise RuntimeError(f"the LSL inlet got {len(received)} motion samples for {len(sent)} frames")
    return [1000.0 * (r - s) for s, r in zip(sent, received)]
