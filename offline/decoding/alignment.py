"""A new subject decoded through another subject's decoder: functional alignment on faces both saw.

``fmriface fit --align-to BUNDLE`` fits a new subject from little data. The reference bundle (a subject fitted on
all its sessions) carries its patterns of the *shared faces* (``shared.npz``: the faces every subject of a group
saw, ``stimuli/shared.tsv``). The new subject's patterns of the same faces, standardised, are mapped onto the
reference's standardised patterns by fmralign (:class:`fmralign.methods.RidgeAlignment`, ridge with its penalty
chosen by cross-validation, which Ferrante et al. 2024 found best for decoding; or
:class:`fmralign.methods.Procrustes`, an orthogonal map with a scale, which needs as many voxels on both sides).
The alignment and the reference's mapping are both linear, so the bundle stores their product
(:func:`compose`): ``serve`` decodes an aligned subject at the cost of an unaligned one, by the same code; the
alignment itself is kept in ``alignment.npz`` and described by the manifest's ``alignment``.

*Fine-tuned*: the composed map is then corrected on the new subject's own training data by a ridge regression of
what it leaves unexplained (:func:`fine_tune`: the weights shrink towards the aligned reference's, not towards
zero). :func:`alignment_curve` scores alone / aligned / aligned and fine-tuned against the number of sessions;
:func:`choose_map` picks the bundle's map among them by cross-validation on the training faces, so a bundle uses
the alignment only where it decodes held-out faces better than the subject's own data alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from offline.datasets.bids import SHARED_LIST
from offline.decoding.bundle_writer import LinearMap
from offline.decoding.evaluate import pairwise_accuracy
from offline.decoding.patterns import TrialPatterns

__all__ = [
    "ALIGN_METHODS",
    "AlignConfig",
    "AlignmentError",
    "Reference",
    "read_shared_list",
    "load_reference",
    "check_facespace",
    "check_disjoint",
    "fit_alignment",
    "compose",
    "fine_tune",
    "rescale",
    "run_sessions",
    "aligned_map",
    "check_alignable",
    "alignment_curve",
    "candidate_maps",
    "choose_map",
]

ALIGN_METHODS = ("ridge", "procrustes")
BUNDLE_CHOICES = ("auto", "aligned", "fine_tuned", "alone")


class AlignmentError(ValueError):
    """An alignment that cannot be made; the message names the file or the faces and the problem."""

    user_error = True


@dataclass(frozen=True)
class AlignConfig:
    """``[align]`` of the fit config, ``fit --align-to BUNDLE``.

    Parameters
    ----------
    to : str
        The reference bundle (a subject fitted on its own sessions, with ``shared.npz``); empty: no alignment.
    method : {"ridge", "procrustes"}
        The fmralign method mapping the new subject's voxels onto the reference's.
    sessions : int
        The new subject's sessions (in acquisition order) the bundle is fitted on.
    curve : tuple of int
        Numbers of sessions in the evaluation table (those the data set has).
    bundle : {"auto", "aligned", "fine_tuned", "alone"}
        The bundle's mapping: the aligned reference, it fine-tuned on the subject's own data, the subject's own
        ridge mapping, or (``auto``) whichever of the three decodes the subject's held-out training faces best in
        cross-validation grouped by run (:func:`choose_map`): alignment is used only where it helps.
    alphas : tuple of float
        Penalties tried by the ridge alignment and the fine-tuning (chosen by cross-validation).
    """

    to: str = ""
    method: str = "ridge"
    sessions: int = 1
    curve: tuple[int, ...] = (1, 2, 4, 8)
    bundle: str = "auto"
    alphas: tuple[float, ...] = (1.0, 10.0, 100.0, 1e3, 1e4, 1e5)

    def __post_init__(self) -> None:
        if self.bundle not in BUNDLE_CHOICES:
            raise ValueError(f"align.bundle must be one of {', '.join(BUNDLE_CHOICES)}, got {self.bundle!r}")
        if self.method not in ALIGN_METHODS:
            raise ValueError(f"align.method must be one of {', '.join(ALIGN_METHODS)}, got {self.method!r}")
        if self.sessions < 1 or any(n < 1 for n in self.curve):
            raise ValueError("align.sessions and align.curve must be numbers of sessions >= 1")
        if not self.alphas or any(a <= 0 for a in self.alphas):
            raise ValueError("align.alphas must be a non-empty list of positive penalties")


@dataclass(frozen=True)
class Reference:
    """What a new subject is aligned to: the reference bundle's mapping and its patterns of the shared faces."""

    path: Path
    manifest_sha256: str
    linear: LinearMap
    shared_ids: list[str]
    shared_x: np.ndarray  # [K, V_ref] raw patterns on the reference's mask voxels
    latents: dict[str, np.ndarray] = field(default_factory=dict)  # stimulus -> latent (the face-space check)

    def shared_z(self, ids: Sequence[str]) -> np.ndarray:
        """The reference's standardised patterns (as its mapping reads them) of the shared faces ``ids``."""
        pos = {s: i for i, s in enumerate(self.shared_ids)}
        x = self.shared_x[[pos[s] for s in ids]]
        return (x - self.linear.x_mean) / self.linear.x_scale


def read_shared_list(bids: str | Path) -> list[str]:
    """The shared faces of a data set (``stimuli/shared.tsv``, column ``stim_file``); empty when it has none."""
    import pandas as pd

    path = Path(bids) / SHARED_LIST
    if not path.is_file():
        return []
    table = pd.read_csv(path, sep="\t", dtype=str)
    if "stim_file" not in table.columns:
        raise AlignmentError(f"{path}: no stim_file column (one shared face per row)")
    return [str(s) for s in table["stim_file"]]


def load_reference(path: str | Path) -> Reference:
    """The reference bundle (verified by :func:`service.bundle.load_bundle`) and its shared-face patterns."""
    from service.bundle import BundleError, load_bundle, sha256_file

    try:
        bundle = load_bundle(path)
    except BundleError as exc:
        raise AlignmentError(f"--align-to: {exc}") from None
    shared = bundle.path / "shared.npz"
    if not shared.is_file():
        raise AlignmentError(
            f"--align-to {bundle.path}: the bundle has no shared.npz (fit it on a data set whose stimuli/shared.tsv"
            " lists the faces every subject saw)"
        )
    with np.load(shared, allow_pickle=False) as z:
        ids, x = [str(s) for s in z["ids"]], z["x"].astype(np.float64)
    if x.shape != (len(ids), bundle.n_voxels):
        raise AlignmentError(f"{shared}: x has shape {x.shape}, expected ({len(ids)}, {bundle.n_voxels})")
    linear = LinearMap(
        bundle.weights.astype(np.float64),
        bundle.bias.astype(np.float64),
        bundle.x_mean.astype(np.float64),
        bundle.x_scale.astype(np.float64),
        str(bundle.manifest.get("mapping_method", "")),
    )
    latents = dict(zip(bundle.stimulus_ids, bundle.stimulus_latents))
    return Reference(bundle.path, sha256_file(bundle.path / "manifest.json"), linear, ids, x, latents)


def check_facespace(ref: Reference, ids: Sequence[str], latents: np.ndarray, tol: float = 1e-3) -> None:
    """Refuse a face space other than the reference's: the shared faces must have the same latents in both (only
    they: another stimulus of the same name may be another face, as each subject has its own)."""
    shared = set(ref.shared_ids) & set(ref.latents)  # the same faces for both subjects (other names may not be)
    common = [i for i, s in enumerate(ids) if s in shared]
    if not common:
        raise AlignmentError(f"{ref.path}: none of the reference's shared faces is among this fit's training faces")
    mine = np.asarray(latents)[common]
    theirs = np.stack([ref.latents[ids[i]] for i in common])
    worst = float(np.max(np.abs(mine - theirs)))
    if worst > tol * max(1.0, float(np.abs(theirs).max())):
        raise AlignmentError(
            f"{ref.path}: the face space differs from the reference bundle's (the shared faces' latents differ by up"
            f" to {worst:.3g}); fit with the --vaegan the reference was fitted with"
        )


def check_disjoint(shared: Sequence[str], test: Sequence[str]) -> None:
    """Refuse an alignment whose faces include a test face (its score would no longer be held out)."""
    both = sorted(set(shared) & set(test))
    if both:
        raise AlignmentError(
            f"{len(both)} test face(s) are among the shared faces the alignment is fitted on ({', '.join(both[:3])}"
            f"{' ...' if len(both) > 3 else ''}): the test faces must stay out of the alignment"
        )


def fit_alignment(z_new: np.ndarray, z_ref: np.ndarray, method: str, alphas: Sequence[float]):
    """``(matrix [V, V_ref], offset [V_ref])`` with ``z_ref ~ z_new @ matrix + offset``, fitted by fmralign."""
    from fmralign.methods import Procrustes, RidgeAlignment

    if method == "procrustes":
        if z_new.shape[1] != z_ref.shape[1]:
            raise AlignmentError(
                f"procrustes aligns as many voxels on both sides: this subject has {z_new.shape[1]}, the reference"
                f" {z_ref.shape[1]} (use method ridge, or select {z_ref.shape[1]} voxels)"
            )
        fitted = Procrustes(scaling=True).fit(z_new, z_ref)
        return np.asarray(fitted.R) * float(fitted.scale), np.zeros(z_ref.shape[1])
    cv = max(2, min(5, len(z_new) // 4))
    fitted = RidgeAlignment(alphas=list(alphas), cv=cv).fit(z_new, z_ref)
    return np.asarray(fitted.R.coef_).T, np.asarray(fitted.R.intercept_)


def compose(ref: LinearMap, matrix: np.ndarray, offset: np.ndarray, x_mean, x_scale, method: str) -> LinearMap:
    """The reference's mapping read through the alignment: one linear map on this subject's voxels."""
    weights = matrix @ ref.weights
    bias = offset @ ref.weights + ref.bias
    return LinearMap(weights, bias, np.asarray(x_mean, np.float64), np.asarray(x_scale, np.float64), method)


def _predict(lm: LinearMap, x: np.ndarray) -> np.ndarray:
    return ((x - lm.x_mean) / lm.x_scale) @ lm.weights + lm.bias


def fine_tune(lm: LinearMap, x: np.ndarray, y: np.ndarray, alphas: Sequence[float], groups=None) -> LinearMap:
    """``lm`` corrected on the subject's own patterns ``x`` and latents ``y``: a ridge fit (penalty by grouped
    cross-validation) of the residual ``y - lm(x)``, added to ``lm``'s weights."""
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import GroupKFold, KFold

    z = (x - lm.x_mean) / lm.x_scale
    resid = y - _predict(lm, x)
    if groups is not None and len(np.unique(groups)) >= 2:
        cv = list(GroupKFold(n_splits=min(5, len(np.unique(groups)))).split(z, groups=groups))
    else:
        cv = list(KFold(n_splits=max(2, min(5, len(z) // 4))).split(z))
    ridge = RidgeCV(alphas=list(alphas), cv=cv).fit(z, resid)
    return LinearMap(lm.weights + ridge.coef_.T, lm.bias + ridge.intercept_, lm.x_mean, lm.x_scale, lm.method)


def rescale(lm: LinearMap, x: np.ndarray, y: np.ndarray) -> LinearMap:
    """``lm`` with its predictions' deviations from the mean training latent scaled by one factor, so that on the
    training patterns ``x`` they spread as much as the training latents ``y`` do (as the fit's mappings do with
    ``rescale``: a shrunk map otherwise decodes every face as the mean face, and the paper's uncentred pairwise
    correlations are then decided by the mean latent). One positive factor changes no centred correlation."""
    centre = y.mean(0)
    spread = float((_predict(lm, x) - centre).std())
    factor = float((y - centre).std()) / spread if spread > 1e-12 else 1.0
    return LinearMap(lm.weights * factor, lm.bias * factor + (1.0 - factor) * centre, lm.x_mean, lm.x_scale, lm.method)


_SESSION = re.compile(r"_ses-([A-Za-z0-9]+)_")


def run_sessions(run_names: Sequence[str]) -> np.ndarray:
    """Each fitted run's session ordinal (1 = the first session met, in run order), from its BIDS name."""
    order: dict[str, int] = {}
    out = []
    for name in run_names:
        m = _SESSION.search(f"{name}_")
        label = m.group(1) if m else ""
        out.append(order.setdefault(label, len(order) + 1))
    return np.asarray(out, dtype=np.int64)


def check_alignable(ref: Reference, ids: Sequence[str], least: int = 4) -> None:
    """Refuse training faces that hold fewer than ``least`` of the reference's shared faces."""
    n = len(set(ref.shared_ids) & set(ids))
    if n < least:
        raise AlignmentError(
            f"only {n} of the reference's {len(ref.shared_ids)} shared faces are among this subject's training"
            " faces in these sessions: too few to align on"
        )


def aligned_map(ref: Reference, train: TrialPatterns, cfg: AlignConfig) -> tuple[LinearMap, np.ndarray, Any]:
    """The reference's mapping through the alignment fitted on the shared faces among ``train``'s rows."""
    check_alignable(ref, train.ids)
    shared = set(ref.shared_ids)
    rows = [i for i, s in enumerate(train.ids) if s in shared]
    x_mean, x_scale = train.x.mean(0), train.x.std(0) + 1e-9
    z_new = (train.x[rows] - x_mean) / x_scale
    matrix, offset = fit_alignment(z_new, ref.shared_z([train.ids[i] for i in rows]), cfg.method, cfg.alphas)
    lm = compose(ref.linear, matrix, offset, x_mean, x_scale, f"aligned ({cfg.method}) {ref.linear.method}")
    return lm, matrix, (offset, [train.ids[i] for i in rows])


def alignment_curve(
    train: TrialPatterns,
    test: TrialPatterns,
    latents: dict[str, np.ndarray],
    sessions: np.ndarray,
    ref: Reference,
    cfg: AlignConfig,
    select: Callable[[TrialPatterns, np.ndarray], np.ndarray],
    make: Callable[..., Any],
    log=print,
) -> dict[str, Any]:
    """Pairwise latent accuracy on the test faces against the subject's sessions: alone, aligned, aligned and
    fine-tuned.

    ``train``/``test`` are over brain voxels (``train.runs`` index ``sessions``); ``latents`` holds ``train`` and
    ``test`` latents in their rows' order; ``select(patterns, latents) -> bool [V]`` picks the voxels from the
    sessions used; ``make("ridge")`` an unfitted mapping (the fit's penalties and folds).
    """
    check_disjoint(ref.shared_ids, test.ids)
    available = int(sessions.max())
    rows = []
    for n in sorted({min(n, available) for n in cfg.curve}):
        keep = sessions[np.asarray(train.runs)] <= n
        part = TrialPatterns(train.x[keep], [s for s, k in zip(train.ids, keep) if k], np.asarray(train.runs)[keep])
        y = latents["train"][keep]
        index = select(part, y)
        sub = part.select(index)
        x_test = test.x[:, index]
        maps = candidate_maps(ref, sub, y, cfg, make)
        used = len(set(ref.shared_ids) & set(sub.ids))
        centre, true = y.mean(0), latents["test"]
        scores = {}
        for name, key in (("alone", "alone"), ("aligned", "aligned"), ("aligned_fine_tuned", "fine_tuned")):
            pred = _predict_any(maps[key], x_test)
            scores[name] = round(pairwise_accuracy(pred, true).accuracy, 4)
            scores[f"{name}_centred"] = round(pairwise_accuracy(pred - centre, true - centre).accuracy, 4)
        row = {"sessions": n, "train_faces": len(sub), "shared_faces": used, "voxels": int(index.sum()), **scores}
        log(f"alignment, {n} session(s): {row}")
        rows.append(row)
    metric = "pairwise latent accuracy (VAE-GAN), test faces; _centred: both sides centred on the mean training latent"
    return {"method": cfg.method, "metric": metric, "rows": rows}


def candidate_maps(ref: Reference, train: TrialPatterns, y: np.ndarray, cfg: AlignConfig, make) -> dict[str, Any]:
    """The three maps a new subject's bundle may use, fitted on ``train`` (selected voxels) and latents ``y``:
    ``aligned``, ``fine_tuned`` (both :class:`LinearMap`, rescaled) and ``alone`` (a fitted ridge mapping)."""
    aligned, _, _ = aligned_map(ref, train, cfg)
    tuned = fine_tune(aligned, train.x, y, cfg.alphas, groups=train.runs)
    return {
        "aligned": rescale(aligned, train.x, y),
        "fine_tuned": rescale(tuned, train.x, y),
        "alone": make("ridge").fit(train.x, y, groups=train.runs),
    }


def _predict_any(model, x: np.ndarray) -> np.ndarray:
    return _predict(model, x) if isinstance(model, LinearMap) else model.predict(x)


def choose_map(ref: Reference, train: TrialPatterns, y: np.ndarray, cfg: AlignConfig, make, log=print) -> dict:
    """Score the candidate maps on held-out training faces (folds grouped by run; 5 contiguous folds within one
    run) by centred pairwise accuracy; ``{"scores": {name: mean accuracy}, "chosen": name, ...}``.

    Only faces that are not among the reference's shared faces are scored: the reference's mapping was fitted on
    the shared faces (with their latents), so through the alignment it would "decode" them from memory. Where no
    such face is held out (a first session whose training faces are all shared), nothing is scored and ``auto``
    takes ``fine_tuned`` (the aligned map corrected on the subject's own data), saying so. ``cfg.bundle`` other
    than ``auto`` is taken as it is.
    """
    from sklearn.model_selection import GroupKFold, KFold

    runs = np.asarray(train.runs)
    n_runs = len(np.unique(runs))
    folds = (
        GroupKFold(n_splits=min(5, n_runs)).split(train.x, groups=runs)
        if n_runs >= 2
        else KFold(n_splits=5).split(train.x)
    )
    shared = set(ref.shared_ids)
    clean = np.array([s not in shared for s in train.ids])
    scores: dict[str, list[float]] = {"aligned": [], "fine_tuned": [], "alone": []}
    for fit_rows, held in folds:
        held = held[clean[held]]
        if len(held) < 10:  # too few faces the reference never saw to score on
            continue
        part = TrialPatterns(train.x[fit_rows], [train.ids[i] for i in fit_rows], runs[fit_rows])
        centre = y[fit_rows].mean(0)
        try:
            maps = candidate_maps(ref, part, y[fit_rows], cfg, make)
        except AlignmentError:  # too few shared faces in this fold: the fold scores nothing
            continue
        for name, model in maps.items():
            pred = _predict_any(model, train.x[held])
            scores[name].append(pairwise_accuracy(pred - centre, y[held] - centre).accuracy)
    means = {k: round(float(np.mean(v)), 4) for k, v in scores.items() if v}
    if cfg.bundle != "auto":
        chosen, why = cfg.bundle, "asked for (align.bundle)"
    elif means:
        chosen, why = max(means, key=means.get), "the best held-out score"
    else:
        chosen = "fine_tuned"
        why = "no held-out training face outside the shared faces to score on: the aligned map, fine-tuned"
    folds_scored = len(scores["alone"])
    log(f"the bundle's map: {chosen} ({why}); held-out scores {means} over {folds_scored} fold(s)")
    return {"scores": means, "chosen": chosen, "why": why, "folds": folds_scored}
