"""Dashboard: frame published -> page updated in a real headless Chromium, and the page's memory over a long run.

Latency (the default): ``fmriface dashboard`` runs in its own process, subscribed to a PUB socket of this one;
the system's Chromium (Debian's ``chromium``, driven by Playwright; no browser is downloaded) shows its page.
Once the page is live, ``--frames`` frames shaped as ``serve``'s (64x64 face, stage timestamps, motion, FD,
feedback) are published at ``--rate`` Hz on an absolute schedule. The page stamps each frame when the animation
frame that drew it (plots, counts and the decoded face) has run; ``p50_ms``/``p99_ms`` are that time minus the
frame header's ``t.sent``, on the same machine clock. Also reported: sent -> dashboard received, and sent ->
event in the page.

``--memory``: ``fmriface serve`` replays ``--volumes`` volumes (default 3,600: two hours at TR 2 s) as fast
as ``--replay-rate`` volumes/s through the scanner emulator, with trials and 2% intake faults, while the
dashboard (with ``--runs``) and one page follow; the page's JavaScript heap (CDP ``Performance.getMetrics``,
after a forced garbage collection), its DOM nodes and the dashboard's resident memory are sampled every
``--sample-every`` volumes. ``heap_growth_mb`` is the growth after the plotted history has filled.

:func:`attach_pages` (a dashboard and N browsers on a service's stream) is what ``bench service --browsers``
uses.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from fmriface.common import UsageError, progress
from service.extras import missing_extra

CHROMIUM = os.environ.get("FMRIFACE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def add_arguments(p: Any) -> None:
    """Add this benchmark's options to the parser of ``fmriface bench dashboard``."""
    p.add_argument("--frames", type=int, default=300, help="frames to publish (latency; default 300)")
    p.add_argument("--rate", type=float, default=10.0, help="frames per second (latency; default 10)")
    p.add_argument("--image-size", type=int, default=64, help="side of the published face (default 64)")
    p.add_argument("--memory", action="store_true", help="the long replay through serve, page memory sampled")
    p.add_argument("--volumes", type=int, default=3600, help="volumes of the replay (--memory; default 3600)")
    p.add_argument("--replay-rate", type=float, default=60.0, help="volumes per second (--memory; default 60)")
    p.add_argument("--sample-every", type=int, default=300, help="volumes between memory samples (default 300)")


def _stats(ms: list[float] | np.ndarray, prefix: str = "") -> dict[str, float | None]:
    a = np.asarray(ms, float)
    if a.size == 0:
        return {f"{prefix}p50_ms": None, f"{prefix}p99_ms": None}
    return {
        f"{prefix}p50_ms": round(float(np.percentile(a, 50)), 2),
        f"{prefix}p90_ms": round(float(np.percentile(a, 90)), 2),
        f"{prefix}p99_ms": round(float(np.percentile(a, 99)), 2),
        f"{prefix}max_ms": round(float(a.max()), 2),
    }


def browser_missing() -> str | None:
    """Why no browser can run here, or None."""
    try:
        import aiohttp  # noqa: F401
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        return missing_extra(str(exc.name), "the dashboard's browser benchmark", "dev,dashboard")
    if not os.access(CHROMIUM, os.X_OK):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    return None


class DashboardRun:
    """``fmriface dashboard`` in a subprocess on ``sub`` (port chosen by the system); ``url`` once it listens."""

    def __init__(self, sub: str, *args: str, workdir: Path) -> None:
        self.log_path = Path(workdir) / f"dashboard-{time.monotonic_ns()}.log"
        cmd = [sys.executable, "-m", "fmriface", "dashboard", "--sub", sub, "--port", "0", *args]
        env = {**os.environ, "FMRIFACE_QUIET": "1", "PYTHONUNBUFFERED": "1"}
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env)
        self.url = ""
        deadline = time.monotonic() + 60
        while not self.url:
            m = re.search(r"^fmriface dashboard: (http://\S+)", self.log_path.read_text(errors="replace"), re.M)
            if m:
                self.url = m.group(1)
            elif self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the dashboard did not start:\n{self.log_path.read_text()[-2000:]}")
            else:
                time.sleep(0.05)

    def rss_mb(self) -> float | None:
        """The dashboard process's resident memory in MiB, or None once the process is gone."""
        import psutil

        try:
            return psutil.Process(self.proc.pid).memory_info().rss / 2**20
        except psutil.Error:
            return None

    def stop(self) -> None:
        """Stop the dashboard: SIGTERM, then SIGKILL if it has not exited within 15 s."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def renice_browsers(nice: int) -> int:
    """Lower the CPU priority of this process's Chromium children (all their processes); returns how many.

    Playwright starts each browser in a session of its own, and Linux shares the CPU between sessions
    (autogroups) before it looks at a process's nice value; so the browser's session is given the nice value too
    (``/proc/PID/autogroup``: only the browser's own processes are in it)."""
    import psutil

    n = 0
    mine = os.getsid(0)
    for proc in psutil.Process().children(recursive=True):
        try:
            if "chrom" not in proc.name().lower():
                continue
            proc.nice(nice)
            n += 1
            if os.getsid(proc.pid) != mine and os.getsid(proc.pid) == proc.pid:  # the leader of its own session
                with contextlib.suppress(OSError):
                    Path(f"/proc/{proc.pid}/autogroup").write_text(str(nice))
        except (psutil.Error, OSError):
            continue
    return n


@contextlib.contextmanager
def chromium(n: int = 1, nice: int = 0) -> Iterator[list[Any]]:
    """``n`` headless Chromium browsers (each a process of its own with a fresh temporary profile), at CPU
    priority ``nice`` (0: as any program)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browsers = []
        try:
            for _ in range(n):
                browsers.append(pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True))
            if nice:
                renice_browsers(nice)
            yield browsers
        finally:
            for b in browsers:
                with contextlib.suppress(Exception):
                    b.close()


def open_page(browser: Any, url: str) -> Any:
    """A page on the dashboard, connected (Playwright's predicates need the page's CSP bypassed)."""
    page = browser.new_context(viewport={"width": 1400, "height": 1000}, bypass_csp=True).new_page()
    page.goto(url)
    page.wait_for_function("document.body.dataset.connection === 'live'", timeout=30000)
    return page


@contextlib.contextmanager
def attach_pages(pub: str, n: int, workdir: Path, runs: Path | None = None, nice: int = 0) -> Iterator[dict[str, Any]]:
    """A dashboard on ``pub`` and ``n`` browsers showing it, for as long as the block runs (``n`` 0: nothing);
    the browsers at CPU priority ``nice``. Yields a dict that holds, afterwards, the frames the pages received."""
    info: dict[str, Any] = {"browsers": n, "browser_nice": nice}
    if n <= 0:
        yield info
        return
    reason = browser_missing()
    if reason:
        raise UsageError(f"--browsers needs a browser: {reason}")
    dash = DashboardRun(pub, *(["--runs", str(runs)] if runs else []), workdir=workdir)
    try:
        with chromium(n) as browsers:
            pages = [open_page(b, dash.url) for b in browsers]
            if nice:  # after the pages opened: their renderer processes exist now
                renice_browsers(nice)
            for p in pages:  # the dashboard hears the service (its heartbeat) before the bench begins
                p.wait_for_function("window.fmrifaceDashboard.state.runId !== null", timeout=30000)
            yield info
            # the pages lag the bench's own subscriber (another process, then the browser): wait for each to
            # have the run's end before counting what it got, so a fast run is not counted before it arrived
            settled = []
            for p in pages:
                try:
                    p.wait_for_function("window.fmrifaceDashboard.state.end !== null", timeout=30000)
                    settled.append(True)
                except Exception:  # noqa: BLE001 - a page that never got the end is reported, not hidden
                    settled.append(False)
            info["pages_got_end"] = settled
            info["page_frames"] = [p.evaluate("window.fmrifaceDashboard.state.counts.frames || 0") for p in pages]
            info["page_errors"] = sum(p.evaluate("window.fmrifaceDashboard.page.errors") for p in pages)
    finally:
        dash.stop()


# --- frame published -> page updated -------------------------------------------------------------------------


def _latency(args: Any, work: Path) -> dict[str, Any]:
    import zmq

    from service import protocol

    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.setsockopt(zmq.SNDHWM, 1000)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, size=(8, args.image_size, args.image_size, 3), dtype=np.uint8)
    dash = DashboardRun(f"tcp://127.0.0.1:{port}", workdir=work)
    seq = protocol.SeqCounter()
    sent: dict[int, float] = {}
    motion = np.zeros(6)

    def frame(k: int) -> None:
        nonlocal motion
        motion = motion + rng.normal(scale=0.02, size=6)
        now = time.time()
        t = {"file_ready": now - 0.009, "read": now - 0.007, "dequeued": now - 0.0068, "motion": now - 0.004}
        t["decoded"] = now - 0.0005
        fields, payload = protocol.encode_image(faces[k % len(faces)])
        h = {"run_id": "bench", "seq": seq.next("frame"), "volume": k, "acquisition": k + 1, "t": t,
             "motion": [round(float(v), 5) for v in motion], "fd": round(float(abs(rng.normal(0.1, 0.1))), 5),
             "tr": 2.0, "ready": True, "feedback": {"projections": {"Male": 0.1}, "value": float(np.sin(k / 9))},
             **fields}  # fmt: skip
        t["sent"] = time.time()
        sent[h["seq"]] = t["sent"]
        protocol.send(pub, "frame", h, payload)

    try:
        with chromium(1) as (browser,):
            page = open_page(browser, dash.url)
            deadline = time.monotonic() + 30
            k = 0
            while page.evaluate("window.fmrifaceDashboard.state.counts.frames || 0") == 0:  # the SUB is up
                if time.monotonic() > deadline:
                    raise RuntimeError("the dashboard's page never showed a frame")
                frame(k)
                k += 1
                page.wait_for_timeout(100)
            page.wait_for_function(f"window.fmrifaceDashboard.page.latency.length >= {k}", timeout=10000)
            first = seq.peek("frame")
            t0 = time.perf_counter() + 0.2
            with progress(total=args.frames, desc="dashboard bench", unit="frame") as bar:
                for i in range(args.frames):
                    time.sleep(max(0.0, t0 + i / args.rate - time.perf_counter()))
                    frame(k + i)
                    bar.update()
            page.wait_for_function(
                f"window.fmrifaceDashboard.page.latency.filter(r => r.q >= {first}).length >= {args.frames}",
                timeout=30000,
            )
            recs = page.evaluate(f"window.fmrifaceDashboard.page.latency.filter(r => r.q >= {first})")
            wire = page.evaluate(f"window.fmrifaceDashboard.state.points.filter(p => p.q >= {first}).map(p => p.wire)")
            errors = page.evaluate("window.fmrifaceDashboard.page.errors")
            heap = _heap_mb(page)
    finally:
        dash.stop()
        ctx.destroy(linger=0)
    upd = [r["upd"] - 1000 * sent[r["q"]] for r in recs if r["q"] in sent]
    rx = [r["rx"] - 1000 * sent[r["q"]] for r in recs if r["q"] in sent]
    out = {"count": len(upd), **_stats(upd)}
    out.update(_stats([w for w in wire if w is not None], "sent_to_dashboard_"))
    out.update(_stats(rx, "sent_to_page_event_"))
    out.update(
        frames_sent=args.frames,
        rate_hz=args.rate,
        image_size=args.image_size,
        page_errors=errors,
        page_heap_mb=heap,
        targets={"p50_ms": 100.0, "p99_ms": 250.0},
        met=bool(upd) and np.percentile(upd, 50) <= 100 and np.percentile(upd, 99) <= 250,
        measured="frame header t.sent -> the page's animation frame that drew it (plots, counts, face decoded)",
        browser=_browser_version(),
        cpu_count=os.cpu_count(),
    )
    return out


def _browser_version() -> str:
    try:
        return subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "chromium"


def _heap_mb(page: Any, gc: bool = True) -> dict[str, float]:
    """The page's JavaScript heap (after a forced collection) and its DOM nodes, from the DevTools protocol."""
    cdp = page.context.new_cdp_session(page)
    try:
        if gc:
            cdp.send("HeapProfiler.collectGarbage")
        cdp.send("Performance.enable")
        metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    finally:
        cdp.detach()
    return {
        "js_heap_used_mb": round(metrics.get("JSHeapUsedSize", 0) / 2**20, 2),
        "js_heap_total_mb": round(metrics.get("JSHeapTotalSize", 0) / 2**20, 2),
        "dom_nodes": int(metrics.get("Nodes", 0)),
    }


# --- the long replay -------------------------------------------------------------------------------------------


def _memory(args: Any, work: Path) -> dict[str, Any]:
    from fmriface.benchmarks.soak_harness import ServeProcess, free_address, synthetic_run, wait_until
    from fmriface.benchmarks.synth import make_bundle
    from service.scanner.replay import ScannerEmulator

    tr, n = 2.0, args.volumes
    sb = make_bundle(work / "bundle", shape=(20, 22, 16), n_voxels=80, latent_size=16, image_size=args.image_size)
    watch, runs = work / "scanner", work / "runs"
    watch.mkdir()
    data = synthetic_run(sb.reference, n, seed=1)
    events = [{"onset": tr * k, "duration": 2.0, "trial_type": "test_face", "stim_file": sb.stim_ids[k % 6]}
              for k in range(2, n - 8, 10)]  # fmt: skip
    pub, pull = free_address(), free_address()
    values = dict(bundle=sb.path, watch=watch, runs=runs, run_id="long", pub=pub, pull=pull, hwm=1000,
                  heartbeat=0.5, idle_timeout=8.0, startup_timeout=120.0, min_volumes=5,
                  watcher={"pattern": "*.dcm", "gap_timeout_s": 1.0})  # fmt: skip
    serve = ServeProcess(values, work, name="serve").start()
    dash = DashboardRun(pub, "--runs", str(runs), workdir=work)
    samples: list[dict[str, Any]] = []
    try:
        with chromium(1) as (browser,):
            page = open_page(browser, dash.url)
            if not wait_until(lambda: page.evaluate("window.fmrifaceDashboard.state.runId") == "long", 120):
                raise RuntimeError(f"no status from serve reached the page; serve log:\n{serve.log()[-2000:]}")
            samples.append({"volumes": 0, **_heap_mb(page), "dashboard_rss_mb": dash.rss_mb()})
            emu = ScannerEmulator(data=data, affine=sb.affine, tr=tr, out_dir=watch, fmt="mosaic",
                                  speed=tr * args.replay_rate, events=events, event_address=pull,
                                  faults=("corrupt", "drop", "duplicate"), fault_rate=0.02, seed=0)  # fmt: skip
            t0 = time.monotonic()
            next_sample = args.sample_every
            with emu, progress(total=n, desc="replay", unit="vol") as bar:
                while not emu.wait(0.5):
                    written = len(emu.written)
                    bar.update(written - bar.n)
                    if written >= next_sample:
                        seen = page.evaluate("window.fmrifaceDashboard.state.counts.volumes_known || 0")
                        samples.append({"volumes": seen, **_heap_mb(page), "dashboard_rss_mb": dash.rss_mb()})
                        next_sample += args.sample_every
            wall = time.monotonic() - t0
            if not wait_until(lambda: page.evaluate("window.fmrifaceDashboard.state.end !== null"), 60):
                raise RuntimeError("the run's end never reached the page")
            final = page.evaluate("window.fmrifaceDashboard.state.counts")
            samples.append({"volumes": final["volumes_known"], **_heap_mb(page), "dashboard_rss_mb": dash.rss_mb()})
            points = page.evaluate("window.fmrifaceDashboard.state.points.length")
            errors = page.evaluate("window.fmrifaceDashboard.page.errors")
            updated = page.evaluate("window.fmrifaceDashboard.page.latency.length")
    finally:
        dash.stop()
        serve.terminate()
    history = 1000
    filled = [s for s in samples if s["volumes"] >= history]
    heap = [s["js_heap_used_mb"] for s in filled]
    rss = [s["dashboard_rss_mb"] for s in filled if s["dashboard_rss_mb"] is not None]
    return {
        "volumes": n,
        "replay_rate": args.replay_rate,
        "replay_wall_s": round(wall, 1),
        "frames_on_page": final.get("frames"),
        "volumes_ok": final.get("ok"),
        "intake_skipped": final.get("skipped"),
        "trials": final.get("trials"),
        "points_plotted": points,
        "history": history,
        "page_errors": errors,
        "page_updates_recorded": updated,
        "samples": [{k: round(v, 2) if isinstance(v, float) else v for k, v in s.items()} for s in samples],
        "heap_mb": {
            "start": samples[0]["js_heap_used_mb"],
            "history_filled": heap[0] if heap else None,
            "end": samples[-1]["js_heap_used_mb"],
            "max": max(s["js_heap_used_mb"] for s in samples),
        },
        # after the plotted history has filled: what grows from there on would grow without bound
        "heap_growth_mb": round(heap[-1] - heap[0], 2) if heap else None,
        "dom_nodes_max": max(s["dom_nodes"] for s in samples),
        "dashboard_rss_mb": {"history_filled": rss[0] if rss else None, "end": rss[-1] if rss else None},
        "dashboard_rss_growth_mb": round(rss[-1] - rss[0], 2) if rss else None,
        "measured": "JSHeapUsedSize after HeapProfiler.collectGarbage (CDP), every --sample-every volumes",
        "browser": _browser_version(),
        "cpu_count": os.cpu_count(),
    }


def run(args: Any) -> dict[str, Any]:
    """Measure the page's latency (or, with --memory, its memory over a long replay) in a real headless Chromium.

    Raises UsageError when no browser can be driven; returns the result printed by ``fmriface bench``.
    """
    reason = browser_missing()
    if reason:
        raise UsageError(f"bench dashboard needs a browser: {reason}")
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    with tempfile.TemporaryDirectory(prefix="fmriface-bench-dashboard-") as tmp:
        return _memory(args, Path(tmp)) if args.memory else _latency(args, Path(tmp))
