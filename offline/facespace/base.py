"""The face-space interface: what every face space (VAE-GAN, PCA) offers the offline pipeline."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FACESPACE_FILE", "FaceSpace", "FaceSpaceError", "as_float_images", "read_meta"]

FACESPACE_FILE = "facespace.json"


class FaceSpaceError(ValueError):
    """A face-space folder or input that cannot be used; the message names the file or the shape."""

    user_error = True


def as_float_images(images: np.ndarray, size: int) -> np.ndarray:
    """Faces ``uint8 [N, H, W, 3]`` or float in [0, 1] (or one ``[H, W, 3]``) -> float32 ``[N, size, size, 3]``.

    Images of another size are resized (bilinear, antialiased).
    """
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise FaceSpaceError(f"faces must be [N, H, W, 3] (RGB, channels last), got shape {arr.shape}")
    floats = arr.astype(np.float32) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float32)
    if floats.shape[1:3] == (size, size):
        return np.ascontiguousarray(floats)
    from PIL import Image

    u8 = (np.clip(floats, 0, 1) * 255 + 0.5).astype(np.uint8)
    out = [np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.BILINEAR)) for im in u8]
    return np.stack(out).astype(np.float32) / 255.0


class FaceSpace(ABC):
    """Encode faces to latents and decode latents to faces.

    Attributes
    ----------
    name : str
        ``"vaegan"`` or ``"pca"``.
    latent_size, image_size : int
    attribute_names : tuple of str
        Names of the saved attribute directions (empty when none were saved).
    attribute_directions_ : float32 [A, L] or None
    framing : str or None
        How its training images were framed before resizing (``central-80``, ``square`` or ``resize``; see
        :func:`service.framing.frame_image`); None when ``facespace.json`` does not say (older spaces).
    """

    name: str = ""
    latent_size: int = 0
    image_size: int = 0
    framing: str | None = None
    attribute_names: tuple[str, ...] = ()
    attribute_directions_: np.ndarray | None = None

    @property
    def stimulus_framing(self) -> str:
        """How to frame images to encode in this space: its training framing, else ``square`` (what ``fit`` used
        before face spaces recorded their framing)."""
        return self.framing or "square"

    @abstractmethod
    def encode(self, images: np.ndarray) -> np.ndarray:
        """Latents ``float32 [N, L]`` of faces ``uint8 [N, H, W, 3]`` or float in [0, 1]."""

    @abstractmethod
    def decode(self, latents: np.ndarray) -> np.ndarray:
        """Faces ``float32 [N, H, W, 3]`` in [0, 1] of latents ``[N, L]`` (or one ``[L]``)."""

    @abstractmethod
    def export_onnx(self, out_dir: str | Path) -> dict[str, Any]:
        """Write ``decoder.onnx`` and ``encoder.onnx`` into ``out_dir``, parity-checked; returns the parity summary."""

    @abstractmethod
    def save(self, path: str | Path) -> Path:
        """Write the face space into folder ``path`` (readable by :func:`load_facespace`)."""

    def _check_latents(self, latents: np.ndarray) -> np.ndarray:
        z = np.asarray(latents, dtype=np.float32)
        if z.ndim == 1:
            z = z[None]
        if z.ndim != 2 or z.shape[1] != self.latent_size:
            raise FaceSpaceError(f"latents must be [N, {self.latent_size}] for this {self.name} space, got {z.shape}")
        return z

    def _load_attributes(self, folder: Path) -> None:
        path = folder / "attributes.npz"
        if path.is_file():
            with np.load(path, allow_pickle=False) as z:
                self.attribute_names = tuple(str(s) for s in z["names"])
                self.attribute_directions_ = z["directions"].astype(np.float32)

    def _save_attributes(self, folder: Path) -> None:
        if self.attribute_directions_ is not None:
            np.savez(
                folder / "attributes.npz", names=np.array(self.attribute_names), directions=self.attribute_directions_
            )


def read_meta(folder: Path) -> dict[str, Any]:
    """The parsed ``facespace.json`` of a face-space folder (a clear error when it is missing or not JSON)."""
    if not folder.is_dir():
        raise FaceSpaceError(f"face space {folder} is not a folder")
    path = folder / FACESPACE_FILE
    if not path.is_file():
        raise FaceSpaceError(
            f"{folder} is not a face space: it has no {FACESPACE_FILE} (train-vaegan or fit_pca output)"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise FaceSpaceError(f"{path} is not valid JSON: {exc}") from None
