"""Harness of the dashboard's tests: the system's Chromium through Playwright, `fmriface dashboard` and
`fmriface serve` in their own processes, a bundle whose decoder draws faces, a scanner emulator, a display that
acks every frame, and a fake service for the messages no real one sends.

The browser is Debian's ``chromium`` (``apt-get install chromium``; ``make system-deps`` installs it as root);
Playwright is only its driver and never downloads a browser of its own. Where either is missing the tests are
skipped with the reason.
"""

from __future__ import annotations

import base64
import io
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from fmriface.benchmarks.dashboard import CHROMIUM, CHROMIUM_ARGS  # one place for the headless flags
from fmriface.benchmarks.soak_harness import ServeProcess
from fmriface.benchmarks.synth import SynthBundle, make_bundle, make_run
from fmriface.common import free_address


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        return "aiohttp is not installed (pip install -e '.[dashboard]')"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium; `make system-deps` does it as root)"
    return None


class Browser:
    """One headless Chromium (a fresh temporary profile, which Playwright makes for each launch)."""

    def __init__(self) -> None:
        from playwright.sync_api import sync_playwright

        self._pw = sync_playwright().start()
        try:
            self.browser = self._pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        except Exception:
            self._pw.stop()
            raise

    def page(self, url: str | None = None, *, csp: bool = False, wait_live: bool = True, **context: Any) -> Any:
        """A new page in a context of its own (its own cookies); ``page.errors`` collects script errors and
        ``page.console`` the console's error lines (a refused connection while the dashboard is down is one).

        Playwright's ``wait_for_function`` evaluates its predicate as a string, which the page's Content
        Security Policy forbids; ``csp=False`` lets the test bypass the policy (``csp=True`` keeps it, and the
        test then waits on selectors only).
        """
        ctx = self.browser.new_context(viewport={"width": 1400, "height": 1000}, bypass_csp=not csp, **context)
        page = ctx.new_page()
        page.errors, page.console = [], []  # type: ignore[attr-defined]
        page.on("pageerror", lambda exc: page.errors.append(str(exc)))  # script errors: none allowed
        page.on("console", lambda m: page.console.append(m.text) if m.type == "error" else None)
        if url is not None:
            page.goto(url)
            if wait_live:
                page.wait_for_selector("body[data-connection='live']", state="attached", timeout=20000)
        return page

    def close(self) -> None:
        try:
            self.browser.close()
        finally:
            self._pw.stop()


def wait(page: Any, predicate: str, timeout: float = 20.0, arg: Any = None) -> Any:
    """Wait until ``predicate`` (a JavaScript expression or function) holds in the page."""
    return page.wait_for_function(predicate, arg=arg, timeout=timeout * 1000)


def page_state(page: Any, what: str = "") -> Any:
    return page.evaluate(f"window.fmrifaceDashboard.{what}" if what else "window.fmrifaceDashboard")


def data_url_image(url: str) -> np.ndarray:
    """The pixels of a ``data:image/png;base64,...`` URL."""
    from PIL import Image

    assert url.startswith("data:image/"), url[:40]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))


# --- processes ----------------------------------------------------------------------------------------------


class DashboardProcess:
    """``python -m fmriface dashboard --sub SUB --port PORT --json ARGS``: ``start`` waits for its address."""

    def __init__(self, sub: str, *args: str, port: int = 0, workdir: Path | None = None) -> None:
        self.sub, self.args, self.port = sub, list(args), port
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None
        self.lines: queue.Queue[str] = queue.Queue()
        self.announced: list[str] = []
        self.url = self.base = ""
        self.stderr_path: Path | None = None

    def start(self, timeout: float = 30.0) -> DashboardProcess:
        argv = [sys.executable, "-m", "fmriface", "dashboard", "--sub", self.sub, "--port", str(self.port), "--json"]
        env = {**os.environ, "FMRIFACE_QUIET": "1", "PYTHONUNBUFFERED": "1"}
        env.pop("FMRIFACE_DASHBOARD_TOKEN", None)
        err = subprocess.DEVNULL
        if self.workdir is not None:
            self.workdir.mkdir(parents=True, exist_ok=True)
            self.stderr_path = self.workdir / f"dashboard-{time.monotonic_ns()}.log"
            err = open(self.stderr_path, "w")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(argv + self.args, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        if err is not subprocess.DEVNULL:
            err.close()
        threading.Thread(target=self._read, daemon=True).start()
        self.announced = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"the dashboard printed no address in {timeout} s; {self.log()}") from None
            if line is None:
                raise AssertionError(f"the dashboard exited with {self.proc.wait()}: {self.log()}")
            self.announced.append(line)
            m = re.match(r"fmriface dashboard: (http://\S+)", line)
            if m:
                self.url = m.group(1)
                self.port = int(re.search(r":(\d+)/", self.url).group(1))
                self.base = f"http://127.0.0.1:{self.port}"
                break
        while len(self.announced) < 4:  # the lines that follow the address
            try:
                line = self.lines.get(timeout=2)
            except queue.Empty:
                break
            if line is None:
                break
            self.announced.append(line)
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)  # type: ignore[arg-type]

    @property
    def token(self) -> str:
        m = re.search(r"\?token=(\S+)", self.url)
        return m.group(1) if m else ""

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-3000:] if self.stderr_path else ""

    def stop(self, timeout: float = 15.0) -> dict[str, Any]:
        """SIGTERM; the summary it printed."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError(f"the dashboard did not stop on SIGTERM within {timeout} s") from None
        rest = []
        while True:
            try:
                line = self.lines.get(timeout=2)
            except queue.Empty:
                break
            if line is None:
                break
            rest.append(line)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        for line in reversed(rest):
            if line.startswith("{"):
                return json.loads(line)
        raise AssertionError(f"no summary from the dashboard (exit {self.proc.returncode}): {rest} {self.log()}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()


def http(url: str, *, headers: dict[str, str] | None = None, timeout: float = 5.0) -> tuple[int, dict, bytes]:
    """GET without following redirects: (status, headers, body); of a stream, its first snapshot."""
    import http.client
    from urllib.parse import urlsplit

    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request("GET", u.path + (f"?{u.query}" if u.query else ""), headers=headers or {})
        resp = conn.getresponse()
        if not resp.getheader("Content-Type", "").startswith("text/event-stream"):
            return resp.status, dict(resp.getheaders()), resp.read()
        body = b""  # a stream: what it sends first (up to its first snapshot)
        while b"event: snapshot" not in body or not body.endswith(b"\n\n"):
            chunk = resp.read1(65536)
            if not chunk:
                break
            body += chunk
        return resp.status, dict(resp.getheaders()), body
    finally:
        conn.close()


# --- a bundle that decodes faces -----------------------------------------------------------------------------


@dataclass
class FaceBundle:
    """A synthetic bundle whose decoder is a PCA face space of procedural faces, and its stimulus folder."""

    sb: SynthBundle
    stimuli: Path


def make_face_bundle(folder: Path, size: int = 48, latent: int = 12, n_stimuli: int = 9) -> FaceBundle:
    """``make_bundle`` with eigenfaces of procedural faces as decoder and encoder, the stimuli's PCA codes as
    their latents, and the stimulus images written as ``stimuli/<stim_id>``: decoded frames look like faces."""
    import onnx

    from offline.faces.generate import render_faces
    from offline.faces.params import sample_params
    from offline.facespace.onnx_graphs import pca_graphs
    from offline.facespace.pca import fit_pca
    from service.bundle import write_manifest

    rng = np.random.default_rng(7)
    faces = render_faces(sample_params(n_stimuli + 60, rng), size)
    space = fit_pca(faces, latent)
    sb = make_bundle(folder / "bundle", n_voxels=80, latent_size=latent, image_size=size, n_stimuli=n_stimuli, tr=2.0)
    dec, enc = pca_graphs(space.mean_, space.components_, size)
    onnx.save_model(dec, str(sb.path / "decoder.onnx"))
    onnx.save_model(enc, str(sb.path / "encoder.onnx"))
    codes = space.encode(faces[:n_stimuli]).astype(np.float32)
    codes /= np.abs(codes).max()  # of the order of the latents the mapping gives
    with np.load(sb.path / "attributes.npz") as z:
        attrs = {k: z[k] for k in z.files}
    n_train = len(attrs["train_ids"])
    attrs.update(train_latents=codes[:n_train], test_latents=codes[n_train:])
    np.savez(sb.path / "attributes.npz", **attrs)
    manifest = json.loads((sb.path / "manifest.json").read_text())
    write_manifest(sb.path, {k: v for k, v in manifest.items() if k not in ("schema", "created", "files")})
    stimuli = folder / "stimuli"
    from PIL import Image

    for stim_id, face in zip(sb.stim_ids, faces[:n_stimuli]):
        (stimuli / stim_id).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(face).save(stimuli / stim_id)
    return FaceBundle(replace(sb, stim_latents=codes), stimuli)


# --- the service, the scanner, a display ----------------------------------------------------------------------


class Watcher(threading.Thread):
    """A subscriber that keeps every message and, as a display does, acks every frame (``flip``)."""

    def __init__(self, pub: str, pull: str, ack: bool = True) -> None:
        super().__init__(daemon=True, name="test-display")
        self.pub, self.pull, self.ack = pub, pull, ack
        self.messages: list[Any] = []
        self.stop_ = threading.Event()
        self.ready = threading.Event()
        self.lock = threading.Condition()  # guards messages; notified at each one, so waits need no polling

    def run(self) -> None:
        import zmq

        from service import protocol

        ctx = zmq.Context()
        sub = protocol.subscriber(ctx, self.pub, hwm=100000)
        push = protocol.pusher(ctx, self.pull) if self.ack else None
        n = 0
        try:
            while not self.stop_.is_set():
                try:
                    msg = protocol.recv(sub, 50, protocol.SERVICE_TOPICS)
                except protocol.ProtocolError:
                    continue
                if msg is None:
                    continue
                with self.lock:
                    self.messages.append(msg)
                    self.lock.notify_all()
                if msg.topic == "status":
                    self.ready.set()
                if msg.topic == "frame" and push is not None:
                    protocol.send(
                        push, "flip", protocol.flip_header(n, "frame", msg.header["seq"], time.time(), display="test")
                    )
                    n += 1
        finally:
            sub.close(linger=0)
            if push is not None:
                push.close(linger=0)
            ctx.term()

    def topic(self, name: str) -> list[Any]:
        with self.lock:
            return [m for m in self.messages if m.topic == name]

    def wait_for(self, predicate: Any, timeout: float, what: str) -> None:
        """Block until ``predicate()`` holds, woken by each message received (no polling)."""
        with self.lock:
            if not self.lock.wait_for(predicate, timeout):
                raise AssertionError(f"timed out waiting for {what}")

    def close(self) -> None:
        self.stop_.set()
        self.join(5)


class Session:
    """A watched folder, a runs folder and `fmriface serve` on a face bundle; ``replay`` writes volumes."""

    TR = 2.0

    def __init__(self, work: Path, fb: FaceBundle, n_volumes: int, trials: list[tuple[float, int]], **serve: Any):
        self.work, self.fb = work, fb
        self.watch, self.runs = work / "scanner", work / "runs"
        self.watch.mkdir(parents=True, exist_ok=True)
        self.pub, self.pull = free_address(), free_address()
        self.trials = trials
        self.data = np.moveaxis(make_run(fb.sb, trials, n_volumes, amplitude=40.0, seed=3), 0, -1)
        self.values = dict(
            bundle=fb.sb.path, watch=self.watch, runs=self.runs, run_id="session-01", pub=self.pub, pull=self.pull,
            hwm=1000, heartbeat=0.2, idle_timeout=0.0, startup_timeout=0.0, min_volumes=4, feedback_smooth=2,
            watcher={"pattern": "*.dcm,*.nii", "gap_timeout_s": 1.0},
        )  # fmt: skip
        self.values.update(serve)
        self.serve: ServeProcess | None = None
        self.starts = 0
        self.emulators: list[Any] = []

    def start_serve(self) -> ServeProcess:
        self.starts += 1
        self.serve = ServeProcess(self.values, self.work, name=f"serve{self.starts}").start()
        return self.serve

    def events(self) -> list[dict[str, Any]]:
        return [
            {"onset": onset, "duration": 1.0, "trial_type": "test_face", "stim_file": self.fb.sb.stim_ids[s]}
            for onset, s in self.trials
        ]

    def replay(self, start: int = 0, stop: int | None = None, speed: float = 8.0, **kw: Any) -> Any:
        from service.scanner.replay import ScannerEmulator

        data = self.data if stop is None else self.data[..., :stop]
        emu = ScannerEmulator(
            data=data, affine=self.fb.sb.affine, tr=self.TR, out_dir=self.watch, fmt="nifti", speed=speed,
            events=self.events() if start == 0 else None, event_address=self.pull if start == 0 else None,
            start_volume=start, **kw,
        )  # fmt: skip
        self.emulators.append(emu)
        return emu.start()

    def close(self) -> None:
        for emu in self.emulators:
            emu.stop()
        if self.serve is not None and self.serve.alive():
            self.serve.terminate(10)


def clean_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


# --- a fake service: messages no real one sends ----------------------------------------------------------------


class FakeService:
    """A PUB socket the dashboard subscribes to, sending whatever a test makes (well formed or not)."""

    def __init__(self, run_id: str = "fake", hwm: int = 100000) -> None:
        import zmq

        from service import protocol

        self.protocol = protocol
        self.ctx = zmq.Context()
        self.address = free_address()
        self.pub = protocol.publisher(self.ctx, self.address, hwm=hwm)
        self.run_id = run_id
        self.seq = protocol.SeqCounter()
        self.sent = 0
        self.rng = np.random.default_rng(0)

    def image(self, size: int = 16) -> np.ndarray:
        return self.rng.integers(0, 256, (size, size, 3), dtype=np.uint8)

    def send(self, topic: str, header: dict[str, Any], image: np.ndarray | None = None) -> dict[str, Any]:
        header = {"run_id": self.run_id, "seq": self.seq.next(topic), **header}
        payload = b""
        if image is not None:
            fields, payload = self.protocol.encode_image(image)
            header.update(fields)
        assert self.protocol.send(self.pub, topic, header, payload)
        self.sent += 1
        return header

    def frame(self, volume: int, image: np.ndarray | None = None, **fields: Any) -> dict[str, Any]:
        now = time.time()
        t = {"file_ready": now - 0.006, "read": now - 0.005, "dequeued": now - 0.004, "motion": now - 0.003}
        t.update(decoded=now - 0.001, sent=now)
        h = {
            "volume": volume,
            "acquisition": volume + 1 if isinstance(volume, int) else volume,
            "t": t,
            "motion": [0.0] * 6,
            "fd": 0.05,
            "tr": 2.0,
        }
        h.update({"feedback": {"projections": {}}, **fields})
        return self.send("frame", h, self.image() if image is None else image)

    def status(self, **fields: Any) -> dict[str, Any]:
        h = {"state": "running", "uptime_s": 1.0, "volumes": 0, "failed": 0, "last_volume": -1, "trials": 0}
        return self.send("status", {**h, **fields})

    def raw(self, frames: list[bytes]) -> None:
        import zmq

        self.pub.send_multipart(frames, flags=zmq.NOBLOCK)
        self.sent += 1

    def until(self, page: Any, predicate: str, timeout: float = 20.0) -> None:
        """Send heartbeats until ``predicate`` holds in the page (the subscription is up)."""
        deadline = time.monotonic() + timeout
        while True:
            self.status()
            try:
                page.wait_for_function(predicate, timeout=200)
                return
            except Exception:  # noqa: BLE001 - playwright's TimeoutError: send another heartbeat
                if time.monotonic() > deadline:
                    raise

    def close(self) -> None:
        self.pub.close(linger=0)
        self.ctx.term()
