"""Real-time rigid-body motion correction: one volume in a few milliseconds, numpy and scipy only.

Convention (shared with the digital twin's ground truth)
--------------------------------------------------------
Parameters ``p = (trans_x, trans_y, trans_z, rot_x, rot_y, rot_z)``: translations in mm, rotations in degrees,
in world space (RAS+ mm, the space of the NIfTI affine). The head moves rigidly: a point at world position
``x`` in the reference position is at ``R @ x + t`` in the moved volume, with
``R = Rz(rot_z) @ Ry(rot_y) @ Rx(rot_x)`` (right-handed rotations about the world axes through the world
origin) and ``t = (trans_x, trans_y, trans_z)``; :func:`rigid_matrix` builds that 4x4 matrix. Registration of a
moved volume returns these ``p``, and resampling the moved volume at ``R @ x + t`` for every reference grid point
``x`` undoes the motion. Voxel sizes and oblique affines enter only through the affines, so anisotropic and
oblique grids are handled exactly.

Method
------
Inverse-compositional Gauss-Newton (as AFNI 3dvolreg and SPM realign in OpenNFT): the reference's world-space
gradient, the Jacobian at a few thousand sample points and the inverse Hessian are computed once in
:meth:`RigidRegistration.fit`. The points lie inside the (one voxel dilated) brain mask, are drawn with
probability proportional to the gradient magnitude, and are jittered off the voxel centres so that trilinear
interpolation's position-dependent smoothing does not pull the estimate towards whole-voxel shifts. Each
iteration then costs one trilinear gather of the moved volume at the warped points and one ``8 x N`` product. A
global gain and offset are estimated jointly with the six rigid parameters, so intensity drift does not bias the
motion. Once the least-squares steps are below 0.05 mm, a few iteratively reweighted steps (Tukey's biweight at
10 robust standard deviations, weighted Hessian) make the estimate robust to voxels that do not follow the
head: edge slices that gain or lose tissue as the head moves, spikes, strong activation. Warm start from the
previous volume's estimate; each level stops when an update moves no point within ``radius`` mm of the origin
by more than ``tol_mm``, or after ``max_iter`` iterations (plus up to 8 reweighted ones); steps are capped at
4 mm. On EPI-like data one full-resolution level captures motions of 10 mm / 10 degrees from a cold start (the
default); ``levels=(2, 1)`` adds a coarse level (2x2x2 block means) for rougher images.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from service.motion.geometry import framewise_displacement, params_from_matrix, rigid_inverse, rigid_matrix
from service.motion.interp import TrilinearSampler, cubic_sample, downsample2, level_affine
from service.motion.points import Level, auto_mask, build_levels

__all__ = [
    "GridMismatchError",
    "RigidRegistration",
    "framewise_displacement",
    "params_from_matrix",
    "realign_run",
    "rigid_matrix",
]

PARAM_NAMES = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")
_EYE3 = np.eye(3)
_MAX_STEP_MM = 4.0  # largest displacement (within ``radius``) of one Gauss-Newton step
_ROBUST_FROM_MM = 0.05  # least-squares steps this small hand over to the reweighted (robust) phase
_ROBUST_ITER = 8  # reweighted iterations allowed after the least-squares phase has converged
_MASK_CACHE = 4  # resampling masks whose voxel coordinates are kept


class GridMismatchError(ValueError):
    """A volume's grid (shape or affine) differs from the reference's."""

    user_error = True


class RigidRegistration:
    """Rigid registration of volumes to one reference, with the scikit-learn contract.

    Parameters
    ----------
    levels : tuple of int
        Pyramid block sizes, coarsest first (powers of two; ``(1,)`` for the full grid only).
    n_points : tuple of int
        Sample points per level.
    max_iter : tuple of int
        Iteration cap per level.
    tol_mm : float
        A level stops when an update moves points within ``radius`` mm by less than this.
    radius : float
        Radius (mm) turning rotations into displacements, for the stopping rule.
    robust : bool
        Once least squares has converged, refine with Tukey-biweighted residuals (scale from their median
        absolute value) and the weighted Hessian, so voxels that do not move rigidly with the head (edge slices
        that gain or lose tissue, spikes, strong activation) cannot pull the estimate.
    warm_start : bool
        Start each :meth:`estimate` from the previous volume's parameters when ``init`` is not given.
    seed : int
        Seed of the sample-point draw (the fit is deterministic).
    other_grids : bool
        Take volumes on any grid (another session's slab: another affine, matrix or voxel size). The warp maps
        the reference's points into the volume's own voxels (``inv(A_volume) @ T @ A_reference``), so estimating
        and resampling still interpolate the volume once, on its own grid. False: a volume must lie on the
        reference's grid (:class:`GridMismatchError` otherwise).
    interpolation : {"linear", "cubic"}
        How :meth:`resample` interpolates: trilinear, or cubic B-spline (``scipy.ndimage.map_coordinates``,
        order 3, the volume prefiltered once), which does not smooth by an amount that depends on the sub-voxel
        shift. Estimation always samples trilinearly.

    Attributes
    ----------
    reference_, affine_, mask_ : ndarray
        The fitted reference (float32), its voxel-to-world affine and the brain mask (given, or estimated from
        the reference when ``fit`` gets none); ``mask_`` is also the mask :meth:`transform` resamples at.
    levels_ : list of Level
        The precomputed sample points, Jacobians and inverse Hessians, coarsest level first.
    previous_ : ndarray (6,)
        The last plausible estimate (the next warm start).
    n_iter_, converged_, cost_ : int, bool, float
        Iterations, convergence and relative RMS residual of the last :meth:`estimate`.

    Examples
    --------
    >>> reg = RigidRegistration().fit(reference, affine, brain_mask)  # doctest: +SKIP
    >>> params = reg.estimate(volume)  # doctest: +SKIP
    >>> values = reg.resample(volume, params, decoding_mask)  # doctest: +SKIP
    """

    def __init__(
        self,
        levels: tuple[int, ...] = (1,),
        n_points: tuple[int, ...] = (3000,),
        max_iter: tuple[int, ...] = (20,),
        tol_mm: float = 2e-3,
        radius: float = 50.0,
        robust: bool = True,
        warm_start: bool = True,
        seed: int = 0,
        other_grids: bool = False,
        interpolation: str = "linear",
    ) -> None:
        self.levels = levels
        self.n_points = n_points
        self.max_iter = max_iter
        self.tol_mm = tol_mm
        self.radius = radius
        self.robust = robust
        self.warm_start = warm_start
        self.seed = seed
        self.other_grids = other_grids
        self.interpolation = interpolation

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor's parameters (scikit-learn's estimator API, so ``sklearn.base.clone`` works)."""
        return {
            name: getattr(self, name) for name in inspect.signature(type(self).__init__).parameters if name != "self"
        }

    def set_params(self, **params: Any) -> RigidRegistration:
        """Set constructor parameters (scikit-learn's estimator API); unknown names are errors."""
        known = self.get_params()
        for name, value in params.items():
            if name not in known:
                raise ValueError(f"RigidRegistration has no parameter {name!r}; known: {', '.join(known)}")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        return f"RigidRegistration({', '.join(f'{k}={v!r}' for k, v in self.get_params().items())})"

    # ----------------------------------------------------------------------------------------------- fit
    def fit(self, reference: Any, affine: np.ndarray, mask: np.ndarray | None = None) -> RigidRegistration:
        """Precompute everything the per-volume work needs from ``reference`` (3-D) on ``affine``'s grid.

        ``mask`` is the brain (registration) mask: sample points are drawn inside it, dilated by one voxel so the
        brain's outline counts. Without one, a head mask is estimated from the reference. A small decoding mask
        is no registration mask: pass it to :meth:`resample` or :meth:`transform` instead.
        """
        ref = np.asarray(reference, dtype=np.float32)
        if ref.ndim != 3:
            raise GridMismatchError(f"the reference must be one 3-D volume, got shape {ref.shape}")
        aff = np.asarray(affine, dtype=np.float64)
        if aff.shape != (4, 4) or not np.all(np.isfinite(aff)) or abs(np.linalg.det(aff[:3, :3])) < 1e-9:
            raise ValueError(f"the affine must be an invertible 4x4 matrix, got {aff!r}")
        if self.interpolation not in ("linear", "cubic"):
            raise ValueError(f"interpolation must be linear or cubic, not {self.interpolation!r}")
        if not (len(self.levels) == len(self.n_points) == len(self.max_iter)):
            raise ValueError("levels, n_points and max_iter must have the same length")
        if mask is None:
            mask = auto_mask(ref)
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != ref.shape:
            raise GridMismatchError(f"the mask's shape {mask.shape} differs from the reference's {ref.shape}")
        self.reference_ = ref
        self.affine_ = aff
        self._affine_tol = 1e-3 + 1e-5 * np.abs(aff)  # np.allclose(atol=1e-3)'s bound, computed once
        self.inv_affine_ = np.linalg.inv(aff)
        self.mask_ = mask
        self.levels_: list[Level] = build_levels(ref, aff, mask, self.levels, self.n_points, self.seed)
        self._samplers = {lv.shape: TrilinearSampler(lv.shape) for lv in self.levels_}
        self._samplers.setdefault(ref.shape, TrilinearSampler(ref.shape))
        self._mask_cache: list[tuple[np.ndarray, np.ndarray]] = []
        self._all_points: np.ndarray | None = None
        self.previous_ = np.zeros(6)
        self._photometric: tuple[float, float] | None = None
        self.n_iter_ = 0
        self.converged_ = False
        self.cost_ = float("nan")
        return self

    # ------------------------------------------------------------------------------------------ estimate
    def estimate(self, volume: Any, init: Any = None, *, affine: np.ndarray | None = None) -> np.ndarray:
        """The motion parameters ``[6]`` (mm, degrees) of ``volume`` relative to the reference.

        ``init`` (6 parameters) overrides the warm start. ``volume`` is a 3-D array on the reference grid, or an
        object with ``.data`` and ``.affine`` (then its affine is checked too, as is ``affine`` when given).
        Afterwards ``converged_`` says whether the finest level met the tolerance within its cap, ``cost_`` is
        the RMS residual relative to the RMS reference at the sample points, and ``n_iter_`` counts iterations.
        A result outside any plausible head motion (over 40 mm or 40 degrees, or not finite) does not seed the
        next volume's warm start.
        """
        vol, vol_affine = self._check(volume, affine)
        return self._estimate(vol, init, vol_affine)

    def _estimate(self, vol: np.ndarray, init: Any, vol_affine: np.ndarray | None = None) -> np.ndarray:
        """:meth:`estimate` of a checked volume (``vol_affine`` None: on the reference grid)."""
        photometric = None
        if init is not None:
            m = rigid_matrix(init)
        elif self.warm_start:
            m, photometric = rigid_matrix(self.previous_), self._photometric
        else:
            m = np.eye(4)
        pyramid = {1: vol}
        total, converged = 0, False
        for level, cap in zip(self.levels_, self.max_iter):
            if level.factor not in pyramid:
                src, f = vol, 1
                while f < level.factor:
                    src, f = downsample2(src), f * 2
                pyramid[level.factor] = src
            moving = None if vol_affine is None else np.linalg.inv(level_affine(vol_affine, level.factor))
            m, photometric, n, converged = self._solve(level, pyramid[level.factor], m, photometric, cap, moving)
            total += n
        params = params_from_matrix(m)
        plausible = (
            bool(np.all(np.isfinite(params))) and np.abs(params[:3]).max() < 40 and np.abs(params[3:]).max() < 40
        )
        self.previous_ = params if plausible else np.zeros(6)
        self._photometric = photometric if plausible else None
        self.converged_ = converged and plausible
        self.n_iter_ = total
        return params

    def _solve(
        self,
        level: Level,
        vol: np.ndarray,
        m: np.ndarray,
        photometric: tuple[float, float] | None,
        cap: int,
        moving_inv: np.ndarray | None = None,
    ) -> tuple[np.ndarray, tuple[float, float], int, bool]:
        """Gauss-Newton iterations on one level; returns (matrix, (gain, offset), iterations, converged).

        Least squares with the fixed inverse Hessian until the steps fall under the tolerance (with ``robust``:
        under ``_ROBUST_FROM_MM``), then iteratively reweighted steps (Tukey weights, weighted Hessian) until
        they fall under the tolerance.
        """
        sampler = self._sampler(vol.shape)
        sampler.load(vol)
        inv = level.inv_affine if moving_inv is None else moving_inv
        tol2, r2, step2 = self.tol_mm**2, self.radius**2, _MAX_STEP_MM**2
        gain, offset = photometric if photometric is not None else (0.0, 0.0)
        low = high = 0.0
        n, converged, reweighted = 0, False, False
        resid = level.ref_values
        while n < cap and not converged:
            n += 1
            coords = (inv @ m @ level.affine)[:3].astype(np.float32) @ level.points
            if moving_inv is None:
                # Only points nearer to a face than the largest voxel displacement can have left the grid.
                rot = m[:3, :3] - _EYE3
                reach = math.sqrt(m[:3, 3] @ m[:3, 3]) + math.sqrt(np.vdot(rot, rot)) * level.radius_mm
                k = int(np.searchsorted(level.margins, reach / level.mm_per_voxel_min))
            else:  # another grid: any point may lie outside it
                k = coords.shape[1]
            outside = ~sampler.inside(coords[:, :k])
            resid = sampler.sample(coords)
            if n == 1:
                if photometric is None:  # cold start: the global scale from the data, no offset
                    mean = float(resid[k:].sum() + resid[:k][~outside].sum()) / max(resid.size - outside.sum(), 1)
                    gain, offset = (mean / level.ref_mean if mean > 0 and level.ref_mean > 0 else 1.0), 0.0
                low, high = gain / 4.0, gain * 4.0
            resid -= np.float32(offset)
            resid *= np.float32(1.0 / gain)
            resid -= level.ref_values
            resid[:k][outside] = 0.0  # points moved out of the field of view carry no information
            if reweighted:
                w = _tukey_weights(resid)
                jw = level.jacobian_t * w
                resid *= w
                try:
                    d = np.linalg.solve((jw @ level.jacobian_t.T).astype(np.float64), (jw @ resid).astype(np.float64))
                except np.linalg.LinAlgError:
                    break
            else:
                d = level.hessian_inv @ (level.jacobian_t @ resid).astype(np.float64)
            if not np.all(np.isfinite(d)):
                break
            step = d[:3] @ d[:3] + r2 * (d[3:6] @ d[3:6])
            if step > step2:  # trust region: at most _MAX_STEP_MM of displacement within radius per step
                d[:6] *= np.sqrt(step2 / step)
            # Inverse-compositional update: W(p) <- W(p) o W(dp)^-1; gain and offset additively.
            m = m @ rigid_inverse(rigid_matrix(d[:6], degrees=False))
            offset += gain * d[7]
            gain = min(max(gain * (1.0 + d[6]), low), high)
            converged = step < (tol2 if reweighted or not self.robust else _ROBUST_FROM_MM**2)
            if converged and self.robust and not reweighted:
                converged, reweighted = False, True
                cap = max(cap, n + _ROBUST_ITER)
        self.cost_ = float(np.sqrt(resid @ resid / resid.size)) / level.ref_rms
        return m, (gain, offset), n, converged

    # ------------------------------------------------------------------------------------------ resample
    def resample(
        self, volume: Any, params: Any, mask: np.ndarray | None = None, *, affine: np.ndarray | None = None
    ) -> np.ndarray:
        """``volume`` resampled at the reference grid points moved by ``params`` (trilinear, zero outside).

        With ``mask`` (bool, reference grid): the values at ``np.flatnonzero(mask)``'s voxels ``[V]`` (the
        service's fast path); without: the whole realigned volume, float32, the reference's shape.
        """
        vol, vol_affine = self._check(volume, affine)
        return self._resample_checked(vol, params, mask, loaded=False, vol_affine=vol_affine)

    def estimate_resample(
        self, volume: Any, mask: np.ndarray | None = None, init: Any = None, *, affine: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`estimate`, then :meth:`resample` with its parameters: ``(params [6], values)``.

        The same numbers as the two calls (``init`` as for :meth:`estimate`), with the volume converted and copied
        into the sampler once (the service's path: one volume in, motion parameters and the mask's voxels out).
        """
        vol, vol_affine = self._check(volume, affine)
        params = self._estimate(vol, init, vol_affine)
        # a finest level at full resolution has left ``vol`` in its grid's sampler
        loaded = self.levels_[-1].factor == 1
        return params, self._resample_checked(vol, params, mask, loaded=loaded, vol_affine=vol_affine)

    def _resample_checked(
        self,
        vol: np.ndarray,
        params: Any,
        mask: np.ndarray | None,
        loaded: bool,
        vol_affine: np.ndarray | None = None,
    ) -> np.ndarray:
        points = self._grid_points(mask)
        inv = self.inv_affine_ if vol_affine is None else np.linalg.inv(vol_affine)
        matrix = inv @ rigid_matrix(params) @ self.affine_
        if self.interpolation == "cubic":
            values = cubic_sample(vol, matrix, points)
        else:
            sampler = self._sampler(vol.shape)
            if not loaded:
                sampler.load(vol)
            values = sampler.sample_affine(matrix, points)
        return values if mask is not None else values.reshape(self.reference_.shape)

    def on_reference_grid(self, shape: tuple[int, ...], affine: np.ndarray) -> bool:
        """Whether a volume of ``shape`` and ``affine`` lies on the reference's grid (the check :meth:`estimate`
        makes, with its tolerance computed once)."""
        return tuple(shape) == self.reference_.shape and _within(affine, self.affine_, self._affine_tol)

    def _sampler(self, shape: tuple[int, ...]) -> TrilinearSampler:
        """The trilinear sampler of a grid shape (the reference's levels, or another session's grid)."""
        sampler = self._samplers.get(shape)
        if sampler is None:
            sampler = self._samplers[shape] = TrilinearSampler(shape)
        return sampler

    def transform(self, volume: Any, *, mask: np.ndarray | None = None) -> np.ndarray:
        """Estimate, then resample at ``mask``'s voxels (default: the fit mask ``mask_``).

        Returns ``[V]`` for one volume and ``[T, V]`` for a run ``[X, Y, Z, T]`` (volumes in order, warm-started).
        """
        data = _data_of(volume)
        if data.ndim == 4:
            return np.stack([self.transform(data[..., t], mask=mask) for t in range(data.shape[3])])
        return self.estimate_resample(volume, self.mask_ if mask is None else mask)[1]

    # ---------------------------------------------------------------------------------------------- util
    def _grid_points(self, mask: np.ndarray | None) -> np.ndarray:
        """Homogeneous voxel coordinates ``[4, V]`` of the mask's voxels (all voxels for None), cached."""
        if mask is None:
            if self._all_points is None:
                self._all_points = _voxel_points(np.arange(self.reference_.size), self.reference_.shape)
            return self._all_points
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != self.reference_.shape:
            raise GridMismatchError(
                f"the resampling mask's shape {mask.shape} differs from the reference's {self.reference_.shape}"
            )
        # By content, so a mask changed in place is not mistaken for the old one; a read-only mask (the bundle's)
        # cannot change, so it is kept itself rather than a copy and found again by identity, without a compare.
        hit = next(
            (i for i, (stored, _) in enumerate(self._mask_cache) if stored is mask or np.array_equal(stored, mask)),
            None,
        )
        if hit is not None:
            stored, points = self._mask_cache.pop(hit)
        else:
            stored, points = mask.copy(), _voxel_points(np.flatnonzero(mask), mask.shape)
        self._mask_cache.insert(0, (stored if mask.flags.writeable else mask, points))
        del self._mask_cache[_MASK_CACHE:]
        return points

    def _check(self, volume: Any, affine: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        if not hasattr(self, "levels_"):
            raise RuntimeError("RigidRegistration is not fitted: call fit(reference, affine, mask) first")
        data = _data_of(volume)
        if affine is None:
            affine = getattr(volume, "affine", None)
        shape_ok = data.shape == self.reference_.shape
        affine_ok = affine is None or _within(affine, self.affine_, self._affine_tol)
        if shape_ok and affine_ok:
            return data, None
        if self.other_grids and affine is not None and data.ndim == 3:
            aff = np.asarray(affine, dtype=np.float64)
            if aff.shape == (4, 4) and np.all(np.isfinite(aff)) and abs(np.linalg.det(aff[:3, :3])) > 1e-9:
                return data, aff
        raise GridMismatchError(
            f"the volume's grid (shape {data.shape}, affine {_fmt(affine)}) does not match the reference's "
            f"(shape {self.reference_.shape}, affine {_fmt(self.affine_)})"
            + ("" if self.other_grids else "; other grids are taken with other_grids=True")
        )


def realign_run(
    data4d: Any,
    affine: np.ndarray,
    reference: Any = None,
    reference_volume: int | None = None,
    mask: np.ndarray | None = None,
    return_realigned: bool = False,
    *,
    registration: RigidRegistration | None = None,
    callback: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Realign a whole run ``[X, Y, Z, T]`` to one reference: the offline pipeline's entry point.

    The reference is ``reference`` (3-D, same grid), else volume ``reference_volume`` of the run, else the mean
    of the run's volumes. Returns ``(params [T, 6], realigned [X, Y, Z, T] float32 or None)``. ``registration``
    supplies a configured (unfitted) :class:`RigidRegistration`; ``callback(t)`` is called after each volume.
    """
    data = np.asarray(data4d)
    if data.ndim != 4:
        raise GridMismatchError(f"a run must be 4-D [X, Y, Z, T], got shape {data.shape}")
    n = data.shape[3]
    if reference is not None and reference_volume is not None:
        raise ValueError("give either reference or reference_volume, not both")
    if reference is not None:
        ref = np.asarray(reference, dtype=np.float32)
        if ref.shape != data.shape[:3]:
            raise GridMismatchError(f"the reference's shape {ref.shape} differs from the run's {data.shape[:3]}")
    elif reference_volume is not None:
        if not -n <= reference_volume < n:
            raise ValueError(f"reference_volume {reference_volume} is outside the run's {n} volumes")
        ref = np.asarray(data[..., reference_volume], dtype=np.float32)
    else:
        ref = data.mean(axis=3, dtype=np.float64).astype(np.float32)
    reg = (registration if registration is not None else RigidRegistration()).fit(ref, affine, mask)
    params = np.zeros((n, 6))
    realigned = np.empty(data.shape, dtype=np.float32) if return_realigned else None
    for t in range(n):
        vol = np.asarray(data[..., t], dtype=np.float32)
        if realigned is not None:
            params[t], realigned[..., t] = reg.estimate_resample(vol)
        else:
            params[t] = reg.estimate(vol)
        if callback is not None:
            callback(t)
    return params, realigned


def _tukey_weights(resid: np.ndarray, c: float = 10.0) -> np.ndarray:
    """Tukey's biweight ``(1 - (r / (c s))^2)^2``, 0 beyond ``c s``, with s = 1.4826 median |r|.

    ``c = 10`` (not the usual 4.685): interpolation errors at sharp edges are heavy-tailed but informative; only
    gross outliers (an edge slice that lost tissue, a spike) should lose their weight.
    """
    a = np.abs(resid)  # np.median(np.abs(resid)) without its copy: partition the temporary in place
    n = a.size
    if n == 0:
        return np.ones_like(resid)
    a.partition([(n - 1) // 2, n // 2])
    scale = 1.4826 * 0.5 * (float(a[(n - 1) // 2]) + float(a[n // 2]))
    if scale <= 0.0:
        return np.ones_like(resid)
    u = resid * np.float32(1.0 / (c * scale))
    np.square(u, out=u)
    np.subtract(1.0, u, out=u)
    np.maximum(u, 0.0, out=u)
    np.square(u, out=u)
    return u


def _within(affine: Any, reference: np.ndarray, tol: np.ndarray) -> bool:
    """``np.allclose(affine, reference, atol=1e-3)`` with its bound ``tol`` computed once (False for NaN)."""
    a = np.asarray(affine, dtype=np.float64)
    return a.shape == reference.shape and bool(np.all(np.abs(a - reference) <= tol))


def _voxel_points(flat: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Homogeneous float32 voxel coordinates ``[4, V]`` of flat (C-order) voxel indices."""
    ijk = np.unravel_index(flat, shape)
    return np.vstack([*ijk, np.ones(flat.size, dtype=np.intp)]).astype(np.float32)


def _data_of(volume: Any) -> np.ndarray:
    data = getattr(volume, "data", volume)
    if hasattr(data, "get_fdata"):
        data = data.get_fdata(dtype=np.float32)
    return np.asarray(data, dtype=np.float32)


def _fmt(affine: Any) -> str:
    if affine is None:
        return "not given"
    rows = np.round(np.asarray(affine, dtype=np.float64)[:3], 3) + 0.0  # + 0.0 turns -0.0 into 0.0
    return "[" + ", ".join("[" + ", ".join(f"{v:g}" for v in row) + "]" for row in rows) + "]"
