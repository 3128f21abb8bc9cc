"""``fmriface fit``: BIDS runs + a VAE-GAN -> trial estimates -> voxels -> mappings -> evaluation -> bundle.

Steps (each reported on stderr):

1. index the BIDS subject; realign every run to the mean of the first run's volumes, each later session (its own
   slab and head position) registered to it across grids first (:mod:`offline.decoding.estimates`);
2. trial estimates of the training, test and imagery trials: window estimates (what the service computes
   online) and per-image GLM betas; repeats averaged (:class:`offline.decoding.patterns.EstimatePatterns`);
3. latents of the stimuli in the VAE-GAN face space and in a PCA face space fitted on the training faces
   (:class:`offline.decoding.facespaces.FaceSpaces`);
4. voxel selection (:mod:`offline.decoding.selection`) on the bundle's estimate type;
5. every mapping (ridge, encoding) x face space (vaegan, pca) x estimate type, scored on the test faces in
   latent, pixel and perceptual space; gender, imagery and the permutation control
   (:func:`offline.decoding.evaluate.evaluate_decoders`);
6. the bundle (the configured mapping on the configured estimate, VAE-GAN space) and the report.

Every step writes a line at least every 10 s (:class:`Heartbeat`; the realignment's progress bar counts); the
summary carries each step's seconds (``timing_s.steps_s``) and the peak resident memory (``peak_rss_mb``). The
linear algebra is shared wherever the numbers allow: one decomposition per fold for every penalty, mapping and
face space (:func:`offline.decoding.mapping.fit_shared`), one for every shuffle of the permutation control, and
nested candidates of the voxel selection share their Gram blocks
(:func:`offline.decoding.selection.nested_ridge_predictions`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from offline.decoding.alignment import AlignConfig
from offline.decoding.facespaces import FaceSpaces
from offline.decoding.mapping import DEFAULT_ALPHAS
from offline.decoding.patterns import EstimatePatterns, TrialPatterns
from offline.decoding.selection import Selection, SelectionConfig
from service.preprocess import ESTIMATORS, PreprocessSpec, get_estimator, online_estimators
from service.window import WindowSpec

__all__ = ["SelectionConfig", "FitConfig", "FitData", "Heartbeat", "peak_rss_mb", "prepare", "run_fit"]

SPLITS = ("train", "test", "imagery")


@dataclass(frozen=True)
class FitConfig:
    """Options of ``fmriface fit`` (presets ``configs/fit-*.toml``)."""

    subject: str = ""
    #: what fit and serve must agree on (``[preprocess]``, ``[preprocess.window]``): the trial estimate the
    #: bundle's mapping is fitted on, the trial window, the detrending, the scaling and the resampling kernel; the
    #: bundle's manifest records it (:meth:`service.preprocess.PreprocessSpec.to_manifest`)
    preprocess: PreprocessSpec = field(default_factory=PreprocessSpec)
    #: every registered trial estimate is computed and scored, not only ``preprocess.estimate``
    compare_estimates: bool = True
    #: the bundle's mapping: ``ridge``, ``encoding`` (the paper's) or ``auto`` (whichever cross-validates better on
    #: the training runs; both are always fitted and scored)
    mapping: Literal["ridge", "encoding", "auto"] = "ridge"
    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    decode_alpha: float = 0.0
    encoding_components: tuple[int, ...] = (16, 32, 64, 128, 256, 0)
    rescale: bool = True
    n_splits: int = 5
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    #: the imagery trials' window ends here (seconds after onset); the rest of their window is ``preprocess.window``
    imagery_window_stop: float = 14.0
    hrf_model: str = "glover"
    high_pass: float = 0.01
    pca_components: int = 0
    n_permutations: int = 20
    perceptual: bool = True
    seed: int = 0
    threads: int = 2
    #: numbers of test repeats averaged for the accuracy-against-repeats curve (empty: not computed), each drawn
    #: ``repeat_draws`` times at random from every face's repeats
    repeats: tuple[int, ...] = ()
    repeat_draws: int = 20
    #: on a twin's data set: the ablation table from its ground truth (true voxels, noise-free BOLD, hidden code)
    ablations: bool = False
    #: ``[align]``: a new subject fitted from little data through another subject's bundle (``--align-to``)
    align: AlignConfig = field(default_factory=AlignConfig)
    #: fit the bundle on the training runs of the first ``sessions`` sessions only (0: all; with ``--align-to``,
    #: ``align.sessions`` says it); the test and imagery runs are scored whatever their session
    sessions: int = 0

    def __post_init__(self) -> None:
        if self.n_splits < 2:
            raise ValueError(f"n_splits must be at least 2, got {self.n_splits}")
        if not self.alphas or any(a <= 0 for a in self.alphas):
            raise ValueError("alphas must be a non-empty list of positive penalties")
        if any(k < 0 for k in self.encoding_components):
            raise ValueError("encoding_components must be >= 0 (0 = every latent direction)")
        if self.n_permutations < 0 or self.pca_components < 0 or self.threads < 1:
            raise ValueError("n_permutations and pca_components must be >= 0, threads >= 1")
        if any(n < 1 for n in self.repeats) or self.repeat_draws < 1:
            raise ValueError("repeats must be positive numbers of repeats and repeat_draws at least 1")
        if self.sessions < 0:
            raise ValueError(f"sessions must be >= 0 (0: every session), got {self.sessions}")

    @property
    def window(self) -> WindowSpec:
        """The trial window (``preprocess.window``)."""
        return self.preprocess.window

    @property
    def imagery_window(self) -> WindowSpec:
        """The imagery trials' window: ``preprocess.window`` ending at ``imagery_window_stop``."""
        return dataclasses.replace(self.preprocess.window, stop=self.imagery_window_stop)

    @property
    def estimates(self) -> tuple[str, ...]:
        """The trial estimates the fit computes: every registered one with ``compare_estimates`` (in the order of
        :data:`service.preprocess.ESTIMATORS`), else ``preprocess.estimate``."""
        return tuple(ESTIMATORS) if self.compare_estimates else (self.preprocess.estimate,)


@dataclass
class FitData:
    """Everything the mappings are fitted and scored on (patterns over brain voxels)."""

    reference: np.ndarray
    affine: np.ndarray
    brain: np.ndarray
    tr: float
    motion: dict[str, np.ndarray]
    #: estimate type (window, glm) -> its patterns over brain voxels, the same stimuli in the same order for each
    estimates: dict[str, EstimatePatterns]
    contrast: np.ndarray | None
    summary: dict[str, Any]
    #: each session's offset from the reference (``SessionOffset.as_record()``), by BIDS session label
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    reference_session: str = ""
    #: the fitted runs: BIDS stem -> train | test | imagery
    run_kinds: dict[str, str] = field(default_factory=dict)


@dataclass
class _Realigned:
    """What :func:`prepare` keeps of the realigned runs: the grid, each run's trial patterns per estimate type and
    split, the training runs' contrast terms, the motion and the sessions."""

    parts: dict[str, dict[str, list[TrialPatterns]]]
    reference: np.ndarray | None = None
    affine: np.ndarray | None = None
    brain: np.ndarray | None = None
    terms: list = field(default_factory=list)
    motion: dict[str, np.ndarray] = field(default_factory=dict)
    sessions: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Attributes:
    """The stimuli's binary attributes (1 / -1) from the data set's stimulus table."""

    names: list[str]
    train: np.ndarray  # int8 [N_train, A]
    test: np.ndarray  # int8 [N_test, A]

    def labels(self, name: str) -> dict[str, np.ndarray] | None:
        """``{"train", "test"}`` -> the labels of attribute ``name``, or None without it."""
        if name not in self.names:
            return None
        j = self.names.index(name)
        return {"train": self.train[:, j], "test": self.test[:, j]}


class _NoBar:
    def __init__(self, **_: Any) -> None:
        pass

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def update(self, n: int = 1) -> None:
        pass


class Heartbeat:
    """A log that is never silent for long: when no line was written for ``interval`` seconds (and no progress
    bar is open, which reports itself), it writes one naming the step that is running and its time so far.

    Use as ``with Heartbeat(log) as heartbeat:``; ``heartbeat(msg)`` logs, ``heartbeat.step(name)`` starts a step
    (and logs it), ``heartbeat.bar`` wraps a progress-bar factory so that its bars count as output. A daemon thread
    waits on an event with a timeout (it never delays the fit). ``heartbeat.times`` holds each finished step's
    seconds.
    """

    def __init__(self, log, interval: float = 10.0):
        import threading

        self._log = log
        self.interval = interval
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fit-heartbeat", daemon=True)
        self._last = time.monotonic()
        self._name = ""
        self._started = self._last
        self._bars = 0
        self.times: dict[str, float] = {}

    def __call__(self, msg: str) -> None:
        """Log ``msg`` and restart the silence clock."""
        with self._lock:
            self._last = time.monotonic()
        self._log(msg)

    def step(self, name: str, msg: str | None = None) -> None:
        """End the running step (its time into ``times``) and start ``name``."""
        now = time.monotonic()
        with self._lock:
            if self._name:
                self.times[self._name] = self.times.get(self._name, 0.0) + now - self._started
            self._name, self._started = name, now
        if msg is not None:
            self(msg)

    def bar(self, progress):
        """``progress`` (a bar factory, or None) wrapped so that an open bar silences the heartbeat."""
        if progress is None:
            return None
        heartbeat = self

        class _Bar:
            def __init__(self, **kw):
                import sys

                if not getattr(sys.stderr, "isatty", lambda: False)():
                    # into a log file: a bar line every ~5 s (and at every update's check, not tqdm's adaptive
                    # skipping), so that the bar, which silences the heartbeat, still writes within 10 s
                    kw.setdefault("mininterval", 5.0)
                    kw.setdefault("miniters", 1)
                self._bar = progress(**kw)

            def __enter__(self):
                with heartbeat._lock:
                    heartbeat._bars += 1
                return self._bar.__enter__()

            def __exit__(self, *exc):
                with heartbeat._lock:
                    heartbeat._bars -= 1
                    heartbeat._last = time.monotonic()
                return self._bar.__exit__(*exc)

        return _Bar

    def _run(self) -> None:
        wait = self.interval
        while not self._stop.wait(wait):
            now = time.monotonic()
            with self._lock:
                quiet = now - self._last
                name, started, bars = self._name, self._started, self._bars
            if quiet >= self.interval and not bars:
                self(f"{name or 'working'}: still running ({now - started:.0f} s in this step)")
                wait = self.interval
            else:
                wait = max(0.2, self.interval - quiet)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.step("")
        self._stop.set()
        self._thread.join()


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, MB (``getrusage``)."""
    import resource
    import sys

    scale = 1.0 / 1024 if sys.platform != "darwin" else 1.0 / 1024 / 1024  # kB on Linux, bytes on macOS
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(own * scale, 1)


def prepare(cfg: FitConfig, bids: Path, log, progress=None) -> FitData:
    """Realign, then compute the trial estimates (``cfg.estimates``) of the training, test and imagery trials.

    ``progress(total=, desc=, unit=)`` makes a progress bar (a context manager with ``update``), e.g. tqdm.
    """
    import nibabel as nib

    from offline.datasets.bids import BidsError, load_bids
    from offline.datasets.checks import check_inputs
    from offline.decoding.estimates import combine_contrasts

    progress = progress or _NoBar
    # every input checked before the first expensive step, every problem named at once
    problems = check_inputs(bids, cfg.subject or None)
    if problems:
        listed = "\n".join(f"  - {p}" for p in problems)
        raise BidsError(f"{bids}: {len(problems)} problem(s) in the fit's inputs:\n{listed}")
    subject = load_bids(bids, cfg.subject or None)
    runs = [r for r in subject.runs if r.kind in SPLITS]
    kinds = {k: sum(r.kind == k for r in runs) for k in SPLITS}
    if not kinds["train"] or not kinds["test"]:
        raise BidsError(f"{bids}: fitting needs training and test runs of faces; found {kinds}")
    log(f"subject {subject.subject}: {kinds['train']} training, {kinds['test']} test, {kinds['imagery']} imagery runs")
    total = sum(nib.load(str(r.bold)).shape[3] for r in runs)
    estimates = cfg.estimates
    log(
        f"realigning to the mean of {runs[0].name} (session {runs[0].session or '-'}: the reference), other"
        f" sessions registered to it first; per run: {' and '.join(estimates)} estimates, contrast"
    )
    trs = {r.tr for r in runs}
    if len(trs) > 1:
        raise BidsError(f"{bids}: runs have different TRs {sorted(trs)}; fit one TR at a time")
    with progress(total=total, desc="realign + estimates", unit="vol") as bar:
        realigned = _realign_and_estimate(cfg, subject, runs, estimates, bar, log)
    patterns = _averaged_patterns(cfg, realigned.parts, estimates, bids)
    first = patterns[estimates[0]]
    reference_run = runs[0]
    summary = {
        "bids": str(bids),
        "subject": subject.subject,
        "runs": kinds,
        "volumes": total,
        "brain_voxels": int(realigned.brain.sum()),
        "train_stimuli": len(first.train),
        "test_stimuli": len(first.test),
        "imagery_stimuli": len(first.imagery) if first.imagery is not None else 0,
        "reference": f"mean of the volumes of {reference_run.name}",
        "reference_session": reference_run.session,
    }
    return FitData(
        reference=realigned.reference,
        affine=realigned.affine,
        brain=realigned.brain,
        tr=reference_run.tr,
        motion=realigned.motion,
        estimates=patterns,
        contrast=combine_contrasts(realigned.terms),
        summary=summary,
        sessions={label: ses.as_record() for label, ses in realigned.sessions.items()},
        reference_session=reference_run.session,
        run_kinds={r.name: r.kind for r in runs},
    )


def _realign_and_estimate(cfg: FitConfig, subject, runs: list, estimates: tuple[str, ...], bar, log) -> _Realigned:
    """Realign the runs one at a time, keeping only each run's trial patterns, contrast terms and motion (one run
    in memory at a time)."""
    from offline.decoding.estimates import contrast_terms, iter_realigned

    kept = _Realigned(parts={name: {kind: [] for kind in SPLITS} for name in estimates})
    realigned = iter_realigned(
        subject, runs, on_volume=lambda: bar.update(1), interpolation=cfg.preprocess.interpolation
    )
    for run_index, item in enumerate(realigned):
        # the same reference, affine and mask for every run
        kept.reference, kept.affine, kept.brain, realigned_run = item
        kind = realigned_run.run.kind
        for name in estimates:
            kept.parts[name][kind].append(_run_patterns(cfg, realigned_run, name, run_index))
        if kind == "train":  # the selection's face contrast: never from the runs the decoding is scored on
            kept.terms.append(contrast_terms(realigned_run, cfg.hrf_model, cfg.high_pass))
        kept.motion[realigned_run.run.name] = realigned_run.motion
        session = realigned_run.session
        if session is not None and session.label not in kept.sessions:
            kept.sessions[session.label] = session
            if session.registration is not None:
                registration = session.registration
                log(
                    f"session {session.label or '-'} registered to the reference: offset {registration['offset']}"
                    f" (mm, degrees), residual {registration['cost']}, overlap {registration['overlap']:.0%},"
                    f" {registration['seconds']:.2f} s"
                )
        del realigned_run
    return kept


#: The trial types of each kind of run.
TRIAL_TYPES = {"train": ["train_face"], "test": ["test_face"], "imagery": ["Img"]}


def _run_patterns(cfg: FitConfig, realigned_run, estimate: str, run_index: int) -> TrialPatterns:
    """One realigned run's trial estimates of the registered estimator ``estimate`` (its offline form,
    :meth:`service.preprocess.Estimator.offline_function`); ``run_index``: the run's position among the fit's."""
    from offline.decoding.estimates import EstimateOptions

    kind = realigned_run.run.kind
    spec = cfg.preprocess.replace(estimate=estimate)
    if kind == "imagery":
        spec = spec.replace(window=cfg.imagery_window)
    offline_form = get_estimator(estimate).offline_function()
    options = EstimateOptions(hrf_model=cfg.hrf_model, high_pass=cfg.high_pass)
    patterns, rows = offline_form(realigned_run, TRIAL_TYPES[kind], spec, options)
    ids = rows["stim_file"].astype(str).tolist()
    return TrialPatterns(patterns, ids, np.full(len(ids), run_index, dtype=np.int64))


def _averaged_patterns(
    cfg: FitConfig, parts: dict[str, dict[str, list[TrialPatterns]]], estimates: tuple[str, ...], bids: Path
) -> dict[str, EstimatePatterns]:
    """Each estimate type's runs joined and averaged per stimulus (keeping the single imagery trials, and the
    single test trials when the repeats curve wants them), every type in the first type's stimulus order."""
    from offline.datasets.bids import BidsError
    from offline.decoding.estimates import average_by_stimulus

    splits: dict[str, dict[str, TrialPatterns]] = {name: {} for name in estimates}
    for name in estimates:
        for kind in SPLITS:
            if not parts[name][kind]:
                continue
            trials = TrialPatterns.concat(parts[name][kind])
            parts[name][kind] = []  # the per-run copies go: one copy of the trials in memory
            averaged, stimulus_ids, first_runs, _ = average_by_stimulus(trials.x, trials.ids, trials.runs)
            splits[name][kind] = TrialPatterns(averaged, stimulus_ids, first_runs)
            if kind == "imagery":  # single trials (window) or single runs (GLM) too, for trial-wise scoring
                splits[name]["imagery_trials"] = trials
            elif kind == "test" and cfg.repeats:  # for the accuracy against the number of repeats averaged
                splits[name]["test_trials"] = trials
            del trials
    # the same stimuli, in the same order, for every estimate type: those every type estimated (a trial whose
    # window volumes the QA censored has no window estimate, while a GLM still fits the rest of its run)
    for kind in SPLITS:
        present = [name for name in estimates if kind in splits[name]]
        if len(present) < 2:
            continue
        common = set.intersection(*(set(splits[name][kind].ids) for name in present))
        if not common:
            raise BidsError(f"{bids}: the {', '.join(present)} estimates of the {kind} runs share no stimulus")
        base = splits[present[0]][kind]
        keep = np.array([i for i, s in enumerate(base.ids) if s in common], dtype=np.int64)
        order = TrialPatterns(base.x[keep], [base.ids[i] for i in keep], np.asarray(base.runs)[keep])
        for name in present:
            left_out = len(set(splits[name][kind].ids) - common)
            if left_out:
                logging.getLogger("offline.fit").warning(
                    "%s: %d %s stimuli of the %s estimates left out of every estimate type: another type has "
                    "none for them (their trials' volumes censored by the QA)",
                    bids,
                    left_out,
                    kind,
                    name,
                )
            splits[name][kind] = splits[name][kind].in_order_of(order)
    return {name: EstimatePatterns(**split) for name, split in splits.items()}


def _face_spaces(cfg: FitConfig, data: FitData, bids: Path, vaegan: Path, log) -> tuple[FaceSpaces, _Attributes | None]:
    """Load the VAE-GAN, fit PCA on the training faces, encode every stimulus in both spaces; the stimuli's
    attributes when the data set's stimulus table has them."""
    from offline.datasets.bids import load_stimuli
    from offline.facespace import load_facespace, perceptual_features
    from offline.facespace.pca import fit_pca

    first = next(iter(data.estimates.values()))
    vae = load_facespace(vaegan)
    size = vae.image_size
    ids = {"train": first.train.ids, "test": first.test.ids}
    if first.imagery is not None:
        ids["imagery"] = first.imagery.ids
    framing = vae.stimulus_framing
    said = "as the face space's training images" if vae.framing else "(the face space does not say how it framed)"
    log(f"loading {sum(len(v) for v in ids.values())} stimuli at {size}x{size}, framing {framing} {said}")
    images = {k: load_stimuli(bids, v, size, framing) for k, v in ids.items()}
    n_pca = cfg.pca_components or vae.latent_size
    log(f"PCA face space: {n_pca} components on {len(images['train'])} training faces")
    pca = fit_pca(images["train"], n_pca, image_size=size)
    spaces = {"vaegan": vae, "pca": pca}
    faces = FaceSpaces(
        spaces=spaces,
        latents={name: {k: sp.encode(im) for k, im in images.items()} for name, sp in spaces.items()},
        images={k: im.astype(np.float32) / 255.0 for k, im in images.items()},
        perceptual=(lambda im: perceptual_features(vae, im)) if cfg.perceptual else None,
        make=_mapping_factory(cfg),
        ids=ids,
    )
    return faces, _stimulus_attributes(bids, ids)


def _mapping_factory(cfg: FitConfig):
    """``make(name, **params)``: an unfitted mapping with the fit's penalties, folds and rescaling."""
    from offline.decoding.mapping import make_mapping

    def make(name: str, **kw):
        base = {"alphas": cfg.alphas, "n_splits": cfg.n_splits, "rescale": cfg.rescale}
        if name == "encoding":
            base["decode_alpha"] = cfg.decode_alpha
            base["n_components"] = cfg.encoding_components
        return make_mapping(name, **{**base, **kw})

    return make


def _stimulus_attributes(bids: Path, ids: dict[str, list[str]]) -> _Attributes | None:
    """The binary (1 / -1) columns of the stimulus table for the training and test stimuli, if it covers them."""
    from offline.datasets.bids import stimulus_table

    table = stimulus_table(bids)
    if table is None or "stim_file" not in table.columns:
        return None
    table = table.set_index(table["stim_file"].astype(str))
    names = [c for c in table.columns if c not in ("stim_file", "split") and set(table[c].unique()) <= {-1, 1}]
    if not names or not all(s in table.index for s in ids["train"] + ids["test"]):
        return None
    train, test = (table.loc[ids[k], names].to_numpy(np.int8) for k in ("train", "test"))
    return _Attributes(names, train, test)


def _given_mask(cfg: FitConfig, data: FitData) -> np.ndarray | None:
    """The voxel mask ``selection.method = "mask"`` names, over the brain voxels (None for the other methods)."""
    if cfg.selection.method != "mask":
        return None
    import nibabel as nib

    from offline.decoding.selection import mask_selection

    return mask_selection(np.asarray(nib.load(cfg.selection.mask).dataobj), data.brain)


def _select(cfg: FitConfig, data: FitData, faces: FaceSpaces, log) -> Selection:
    """Voxel selection on the bundle's estimate type's training patterns."""
    from offline.decoding.selection import select_voxels

    train = data.estimates[cfg.preprocess.estimate].train
    given = _given_mask(cfg, data)
    log(f"voxel selection: {cfg.selection.method}" + (f", k={cfg.selection.k}" if cfg.selection.k else ""))
    selection = select_voxels(
        cfg.selection,
        x=train.x,
        z=faces.latents["vaegan"]["train"],
        groups=train.runs,
        contrast=data.contrast,
        given=given,
        alphas=cfg.alphas,
        n_splits=cfg.n_splits,
        log=log,
    )
    log(f"selected {int(selection.index.sum())} of {selection.index.size} brain voxels ({selection.method})")
    return selection


def _evaluate(
    cfg: FitConfig, data: FitData, faces: FaceSpaces, attrs, selection: Selection, bids: Path, heartbeat: Heartbeat
) -> tuple:
    """Every mapping, face space and estimate type scored on the selected voxels; the repeats curve and the
    ablations when asked for (:func:`offline.decoding.evaluate.evaluate_decoders`)."""
    from offline.decoding.evaluate import evaluate_decoders

    evaluation, fitted = evaluate_decoders(
        {name: patterns.select(selection.index) for name, patterns in data.estimates.items()},
        faces,
        main=(cfg.preprocess.estimate, cfg.mapping),
        male=None if attrs is None else attrs.labels("Male"),
        n_permutations=cfg.n_permutations,
        rng=np.random.default_rng(cfg.seed),
        log=heartbeat,
        step=heartbeat.step,
    )
    evaluation["selection"] = selection.summary()
    if cfg.repeats or cfg.ablations:
        heartbeat.step("repeats + ablations")
        if cfg.repeats:
            evaluation["repeats"] = _repeats(cfg, data, selection.index, fitted, faces, heartbeat)
        if cfg.ablations:
            evaluation["ablations"] = _ablations(cfg, data, bids, faces, heartbeat)
    evaluation["perceptual_space"] = (
        "a hidden layer of the trained VAE-GAN's discriminator (no pretrained network can be downloaded here)"
        if cfg.perceptual
        else "not computed (perceptual = false)"
    )
    return evaluation, fitted


def _repeats(cfg: FitConfig, data: FitData, index: np.ndarray, fitted: dict, faces: FaceSpaces, log) -> dict:
    """The accuracy against the number of test repeats averaged (:func:`offline.decoding.ablations.repeats_curve`)."""
    from offline.decoding.ablations import repeats_curve

    estimate = cfg.preprocess.estimate
    if estimate != "window":
        return {"skipped": f"single test trials are window estimates; the fit's estimate is {estimate}"}
    patterns = data.estimates[estimate]
    return repeats_curve(
        {(m, s): fitted[(estimate, m, s)] for m in ("ridge", "encoding") for s in faces.names},
        patterns.test_trials.select(index),
        patterns.test.ids,
        faces,
        cfg.repeats,
        cfg.repeat_draws,
        np.random.default_rng([cfg.seed, 18]),
        log,
    )


def _ablations(cfg: FitConfig, data: FitData, bids: Path, faces: FaceSpaces, log) -> dict:
    """The twin's ablation table (:func:`offline.decoding.ablations.ablations`), or why there is none."""
    from offline.decoding.ablations import ablations
    from offline.twin.truth import TruthError, load_plan

    try:
        plan = load_plan(bids)
    except TruthError as exc:
        log(f"ablations skipped: {exc}")
        return {"skipped": str(exc)}
    if "window" not in data.estimates:
        return {"skipped": "the ablations compare window estimates; this fit computed none"}
    return ablations(
        plan,
        data.estimates["window"],
        faces,
        run_kinds=data.run_kinds,
        brain=data.brain,
        affine=data.affine,
        spec=cfg.window,
        poly_order=cfg.preprocess.poly_order,
        scale=cfg.preprocess.scale,
        log=log,
    )


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fmriface")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree that is not installed
        return "unknown"


def run_fit(
    cfg: FitConfig, bids: str | Path, vaegan: str | Path, out: str | Path, log=print, progress=None
) -> dict[str, Any]:
    """The whole fit; writes ``out/bundle/`` and ``out/report/``; returns the summary the command prints.

    ``log(message)`` reports each step; ``progress`` makes progress bars (see :func:`prepare`).
    """
    import os

    import torch
    from threadpoolctl import threadpool_limits

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    threads = max(1, min(cfg.threads, cores))  # more threads than cores only oversubscribe them
    torch.set_num_threads(threads)
    with threadpool_limits(threads, user_api="blas"), Heartbeat(log) as heartbeat:
        return _run_fit(cfg, Path(bids), Path(vaegan), Path(out), heartbeat, progress, threads)


def _run_fit(cfg: FitConfig, bids: Path, vaegan: Path, out: Path, heartbeat: Heartbeat, progress, threads: int) -> dict:
    """The fit's steps in order, each timed by the heartbeat."""
    from offline.reports.fit_report import write_report

    started = time.perf_counter()
    heartbeat.step("realign + estimates")
    data = prepare(cfg, bids, heartbeat, heartbeat.bar(progress))
    t_est = time.perf_counter() - started
    heartbeat.step("face spaces")
    faces, attrs = _face_spaces(cfg, data, bids, vaegan, heartbeat)
    everything = (data, faces)
    if cfg.align.to:  # a new subject: the bundle on its first sessions only, through the reference's decoder
        heartbeat.step("alignment", f"aligning to {cfg.align.to} ({cfg.align.method})")
        reference = _reference(cfg, faces)
    first = cfg.align.sessions if cfg.align.to else cfg.sessions
    if first:
        data, faces, attrs = _first_sessions(data, faces, attrs, first, heartbeat)
    if cfg.align.to:  # refused now, not after the evaluation
        from offline.decoding.alignment import check_alignable

        check_alignable(reference, data.estimates[cfg.preprocess.estimate].train.ids)
    heartbeat.step("voxel selection")
    selection = _select(cfg, data, faces, heartbeat)
    evaluation, fitted = _evaluate(cfg, data, faces, attrs, selection, bids, heartbeat)
    aligned = None
    if cfg.align.to:
        heartbeat.step("alignment curve")
        evaluation["alignment"] = _alignment_curve(cfg, *everything, reference, heartbeat)
        aligned = _aligned_bundle_map(cfg, data, faces, selection, reference, heartbeat)
        evaluation["alignment"]["bundle"] = aligned["record"]
    t_eval = time.perf_counter() - started

    heartbeat.step("bundle", "writing the bundle")
    estimate = cfg.preprocess.estimate
    if not cfg.preprocess.estimator.online:
        heartbeat(
            f"note: the bundle's mapping is fitted on {estimate} estimates; `fmriface serve` computes"
            f" {' and '.join(online_estimators())} estimates and will refuse this bundle (it is for offline use)"
        )
    training = {**data.summary, "estimate": estimate, "selection": selection.summary(), "vaegan": str(vaegan)}
    bundle = _write_bundle(cfg, data, faces, attrs, selection, evaluation, fitted, training, out / "bundle", aligned)
    t_bundle = time.perf_counter() - started
    timing = {
        "estimates_s": round(t_est, 1),
        "evaluation_s": round(t_eval - t_est, 1),
        "bundle_s": round(t_bundle - t_eval, 1),
    }
    heartbeat.step("report", "writing the report")
    report = write_report(
        out / "report",
        evaluation=evaluation,
        test_images=faces.images["test"],
        recon=fitted["recon"],
        motion=data.motion,
        training=training,
        timing=timing,
    )
    heartbeat.step("")
    timing["steps_s"] = {k: round(v, 1) for k, v in heartbeat.times.items()}
    timing["total_s"] = round(time.perf_counter() - started, 1)
    peak = peak_rss_mb()
    heartbeat(f"done in {timing['total_s']} s; peak memory {peak:.0f} MB; steps (s): {timing['steps_s']}")
    return {
        "bundle": str(bundle.path),
        "report": str(report),
        "pairwise": evaluation["pairwise"],
        "permutation_mean": evaluation["permutation"].get("mean"),
        "n_voxels": bundle.n_voxels,
        "reference_session": data.reference_session,
        "session_offsets": {label: rec["offset"] for label, rec in data.sessions.items()},
        "timing_s": timing,
        "peak_rss_mb": peak,
        "threads": threads,
    }


def _attribute_directions(faces: FaceSpaces, attrs: _Attributes | None):
    """The bundle's attribute directions: from the stimuli's attributes when the data set has them, else the
    face space's own (``attributes.npz`` of its training), else none."""
    from offline.decoding.bundle_writer import AttributeDirections
    from offline.facespace import directions_from_latents

    vae = faces.spaces["vaegan"]
    if attrs is not None:
        names, directions = directions_from_latents(
            faces.latents["vaegan"]["train"], attrs.train, attrs.names, vae.latent_size
        )
        return AttributeDirections(list(names), directions)
    if vae.attribute_directions_ is not None:
        return AttributeDirections(list(vae.attribute_names), vae.attribute_directions_)
    return AttributeDirections([], np.zeros((0, vae.latent_size)))


def _write_bundle(
    cfg, data: FitData, faces: FaceSpaces, attrs, selection: Selection, evaluation, fitted, training, out, aligned=None
):
    """The bundle: the chosen mapping (VAE-GAN space) on the selected voxels of the reference grid, or with
    ``aligned`` (``--align-to``) the reference's mapping through the alignment; the subject's patterns of the shared
    faces when its data set lists them (``shared.npz``: what a later subject aligns on)."""
    from offline.decoding.alignment import read_shared_list
    from offline.decoding.bundle_writer import LinearMap, StimulusLatents, write_bundle

    mask = np.zeros(data.brain.shape, dtype=bool)
    mask[data.brain] = selection.index
    mapping = evaluation["mapping"]  # cfg.mapping, or the one ``auto`` chose
    main_fit = fitted[(cfg.preprocess.estimate, mapping, "vaegan")]
    vae = faces.spaces["vaegan"]
    fields = _manifest_fields(cfg, data, vae, main_fit, mapping, training, evaluation)
    extra = {}
    train = data.estimates[cfg.preprocess.estimate].train
    shared = set(read_shared_list(data.summary["bids"]))
    rows = [i for i, s in enumerate(train.ids) if s in shared]
    if rows:
        extra["shared.npz"] = {"ids": np.array([train.ids[i] for i in rows]), "x": train.x[rows][:, selection.index]}
    linear_map = LinearMap.from_mapping(main_fit, mapping)
    if aligned is not None:
        linear_map = aligned["map"]
        if aligned["arrays"] is not None:  # the alignment is in the mapping
            extra["alignment.npz"] = aligned["arrays"]
        fields["alignment"] = aligned["record"]
    return write_bundle(
        out,
        reference=data.reference,
        affine=data.affine,
        mask=mask,
        linear_map=linear_map,
        export_onnx=vae.export_onnx,
        attributes=_attribute_directions(faces, attrs),
        train=StimulusLatents(faces.ids["train"], faces.latents["vaegan"]["train"]),
        test=StimulusLatents(faces.ids["test"], faces.latents["vaegan"]["test"]),
        manifest_fields=fields,
        extra=extra,
    )


def _reference(cfg: FitConfig, faces: FaceSpaces):
    """The reference bundle, checked against this fit: the same face space, no test face among the shared ones."""
    from offline.decoding.alignment import check_disjoint, check_facespace, load_reference

    reference = load_reference(cfg.align.to)
    check_facespace(reference, faces.ids["train"], faces.latents["vaegan"]["train"])
    check_disjoint(reference.shared_ids, faces.ids["test"])
    return reference


def _first_sessions(data: FitData, faces: FaceSpaces, attrs, n: int, log):
    """The fit's data with the training faces of its first ``n`` sessions only (test and imagery kept: they are
    scored, never fitted on)."""
    from offline.decoding.alignment import run_sessions

    sessions = run_sessions(list(data.run_kinds))
    if n > sessions.max():
        log(f"note: --align-sessions {n}, the data set has {int(sessions.max())} session(s): all are used")
    estimates = {}
    keep = None
    for name, est in data.estimates.items():
        keep = sessions[np.asarray(est.train.runs)] <= n
        train = TrialPatterns(est.train.x[keep], [s for s, k in zip(est.train.ids, keep) if k], est.train.runs[keep])
        estimates[name] = dataclasses.replace(est, train=train)
    assert keep is not None
    latents = {sp: {**by, "train": by["train"][keep]} for sp, by in faces.latents.items()}
    ids = {**(faces.ids or {}), "train": [s for s, k in zip(faces.ids["train"], keep) if k]}
    images = {**faces.images, "train": faces.images["train"][keep]}
    log(f"the bundle is fitted on {int(keep.sum())} of {keep.size} training faces (the first {n} session(s))")
    if attrs is not None:
        attrs = dataclasses.replace(attrs, train=attrs.train[keep])
    data = dataclasses.replace(data, estimates=estimates)
    return data, dataclasses.replace(faces, latents=latents, ids=ids, images=images), attrs


def _voxel_chooser(cfg: FitConfig, data: FitData):
    """``select(patterns, latents) -> bool [V]``: the fit's voxel selection on the given training patterns."""
    from offline.decoding.selection import select_voxels

    given = _given_mask(cfg, data)

    def select(part: TrialPatterns, latents: np.ndarray) -> np.ndarray:
        chosen = select_voxels(
            cfg.selection,
            x=part.x,
            z=latents,
            groups=part.runs,
            contrast=data.contrast,
            given=given,
            alphas=cfg.alphas,
            n_splits=cfg.n_splits,
        )
        return chosen.index

    return select


def _alignment_curve(cfg: FitConfig, data: FitData, faces: FaceSpaces, reference, log) -> dict:
    """The table of :func:`offline.decoding.alignment.alignment_curve` on every session the data set has."""
    from offline.decoding.alignment import alignment_curve, run_sessions

    est = data.estimates[cfg.preprocess.estimate]
    curve = alignment_curve(
        est.train,
        est.test,
        {k: faces.latents["vaegan"][k] for k in ("train", "test")},
        run_sessions(list(data.run_kinds)),
        reference,
        cfg.align,
        _voxel_chooser(cfg, data),
        faces.make,
        log,
    )
    return {"reference": str(reference.path), "reference_manifest_sha256": reference.manifest_sha256, **curve}


def _aligned_bundle_map(cfg: FitConfig, data: FitData, faces: FaceSpaces, selection: Selection, reference, log):
    """The bundle's mapping for a new subject: the reference's through the alignment, that fine-tuned, or the
    subject's own, as ``align.bundle`` says (``auto``: the best in cross-validation on the training faces)."""
    from offline.decoding.alignment import aligned_map, candidate_maps, choose_map

    train = data.estimates[cfg.preprocess.estimate].train.select(selection.index)
    y = faces.latents["vaegan"]["train"]
    choice = choose_map(reference, train, y, cfg.align, faces.make, log)
    maps = candidate_maps(reference, train, y, cfg.align, faces.make)
    _, matrix, (offset, used) = aligned_map(reference, train, cfg.align)
    chosen = choice["chosen"]
    lm = maps[chosen]
    if chosen == "alone":
        from offline.decoding.bundle_writer import LinearMap

        lm = LinearMap.from_mapping(lm, "ridge (the subject's own: the alignment did not help)")
    else:
        lm = dataclasses.replace(lm, method=lm.method + (", fine-tuned" if chosen == "fine_tuned" else ""))
    record = {
        "method": cfg.align.method,
        "library": _library_version("fmralign"),
        "reference_bundle": str(reference.path),
        "reference_manifest_sha256": reference.manifest_sha256,
        "shared_faces": used,
        "sessions": cfg.align.sessions,
        "mapping": chosen,
        "cross_validation": choice,
        "voxels": [int(matrix.shape[0]), int(matrix.shape[1])],
    }
    log(f"bundle: {lm.method} on {matrix.shape[0]} voxels ({len(used)} shared faces aligned on)")
    arrays = {"matrix": matrix.astype(np.float32), "offset": np.asarray(offset, np.float32)}
    return {"map": lm, "arrays": None if chosen == "alone" else arrays, "record": record}


def _library_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{name} {version(name)}"
    except PackageNotFoundError:
        return name


def _manifest_fields(cfg: FitConfig, data: FitData, vae, main_fit, mapping: str, training: dict, evaluation) -> dict:
    """What the fit adds to the bundle's manifest (docs/bundle.md)."""
    from service.qa import QAConfig  # the thresholds its realignment judged with (iter_realigned's default)

    return {
        "package_version": _package_version(),
        "image_shape": [vae.image_size, vae.image_size, 3],
        "image_framing": vae.stimulus_framing,
        "tr": data.tr,
        **cfg.preprocess.to_manifest(),  # window, estimate, interpolation, preprocessing
        "alpha": float(main_fit.alpha_),
        "rescale": float(main_fit.scale_),
        **({"encoding_components": int(main_fit.n_components_)} if mapping == "encoding" else {}),
        "reference_session": data.reference_session,
        "sessions": data.sessions,
        "training": training,
        "evaluation": {k: evaluation[k] for k in ("pairwise", "pairwise_centred", "permutation", "chance")},
        "qa": QAConfig().as_dict(),  # serve warns when its [qa] differs (docs/qa.md)
    }
