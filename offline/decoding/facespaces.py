"""The face spaces a fit decodes into, with what scoring needs of each and the mappings that are fitted to them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["FaceSpaces"]


@dataclass(frozen=True)
class FaceSpaces:
    """Each face space with the stimuli's latents in it, the stimuli's images and features, and the factory of
    brain -> latent mappings fitted into it.

    Parameters
    ----------
    spaces : dict
        Name (``vaegan``, ``pca``) -> face space (its ``decode``: latents -> images [N, H, W, 3] in [0, 1]).
    latents : dict
        Name -> split (``train``, ``test``, ``imagery``) -> the stimuli's latents [N, L], in the order of the
        patterns' stimulus ids.
    images : dict
        Split -> the stimuli as float images [N, H, W, 3] in [0, 1] at the face spaces' image size.
    perceptual : callable or None
        Images -> feature vectors (a hidden layer of the VAE-GAN's discriminator); None: no perceptual space.
    make : callable or None
        ``make(mapping_name, **params)`` -> an unfitted mapping (:func:`offline.decoding.mapping.make_mapping`
        with the fit's penalties and folds).
    ids : dict, optional
        Split -> the stimulus ids of ``latents[...][split]`` and ``images[split]``.
    """

    spaces: dict[str, Any]
    latents: dict[str, dict[str, np.ndarray]]
    images: dict[str, np.ndarray]
    perceptual: Callable[[np.ndarray], np.ndarray] | None = None
    make: Callable[..., Any] | None = None
    ids: dict[str, list[str]] | None = None

    @property
    def names(self) -> list[str]:
        """The face spaces' names, in order."""
        return list(self.spaces)

    def features(self, split: str) -> np.ndarray | None:
        """Perceptual features of the images of ``split`` (None without a perceptual space)."""
        return None if self.perceptual is None else self.perceptual(self.images[split])
