"""Online preprocessing of the masked voxels: incremental detrending and running standardisation.

Each volume's voxels ``x_t`` [V] are modelled as ``x_t = r_t @ beta + e_t`` where the regressors ``r_t`` are an
intercept, Legendre polynomials of the volume index (slow scanner drift) and, optionally, the six motion
parameters of that volume. ``beta`` is the least-squares fit on every volume seen so far, kept as the running
sums ``R^T R`` [K, K] and ``R^T X`` [K, V], so one update costs ``O(K V)`` whatever the run length. The
residual ``e_t`` of the newest volume is then divided by the running standard deviation of the residuals
(Welford), which is the per-run standardisation the offline fit applied to its features.

:func:`detrend_offline` applies the same model to a whole run at once (the reference the online estimate is
compared against).
"""

from __future__ import annotations

import numpy as np

__all__ = ["OnlinePreprocessor", "design_row", "detrend_offline"]


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


class OnlinePreprocessor:
    """Incremental detrending (polynomial drift + motion regressors) and running standardisation.

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
    ridge : float
        Small ridge on ``R^T R`` so the first volumes (fewer than regressors) have a defined fit.
    standardize : bool
        Divide residuals by their running standard deviation.
    min_volumes : int
        Volumes before :attr:`ready` turns true (running statistics still settling).

    Attributes
    ----------
    n_ : int
        Volumes seen.
    rtr_, rtx_ : ndarray
        Running ``R^T R`` [K, K] and ``R^T X`` [K, V] (float64).
    res_mean_, res_m2_ : ndarray
        Welford running mean and sum of squared deviations of the residuals [V].
    """

    def __init__(
        self,
        n_voxels: int,
        poly_order: int = 2,
        motion_regressors: bool = True,
        horizon: float = 200.0,
        ridge: float = 1e-6,
        standardize: bool = True,
        min_volumes: int = 10,
    ) -> None:
        self.n_voxels = n_voxels
        self.poly_order = poly_order
        self.motion_regressors = motion_regressors
        self.horizon = horizon
        self.ridge = ridge
        self.standardize = standardize
        self.min_volumes = min_volumes
        self.reset()

    @property
    def n_regressors(self) -> int:
        return 1 + self.poly_order + (6 if self.motion_regressors else 0)

    @property
    def ready(self) -> bool:
        """True once enough volumes were seen for the drift fit and the running scale to be meaningful."""
        return self.n_ >= max(self.min_volumes, self.n_regressors + 2)

    def reset(self) -> None:
        """Forget every volume (start of a run)."""
        k, v = self.n_regressors, self.n_voxels
        self.n_ = 0
        self.rtr_ = np.zeros((k, k))
        self.rtx_ = np.zeros((k, v))
        self.res_mean_ = np.zeros(v)
        self.res_m2_ = np.zeros(v)
        self._row = np.zeros(k)
        self._resid = np.zeros(v)
        self._delta = np.zeros(v)
        self._tmp = np.zeros(v)
        self._out = np.zeros(v, dtype=np.float32)
        self._ridge_eye = self.ridge * np.eye(k)

    def update(self, x: np.ndarray, index: int, motion: np.ndarray | None = None) -> np.ndarray:
        """Add volume ``index`` (voxels ``x`` [V]) and return its standardised residual [V] float32.

        The returned array is an internal buffer, overwritten by the next call: copy it to keep it.
        """
        if x.shape != (self.n_voxels,):
            raise ValueError(f"expected {self.n_voxels} voxels, got shape {x.shape}")
        m = None
        if self.motion_regressors:
            m = np.zeros(6) if motion is None else np.asarray(motion, dtype=np.float64)
        r = design_row(index, m, self.poly_order, self.horizon, self._row)
        self.rtr_ += np.outer(r, r)
        self.rtx_ += r[:, None] * x[None, :]
        # fitted value of the newest volume: r^T (R^T R + ridge)^-1 R^T X, via one K-vector solve
        w = np.linalg.solve(self.rtr_ + self._ridge_eye * max(1.0, np.trace(self.rtr_)), r)
        np.dot(w, self.rtx_, out=self._tmp)
        np.subtract(x, self._tmp, out=self._resid)
        self.n_ += 1
        # Welford on the residuals
        np.subtract(self._resid, self.res_mean_, out=self._delta)
        self.res_mean_ += self._delta / self.n_
        np.subtract(self._resid, self.res_mean_, out=self._tmp)
        self._tmp *= self._delta
        self.res_m2_ += self._tmp
        if self.standardize:
            if self.n_ >= 2:
                np.divide(self.res_m2_, self.n_ - 1, out=self._tmp)
                np.sqrt(self._tmp, out=self._tmp)
                self._tmp[self._tmp < 1e-12] = 1.0
                np.divide(self._resid, self._tmp, out=self._resid)
            else:
                self._resid[:] = 0.0
        self._out[:] = self._resid
        return self._out


def detrend_offline(
    x: np.ndarray,
    motion: np.ndarray | None = None,
    poly_order: int = 2,
    horizon: float = 200.0,
    standardize: bool = True,
) -> np.ndarray:
    """The same drift + motion model fitted on a whole run at once: residuals [T, V] (z-scored per voxel)."""
    x = np.asarray(x, dtype=np.float64)
    t = x.shape[0]
    k = 1 + poly_order + (6 if motion is not None else 0)
    design = np.zeros((t, k))
    for i in range(t):
        design_row(i, None if motion is None else np.asarray(motion[i], float), poly_order, horizon, design[i])
    beta, *_ = np.linalg.lstsq(design, x, rcond=None)
    resid = x - design @ beta
    if standardize:
        sd = resid.std(axis=0, ddof=1)
        sd[sd < 1e-12] = 1.0
        resid /= sd
    return resid.astype(np.float32)
