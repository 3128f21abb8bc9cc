"""The options of ``fmriface serve`` (a frozen dataclass filled from ``configs/serve-*.toml`` and the command line)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service import protocol
from service.intake.watcher import WatcherConfig
from service.live.inbound import InboundLimits
from service.preprocess import PreprocessSpec
from service.qa.config import QAConfig

__all__ = ["ServeConfig", "preprocess_of", "interpolation_of"]


@dataclass(frozen=True)
class ServeConfig:
    """Options of the real-time service.

    Parameters
    ----------
    bundle : path
        The bundle folder written by ``fmriface fit``.
    watch : path
        The scanner's export folder.
    runs : path
        Where run records go (``runs/<run_id>/``).
    run_id : str
        The run's name; empty = derived from the watched folder, so a restart on the same folder resumes it.
    pub, pull : str
        ZeroMQ addresses bound for publishing and for the experiment's events / displays' flip acks.
    hwm : int
        Send high-water mark (messages queued per subscriber before old ones are dropped).
    events : path, optional
        An events.tsv (BIDS: onset, duration, trial_type, stim_file) with the run's trials, given up front.
    tr : float
        Repetition time in seconds for trial windows and ``stim_time``; 0 = the bundle's (a volume header that
        states another TR is reported in the log).
    hrf_lag : float
        Seconds between a stimulus and the BOLD response a frame shows; frames carry ``stim_time``.
    frame_average : int
        Preprocessed volumes averaged for each frame's latent (1 = the volume alone).
    preprocess : PreprocessSpec, optional
        What the fit and the service must agree on (trial estimate, window, detrending, scaling, resampling;
        ``service.preprocess``). None (the default): the bundle's, as its manifest records it. Given (a TOML
        table ``[preprocess]``), it is compared with the bundle's as one value at start and a difference is
        refused, naming each setting.
    min_volumes : int
        Online detrending: volumes before frames and trials carry ``ready: true`` (the drift fit settles).
    skip_trial_types : tuple of str
        Trial types not decoded per trial (fixation, and the short cues of imagery and feedback runs).
    target_stim : str
        Neurofeedback target: a stimulus id of the bundle (file name), or empty.
    target_image : path, optional
        Neurofeedback target as an image file (encoded with the bundle's encoder.onnx).
    feedback_smooth : int
        Volumes the frame feedback correlation is averaged over.
    feedback : str
        The feedback signal, by name in the entry point group ``fmriface.feedback`` (or ``module:factory``):
        ``target-correlation`` (closeness to the target face, the default), ``attribute-projection`` (an
        attribute's projection, with ``feedback_options = {attribute = "Smiling"}``) or an installed plugin's
        (``service.live.feedback_plugins``, docs/examples/feedback-plugin/).
    feedback_options : dict
        Keyword arguments of the signal's factory (TOML table ``[feedback_options]``).
    feedback_budget_ms : float
        A plugin signal's time budget per call: one that overruns it, raises or returns a non-finite value is
        disabled for the run (the built-in signals run inline).
    sham_source : path, optional
        Sham (yoked) feedback: a recorded live run (``runs/<run_id>/``, another participant's or session's) whose
        frames' and trials' feedback, latents and faces are sent in place of this run's, volume by volume and
        trial by trial; this run's own values are still computed and recorded beside them (``service.live.sham``).
    allocation : path, optional
        Blinded allocation: a TSV (``participant_id``, ``condition`` live or sham, ``source_run``) read by the
        service, so the experimenter need not know the condition; ``participant`` names the row.
    participant : str
        The participant's ID in the allocation file.
    blind_operator : bool
        With an allocation, status messages say ``condition: blinded`` (the operator's view cannot unblind the
        experimenter); false shows ``live`` or ``sham`` there. An explicit ``sham_source`` is always shown.
    max_volumes : int
        Stop after this many volumes (0 = no limit).
    idle_timeout : float
        Stop after this many seconds without a new volume, once one has arrived (0 = never).
    startup_timeout : float
        Stop if no volume at all arrives within this many seconds (0 = wait forever).
    heartbeat : float
        Seconds between ``status`` messages.
    device : str
        onnxruntime device: cpu, cuda or auto.
    threads : int
        onnxruntime intra-op threads.
    blas_threads : int
        Threads of numpy's BLAS in the service (1: multithreaded BLAS only adds jitter to one volume's work).
    max_batch : int
        Volumes taken at once when a backlog has built up (mapping and decoder run once for all of them).
    latent_in_header : int
        Put the latent in frame headers when its size is at most this.
    verify_bundle : bool
        Check the bundle's SHA-256 hashes at start.
    fsync : bool
        fsync every volume record (survives a power cut; slower).
    json_log : bool
        Log lines as JSON objects on stderr.
    discard : int
        Leading dummy volumes (index < ``discard``): motion-corrected and recorded (``status`` ``discarded``) but
        kept out of detrending, scaling, frames and trials, as OpenNFT's ``nrSkipVol`` and MURFI's ``discard``.
    interpolation : {"", "linear", "cubic"}
        Another resampling kernel than the bundle's, to compare them (``bench motion``): trilinear, or cubic
        B-spline; allowed with a warning. Empty (the default): the bundle's, the kernel ``fit`` resampled its
        training volumes with (``preprocess.interpolation``), so the live voxels are smoothed as the mapping's
        training voxels were.
    watcher : WatcherConfig
        Intake settings (TOML table ``[watcher]``: pattern, polling, series, ...); its ``folder`` is ``watch``.
    inbound : InboundLimits
        Limits on the experiment's and displays' messages (TOML table ``[inbound]``: message size, fields,
        field length, events per second, open trials); a message over one is dropped and counted.
    qa : QAConfig
        The per-volume QA's thresholds and maps (TOML table ``[qa]``; ``docs/qa.md``).
    bids : bool
        Keep the run as a BIDS run (the volumes as received, sidecar, events, derivatives; docs/runs.md), written
        by a thread of its own (``service.live.bids_writer``).
    bids_out : path, optional
        The BIDS root the run goes to; None: ``runs/<run_id>/bids/``.
    subject, session, task : str
        The BIDS labels (letters and digits); empty: an experiment's ``trigger`` event's, else ``01``, ``01``,
        ``live`` (never the watched folder's name).
    """

    bundle: Path | None = None
    watch: Path | None = None
    runs: Path = Path("runs")
    run_id: str = ""
    pub: str = protocol.DEFAULT_PUB
    pull: str = protocol.DEFAULT_PULL
    hwm: int = protocol.DEFAULT_HWM
    events: Path | None = None
    tr: float = 0.0
    hrf_lag: float = 5.0
    frame_average: int = 1
    preprocess: PreprocessSpec | None = None
    min_volumes: int = 10
    discard: int = 0
    interpolation: str = ""
    skip_trial_types: tuple[str, ...] = ("Fix", "Cue")
    target_stim: str = ""
    target_image: Path | None = None
    feedback_smooth: int = 3
    feedback: str = "target-correlation"
    feedback_options: dict[str, Any] = field(default_factory=dict)
    feedback_budget_ms: float = 20.0
    sham_source: Path | None = None
    allocation: Path | None = None
    participant: str = ""
    blind_operator: bool = True
    max_volumes: int = 0
    idle_timeout: float = 0.0
    startup_timeout: float = 0.0
    heartbeat: float = 1.0
    device: str = "cpu"
    threads: int = 1
    blas_threads: int = 1
    max_batch: int = 16
    latent_in_header: int = 64
    verify_bundle: bool = True
    fsync: bool = False
    json_log: bool = False
    curve_secret: Path | None = None
    curve_allowed: Path | None = None
    watcher: WatcherConfig = field(default_factory=WatcherConfig)
    inbound: InboundLimits = field(default_factory=InboundLimits)
    qa: QAConfig = field(default_factory=QAConfig)
    bids: bool = True
    bids_out: Path | None = None
    subject: str = ""
    session: str = ""
    task: str = ""

    def __post_init__(self) -> None:
        for name in ("hwm", "frame_average", "feedback_smooth", "threads", "blas_threads", "max_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in (
            "tr",
            "hrf_lag",
            "max_volumes",
            "idle_timeout",
            "startup_timeout",
            "min_volumes",
            "discard",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.heartbeat <= 0:
            raise ValueError(f"heartbeat must be positive, got {self.heartbeat}")
        if self.feedback_budget_ms <= 0:
            raise ValueError(f"feedback_budget_ms must be positive, got {self.feedback_budget_ms}")
        from service.live.feedback_plugins import check_signal_name

        check_signal_name(self.feedback)  # an unknown signal is refused at start, with those available
        if self.interpolation not in ("", "linear", "cubic"):
            raise ValueError(
                f"interpolation must be linear or cubic (or empty: the bundle's), got {self.interpolation!r}"
            )
        if self.device not in ("cpu", "cuda", "auto"):
            raise ValueError(f"device must be cpu, cuda or auto, got {self.device!r}")
        if (self.curve_secret is None) != (self.curve_allowed is None):
            raise ValueError("curve_secret and curve_allowed go together (the service's key and its allowed peers)")
        for name in ("pub", "pull"):
            value = getattr(self, name)
            if value:  # pull "" means no inbound socket
                try:
                    protocol.check_address(value, name, bind=True)
                except protocol.ProtocolError as exc:
                    raise ValueError(str(exc)) from None
        if self.allocation is not None and not self.participant:
            raise ValueError("allocation needs participant (the participant's ID in the allocation file)")
        if self.participant and self.allocation is None:
            raise ValueError("participant is read only with an allocation file (allocation = PATH)")
        if self.allocation is not None and self.sham_source is not None:
            raise ValueError("give sham_source or an allocation, not both (the allocation names the source run)")
        for name in ("subject", "session", "task"):
            value = str(getattr(self, name))
            if value and not (value.isascii() and value.isalnum()):
                raise ValueError(f"{name} must be a BIDS label (letters and digits only), got {getattr(self, name)!r}")
        if self.run_id and not all(c.isalnum() or c in "-_." for c in self.run_id):
            raise ValueError(f"run_id {self.run_id!r} may hold letters, digits, '-', '_' and '.' only")


def preprocess_of(cfg: ServeConfig, bundle_manifest: dict) -> PreprocessSpec:
    """The spec a run computes its patterns with: the bundle's, resampled with ``cfg.interpolation`` when set.

    ``startup_checks`` has already refused a ``cfg.preprocess`` that differs from the bundle's.
    """
    spec = PreprocessSpec.from_manifest(bundle_manifest)
    return spec.replace(interpolation=cfg.interpolation) if cfg.interpolation else spec


def interpolation_of(cfg: ServeConfig, bundle_manifest: dict) -> str:
    """The resampling kernel a run uses: ``cfg.interpolation`` when set, else the bundle's (linear without one)."""
    return preprocess_of(cfg, bundle_manifest).interpolation
