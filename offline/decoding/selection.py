"""Voxel selection: a given mask, the face-vs-fixation contrast, or a cross-validated encoding model (top k).

Every method works on the brain voxels of the realigned runs (``np.flatnonzero(brain_mask)`` order) and returns
a boolean index over them. ``auto`` picks the method and k whose selection gives the best cross-validated
ridge decoding of the training latents (grouped by run).

``auto`` is nested: in every fold the encoding ranking is recomputed on the training part only, so a
candidate's score never rests on voxels chosen with the held-out trials (ranking on all trials first and
cross-validating afterwards is circular and always favours the encoding ranking). The face-vs-fixation
contrast carries no latent information, so it is computed once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from offline.decoding.mapping import cv_splits, standardise

__all__ = [
    "SelectionConfig",
    "RANKINGS",
    "Selection",
    "encoding_scores",
    "top_k",
    "mask_selection",
    "select_voxels",
    "nested_ridge_predictions",
]


#: the rankings ``auto`` chooses among
RANKINGS = ("contrast", "encoding")


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
class Selection:
    """The chosen voxels (bool over brain voxels) and how they were chosen."""

    index: np.ndarray
    method: str
    k: int
    scores: np.ndarray | None = None
    cv: dict = field(default_factory=dict)
    n_splits: int = 0  # outer folds of auto's nested cross-validation (0: none was run)

    def summary(self) -> dict:
        """The JSON record of the selection (method, k, voxels kept, cross-validation, outer folds)."""
        out = {"method": self.method, "k": self.k, "n_voxels": int(self.index.sum()), "cv": self.cv}
        return {**out, "n_splits": self.n_splits} if self.n_splits else out


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Bool index of the ``k`` highest finite scores."""
    s = np.where(np.isfinite(scores), scores, -np.inf)
    k = int(min(k, np.isfinite(scores).sum()))
    idx = np.zeros(len(s), dtype=bool)
    if k > 0:
        idx[np.argpartition(-s, k - 1)[:k]] = True
    return idx


def encoding_scores(
    x: np.ndarray,
    z: np.ndarray,
    groups: np.ndarray | None,
    alpha: float = 1.0,
    n_components: int = 64,
    n_splits: int = 5,
) -> np.ndarray:
    """Cross-validated encoding fit per voxel: correlation of held-out predicted and measured responses.

    The voxels ``x [N, V]`` are predicted from the latents ``z [N, L]`` reduced to their first
    ``n_components`` principal components (enough to rank voxels, and fast with tens of thousands of voxels).
    """
    x = np.asarray(x, dtype=np.float32)
    z = np.asarray(z, dtype=np.float64)
    n, v = x.shape
    total = x.sum(axis=0, dtype=np.float64)
    sums = {k: np.zeros(v) for k in ("p", "pp", "xp")}
    for train, test in cv_splits(n, groups, n_splits):
        zm = z[train].mean(0)
        _, _, vt = np.linalg.svd(z[train] - zm, full_matrices=False)
        r = min(n_components, vt.shape[0])
        zt = (z[train] - zm) @ vt[:r].T
        scale = zt.std(0)
        scale[scale == 0] = 1.0
        padded = np.zeros((n, r), dtype=np.float32)  # training rows only: no copy of x[train]
        padded[train] = zt / scale
        x_test = x[test]
        xm = (total - x_test.sum(axis=0, dtype=np.float64)) / len(train)
        gram = padded.T.astype(np.float64) @ padded
        w = np.linalg.solve(gram + alpha * np.eye(r), (padded.T @ x).astype(np.float64))  # z_train centred
        pred = ((z[test] - zm) @ vt[:r].T / scale) @ w + xm
        sums["p"] += pred.sum(0)
        sums["pp"] += (pred * pred).sum(0)
        sums["xp"] += (x_test * pred).sum(0)
    mx = total / n
    cov = sums["xp"] / n - mx * sums["p"] / n
    var_x = x.var(axis=0, dtype=np.float64)
    var_p = sums["pp"] / n - (sums["p"] / n) ** 2
    den = np.sqrt(np.maximum(var_x * var_p, 0))
    return np.divide(cov, den, out=np.zeros(v), where=den > 1e-12)


def mask_selection(given_mask: np.ndarray, brain_mask: np.ndarray) -> np.ndarray:
    """Bool index over brain voxels of a mask given on the reference grid."""
    given = np.asarray(given_mask) > 0
    if given.shape != brain_mask.shape:
        raise ValueError(f"the voxel mask has shape {given.shape}, the data {brain_mask.shape}")
    return given[brain_mask]


def select_voxels(
    config: SelectionConfig,
    *,
    x: np.ndarray,
    z: np.ndarray,
    groups: np.ndarray,
    contrast: np.ndarray | None = None,
    given: np.ndarray | None = None,
    alphas: Sequence[float] = (1e2, 1e3, 1e4, 1e5),
    n_splits: int = 5,
    log=None,
) -> Selection:
    """Select voxels.

    Parameters
    ----------
    config : SelectionConfig
        The method (``mask`` | ``contrast`` | ``encoding`` | ``auto``), ``k`` voxels to keep (0 with ``auto``:
        choose among ``candidates`` too), ``n_components`` (leading principal components of the latents that the
        encoding ranking predicts and ``auto`` scores the decoding of: they carry most of the latents' variance;
        the low-variance tail adds noise, not rank) and ``n_splits`` (0: this call's ``n_splits``).
    x, z, groups
        Training patterns over brain voxels ``[N, V]``, their latents ``[N, L]`` and runs ``[N]``.
    contrast : [V], optional
        Face-vs-fixation t-values (needed by ``contrast``).
    given : bool [V], optional
        A given mask over brain voxels (``mask``).
    alphas : penalties of ``auto``'s ridge decoding
    n_splits : int
        Folds, grouped by run, of the encoding ranking and of ``auto``'s outer cross-validation (the ranking
        inside each ``auto`` fold uses 3), unless ``config.n_splits`` sets them.
    log : callable, optional
        Called with a line after each fold and ranking of ``auto`` (progress).
    """
    method, k, n_components = config.method, config.k, config.n_components
    n_splits = config.n_splits or n_splits
    if method == "mask":
        if given is None:
            raise ValueError("selection method 'mask' needs a voxel mask (selection.mask in the config)")
        return Selection(index=np.asarray(given, bool), method="mask", k=int(np.sum(given)))
    scores: dict[str, np.ndarray] = {}
    if method in ("contrast", "auto") and contrast is not None:
        scores["contrast"] = np.asarray(contrast, dtype=np.float64)
    if method in ("encoding", "auto"):
        # the latents' leading principal components (stimulus features only, no brain data): enough to rank
        # voxels, and every fold below then works on N x n_components instead of N x L
        zc = np.asarray(z, dtype=np.float64) - np.mean(z, axis=0)
        _, _, vt = np.linalg.svd(zc, full_matrices=False)
        z = zc @ vt[:n_components].T
        scores["encoding"] = encoding_scores(x, z, groups, n_components=n_components, n_splits=n_splits)
    if method in ("contrast", "encoding"):
        if method not in scores:
            raise ValueError(f"selection method {method!r} needs the face-vs-fixation contrast")
        if k <= 0:
            raise ValueError(f"selection method {method!r} needs k > 0 voxels")
        return Selection(index=top_k(scores[method], k), method=method, k=k, scores=scores[method])
    if method != "auto":
        raise ValueError(f"unknown selection method {method!r}; choose mask, contrast, encoding or auto")
    ks = [k] if k > 0 else [c for c in config.candidates if c <= x.shape[1]] or [x.shape[1]]
    methods = [m for m in RANKINGS if m in scores]
    cv, n_folds = _nested_cv(x, z, groups, contrast, methods, ks, alphas, n_components, n_splits, log)
    m, kk = max(cv, key=cv.get).split(":")
    return Selection(
        index=top_k(scores[m], int(kk)),
        method=f"auto:{m}",
        k=int(kk),
        scores=scores[m],
        cv={key: round(v, 5) for key, v in cv.items()},
        n_splits=n_folds,
    )


def _ranked(scores: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` highest finite scores' indices, best first (``order[:j]`` is :func:`top_k` ``(scores, j)``'s set)."""
    s = np.where(np.isfinite(scores), scores, -np.inf)
    k = int(min(k, np.isfinite(scores).sum()))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    part = np.argpartition(-s, k - 1)[:k]
    return part[np.argsort(-s[part], kind="stable")]


def nested_ridge_predictions(xs: np.ndarray, xe: np.ndarray, ks, yc: np.ndarray, alphas) -> dict[int, list]:
    """Ridge predictions on ``xe`` for every penalty from the first ``k`` columns of ``xs``, for each ``k``.

    ``xs [N, K]`` and ``xe [M, K]`` are standardised on the training rows with their columns in ranking order,
    so each candidate's design is a prefix of the columns and the candidates share their products: the primal
    Gram matrices (``k <= N``) are leading blocks of the largest one, and the dual ones (``k > N``) are summed
    block by block from the previous candidate's. Each candidate then needs one decomposition
    (:class:`offline.decoding.mapping.PenaltyPath`) for all penalties. The numbers are those of
    :func:`offline.decoding.mapping.ridge_predictions` on each prefix.
    """
    from offline.decoding.mapping import PenaltyPath

    n = len(xs)
    ks = sorted(set(int(k) for k in ks))
    out: dict[int, list] = {}
    primal = [k for k in ks if k <= n]
    gp = xs[:, : primal[-1]].T @ xs[:, : primal[-1]] if primal else None
    gd = cd = None
    done = 0
    for k in ks:
        if k <= n:
            path = PenaltyPath(np.array(gp[:k, :k]), xe[:, :k])
            out[k] = path.predictions(xs[:, :k].T @ yc, alphas)
            continue
        if gd is None:
            gd, cd = xs[:, :k] @ xs[:, :k].T, xe[:, :k] @ xs[:, :k].T
        else:
            gd += xs[:, done:k] @ xs[:, done:k].T
            cd += xe[:, done:k] @ xs[:, done:k].T
        done = k
        out[k] = PenaltyPath(gd, cd).predictions(yc, alphas)
    return out


def _nested_cv(
    x, z, groups, contrast, methods, ks, alphas, n_components, n_splits, log=None
) -> tuple[dict[str, float], int]:
    """Held-out ridge decoding score of each (method, k), the encoding ranking redone inside every fold, and the
    number of folds.

    The score is the mean held-out centred latent correlation of the best penalty, so the voxels a fold is
    scored on were ranked without it. Within a fold and method the candidates are nested (the top ``k`` of one
    ranking), so they share one standardised design and its products (:func:`nested_ridge_predictions`), and each
    candidate needs one decomposition for every penalty.
    """
    import time

    from offline.decoding.mapping import centred_correlation

    folds = cv_splits(len(x), groups, n_splits)
    alphas = np.asarray(alphas, dtype=np.float64)
    totals = {f"{m}:{kk}": np.zeros(len(alphas)) for m in methods for kk in ks}
    t0 = time.perf_counter()
    for fi, (train, test) in enumerate(folds):
        fold_scores = {}
        if "contrast" in methods:
            fold_scores["contrast"] = np.asarray(contrast, dtype=np.float64)
        if "encoding" in methods:
            fold_scores["encoding"] = encoding_scores(
                x[train], z[train], None if groups is None else groups[train], n_components=n_components, n_splits=3
            )
        y_mean = z[train].mean(0)
        yc = z[train] - y_mean
        for m in methods:
            order = _ranked(fold_scores[m], max(ks))
            # a candidate beyond the finite scores keeps them all (as top_k does)
            eff = {kk: min(kk, len(order)) for kk in ks}
            cols = order[: max(eff.values())]
            xt = x[np.ix_(train, cols)].astype(np.float64)
            xe = x[np.ix_(test, cols)].astype(np.float64)
            mean, scale = standardise(xt)
            xt -= mean
            xt /= scale
            xe -= mean
            xe /= scale
            preds = nested_ridge_predictions(xt, xe, sorted(set(eff.values())), yc, alphas)
            del xt, xe
            for kk in ks:
                totals[f"{m}:{kk}"] += [
                    centred_correlation(p + y_mean, z[test], y_mean) / len(folds) for p in preds[eff[kk]]
                ]
            if log is not None:
                log(
                    f"voxel selection: fold {fi + 1}/{len(folds)}, {m} ranking, {len(ks)} candidates scored"
                    f" ({time.perf_counter() - t0:.0f} s)"
                )
    return {key: float(v.max()) for key, v in totals.items()}, len(folds)
