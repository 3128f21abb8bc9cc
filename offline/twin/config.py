"""Options of ``fmriface simulate``: one frozen dataclass per TOML table, checked before anything is written.

Presets live in ``configs/simulate-{tiny,demo,paper}.toml``. Noise is given the way a scanner physicist would:
temporal SNR in grey matter (baseline over the standard deviation of a voxel's time series at rest), the share
of that noise which is physiological (AR(1), scaling with the signal) rather than thermal, and slow drift.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "GridConfig",
    "ParadigmConfig",
    "SignalConfig",
    "NoiseConfig",
    "MotionConfig",
    "SessionsConfig",
    "GroupConfig",
    "SimulateConfig",
]


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclass(frozen=True)
class GridConfig:
    """The EPI grid: matrix, voxel size (mm) and slab tilt about left-right (degrees)."""

    shape: tuple[int, int, int] = (64, 64, 36)
    voxel_size: tuple[float, float, float] = (3.0, 3.0, 3.5)
    oblique_deg: float = 0.0

    def __post_init__(self) -> None:
        _check(all(2 <= s <= 512 for s in self.shape), f"grid.shape must be 3 integers in [2, 512], got {self.shape}")
        _check(
            all(0.5 <= v <= 20 for v in self.voxel_size),
            f"grid.voxel_size must be in [0.5, 20] mm, got {self.voxel_size}",
        )
        _check(abs(self.oblique_deg) <= 30, f"grid.oblique_deg must be within +-30, got {self.oblique_deg}")


@dataclass(frozen=True)
class ParadigmConfig:
    """Runs and trials (docs/paper.md): faces every ``soa_s`` for ``stim_s``; imagery trials of 12 s + 6 s fixation.

    Face runs hold ``volumes_per_run`` volumes; their slots (after ``lead_in_s``, before ``tail_s``) are filled
    with Fix events (``fix_fraction``), one-back repeats (``oneback_fraction``) and new faces. A test run shows
    each of the ``n_test_faces`` faces ``test_repeats_per_run`` times (plus one-back repeats and Fix).
    """

    tr: float = 2.0
    volumes_per_run: int = 195
    lead_in_s: float = 6.0
    tail_s: float = 12.0
    soa_s: float = 3.0
    stim_s: float = 1.0
    fix_fraction: float = 0.1
    oneback_fraction: float = 0.1
    sessions: int = 2
    train_runs_per_session: int = 5
    test_runs_per_session: int = 1
    n_test_faces: int = 20
    test_repeats_per_run: int = 5
    imagery_runs_per_session: int = 1
    imagery_trials_per_run: int = 10
    imagery_s: float = 12.0
    imagery_fix_s: float = 6.0
    n_imagery_faces: int = 2

    @property
    def slots_per_run(self) -> int:
        """Trial slots in one face run."""
        return int((self.volumes_per_run * self.tr - self.lead_in_s - self.tail_s) // self.soa_s)

    @property
    def new_face_slots(self) -> int:
        """Slots of a face run left for new faces after the Fix and one-back slots."""
        n = self.slots_per_run
        return n - int(round(n * self.fix_fraction)) - int(round(n * self.oneback_fraction))

    def __post_init__(self) -> None:
        _check(0.3 <= self.tr <= 10, f"paradigm.tr must be in [0.3, 10] s, got {self.tr}")
        _check(0 < self.stim_s <= self.soa_s, f"paradigm.stim_s ({self.stim_s}) must be in (0, soa_s={self.soa_s}]")
        _check(self.lead_in_s >= 0 and self.tail_s >= 0, "paradigm.lead_in_s and tail_s must be >= 0")
        _check(0 <= self.fix_fraction < 0.5, f"paradigm.fix_fraction must be in [0, 0.5), got {self.fix_fraction}")
        _check(
            0 <= self.oneback_fraction < 0.5,
            f"paradigm.oneback_fraction must be in [0, 0.5), got {self.oneback_fraction}",
        )
        _check(self.sessions >= 1, f"paradigm.sessions must be >= 1, got {self.sessions}")
        for name in ("train_runs_per_session", "test_runs_per_session", "imagery_runs_per_session"):
            _check(getattr(self, name) >= 0, f"paradigm.{name} must be >= 0")
        _check(
            self.train_runs_per_session >= 1,
            "paradigm.train_runs_per_session must be >= 1 (the mapping needs training trials)",
        )
        _check(
            self.slots_per_run >= 4,
            f"paradigm: a run of {self.volumes_per_run} volumes at TR {self.tr} s holds only {self.slots_per_run} trial slots; use more volumes",
        )
        _check(
            self.n_test_faces >= 2 and self.n_test_faces % 2 == 0,
            f"paradigm.n_test_faces must be even and >= 2 (half male), got {self.n_test_faces}",
        )
        test_slots = self.n_test_faces * self.test_repeats_per_run
        free = self.new_face_slots
        _check(
            self.test_runs_per_session == 0 or (self.test_repeats_per_run >= 1 and test_slots <= free + 1e-9),
            f"paradigm: {self.n_test_faces} test faces x {self.test_repeats_per_run} repeats = {test_slots} trials do not fit the {int(free)} face slots of a run",
        )
        _check(self.imagery_s > 0 and self.imagery_fix_s >= 0, "paradigm.imagery_s must be > 0 and imagery_fix_s >= 0")
        _check(
            self.imagery_runs_per_session == 0 or self.imagery_trials_per_run >= 1,
            "paradigm.imagery_trials_per_run must be >= 1",
        )
        _check(
            1 <= self.n_imagery_faces <= self.n_test_faces,
            f"paradigm.n_imagery_faces must be in [1, n_test_faces], got {self.n_imagery_faces}",
        )


@dataclass(frozen=True)
class SignalConfig:
    """The face code and the voxels that read it out (amplitudes in percent signal change, single 1-s trial peak)."""

    n_responsive: int = 3000
    code_size: int = 64
    nonlinear_share: float = 0.6
    psc_face: float = 0.8
    psc_identity: float = 0.3
    trial_noise: float = 0.3
    imagery_gain: float = 0.25
    cue_gain: float = 0.0
    tuning_smoothness_vox: float = 1.2
    code_seed: int = 7

    def __post_init__(self) -> None:
        _check(self.n_responsive >= 1, f"signal.n_responsive must be >= 1, got {self.n_responsive}")
        _check(4 <= self.code_size <= 4096, f"signal.code_size must be in [4, 4096], got {self.code_size}")
        _check(0 <= self.nonlinear_share <= 1, f"signal.nonlinear_share must be in [0, 1], got {self.nonlinear_share}")
        for name in ("psc_face", "psc_identity", "trial_noise", "imagery_gain", "cue_gain", "tuning_smoothness_vox"):
            _check(getattr(self, name) >= 0, f"signal.{name} must be >= 0, got {getattr(self, name)}")
        _check(self.psc_face + self.psc_identity <= 20, "signal: percent signal changes above 20% are not BOLD")


@dataclass(frozen=True)
class NoiseConfig:
    """Temporal SNR in grey matter, its physiological share (AR(1)), and slow drift (percent of baseline)."""

    tsnr: float = 60.0
    physio_share: float = 0.5
    ar1: float = 0.4
    drift_percent: float = 1.0

    def __post_init__(self) -> None:
        _check(1 <= self.tsnr <= 1e6, f"noise.tsnr must be in [1, 1e6], got {self.tsnr}")
        _check(0 <= self.physio_share <= 1, f"noise.physio_share must be in [0, 1], got {self.physio_share}")
        _check(0 <= self.ar1 < 1, f"noise.ar1 must be in [0, 1), got {self.ar1}")
        _check(0 <= self.drift_percent <= 20, f"noise.drift_percent must be in [0, 20], got {self.drift_percent}")


@dataclass(frozen=True)
class MotionConfig:
    """Rigid head motion per run: a position offset, a slow drift and occasional jerks, bounded overall."""

    enabled: bool = True
    max_mm: float = 2.0
    max_deg: float = 2.0
    drift_mm: float = 0.5
    jerks_per_100_volumes: float = 1.0
    jerk_mm: float = 0.6
    order: int = 1

    def __post_init__(self) -> None:
        _check(0 <= self.max_mm <= 20 and 0 <= self.max_deg <= 20, "motion.max_mm and max_deg must be in [0, 20]")
        _check(self.drift_mm >= 0 and self.jerk_mm >= 0, "motion.drift_mm and jerk_mm must be >= 0")
        _check(0 <= self.jerks_per_100_volumes <= 50, "motion.jerks_per_100_volumes must be in [0, 50]")
        _check(self.order in (0, 1, 3), f"motion.order must be 0, 1 or 3 (interpolation order), got {self.order}")


@dataclass(frozen=True)
class SessionsConfig:
    """Where each session after the first lies: its slab prescription and the head's position, drawn per session.

    Session 1 is the reference: the ``[grid]`` slab, the head at rest. Every later session gets a slab rotated
    about a random axis through the scanner's isocentre by ``slab_max_deg / 2`` to ``slab_max_deg`` and shifted
    in a random direction by ``slab_max_mm / 2`` to ``slab_max_mm`` (as an operator or auto-align prescribes it
    anew), and a head pose of ``head_max_mm / 2`` to ``head_max_mm`` and ``head_max_deg / 2`` to ``head_max_deg``
    the same way (the participant repositioned); the run's own motion comes on top. ``matrix`` and
    ``voxel_size`` give later sessions another matrix or voxel size (empty: the ``[grid]``'s).
    """

    slab_max_deg: float = 8.0
    slab_max_mm: float = 10.0
    head_max_mm: float = 10.0
    head_max_deg: float = 10.0
    matrix: tuple[int, ...] = ()
    voxel_size: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        _check(0 <= self.slab_max_deg <= 30, f"sessions.slab_max_deg must be in [0, 30], got {self.slab_max_deg}")
        _check(0 <= self.slab_max_mm <= 50, f"sessions.slab_max_mm must be in [0, 50], got {self.slab_max_mm}")
        _check(0 <= self.head_max_mm <= 20, f"sessions.head_max_mm must be in [0, 20], got {self.head_max_mm}")
        _check(0 <= self.head_max_deg <= 20, f"sessions.head_max_deg must be in [0, 20], got {self.head_max_deg}")
        _check(
            self.matrix == () or (len(self.matrix) == 3 and all(2 <= s <= 512 for s in self.matrix)),
            f"sessions.matrix must be empty or 3 integers in [2, 512], got {list(self.matrix)}",
        )
        _check(
            self.voxel_size == () or (len(self.voxel_size) == 3 and all(0.5 <= v <= 20 for v in self.voxel_size)),
            f"sessions.voxel_size must be empty or 3 sizes in [0.5, 20] mm, got {list(self.voxel_size)}",
        )


@dataclass(frozen=True)
class GroupConfig:
    """A group of twins (``fmriface simulate`` writes ``sub-01`` ... ``sub-NN``, a data set each): one hidden face
    code shared by every subject plus one of each subject's own, read out by each subject's own voxels.

    A subject's code is ``sqrt(shared_fraction) * shared + sqrt(1 - shared_fraction) * own`` (both parts unit
    variance per unit, so the code keeps unit variance). Its responsive voxels, their tuning maps, its slab and its
    head position are its own. The first ``shared_faces`` training faces are the same faces for every subject (a
    block of its first training runs, ``stimuli/shared.tsv``): what a new subject is aligned on (the paper's
    test faces stay each subject's own). ``subjects = 1`` is the single twin (nothing shared, nothing mixed).

    ``shared_fraction`` defaults to 0.7: chosen so that a subject aligned on about a tenth of the training faces
    decodes close to its own full model, as Ferrante et al. (2024, Imaging Neuroscience, "Through their eyes")
    report for NSD (cross-subject decoding from the 982 shared images comparable to single-subject decoding);
    ``fmriface fit --align-to`` measures what the twin gives, and a control group with 0 must gain nothing.
    """

    subjects: int = 1
    shared_fraction: float = 0.7
    shared_faces: int = 0
    #: times each shared face is shown (in passes over the block, each in its own order; NSD showed its shared
    #: images three times): the alignment is fitted on their averages
    shared_repeats: int = 1
    #: which subject of the group this data set is (1-based; 0: not a group member) and the group's shared code
    #: seed (set by ``fmriface simulate`` for each subject it writes)
    index: int = 0
    shared_seed: int = 7

    def __post_init__(self) -> None:
        _check(1 <= self.subjects <= 99, f"group.subjects must be in [1, 99], got {self.subjects}")
        _check(0 <= self.shared_fraction <= 1, f"group.shared_fraction must be in [0, 1], got {self.shared_fraction}")
        _check(self.shared_faces >= 0, f"group.shared_faces must be >= 0, got {self.shared_faces}")
        _check(1 <= self.shared_repeats <= 10, f"group.shared_repeats must be in [1, 10], got {self.shared_repeats}")
        _check(0 <= self.index <= self.subjects, f"group.index must be in [0, subjects], got {self.index}")


@dataclass(frozen=True)
class SimulateConfig:
    """Everything ``fmriface simulate`` needs; ``seed`` fixes the stimuli, trials, noise and motion."""

    seed: int = 0
    subject: str = "01"
    image_size: int = 64
    grid: GridConfig = field(default_factory=GridConfig)
    paradigm: ParadigmConfig = field(default_factory=ParadigmConfig)
    signal: SignalConfig = field(default_factory=SignalConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    sessions: SessionsConfig = field(default_factory=SessionsConfig)
    group: GroupConfig = field(default_factory=GroupConfig)

    def __post_init__(self) -> None:
        _check(self.subject.isalnum(), f"subject must be alphanumeric (a BIDS label), got {self.subject!r}")
        _check(16 <= self.image_size <= 1024, f"image_size must be in [16, 1024], got {self.image_size}")
        _check(self.seed >= 0, f"seed must be >= 0, got {self.seed}")
        n_vox = self.grid.shape[0] * self.grid.shape[1] * self.grid.shape[2]
        _check(
            self.signal.n_responsive <= n_vox // 10,
            f"signal.n_responsive ({self.signal.n_responsive}) must be at most a tenth of the grid's {n_vox} voxels",
        )
        if self.group.shared_faces:
            first = self.paradigm.new_face_slots * self.paradigm.train_runs_per_session
            shown = self.group.shared_faces * self.group.shared_repeats
            _check(
                shown <= first,
                f"group.shared_faces x shared_repeats ({shown}) must fit in the first session's training runs"
                f" ({first} new-face slots)",
            )
