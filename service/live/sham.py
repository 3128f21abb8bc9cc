"""Sham (yoked) neurofeedback: the feedback of a recorded run shown in place of the participant's own.

A neurofeedback study needs a control condition whose feedback is not the participant's brain (CRED-nf, Ros et
al. 2020); OpenNFT replays it from a file. Here a *sham* run replays a recorded **live** run
(``runs/<run_id>/``: another participant's, or another session's): for each of its volumes the frame message
carries the source run's feedback (``feedback``), latent and face (the source's latent decoded by this bundle's
decoder, at the same cost as a live frame), and each trial the source's trial in publication order. Everything
else in the message (volume, motion, FD, timing, ``ready``) is the run's own, so a display sees the same messages
at the same times with the same fields as in a live run. The participant's own latents and feedback are still
computed and recorded beside the values shown (``feedback.jsonl``: ``shown`` and ``real``).

The rules, stated once:

- **By volume index.** Volume ``i`` shows the source's frame of volume ``i``. Where the source sent no frame for
  ``i`` (a volume that failed there, or one beyond its end), the source's latest frame before ``i`` is shown
  again, which is what the source's display kept showing; before the source's first frame, its first. Each frame
  shown out of place is counted (``held``) and marked in the record.
- **By trial order.** The ``k``-th trial published shows the source's ``k``-th; beyond the source's trials, its
  last (counted as ``held``). A source that published no trials (a frame-only run): this run sends no ``trial``
  message either, as the source's display got none; its trials are still decoded and recorded (``withheld``).
- **Refused at start** (:class:`ShamError`, saying what was found): a source that is not a finished run (no
  manifest, or still ``running``), a source that was itself a sham run, one recorded before ``feedback.jsonl``
  existed, a TR that differs from this run's by more than 1%, another latent size, and a run whose length is
  known at start (``max_volumes``, or the trials of ``--events``) and longer than the source's.

:func:`read_allocation` reads a blinded allocation (a TSV the experimenter need not open): the service decides
live or sham from the participant's row, and the run record keeps the allocation file's hash and the source
run's hash (:attr:`SourceRun.sha256`, over the files replayed).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service.live.runlog import read_records

__all__ = [
    "ShamError",
    "SourceRun",
    "ShamFeedback",
    "Allocation",
    "read_allocation",
    "control_condition",
    "SOURCE_FILES",
]

log = logging.getLogger("service.live.sham")

#: The files of a source run a sham run replays (their bytes make :attr:`SourceRun.sha256`).
SOURCE_FILES = ("manifest.json", "volumes.jsonl", "feedback.jsonl", "trials.tsv", "latents.npy", "trial_latents.npy")
#: Relative TR difference accepted between the source run and this one.
TR_TOLERANCE = 0.01


class ShamError(ValueError):
    """A sham source or allocation that cannot be used; the message names the file and what was found."""

    user_error = True


def _load_rows(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise ShamError(f"{path} cannot be read as a NumPy array: {exc}") from None


@dataclass(frozen=True)
class SourceFrame:
    """One frame of the source run: its volume index, the feedback it showed and its latent."""

    volume: int
    feedback: dict[str, Any]
    latent: np.ndarray


class SourceRun:
    """A finished live run, read for replay: its frames by volume index and its trials in order.

    Attributes
    ----------
    dir : Path
    run_id : str
    tr : float
    sha256 : str
        SHA-256 over the names and bytes of :data:`SOURCE_FILES` (those present), in that order.
    frames : list of SourceFrame
        Sorted by volume index.
    trials : list of (feedback dict, latent)
        In publication order.
    manifest : dict
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.dir = Path(run_dir)
        mpath = self.dir / "manifest.json"
        if not mpath.is_file():
            raise ShamError(f"sham source {self.dir} is not a run folder (no manifest.json)")
        try:
            self.manifest = json.loads(mpath.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ShamError(f"{mpath} is not valid JSON: {exc}") from None
        state = self.manifest.get("state")
        if state not in ("ended", "stopped"):
            raise ShamError(
                f"sham source {self.dir} is {state!r}, not a finished run: end it first (a crashed run is resumed by "
                "serving it again with its run id)"
            )
        control = self.manifest.get("control") or {}
        if control.get("condition") == "sham":
            raise ShamError(
                f"sham source {self.dir} was itself a sham run (of {control.get('source', {}).get('run_id')}); "
                "replay a live run"
            )
        fpath = self.dir / "feedback.jsonl"
        if not fpath.is_file():
            raise ShamError(
                f"sham source {self.dir} has no feedback.jsonl (recorded by an fmriface older than sham "
                "feedback): the values it showed cannot be replayed exactly"
            )
        self.run_id = str(self.manifest.get("run_id") or self.dir.name)
        self.tr = float(self.manifest.get("tr") or 0.0)
        self.latent_size = int((self.manifest.get("bundle_summary") or {}).get("latent_size") or 0)
        lines = read_records(fpath)
        latents = _load_rows(self.dir / "latents.npy")
        trial_latents = (
            _load_rows(self.dir / "trial_latents.npy") if (self.dir / "trial_latents.npy").exists() else None
        )
        frames: dict[int, SourceFrame] = {}
        self.trials: list[tuple[dict[str, Any], np.ndarray]] = []
        for n, line in enumerate(lines, 1):
            try:
                topic, row, shown = line["topic"], int(line["latent_row"]), dict(line["shown"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ShamError(f"{fpath} line {n} lacks topic, latent_row or shown ({exc})") from None
            rows = latents if topic == "frame" else trial_latents
            if rows is None or not 0 <= row < len(rows):
                raise ShamError(
                    f"{fpath} line {n}: latent_row {row} is not a row of the run's "
                    f"{'latents' if topic == 'frame' else 'trial_latents'}.npy"
                )
            latent = np.array(rows[row], np.float32)
            if topic == "frame":
                frames[int(line["volume"])] = SourceFrame(int(line["volume"]), shown, latent)
            elif topic == "trial":
                self.trials.append((shown, latent))
        if not frames:
            raise ShamError(f"sham source {self.dir} sent no frames (feedback.jsonl holds none): nothing to replay")
        self.frames = [frames[k] for k in sorted(frames)]
        self._indices = [f.volume for f in self.frames]
        self.sha256 = self._hash()

    def _hash(self) -> str:
        h = hashlib.sha256()
        for name in SOURCE_FILES:
            path = self.dir / name
            if path.is_file():
                h.update(name.encode() + b"\0")
                with open(path, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
        return h.hexdigest()

    @property
    def n_volumes(self) -> int:
        """Volumes the source ran for (its last frame's index + 1)."""
        return self._indices[-1] + 1

    def frame_for(self, volume: int) -> tuple[SourceFrame, bool]:
        """The source frame volume ``volume`` shows, and whether it is held (not the source's own of ``volume``)."""
        k = bisect_right(self._indices, volume) - 1
        if k < 0:
            return self.frames[0], True
        frame = self.frames[k]
        return frame, frame.volume != volume

    def record(self) -> dict[str, Any]:
        """What the run record keeps of its source."""
        return {
            "run_id": self.run_id,
            "path": str(self.dir.resolve()),
            "sha256": self.sha256,
            "tr": self.tr,
            "frames": len(self.frames),
            "volumes": self.n_volumes,
            "trials": len(self.trials),
            "bundle_manifest_sha256": (self.manifest.get("bundle") or {}).get("manifest_sha256"),
        }


class ShamFeedback:
    """What a sham run shows: the source's frame for each volume index, its trials in order (see the module)."""

    def __init__(self, source: SourceRun) -> None:
        self.source = source
        self.held_frames = 0
        self.held_trials = 0
        self._warned = False

    def check(self, tr: float, latent_size: int, max_volumes: int = 0, n_trials: int = 0) -> None:
        """Refuse a source this run cannot replay (TR, latent size, a known length longer than the source's)."""
        src = self.source
        if src.latent_size and src.latent_size != latent_size:
            raise ShamError(
                f"sham source {src.dir} has latents of size {src.latent_size}, this bundle's are {latent_size}"
            )
        if not src.tr or abs(src.tr - tr) > TR_TOLERANCE * tr:
            raise ShamError(
                f"sham source {src.dir} ran at TR {src.tr:g} s and this run at {tr:g} s: its feedback would be "
                "shown at another pace; choose a source recorded with this TR"
            )
        if max_volumes and max_volumes > src.n_volumes:
            raise ShamError(
                f"this run is set to {max_volumes} volumes (max_volumes) but sham source {src.dir} has "
                f"{src.n_volumes}: choose a longer source run or lower max_volumes"
            )
        if n_trials and src.trials and n_trials > len(src.trials):  # a frame-only source: trials are withheld
            raise ShamError(
                f"this run's events hold {n_trials} trials to decode but sham source {src.dir} published "
                f"{len(src.trials)}: choose a source run with as many trials"
            )

    def frame(self, volume: int) -> tuple[np.ndarray, dict[str, Any], dict[str, Any]]:
        """(latent, feedback, where from) shown for volume ``volume``."""
        f, held = self.source.frame_for(volume)
        if held:
            self.held_frames += 1
            if volume > self.source.n_volumes - 1 and not self._warned:
                self._warned = True
                log.warning(
                    "sham: volume %d is beyond source run %s (%d volumes): its last frame is shown from now on",
                    volume,
                    self.source.run_id,
                    self.source.n_volumes,
                )
        return f.latent, f.feedback, {"source_volume": f.volume, "held": held}

    def resume(self, run_dir: Path) -> None:
        """Count what a resumed run had already shown out of place (its own ``feedback.jsonl``)."""
        for line in read_records(Path(run_dir) / "feedback.jsonl"):
            src = line.get("source") or {}
            if src.get("held"):
                if line.get("topic") == "frame":
                    self.held_frames += 1
                elif line.get("topic") == "trial":
                    self.held_trials += 1

    def trial(self, k: int) -> tuple[np.ndarray, dict[str, Any], dict[str, Any]] | None:
        """(latent, feedback, where from) shown for the ``k``-th trial published (0-based); None when the
        source published no trials: its display saw none, so this one sees none (the trial is recorded only)."""
        trials = self.source.trials
        if not trials:
            return None
        held = k >= len(trials)
        self.held_trials += held
        j = min(k, len(trials) - 1)
        return trials[j][1], trials[j][0], {"source_trial": j, "held": held}


@dataclass(frozen=True)
class Allocation:
    """One participant's row of an allocation file."""

    participant: str
    condition: str  # live | sham
    source: Path | None
    file: Path
    sha256: str

    def record(self) -> dict[str, Any]:
        """What the run's manifest records of the allocation (the file's hash, the participant, the condition)."""
        return {"file_sha256": self.sha256, "participant": self.participant, "condition": self.condition}


def read_allocation(path: str | Path, participant: str) -> Allocation:
    """The participant's row of an allocation TSV (``participant_id``, ``condition``, ``source_run``).

    ``condition`` is ``live`` or ``sham``; ``source_run`` (a run folder, relative to the file's folder or
    absolute) is required for ``sham``. A missing file, column or participant, a duplicate row or an unknown
    condition is refused with the file and line.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ShamError(f"allocation file {path} cannot be read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ShamError(f"allocation file {path} is not UTF-8 text (byte {exc.start})") from None
    rows = list(csv.DictReader(text.splitlines(), delimiter="\t"))
    need = {"participant_id", "condition"}
    if not rows or not need <= set(rows[0]):
        have = ", ".join(rows[0]) if rows else "no rows"
        raise ShamError(f"allocation file {path} needs the columns participant_id, condition, source_run ({have})")
    found = [(n + 2, r) for n, r in enumerate(rows) if (r.get("participant_id") or "").strip() == participant]
    if not found:
        raise ShamError(f"participant {participant!r} is not in allocation file {path}")
    if len(found) > 1:
        raise ShamError(
            f"participant {participant!r} has {len(found)} rows in allocation file {path}: lines "
            f"{', '.join(str(n) for n, _ in found)}"
        )
    line, row = found[0]
    condition = (row.get("condition") or "").strip().lower()
    if condition not in ("live", "sham"):
        raise ShamError(f"{path} line {line}: condition {row.get('condition')!r} is not live or sham")
    source = (row.get("source_run") or "").strip()
    if condition == "sham" and source in ("", "n/a"):
        raise ShamError(f"{path} line {line}: a sham participant needs a source_run (a recorded live run)")
    src = None
    if condition == "sham":
        src = Path(source) if Path(source).is_absolute() else path.parent / source
    return Allocation(participant, condition, src, path, hashlib.sha256(raw).hexdigest())


def control_condition(
    sham_source: str | Path | None,
    allocation: str | Path | None,
    participant: str,
    blind_operator: bool,
    tr: float,
    latent_size: int,
    max_volumes: int = 0,
    n_trials: int = 0,
) -> tuple[ShamFeedback | None, dict[str, Any], str]:
    """The run's control condition from ``serve``'s settings: ``(sham or None, the record, what status says)``.

    The record (the manifest's ``control``) keeps the condition, who decided it (``config`` or
    ``allocation``), the allocation's hash and participant, and the source run's identity and hash. What status
    messages say is ``live`` or ``sham``, or ``blinded`` for an allocated run with ``blind_operator``.
    """
    record: dict[str, Any] = {"condition": "live", "assigned_by": "config"}
    source = Path(sham_source) if sham_source is not None else None
    if allocation is not None:
        alloc = read_allocation(allocation, participant)
        record.update(assigned_by="allocation", allocation=alloc.record(), condition=alloc.condition)
        source = alloc.source
        log.info(
            "allocation %s read for participant %s (the condition is not logged)", Path(allocation).name, participant
        )
    elif source is not None:
        record["condition"] = "sham"
    sham = None
    if source is not None:
        sham = ShamFeedback(SourceRun(source))
        sham.check(tr, latent_size, max_volumes, n_trials)
        record["source"] = sham.source.record()
        if allocation is None:
            log.info("sham feedback from run %s (sha256 %s)", sham.source.run_id, sham.source.sha256[:12])
    shown = record["condition"]
    if allocation is not None and blind_operator:
        shown = "blinded"
    return sham, record, shown
