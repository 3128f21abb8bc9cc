"""The per-volume pipeline: motion correction -> mask -> QA -> online preprocessing -> decode -> publish -> record.

:class:`Pipeline` holds every piece of state that lives across volumes as a named attribute (the fitted
registration, the last motion estimate, the detrending state, the buffer of preprocessed volumes, the trial
windows, the neurofeedback target). :meth:`Pipeline.process_many` takes the volumes that arrived (one, or a
backlog); :meth:`Pipeline.handle` one inbound message. A volume that fails is logged, recorded in
``volumes.jsonl`` with its error and skipped; the run goes on (``FMRIFACE_RAISE=1`` re-raises instead, as the
tests set).

The QA (:class:`service.qa.QualityTracker`, docs/qa.md) refuses an all-zero or constant volume before motion
correction (an error, never decoded) and judges every other one after it. A censored volume is motion-corrected,
recorded (``qa`` in its record and frame header) and published, but enters neither the online detrending nor a
trial's estimate, and its frame is *held*: its latent is decoded from the frame input of the last uncensored
volume (zeros before the first), so the display and the feedback keep what they last showed.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service.bundle import Bundle
from service.live.config import ServeConfig, preprocess_of
from service.live.decoder import LatentDecoder
from service.live.feedback import Feedback
from service.live.history import VolumeHistory
from service.live.outputs import Outputs
from service.live.policy import VolumeError, raise_errors
from service.live.publisher import Publisher
from service.live.runlog import GuardedRunLog, ResumeState, RunLog
from service.live.sham import ShamFeedback
from service.live.trials import TrialBook
from service.motion import MotionTracker, RigidRegistration, SessionRegistrationError, TrackingError
from service.qa.tracker import QualityTracker, RefusedVolumeError, check_volume

__all__ = ["Pipeline", "StagedVolume", "VolumeError"]

log = logging.getLogger("service.live.pipeline")
#: Stage timestamps of a frame header's ``t``, in order after ``file_ready``.
_STAGES = ("read", "dequeued", "motion", "decoded", "sent")


@dataclass(slots=True)
class StagedVolume:
    """A volume between motion correction and its frame: what decoding and sending it needs."""

    vol: Any
    rec: dict[str, Any]
    t: dict[str, float]
    x: np.ndarray
    params: np.ndarray
    frame_x: np.ndarray
    #: ``time.time() - time.perf_counter()`` when it was dequeued: stage times on the wall clock
    clock_offset: float


class Pipeline:
    """Everything between a read volume and its published, recorded frame.

    Parameters
    ----------
    bundle : Bundle
    cfg : ServeConfig
    outputs : Outputs
        Where frames and trials go: the ZeroMQ publisher first, numbering them (:mod:`service.live.outputs`).
    inbound : Publisher
        The side that receives events and flip acks; it counts those :meth:`handle` cannot use.
    runlog : RunLog
    decoder : LatentDecoder
        Already built (session warmed up).
    tr : float
        Repetition time used for trial windows and ``stim_time``.
    sham : ShamFeedback, optional
        A sham run: each frame and trial shows the source run's feedback, latent and face in place of this run's
        (which are still computed and recorded: ``feedback.jsonl``); see :mod:`service.live.sham`.
    condition : str
        What ``status`` messages say of the run: ``live``, ``sham`` or ``blinded``.
    """

    def __init__(
        self,
        bundle: Bundle,
        cfg: ServeConfig,
        outputs: Outputs,
        inbound: Publisher,
        runlog: RunLog,
        decoder: LatentDecoder,
        tr: float,
        sham: ShamFeedback | None = None,
        condition: str = "live",
    ) -> None:
        self.bundle, self.cfg, self.outputs, self.decoder, self.tr = bundle, cfg, outputs, decoder, tr
        self.inbound = inbound
        self.sham, self.condition = sham, condition
        # records never stop the live path: a write that fails ends the run cleanly (``runlog.failure``)
        self.runlog = runlog if isinstance(runlog, GuardedRunLog) else GuardedRunLog(runlog)
        # registration samples the whole brain (auto mask); resampling takes the bundle's mask only (fast path)
        # what the fit did and the run repeats: the bundle's spec (startup_checks refused any other)
        self.spec = preprocess_of(cfg, bundle.manifest)
        self.interpolation = self.spec.interpolation
        # the run's motion: on the bundle's grid, or on a later session's registered to it (docs/motion.md)
        self.tracker_ = MotionTracker(interpolation=self.interpolation).fit(bundle.reference, bundle.affine)
        self.online_ = self.spec.online_preprocessor(bundle.n_voxels, min_volumes=cfg.min_volumes)
        # by volume index: motion-corrected mask voxels, motion, preprocessed voxels, and which volumes are in
        self.history = VolumeHistory(bundle.n_voxels)
        # the per-volume QA: its absolute check compares the global signal with the reference's mean in the mask
        self.qa_ = QualityTracker(cfg.qa, reference_mean=float(bundle.reference[bundle.mask].mean(dtype=np.float64)))
        self._maps_at = 0  # QA volumes judged when the QA maps were last published
        self.n_ok_ = self.n_errors_ = self.n_duplicates_ = self.n_discarded_ = 0
        self.done_files_: set[tuple[str, str]] = set()
        self.earlier_files_: set[tuple[str, str]] = set()  # decoded by an ended run of this folder: skipped
        self.n_earlier_ = 0
        self.latency_: list[float] = []
        self.stage_ms_: dict[str, list[float]] = {k: [] for k in _STAGES}
        self.sent_frames_: OrderedDict[tuple[str, int], tuple[int, float, float]] = OrderedDict()
        self.flips_: list[float] = []
        center = bundle.stimulus_latents.mean(0) if len(bundle.stimulus_latents) else np.zeros(bundle.latent_size)
        # the feedback signal, chosen by name (service.live.feedback_plugins): built in, or a plugin in isolation
        self.feedback_ = Feedback(
            bundle.attribute_names,
            bundle.attribute_directions,
            center,
            cfg.feedback_smooth,
            signal=cfg.feedback,
            options=cfg.feedback_options,
            budget_s=cfg.feedback_budget_ms / 1000.0,
            stimulus_ids=bundle.stimulus_ids,
            stimulus_latents=bundle.stimulus_latents,
        )
        self.trials_ = TrialBook(
            tr,
            cfg,
            decoder,
            self.history,
            self.online_,
            self.feedback_,
            self.runlog,
            outputs,
            self.save_state,
            sham=sham,
            window=self.spec,  # the window, or an LSS bundle's lag and settings (service.lss)
        )
        self._target_saved: tuple[Any, str] = (object(), "")  # (the target array last encoded, its JSON)
        self._tr_checked = False
        self._latent = np.zeros(bundle.latent_size, np.float32)
        #: the run's BIDS copy (:class:`service.live.bids_writer.BidsArchive`), handed each volume as taken; or None
        self.archive: Any = None

    @property
    def reg_(self) -> RigidRegistration:
        """The registration fitted on the bundle's reference (the tracker's)."""
        return self.tracker_.registration_

    @property
    def session_(self) -> dict[str, Any] | None:
        """Another session's registration (offset, residual, time), None on the bundle's grid."""
        return self.tracker_.session_

    @property
    def last_params_(self) -> np.ndarray:
        """The last volume's motion within the session (mm, degrees)."""
        return self.tracker_.motion_

    @property
    def last_fd_(self) -> float:
        """The last volume's framewise displacement (mm), from the volume before it (a discarded one counts)."""
        return self.tracker_.fd_

    # --- per volume -----------------------------------------------------------------------------------

    @staticmethod
    def _file_key(vol: Any) -> tuple[str, str]:
        # the file name only: folders of a scanner export are often named after the patient
        return Path(vol.path).name, str(vol.sha256)

    def process_many(self, vols: list[Any]) -> list[dict[str, Any]]:
        """Process volumes in order; with several (a backlog), mapping and decoder run once for all of them.

        Motion correction and detrending stay per volume (each needs the previous one's state); only the
        stateless mapping and ``decoder.onnx`` are batched, so a backlog drains faster while a single volume
        takes the shortest path. Returns the records (files already processed before a restart are skipped).
        """
        staged: list[StagedVolume] = []
        out: list[dict[str, Any]] = []
        taken: list[Any] = []  # every volume taken, for the BIDS copy once the frames are out
        for vol in vols:
            w0, p0 = time.time(), time.perf_counter()
            key = self._file_key(vol)
            if key in self.earlier_files_:
                self.n_earlier_ += 1
                continue
            if key in self.done_files_:
                self.n_duplicates_ += 1
                continue
            # file_ready: the file's last write; seen: the watcher noticed it; read: it was read; dequeued: taken
            t = {
                "file_ready": float(getattr(vol, "t_written", 0.0) or getattr(vol, "t_seen", vol.t_ready)),
                "seen": float(getattr(vol, "t_seen", vol.t_ready)),
                "read": float(vol.t_ready),
                "dequeued": w0,
            }
            rec: dict[str, Any] = {"volume": int(vol.index), "acquisition": int(vol.acquisition), "file": key[0]}
            rec.update(sha256=key[1], t=t)
            out.append(rec)
            taken.append(vol)
            if not self._tr_checked:  # the first volume of this process, a resumed run's too
                self._check_tr(vol)
            try:
                self._refuse(vol)
                x, params = self._correct(vol, t, w0, p0)
                rec.update(motion=[float(p) for p in params], fd=round(self.last_fd_, 5))  # full precision: resume
                if int(vol.index) < self.cfg.discard:  # a dummy volume: its motion tracked, nothing else
                    self._discard(rec)
                    self.done_files_.add(key)
                    continue
                frame_x = self._preprocess(vol, x, params, rec)
                frame_x = frame_x if len(vols) == 1 else frame_x.copy()
                staged.append(StagedVolume(vol, rec, t, x, params, frame_x, w0 - p0))
            except Exception as exc:  # noqa: BLE001 - the error policy: record, log, go on
                if raise_errors():
                    raise
                self._record_error(rec, exc)
            self.done_files_.add(key)
        if staged:
            self._decode_and_send(staged)
        if self.archive is not None:  # as received, to the BIDS copy's thread once the frames are out: its writing
            for vol in taken:  # (600 KB a volume at 64x64x36) then overlaps the wait for the next volume
                self.archive.volume(vol)
        self.qa_.flush()  # the QA's running estimates take the volumes after their frames are out (docs/qa.md)
        self._publish_maps()
        return out

    def _refuse(self, vol: Any) -> None:
        """An all-zero or constant volume is refused before motion correction (recorded as an error)."""
        try:
            check_volume(vol.data)
        except RefusedVolumeError as exc:
            raise VolumeError(str(exc)) from None

    def _preprocess(self, vol: Any, x: np.ndarray, params: np.ndarray, rec: dict[str, Any]) -> np.ndarray:
        """QA, online preprocessing, history and trials of one motion-corrected volume; its frame input.

        A censored volume is kept out of the online fit (:meth:`OnlinePreprocessor.skip`) and of every trial
        (:meth:`VolumeHistory.valid_among`); its frame input is the last uncensored volume's (held).
        """
        index = int(vol.index)
        qa = self.qa_.update(vol.data, x, self.last_fd_)
        rec["qa"] = qa
        if qa["censored"]:
            self.online_.skip(index)
            self.history.store(index, x, params, None, censored=True)
            log.warning(
                "volume %s censored by the QA (%s): its frame holds the last uncensored latent",
                index,
                ", ".join(qa["reasons"]),
            )
        else:
            self.history.store(index, x, params, self.online_.update(x, index, params))
        self.trials_.advance(index, publish=False)  # estimated under this volume's fit
        held = self.history.last_uncensored
        if held < 0:  # nothing uncensored yet: a zero input
            return np.zeros(self.bundle.n_voxels, np.float32)
        return self.history.average(held, self.cfg.frame_average)

    def _publish_maps(self) -> None:
        """Every ``qa.maps_every`` volumes judged: the QA maps (mean EPI with the mask, tSNR) on topic ``qa``."""
        every = self.cfg.qa.maps_every
        if not every or self.qa_.n_ // every <= self._maps_at // every:
            return
        self._maps_at = self.qa_.n_
        maps = self.qa_.maps()
        if maps is None:
            return
        try:
            from service.qa.maps import choose_slices, render_maps

            mean, tsnr = maps
            mask = self.bundle.mask if self.bundle.mask.shape == mean.shape else None  # another session's grid
            slices = choose_slices(mask, mean.shape)
            image = render_maps(mean, tsnr, mask, slices)
            header = {
                "run_id": self.runlog.run_id,
                "volume": self.history.last_index,
                "tsnr_mean": self.qa_.tsnr_mean(),
                "kind": "maps",
                "slices": slices,
                "shape": list(image.shape),
                "dtype": "uint8",
            }
            self.outputs.qa(header, image)
        except Exception as exc:  # noqa: BLE001 - the maps must never cost a volume
            if raise_errors():
                raise
            log.error("QA maps not published: %s", exc)

    def _check_tr(self, vol: Any) -> None:
        self._tr_checked = True
        tr = getattr(vol, "tr", None)
        if tr and abs(float(tr) - self.tr) > 0.01 * self.tr:
            log.warning(
                "the volumes' header says TR %.3f s but trial windows and stim_time use %.3f s (the bundle's or "
                "--tr); pass --tr %.3f if the header is right",
                float(tr),
                self.tr,
                float(tr),
            )

    def _decode_and_send(self, staged: list[StagedVolume]) -> None:
        sham = self.sham
        try:
            if len(staged) == 1:
                latents = self.decoder.latent(staged[0].frame_x, out=self._latent)[None]
            else:
                latents = self.decoder.latents(np.stack([s.frame_x for s in staged]))
            # a sham run shows the source's latent (decoded here, at a live frame's cost) in place of its own
            shown = [sham.frame(int(s.vol.index)) for s in staged] if sham is not None else None
            faces = latents if shown is None else np.stack([f[0] for f in shown])
            images = self.decoder.decode(faces[0])[None] if len(staged) == 1 else self.decoder.decode_batch(faces)
        except Exception as exc:  # noqa: BLE001
            if raise_errors():
                raise
            for s in staged:
                self._record_error(s.rec, exc)
            return
        for k, (s, latent, image) in enumerate(zip(staged, latents, images)):
            vol, rec, t = s.vol, s.rec, s.t
            t["decoded"] = s.clock_offset + time.perf_counter()
            recorded = False
            try:
                real = self.feedback_.frame(latent)
                face_latent, feedback = (latent, real) if shown is None else shown[k][:2]
                header = self._frame_header(vol, t, s.params, face_latent, feedback)
                header["qa"] = rec.get("qa")
                # the record first, then the frame: no frame goes out that the records do not hold
                rec.update(status="ok", frame_seq=self.outputs.seq.peek("frame"))
                if "value" in header["feedback"]:
                    rec["feedback"] = header["feedback"]["value"]
                if shown is not None and "value" in real:
                    rec["feedback_real"] = real["value"]
                t["sent"] = time.time()  # one stamp for the record and the frame (the publisher keeps it)
                if self.runlog.volume(rec, s.x, latent) is None:  # the records failed: the run ends, unpublished
                    self.n_errors_ += 1
                    continue
                recorded = True
                seq = self.outputs.frame(header, image)
                line = {"topic": "frame", "volume": rec["volume"], "seq": seq, "latent_row": rec.get("latent_row")}
                line["shown"] = header["feedback"]
                if shown is not None:
                    line.update(real=real, source=shown[k][2])
                self.runlog.feedback(line)
            except Exception as exc:  # noqa: BLE001
                if raise_errors():
                    raise
                if recorded:  # its line is written: the error is logged and counted, not recorded twice
                    self.n_errors_ += 1
                    log.error("volume %s (%s): recorded, but its frame failed: %s", rec["volume"], rec["file"], exc)
                else:
                    self._record_error(rec, exc)
                continue
            self._account(rec, t)
        self.trials_.flush()

    def _correct(self, vol: Any, t: dict[str, float], w0: float, p0: float) -> tuple[np.ndarray, np.ndarray]:
        """Motion-correct one volume: ``(mask voxels, motion)``; the motion is within the session.

        The tracker (:class:`~service.motion.MotionTracker`) keeps the rule: on the bundle's grid the volume is
        tracked against the reference as always. On another grid (a later session's slab), the first such volume
        is registered to the reference with a wide capture (timed apart as ``t["session"]``); from then on every
        volume of that grid is tracked from the composed transform and the bundle's voxels are sampled from the
        live grid through it, one interpolation. The motion reported, recorded and regressed is then the
        within-session motion (the session offset taken out); a volume on a third grid is refused.
        """
        try:
            if self.tracker_.admit(vol.data.shape, vol.affine) == "new":
                self._register_session(vol, t)
            # warm start from the previous volume; the volume is copied into the sampler once
            params, x = self.tracker_.track(vol, self.bundle.mask, finite=True)
        except TrackingError as exc:
            raise VolumeError(str(exc)) from None
        t["motion"] = w0 + time.perf_counter() - p0
        return np.asarray(x, np.float32), params

    def _register_session(self, vol: Any, t: dict[str, float]) -> None:
        start = time.perf_counter()
        try:
            result = self.tracker_.register(vol.data, vol.affine)
        except SessionRegistrationError as exc:
            raise VolumeError(
                f"a volume on another grid (shape {vol.data.shape}) could not be registered: {exc}"
            ) from None
        self.set_session(result.as_record(), (tuple(vol.data.shape), np.asarray(vol.affine, dtype=np.float64)))
        t["session"] = time.perf_counter() - start
        log.info(
            "session registration: volume %s on grid %s, offset %s (mm, deg), residual %.3f, %.0f%% overlap, %.0f ms",
            vol.index,
            "x".join(map(str, vol.data.shape)),
            self.session_["offset"],
            result.cost,
            100 * result.overlap,
            1000 * result.seconds,
        )

    def set_session(self, record: dict[str, Any], grid: tuple[tuple[int, ...], np.ndarray]) -> None:
        """Take a session registration (``record["offset"]``: reference -> session) and its live grid; the next
        volume is tracked from the offset. Recorded in ``session.json`` (a resumed run reads it back)."""
        self.tracker_.set_session(record["offset"], grid, record)
        self.runlog.save_session(
            {**self.session_, "grid": {"shape": list(grid[0]), "affine": np.asarray(grid[1]).tolist()}}
        )

    def _frame_header(
        self, vol: Any, t: dict[str, float], params: np.ndarray, latent: np.ndarray, feedback: dict[str, Any]
    ) -> dict[str, Any]:
        h, w, c = self.bundle.image_shape
        header: dict[str, Any] = {
            "run_id": self.runlog.run_id,
            "volume": int(vol.index),
            "acquisition": int(vol.acquisition),
            "t": t,
            "motion": [round(float(p), 5) for p in params],
            "fd": round(self.last_fd_, 5),
            "tr": self.tr,
            "stim_time": round(int(vol.index) * self.tr - self.cfg.hrf_lag, 4),
            "ready": self.online_.ready,
            "feedback": feedback,
            "shape": [h, w, c],
            "dtype": "uint8",
        }
        if self.bundle.latent_size <= self.cfg.latent_in_header:
            header["latent"] = [round(float(v), 5) for v in latent]
        return header

    def _account(self, rec: dict[str, Any], t: dict[str, float]) -> None:
        self.n_ok_ += 1
        self.latency_.append(t["sent"] - t["file_ready"])
        prev = t["file_ready"]
        for stage in _STAGES:
            self.stage_ms_[stage].append(1000.0 * (t[stage] - prev))
            prev = t[stage]
        self.sent_frames_[("frame", rec["frame_seq"])] = (rec["volume"], t["file_ready"], t["sent"])
        while len(self.sent_frames_) > 4096:
            self.sent_frames_.popitem(last=False)

    def _discard(self, rec: dict[str, Any]) -> None:
        self.n_discarded_ += 1
        rec.update(status="discarded", reason=f"one of the first {self.cfg.discard} (discard): dummy volumes")
        self.runlog.volume(rec, None, None)

    def _record_error(self, rec: dict[str, Any], exc: BaseException) -> None:
        self.n_errors_ += 1
        rec.update(status="error", error=f"{type(exc).__name__}: {exc}")
        log.error("volume %s (%s) skipped: %s", rec.get("volume"), rec.get("file"), rec["error"])
        self.runlog.volume(rec, None, None)

    def intake_problem(
        self, kind: str, reason: str, path: Any = None, acquisition: int | None = None, acquisitions: Any = ()
    ) -> None:
        """Record a problem the watcher reported (incomplete, corrupt, gap, duplicate) as a skipped volume."""
        rec: dict[str, Any] = {"volume": None, "acquisition": acquisition, "status": "skipped"}
        if acquisitions:
            rec["acquisitions"] = [int(a) for a in acquisitions]
        rec["error"] = f"{kind}: {reason}"
        if path is not None:
            rec["file"] = Path(path).name
        rec["t"] = {"read": time.time()}
        self.n_errors_ += 1
        log.warning("intake: %s%s", f"{rec['file']}: " if rec.get("file") else "", rec["error"])
        self.runlog.volume(rec, None, None)

    # --- inbound messages -------------------------------------------------------------------------------

    def handle(self, msg: Any) -> None:
        """An ``event`` or ``flip`` from the experiment or a display; a bad one is logged and counted."""
        try:
            if msg.topic == "flip":
                self._flip(msg.header)
            else:
                if self.archive is not None:  # a trigger may name the subject, session and run
                    self.archive.event(msg.header)
                self.trials_.event(msg.header, msg.payload, record=True)
        except Exception as exc:  # noqa: BLE001 - external input: counted and logged, never raised
            self.inbound.count_malformed()
            gate = getattr(self.inbound, "gate", None)  # the publisher's: one line per kind per interval
            if gate is None:
                log.warning("ignored an inbound %s message: %s", msg.topic, exc)
            else:
                kind = f"ignored {msg.topic}: {type(exc).__name__}"
                gate.lines.log(logging.WARNING, kind, "ignored an inbound %s message: %s", msg.topic, exc)

    def _flip(self, h: dict[str, Any]) -> None:
        topic, seq, flip_time = str(h.get("shown_topic", "frame")), int(h["shown_seq"]), float(h["flip_time"])
        rec: dict[str, Any] = {"shown_topic": topic, "shown_seq": seq, "flip_time": flip_time, "received": time.time()}
        sent = self.sent_frames_.get((topic, seq))
        if sent is not None:
            vol, ready, t_sent = sent
            rec.update(volume=vol, file_ready=ready, sent=t_sent, e2e_s=round(flip_time - ready, 6))
            self.flips_.append(flip_time - ready)
        self.runlog.flip(rec)

    # --- state, resume and summary -----------------------------------------------------------------------------

    def set_target(self, latent: np.ndarray, source: dict[str, Any]) -> None:
        """Set the neurofeedback target (a latent) and save it with the run's state."""
        self.trials_.set_target(latent, source)

    def has_target(self) -> bool:
        """Whether a neurofeedback target is set (a resumed run keeps its own)."""
        return self.feedback_.target_ is not None

    def event(self, header: dict[str, Any], payload: bytes = b"", record: bool = True) -> None:
        """Apply one event header (onset, target, clear_target, trigger); recorded when ``record``."""
        self.trials_.event(header, payload, record=record)

    def status(self) -> dict[str, Any]:
        """The run's state for the heartbeat: counts, the last volume and motion, trials, the target."""
        return {
            "volumes": self.n_ok_,
            "failed": self.n_errors_,
            "discarded": self.n_discarded_,
            "last_volume": self.history.last_index,
            "motion": [round(float(p), 4) for p in self.last_params_],
            "fd": round(self.last_fd_, 4),
            "trials": self.trials_.n_published,
            "trials_pending": self.trials_.pending,
            "target": self.feedback_.target_source_ or None,
            "session": self.session_,
            "condition": self.condition,
            "qa": self.qa_.summary(),
        }

    def save_state(self) -> None:
        """Sequence counters and neurofeedback target: what a restart needs beyond the records.

        The heartbeat saves them every second on the worker thread; the target (a 1024-D latent takes about 1 ms
        to encode) is encoded only when it changes.
        """
        fb = self.feedback_
        if self._target_saved[0] is not fb.target_:
            target = None if fb.target_ is None else {"source": fb.target_source_, "latent": fb.target_.tolist()}
            self._target_saved = (fb.target_, json.dumps(target))
        self.runlog.save_state(
            {"seq": self.outputs.seq.state(), "saved": time.time()}, target_json=self._target_saved[1]
        )

    def restore(self, rs: ResumeState) -> None:
        """Rebuild the state of a resumed run from its records (no message is published)."""
        if rs.session:
            grid = rs.session["grid"]
            self.set_session(rs.session, (tuple(grid["shape"]), np.asarray(grid["affine"], dtype=np.float64)))
        voxels = rs.voxels if rs.voxels is not None else np.zeros((0, self.bundle.n_voxels), np.float32)
        for rec in rs.volumes:
            if rec.get("file") and rec.get("sha256"):
                self.done_files_.add((rec["file"], rec["sha256"]))
            if rec.get("status") == "discarded":
                self.n_discarded_ += 1
                if rec.get("motion"):
                    self.tracker_.restore(rec["motion"], settle=False)
                continue
            if rec.get("status") != "ok":
                self.n_errors_ += 1
                continue
            params = np.asarray(rec["motion"], np.float64)
            x = voxels[rec["voxel_row"]].astype(np.float32)
            # the QA's voxel estimates replayed with the recorded decisions (the slices and maps start again)
            censored = bool((rec.get("qa") or {}).get("censored"))
            self.qa_.update(None, x, rec.get("fd"), censored=censored)
            if censored:
                self.online_.skip(int(rec["volume"]))
                self.history.store(int(rec["volume"]), x, params, None, censored=True)
            else:
                z = self.online_.update(x, int(rec["volume"]), params)
                self.history.store(int(rec["volume"]), x, params, z)
            self.tracker_.restore(params)
            self.n_ok_ += 1
        self.trials_.restore(rs)
        # state.json is saved about once a second, so after a crash its counters can lag the records: the
        # records (flushed per message) say which numbers were already published
        frame_seqs = [int(r["frame_seq"]) for r in rs.volumes if r.get("frame_seq") is not None]
        trial_seqs = [int(t["seq"]) for t in rs.trials if str(t.get("seq", "")).isdigit()]
        self.outputs.seq.advance_to("frame", max(frame_seqs, default=-1) + 1)
        self.outputs.seq.advance_to("trial", max(trial_seqs, default=-1) + 1)
        log.info(
            "resumed run %s: %d volumes, %d trials already recorded", self.runlog.run_id, self.n_ok_, len(rs.trials)
        )

    def sham_counts(self) -> dict[str, int]:
        """Frames and trials of a sham run shown out of place (by the held rule of :mod:`service.live.sham`)."""
        return {"held_frames": self.sham.held_frames, "held_trials": self.sham.held_trials}

    def summary(self) -> dict[str, Any]:
        """Counts and latency percentiles of the run so far."""

        def pct(values: list[float], scale: float = 1000.0) -> dict[str, float] | None:
            if not values:
                return None
            arr = np.asarray(values) * scale
            return {f"p{q}": round(float(np.percentile(arr, q)), 3) for q in (50, 95, 99)}

        return {
            "volumes_ok": self.n_ok_,
            "volumes_failed": self.n_errors_,
            "volumes_discarded": self.n_discarded_,
            "duplicates_ignored": self.n_duplicates_,
            "skipped_from_ended_runs": self.n_earlier_,
            "trials": self.trials_.n_published,
            **self.outputs.counts(),  # sent, dropped
            "malformed_inbound": self.inbound.malformed,
            "latency_ms": pct(self.latency_),
            "stage_ms": {k: pct(v, 1.0) for k, v in self.stage_ms_.items()},
            "flips": len(self.flips_),
            "e2e_ms": pct(self.flips_),
            "last_motion": [round(float(p), 4) for p in self.last_params_],
            "last_fd": round(self.last_fd_, 4),
            "session": self.session_,
            "condition": self.condition,
            "qa": {**self.qa_.summary(), "trials_censored": list(self.trials_.censored_)},
            # the end message goes to the displays too: a blinded run's summary says nothing of the sham
            **({"sham": self.sham_counts()} if self.sham is not None and self.condition == "sham" else {}),
            # a plugin signal: its calls, slowest call and why it was disabled, if it was
            **({"feedback_signal": report} if (report := self.feedback_.report()) is not None else {}),
        }
