"""Start-up of the service: the checks that say what to fix, run ids, logging, provenance of a run."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from service.bundle import Bundle, BundleError, load_bundle
from service.live.config import ServeConfig
from service.live.publisher import check_bindable
from service.live.runlog import read_volumes
from service.live.trials import read_events_tsv
from service.preprocess import PreprocessSpec, online_estimators

__all__ = [
    "StartupError",
    "default_run_id",
    "choose_run_id",
    "files_of_ended_runs",
    "setup_logging",
    "startup_checks",
    "check_bundle_estimator",
    "read_target_image",
    "limit_blas",
    "versions",
    "config_record",
]

log = logging.getLogger("service.live.serve")


class StartupError(ValueError):
    """A start-up check failed; the message says what to fix."""

    user_error = True


def default_run_id(watch: Path) -> str:
    """A run id stable for a watched folder: ``run-<hash of its absolute path>``.

    The folder's name is not used: scanner export folders are often named after the patient.
    """
    return "run-" + hashlib.sha256(str(watch.resolve()).encode()).hexdigest()[:10]


def _runs_of_folder(cfg: ServeConfig) -> Iterator[tuple[str, str | None]]:
    """The runs of this watch folder in order, ``(run id, state)``: the base id, then ``<base>-2``, ``-3`` ...,
    up to and including the first that has not ended (state None: no manifest yet, or one that cannot be read)."""
    base = cfg.run_id or default_run_id(Path(cfg.watch))
    n = 1
    while True:
        run_id = base if n == 1 else f"{base}-{n}"
        try:
            state = json.loads((Path(cfg.runs) / run_id / "manifest.json").read_text()).get("state")
        except (OSError, json.JSONDecodeError, AttributeError):
            state = None
        yield run_id, state
        if state != "ended":
            return
        n += 1


def files_of_ended_runs(cfg: ServeConfig, run_id: str) -> tuple[set[tuple[str, str]], list[str]]:
    """(file name, SHA-256) of every volume that the ended runs of this watch folder before ``run_id`` already
    decoded, and those runs' ids: a serve restarted on the folder after a run ended starts a new run, and must
    not decode the old run's files again as if they were new."""
    files: set[tuple[str, str]] = set()
    runs: list[str] = []
    for rid, state in _runs_of_folder(cfg):
        if rid == run_id or state != "ended":
            break
        runs.append(rid)
        for rec in read_volumes(Path(cfg.runs) / rid):
            if rec.get("status") in ("ok", "discarded") and rec.get("file") and rec.get("sha256"):
                files.add((str(rec["file"]), str(rec["sha256"])))
    return files, runs


def choose_run_id(cfg: ServeConfig) -> str:
    """The run to serve: the first of this folder's runs that has not ended (a new one, or one to resume)."""
    for run_id, state in _runs_of_folder(cfg):
        if state == "ended" and cfg.run_id:
            raise StartupError(f"run {Path(cfg.runs) / run_id} already ended; pass another --run-id or --runs folder")
    return run_id


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {"time": record.created, "level": record.levelname, "logger": record.name, "msg": record.getMessage()}
        )


def setup_logging(json_log: bool = False, level: int = logging.INFO) -> None:
    """Log on stderr, as text or one JSON object per line: the service's messages from ``level`` up, and the
    warnings and errors of the libraries it uses (watchdog, pyzmq), so ``--json-log`` output stays JSON lines."""
    formatter = _JsonFormatter() if json_log else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    ours = logging.getLogger("service")
    ours.handlers[:] = [handler]
    ours.setLevel(level)
    ours.propagate = False
    libraries = logging.StreamHandler(sys.stderr)
    libraries.setFormatter(formatter)
    libraries.setLevel(logging.WARNING)
    libraries.name = "fmriface-libraries"
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if h.name != libraries.name] + [libraries]
    # pydicom warns once per malformed file; the intake error it leads to already quotes its words
    logging.getLogger("pydicom").setLevel(logging.ERROR)


def versions() -> dict[str, str]:
    """Versions of Python and the packages the service runs on, for the run's manifest."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for pkg in ("fmriface", "numpy", "scipy", "nibabel", "pyzmq", "onnxruntime"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "absent"
    return out


def startup_checks(cfg: ServeConfig) -> tuple[Bundle, list[dict[str, Any]]]:
    """The start-up checks; returns the bundle and the events file's trials. Each failure says what to fix."""
    events: list[dict[str, Any]] = []
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
    check_bundle_estimator(cfg, bundle)
    check_qa_config(cfg, bundle)
    fitted = bundle.manifest.get("interpolation")
    if cfg.interpolation and fitted and cfg.interpolation != fitted:  # allowed (to compare), but said
        log.warning(
            "interpolation %s was asked for, but the bundle's training volumes were resampled %s: the live voxels "
            "will be smoothed differently from those the mapping was fitted on",
            cfg.interpolation,
            fitted,
        )
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
        try:
            events = read_events_tsv(cfg.events)
        except (OSError, ValueError) as exc:
            raise StartupError(f"{exc}; fix --events (a BIDS events.tsv)") from None
    if cfg.target_stim:
        try:
            bundle.stimulus_latent(cfg.target_stim)
        except BundleError as exc:
            raise StartupError(f"target_stim: {exc}; use a file name from the bundle's attributes.npz") from None
    if cfg.target_image is not None and not Path(cfg.target_image).is_file():
        raise StartupError(f"target image {cfg.target_image} does not exist")
    return bundle, events


def check_qa_config(cfg: ServeConfig, bundle: Bundle) -> list[str]:
    """Warn when the serve's ``[qa]`` thresholds differ from those the fit judged its volumes with (the manifest's
    ``qa``; a bundle without one says nothing): online and offline would censor different volumes (docs/qa.md).
    ``maps_every`` (the display's) is not compared. Returns the differences, one ``name serve (fit)`` each."""
    fitted = bundle.manifest.get("qa")
    if not isinstance(fitted, dict):
        return []
    ours = cfg.qa.as_dict()
    differ = [
        f"{k} {ours[k]!r} (fit: {fitted[k]!r})"
        for k in ours
        if k != "maps_every" and k in fitted and fitted[k] != ours[k]
    ]
    if differ:
        log.warning(
            "the [qa] thresholds differ from those the bundle's fit censored its volumes with: %s; the live run "
            "will censor differently from the fit",
            "; ".join(differ),
        )
    return differ


def check_bundle_estimator(cfg: ServeConfig, bundle: Bundle) -> None:
    """Refuse to decode with trial patterns other than those the bundle's mapping was fitted on.

    The mapping standardises its input with the training trials' mean and scale, so the service must compute
    the same kind of estimate, over the same window, after the same detrending and scaling: the bundle's
    :class:`~service.preprocess.PreprocessSpec`. Otherwise every latent is off by an unknown offset and scale,
    silently. The bundle's estimate must have an online form, and a serve config that states a spec of its own
    must state the bundle's (the resampling kernel aside: ``interpolation`` may differ, with a warning).
    """
    where = bundle.path / "manifest.json"
    try:
        fitted = PreprocessSpec.from_manifest(bundle.manifest)
    except (TypeError, ValueError) as exc:
        raise StartupError(f"{where}: the preprocessing it records is unusable: {exc}") from None
    if not fitted.estimator.online:
        raise StartupError(
            f"{where}: the mapping was fitted on {fitted.estimate!r} estimates, which the service cannot compute "
            f"live (it computes {', '.join(online_estimators())}); refit with estimate = 'window' "
            "(GLM betas can be compared offline with compare_estimates = true)"
        )
    if cfg.preprocess is None:
        return
    differ = cfg.preprocess.differences(fitted, ignore=("interpolation",))
    if differ:
        raise StartupError(
            f"{where}: the serve settings differ from those the mapping was fitted with: {'; '.join(differ)}; "
            "leave [preprocess] out of the serve config (the bundle's is used) or refit"
        )


def read_target_image(path: Path, bundle: Bundle) -> Any:
    """A target face image file as ``uint8 [H, W, 3]`` at the bundle's image size, framed as the face space's
    training images were (the manifest's ``image_framing``; bundles that do not say are only resized)."""
    from PIL import Image

    from service.framing import check_framing, frame_image

    try:
        framing = check_framing(bundle.manifest.get("image_framing", "resize"))
    except ValueError as exc:
        raise StartupError(f"{bundle.path / 'manifest.json'}: image_framing: {exc}") from None
    h, _, _ = bundle.image_shape
    try:
        with Image.open(path) as img:
            return frame_image(img, h, framing)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise StartupError(f"target image {path} cannot be read: {exc}") from None


def limit_blas(threads: int) -> Any:
    """Limit numpy's BLAS thread pool for this process (threadpoolctl where installed)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        log.warning("threadpoolctl is not installed: set OPENBLAS_NUM_THREADS=%d for steady latency", threads)
        return None
    return threadpool_limits(limits=threads, user_api="blas")


def config_record(cfg: ServeConfig) -> dict[str, Any]:
    """The serve config as the run's manifest records it (paths as strings)."""
    from dataclasses import asdict, fields, is_dataclass

    out = {}
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        if is_dataclass(v):  # a table ([watcher], [inbound], ...); the watcher's folder is the watched one
            v = {k: x for k, x in asdict(v).items() if (f.name, k) != ("watcher", "folder")}
        out[f.name] = str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v
    # the watched folder's path may name the patient (export folders often do): keep only a hash of it
    out["watch"] = None if cfg.watch is None else default_run_id(Path(cfg.watch)).replace("run-", "sha256:")
    return out
