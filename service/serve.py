"""The real-time service: one worker taking volumes from the watcher's queue, through the pipeline, to ZeroMQ.

:class:`Service` checks everything it can before the scan starts (bundle, watched folder, free ports, events
file, target), builds the pipeline once (onnxruntime session warmed up), then runs one loop: take the next volume
(or intake event) with a short timeout, process it, drain the inbound events and flip acks, send the ``status``
heartbeat, stop on ``max_volumes``, the idle timeout, SIGINT/SIGTERM or :meth:`Service.stop`. The ``end``
message carries the run's summary; the records are closed and the manifest marked.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from service._service_config import ServeConfig
from service._service_trials import read_events_tsv
from service.bundle import Bundle, BundleError, load_bundle
from service.decoder import LatentDecoder
from service.pipeline import Pipeline
from service.publisher import Publisher, check_bindable
from service.runlog import RunLog
from service.volume import IntakeEvent

__all__ = ["Service", "ServeConfig", "StartupError", "default_run_id", "setup_logging"]

log = logging.getLogger("service.serve")
#: Intake events that stand for a volume that will not be processed (recorded in volumes.jsonl).
_SKIPPED = ("incomplete", "corrupt", "mismatch", "gap", "duplicate", "late")


class StartupError(ValueError):
    """A start-up check failed; the message says what to fix."""

    user_error = True


def default_run_id(watch: Path) -> str:
    """A run id stable for a watched folder: ``run-<hash of its absolute path>``.

    The folder's name is not used: scanner export folders are often named after the patient.
    """
    return "run-" + hashlib.sha256(str(watch.resolve()).encode()).hexdigest()[:10]


def _choose_run_id(cfg: ServeConfig) -> str:
    base = cfg.run_id or default_run_id(Path(cfg.watch))
    run_id, n = base, 1
    while True:
        manifest = Path(cfg.runs) / run_id / "manifest.json"
        if not manifest.exists():
            return run_id
        try:
            state = json.loads(manifest.read_text()).get("state")
        except (OSError, json.JSONDecodeError):
            state = None
        if state != "ended":
            return run_id  # resume it
        if cfg.run_id:
            raise StartupError(f"run {manifest.parent} already ended; pass another --run-id or --runs folder")
        n += 1
        run_id = f"{base}-{n}"


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {"time": record.created, "level": record.levelname, "logger": record.name, "msg": record.getMessage()}
        )


def setup_logging(json_log: bool = False, level: int = logging.INFO) -> None:
    """Log the service's messages on stderr, as text or one JSON object per line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if json_log else logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger("service")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for pkg in ("fmriface", "numpy", "scipy", "nibabel", "pyzmq", "onnxruntime"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "absent"
    return out


class Service:
    """The service on a watched folder (``source``: any object with start/stop/get(timeout); default the
    intake's :class:`service.watcher.VolumeWatcher` on ``cfg.watch``).

    Attributes
    ----------
    bundle_ : Bundle
    pipeline_ : Pipeline
    run_dir_ : Path
    summary_ : dict
        The summary sent in the ``end`` message.
    """

    def __init__(self, cfg: ServeConfig, source: Any = None) -> None:
        self.cfg = cfg
        self.source = source
        self._stop = threading.Event()
        self.stop_reason = ""
        self.summary_: dict[str, Any] = {}

    # --- start-up ---------------------------------------------------------------------------------------

    def check(self) -> Bundle:
        """The start-up checks; each failure says what to fix."""
        cfg = self.cfg
        if cfg.bundle is None:
            raise StartupError("no bundle given: pass --bundle DIR (a folder written by `fmriface fit`)")
        if cfg.watch is None:
            raise StartupError("no folder to watch: pass --watch DIR (the scanner's export folder)")
        watch = Path(cfg.watch)
        if not watch.is_dir():
            raise StartupError(f"watch folder {watch} does not exist or is not a folder; create it or fix --watch")
        if not os.access(watch, os.R_OK | os.X_OK):
            raise StartupError(f"watch folder {watch} is not readable by this user; fix its permissions")
        try:
            bundle = load_bundle(cfg.bundle, verify=cfg.verify_bundle)
        except BundleError as exc:
            raise StartupError(f"{exc}; rebuild the bundle with `fmriface fit` or point --bundle at another") from None
        runs = Path(cfg.runs)
        runs.mkdir(parents=True, exist_ok=True)
        if not os.access(runs, os.W_OK):
            raise StartupError(f"runs folder {runs} is not writable; fix --runs")
        import zmq

        ctx = zmq.Context()
        try:
            check_bindable(ctx, cfg.pub, "pub")
            if cfg.pull:
                check_bindable(ctx, cfg.pull, "pull")
        finally:
            ctx.term()
        if cfg.events is not None:
            self._events = read_events_tsv(cfg.events)
        if cfg.target_stim:
            try:
                bundle.stimulus_latent(cfg.target_stim)
            except BundleError as exc:
                raise StartupError(f"target_stim: {exc}; use a file name from the bundle's attributes.npz") from None
        if cfg.target_image is not None and not Path(cfg.target_image).is_file():
            raise StartupError(f"target image {cfg.target_image} does not exist")
        return bundle

    def _target_image(self, bundle: Bundle) -> Any:
        import numpy as np
        from PIL import Image

        h, w, _ = bundle.image_shape
        img = Image.open(self.cfg.target_image).convert("RGB").resize((w, h))
        return np.asarray(img, np.uint8)

    def start(self) -> Service:
        """Run the checks, build the decoder, open the records and bind the sockets."""
        cfg = self.cfg
        self._events: list[dict[str, Any]] = []
        self.bundle_ = bundle = self.check()
        self._blas = _limit_blas(cfg.blas_threads)
        self.tr_ = cfg.tr or bundle.tr
        decoder = LatentDecoder(bundle, device=cfg.device, threads=cfg.threads).build()
        run_id = _choose_run_id(cfg)
        self.runlog_ = RunLog(cfg.runs, run_id, bundle.latent_size, bundle.n_voxels, fsync=cfg.fsync)
        manifest = {
            "config": _cfg_dict(cfg),
            "bundle": {"path": str(Path(cfg.bundle).resolve()), "manifest_sha256": _sha(bundle.path / "manifest.json")},
            "bundle_summary": {k: bundle.manifest.get(k) for k in ("latent_size", "image_shape", "n_voxels", "tr")},
            "tr": self.tr_,
            "provider": decoder.provider_,
            "versions": _versions(),
        }
        rs = self.runlog_.open(manifest)
        self.run_dir_ = self.runlog_.dir
        self.pub_ = Publisher(cfg.pub, cfg.pull, hwm=cfg.hwm, seq=rs.state.get("seq"))
        self.pipeline_ = Pipeline(bundle, cfg, self.pub_, self.runlog_, decoder, self.tr_)
        if rs.resumed:
            self.pipeline_.restore(rs)
        for ev in self._events:
            self.pipeline_.trials_.event(ev, record=False)
        if cfg.target_stim and self.pipeline_.feedback_.target_ is None:
            self.pipeline_.trials_.set_target(bundle.stimulus_latent(cfg.target_stim), {"stim_id": cfg.target_stim})
        elif cfg.target_image is not None and self.pipeline_.feedback_.target_ is None:
            latent = decoder.encode_image(self._target_image(bundle))
            self.pipeline_.trials_.set_target(latent, {"image": Path(cfg.target_image).name})
        if self.source is None:
            self.source = _make_watcher(cfg)
        log.info(
            "serving run %s (%s): bundle %s, %d voxels, latent %d, decoder on %s; publishing on %s, events on %s",
            run_id,
            "resumed" if rs.resumed else "new",
            bundle.path,
            bundle.n_voxels,
            bundle.latent_size,
            decoder.provider_,
            cfg.pub,
            cfg.pull or "(none)",
        )
        return self

    # --- the loop -----------------------------------------------------------------------------------------

    def stop(self, reason: str = "stopped") -> None:
        """Ask the loop to finish after the volume in flight (thread-safe)."""
        self.stop_reason = self.stop_reason or reason
        self._stop.set()

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stop(signal.Signals(signum).name)

    def run(self) -> dict[str, Any]:
        """Serve until a stop condition; returns the run's summary (also sent as ``end``)."""
        cfg, pipe = self.cfg, self.pipeline_
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                handlers[sig] = signal.signal(sig, self._on_signal)
        t0 = time.monotonic()
        t_last_volume = None
        next_beat = t0
        taken = 0
        self.source.start()
        try:
            while not self._stop.is_set():
                batch = self._take(cfg.max_volumes - taken if cfg.max_volumes else cfg.max_batch)
                now = time.monotonic()
                if batch:
                    taken += len(pipe.process_many(batch))
                    t_last_volume = now
                for msg in self.pub_.receive():
                    pipe.handle(msg)
                if now >= next_beat:
                    self._heartbeat("running" if t_last_volume else "waiting", now - t0)
                    next_beat = now + cfg.heartbeat
                if cfg.max_volumes and taken >= cfg.max_volumes:
                    self.stop("max_volumes")
                elif cfg.idle_timeout and t_last_volume is not None and now - t_last_volume > cfg.idle_timeout:
                    self.stop("idle_timeout")
                elif cfg.startup_timeout and t_last_volume is None and now - t0 > cfg.startup_timeout:
                    self.stop("startup_timeout")
        finally:
            self.source.stop()
            for sig, old in handlers.items():
                signal.signal(sig, old)
            self._finish()
        return self.summary_

    def _take(self, limit: int) -> list[Any]:
        """The next volume (waiting up to 10 ms), plus whatever else is already queued, up to ``limit``."""
        batch: list[Any] = []
        item = self.source.get(timeout=0.01)
        while item is not None:
            if isinstance(item, IntakeEvent):
                self._intake_event(item)
            else:
                batch.append(item)
                # a burst never exceeds the send high-water mark, so a subscriber that keeps up loses nothing
                if len(batch) >= min(limit, self.cfg.max_batch, self.cfg.hwm):
                    break
            item = self.source.get(timeout=0)
        return batch

    def _intake_event(self, ev: IntakeEvent) -> None:
        if ev.kind in _SKIPPED:
            self.pipeline_.intake_problem(ev.kind, ev.reason, ev.path, ev.acquisition, ev.acquisitions)
        else:
            log.info("intake %s: %s", ev.kind, ev.reason)

    def _heartbeat(self, state: str, uptime: float) -> None:
        pipe = self.pipeline_
        header = {
            "run_id": self.runlog_.run_id,
            "state": state,
            "uptime_s": round(uptime, 3),
            "volumes": pipe.n_ok_,
            "failed": pipe.n_errors_,
            "last_volume": pipe.last_index_,
            "motion": [round(float(p), 4) for p in pipe.last_params_],
            "fd": round(pipe.last_fd_, 4),
            "trials": pipe.trials_.n_published,
            "trials_pending": pipe.trials_.windows_.pending,
            "target": pipe.feedback_.target_source_ or None,
            "malformed_inbound": self.pub_.malformed,
        }
        self.pub_.send("status", header)
        pipe.save_state()

    def _finish(self) -> None:
        reason = self.stop_reason or "stopped"
        for msg in self.pub_.receive():  # flip acks and events that arrived meanwhile
            self.pipeline_.handle(msg)
        ended = reason in ("max_volumes", "idle_timeout", "startup_timeout", "end")
        self.summary_ = {"reason": reason, **self.pipeline_.summary()}
        self.pub_.send("end", {"run_id": self.runlog_.run_id, "reason": reason, "summary": self.summary_})
        self.pipeline_.save_state()
        self.runlog_.close(self.summary_, ended=ended)
        time.sleep(0.05)  # let ZeroMQ hand the end message to connected subscribers before closing
        self.pub_.close()
        log.info("run %s %s: %s", self.runlog_.run_id, reason, json.dumps(self.summary_.get("latency_ms")))


def _limit_blas(threads: int) -> Any:
    """Limit numpy's BLAS thread pool for this process (threadpoolctl where installed)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        log.warning("threadpoolctl is not installed: set OPENBLAS_NUM_THREADS=%d for steady latency", threads)
        return None
    return threadpool_limits(limits=threads, user_api="blas")


def _make_watcher(cfg: ServeConfig) -> Any:
    from dataclasses import replace

    from service.watcher import VolumeWatcher

    return VolumeWatcher(replace(cfg.watcher, folder=str(cfg.watch)))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cfg_dict(cfg: ServeConfig) -> dict[str, Any]:
    from dataclasses import fields

    out = {}
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        if f.name == "watcher":
            v = {g.name: getattr(v, g.name) for g in fields(v) if g.name != "folder"}
        out[f.name] = str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v
    # the watched folder's path may name the patient (export folders often do): keep only a hash of it
    out["watch"] = None if cfg.watch is None else default_run_id(Path(cfg.watch)).replace("run-", "sha256:")
    return out
