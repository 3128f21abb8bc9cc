"""The real-time service: one worker taking volumes from the watcher's queue, through the pipeline, to ZeroMQ.

:class:`Service` checks everything it can before the scan starts (bundle, watched folder, free ports, events
file, target), builds the pipeline once (onnxruntime session warmed up), then runs one loop: take the next volume
(or intake event) with a short timeout, process it, drain the inbound events and flip acks, send the ``status``
heartbeat, stop on ``max_volumes``, the idle timeout, SIGINT/SIGTERM or :meth:`Service.stop`. The ``end``
message carries the run's summary; the records are closed and the manifest marked.

One process writes a run: :meth:`Service.start` takes the run's :class:`~service.live.runlog.RunLock` before it
builds anything, and holds it until the report is written. A stop by an error (records that cannot be written,
the watch folder gone, an exception) is :attr:`Service.error_`: the manifest says ``stopped`` with the reason, the
report says so, and ``fmriface serve`` exits non-zero.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from service.bundle import BundleError, sha256_file
from service.live.config import ServeConfig, preprocess_of
from service.live.decoder import LatentDecoder
from service.live.onnx_session import OnnxSessionError
from service.live.outputs import Output, Outputs
from service.live.pipeline import Pipeline
from service.live.policy import raise_errors
from service.live.publisher import Publisher
from service.live.runlog import RunLock, RunLog
from service.live.sham import control_condition
from service.live.startup import (
    StartupError,
    choose_run_id,
    config_record,
    default_run_id,
    files_of_ended_runs,
    limit_blas,
    read_target_image,
    setup_logging,
    startup_checks,
    versions,
)
from service.volume import IntakeEvent

__all__ = ["Service", "ServeConfig", "StartupError", "default_run_id", "setup_logging"]

log = logging.getLogger("service.live.serve")
#: Intake events that stand for a volume that will not be processed (recorded in volumes.jsonl).
_SKIPPED = ("incomplete", "corrupt", "mismatch", "gap", "duplicate", "late")


class Service:
    """The service on a watched folder (``source``: any object with start/stop/get(timeout); default the
    intake's :class:`service.intake.watcher.VolumeWatcher` on ``cfg.watch``).

    ``outputs`` are in-process outputs (:class:`service.live.outputs.Output`: an LSL outlet, a recorder) that get
    every message after the ZeroMQ publisher, with the same headers; they are closed with it.

    Attributes
    ----------
    bundle_ : Bundle
    pub_ : Publisher
        The ZeroMQ sockets: the primary output and the inbound events and flip acks.
    outputs_ : Outputs
        Where every message goes: ``pub_`` first, then ``outputs``.
    pipeline_ : Pipeline
    run_dir_ : Path
    summary_ : dict
        The summary sent in the ``end`` message.
    """

    def __init__(self, cfg: ServeConfig, source: Any = None, outputs: tuple[Output, ...] = ()) -> None:
        self.cfg = cfg
        self.source = source
        self._extra_outputs = tuple(outputs)
        self._stop = threading.Event()
        self.stop_reason = ""
        self.error_: str | None = None  # the stop reason, when the run stopped by an error
        self.summary_: dict[str, Any] = {}
        self._lock: RunLock | None = None
        self.series_ = ""  # which series intake follows and why (its "series" event)

    # --- start-up ---------------------------------------------------------------------------------------

    def start(self) -> Service:
        """Run the checks, build the decoder, open the records and bind the sockets."""
        cfg = self.cfg
        bundle, self._events = startup_checks(cfg)
        self.bundle_ = bundle
        self._blas = limit_blas(cfg.blas_threads)
        self.tr_ = cfg.tr or bundle.tr
        n_trials = sum(1 for ev in self._events if ev.get("trial_type") not in cfg.skip_trial_types)
        try:
            sham, control, condition = control_condition(
                cfg.sham_source,
                cfg.allocation,
                cfg.participant,
                cfg.blind_operator,
                self.tr_,
                bundle.latent_size,
                cfg.max_volumes,
                n_trials,
            )
        except ValueError as exc:
            raise StartupError(str(exc)) from None
        run_id = choose_run_id(cfg)
        lock = RunLock(Path(cfg.runs) / run_id)
        new_folder = not lock.path.parent.exists()
        self._lock = lock.acquire()  # one writer per run: a second serve stops here, naming the first
        try:
            return self._start(bundle, run_id, sham, control, condition)
        except BaseException:
            self._release_lock(remove_empty=new_folder)
            raise

    def _release_lock(self, remove_empty: bool = False) -> None:
        if self._lock is None:
            return
        self._lock.release()
        run_dir = self._lock.path.parent
        if remove_empty and [p.name for p in run_dir.iterdir()] == [RunLock.NAME]:  # a start that failed
            self._lock.path.unlink()
            run_dir.rmdir()
        self._lock = None

    def _start(self, bundle: Any, run_id: str, sham: Any, control: dict[str, Any], condition: str) -> Service:
        cfg = self.cfg
        try:
            decoder = LatentDecoder(bundle, device=cfg.device, threads=cfg.threads).build()
        except (BundleError, OnnxSessionError) as exc:  # a wrong or unloadable decoder.onnx: what to fix, no traceback
            raise StartupError(f"{exc}; rebuild the bundle with `fmriface fit` or point --bundle at another") from None
        self.runlog_ = RunLog(cfg.runs, run_id, bundle.latent_size, bundle.n_voxels, fsync=cfg.fsync)
        manifest = {
            "config": config_record(cfg),
            "bundle": {
                "path": str(Path(cfg.bundle).resolve()),
                "manifest_sha256": sha256_file(bundle.path / "manifest.json"),
            },
            "bundle_summary": {
                k: bundle.manifest.get(k) for k in ("latent_size", "image_shape", "n_voxels", "tr", "alignment")
            },
            "tr": self.tr_,
            "provider": decoder.provider_,
            "interpolation": preprocess_of(cfg, bundle.manifest).interpolation,
            # what this run computed its patterns with (the bundle's spec; docs/runs.md)
            "preprocess": preprocess_of(cfg, bundle.manifest).to_manifest(),
            "versions": versions(),
            "control": control,
        }
        rs = self.runlog_.open(manifest)
        self.run_dir_ = self.runlog_.dir
        curve = None
        if cfg.curve_secret is not None:
            from service.live.security import server_keys

            curve = server_keys(cfg.curve_secret)
        elif not all(_is_loopback(a) for a in (cfg.pub, cfg.pull) if a):
            log.warning(
                "binding %s / %s beyond this host without CurveZMQ: frames travel unencrypted", cfg.pub, cfg.pull
            )
        self.pub_ = Publisher(
            cfg.pub,
            cfg.pull,
            hwm=cfg.hwm,
            seq=rs.state.get("seq"),
            curve=curve,
            allowed=cfg.curve_allowed,
            limits=cfg.inbound,
        )
        self.outputs_ = Outputs(self.pub_, *self._extra_outputs)
        self.pipeline_ = Pipeline(
            bundle, cfg, self.outputs_, self.pub_, self.runlog_, decoder, self.tr_, sham, condition
        )
        self.pub_.gate.open_trials = lambda: self.pipeline_.trials_.pending  # onsets beyond the limit dropped
        if rs.resumed:
            self.pipeline_.restore(rs)
            if sham is not None:
                sham.resume(self.run_dir_)
        earlier, ended_runs = files_of_ended_runs(cfg, run_id)
        if earlier:
            self.pipeline_.earlier_files_ = earlier
            log.info(
                "%d files of the watch folder were decoded by ended run(s) %s: they are skipped, not decoded again",
                len(earlier),
                ", ".join(ended_runs),
            )
        self._open_archive()
        for ev in self._events:
            self.pipeline_.event(ev, record=False)
        if cfg.target_stim and not self.pipeline_.has_target():
            self.pipeline_.set_target(bundle.stimulus_latent(cfg.target_stim), {"stim_id": cfg.target_stim})
        elif cfg.target_image is not None and not self.pipeline_.has_target():
            latent = decoder.encode_image(read_target_image(cfg.target_image, bundle))
            self.pipeline_.set_target(latent, {"image": Path(cfg.target_image).name})
        if self.source is None:
            self.source = _make_watcher(cfg, bundle.reference.shape)
        log.info(
            "serving run %s (%s): bundle %s, %d voxels, latent %d, decoder on %s; publishing on %s, events on %s",
            run_id,
            "resumed" if rs.resumed else "new",
            bundle.path,
            bundle.n_voxels,
            bundle.latent_size,
            decoder.provider_,
            self.pub_.pub_address,  # the bound address (a port given as * is the one chosen)
            self.pub_.pull_address or "(none)",
        )
        return self

    def _open_archive(self) -> None:
        """The run's BIDS copy (``--bids-out``, else ``runs/<run_id>/bids/``), fed by the pipeline, written by a
        thread of its own; a resumed run goes on with its BIDS run (``service.live.bids_writer``)."""
        cfg = self.cfg
        self.archive_ = None
        if cfg.bids:
            from service.live.bids_writer import BidsArchive

            root = Path(cfg.bids_out) if cfg.bids_out is not None else self.run_dir_ / "bids"
            labels = {"subject": cfg.subject, "session": cfg.session, "task": cfg.task}
            self.archive_ = BidsArchive(root, self.run_dir_, self.tr_, labels).start()
            self.pipeline_.archive = self.archive_

    def _finish_archive(self) -> None:
        """Finish the BIDS copy from the closed records; a failure is logged (``fmriface bids-finish`` redoes it)."""
        if self.archive_ is None or self.runlog_.manifest.get("bids") is None:
            return
        from service.live.bids_writer import finish_bids

        try:
            finish_bids(self.run_dir_)
        except Exception as exc:  # noqa: BLE001 - the copy never fails the run; the records stand
            if raise_errors():
                raise
            log.error(
                "run %s: BIDS copy not finished (fmriface bids-finish %s): %s", self.runlog_.run_id, self.run_dir_, exc
            )

    # --- the loop -----------------------------------------------------------------------------------------

    def stop(self, reason: str = "stopped", error: bool = False) -> None:
        """Ask the loop to finish after the volume in flight (thread-safe); ``error``: the run stops because
        something failed (it is then :attr:`error_`, and the command exits non-zero)."""
        if not self.stop_reason:
            self.stop_reason = reason
            if error:
                self.error_ = reason
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
        try:
            self.source.start()
            while not self._stop.is_set():
                batch = self._take(cfg.max_volumes - taken if cfg.max_volumes else cfg.max_batch)
                now = time.monotonic()
                if batch:
                    taken += len(pipe.process_many(batch))
                    t_last_volume = now
                for msg in self.pub_.receive():
                    pipe.handle(msg)
                if pipe.runlog.failure is not None:  # a run that cannot be recorded ends, cleanly and saying why
                    self.stop(pipe.runlog.failure, error=True)
                    break
                if now >= next_beat:
                    self._heartbeat("running" if t_last_volume else "waiting", now - t0)
                    next_beat = now + cfg.heartbeat
                if cfg.max_volumes and taken >= cfg.max_volumes:
                    self.stop("max_volumes")
                elif cfg.idle_timeout and t_last_volume is not None and now - t_last_volume > cfg.idle_timeout:
                    self.stop("idle_timeout")
                elif cfg.startup_timeout and t_last_volume is None and now - t0 > cfg.startup_timeout:
                    self.stop("startup_timeout")
        except BaseException as exc:  # the end message and the records still go out, then it propagates
            self.stop(f"error: {type(exc).__name__}", error=not isinstance(exc, KeyboardInterrupt))
            raise
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
            if ev.kind in ("series", "ignored", "polling", "parse-process", "lost"):
                self.runlog_.intake(ev.kind, ev.reason, ev.path)
            if ev.kind == "series":
                self.series_ = ev.reason
            if ev.kind == "lost":
                self.stop(f"watch folder lost: {ev.reason}", error=True)

    def _heartbeat(self, state: str, uptime: float) -> None:
        pipe = self.pipeline_
        header = {
            "run_id": self.runlog_.run_id,
            "state": state,
            "uptime_s": round(uptime, 3),
            **pipe.status(),
            "malformed_inbound": self.pub_.malformed,
            "inbound_dropped": self.pub_.gate.counts(),
        }
        self.outputs_.status(header)
        pipe.save_state()

    def _drain_inbound(self, grace_s: float = 0.25, quiet_s: float = 0.06) -> None:
        """Record the flip acks and events still on their way: the display acks the last frames a few
        milliseconds after they were sent, so keep reading until ``quiet_s`` passes with nothing new (at most
        ``grace_s``) before the run's records close."""
        start = last = time.monotonic()
        while True:
            got = self.pub_.receive()
            for msg in got:
                self.pipeline_.handle(msg)
            now = time.monotonic()
            if got:
                last = now
            if self.pub_.pull is None or now - last >= quiet_s or now - start >= grace_s:
                return
            time.sleep(0.005)

    def _finish(self) -> None:
        reason = self.stop_reason or "stopped"
        self._drain_inbound()
        ended = self.error_ is None and reason in ("max_volumes", "idle_timeout", "startup_timeout", "end")
        self.summary_ = {"reason": reason, **self.pipeline_.summary(), "series": self.series_}
        self.summary_["inbound_dropped"] = self.pub_.gate.counts()
        self.outputs_.end({"run_id": self.runlog_.run_id, "reason": reason, "summary": self.summary_})
        self.pipeline_.save_state()  # guarded: skipped once the records have failed
        if self.pipeline_.sham is not None:  # the record keeps what a blinded end message leaves out
            self.runlog_.manifest.setdefault("control", {})["held"] = self.pipeline_.sham_counts()
        if getattr(self, "archive_", None) is not None:  # the BIDS copy's volumes written; where it is, recorded
            self.runlog_.manifest["bids"] = self.archive_.stop()
        try:
            self.runlog_.close(self.summary_, ended=ended)
        except OSError as exc:
            log.error("run %s: its records could not be closed: %s", self.runlog_.run_id, exc.strerror or exc)
            self.error_ = self.error_ or f"run records cannot be closed: {exc.strerror or exc}"
        self.outputs_.close()  # the publisher's linger: the end message still goes out to connected subscribers
        self._finish_archive()
        self._write_report()
        self._release_lock()
        if self.error_ is not None:
            log.error("run %s stopped by an error: %s", self.runlog_.run_id, self.error_)
        log.info("run %s %s: %s", self.runlog_.run_id, reason, json.dumps(self.summary_.get("latency_ms")))

    def _write_report(self) -> None:
        """Leave ``report.md`` (the run's CRED-nf items, :mod:`service.live.report`) in the run's folder.

        Written through a temporary file, so it is whole or absent, never empty; a report that cannot be built
        from the records is replaced by one that says how the run stopped and why the report is missing.
        """
        from service.live.report import format_reports, run_report

        head = f"# Run {self.runlog_.run_id}\n\n"
        try:
            text = head + format_reports([run_report(self.run_dir_)]) + "\n"
        except (OSError, ValueError, KeyError, TypeError) as exc:  # the records stand; say what is missing
            log.error("run %s: report.md could not be built from the records: %s", self.runlog_.run_id, exc)
            state = "ended" if self.error_ is None else "stopped by an error"
            text = head + (
                f"state: {state} ({self.stop_reason or 'stopped'})\n\n"
                f"The report could not be built from the run's records: {type(exc).__name__}: {exc}\n"
            )
        path, tmp = self.run_dir_ / "report.md", self.run_dir_ / "report.md.tmp"
        try:
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            log.error("run %s: report.md not written: %s", self.runlog_.run_id, exc.strerror or exc)


def _is_loopback(address: str) -> bool:
    host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    return address.startswith(("ipc://", "inproc://")) or host in ("localhost", "::1") or host.startswith("127.")


def _make_watcher(cfg: ServeConfig, reference_shape: tuple[int, ...]) -> Any:
    """The folder watcher; a slice-per-file volume whose headers do not give its slice count is complete when it
    has as many slices as the bundle's reference grid (a ``[watcher] slices_per_volume`` of its own wins)."""
    from dataclasses import replace

    from service.intake.watcher import VolumeWatcher, WatcherConfig

    slices = cfg.watcher.slices_per_volume or reference_shape[2]
    cap = cfg.watcher.max_file_bytes  # a limit of the config's own (0: none) wins over the grid's
    if cap == WatcherConfig.max_file_bytes:  # the largest file a volume of this grid can be, 16 MiB at least
        cap = max(16 << 20, 8 * int(np.prod(reference_shape)) * 2 + (4 << 20))
    watcher = replace(
        cfg.watcher, folder=str(cfg.watch), slices_per_volume=slices, reference_shape=tuple(reference_shape)
    )
    return VolumeWatcher(replace(watcher, max_file_bytes=cap))
