"""The live part of ``fmriface demo``: serve + scanner emulator + headless display + the dashboard, on loopback."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fmriface.common import UsageError, free_address, write_toml
from fmriface.config import preset_or_file
from service.extras import missing_extra

try:
    import tomllib
except ImportError:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def choose_holdout(bids: Path, which: str) -> Path:
    """The bold file of the run replayed live: ``last-test`` (the last run with test faces) or a file name."""
    bolds = sorted(bids.glob("sub-*/**/func/*_bold.nii*"))
    if which != "last-test":
        hits = [b for b in bolds if b.name.startswith(which)]
        if not hits:
            raise UsageError(f"holdout_run {which!r} matches no bold file under {bids}")
        return hits[0]
    tests = [b for b in bolds if "test_face" in _events_path(b).read_text()] if bolds else []
    if not tests:
        raise UsageError(f"no run with test_face events under {bids}; is it a twin data set?")
    return tests[-1]


def _events_path(bold: Path) -> Path:
    return bold.with_name(bold.name.split("_bold.nii")[0] + "_events.tsv")


def read_events(bold: Path) -> list[dict[str, str]]:
    """The rows of the events.tsv beside a BIDS bold file, as dicts of the column values (strings)."""
    with open(_events_path(bold), newline="") as f:
        return [dict(r) for r in csv.DictReader(f, delimiter="\t")]


def bids_view_without(bids: Path, holdout: Path, view: Path) -> Path:
    """A BIDS tree of symbolic links to every file of ``bids`` except the held-out run's (for the fit)."""
    stem = holdout.name.split("_bold.nii")[0]
    if view.exists():
        shutil.rmtree(view)
    for src in bids.rglob("*"):
        if src.is_dir() or src.name.startswith(stem):
            continue
        dst = view / src.relative_to(bids)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(src.resolve())
    return view


def find_bundle(fit_dir: Path) -> Path:
    """The bundle folder inside a ``fmriface fit`` output (the folder holding manifest.json + decoder.onnx)."""
    for cand in [fit_dir, *sorted(fit_dir.glob("*/"))]:
        if (cand / "manifest.json").is_file() and (cand / "decoder.onnx").is_file():
            return cand
    raise UsageError(f"no bundle (manifest.json + decoder.onnx) in {fit_dir}")


def merged_toml(preset: Path, overrides: dict[str, Any], path: Path) -> Path:
    """A copy of a preset with ``overrides`` merged in (nested tables merge key by key)."""

    def merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        out = dict(a)
        for k, v in b.items():
            out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        return out

    with open(preset, "rb") as f:
        values = tomllib.load(f)
    if not overrides:
        path.write_bytes(preset.read_bytes())
        return path
    return write_toml(path, merge(values, overrides))


@dataclass
class LiveResult:
    """What the live run produced."""

    run_dir: Path
    watch_dir: Path
    frames_dir: Path | None
    n_volumes: int
    tr: float
    speed: float
    wall_s: float
    messages: dict[str, list[Any]] = field(default_factory=dict)
    faults: list[Any] = field(default_factory=list)
    display_note: str = ""
    serve_log: Path | None = None
    dashboard_url: str = ""


class _Collector(threading.Thread):
    """Subscribes to the service and keeps every frame/trial/end message (the demo's own record)."""

    def __init__(self, address: str) -> None:
        super().__init__(daemon=True, name="demo-collector")
        self.address = address
        self.messages: dict[str, list[Any]] = {"frame": [], "trial": [], "status": [], "end": []}
        self.ready = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        import zmq

        from service import protocol

        ctx = zmq.Context()
        try:
            sub = protocol.subscriber(ctx, self.address, hwm=100000)
            while not self.stop.is_set():
                try:
                    msg = protocol.recv(sub, 100, protocol.SERVICE_TOPICS)
                except protocol.ProtocolError:
                    continue
                if msg is None:
                    continue
                self.messages[msg.topic].append(msg)
                if msg.topic == "status":
                    self.ready.set()
                if msg.topic == "end":
                    break
            sub.close(linger=0)
        finally:
            ctx.term()


def run_live(cfg: Any, bundle: Path, holdout: Path, out: Path, say: Callable[[str], None]) -> LiveResult:
    """Serve the bundle on a watched folder while the emulator replays ``holdout``; returns what happened."""
    import nibabel as nib
    import numpy as np

    from service.scanner.replay import ScannerEmulator

    if out.exists():
        shutil.rmtree(out)
    watch, runs = out / "scanner", out / "runs"
    watch.mkdir(parents=True)
    img = nib.load(str(holdout))
    data = np.asarray(img.dataobj)
    zooms = img.header.get_zooms()
    tr = float(zooms[3]) if len(zooms) > 3 and zooms[3] > 0 else 2.0
    n = int(data.shape[3])
    pub, pull = free_address(), free_address()

    with open(preset_or_file(cfg.serve), "rb") as f:
        serve_values = tomllib.load(f)
    serve_values.update(
        bundle=str(bundle),
        watch=str(watch),
        runs=str(runs),
        run_id="demo",
        pub=pub,
        pull=pull,
        max_volumes=n,
        idle_timeout=max(10.0, 8 * tr / cfg.replay_speed),
        startup_timeout=120.0,
    )
    serve_cfg = write_toml(out / "serve.toml", serve_values)
    env = {**os.environ, "FMRIFACE_QUIET": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("FMRIFACE_RAISE", None)
    serve_log = out / "serve.log"
    collector = _Collector(pub)
    collector.start()
    say(f"starting the service: fmriface serve --config {serve_cfg}")
    with open(serve_log, "w") as log:
        serve = subprocess.Popen(
            [sys.executable, "-m", "fmriface", "serve", "--config", str(serve_cfg)], stdout=log, stderr=log, env=env
        )
    display = dashboard = None
    dashboard_url = ""
    try:
        t_wait = time.time()
        while not collector.ready.wait(0.2):
            if serve.poll() is not None:
                raise UsageError(f"the service exited with status {serve.returncode} at start-up; see {serve_log}")
            if time.time() - t_wait > 120:
                raise UsageError(f"the service sent no heartbeat within 120 s; see {serve_log}")
        dashboard, dashboard_url = _start_dashboard(out, pub, runs, _stimuli_of(holdout), env, say)
        display, frames_dir, note = _start_display(cfg, out, pub, pull, n, env, say)
        say(f"replaying {holdout.name}: {n} volumes as {cfg.replay_format}, x{cfg.replay_speed:g} (TR {tr:g} s)")
        emu = ScannerEmulator(
            data=data,
            affine=img.affine,
            tr=tr,
            out_dir=watch,
            fmt=cfg.replay_format,
            speed=cfg.replay_speed,
            events=read_events(holdout),
            event_address=pull,
            seed=cfg.seed,
        )
        t0 = time.time()
        with emu:
            while not emu.wait(1.0):
                say(f"live: {len(emu.written)}/{n} volumes written, {len(collector.messages['frame'])} frames received")
        rc = serve.wait(timeout=120)
        wall = time.time() - t0
        if rc != 0:
            raise UsageError(f"the service exited with status {rc}; see {serve_log}")
        collector.join(10)
        note = _finish_display(display, note, say)
        display = None
        _finish_dashboard(dashboard, out, runs, holdout, say)
        dashboard = None
    finally:
        collector.stop.set()
        for proc in (serve, display, dashboard):  # a failed run leaves no service, display or dashboard behind
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(10)
        if display is not None:
            display.log.close()
    run_dirs = sorted(p for p in runs.iterdir() if p.is_dir())
    if not run_dirs:
        raise UsageError(f"the service wrote no run record under {runs}; see {serve_log}")
    return LiveResult(
        run_dir=run_dirs[0],
        watch_dir=watch,
        frames_dir=frames_dir,
        n_volumes=n,
        tr=tr,
        speed=cfg.replay_speed,
        wall_s=wall,
        messages=collector.messages,
        faults=list(emu.injected),
        display_note=note,
        serve_log=serve_log,
        dashboard_url=dashboard_url,
    )


def _start_display(cfg, out: Path, pub: str, pull: str, n: int, env: dict, say) -> tuple[Any, Path | None, str]:
    if not cfg.display:
        return None, None, "display skipped (--no-display)"
    xvfb = shutil.which("xvfb-run")
    if not env.get("DISPLAY") and not xvfb:
        return None, None, "display skipped: no X display and no xvfb-run (apt-get install xvfb xauth)"
    frames = out / "display-frames"
    cmd = [
        sys.executable, "-m", "fmriface", "display", "--sub", pub, "--ack", pull, "--topic", "frame",
        "--mode", "operator", "--headless", "--save-frames", str(frames), "--max-frames", str(n), "--timeout", "600",
    ]  # fmt: skip
    if not env.get("DISPLAY"):
        cmd = [xvfb, "-a", "-s", "-screen 0 1024x768x24", *cmd]
    log = open(out / "display.log", "w")  # noqa: SIM115 - closed in _finish_display
    say("starting the headless display: " + " ".join(cmd[-16:]))
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env)
    proc.log = log  # type: ignore[attr-defined]
    # the window is up and subscribed once it has saved its placeholder; wait for that before the first volume
    t0 = time.time()
    while not (frames / "wait.png").is_file():
        if proc.poll() is not None:
            log.close()
            return None, None, f"display exited with status {proc.returncode} at start-up (see display.log)"
        if time.time() - t0 > 60:
            return proc, frames, "display showed no placeholder within 60 s; replay started anyway"
        time.sleep(0.1)
    time.sleep(0.5)  # ZeroMQ subscription propagation
    return proc, frames, ""


def _finish_display(proc: Any, note: str, say) -> str:
    if proc is None:
        return note
    try:
        rc = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.terminate()
        rc = proc.wait(10)
        note = "display did not exit after the end message; stopped"
    proc.log.close()
    if rc not in (0, None) and not note:
        note = f"display exited with status {rc} (see display.log)"
    say(note or "display finished")
    return note


def _stimuli_of(holdout: Path) -> Path | None:
    """The BIDS data set's ``stimuli/`` folder above a bold file (a trial's ``stim_file`` is a path inside it)."""
    return next((p / "stimuli" for p in holdout.parents if (p / "stimuli").is_dir()), None)


def _start_dashboard(out: Path, pub: str, runs: Path, stimuli: Path | None, env: dict, say) -> tuple[Any, str]:
    """``fmriface dashboard`` beside the replay (its own process, a free port); its address is printed."""
    import importlib.util

    if importlib.util.find_spec("aiohttp") is None:
        say(f"dashboard skipped: {missing_extra('aiohttp', 'the dashboard', 'dashboard')}")
        return None, ""
    log_path = out / "dashboard.log"
    cmd = [sys.executable, "-m", "fmriface", "dashboard", "--sub", pub, "--port", "0", "--runs", str(runs)]
    if stimuli is not None:
        cmd += ["--stimuli", str(stimuli)]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env)
    t0 = time.time()
    while time.time() - t0 < 30:
        text = log_path.read_text(errors="replace")
        for line in text.splitlines():
            if line.startswith("fmriface dashboard: http"):
                url = line.split(": ", 1)[1].strip()
                say(f"dashboard: open {url} in a browser to watch the run live (log: {log_path})")
                return proc, url
        if proc.poll() is not None:
            say(f"dashboard exited with status {proc.returncode} at start-up (see {log_path}); the demo goes on")
            return None, ""
        time.sleep(0.1)
    say(f"dashboard printed no address within 30 s (see {log_path}); the demo goes on")
    return proc, ""


def _finish_dashboard(proc: Any, out: Path, runs: Path, holdout: Path, say) -> None:
    """Stop the dashboard (it has shown the run's end) and say how to look at the run again."""
    if proc is None:
        return
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    again = f"fmriface dashboard --runs {runs}"
    stimuli = _stimuli_of(holdout)
    if stimuli is not None:
        again += f" --stimuli {stimuli}"
    say(f"dashboard stopped; to browse the run's records again: {again}")
