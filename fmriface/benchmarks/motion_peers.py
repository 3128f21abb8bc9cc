"""Peers of ``fmriface bench motion``: the Python tools users would otherwise reach for.

Each peer is a function ``(reference, affine, volumes) -> (params [T, 6] in service.motion's convention, times
[T] seconds for estimate + reslice)``, or raises ImportError when the package is not installed. Settings are
each tool's documented real-time or quick defaults.

- ``python-rtspm``: OpenNFT's real-time SPM realign + reslice (flags as in OpenNFT: quality 0.9, fwhm 5,
  sep 4, 4th-degree B-splines), the first call precomputing the reference's Jacobian, as OpenNFT does.
- ``antspyx``: ``ants.registration(type_of_transform="QuickRigid")`` + ``ants.apply_transforms``.
- ``SimpleITK``: a multi-resolution Euler3D mean-squares registration (regular-step gradient descent, 10%
  random sampling, shrink 2/1) + ``sitk.Resample``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from service.motion import params_from_matrix

Peer = Callable[[np.ndarray, np.ndarray, list[np.ndarray]], tuple[np.ndarray, np.ndarray]]
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # ITK works in LPS; NIfTI affines are RAS


def rtspm_peer(reference: np.ndarray, affine: np.ndarray, volumes: list[np.ndarray]):
    """Realign and reslice each volume to ``reference`` with python-rtspm, as OpenNFT does.

    Returns the parameters [T, 6] in service.motion's convention and the seconds each volume took; the first
    call, which precomputes the reference's Jacobian, is not timed. Raises ImportError without rtspm.
    """
    from rtspm import spm_realign_rt, spm_reslice_rt

    flags_realign = {"quality": 0.9, "fwhm": 5, "sep": 4, "interp": 4, "wrap": np.zeros((3, 1)), "rtm": 0}
    flags_realign.update({"PW": "", "lkp": np.arange(6)})
    flags_reslice = {"quality": 0.9, "fwhm": 5, "sep": 4, "interp": 4, "wrap": np.zeros((3, 1)), "mask": 1}
    flags_reslice.update({"mean": 0, "which": 2})
    one_based = np.eye(4)
    one_based[:3, 3] = -1.0  # SPM's voxel indices start at 1
    mat = affine @ one_based
    dim = np.array(reference.shape)

    def pair(vol):
        return [
            {"Vol": np.asfortranarray(reference, dtype=np.float64), "mat": mat.copy(), "dim": dim},
            {"Vol": np.asfortranarray(vol, dtype=np.float64), "mat": mat.copy(), "dim": dim},
        ]

    # The first call (ind_vol == first) precomputes the reference's Jacobian; it is not timed.
    r, a0, x1, x2, x3, deg, b, _ = spm_realign_rt(pair(reference), dict(flags_realign), 1, 1, *[None] * 6)
    params, times = [], []
    for vol in volumes:
        t0 = time.perf_counter()
        r, a0, x1, x2, x3, deg, b, _ = spm_realign_rt(pair(vol), dict(flags_realign), 2, 1, a0, x1, x2, x3, deg, b)
        spm_reslice_rt(r, dict(flags_reslice))
        times.append(time.perf_counter() - t0)
        # r[1]["mat"] maps the moved volume's voxels to the reference's world: T = mat0 @ inv(mat1).
        params.append(params_from_matrix(r[0]["mat"] @ np.linalg.inv(r[1]["mat"])))
    return np.array(params), np.array(times)


def _itk_geometry(affine: np.ndarray):
    lps = _LPS @ affine
    spacing = np.sqrt((lps[:3, :3] ** 2).sum(axis=0))
    direction = lps[:3, :3] / spacing
    return lps[:3, 3], spacing, direction


def _matrix_from_itk(matrix: np.ndarray, translation: np.ndarray, center: np.ndarray) -> np.ndarray:
    """RAS 4x4 of an ITK transform x -> A (x - c) + c + t (LPS), which maps fixed (reference) points to moving."""
    m = np.eye(4)
    m[:3, :3] = matrix
    m[:3, 3] = center + translation - matrix @ center
    return _LPS @ m @ _LPS


def ants_peer(reference: np.ndarray, affine: np.ndarray, volumes: list[np.ndarray]):
    """Register each volume to ``reference`` with antspyx's QuickRigid and apply the transform.

    Returns the parameters [T, 6] in service.motion's convention and the seconds each volume took (registration
    plus resampling). Raises ImportError without antspyx.
    """
    import ants

    origin, spacing, direction = _itk_geometry(affine)

    def image(a):
        return ants.from_numpy(np.asarray(a, np.float32), tuple(origin), tuple(spacing), direction)

    fixed = image(reference)
    params, times = [], []
    for vol in volumes:
        moving = image(vol)
        t0 = time.perf_counter()
        reg = ants.registration(fixed, moving, type_of_transform="QuickRigid")
        ants.apply_transforms(fixed, moving, reg["fwdtransforms"], interpolator="linear")
        times.append(time.perf_counter() - t0)
        tx = ants.read_transform(reg["fwdtransforms"][0])
        p = np.asarray(tx.parameters, dtype=np.float64)
        m = _matrix_from_itk(p[:9].reshape(3, 3), p[9:12], np.asarray(tx.fixed_parameters, dtype=np.float64))
        params.append(params_from_matrix(m))
    return np.array(params), np.array(times)


def sitk_peer(reference: np.ndarray, affine: np.ndarray, volumes: list[np.ndarray]):
    """Register each volume to ``reference`` with a two-level SimpleITK Euler3D registration and resample.

    Returns the parameters [T, 6] in service.motion's convention and the seconds each volume took (registration
    plus resampling). Raises ImportError without SimpleITK.
    """
    import SimpleITK as sitk

    origin, spacing, direction = _itk_geometry(affine)

    def image(a):
        img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(a, np.float32).transpose(2, 1, 0)))
        img.SetOrigin(tuple(origin))
        img.SetSpacing(tuple(spacing))
        img.SetDirection(tuple(direction.ravel()))
        return img

    fixed = image(reference)
    params, times = [], []
    for vol in volumes:
        moving = image(vol)
        t0 = time.perf_counter()
        reg = sitk.ImageRegistrationMethod()
        reg.SetMetricAsMeanSquares()
        reg.SetMetricSamplingStrategy(reg.RANDOM)
        reg.SetMetricSamplingPercentage(0.1, seed=1)
        reg.SetInterpolator(sitk.sitkLinear)
        reg.SetOptimizerAsRegularStepGradientDescent(1.0, 1e-4, 200, relaxationFactor=0.5)
        reg.SetOptimizerScalesFromPhysicalShift()
        reg.SetShrinkFactorsPerLevel([2, 1])
        reg.SetSmoothingSigmasPerLevel([1, 0])
        init = sitk.CenteredTransformInitializer(fixed, moving, sitk.Euler3DTransform())
        reg.SetInitialTransform(init, inPlace=False)
        out = sitk.CompositeTransform(reg.Execute(fixed, moving)).GetNthTransform(0)
        sitk.Resample(moving, fixed, out, sitk.sitkLinear, 0.0)
        times.append(time.perf_counter() - t0)
        euler = sitk.Euler3DTransform(out)
        m = _matrix_from_itk(
            np.asarray(euler.GetMatrix()).reshape(3, 3),
            np.asarray(euler.GetTranslation()),
            np.asarray(euler.GetCenter()),
        )
        params.append(params_from_matrix(m))
    return np.array(params), np.array(times)


PEERS: dict[str, Peer] = {"python-rtspm": rtspm_peer, "antspyx": ants_peer, "SimpleITK": sitk_peer}
