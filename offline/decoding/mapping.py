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
predictions (which the encoding penalty changes). With ``rescale=True`` (what ``fmriface fit`` uses) the same
held-out predictions fix one factor that restores the spread of the decoded latents around the mean latent, so
decoded faces are not all the mean face (see :class:`RidgeMapping`).
"""

from __future__ import annotations

from dataclasses import dataclass

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
    "ridge_predictions",
    "ridge_weights",
    "standardise",
    "EncodingFactors",
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


def standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column ``(mean, scale)``; constant columns get scale 1 (every mapping, selection and control uses it)."""
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

    def _cross_validate(self, X, y, groups, settings: list, predict) -> None:
        """Choose among ``settings`` by grouped cross-validation; set ``cv_scores_``, ``best_`` and ``scale_``.

        ``predict(xs_train, yc_train, xs_test)`` returns one prediction of the centred test latents per setting,
        from standardised patterns and centred training latents of each fold. The held-out predictions also give
        the rescale factor (``rescale=True``): the ratio of the spread of the held-out latents around the
        training mean to the spread of their predictions. With one setting and no rescale, nothing is run.
        """
        self.scale_ = 1.0
        if len(settings) == 1 and not self.rescale:
            self.cv_scores_, self.best_ = {}, settings[0]
            return
        scores = np.zeros(len(settings))
        true_ss, pred_ss = 0.0, np.zeros(len(settings))
        folds = cv_splits(len(X), None if groups is None else np.asarray(groups), self.n_splits)
        for train, test in folds:
            mean, scale = standardise(X[train])
            y_mean = y[train].mean(axis=0)
            preds = predict((X[train] - mean) / scale, y[train] - y_mean, (X[test] - mean) / scale)
            true_ss += float(np.sum((y[test] - y_mean) ** 2))
            for i, pred in enumerate(preds):
                scores[i] += centred_correlation(pred + y_mean, y[test], y_mean) / len(folds)
                pred_ss[i] += float(np.sum(pred**2))
        self.cv_scores_ = {s: float(v) for s, v in zip(settings, scores)}
        best = int(np.argmax(scores))
        self.best_ = settings[best]
        if self.rescale and pred_ss[best] > 0 and true_ss > 0:
            self.scale_ = float(np.sqrt(true_ss / pred_ss[best]))

    def fixed_params(self) -> dict:
        """Constructor arguments that refit this mapping with its chosen setting, no search and no rescale."""
        check_is_fitted(self, "best_")
        return {**self.get_params(), **self._params_of(self.best_), "rescale": False}

    @property
    def cv_score_(self) -> float:
        """The held-out centred latent correlation of the chosen setting (nan when none was cross-validated)."""
        check_is_fitted(self, "best_")
        return self.cv_scores_.get(self.best_, float("nan"))

    def _finish(self, weights: np.ndarray, centred_bias: np.ndarray) -> None:
        """Store the map ``xs @ weights + centred_bias`` (centred latents), rescaled, plus the training mean."""
        self.coef_map_ = self.scale_ * np.asarray(weights, dtype=np.float64)
        self.intercept_map_ = self.scale_ * np.asarray(centred_bias, dtype=np.float64) + self.y_mean_

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
        Penalties to try (on per-voxel standardised input). One value and ``rescale=False`` skip the
        cross-validation.
    n_splits : int
        Folds; with ``groups`` (the run of each trial) the folds never split a run.
    rescale : bool
        Scale the predicted deviations from the training mean latent by one factor, fitted on the held-out
        predictions, so that they spread as much as the training latents do (``scale_``). Ridge shrinks its
        predictions toward the mean latent, the more so the noisier the data; decoded faces then all look like
        the mean face, and the paper's raw (uncentred) correlations are decided by the mean latent rather than by
        the faces' differences. One positive factor changes neither the direction of any prediction nor any
        centred correlation; it does raise the squared error, so leave it off to minimise that.

    Attributes
    ----------
    alpha_ : float
        The chosen penalty. ``cv_scores_`` : dict alpha -> mean held-out centred latent correlation.
    scale_ : float
        The rescale factor (1.0 without ``rescale``).
    x_mean_, x_scale_ : arrays [V]
        The standardisation of the input. ``coef_map_`` [V, L], ``intercept_map_`` [L]: the linear map.
    """

    def __init__(self, alphas=DEFAULT_ALPHAS, n_splits: int = 5, rescale: bool = False):
        self.alphas = alphas
        self.n_splits = n_splits
        self.rescale = rescale

    def fit(self, X, y, groups=None):
        """Fit on patterns ``X [N, V]`` and latents ``y [N, L]`` (``groups [N]``: run of each trial)."""
        X, y = self._prepare(X, y)
        alphas = [float(a) for a in np.atleast_1d(np.asarray(self.alphas, dtype=np.float64))]
        self._cross_validate(X, y, groups, alphas, lambda xs, yc, xt: ridge_predictions(xs, yc, xt, alphas))
        self.alpha_ = self.best_
        self.x_mean_, self.x_scale_ = standardise(X)
        self.y_mean_ = y.mean(axis=0)
        weights = ridge_weights((X - self.x_mean_) / self.x_scale_, y - self.y_mean_, self.alpha_)
        self._finish(weights, np.zeros(y.shape[1]))
        return self

    @staticmethod
    def _params_of(setting: float) -> dict:
        return {"alphas": (setting,)}


def _eigh_psd(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    evals, evecs = np.linalg.eigh(m)
    return np.maximum(evals, 0.0), evecs


def ridge_predictions(xs: np.ndarray, yc: np.ndarray, xs_test: np.ndarray, alphas) -> list[np.ndarray]:
    """Centred ridge predictions on ``xs_test`` for each penalty, from one eigendecomposition.

    Uses the primal form (``V x V``) when there are fewer voxels than samples, else the dual (``N x N``):
    ``xs_test X^T (X X^T + alpha I)^-1 yc``, so thousands of voxels cost no more than the samples allow.
    """
    n, v = xs.shape
    if v <= n:
        evals, evecs = _eigh_psd(xs.T @ xs)
        left = xs_test @ evecs
        right = evecs.T @ (xs.T @ yc)
    else:
        evals, evecs = _eigh_psd(xs @ xs.T)
        left = (xs_test @ xs.T) @ evecs
        right = evecs.T @ yc
    return [(left / (evals + a)) @ right for a in alphas]


def ridge_weights(xs: np.ndarray, yc: np.ndarray, alpha: float) -> np.ndarray:
    """Ridge weights ``[V, L]`` (centred data), in the primal or the dual form, whichever is smaller."""
    n, v = xs.shape
    if v <= n:
        return np.linalg.solve(xs.T @ xs + alpha * np.eye(v), xs.T @ yc)
    return xs.T @ np.linalg.solve(xs @ xs.T + alpha * np.eye(n), yc)


class EncodingMapping(_LinearMapping):
    """The paper's decoder: a voxel-wise encoding model from the latents, inverted by least squares.

    Each standardised voxel is modelled as ``xs = z W + b`` (``W [L, V]`` by ridge with penalty ``alpha``);
    a pattern is decoded by ``z = (W W^T + decode_alpha * I)^+ W (xs - b)`` (pseudo-inverse within the span of
    the training latents). The model may be confined to the ``k`` principal directions of the training latents:
    with about as many training faces as latent dimensions, inverting a full 1024-D model amplifies the noise of
    every poorly encoded direction, and that noise swamps the decoded latents. ``k`` and the penalty are chosen
    together by cross-validation of the decoded latents.

    Parameters
    ----------
    alphas : sequence of float
        Encoding penalties to try.
    decode_alpha : float
        Tikhonov term of the inversion (0 = the paper's plain least squares).
    rank_tol : float
        Latent directions whose singular value (over the training faces) is below ``rank_tol`` times the largest
        are always left out (dead or saturated latent units).
    n_components : int, sequence of int or None
        Candidate numbers of principal latent directions; ``None`` or 0 means all of them (the paper's model).
    n_splits : int
        Folds; with ``groups`` they never split a run.
    rescale : bool
        As for :class:`RidgeMapping`: one factor, fitted on held-out predictions, so that the decoded latents
        spread like the training latents.

    Attributes
    ----------
    alpha_ : float
        Chosen encoding penalty. ``n_components_``: chosen number of latent directions (0 = all).
        ``cv_scores_``: (n_components, alpha) -> mean held-out centred latent correlation.
    encoding_coef_ ``[L, V]`` and encoding_intercept_ ``[V]``
        The encoding model on standardised voxels; ``coef_map_``/``intercept_map_``: the decoding as one map.
    """

    def __init__(
        self,
        alphas=DEFAULT_ALPHAS,
        decode_alpha: float = 0.0,
        rank_tol: float = 1e-2,
        n_components=None,
        n_splits: int = 5,
        rescale: bool = False,
    ):
        self.alphas = alphas
        self.decode_alpha = decode_alpha
        self.rank_tol = rank_tol
        self.n_components = n_components
        self.n_splits = n_splits
        self.rescale = rescale

    def component_candidates(self) -> list[int]:
        """The candidate numbers of latent directions, sorted (0 = all)."""
        ks = [0] if self.n_components is None else [int(k) for k in np.atleast_1d(self.n_components)]
        if not ks or any(k < 0 for k in ks):
            raise ValueError(f"n_components must be None or integers >= 0, got {self.n_components!r}")
        return sorted(set(ks))

    def fit(self, X, y, groups=None):
        """Fit on patterns ``X [N, V]`` and latents ``y [N, L]`` (``groups [N]``: run of each trial)."""
        X, y = self._prepare(X, y)
        alphas = [float(a) for a in np.atleast_1d(np.asarray(self.alphas, dtype=np.float64))]
        if self.decode_alpha < 0:
            raise ValueError(f"decode_alpha must be >= 0, got {self.decode_alpha}")
        ks = self.component_candidates()
        settings = [(k, a) for k in ks for a in alphas]

        def predict(xs, yc, xt):
            fac = EncodingFactors.from_training(xs, yc, keep_data=True, rank_tol=self.rank_tol)
            return fac.predictions(xt, alphas, self.decode_alpha, ks=ks)

        self._cross_validate(X, y, groups, settings, predict)
        self.n_components_, self.alpha_ = self.best_
        self.x_mean_, self.x_scale_ = standardise(X)
        self.y_mean_ = y.mean(axis=0)
        fac = EncodingFactors.from_training(
            (X - self.x_mean_) / self.x_scale_, y - self.y_mean_, keep_data=True, rank_tol=self.rank_tol
        ).truncated(self.n_components_)
        weights, bias = fac.decoding_map(self.alpha_, self.decode_alpha)
        self.encoding_coef_, self.encoding_intercept_ = fac.encoding_weights(self.alpha_), fac.b
        self._finish(weights, bias)
        return self

    @staticmethod
    def _params_of(setting: tuple[int, float]) -> dict:
        return {"n_components": setting[0], "alphas": (setting[1],)}


def _psd_inverse(k: np.ndarray) -> np.ndarray:
    """Inverse of a positive semi-definite matrix: Cholesky when it is well conditioned (fast), else the
    pseudo-inverse (rank-deficient K, e.g. fewer voxels than latent dimensions)."""
    from scipy.linalg import LinAlgError, cho_factor, cho_solve

    evals_bound = np.abs(np.diag(k)).max() if k.size else 0.0
    try:
        factor = cho_factor(k, lower=True, check_finite=False)
        inv = cho_solve(factor, np.eye(len(k)), check_finite=False)
        # reject near-singular factorisations: the smallest pivot must be a sane fraction of the largest
        pivots = np.abs(np.diag(factor[0]))
        if pivots.min() ** 2 > 1e-10 * evals_bound:
            return inv
    except LinAlgError:
        pass
    return np.linalg.pinv(k, hermitian=True)


@dataclass
class EncodingFactors:
    """The encoding model's algebra in the span of the training latents (rank r <= N).

    With ``zc = U S Vt`` and voxels centred on their mean ``b`` (``xc``), the encoding weights for penalty
    ``alpha`` are ``W = Vt^T D U^T xc`` with ``D = S / (S^2 + alpha)``; decoding ``(W W^T + lam I)^+ W (x - b)``
    then reduces to ``A D (D K D + lam I)^-1 Vt`` (``A K^+ D^-1 Vt`` for ``lam = 0``), where ``K = U^T G U`` and
    ``A = (x - b) xc^T U`` need only the Gram matrix ``G = xc xc^T`` (N x N): cheap with many voxels, and the
    same for every shuffle of the training pairs (which permutes the rows of ``U`` only).
    """

    b: np.ndarray  # [V] voxel means of the training patterns
    u: np.ndarray  # [N, r]
    s: np.ndarray  # [r]
    vt: np.ndarray  # [r, L]
    gram: np.ndarray  # [N, N]
    xc: np.ndarray | None = None  # [N, V], kept only for the final map

    @classmethod
    def from_training(
        cls, xs: np.ndarray, zc: np.ndarray, keep_data: bool = False, rank_tol: float = 1e-10
    ) -> EncodingFactors:
        b = xs.mean(axis=0)
        xc = xs - b
        u, s, vt = np.linalg.svd(zc, full_matrices=False)
        keep = s > s[0] * max(rank_tol, 1e-12) if s.size else s.astype(bool)
        return cls(b, u[:, keep], s[keep], vt[keep], xc @ xc.T, xc if keep_data else None)

    def truncated(self, k: int) -> EncodingFactors:
        """The same factors confined to the ``k`` leading latent directions (``k = 0`` or more than kept: all)."""
        r = self._rank(k)
        return EncodingFactors(self.b, self.u[:, :r], self.s[:r], self.vt[:r], self.gram, self.xc)

    def cross(self, xs_test: np.ndarray, xc: np.ndarray) -> np.ndarray:
        return (xs_test - self.b) @ xc.T

    def _rank(self, k: int) -> int:
        """Latent directions kept for a request of ``k`` (``k = 0`` or more than kept: all)."""
        return self.s.size if k <= 0 or k >= self.s.size else k

    @staticmethod
    def _core(kmat: np.ndarray, s: np.ndarray, alpha: float, decode_alpha: float, k_pinv=None) -> np.ndarray:
        d = s / (s * s + alpha)
        if decode_alpha == 0:
            return (_psd_inverse(kmat) if k_pinv is None else k_pinv) / d[None, :]
        return d[:, None] * np.linalg.inv(d[:, None] * kmat * d[None, :] + decode_alpha * np.eye(len(d)))

    def predictions(
        self,
        xs_test: np.ndarray,
        alphas,
        decode_alpha: float,
        xc: np.ndarray | None = None,
        u: np.ndarray | None = None,
        ks=(0,),
    ) -> list[np.ndarray]:
        """Centred decoded latents of ``xs_test`` for each number of leading latent directions in ``ks`` (0: all)
        and each penalty, in that order (``u``: rows permuted for a shuffle).

        ``A`` and ``K`` are computed once: the model on the ``k`` leading directions uses their first ``k``
        columns (and rows).
        """
        u = self.u if u is None else u
        xc = self.xc if xc is None else xc
        if xc is None:
            raise ValueError("predictions need the training patterns (keep_data=True or xc=...)")
        a = self.cross(xs_test, xc) @ u
        kmat = u.T @ self.gram @ u
        out = []
        for k in ks:
            r = self._rank(k)
            kr = kmat[:r, :r]
            k_pinv = _psd_inverse(kr) if decode_alpha == 0 else None
            out += [a[:, :r] @ self._core(kr, self.s[:r], al, decode_alpha, k_pinv) @ self.vt[:r] for al in alphas]
        return out

    def decoding_map(self, alpha: float, decode_alpha: float) -> tuple[np.ndarray, np.ndarray]:
        """``(M [V, L], bias [L])`` with decoded (centred) latents ``= xs @ M + bias``."""
        kmat = self.u.T @ self.gram @ self.u
        m = (self.xc.T @ self.u) @ self._core(kmat, self.s, alpha, decode_alpha) @ self.vt
        return m, -(self.b @ m)

    def encoding_weights(self, alpha: float) -> np.ndarray:
        """The encoding model ``W [L, V]`` on standardised voxels."""
        d = self.s / (self.s * self.s + alpha)
        return self.vt.T @ (d[:, None] * (self.u.T @ self.xc))


def make_mapping(method: str, **params) -> _LinearMapping:
    """``"ridge"`` -> :class:`RidgeMapping`, ``"encoding"`` -> :class:`EncodingMapping`."""
    if method == "ridge":
        return RidgeMapping(**params)
    if method == "encoding":
        return EncodingMapping(**params)
    raise ValueError(f"unknown mapping method {method!r}; choose 'ridge' or 'encoding'")
