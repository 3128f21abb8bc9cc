"""Brain-to-latent mappings with the scikit-learn estimator contract.

Two estimators, both linear in the brain pattern, so the bundle stores either as one matrix
(:meth:`linear_map_`: ``latent = ((x - x_mean_) / x_scale_) @ weights + bias``):

- :class:`RidgeMapping`: brain -> latent ridge regression, the penalty chosen by cross-validation grouped by run
  (closed-form SVD ridge, all penalties from one decomposition per fold);
- :class:`EncodingMapping`: the paper's released decoder: an encoding model (each voxel a linear function of the
  latents plus a bias, ridge-penalised, fitted on the training faces) inverted by least squares,
  ``z = (W W^T + lambda I)^+ W (y - b)`` (``lambda = 0``: the paper's ``(W W^T)^-1 W y`` without the bias).

Cross-validation scores are the mean correlation between held-out predicted and true latents after removing the
training mean latent: the quantity pairwise identification rests on, insensitive to the overall scale of the
predictions (which the encoding penalty changes).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.model_selection import GroupKFold, KFold
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = [
    "RidgeMapping",
    "EncodingMapping",
    "make_mapping",
    "centred_correlation",
    "cv_splits",
    "ridge_path",
    "DEFAULT_ALPHAS",
]

#: Penalties tried by default (input standardised per voxel, so they scale with the number of voxels).
DEFAULT_ALPHAS = tuple(float(a) for a in 10.0 ** np.arange(-1.0, 6.01, 0.5))


def centred_correlation(pred: np.ndarray, true: np.ndarray, centre: np.ndarray) -> float:
    """Mean over samples of the Pearson correlation of ``pred - centre`` with ``true - centre``."""
    a = pred - centre
    b = true - centre
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    num = (a * b).sum(axis=1)
    den = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    return float(np.mean(np.divide(num, den, out=np.zeros_like(num), where=den > 0)))


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[~(scale > 1e-12)] = 1.0
    return mean, scale


def cv_splits(n: int, groups: np.ndarray | None, n_splits: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Grouped folds when groups are given (at least two), else contiguous K-fold."""
    if n < 2:
        raise ValueError(f"a mapping needs more than 1 sample to fit, got {n}")
    if groups is not None and len(np.unique(groups)) >= 2:
        k = min(n_splits, len(np.unique(groups)))
        return list(GroupKFold(n_splits=k).split(np.zeros(n), groups=groups))
    return list(KFold(n_splits=min(n_splits, n)).split(np.zeros(n)))


class _LinearMapping(RegressorMixin, BaseEstimator):
    """Shared input handling, prediction and the bundle's linear map."""

    def _prepare(self, X, y):
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True, dtype=np.float64)
        self._y_1d = y.ndim == 1
        y2 = y.reshape(len(y), -1).astype(np.float64)
        return X, y2

    def _finish(self, weights: np.ndarray, bias: np.ndarray) -> None:
        self.coef_map_ = np.asarray(weights, dtype=np.float64)
        self.intercept_map_ = np.asarray(bias, dtype=np.float64)

    def linear_map_(self) -> tuple[np.ndarray, np.ndarray]:
        """``(weights [V, L], bias [L])`` on standardised input: ``latent = xs @ weights + bias``."""
        check_is_fitted(self, "coef_map_")
        return self.coef_map_.astype(np.float32), self.intercept_map_.astype(np.float32)

    def predict(self, X) -> np.ndarray:
        """Latents of one pattern ``[V]`` (returns ``[L]``) or a batch ``[N, V]`` (returns ``[N, L]``)."""
        check_is_fitted(self, "coef_map_")
        single = getattr(X, "ndim", None) == 1 or (isinstance(X, (list, tuple)) and len(X) > 0 and np.isscalar(X[0]))
        X2 = np.asarray(X)[None, :] if single else X
        X2 = validate_data(self, X2, reset=False, dtype=np.float64)
        out = ((X2 - self.x_mean_) / self.x_scale_) @ self.coef_map_ + self.intercept_map_
        if self._y_1d:
            out = out[:, 0]
        return out[0] if single else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags


class RidgeMapping(_LinearMapping):
    """Brain -> latent ridge regression with the penalty chosen by (grouped) cross-validation.

    Parameters
    ----------
    alphas : sequence of float
        Penalties to try (on per-voxel standardised input). One value skips the cross-validation.
    n_splits : int
        Folds; with ``groups`` (the run of each trial) the folds never split a run.

    Attributes
    ----------
    alpha_ : float
        The chosen penalty. ``cv_scores_`` : dict alpha -> mean held-out centred latent correlation.
    x_mean_, x_scale_ : arrays [V]
        The standardisation of the input. ``coef_map_`` [V, L], ``intercept_map_`` [L]: the linear map.
    """

    def __init__(self, alphas=DEFAULT_ALPHAS, n_splits: int = 5):
        self.alphas = alphas
        self.n_splits = n_splits

    def fit(self, X, y, groups=None):
        """Fit on patterns ``X [N, V]`` and latents ``y [N, L]`` (``groups [N]``: run of each trial)."""
        X, y = self._prepare(X, y)
        alphas = np.atleast_1d(np.asarray(self.alphas, dtype=np.float64))
        if alphas.size > 1:
            self.cv_scores_ = self._cross_validate(X, y, alphas, groups)
            self.alpha_ = float(max(self.cv_scores_, key=self.cv_scores_.get))
        else:
            self.cv_scores_ = {}
            self.alpha_ = float(alphas[0])
        self.x_mean_, self.x_scale_ = _standardise(X)
        self.y_mean_ = y.mean(axis=0)
        weights = ridge_path((X - self.x_mean_) / self.x_scale_, y - self.y_mean_, np.array([self.alpha_]))[0]
        self._finish(weights, self.y_mean_)
        return self

    def _cross_validate(self, X, y, alphas, groups) -> dict[float, float]:
        scores = np.zeros((len(alphas),))
        folds = cv_splits(len(X), None if groups is None else np.asarray(groups), self.n_splits)
        for train, test in folds:
            mean, scale = _standardise(X[train])
            y_mean = y[train].mean(axis=0)
            weights = ridge_path((X[train] - mean) / scale, y[train] - y_mean, alphas)
            xs_test = (X[test] - mean) / scale
            for i, w in enumerate(weights):
                scores[i] += centred_correlation(xs_test @ w + y_mean, y[test], y_mean) / len(folds)
        return {float(a): float(s) for a, s in zip(alphas, scores)}


def ridge_path(xs: np.ndarray, yc: np.ndarray, alphas: np.ndarray) -> list[np.ndarray]:
    """Ridge weights ``[V, L]`` for each penalty, from one thin SVD of ``xs`` (centred data)."""
    u, s, vt = np.linalg.svd(xs, full_matrices=False)
    uty = u.T @ yc
    return [vt.T @ ((s / (s * s + a))[:, None] * uty) for a in alphas]


class EncodingMapping(_LinearMapping):
    """The paper's decoder: a voxel-wise encoding model from the latents, inverted by least squares.

    Each standardised voxel is modelled as ``xs = z W + b`` (``W [L, V]`` by ridge with penalty ``alpha``,
    chosen by cross-validation of the decoded latents); a pattern is decoded by
    ``z = (W W^T + decode_alpha * I)^+ W (xs - b)`` (pseudo-inverse within the span of the training latents).

    Parameters
    ----------
    alphas : sequence of float
        Encoding penalties to try. One value skips the cross-validation.
    decode_alpha : float
        Tikhonov term of the inversion (0 = the paper's plain least squares).
    n_splits : int
        Folds; with ``groups`` they never split a run.

    Attributes
    ----------
    alpha_ : float
        Chosen encoding penalty. ``encoding_coef_`` ``[L, V]`` and ``encoding_intercept_`` ``[V]``: the encoding
        model on standardised voxels; ``coef_map_``/``intercept_map_``: the decoding as one linear map.
    """

    def __init__(self, alphas=DEFAULT_ALPHAS, decode_alpha: float = 0.0, n_splits: int = 5):
        self.alphas = alphas
        self.decode_alpha = decode_alpha
        self.n_splits = n_splits

    def fit(self, X, y, groups=None):
        """Fit on patterns ``X [N, V]`` and latents ``y [N, L]`` (``groups [N]``: run of each trial)."""
        X, y = self._prepare(X, y)
        alphas = np.atleast_1d(np.asarray(self.alphas, dtype=np.float64))
        if self.decode_alpha < 0:
            raise ValueError(f"decode_alpha must be >= 0, got {self.decode_alpha}")
        if alphas.size > 1:
            self.cv_scores_ = {}
            scores = np.zeros(len(alphas))
            folds = cv_splits(len(X), None if groups is None else np.asarray(groups), self.n_splits)
            for train, test in folds:
                mean, scale = _standardise(X[train])
                y_mean = y[train].mean(axis=0)
                maps, biases = _encoding_decoders((X[train] - mean) / scale, y[train] - y_mean, alphas, self)
                xs_test = (X[test] - mean) / scale
                for i, (m, b) in enumerate(zip(maps, biases)):
                    scores[i] += centred_correlation(xs_test @ m + b + y_mean, y[test], y_mean) / len(folds)
            self.cv_scores_ = {float(a): float(s) for a, s in zip(alphas, scores)}
            self.alpha_ = float(alphas[int(np.argmax(scores))])
        else:
            self.cv_scores_ = {}
            self.alpha_ = float(alphas[0])
        self.x_mean_, self.x_scale_ = _standardise(X)
        self.y_mean_ = y.mean(axis=0)
        xs = (X - self.x_mean_) / self.x_scale_
        maps, biases, enc = _encoding_decoders(xs, y - self.y_mean_, np.array([self.alpha_]), self, keep=True)
        self.encoding_coef_, self.encoding_intercept_ = enc
        self._finish(maps[0], biases[0] + self.y_mean_)
        return self


def _encoding_decoders(xs, zc, alphas, est: EncodingMapping, keep: bool = False):
    """Decoding maps ``M [V, L]`` and biases for each encoding penalty (work in the latents' row space).

    With ``zc = U S Vt`` (rank r), the encoding weights are ``W = Vt^T D G`` where ``D = S / (S^2 + alpha)`` and
    ``G = U^T xs_c``; the (pseudo-)inverse then lives in r dimensions: ``M = G^T D (D K D + lam I)^-1 Vt`` with
    ``K = G G^T``, which is ``G^T K^+ D^-1 Vt`` for ``lam = 0``.
    """
    b = xs.mean(axis=0)
    xc = xs - b
    u, s, vt = np.linalg.svd(zc, full_matrices=False)
    keep_r = s > s[0] * 1e-10 if s.size else s.astype(bool)
    u, s, vt = u[:, keep_r], s[keep_r], vt[keep_r]
    g = u.T @ xc  # [r, V]
    k = g @ g.T
    maps, biases = [], []
    k_pinv = np.linalg.pinv(k, hermitian=True) if est.decode_alpha == 0 else None
    for a in alphas:
        d = s / (s * s + a)
        if k_pinv is not None:
            core = k_pinv / d[None, :]  # K^+ D^-1
        else:
            core = d[:, None] * np.linalg.inv(d[:, None] * k * d[None, :] + est.decode_alpha * np.eye(len(d)))
        m = g.T @ core @ vt  # [V, L]
        maps.append(m)
        biases.append(-(b @ m))
    if keep:
        w = vt.T @ (d[:, None] * g)  # encoding weights [L, V] for the last (only) penalty
        return maps, biases, (w, b)
    return maps, biases


def make_mapping(method: str, **params) -> _LinearMapping:
    """``"ridge"`` -> :class:`RidgeMapping`, ``"encoding"`` -> :class:`EncodingMapping`."""
    if method == "ridge":
        return RidgeMapping(**params)
    if method == "encoding":
        return EncodingMapping(**params)
    raise ValueError(f"unknown mapping method {method!r}; choose 'ridge' or 'encoding'")
