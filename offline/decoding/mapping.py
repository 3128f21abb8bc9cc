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

The algebra is shared (:class:`Split`): one training design, standardised on its rows, gives every penalty, every
target (face space, shuffle) and both mappings from one Gram matrix and one eigendecomposition, in the primal
(``V x V``) or the dual (``N x N``) form, whichever is smaller; :func:`fit_shared` fits several mappings on one
design with one :class:`Split` per fold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.model_selection import GroupKFold, KFold
from sklearn.utils.validation import check_is_fitted, validate_data

from offline.linalg import apply_q, sytrd, tridiagonal_solve

__all__ = [
    "RidgeMapping",
    "EncodingMapping",
    "make_mapping",
    "centred_correlation",
    "cv_splits",
    "ridge_predictions",
    "ridge_weights",
    "standardise",
    "TargetFactors",
    "Split",
    "PenaltyPath",
    "fit_shared",
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


def _eigh_psd(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    evals, evecs = np.linalg.eigh(m)
    return np.maximum(evals, 0.0), evecs


class PenaltyPath:
    """``left (G + alpha I)^-1 right`` for many penalties and right-hand sides from one decomposition of a Gram
    matrix ``G [n, n]`` (``left [m, n]`` fixed: the test patterns against the design).

    From a few hundred rows up, ``G = Q T Q^T`` is reduced to tridiagonal form once (LAPACK ``dsytrd``: about half
    the work of a full eigendecomposition, the eigenvectors are never formed); ``Q`` is applied to ``left`` once
    and to each ``right`` as Householder reflectors (``dormqr``), and ``T + alpha I`` is solved in ``O(n)`` per
    column (``dpttrf``/``dpttrs``). Small matrices, or a ``T + alpha I`` that is not positive definite (a ``G``
    with rounding-negative eigenvalues and a tiny penalty), use the eigendecomposition, eigenvalues clipped at 0.
    """

    TRIDIAGONAL_FROM = 256

    def __init__(self, g: np.ndarray, left: np.ndarray):
        self.n = len(g)
        self._g = g
        self._left = left
        self._basis: np.ndarray | None = None
        self._eig: tuple[np.ndarray, np.ndarray] | None = None
        self._tri = sytrd(g) if self.n >= self.TRIDIAGONAL_FROM else None
        if self._tri is None:
            self._use_eig()

    def _use_eig(self) -> None:
        self._eig = _eigh_psd(self._g)
        self._tri = None
        self._basis = None

    def predictions(self, right: np.ndarray, alphas) -> list[np.ndarray]:
        """``left (G + alpha I)^-1 right`` for each penalty."""
        if self._tri is None:
            evals, evecs = self._eig
            if self._basis is None:
                self._basis = self._left @ evecs
            rb = evecs.T @ right
            return [(self._basis / (evals + a)) @ rb for a in alphas]
        _, d, e, _ = self._tri
        if self._basis is None:
            self._basis = apply_q(self._tri, self._left, "R")
        rb = apply_q(self._tri, right, "L")
        out = []
        for a in alphas:
            w = tridiagonal_solve(d + a, e, rb)
            if w is None:  # not positive definite at this penalty: the eigendecomposition instead
                self._use_eig()
                return self.predictions(right, alphas)
            out.append(self._basis @ w)
        return out


class Split:
    """One training design (and optionally test patterns), standardised on its training rows, with the products
    and decompositions that every penalty, every target and both mappings share, each computed once on first use.

    The training patterns are standardised (:func:`standardise`) and then centred on their own means ``b`` (zero
    up to rounding; the encoding model's voxel means), giving ``xc [N, V]``; the test patterns go through the same
    two steps (``xt [M, V]``). The form is the primal (``xc^T xc``, ``V x V``) when ``V <= N``, else the dual
    (``xc xc^T``, ``N x N``): whichever is smaller. Shuffling the targets leaves all of it unchanged, so
    permutations reuse it too.
    """

    def __init__(self, x_train: np.ndarray, x_test: np.ndarray | None = None):
        x = np.asarray(x_train, dtype=np.float64)
        self.mean, self.scale = standardise(x)
        xc = (x - self.mean) / self.scale
        self.b = xc.mean(axis=0)
        xc -= self.b
        self.xc = xc
        self.xt = None
        if x_test is not None:
            self.xt = (np.asarray(x_test, dtype=np.float64) - self.mean) / self.scale - self.b
        self.n, self.v = xc.shape
        self.dual = self.v > self.n
        self._gram: np.ndarray | None = None
        self._path: PenaltyPath | None = None
        self._cross: np.ndarray | None = None
        self._chol: dict[float, tuple] = {}

    def _need_test(self) -> np.ndarray:
        if self.xt is None:
            raise ValueError("this Split has no test patterns")
        return self.xt

    def gram(self) -> np.ndarray:
        """``xc xc^T`` (dual) or ``xc^T xc`` (primal)."""
        if self._gram is None:
            self._gram = self.xc @ self.xc.T if self.dual else self.xc.T @ self.xc
        return self._gram

    def path(self) -> PenaltyPath:
        """Every penalty's ridge predictions on the test patterns from one decomposition of :meth:`gram`."""
        if self._path is None:
            self._path = PenaltyPath(self.gram(), self.cross() if self.dual else self._need_test())
        return self._path

    def cross(self) -> np.ndarray:
        """``xt xc^T [M, N]``: the test patterns against the training patterns (dual form)."""
        if self._cross is None:
            self._cross = self._need_test() @ self.xc.T
        return self._cross

    def _factor(self, alpha: float):
        from scipy.linalg import cho_factor

        alpha = float(alpha)
        if alpha not in self._chol:
            g = self.gram()
            self._chol[alpha] = cho_factor(g + alpha * np.eye(len(g)), lower=True, check_finite=False)
        return self._chol[alpha]

    def _solve(self, alpha: float, rhs: np.ndarray) -> np.ndarray:
        from scipy.linalg import cho_solve

        return cho_solve(self._factor(alpha), rhs, check_finite=False)

    def ridge_predictions(self, yc: np.ndarray, alphas) -> list[np.ndarray]:
        """Centred ridge predictions on the test patterns for each penalty (``yc``: centred training targets)."""
        return self.path().predictions(yc if self.dual else self.xc.T @ yc, alphas)

    def ridge_weights(self, yc: np.ndarray, alpha: float) -> np.ndarray:
        """Ridge weights ``[V, L]`` on ``xc`` for penalty ``alpha``."""
        if self.dual:
            return self.xc.T @ self._solve(alpha, yc)
        return self._solve(alpha, self.xc.T @ yc)

    def ridge_hat(self, alpha: float) -> np.ndarray:
        """``H [M, N]``: centred ridge predictions on the test patterns are ``H @ yc`` for any targets ``yc``."""
        if self.dual:
            return self._solve(alpha, self.cross().T).T
        return self._solve(alpha, self._need_test().T).T @ self.xc.T

    def encoding_terms(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(A = xt xc^T u [M, r], K = u^T xc xc^T u [r, r])`` of the encoding model (see :func:`encoding_predictions`):
        from the Gram matrix in the dual form, from ``P = xc^T u`` in the primal (cheaper with few voxels)."""
        if self.dual:
            return self.cross() @ u, u.T @ (self.gram() @ u)
        p = self.xc.T @ u
        return self._need_test() @ p, p.T @ p


@dataclass
class TargetFactors:
    """``zc = u diag(s) vt``: the thin SVD of centred training latents, directions below ``rank_tol`` times the
    largest singular value left out. It depends on the targets only, so every design (estimate type) shares it.

    With more samples than latent dimensions it comes from the eigendecomposition of ``zc^T zc`` (``L x L``, many
    times faster than the SVD of ``N x L``; the kept directions have ``s >= rank_tol s_max``, so squaring loses
    nothing that matters when ``rank_tol >= 1e-6``), else from the SVD.
    """

    u: np.ndarray  # [N, r]
    s: np.ndarray  # [r]
    vt: np.ndarray  # [r, L]

    @classmethod
    def of(cls, zc: np.ndarray, rank_tol: float = 1e-10) -> TargetFactors:
        """The thin SVD of centred targets ``zc`` [N, L], its rank cut at ``rank_tol`` of the largest value."""
        zc = np.asarray(zc, dtype=np.float64)
        n, latent = zc.shape
        tol = max(rank_tol, 1e-12)
        if n > latent and tol >= 1e-6:
            evals, v = np.linalg.eigh(zc.T @ zc)
            order = np.argsort(evals)[::-1]
            s = np.sqrt(np.maximum(evals[order], 0.0))
            vt = v[:, order].T
            keep = s > s[0] * tol if s.size else s.astype(bool)
            s, vt = s[keep], vt[keep]
            u = (zc @ vt.T) / s
        else:
            u, s, vt = np.linalg.svd(zc, full_matrices=False)
            keep = s > s[0] * tol if s.size else s.astype(bool)
            u, s, vt = u[:, keep], s[keep], vt[keep]
        return cls(u, s, vt)

    def rank(self, k: int) -> int:
        """Latent directions kept for a request of ``k`` (``k = 0`` or more than kept: all)."""
        return self.s.size if k <= 0 or k >= self.s.size else k

    def truncated(self, k: int) -> TargetFactors:
        """The factors of the leading ``k`` directions (fewer where the rank is lower)."""
        r = self.rank(k)
        return TargetFactors(self.u[:, :r], self.s[:r], self.vt[:r])

    def permuted(self, perm: np.ndarray) -> TargetFactors:
        """The factors of ``zc[perm]`` (the training pairs shuffled): the rows of ``u`` permuted."""
        return TargetFactors(self.u[perm], self.s, self.vt)


def _encoding_core(kmat: np.ndarray, s: np.ndarray, alpha: float, decode_alpha: float, k_pinv=None) -> np.ndarray:
    d = s / (s * s + alpha)
    if decode_alpha == 0:
        return (_psd_inverse(kmat) if k_pinv is None else k_pinv) / d[None, :]
    return d[:, None] * np.linalg.inv(d[:, None] * kmat * d[None, :] + decode_alpha * np.eye(len(d)))


def encoding_predictions(
    a: np.ndarray, kmat: np.ndarray, fac: TargetFactors, alphas, decode_alpha: float, ks=(0,)
) -> list[np.ndarray]:
    """Centred decoded latents for each number of leading latent directions in ``ks`` (0: all) and each penalty,
    in that order, from ``A`` and ``K`` (:meth:`Split.encoding_terms`): the model on ``k`` directions uses their
    first ``k`` columns (and rows). With ``decode_alpha = 0`` the penalty only rescales the columns of ``A K^+``.

    The algebra, in the span of the training latents (rank r <= N): with ``zc = U S Vt`` and voxels centred on
    their mean ``b`` (``xc``), the encoding weights for penalty ``alpha`` are ``W = Vt^T D U^T xc`` with
    ``D = S / (S^2 + alpha)``; decoding ``(W W^T + lam I)^+ W (x - b)`` then reduces to ``A D (D K D + lam I)^-1 Vt``
    (``A K^+ D^-1 Vt`` for ``lam = 0``), where ``K = U^T G U`` and ``A = (x - b) xc^T U`` need only the Gram
    matrix ``G = xc xc^T``: cheap with many voxels, and the same for every shuffle of the training pairs (which
    permutes the rows of ``U`` only)."""
    out = []
    for k in ks:
        r = fac.rank(k)
        kr, vr = kmat[:r, :r], fac.vt[:r]
        if decode_alpha == 0:
            base = a[:, :r] @ _psd_inverse(kr)
            for al in alphas:
                d = fac.s[:r] / (fac.s[:r] ** 2 + al)
                out.append((base / d[None, :]) @ vr)
        else:
            out += [a[:, :r] @ _encoding_core(kr, fac.s[:r], al, decode_alpha) @ vr for al in alphas]
    return out


class _CV:
    """Accumulates one mapping's held-out scores over the folds (see :meth:`_LinearMapping._cv_begin`)."""

    def __init__(self, settings: list, n_folds: int):
        self.settings = settings
        self.n_folds = n_folds
        self.scores = np.zeros(len(settings))
        self.true_ss = 0.0
        self.pred_ss = np.zeros(len(settings))

    def add(self, preds: list[np.ndarray], y_test: np.ndarray, y_mean: np.ndarray) -> None:
        self.true_ss += float(np.sum((y_test - y_mean) ** 2))
        for i, pred in enumerate(preds):
            self.scores[i] += centred_correlation(pred + y_mean, y_test, y_mean) / self.n_folds
            self.pred_ss[i] += float(np.sum(pred**2))


class _LinearMapping(RegressorMixin, BaseEstimator):
    """Shared input handling, cross-validation, prediction and the bundle's linear map.

    A mapping says what it tries (:meth:`_settings`), what it predicts from a fold's :class:`Split`
    (:meth:`_fold_predictions`) and how it fits the chosen setting on all of the data (:meth:`_fit_split`);
    :func:`fit_shared` runs the folds, so several mappings and targets on one design share every decomposition.
    """

    def _prepare(self, X, y):
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True, dtype=np.float64)
        self._y_1d = y.ndim == 1
        y2 = y.reshape(len(y), -1).astype(np.float64)
        return X, y2

    def fit(self, X, y, groups=None):
        """Fit on patterns ``X [N, V]`` and latents ``y [N, L]`` (``groups [N]``: run of each trial)."""
        fit_shared([self], X, [y], groups)
        return self

    def _cv_needed(self) -> bool:
        return len(self._settings()) > 1 or bool(self.rescale)

    def _cv_finish(self, cv: _CV | None) -> None:
        """Choose among the settings by the held-out scores; set ``cv_scores_``, ``best_`` and ``scale_``.

        The held-out predictions also give the rescale factor (``rescale=True``): the ratio of the spread of the
        held-out latents around the training mean to the spread of their predictions. With one setting and no
        rescale, nothing was cross-validated.
        """
        self.scale_ = 1.0
        if cv is None:
            self.cv_scores_, self.best_ = {}, self._settings()[0]
            return
        self.cv_scores_ = {s: float(v) for s, v in zip(cv.settings, cv.scores)}
        best = int(np.argmax(cv.scores))
        self.best_ = cv.settings[best]
        if self.rescale and cv.pred_ss[best] > 0 and cv.true_ss > 0:
            self.scale_ = float(np.sqrt(cv.true_ss / cv.pred_ss[best]))

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


def fit_shared(
    mappings: Sequence[_LinearMapping],
    X,
    ys: Sequence,
    groups=None,
    *,
    target_keys: Sequence | None = None,
    cache: dict | None = None,
    on_fold=None,
) -> list[_LinearMapping]:
    """Fit several mappings on one design ``X [N, V]``, mapping ``i`` to the targets ``ys[i]``, with one
    :class:`Split` (one Gram matrix, one eigendecomposition) per fold and one for the final fits.

    The numbers are those of fitting each mapping alone (``mapping.fit(X, y, groups)`` is this with one mapping).
    ``target_keys[i]`` names targets that are the same across calls (e.g. the face space): ``cache`` (a dict the
    caller keeps) then holds their :class:`TargetFactors` per fold, reused by the next design (estimate type) with
    the same folds. ``on_fold(i, n)`` is called after each fold (progress).
    """
    if len(mappings) != len(ys):
        raise ValueError("one target array per mapping")
    if isinstance(X, np.ndarray) and X.dtype.kind in "fiub":
        X = X.astype(np.float64, copy=False)  # one conversion for every mapping
    prepared = [m._prepare(X, y) for m, y in zip(mappings, ys)]
    X, _ = prepared[0]
    ys2 = [y for _, y in prepared]
    keys = list(target_keys) if target_keys is not None else [None] * len(mappings)
    cache = {} if cache is None else cache

    def factors(i: int, tag, rows: np.ndarray, yc: np.ndarray, rank_tol: float) -> TargetFactors:
        key = None if keys[i] is None else (keys[i], tag, len(rows), rank_tol)
        if key is not None and key in cache:
            cached_rows, cached = cache[key]
            if np.array_equal(cached_rows, rows):
                return cached
        fac = TargetFactors.of(yc, rank_tol)
        if key is not None:
            cache[key] = (rows, fac)
        return fac

    need = [m._cv_needed() for m in mappings]
    cvs: list[_CV | None] = [None] * len(mappings)
    if any(need):
        folds = cv_splits(len(X), None if groups is None else np.asarray(groups), mappings[0].n_splits)
        if any(m.n_splits != mappings[0].n_splits for m in mappings):
            raise ValueError("mappings fitted together must use the same n_splits")
        for i, m in enumerate(mappings):
            if need[i]:
                cvs[i] = _CV(m._settings(), len(folds))
        for f, (train, test) in enumerate(folds):
            split = Split(X[train], X[test])
            for i, m in enumerate(mappings):
                if not need[i]:
                    continue
                y = ys2[i]
                y_mean = y[train].mean(axis=0)
                yc = y[train] - y_mean
                preds = m._fold_predictions(
                    split, yc, lambda tol, i=i, f=f, yc=yc, rows=train: factors(i, f, rows, yc, tol)
                )
                cvs[i].add(preds, y[test], y_mean)
            del split
            if on_fold is not None:
                on_fold(f + 1, len(folds))
    for m, cv in zip(mappings, cvs):
        m._cv_finish(cv)
    full = Split(X)
    rows = np.arange(len(X))
    for i, m in enumerate(mappings):
        y = ys2[i]
        m.x_mean_, m.x_scale_ = full.mean, full.scale
        m.y_mean_ = y.mean(axis=0)
        yc = y - m.y_mean_
        m._fit_split(full, yc, lambda tol, i=i, yc=yc: factors(i, "all", rows, yc, tol))
    return list(mappings)


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

    def _settings(self) -> list[float]:
        return [float(a) for a in np.atleast_1d(np.asarray(self.alphas, dtype=np.float64))]

    def _fold_predictions(self, split: Split, yc: np.ndarray, factors) -> list[np.ndarray]:
        return split.ridge_predictions(yc, self._settings())

    def _fit_split(self, split: Split, yc: np.ndarray, factors) -> None:
        self.alpha_ = self.best_
        weights = split.ridge_weights(yc, self.alpha_)
        self._finish(weights, -(split.b @ weights))

    @staticmethod
    def _params_of(setting: float) -> dict:
        return {"alphas": (setting,)}


def ridge_predictions(xs: np.ndarray, yc: np.ndarray, xs_test: np.ndarray, alphas) -> list[np.ndarray]:
    """Centred ridge predictions on ``xs_test`` for each penalty, from one eigendecomposition.

    Uses the primal form (``V x V``) when there are fewer voxels than samples, else the dual (``N x N``):
    ``xs_test X^T (X X^T + alpha I)^-1 yc``, so thousands of voxels cost no more than the samples allow.
    ``xs`` is used as given (no standardisation; see :class:`Split` for the shared, standardised version).
    """
    n, v = xs.shape
    if v <= n:
        return PenaltyPath(xs.T @ xs, xs_test).predictions(xs.T @ yc, alphas)
    return PenaltyPath(xs @ xs.T, xs_test @ xs.T).predictions(yc, alphas)


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

    def _alphas(self) -> list[float]:
        return [float(a) for a in np.atleast_1d(np.asarray(self.alphas, dtype=np.float64))]

    def _settings(self) -> list[tuple[int, float]]:
        if self.decode_alpha < 0:
            raise ValueError(f"decode_alpha must be >= 0, got {self.decode_alpha}")
        return [(k, a) for k in self.component_candidates() for a in self._alphas()]

    def _fold_predictions(self, split: Split, yc: np.ndarray, factors) -> list[np.ndarray]:
        fac = factors(self.rank_tol)
        a, kmat = split.encoding_terms(fac.u)
        return encoding_predictions(a, kmat, fac, self._alphas(), self.decode_alpha, ks=self.component_candidates())

    def _fit_split(self, split: Split, yc: np.ndarray, factors) -> None:
        self.n_components_, self.alpha_ = self.best_
        fac = factors(self.rank_tol).truncated(self.n_components_)
        p = split.xc.T @ fac.u  # [V, r]
        core = _encoding_core(p.T @ p, fac.s, self.alpha_, self.decode_alpha)
        weights = p @ core @ fac.vt
        d = fac.s / (fac.s * fac.s + self.alpha_)
        self.encoding_coef_, self.encoding_intercept_ = fac.vt.T @ (d[:, None] * p.T), split.b
        self._finish(weights, -(split.b @ weights))

    @staticmethod
    def _params_of(setting: tuple[int, float]) -> dict:
        n_components, alpha = setting
        return {"n_components": n_components, "alphas": (alpha,)}


def _psd_inverse(k: np.ndarray) -> np.ndarray:
    """Inverse of a positive semi-definite matrix: Cholesky when it is well conditioned (fast), else the
    pseudo-inverse (rank-deficient K, e.g. fewer voxels than latent dimensions)."""
    from scipy.linalg import LinAlgError, cho_factor, cho_solve

    evals_bound = np.abs(np.diag(k)).max() if k.size else 0.0
    try:
        factor = cho_factor(k, lower=True, check_finite=False)
        inv = cho_solve(factor, np.eye(len(k)), check_finite=False)
        # reject near-singular factorisations: the smallest pivot must be a sane fraction of the largest
        lower, _ = factor
        pivots = np.abs(np.diag(lower))
        if pivots.min() ** 2 > 1e-10 * evals_bound:
            return inv
    except LinAlgError:
        pass
    return np.linalg.pinv(k, hermitian=True)


def make_mapping(method: str, **params) -> _LinearMapping:
    """``"ridge"`` -> :class:`RidgeMapping`, ``"encoding"`` -> :class:`EncodingMapping`."""
    if method == "ridge":
        return RidgeMapping(**params)
    if method == "encoding":
        return EncodingMapping(**params)
    raise ValueError(f"unknown mapping method {method!r}; choose 'ridge' or 'encoding'")
