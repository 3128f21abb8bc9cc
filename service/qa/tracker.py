"""The per-volume QA of a run, volume by volume and causal: one code for the live service and the offline path.

:class:`QualityTracker` takes each volume as it comes (the raw volume on its acquisition grid and the mask's voxels
after motion correction) and returns its ``qa`` record: the metrics of ``docs/qa.md`` and whether the volume is
censored, and why. Every running estimate (expected DVARS, the voxels' running medians and spreads, the slices'
running medians, the tSNR) is made of earlier *uncensored* volumes only, so one bad volume cannot move the
thresholds the next ones are judged by. An all-zero or constant volume is refused (:class:`RefusedVolumeError`)
before anything else sees it. numpy only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from service.qa.config import QAConfig

__all__ = ["QualityTracker", "RefusedVolumeError", "check_volume", "median5", "REASONS", "QA_FIELDS"]

#: Why a volume is censored (``qa.reasons``), in the order they are listed.
REASONS = ("spike", "slice", "outliers", "motion")
#: The fields of a volume's ``qa`` record, in order.
QA_FIELDS = ("censored", "reasons", "fd", "dvars", "std_dvars", "global_signal", "outlier_fraction", "slice_z")
#: Volumes in each voxel's running median (the outlier count's centre).
CENTER = 5
#: A normal variable's SD over its mean absolute deviation from the centre.
_MEAN_ABS_TO_SD = float(np.sqrt(np.pi / 2.0))
#: A normal variable's SD over its median absolute deviation.
_MAD_TO_SD = 1.4826
#: The slices' robust spread is never taken below this fraction of their level (a too-steady slice).
SLICE_FLOOR = 0.005
#: Slices whose running mean is below this fraction of the brightest slice's (outside the head) are not checked.
SLICE_MIN_LEVEL = 0.1


class RefusedVolumeError(ValueError):
    """A volume no metric can judge: all zero, or one constant value (``reason``: ``zero`` or ``constant``)."""

    user_error = True

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def check_volume(data: np.ndarray) -> None:
    """Refuse an all-zero or constant volume (:class:`RefusedVolumeError`); anything else passes."""
    lo, hi = float(np.min(data)), float(np.max(data))
    if lo == hi:
        if hi == 0.0:
            raise RefusedVolumeError(
                f"an empty or constant volume: all {np.size(data)} voxels are zero; refused", "zero"
            )
        raise RefusedVolumeError(
            f"an empty or constant volume: all {np.size(data)} voxels hold {hi:g}; refused", "constant"
        )


def median5(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Elementwise median of five arrays with a comparison network (about 40 times faster than ``np.median``)."""
    f = np.maximum(np.minimum(a, b), np.minimum(c, d))
    g = np.minimum(np.maximum(a, b), np.maximum(c, d))
    # the median of e, f, g
    return np.maximum(np.minimum(f, g), np.minimum(np.maximum(f, g), e))


def _median(a: np.ndarray, axis: int | None = None) -> np.ndarray | float:
    """``np.median`` of a small array, bit for bit (the middle of the sorted values, or the mean of the two middle
    ones), without its overhead: the slice check takes five medians of at most ``window`` x slices values."""
    s = np.sort(a, axis=axis)
    if axis is None:
        s, axis = s.reshape(-1), 0
    n = s.shape[axis]
    hi = np.take(s, n // 2, axis=axis)
    return hi if n % 2 else (np.take(s, n // 2 - 1, axis=axis) + hi) / 2.0


def _sig(value: float | None, digits: int = 5) -> float | None:
    return None if value is None else float(f"{value:.{digits}g}")


class QualityTracker:
    """The QA of one run, updated volume by volume (see the module and ``docs/qa.md``).

    Parameters
    ----------
    config : QAConfig
        The thresholds.
    reference_mean : float, optional
        The reference image's mean over the QA voxels (the bundle's mask): the global signal's absolute check from
        the first volume on. None: no absolute check. A run in other units (two volumes in a row off the reference
        by the same factor) turns it off for the rest of the run (``units_ratio_``).

    Attributes
    ----------
    n_ : int
        Volumes judged (refused ones are not).
    n_used_ : int
        Of them, uncensored: the volumes in the running estimates.
    by_reason_ : dict
        Censored volumes per reason.
    """

    def __init__(self, config: QAConfig | None = None, reference_mean: float | None = None) -> None:
        self.config = config if config is not None else QAConfig()
        self.reference_mean = reference_mean
        self.reset()

    def reset(self) -> None:
        """Forget every volume (start of a run)."""
        self.n_ = self.n_used_ = self.n_censored_ = 0
        self._reference = self.reference_mean  # the absolute check's level, until the run shows other units
        self._off_reference: float | None = None  # the previous volume's global signal, when it was off it
        #: the run's global signal over the reference's, once two volumes in a row showed the run's units differ
        #: (the absolute check is then off); None while the run is in the reference's units
        self.units_ratio_: float | None = None
        self.by_reason_: dict[str, int] = {r: 0 for r in REASONS}
        self._prev: np.ndarray | None = None  # the previous judged volume's voxels
        self._prev_ok = False
        self._last: np.ndarray | None = None  # the last uncensored volume's voxels
        self._last_gs: float | None = None
        self._prev_gs: float | None = None
        self._n_pairs = 0
        self._expected: tuple[int, float | None] = (-1, None)  # (pairs, expected DVARS) cached
        self._dsum: np.ndarray | None = None
        self._dsq: np.ndarray | None = None
        self._ring: np.ndarray | None = None
        self._ring_n = 0
        self._pending: tuple | None = None  # the last volume's share of the running estimates (flush)
        self._absdev: np.ndarray | None = None
        self._n_dev = 0
        self._mean_x: np.ndarray | None = None
        self._m2_x: np.ndarray | None = None
        self._raw_shape: tuple[int, ...] | None = None
        self._slices: np.ndarray | None = None
        self._slices_n = 0
        self._mean_r: np.ndarray | None = None
        self._m2_r: np.ndarray | None = None
        self._n_r = 0

    def _start(self, n_voxels: int) -> None:
        self._dsum, self._dsq = np.zeros(n_voxels), np.zeros(n_voxels)
        self._ring = np.zeros((CENTER, n_voxels), np.float32)
        self._absdev = np.zeros(n_voxels)
        self._mean_x, self._m2_x = np.zeros(n_voxels), np.zeros(n_voxels)
        # scratch buffers: the same operations in the same order as with temporaries, without the allocations
        self._f64 = (np.empty(n_voxels), np.empty(n_voxels))
        self._f32 = tuple(np.empty(n_voxels, np.float32) for _ in range(5))
        self._over = np.empty(n_voxels, np.bool_)

    # --- the metrics --------------------------------------------------------------------------------------

    def expected_dvars(self) -> float | None:
        """Nichols' expected DVARS under the null: the mean over voxels of the SD of their volume-to-volume
        differences (consecutive uncensored pairs); None before two pairs."""
        self.flush()
        if self._n_pairs < 2:
            return None
        n = self._n_pairs
        if self._expected[0] != n:  # it changes only with a new pair
            var = np.multiply(self._dsum, self._dsum, out=self._f64[0])
            np.divide(var, n, out=var)
            np.subtract(self._dsq, var, out=var)
            np.divide(var, n - 1, out=var)
            np.maximum(var, 0.0, out=var)
            self._expected = (n, float(np.sqrt(var, out=var).mean()))
        return self._expected[1]

    def _outliers(self, x: np.ndarray) -> tuple[np.ndarray | None, float | None]:
        """``(|x - running median|, outlier fraction)``; the fraction is None until enough deviations are in."""
        if self._ring_n < CENTER:
            return None, None
        a, b, c, d, e = self._ring
        f, g, dev = self._f32[2], self._f32[3], self._f32[4]
        # median5, its temporaries in the scratch buffers
        np.maximum(np.minimum(a, b, out=f), np.minimum(c, d, out=dev), out=f)
        np.minimum(np.maximum(a, b, out=g), np.maximum(c, d, out=dev), out=g)
        np.minimum(np.maximum(f, g, out=dev), e, out=dev)
        np.maximum(np.minimum(f, g, out=f), dev, out=dev)
        np.subtract(x, dev, out=dev)
        np.abs(dev, out=dev)
        if self._n_dev < self.config.warmup:
            return dev, None
        scale = np.multiply(self._absdev, _MEAN_ABS_TO_SD * self.config.outlier_z / self._n_dev, out=self._f64[1])
        return dev, float(np.count_nonzero(np.greater(dev, scale, out=self._over))) / x.size

    def _slice_z(self, means: np.ndarray) -> float | None:
        """The largest robust z of a slice's mean (over the volume's median slice) against its running estimate."""
        if self._slices_n < self.config.warmup:
            return None
        hist = self._slices[: min(self._slices_n, self.config.window)]
        level = _median(hist, axis=0)
        head = level >= SLICE_MIN_LEVEL * max(float(level.max()), 1e-12)
        if not head.any():
            return None
        ratios = hist[:, head] / _median(hist[:, head], axis=1)[:, None]
        cur = means[head] / _median(means[head])
        center = _median(ratios, axis=0)
        mad = _median(np.abs(ratios - center), axis=0)
        scale = np.maximum(_MAD_TO_SD * mad, SLICE_FLOOR * np.abs(center))
        return float((np.abs(cur - center) / np.maximum(scale, 1e-12)).max())

    # --- per volume ---------------------------------------------------------------------------------------

    def update(
        self,
        data: np.ndarray | None,
        x: np.ndarray,
        fd: float | None = None,
        censored: bool | None = None,
    ) -> dict[str, Any]:
        """Judge one volume and return its ``qa`` record (``QA_FIELDS``); an uncensored one enters the estimates.

        Parameters
        ----------
        data : ndarray [X, Y, Z] or None
            The raw volume on its acquisition grid (slices along the last axis): the slice check and the maps.
            None (a resumed run's recorded volumes) leaves both out.
        x : ndarray [V]
            The QA voxels (the bundle's mask) after motion correction.
        fd : float, optional
            Its framewise displacement (mm).
        censored : bool, optional
            Take this decision instead of making it (a resumed run replays its records).
        """
        cfg = self.config
        self.flush()
        x = np.asarray(x, np.float32)
        if self._dsum is None or self._dsum.size != x.size:
            self._start(x.size)
        gs = float(x.mean(dtype=np.float64))
        dvars = std = std_last = None
        expected = self.expected_dvars()
        diff, sq = self._f32[0], self._f32[2]
        if self._prev is not None:
            np.subtract(x, self._prev, out=diff)  # kept for the DVARS sums (_commit)
            dvars = float(np.sqrt(np.square(diff, out=sq).mean(dtype=np.float64)))
            if expected:
                std = dvars / expected
                if self._prev_ok:
                    std_last = std
                elif self._last is not None:
                    np.subtract(x, self._last, out=sq)
                    std_last = float(np.sqrt(np.square(sq, out=sq).mean(dtype=np.float64))) / expected
        # the outliers of the voxels relative to the volume's global signal: a global change (a spike, a step) is
        # the DVARS and global checks' business, a local one (a slice, a coil element) this count's
        xn = np.multiply(x, np.float32(1.0 / gs), out=self._f32[1]) if gs else x
        dev, outlier_fraction = self._outliers(xn)
        means = None
        if data is not None:
            # the slices' means (einsum: the float64 sums of float32 values, summed faster than by ``mean``)
            means = np.einsum("ijk->k", np.asarray(data, np.float32), dtype=np.float64) / (
                data.shape[0] * data.shape[1]
            )
            if not np.all(np.isfinite(means)):
                means = None
            elif self._raw_shape != tuple(data.shape):  # a new grid: the raw estimates start again
                self._raw_shape = tuple(data.shape)
                self._slices = np.zeros((cfg.window, data.shape[2]))
                self._slices_n = self._n_r = 0
                self._mean_r = np.zeros(data.shape, np.float32)
                self._m2_r = np.zeros(data.shape, np.float32)
                self._raw_tmp = (np.empty(data.shape, np.float32), np.empty(data.shape, np.float32))
        slice_z = self._slice_z(means) if means is not None else None

        reasons = []
        ratio = gs / self._reference if self._reference else None
        spike = ratio is not None and not (1.0 / cfg.reference_ratio <= ratio <= cfg.reference_ratio)
        if spike and self._off_reference is not None and abs(gs / self._off_reference - 1.0) <= cfg.global_jump:
            # two volumes in a row off the reference by the same factor agree with each other: the run's units
            # differ from the reference's (another scanner export's scaling, another session's receive gain), it is
            # no spike; the run's own level replaces the absolute check from here on (the first of the two stays
            # censored: it could not be told from a spike when it came)
            self._reference, self.units_ratio_, spike = None, ratio, False
        self._off_reference = gs if spike and ratio is not None else None
        if self._last_gs and self._prev_gs:  # a jump from both the volume before and the last uncensored one
            spike |= min(abs(gs / self._prev_gs - 1.0), abs(gs / self._last_gs - 1.0)) > cfg.global_jump
        if std is not None and self._n_pairs >= cfg.warmup and std_last is not None:
            spike |= min(std, std_last) > cfg.std_dvars
        if spike:
            reasons.append("spike")
        if slice_z is not None and slice_z > cfg.slice_z:
            reasons.append("slice")
        if outlier_fraction is not None and outlier_fraction > cfg.outlier_fraction:
            reasons.append("outliers")
        if cfg.censor_fd_mm > 0 and fd is not None and fd > cfg.censor_fd_mm:
            reasons.append("motion")
        bad = bool(reasons) if censored is None else bool(censored)
        self._commit(x, xn, gs, dev, means, data, bad)
        for r in reasons if bad else ():
            self.by_reason_[r] += 1
        return {
            "censored": bad,
            "reasons": reasons if bad else [],
            "fd": _sig(fd),
            "dvars": _sig(dvars),
            "std_dvars": _sig(std),
            "global_signal": _sig(gs),
            "outlier_fraction": _sig(outlier_fraction),
            "slice_z": _sig(slice_z),
        }

    def _commit(
        self,
        x: np.ndarray,
        xn: np.ndarray,
        gs: float,
        dev: np.ndarray | None,
        means: np.ndarray | None,
        data: Any,
        bad: bool,
    ) -> None:
        """Count the volume and remember it as the previous one (and the last uncensored); what it adds to the
        running estimates waits for :meth:`flush`."""
        self.n_ += 1
        pair = self._prev is not None and self._prev_ok and not bad
        copy = x.copy()
        self._prev, self._prev_ok, self._prev_gs = copy, not bad, gs
        if bad:
            self.n_censored_ += 1
        else:
            self.n_used_ += 1
            self._last, self._last_gs = copy, gs
        self._pending = (copy, xn, dev, means, data, bad, pair)

    def flush(self) -> None:
        """Take the last judged volume into the running estimates: the medians take every judged volume (robust: a
        spike moves them not; a sustained change is accepted after half their span), the sums, means and variances
        the uncensored ones only.

        :meth:`update` leaves this work for later so that a volume's verdict comes first: the live pipeline calls it
        once the volume's frame is published; the next :meth:`update` and every reader of the estimates call it
        themselves. The same operations in the same order either way: the results do not depend on when.
        """
        if self._pending is None:
            return
        x, xn, dev, means, data, bad, pair = self._pending
        self._pending = None
        if pair:
            d = self._f32[0]  # x - the previous volume (update)
            self._dsum += d
            self._dsq += np.square(d, dtype=np.float64, out=self._f64[0])
            self._n_pairs += 1
        self._ring[self._ring_n % CENTER] = xn
        self._ring_n += 1
        if means is not None:
            self._slices[self._slices_n % self.config.window] = means
            self._slices_n += 1
        if bad:
            return
        if dev is not None:
            self._absdev += dev
            self._n_dev += 1
        delta, tmp = self._f64  # Welford, over the mask's voxels: the run's mean tSNR
        np.subtract(x, self._mean_x, out=delta)
        self._mean_x += np.divide(delta, self.n_used_, out=tmp)
        self._m2_x += np.multiply(delta, np.subtract(x, self._mean_x, out=tmp), out=tmp)
        if means is not None:
            self._n_r += 1
            raw = np.asarray(data, np.float32)
            delta_r, tmp_r = self._raw_tmp  # Welford, over the raw grid: the maps
            np.subtract(raw, self._mean_r, out=delta_r)
            self._mean_r += np.divide(delta_r, np.float32(self._n_r), out=tmp_r)
            self._m2_r += np.multiply(delta_r, np.subtract(raw, self._mean_r, out=tmp_r), out=tmp_r)
        self.expected_dvars()  # for the next volume, while there is time

    # --- what the run shows -------------------------------------------------------------------------------

    def tsnr_mean(self) -> float | None:
        """The mean over the QA voxels of their tSNR (mean over SD of the uncensored volumes); None before 3."""
        self.flush()
        if self.n_used_ < 3:
            return None
        sd = np.sqrt(self._m2_x / (self.n_used_ - 1))
        good = sd > 0
        return _sig(float((self._mean_x[good] / sd[good]).mean())) if good.any() else None

    def maps(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(mean, tsnr)`` float32 [X, Y, Z] on the raw grid from the uncensored volumes (tSNR NaN where the SD
        is 0 or fewer than 3 volumes are in); None before any raw volume."""
        self.flush()
        if not self._n_r:
            return None
        mean = self._mean_r.copy()
        tsnr = np.full(mean.shape, np.nan, np.float32)
        if self._n_r >= 3:
            sd = np.sqrt(np.maximum(self._m2_r, 0.0) / (self._n_r - 1))
            np.divide(mean, sd, out=tsnr, where=sd > 0)
        return mean, tsnr

    def summary(self) -> dict[str, Any]:
        """The run's QA so far: ``{"censored", "by_reason", "tsnr_mean", "volumes"}`` (the status message's ``qa``)."""
        out = {
            "censored": self.n_censored_,
            "by_reason": {r: n for r, n in self.by_reason_.items() if n},
            "tsnr_mean": self.tsnr_mean(),
            "volumes": self.n_,
        }
        if self.units_ratio_ is not None:  # the absolute check was turned off: say by how much the units differ
            out["units_ratio"] = _sig(self.units_ratio_, 4)
        return out
