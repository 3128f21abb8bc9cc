"""The twin's hidden face code and the face-responsive voxels that read it out.

The code is a fixed, partly nonlinear function of a face's generative parameters (random linear features,
tanh features and products of pairs of projections), standardised on a fixed reference sample. Face areas
care little about background, clothes, lighting and framing, so those parameters weigh less. Responsive
voxels sit in occipito-temporal clusters (fusiform and occipital face areas, posterior STS, lateral and early
occipital cortex, both hemispheres) in grey matter; each reads the code out with weights that vary smoothly
in space, as neighbouring voxels share neurons' tuning.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from offline.faces.params import PARAM_NAMES, sample_params
from offline.twin.anatomy import BRAIN_CENTRE_MNI

__all__ = ["FaceCode", "MixedCode", "FACE_AREAS_MNI", "responsive_voxels", "readout_weights"]

#: (MNI centre mm, radius mm, weight) of the clusters that respond to faces.
FACE_AREAS_MNI = (
    ((40.0, -52.0, -18.0), 11.0, 1.0),  # right fusiform face area
    ((-40.0, -54.0, -18.0), 11.0, 0.8),  # left fusiform face area
    ((42.0, -78.0, -8.0), 11.0, 0.9),  # right occipital face area
    ((-40.0, -80.0, -8.0), 11.0, 0.7),  # left occipital face area
    ((50.0, -50.0, 8.0), 9.0, 0.5),  # right posterior superior temporal sulcus
    ((14.0, -92.0, 2.0), 12.0, 0.6),  # occipital pole, right
    ((-14.0, -92.0, 2.0), 12.0, 0.6),  # occipital pole, left
)
_NUISANCE = ("background_hue", "background_value", "clothes_hue", "light_angle", "roll", "shift_x", "shift_y", "scale")


class FaceCode:
    """The hidden neural code: ``params [n, P] -> codes [n, C]`` (float32, about unit variance per unit).

    Parameters
    ----------
    code_size : int
        Units in the code.
    nonlinear_share : float
        Fraction of units that are nonlinear (half tanh features, half products); the rest are linear.
    seed : int
        Fixes the random features (a property of the simulated brain, not of the stimuli).
    """

    def __init__(self, code_size: int = 64, nonlinear_share: float = 0.6, seed: int = 7) -> None:
        self.code_size = code_size
        rng = np.random.default_rng([seed, 11])
        weight = np.array([0.25 if name in _NUISANCE else 1.0 for name in PARAM_NAMES])
        n_nl = int(round(code_size * nonlinear_share))
        self.n_tanh, self.n_prod = n_nl - n_nl // 2, n_nl // 2
        self.n_lin = code_size - n_nl
        p = len(PARAM_NAMES)
        scale = weight[:, None] / np.sqrt(np.sum(weight**2))
        self.a_lin = rng.standard_normal((p, self.n_lin)) * scale
        self.a_tanh = rng.standard_normal((p, self.n_tanh)) * scale * 1.8
        self.b_tanh = rng.uniform(-0.8, 0.8, self.n_tanh)
        self.a_p1 = rng.standard_normal((p, self.n_prod)) * scale * 1.4
        self.a_p2 = rng.standard_normal((p, self.n_prod)) * scale * 1.4
        ref = self._raw(sample_params(4096, np.random.default_rng([seed, 12])))
        self.mean_, self.scale_ = ref.mean(0), ref.std(0) + 1e-9

    def _raw(self, params: np.ndarray) -> np.ndarray:
        z = (np.asarray(params, dtype=np.float64) - 0.5) * np.sqrt(12.0)
        return np.concatenate(
            [z @ self.a_lin, np.tanh(z @ self.a_tanh + self.b_tanh), (z @ self.a_p1) * (z @ self.a_p2)], axis=1
        )

    def __call__(self, params: np.ndarray) -> np.ndarray:
        """Codes ``float32 [n, C]`` of face parameters ``[n, P]``, standardised per unit."""
        return ((self._raw(params) - self.mean_) / self.scale_).astype(np.float32)


class MixedCode:
    """A group member's code: ``sqrt(f) * shared(params) + sqrt(1 - f) * own(params)``, f the shared fraction.

    Both parts are :class:`FaceCode` of the same size with their own random features, so the mix keeps about
    unit variance per unit; ``f`` is the share of each unit's variance that every subject of the group has.
    """

    def __init__(self, shared: FaceCode, own: FaceCode, shared_fraction: float) -> None:
        if shared.code_size != own.code_size:
            raise ValueError(f"the shared code has {shared.code_size} units, the subject's own {own.code_size}")
        self.code_size = shared.code_size
        self.shared, self.own, self.shared_fraction = shared, own, float(shared_fraction)

    def __call__(self, params: np.ndarray) -> np.ndarray:
        """Codes ``float32 [n, C]`` of face parameters ``[n, P]``."""
        f = self.shared_fraction
        return (np.sqrt(f) * self.shared(params) + np.sqrt(1.0 - f) * self.own(params)).astype(np.float32)


def responsive_voxels(
    affine: np.ndarray, grey: np.ndarray, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Pick the ``n`` face-responsive voxels.

    Parameters
    ----------
    affine : ndarray [4, 4]
        The grid's voxel-to-world affine (world = MNI minus ``BRAIN_CENTRE_MNI``).
    grey : ndarray [X, Y, Z]
        Grey-matter probability on the grid.
    n : int
        Number of voxels.
    rng : numpy.random.Generator
        Breaks ties between equally scored voxels.

    Returns
    -------
    mask : ndarray bool [X, Y, Z]
    strength : ndarray float32 [X, Y, Z]
        In (0, 1] on the mask (1 at the cluster centres), 0 elsewhere.
    """
    shape = grey.shape
    ijk = np.indices(shape, dtype=np.float64).reshape(3, -1)
    mni = affine[:3, :3] @ ijk + affine[:3, 3:] + BRAIN_CENTRE_MNI[:, None]
    score = np.zeros(ijk.shape[1])
    for centre, radius, weight in FACE_AREAS_MNI:
        d2 = np.sum((mni - np.asarray(centre)[:, None]) ** 2, axis=0)
        score += weight * np.exp(-d2 / (2.0 * radius**2))
    g = grey.reshape(-1)
    candidates = np.flatnonzero(g > 0.25)
    if n > candidates.size:
        raise ValueError(f"signal.n_responsive ({n}) exceeds the {candidates.size} grey-matter voxels of this grid")
    jitter = 1.0 + 0.05 * rng.standard_normal(candidates.size)
    ranked = candidates[np.argsort(-(score[candidates] * np.sqrt(g[candidates]) * jitter), kind="stable")]
    chosen = ranked[:n]
    mask = np.zeros(g.size, bool)
    mask[chosen] = True
    strength = np.zeros(g.size, np.float32)
    s = score[chosen] / max(score[chosen].max(), 1e-12)
    strength[chosen] = np.clip(s, 0.05, 1.0)
    return mask.reshape(shape), strength.reshape(shape)


def readout_weights(mask: np.ndarray, code: FaceCode, smoothness_vox: float, rng: np.random.Generator) -> np.ndarray:
    """Each responsive voxel's weights on the code, smooth in space: ``[V, C]`` in ``np.flatnonzero(mask)`` order.

    Every voxel's readout ``codes @ w`` has unit variance over faces drawn like the stimuli.
    """
    idx = np.nonzero(mask)
    lo = [int(i.min()) for i in idx]
    hi = [int(i.max()) + 1 for i in idx]
    sub = tuple(i - o for i, o in zip(idx, lo))
    box = tuple(h - o for h, o in zip(hi, lo))
    weights = np.empty((idx[0].size, code.code_size), np.float32)
    for c in range(code.code_size):
        field = rng.standard_normal(box)
        if smoothness_vox > 0:
            field = ndimage.gaussian_filter(field, smoothness_vox, mode="wrap")
        weights[:, c] = field[sub]
    weights -= weights.mean(0)
    weights /= weights.std(0) + 1e-9
    ref = code(sample_params(2048, np.random.default_rng([code.code_size, 13])))
    sd = (ref @ weights.T).std(0)
    weights /= sd[:, None] + 1e-9
    return weights
