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

import numpy as np

from offline.mapping import cv_splits

__all__ = ["Selection", "encoding_scores", "top_k", "mask_selection", "select_voxels"]


@dataclass(frozen=True)
class Selection:
    """The chosen voxels (bool over brain voxels) and how they were chosen."""

    index: np.ndarray
    method: str
    k: int
    scores: np.ndarray | None = None
    cv: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {"method": self.method, "k": self.k, "n_voxels": int(self.index.sum()), "cv": self.cv}


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
    x = np.asarray(x, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    pred = np.zeros_like(x)
    for train, test in cv_splits(len(x), groups, n_splits):
        zm = z[train].mean(0)
        u, s, vt = np.linalg.svd(z[train] - zm, full_matrices=False)
        r = min(n_components, len(s))
        zt = (z[train] - zm) @ vt[:r].T
        ze = (z[test] - zm) @ vt[:r].T
        scale = zt.std(0)
        scale[scale == 0] = 1.0
        zt, ze = zt / scale, ze / scale
        xm = x[train].mean(0)
        w = np.linalg.solve(zt.T @ zt + alpha * np.eye(r), zt.T @ (x[train] - xm))
        pred[test] = ze @ w + xm
    xc = x - x.mean(0)
    pc = pred - pred.mean(0)
    den = np.sqrt((xc * xc).sum(0) * (pc * pc).sum(0))
    return np.divide((xc * pc).sum(0), den, out=np.zeros(x.shape[1]), where=den > 0)


def mask_selection(given_mask: np.ndarray, brain_mask: np.ndarray) -> np.ndarray:
    """Bool index over brain voxels of a mask given on the reference grid."""
    given = np.asarray(given_mask) > 0
    if given.shape != brain_mask.shape:
        raise ValueError(f"the voxel mask has shape {given.shape}, the data {brain_mask.shape}")
    return given[brain_mask]


def select_voxels(
    method: str,
    k: int,
    *,
    x: np.ndarray,
    z: np.ndarray,
    groups: np.ndarray,
    contrast: np.ndarray | None = None,
    given: np.ndarray | None = None,
    candidates: Sequence[int] = (500, 1000, 2000, 4000),
    methods: Sequence[str] = ("contrast", "encoding"),
    alphas: Sequence[float] = (1e2, 1e3, 1e4, 1e5),
    n_components: int = 64,
) -> Selection:
    """Select voxels.

    Parameters
    ----------
    method : ``mask`` | ``contrast`` | ``encoding`` | ``auto``
    k : int
        Voxels to keep (0 with ``auto``: choose among ``candidates`` too).
    x, z, groups
        Training patterns over brain voxels ``[N, V]``, their latents ``[N, L]`` and runs ``[N]``.
    contrast : [V], optional
        Face-vs-fixation t-values (needed by ``contrast``).
    given : bool [V], optional
        A given mask over brain voxels (``mask``).
    """
    if method == "mask":
        if given is None:
            raise ValueError("selection method 'mask' needs a voxel mask (selection.mask in the config)")
        return Selection(index=np.asarray(given, bool), method="mask", k=int(np.sum(given)))
    scores: dict[str, np.ndarray] = {}
    if method in ("contrast", "auto") and contrast is not None:
        scores["contrast"] = np.asarray(contrast, dtype=np.float64)
    if method in ("encoding", "auto"):
        scores["encoding"] = encoding_scores(x, z, groups, n_components=n_components)
    if method in ("contrast", "encoding"):
        if method not in scores:
            raise ValueError(f"selection method {method!r} needs the face-vs-fixation contrast")
        if k <= 0:
            raise ValueError(f"selection method {method!r} needs k > 0 voxels")
        return Selection(index=top_k(scores[method], k), method=method, k=k, scores=scores[method])
    if method != "auto":
        raise ValueError(f"unknown selection method {method!r}; choose mask, contrast, encoding or auto")
    ks = [k] if k > 0 else [c for c in candidates if c <= x.shape[1]] or [x.shape[1]]
    cv = _nested_cv(x, z, groups, contrast, [m for m in methods if m in scores], ks, alphas, n_components)
    m, kk = max(cv, key=cv.get).split(":")
    return Selection(
        index=top_k(scores[m], int(kk)),
        method=f"auto:{m}",
        k=int(kk),
        scores=scores[m],
        cv={key: round(v, 5) for key, v in cv.items()},
    )


def _nested_cv(x, z, groups, contrast, methods, ks, alphas, n_components) -> dict[str, float]:
    """Held-out ridge decoding score of each (method, k), the encoding ranking redone inside every fold.

    The score is the mean held-out centred latent correlation of the best penalty (one SVD per fold and
    candidate gives every penalty), so the voxels a fold is scored on were ranked without it.
    """
    from offline.mapping import centred_correlation, ridge_path

    folds = cv_splits(len(x), groups, 5)
    alphas = np.asarray(alphas, dtype=np.float64)
    totals = {f"{m}:{kk}": np.zeros(len(alphas)) for m in methods for kk in ks}
    for train, test in folds:
        fold_scores = {}
        if "contrast" in methods:
            fold_scores["contrast"] = np.asarray(contrast, dtype=np.float64)
        if "encoding" in methods:
            fold_scores["encoding"] = encoding_scores(
                x[train], z[train], None if groups is None else groups[train], n_components=n_components, n_splits=3
            )
        y_mean = z[train].mean(0)
        for m in methods:
            for kk in ks:
                idx = top_k(fold_scores[m], kk)
                xt, xe = x[train][:, idx], x[test][:, idx]
                mean, scale = xt.mean(0), xt.std(0)
                scale[scale == 0] = 1.0
                weights = ridge_path((xt - mean) / scale, z[train] - y_mean, alphas)
                xs = (xe - mean) / scale
                totals[f"{m}:{kk}"] += [
                    centred_correlation(xs @ w + y_mean, z[test], y_mean) / len(folds) for w in weights
                ]
    return {key: float(v.max()) for key, v in totals.items()}
