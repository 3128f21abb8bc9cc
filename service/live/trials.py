"""Per-trial decoding and the experiment's events: trial onsets, neurofeedback targets.

Trials come from ``event`` messages (kind ``onset``) or from an events.tsv read at start. When a trial's window
has been acquired (:class:`service.window.TrialWindows`), its window and baseline volumes are detrended and
scaled under the current online fit (what ``detrend_offline`` would give on the run so far), the very function
the offline fit uses (:func:`service.window.estimate_from_indices`) makes the estimate, and a ``trial`` message is
published and recorded.

With a least-squares-separate bundle (``estimate = "lss"``), a trial is estimated once the volume ``lag`` seconds
after its onset is in (:func:`service.lss.ready_volume`): one GLM per trial on the run's volumes so far (the
motion-corrected voxels, the motion, the events announced so far; censored and lost volumes left out), by the
very code of the offline fit (:func:`service.lss.lss_estimates`), after the volume's frame is sent
(:meth:`TrialBook.flush`), so volumes keep their latency.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from service import protocol
from service.live.config import ServeConfig
from service.live.decoder import LatentDecoder
from service.live.feedback import Feedback
from service.live.history import VolumeHistory
from service.live.outputs import Output
from service.live.policy import raise_errors
from service.live.runlog import ResumeState, RunLog
from service.live.sham import ShamFeedback
from service.lss import lss_estimates, ready_volume
from service.online import OnlinePreprocessor
from service.preprocess import PreprocessSpec
from service.window import ReadyTrial, TrialWindows, WindowSpec, estimate_from_indices

__all__ = ["TrialBook", "read_events_tsv"]

log = logging.getLogger("service.trials")


def read_events_tsv(path: str | Path) -> list[dict[str, Any]]:
    """Trials of a BIDS events.tsv as ``onset`` event headers (onset, duration, trial_type, stim_id, trial)."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
    except FileNotFoundError:
        raise FileNotFoundError(f"events file {path} does not exist") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"events file {path} is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    except IsADirectoryError:
        raise ValueError(f"events file {path} is a folder") from None
    if not rows:
        raise ValueError(f"events file {path} holds no trials (no rows under its header)")
    if "onset" not in rows[0]:
        raise ValueError(f"{path} has no 'onset' column (columns: {', '.join(map(str, rows[0]))})")
    out = []
    for i, row in enumerate(rows):
        if None in row.values() or None in row:
            raise ValueError(
                f"{path} row {i + 2} has {'fewer' if None in row.values() else 'more'} fields than the header"
            )
        try:
            onset = float(row["onset"])
            duration = float(row.get("duration") or 0.0)
        except ValueError:
            raise ValueError(f"{path} row {i + 2}: onset/duration are not numbers: {row}") from None
        if not (math.isfinite(onset) and math.isfinite(duration)):
            raise ValueError(
                f"{path} row {i + 2}: onset {row['onset']!r} / duration {row.get('duration')!r} must be finite"
            )
        if onset < 0 or duration < 0:
            raise ValueError(f"{path} row {i + 2}: onset {onset:g} s / duration {duration:g} s must not be negative")
        stim = row.get("stim_file") or row.get("stim_id") or ""
        out.append(
            {
                "kind": "onset",
                "trial": i,
                "onset": onset,
                "duration": duration,
                "trial_type": row.get("trial_type", "n/a"),
                "stim_id": "" if stim == "n/a" else stim,
            }
        )
    return out


class TrialBook:
    """The run's trials, their windows and the target events.

    A decoded trial goes to ``outputs`` (:class:`service.live.outputs.Outputs`: the publisher and any other
    output), which returns its ``seq``; ``save_state`` is called when the neurofeedback target changes. ``window``
    is the trial window of the bundle's :class:`~service.preprocess.PreprocessSpec` (default: 4-8 s after onset,
    baseline -2-0 s), or the whole spec: with ``estimate = "lss"`` the trials are least-squares-separate
    estimates, each once the volume ``spec.lss.lag`` s after its onset is in.

    Attributes
    ----------
    windows_ : TrialWindows
    trials_ : dict
        Trial key -> its onset event fields.
    published_ : set
        Keys of trials already published (restored from ``trials.tsv`` on resume).
    censored_ : list of str
        Keys of trials not decoded because their window or baseline kept no uncensored volume (the QA); the run's
        summary records them (``trials_censored``).
    """

    def __init__(
        self,
        tr: float,
        cfg: ServeConfig,
        decoder: LatentDecoder,
        history: VolumeHistory,
        online: OnlinePreprocessor,
        feedback: Feedback,
        runlog: RunLog,
        outputs: Output,
        save_state: Callable[[], None],
        sham: ShamFeedback | None = None,
        window: WindowSpec | PreprocessSpec | None = None,
    ) -> None:
        self.preprocess = window if isinstance(window, PreprocessSpec) else None
        if self.preprocess is not None:
            window = self.preprocess.window
        self.spec = window if window is not None else WindowSpec()
        self.windows_ = TrialWindows(tr, self.spec)
        self.tr = float(tr)
        self.lss = self.preprocess is not None and self.preprocess.estimate == "lss"
        self._lss_pending: list[tuple[int, float, str]] = []  # (ready volume, onset, key), in order of readiness
        self._lss_due: list[tuple[str, int]] = []  # (key, last volume of its fit): estimated by flush
        self.cfg, self.decoder = cfg, decoder
        # what the trials read (the run's volumes and online fit) and write (feedback target, messages, records)
        self.history, self.online, self.feedback, self.runlog = history, online, feedback, runlog
        self.outputs, self._save_state = outputs, save_state
        self.sham = sham  # a sham run: the k-th trial published shows the source run's k-th
        self.trials_: dict[Any, dict[str, Any]] = {}
        self.published_: set[str] = set()
        self.censored_: list[str] = []
        self.n_published = 0
        self._auto = 0
        self._ready: list[tuple] = []
        self._latent = np.zeros(decoder.bundle.latent_size, np.float32)

    @property
    def pending(self) -> int:
        """Trials announced whose window is not complete yet."""
        return len(self._lss_pending) + len(self._lss_due) if self.lss else self.windows_.pending

    def event(self, h: dict[str, Any], payload: bytes = b"", record: bool = True) -> None:
        """Apply one event header (``kind`` onset/target/clear_target/trigger); recorded when ``record``."""
        kind = h.get("kind")
        if kind not in protocol.EVENT_KINDS:
            raise ValueError(f"event kind {kind!r} is not one of {list(protocol.EVENT_KINDS)}")
        if kind == "onset":
            self._add(h)
        elif kind == "target":
            self._target(h, payload)
        elif kind == "clear_target":
            self.feedback.clear_target()
            self._save_state()
        if record:
            self.runlog.event({**h, "received": time.time()})

    def _add(self, h: dict[str, Any]) -> None:
        onset = float(h["onset"])
        key = str(h["trial"]) if h.get("trial") is not None else f"auto{self._auto}"
        self._auto += 1
        if key in self.trials_:
            return
        self.trials_[key] = {
            "trial": key,
            "onset": onset,
            "duration": float(h.get("duration") or 0.0),
            "trial_type": str(h.get("trial_type", "n/a")),
            "stim_id": str(h.get("stim_id") or ""),
        }
        if self.trials_[key]["trial_type"] in self.cfg.skip_trial_types or key in self.published_:
            return
        if self.lss:
            self._lss_pending.append((ready_volume(onset, self.tr, self.preprocess.lss.lag), onset, key))
            self._lss_pending.sort(key=lambda item: item[:2])
        else:
            self.windows_.add(key, onset)
        if self.history.last_index >= 0:  # a trial announced late: its window may be complete already
            self.advance(self.history.last_index)

    def _target(self, h: dict[str, Any], payload: bytes) -> None:
        if payload:
            latent = self.decoder.encode_image(protocol.decode_image(h, payload))
            self.set_target(latent, {"kind": "image"})
        elif h.get("stim_id"):
            self.set_target(self.decoder.bundle.stimulus_latent(str(h["stim_id"])), {"stim_id": str(h["stim_id"])})
        else:
            raise ValueError("a target event needs a stim_id or an image payload")

    def set_target(self, latent: np.ndarray, source: dict[str, Any]) -> None:
        """Make ``latent`` the neurofeedback target (``source`` says where it came from) and save the state."""
        self.feedback.set_target(latent, source)
        self._save_state()
        log.info("neurofeedback target set: %s", source)

    def advance(self, index: int, publish: bool = True) -> None:
        """Estimate every trial whose window is complete once volume ``index`` is in, under the fit as it is now.

        With ``publish`` they are decoded and published at once; else they wait for :meth:`flush` (the
        pipeline estimates right after each volume's detrending, and publishes after that volume's frame). LSS
        trials are only marked here, each with the volumes its fit takes; :meth:`flush` estimates them.
        """
        if self.lss:
            while self._lss_pending and self._lss_pending[0][0] <= index:
                _, _, key = self._lss_pending.pop(0)
                self._lss_due.append((key, int(index)))
            if publish:
                self.flush()
            return
        for ready in self.windows_.advance(index):
            try:
                est = self._estimate(ready)
            except Exception as exc:  # noqa: BLE001 - a trial that fails must not stop the volumes
                if raise_errors():
                    raise
                log.error("trial %s not estimated: %s", ready.key, exc)
                continue
            if est is not None:
                self._ready.append(est)
        if publish:
            self.flush()

    def flush(self) -> None:
        """Decode and publish the trials estimated so far (and estimate the LSS trials due: after the frame)."""
        while self._lss_due:
            key, last = self._lss_due.pop(0)
            try:
                self._ready.append(self._estimate_lss(key, last))
            except Exception as exc:  # noqa: BLE001 - a trial that fails must not stop the volumes
                if raise_errors():
                    raise
                log.error("trial %s not estimated: %s", key, exc)
        while self._ready:
            item = self._ready.pop(0)
            try:
                self._publish(*item)
            except Exception as exc:  # noqa: BLE001
                if raise_errors():
                    raise
                log.error("trial %s not decoded: %s", item[0].key, exc)

    def _estimate(self, r: ReadyTrial) -> tuple[ReadyTrial, np.ndarray, np.ndarray, np.ndarray, bool] | None:
        hist, online = self.history, self.online
        win, base = hist.valid_among(r.window), hist.valid_among(r.baseline)
        if win.size == 0 or base.size == 0:
            span = r.window if win.size == 0 else r.baseline
            inside = span[span < hist.valid.size]
            if inside.size and hist.censored[inside].any():  # volumes in, but censored: recorded as such
                self.censored_.append(str(r.key))
                log.warning("trial %s not decoded: every volume of its window or baseline is censored (QA)", r.key)
            else:
                log.warning("trial %s skipped: its window or baseline volumes all failed", r.key)
            return None
        # the window and baseline volumes under the current drift fit and scale (as offline on the run so far)
        idx = np.concatenate([win, base])
        z = online.residuals(hist.raw[idx], idx, hist.motion[idx] if online.motion_regressors else None)
        est = estimate_from_indices(z, np.arange(win.size), np.arange(win.size, idx.size))
        return r, win, base, est, online.ready

    def estimate_lss(self, key: str, last: int) -> np.ndarray:
        """Trial ``key``'s least-squares-separate estimate on volumes 0..``last`` (the events announced so far)."""
        hist, spec = self.history, self.preprocess
        n = last + 1
        events = list(self.trials_.values())
        keys = [e["trial"] for e in events]
        return lss_estimates(
            hist.raw[:n],
            self.tr,
            [e["onset"] for e in events],
            [e["duration"] for e in events],
            [e["trial_type"] for e in events],
            [keys.index(key)],
            motion=hist.motion[:n] if spec.motion_regressors else None,
            exclude=~hist.valid[:n] | hist.censored[:n],
            options=spec.lss,
        )[0].astype(np.float32)

    def _estimate_lss(self, key: str, last: int) -> tuple[ReadyTrial, np.ndarray, np.ndarray, np.ndarray, bool]:
        onset = self.trials_[key]["onset"]
        first = min(int(np.floor(onset / self.tr)), last)
        # the header's window: the volumes from the onset to the last of the fit; its baseline: the fit's volumes
        window, fit = np.arange(first, last + 1), np.arange(0, last + 1)
        return ReadyTrial(key, onset, window, fit), window, fit, self.estimate_lss(key, last), True

    def _publish(self, r: ReadyTrial, win: np.ndarray, base: np.ndarray, est: np.ndarray, ready: bool) -> None:
        w0, p0 = time.time(), time.perf_counter()
        latent = self.decoder.latent(est, out=self._latent)
        shown = None if self.sham is None else self.sham.trial(self.n_published)
        # a sham run whose source sent no trials sends none either (sham.py): the trial is decoded and recorded
        withheld = self.sham is not None and shown is None
        info = self.trials_[r.key]
        real = self.feedback.trial(latent)
        row = {**info, "first_volume": int(win[0]), "last_volume": int(win[-1]), "seq": None, "feedback": None}
        if not withheld:
            image = self.decoder.decode(latent if shown is None else shown[0])
            h, w, c = self.decoder.bundle.image_shape
            header: dict[str, Any] = {
                "run_id": self.runlog.run_id,
                **info,
                "volume": int(r.window[-1]),
                "window": [int(win[0]), int(win[-1])],
                "baseline": [int(base[0]), int(base[-1])],
                "t": {"read": w0, "decoded": w0 + time.perf_counter() - p0},
                "ready": ready,
                "feedback": real if shown is None else shown[1],
                "shape": [h, w, c],
                "dtype": "uint8",
            }
            if self.decoder.bundle.latent_size <= self.cfg.latent_in_header:
                header["latent"] = [round(float(v), 5) for v in (latent if shown is None else shown[0])]
            row["seq"] = self.outputs.trial(header, image)
            row.update(feedback=header["feedback"].get("value"), t_sent=header["t"]["sent"])
        line = {
            "topic": "trial",
            "trial": info["trial"],
            "seq": row["seq"],
            "latent_row": self.runlog.trial(row, latent),
        }
        line["shown"] = None if withheld else header["feedback"]
        if self.sham is not None:
            line.update(real=real, source={"withheld": True, "held": False} if withheld else shown[2])
        self.runlog.feedback(line)
        self.published_.add(r.key)
        self.n_published += 1

    def restore(self, rs: ResumeState) -> None:
        """Replay a resumed run's events and mark its published trials (not published twice)."""
        self.published_ = {row["trial"] for row in rs.trials}
        self.n_published = len(rs.trials)
        for h in rs.events:
            if h.get("kind") == "onset":
                self._add(h)
        target = rs.state.get("target")
        if target:
            self.feedback.set_target(np.asarray(target["latent"], np.float32), target["source"])
