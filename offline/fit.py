"""``fmriface fit``: BIDS runs + a VAE-GAN -> trial estimates -> voxels -> mappings -> evaluation -> bundle.

Steps (each reported on stderr):

1. index the BIDS subject; realign every run to the mean of the first run's volumes, each later session (its own
   slab and head position) registered to it across grids first (:mod:`offline.decoding.estimates`);
2. trial estimates of the training, test and imagery trials: window estimates (what the service computes
   online) and per-image GLM betas; repeats averaged;
3. latents of the stimuli in the VAE-GAN face space and in a PCA face space fitted on the training faces;
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

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from offline.decoding.mapping import DEFAULT_ALPHAS
from service.window import WindowSpec

__all__ = ["SelectionConfig", "FitConfig", "FitData", "Heartbeat", "peak_rss_mb", "prepare", "run_fit"]


@dataclass(frozen=True)
class SelectionConfig:
    """Voxel selection: ``method`` mask | contrast | encoding | auto, ``k`` voxels (0 = chosen by CV)."""

    method: Literal["auto", "mask", "contrast", "encoding"] = "auto"
    k: int = 0
    candidates: tuple[int, ...] = (500, 1000, 2000, 4000)
    mask: str = ""
    n_components: int = 64
    #: outer folds of ``auto``'s nested cross-validation (0: the fit's ``n_splits``)
    n_splits: int = 0

    def __post_init__(self) -> None:
        if self.k < 0 or any(c <= 0 for c in self.candidates):
            raise ValueError("selection.k must be >= 0 and selection.candidates positive")
        if self.n_splits == 1 or self.n_splits < 0:
            raise ValueError(f"selection.n_splits must be 0 (the fit's n_splits) or at least 2, got {self.n_splits}")
        if self.method == "mask" and not self.mask:
            raise ValueError("selection.method = 'mask' needs selection.mask (a NIfTI file on the data's grid)")


@dataclass(frozen=True)
class FitConfig:
    """Options of ``fmriface fit`` (presets ``configs/fit-*.toml``)."""

    subject: str = ""
    estimate: Literal["window", "glm"] = "window"
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
    window_start: float = 4.0
    window_stop: float = 8.0
    baseline_start: float = -2.0
    baseline_stop: float = 0.0
    imagery_window_stop: float = 14.0
    poly_order: int = 2
    detrend_scale: Literal["psc", "zscore", "none"] = "psc"
    hrf_model: str = "glover"
    high_pass: float = 0.01
    pca_components: int = 0
    n_permutations: int = 20
    perceptual: bool = True
    seed: int = 0
    threads: int = 2
    #: how each volume is resampled onto the reference grid: ``linear`` or ``cubic`` B-spline (in the bundle,
    #: so ``serve`` resamples live volumes the same way)
    interpolation: Literal["linear", "cubic"] = "linear"
    #: numbers of test repeats averaged for the accuracy-against-repeats curve (empty: not computed), each drawn
    #: ``repeat_draws`` times at random from every face's repeats
    repeats: tuple[int, ...] = ()
    repeat_draws: int = 20
    #: on a twin's data set: the ablation table from its ground truth (true voxels, noise-free BOLD, hidden code)
    ablations: bool = False

    def __post_init__(self) -> None:
        if self.n_splits < 2:
            raise ValueError(f"n_splits must be at least 2, got {self.n_splits}")
        if not self.alphas or any(a <= 0 for a in self.alphas):
            raise ValueError("alphas must be a non-empty list of positive penalties")
        if any(k < 0 for k in self.encoding_components):
            raise ValueError("encoding_components must be >= 0 (0 = every latent direction)")
        if self.n_permutations < 0 or self.pca_components < 0 or self.threads < 1:
            raise ValueError("n_permutations and pca_components must be >= 0, threads >= 1")
        WindowSpec(self.window_start, self.window_stop, self.baseline_start, self.baseline_stop)  # validates
        if any(n < 1 for n in self.repeats) or self.repeat_draws < 1:
            raise ValueError("repeats must be positive numbers of repeats and repeat_draws at least 1")
        if self.interpolation not in ("linear", "cubic"):
            raise ValueError(f"interpolation must be linear or cubic, got {self.interpolation!r}")

    @property
    def window(self) -> WindowSpec:
        return WindowSpec(self.window_start, self.window_stop, self.baseline_start, self.baseline_stop)

    @property
    def imagery_window(self) -> WindowSpec:
        return WindowSpec(self.window_start, self.imagery_window_stop, self.baseline_start, self.baseline_stop)


@dataclass
class FitData:
    """Everything the mappings are fitted and scored on (patterns over brain voxels)."""

    reference: np.ndarray
    affine: np.ndarray
    brain: np.ndarray
    tr: float
    motion: dict[str, np.ndarray]
    train: dict[str, tuple[np.ndarray, list[str], np.ndarray]]  # estimate -> (X [S, V], stim ids, run groups)
    test: dict[str, tuple[np.ndarray, list[str]]]
    imagery: dict[str, tuple[np.ndarray, list[str]]]
    imagery_trials: dict[str, tuple[np.ndarray, list[str]]]
    contrast: np.ndarray | None
    summary: dict[str, Any]
    #: each session's offset from the reference (``SessionOffset.as_record()``), by BIDS session label
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    reference_session: str = ""
    #: single test trials (window: one per trial; GLM: one beta per face and run) over brain voxels, with face ids
    test_trials: dict[str, tuple[np.ndarray, list[str]]] = field(default_factory=dict)
    #: the fitted runs: BIDS stem -> train | test | imagery
    run_kinds: dict[str, str] = field(default_factory=dict)


def _align(x: np.ndarray, ids: list[str], order: list[str]) -> np.ndarray:
    pos = {s: i for i, s in enumerate(ids)}
    return x[[pos[s] for s in order]]


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

    Use as ``with Heartbeat(log) as hb:``; ``hb(msg)`` logs, ``hb.step(name)`` starts a step (and logs it),
    ``hb.bar`` wraps a progress-bar factory so that its bars count as output. A daemon thread waits on an event
    with a timeout (it never delays the fit). ``hb.times`` holds each finished step's seconds.
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
        hb = self

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
                with hb._lock:
                    hb._bars += 1
                return self._bar.__enter__()

            def __exit__(self, *exc):
                with hb._lock:
                    hb._bars -= 1
                    hb._last = time.monotonic()
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
    """Realign, then compute both kinds of trial estimates for training, test and imagery trials.

    ``progress(total=, desc=, unit=)`` makes a progress bar (a context manager with ``update``), e.g. tqdm.
    """
    progress = progress or _NoBar
    from offline.datasets.bids import BidsError, load_bids
    from offline.decoding.estimates import (
        average_by_stimulus,
        combine_contrasts,
        contrast_terms,
        glm_patterns,
        iter_realigned,
        window_patterns,
    )

    subject = load_bids(bids, cfg.subject or None)
    runs = [r for r in subject.runs if r.kind in ("train", "test", "imagery")]
    kinds = {k: sum(r.kind == k for r in runs) for k in ("train", "test", "imagery")}
    if not kinds["train"] or not kinds["test"]:
        raise BidsError(f"{bids}: fitting needs training and test runs of faces; found {kinds}")
    log(f"subject {subject.subject}: {kinds['train']} training, {kinds['test']} test, {kinds['imagery']} imagery runs")
    total = 0
    for r in runs:
        import nibabel as nib

        total += nib.load(str(r.bold)).shape[3]
    estimates = ("window", "glm") if cfg.compare_estimates else (cfg.estimate,)
    log(
        f"realigning to the mean of {runs[0].name} (session {runs[0].session or '-'}: the reference), other"
        f" sessions registered to it first; per run: {' and '.join(estimates)} estimates, contrast"
    )
    parts: dict[str, dict[str, list]] = {e: {"train": [], "test": [], "imagery": []} for e in estimates}
    terms, motion = [], {}
    sessions: dict[str, Any] = {}
    trs = {r.tr for r in runs}
    if len(trs) > 1:
        raise BidsError(f"{bids}: runs have different TRs {sorted(trs)}; fit one TR at a time")
    # one run in memory at a time: realign it, keep only its estimates, contrast terms and motion
    with progress(total=total, desc="realign + estimates", unit="vol") as bar:
        realigned = iter_realigned(subject, runs, on_volume=lambda: bar.update(1), interpolation=cfg.interpolation)
        for gi, item in enumerate(realigned):
            reference, affine, brain, rr = item  # the same reference, affine and mask for every run
            kind = rr.run.kind
            types = {"train": ["train_face"], "test": ["test_face"], "imagery": ["Img"]}[kind]
            for est in estimates:
                if est == "window":
                    spec = cfg.imagery_window if kind == "imagery" else cfg.window
                    pats, trials = window_patterns(rr, types, spec, cfg.poly_order, cfg.detrend_scale)
                    ids = trials["stim_file"].astype(str).tolist()
                else:
                    pats, ids = glm_patterns(rr, types, cfg.hrf_model, cfg.high_pass)
                parts[est][kind].append((pats, ids, [gi] * len(ids)))
            if kind == "train":  # the selection's face contrast: never from the runs the decoding is scored on
                terms.append(contrast_terms(rr, cfg.hrf_model, cfg.high_pass))
            motion[rr.run.name] = rr.motion
            if rr.session is not None and rr.session.label not in sessions:
                sessions[rr.session.label] = rr.session
                if rr.session.registration is not None:
                    rec = rr.session.registration
                    log(
                        f"session {rr.session.label or '-'} registered to the reference: offset {rec['offset']}"
                        f" (mm, degrees), residual {rec['cost']}, overlap {rec['overlap']:.0%}, {rec['seconds']:.2f} s"
                    )
            del rr
    train, test, imagery = {}, {}, {}
    imagery_trials: dict[str, tuple[np.ndarray, list[str]]] = {}
    test_trials: dict[str, tuple[np.ndarray, list[str]]] = {}
    for est in estimates:
        for kind, store in (("train", train), ("test", test), ("imagery", imagery)):
            if not parts[est][kind]:
                continue
            x = np.concatenate([p[0] for p in parts[est][kind]])
            ids = sum((p[1] for p in parts[est][kind]), [])
            groups = sum((p[2] for p in parts[est][kind]), [])
            parts[est][kind] = []  # the per-run copies go: one copy of the trials in memory
            avg, uids, g, _ = average_by_stimulus(x, ids, groups)
            store[est] = (avg, uids, g) if kind == "train" else (avg, uids)
            if kind == "imagery":  # single trials (window) or single runs (GLM) too, for trial-wise scoring
                imagery_trials[est] = (x, ids)
            elif kind == "test" and cfg.repeats:  # for the accuracy against the number of repeats averaged
                test_trials[est] = (x, ids)
            del x
    # the same stimuli, in the same order, for every estimate type
    first = estimates[0]
    for est in estimates[1:]:
        for store in (train, test, imagery):
            if first in store and est in store:
                order = store[first][1]
                if set(store[est][1]) != set(order):
                    raise BidsError(f"{bids}: {est} and {first} estimates cover different stimuli")
                rest = store[est]
                store[est] = (_align(rest[0], rest[1], order), order, *([store[first][2]] if len(rest) == 3 else []))
    contrast = combine_contrasts(terms)
    summary = {
        "bids": str(bids),
        "subject": subject.subject,
        "runs": kinds,
        "volumes": total,
        "brain_voxels": int(brain.sum()),
        "train_stimuli": len(train[first][1]),
        "test_stimuli": len(test[first][1]),
        "imagery_stimuli": len(imagery[first][1]) if imagery else 0,
        "reference": f"mean of the volumes of {runs[0].name}",
        "reference_session": runs[0].session,
    }
    return FitData(
        reference,
        affine,
        brain,
        runs[0].tr,
        motion,
        train,
        test,
        imagery,
        imagery_trials,
        contrast,
        summary,
        sessions={label: ses.as_record() for label, ses in sessions.items()},
        reference_session=runs[0].session,
        test_trials=test_trials,
        run_kinds={r.name: r.kind for r in runs},
    )


def _face_spaces(cfg: FitConfig, data: FitData, bids: Path, vaegan: Path, log):
    """Load the VAE-GAN, fit PCA on the training faces, encode every stimulus in both spaces."""
    from offline.datasets.bids import load_stimuli, stimulus_table
    from offline.facespace import load_facespace, perceptual_features
    from offline.facespace.pca import fit_pca

    est = next(iter(data.train))
    vae = load_facespace(vaegan)
    size = vae.image_size
    ids = {"train": data.train[est][1], "test": data.test[est][1]}
    if data.imagery:
        ids["imagery"] = data.imagery[est][1]
    framing = vae.stimulus_framing
    said = "as the face space's training images" if vae.framing else "(the face space does not say how it framed)"
    log(f"loading {sum(len(v) for v in ids.values())} stimuli at {size}x{size}, framing {framing} {said}")
    images = {k: load_stimuli(bids, v, size, framing) for k, v in ids.items()}
    n_pca = cfg.pca_components or vae.latent_size
    log(f"PCA face space: {n_pca} components on {len(images['train'])} training faces")
    pca = fit_pca(images["train"], n_pca, image_size=size)
    spaces = {"vaegan": vae, "pca": pca}
    latents = {name: {k: sp.encode(im) for k, im in images.items()} for name, sp in spaces.items()}
    floats = {k: im.astype(np.float32) / 255.0 for k, im in images.items()}
    perceptual = (lambda im: perceptual_features(vae, im)) if cfg.perceptual else None
    table = stimulus_table(bids)
    attrs = None
    if table is not None and "stim_file" in table.columns:
        table = table.set_index(table["stim_file"].astype(str))
        names = [c for c in table.columns if c not in ("stim_file", "split") and set(table[c].unique()) <= {-1, 1}]
        if names and all(s in table.index for s in ids["train"] + ids["test"]):
            attrs = {k: table.loc[ids[k], names].to_numpy(np.int8) for k in ("train", "test")}
            attrs["names"] = names
    return spaces, ids, floats, latents, perceptual, attrs


def _where_accuracy_goes(cfg, data, index, bids, fitted, latents, images, spaces, perceptual, make, log) -> dict:
    """The accuracy against the number of test repeats averaged, and the twin's ablation table (see
    :mod:`offline.decoding.ablations`)."""
    from offline.decoding.ablations import ablations, repeats_curve

    out: dict[str, Any] = {}
    est = cfg.estimate
    if cfg.repeats:
        if est != "window":
            out["repeats"] = {"skipped": f"single test trials are window estimates; the fit's estimate is {est}"}
        else:
            x_trials, trial_ids = data.test_trials[est]
            models = {(m, s): fitted[(est, m, s)] for m in ("ridge", "encoding") for s in spaces}
            out["repeats"] = repeats_curve(
                models,
                x_trials[:, index],
                trial_ids,
                data.test[est][1],
                latents,
                images,
                spaces,
                perceptual,
                cfg.repeats,
                cfg.repeat_draws,
                np.random.default_rng([cfg.seed, 18]),
                log,
            )
    if cfg.ablations:
        from offline.twin.truth import TruthError, load_plan

        try:
            plan = load_plan(bids)
        except TruthError as exc:
            log(f"ablations skipped: {exc}")
            out["ablations"] = {"skipped": str(exc)}
            return out
        if "window" not in data.train:
            out["ablations"] = {"skipped": "the ablations compare window estimates; this fit computed none"}
            return out
        x_train, train_ids, groups = data.train["window"]
        out["ablations"] = ablations(
            plan=plan,
            bids_runs=data.run_kinds,
            train_x=x_train,
            train_ids=train_ids,
            train_groups=np.asarray(groups),
            test_x=data.test["window"][0],
            test_ids=data.test["window"][1],
            brain=data.brain,
            affine=data.affine,
            window=cfg.window,
            poly_order=cfg.poly_order,
            scale=cfg.detrend_scale,
            latents=latents,
            images=images,
            spaces=spaces,
            perceptual=perceptual,
            make=make,
            log=log,
        )
    return out


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
    with threadpool_limits(threads, user_api="blas"), Heartbeat(log) as hb:
        return _run_fit(cfg, Path(bids), Path(vaegan), Path(out), hb, progress, threads)


def _run_fit(cfg: FitConfig, bids: Path, vaegan: Path, out: Path, hb: Heartbeat, progress, threads: int) -> dict:
    from offline.decoding.bundle_writer import LinearMap, write_bundle
    from offline.decoding.evaluate import evaluate_decoders
    from offline.decoding.mapping import make_mapping
    from offline.decoding.selection import mask_selection, select_voxels
    from offline.reports.fit_report import write_report

    log = hb
    t0 = time.perf_counter()
    hb.step("realign + estimates")
    data = prepare(cfg, bids, log, hb.bar(progress))
    t_est = time.perf_counter() - t0
    hb.step("face spaces")
    spaces, ids, images, latents, perceptual, attrs = _face_spaces(cfg, data, bids, vaegan, log)
    hb.step("voxel selection")

    x_sel, groups = data.train[cfg.estimate][0], data.train[cfg.estimate][2]
    given = None
    if cfg.selection.method == "mask":
        import nibabel as nib

        given = mask_selection(np.asarray(nib.load(cfg.selection.mask).dataobj), data.brain)
    log(f"voxel selection: {cfg.selection.method}" + (f", k={cfg.selection.k}" if cfg.selection.k else ""))
    sel = select_voxels(
        cfg.selection.method,
        cfg.selection.k,
        x=x_sel,
        z=latents["vaegan"]["train"],
        groups=groups,
        contrast=data.contrast,
        given=given,
        candidates=cfg.selection.candidates,
        alphas=cfg.alphas,
        n_components=cfg.selection.n_components,
        n_splits=cfg.selection.n_splits or cfg.n_splits,
        log=log,
    )
    log(f"selected {int(sel.index.sum())} of {sel.index.size} brain voxels ({sel.method})")

    def make(name: str, **kw):
        base = {"alphas": cfg.alphas, "n_splits": cfg.n_splits, "rescale": cfg.rescale}
        if name == "encoding":
            base["decode_alpha"] = cfg.decode_alpha
            base["n_components"] = cfg.encoding_components
        return make_mapping(name, **{**base, **kw})

    male = None
    if attrs is not None and "Male" in attrs["names"]:
        j = attrs["names"].index("Male")
        male = {k: attrs[k][:, j] for k in ("train", "test")}
    evaluation, fitted = evaluate_decoders(
        train={e: (v[0][:, sel.index], v[2]) for e, v in data.train.items()},
        test={e: v[0][:, sel.index] for e, v in data.test.items()},
        imagery={
            e: (v[0][:, sel.index], data.imagery_trials[e][0][:, sel.index], data.imagery_trials[e][1])
            for e, v in data.imagery.items()
        }
        or None,
        imagery_ids=ids.get("imagery"),
        latents=latents,
        images=images,
        spaces=spaces,
        perceptual=perceptual,
        make=make,
        main=(cfg.estimate, cfg.mapping),
        male=male,
        n_permutations=cfg.n_permutations,
        rng=np.random.default_rng(cfg.seed),
        log=log,
        step=hb.step,
    )
    evaluation["selection"] = sel.summary()
    if cfg.repeats or cfg.ablations:
        hb.step("repeats + ablations")
        evaluation.update(
            _where_accuracy_goes(cfg, data, sel.index, bids, fitted, latents, images, spaces, perceptual, make, log)
        )
    evaluation["perceptual_space"] = (
        "a hidden layer of the trained VAE-GAN's discriminator (no pretrained network can be downloaded here)"
        if cfg.perceptual
        else "not computed (perceptual = false)"
    )
    t_eval = time.perf_counter() - t0

    hb.step("bundle", "writing the bundle")
    if cfg.estimate != "window":
        log(
            f"note: the bundle's mapping is fitted on {cfg.estimate} estimates; `fmriface serve` computes window "
            "estimates and will refuse this bundle (it is for offline use)"
        )
    mask = np.zeros(data.brain.shape, dtype=bool)
    mask[data.brain] = sel.index
    vae = spaces["vaegan"]
    if attrs is not None:
        z = latents["vaegan"]["train"]
        names, dirs = [], []
        for j, name in enumerate(attrs["names"]):
            pos, neg = attrs["train"][:, j] > 0, attrs["train"][:, j] < 0
            if pos.any() and neg.any():
                names.append(name)
                dirs.append(z[pos].mean(0) - z[neg].mean(0))
        directions = np.stack(dirs) if dirs else np.zeros((0, vae.latent_size))
    elif vae.attribute_directions_ is not None:
        names, directions = list(vae.attribute_names), vae.attribute_directions_
    else:
        names, directions = [], np.zeros((0, vae.latent_size))
    training = {**data.summary, "estimate": cfg.estimate, "selection": sel.summary(), "vaegan": str(vaegan)}
    mapping = evaluation["mapping"]  # cfg.mapping, or the one ``auto`` chose
    main_fit = fitted[(cfg.estimate, mapping, "vaegan")]
    bundle = write_bundle(
        out / "bundle",
        reference=data.reference,
        affine=data.affine,
        mask=mask,
        linear_map=LinearMap.from_mapping(main_fit, mapping),
        export_onnx=vae.export_onnx,
        attribute_names=names,
        attribute_directions=directions,
        train_ids=ids["train"],
        train_latents=latents["vaegan"]["train"],
        test_ids=ids["test"],
        test_latents=latents["vaegan"]["test"],
        manifest_fields={
            "package_version": _package_version(),
            "image_shape": [vae.image_size, vae.image_size, 3],
            "image_framing": vae.stimulus_framing,
            "tr": data.tr,
            "window": cfg.window.as_dict(),
            "estimate": cfg.estimate,
            "interpolation": cfg.interpolation,
            "preprocessing": {
                "detrend": (
                    "per run: Legendre drift + the 6 motion parameters within the session"
                    " (service.online.detrend_offline)"
                ),
                "poly_order": cfg.poly_order,
                "motion_regressors": True,
                "scale": cfg.detrend_scale,
                "standardise": "then (x - x_mean) / x_scale over the training trials' window estimates",
            },
            "alpha": float(main_fit.alpha_),
            "rescale": float(main_fit.scale_),
            **({"encoding_components": int(main_fit.n_components_)} if mapping == "encoding" else {}),
            "reference_session": data.reference_session,
            "sessions": data.sessions,
            "training": training,
            "evaluation": {k: evaluation[k] for k in ("pairwise", "pairwise_centred", "permutation", "chance")},
        },
    )
    t_bundle = time.perf_counter() - t0
    timing = {
        "estimates_s": round(t_est, 1),
        "evaluation_s": round(t_eval - t_est, 1),
        "bundle_s": round(t_bundle - t_eval, 1),
    }
    hb.step("report", "writing the report")
    report = write_report(
        out / "report",
        evaluation=evaluation,
        test_images=images["test"],
        recon=fitted["recon"],
        motion=data.motion,
        training=training,
        timing=timing,
    )
    hb.step("")
    timing["steps_s"] = {k: round(v, 1) for k, v in hb.times.items()}
    timing["total_s"] = round(time.perf_counter() - t0, 1)
    peak = peak_rss_mb()
    log(f"done in {timing['total_s']} s; peak memory {peak:.0f} MB; steps (s): {timing['steps_s']}")
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
