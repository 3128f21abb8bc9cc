"""Online preprocessing of the masked voxels: incremental detrending and running standardisation.

Each volume's voxels ``x_t`` [V] are modelled as ``x_t = r_t @ beta + e_t`` where the regressors ``r_t`` are an
intercept, Legendre polynomials of the volume index (slow scanner drift) and, optionally, the six motion
parameters of that volume. ``beta`` is the least-squares fit on every volume seen so far, kept as the running
sums ``R^T R`` [K, K] and ``R^T X`` [K, V], so one update costs ``O(K V)`` whatever the run length. The
residual ``e_t`` of the newest volume is then scaled per voxel: by default to percent signal change (divided by
the voxel's running mean intensity, which is stable after a few volumes), or z-scored by the residuals' running
standard deviation (computed exactly from the running sums). The offline fit applies the same scaling.

:func:`detrend_offline` applies the same model to a whole run at once (the reference the online estimate is
compared against).
"""

from __future__ import annotations

import numpy as np

__all__ = ["OnlinePreprocessor", "design_row", "detrend_offline", "SCALES"]

#: Per-voxel scalings of the residuals: percent signal change, z-score, none.
SCALES = ("psc", "zscore", "none")

#: Ridge on the drift coefficients: only keeps the first volumes' system well posed.
_DRIFT_PRIOR = 1e-3


def design_row(index: int, motion: np.ndarray | None, poly_order: int, horizon: float, out: np.ndarray) -> np.ndarray:
    """Fill ``out`` [K] with the regressors of volume ``index``: 1, P1..P_order(time), then motion (if given)."""
    s = 2.0 * index / horizon - 1.0
    p_prev, p = 1.0, s
    out[0] = 1.0
    for k in range(1, poly_order + 1):
        if k == 1:
            out[1] = s
        else:  # Bonnet's recursion for Legendre polynomials
            p_prev, p = p, ((2 * k - 1) * s * p - (k - 1) * p_prev) / k
            out[k] = p
    if motion is not None:
        out[poly_order + 1 : poly_order + 7] = motion
    return out


def _penalty(k: int, poly_order: int, prior: float) -> np.ndarray:
    """Ridge matrix: none on the intercept, a token one on the drift terms, ``prior`` on the motion terms."""
    diag = np.full(k, prior)
    diag[0] = 0.0
    diag[1 : poly_order + 1] = _DRIFT_PRIOR
    return np.diag(diag)


class OnlinePreprocessor:
    """Incremental detrending (polynomial drift + motion regressors) and running standardisation.

    After each volume, the model is the least-squares fit on every volume so far (with a small ridge prior on
    the drift and motion coefficients, which only matters while few volumes are in), and the scale of each
    voxel is the standard deviation of its residuals under that fit, computed exactly from running sums. At the
    last volume of a run this is :func:`detrend_offline` on the whole run.

    Parameters
    ----------
    n_voxels : int
        Voxels per volume (the bundle's mask).
    poly_order : int
        Highest Legendre order of the drift model (0 = intercept only).
    motion_regressors : bool
        Add the six motion parameters as regressors.
    horizon : float
        Volume count that maps the time axis onto [-1, 1] for the polynomials (beyond it they keep growing,
        which is harmless; it only sets the conditioning).
    prior : float
        Ridge penalty on the motion coefficients (units of ``sum m^2``, mm^2 and deg^2): motion regressors that
        are only estimation noise (hundredths of a mm) are shrunk instead of absorbing signal from the few
        volumes seen so far; real motion (tenths of a mm and more) is unaffected after a few dozen volumes. The
        drift terms get a token ridge only. Offline (:func:`detrend_offline`) uses the same default, so online
        and offline estimates agree.
    scale : {"psc", "zscore", "none"}
        Residuals in percent of the voxel's mean intensity (default: a stable scale from the first volumes, so
        online trial estimates agree with the offline ones), divided by the residuals' standard deviation
        (degrees of freedom ``n - K``), or left in scanner units.
    min_volumes : int
        Volumes before :attr:`ready` turns true (fit and scale still settling).

    Attributes
    ----------
    n_ : int
        Volumes in the fit.
    n_skipped_ : int
        Volumes left out (:meth:`skip`: censored).
    rtr_, rtx_, sxx_ : ndarray
        Running ``R^T R`` [K, K], ``R^T X`` [K, V] and ``sum x^2`` [V] (float64).
    beta_ : ndarray [K, V]
        The fit as of the last :meth:`residuals` call (or of every volume with ``scale="zscore"``); per volume
        only the newest volume's fitted value is needed, which is ``K`` times cheaper.
    scale_ : ndarray [V]
        The current divisor of each voxel's residuals (mean intensity / 100, residual SD, or 1).
    """

    def __init__(
        self,
        n_voxels: int,
        poly_order: int = 2,
        motion_regressors: bool = True,
        horizon: float = 200.0,
        prior: float = 0.1,
        scale: str = "psc",
        min_volumes: int = 10,
    ) -> None:
        self.n_voxels = n_voxels
        self.poly_order = poly_order
        self.motion_regressors = motion_regressors
        self.horizon = horizon
        self.prior = prior
        if scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
        self.scale = scale
        self.min_volumes = min_volumes
        self.reset()

    @property
    def n_regressors(self) -> int:
        """Columns of the drift model: intercept, ``poly_order`` polynomials and, if used, six motion parameters."""
        return 1 + self.poly_order + (6 if self.motion_regressors else 0)

    @property
    def ready(self) -> bool:
        """True once enough volumes were seen for the drift fit and the scale to be meaningful."""
        return self.n_ >= max(self.min_volumes, self.n_regressors + 2)

    def reset(self) -> None:
        """Forget every volume (start of a run)."""
        k, v = self.n_regressors, self.n_voxels
        self.n_ = 0
        self.n_skipped_ = 0
        self.rtr_ = np.zeros((k, k))
        self.rtx_ = np.zeros((k, v))
        self.sxx_ = np.zeros(v)
        self.sx_ = np.zeros(v)
        self.beta_ = np.zeros((k, v))
        self._a_inv = np.zeros((k, k))
        self._beta_stale = False
        self.scale_ = np.ones(v)
        self._pdiag = np.diag(_penalty(k, self.poly_order, self.prior)).copy()
        self._row = np.zeros(k)
        self._kv = np.zeros((k, v))
        self._v = np.zeros(v)
        self._out = np.zeros(v, dtype=np.float32)

    def _regressors(self, index: int, motion: np.ndarray | None, out: np.ndarray) -> np.ndarray:
        m = None
        if self.motion_regressors:
            m = np.zeros(6) if motion is None else np.asarray(motion, dtype=np.float64)
        return design_row(index, m, self.poly_order, self.horizon, out)

    def update(self, x: np.ndarray, index: int, motion: np.ndarray | None = None) -> np.ndarray:
        """Add volume ``index`` (voxels ``x`` [V]) and return its standardised residual [V] float32.

        The returned array is an internal buffer, overwritten by the next call: copy it to keep it.
        """
        if x.shape != (self.n_voxels,):
            raise ValueError(f"expected {self.n_voxels} voxels, got shape {x.shape}")
        r = self._regressors(index, motion, self._row)
        self.rtr_ += np.outer(r, r)
        np.multiply(r[:, None], x[None, :], out=self._kv)
        self.rtx_ += self._kv
        if self.scale == "zscore":  # only the residual SD needs the sum of squares
            np.multiply(x, x, out=self._v)
            self.sxx_ += self._v
        self.sx_ += x
        self.n_ += 1
        jitter = 1e-12 * max(1.0, float(np.trace(self.rtr_)))  # keeps the first volumes' system solvable
        pdiag = self._pdiag + jitter
        self._a_inv = np.linalg.inv(self.rtr_ + np.diag(pdiag))  # K x K: beats a K x V solve 30-fold
        self._beta_stale = True
        if self.scale == "psc":
            np.multiply(self.sx_, 0.01 / self.n_, out=self.scale_)
            self.scale_[np.abs(self.scale_) < 1e-6 * max(1e-12, float(np.abs(self.scale_).max()))] = 1.0
        elif self.scale == "zscore" and self.n_ >= 2:
            self._refresh_beta()
            # RSS = sum x^2 - 2 beta.b + beta.(R^T R) beta = sum x^2 - beta.b - beta.(P beta), per voxel,
            # since (R^T R + P) beta = b (b = R^T x): exact, from the running sums
            np.multiply(self.beta_, self.rtx_, out=self._kv)
            rss = self.sxx_ - self._kv.sum(axis=0)
            np.multiply(self.beta_, self.beta_, out=self._kv)
            self._kv *= pdiag[:, None]
            rss -= self._kv.sum(axis=0)
            np.maximum(rss, 0.0, out=rss)
            np.sqrt(rss / max(self.n_ - self.n_regressors, 1), out=self.scale_)
            self.scale_[self.scale_ < 1e-9] = 1.0
        # the newest volume's fitted value r^T A^-1 (R^T X): a K-vector times K x V, no K x K x V product
        np.dot(self._a_inv @ r, self.rtx_, out=self._v)
        np.subtract(x, self._v, out=self._v)
        if self.n_ < 2 and self.scale == "zscore":
            self._v[:] = 0.0
        np.divide(self._v, self.scale_, out=self._v)
        self._out[:] = self._v
        return self._out

    def skip(self, index: int) -> None:
        """Leave volume ``index`` out (censored by the QA): it never enters the running sums, so neither the drift
        fit nor the scale; :func:`detrend_offline` with ``exclude`` leaves out the same rows."""
        self.n_skipped_ += 1

    def _refresh_beta(self) -> None:
        if self._beta_stale:
            np.dot(self._a_inv, self.rtx_, out=self.beta_)
            self._beta_stale = False

    def residuals(self, x: np.ndarray, indices: np.ndarray, motion: np.ndarray | None = None) -> np.ndarray:
        """Standardised residuals [n, V] of earlier volumes ``x`` [n, V] under the current fit and scale.

        This is what :func:`detrend_offline` on the volumes so far would give for them: the service computes a
        trial's window estimate on these, so it agrees with the offline estimate as closely as the data allow.
        """
        self._refresh_beta()
        design = np.zeros((len(indices), self.n_regressors))
        for j, i in enumerate(indices):
            self._regressors(int(i), None if motion is None else motion[j], design[j])
        return ((np.asarray(x, np.float64) - design @ self.beta_) / self.scale_).astype(np.float32)


def detrend_offline(
    x: np.ndarray,
    motion: np.ndarray | None = None,
    poly_order: int = 2,
    horizon: float = 200.0,
    scale: str = "psc",
    prior: float = 0.1,
    exclude: np.ndarray | None = None,
) -> np.ndarray:
    """The same drift + motion model fitted on a whole run at once: residuals [T, V], scaled per voxel.

    ``scale`` is ``psc`` (percent of the voxel's mean intensity), ``zscore`` (residual SD, dof ``T - K``) or
    ``none``, as in :class:`OnlinePreprocessor`.

    ``prior`` is the online preprocessor's ridge on the motion coefficients (the same default, so offline
    features are what the service computes).

    ``exclude`` (bool [T]) marks the volumes left out of the fit and the scale (censored by the QA, as
    :meth:`OnlinePreprocessor.skip` leaves them out online); every row still gets its residual.
    """
    x = np.asarray(x, dtype=np.float64)
    t = x.shape[0]
    k = 1 + poly_order + (6 if motion is not None else 0)
    design = np.zeros((t, k))
    for i in range(t):
        design_row(i, None if motion is None else np.asarray(motion[i], float), poly_order, horizon, design[i])
    keep = np.ones(t, bool) if exclude is None else ~np.asarray(exclude, bool)
    fit_d, fit_x = (design, x) if keep.all() else (design[keep], x[keep])
    dtd = fit_d.T @ fit_d
    jitter = 1e-12 * max(1.0, float(np.trace(dtd)))
    beta = np.linalg.solve(dtd + _penalty(k, poly_order, prior) + jitter * np.eye(k), fit_d.T @ fit_x)
    resid = x - design @ beta
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    if scale == "psc":
        div = fit_x.mean(axis=0) / 100.0
        div[np.abs(div) < 1e-6 * max(1e-12, float(np.abs(div).max()))] = 1.0
        resid /= div
    elif scale == "zscore":
        sd = np.sqrt((resid[keep] ** 2).sum(axis=0) / max(int(keep.sum()) - k, 1))
        sd[sd < 1e-9] = 1.0
        resid /= sd
    return resid.astype(np.float32)
