"""Face spaces: the VAE-GAN's latent space and the PCA baseline behind one interface.

A face space maps faces to latent vectors and back. The offline pipeline encodes stimuli, fits brain -> latent
mappings and evaluates in latent, pixel and perceptual space through this interface alone, so the VAE-GAN and
the PCA ("eigenface") baseline are interchangeable; both export the same ONNX contract for the service.

Examples
--------
>>> space = load_facespace("runs/vaegan-demo")  # doctest: +SKIP
>>> z = space.encode(images)                    # uint8 [N, H, W, 3] -> float32 [N, L]
>>> faces = space.decode(z)                     # float32 [N, H, W, 3] in [0, 1]
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "FaceSpace",
    "FaceSpaceError",
    "VAEGANFaceSpace",
    "load_facespace",
    "perceptual_features",
    "attribute_directions",
    "as_float_images",
    "encode_folder",
]

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


class VAEGANFaceSpace(FaceSpace):
    """The VAE-GAN face space: ``encode`` gives the encoder's z_mu, ``decode`` the decoder's image (eval mode)."""

    name = "vaegan"

    def __init__(self, model, device: str | Any = "cpu", path: Path | None = None, batch_size: int = 64) -> None:
        import torch

        self.model = model
        self.device = torch.device(device) if isinstance(device, str) else device
        self.path = path
        self.batch_size = batch_size
        self.latent_size = model.cfg.latent_size
        self.image_size = model.cfg.image_size

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> VAEGANFaceSpace:
        """The face space of a ``train-vaegan`` output folder (or a folder written by :meth:`save`)."""
        from models.checkpoint import load_checkpoint

        folder = Path(path)
        meta = _read_meta(folder)
        model, _ = load_checkpoint(folder / meta.get("checkpoint", "checkpoint.pt"), map_location=device)
        space = cls(model, device=device, path=folder)
        space.framing = meta.get("framing")
        space._load_attributes(folder)
        return space

    def _batches(self, arr: np.ndarray, fn) -> np.ndarray:
        import torch

        self.model.eval()
        out = []
        with torch.no_grad():
            for i in range(0, len(arr), self.batch_size):
                out.append(fn(torch.from_numpy(arr[i : i + self.batch_size]).to(self.device)).cpu().numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0,), np.float32)

    def encode(self, images: np.ndarray) -> np.ndarray:
        x = as_float_images(images, self.image_size).transpose(0, 3, 1, 2).copy()  # [N, 3, S, S]
        return self._batches(x, lambda t: self.model.encoder(t)[0]).reshape(len(x), self.latent_size)

    def decode(self, latents: np.ndarray) -> np.ndarray:
        z = self._check_latents(latents)
        imgs = self._batches(z, self.model.decoder).reshape(len(z), 3, self.image_size, self.image_size)
        return imgs.transpose(0, 2, 3, 1).copy()  # [N, S, S, 3]

    def features(self, images: np.ndarray) -> np.ndarray:
        """The discriminator's hidden layer (the feature-loss layer), flattened: ``float32 [N, F]``."""
        x = as_float_images(images, self.image_size).transpose(0, 3, 1, 2).copy()
        return self._batches(x, lambda t: self.model.discriminator.features(t).flatten(1))

    def export_onnx(self, out_dir: str | Path, real_images: np.ndarray | None = None) -> dict[str, Any]:
        """ONNX export with parity check on random latents and on the latents of real faces.

        The real faces are ``real_images`` or, by default, the held-out faces saved with the training run.
        """
        from models.export import export_onnx

        if real_images is None and self.path is not None and (self.path / "heldout_faces.npy").is_file():
            real_images = np.load(self.path / "heldout_faces.npy")
        real = None if real_images is None else as_float_images(real_images, self.image_size).transpose(0, 3, 1, 2)
        report = export_onnx(self.model, out_dir, real_images=real)
        report.update(facespace=self.name, network=self.model.cfg.name)
        return report

    def save(self, path: str | Path) -> Path:
        from models.checkpoint import save_checkpoint

        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        save_checkpoint(folder / "checkpoint.pt", self.model)
        write_vaegan_meta(folder, self.model.cfg, self.framing)
        self._save_attributes(folder)
        return folder


def write_vaegan_meta(folder: Path, net_cfg: Any, framing: str | None, checkpoint: str = "checkpoint.pt") -> None:
    """``facespace.json`` of a VAE-GAN face space (``train-vaegan``'s output and :meth:`VAEGANFaceSpace.save`):
    the network preset (``net_cfg``: name, latent and image size), its checkpoint file and the framing of its
    training images (left out when unknown)."""
    meta = {
        "kind": "vaegan",
        "checkpoint": checkpoint,
        "network": net_cfg.name,
        "latent_size": net_cfg.latent_size,
        "image_size": net_cfg.image_size,
        **({"framing": framing} if framing else {}),
    }
    (Path(folder) / FACESPACE_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def _read_meta(folder: Path) -> dict[str, Any]:
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


def load_facespace(path: str | Path, device: str = "cpu") -> FaceSpace:
    """The face space saved in folder ``path``: a ``train-vaegan`` output or a saved PCA space."""
    folder = Path(path)
    kind = _read_meta(folder).get("kind")
    if kind == "vaegan":
        return VAEGANFaceSpace.load(folder, device=device)
    if kind == "pca":
        from offline.pca import PCAFaceSpace

        return PCAFaceSpace.load(folder)
    raise FaceSpaceError(f"{folder / FACESPACE_FILE}: unknown face space kind {kind!r} (expected vaegan or pca)")


def perceptual_features(vaegan_path_or_space: str | Path | FaceSpace, images: np.ndarray) -> np.ndarray:
    """Perceptual features ``float32 [N, F]`` of faces: the VAE-GAN discriminator's hidden layer, flattened."""
    space = vaegan_path_or_space
    if not isinstance(space, FaceSpace):
        space = load_facespace(space)
    if not isinstance(space, VAEGANFaceSpace):
        raise FaceSpaceError(f"perceptual features need a VAE-GAN face space (its discriminator), got {space.name!r}")
    return space.features(images)


def attribute_directions(
    space: FaceSpace, images: np.ndarray, attributes: np.ndarray, names: tuple[str, ...] | list[str]
) -> tuple[tuple[str, ...], np.ndarray]:
    """Latent arithmetic: for each attribute, mean latent of faces with it (1) minus mean of faces without (-1).

    Attributes that no face has, or that every face has, are dropped (0 entries count as unknown).

    Returns
    -------
    names : tuple of str
        The attributes kept, in the input order.
    directions : float32 [A, L]
    """
    attrs = np.asarray(attributes)
    if attrs.ndim != 2 or attrs.shape != (len(images), len(names)):
        raise FaceSpaceError(f"attributes must be [{len(images)}, {len(names)}] (faces x names), got {attrs.shape}")
    latents = space.encode(images)
    kept, dirs = [], []
    for j, name in enumerate(names):
        pos, neg = attrs[:, j] > 0, attrs[:, j] < 0
        if pos.any() and neg.any():
            kept.append(str(name))
            dirs.append(latents[pos].mean(0) - latents[neg].mean(0))
    directions = np.stack(dirs).astype(np.float32) if dirs else np.zeros((0, space.latent_size), np.float32)
    return tuple(kept), directions


def encode_folder(
    space: FaceSpace | str | Path, images_dir: str | Path, names: list[str] | None = None, crop: bool = False
) -> tuple[list[str], np.ndarray]:
    """Latents of the images in ``images_dir``: those listed in ``names`` (in that order) or all, sorted.

    Returns the names (relative to ``images_dir``) and ``float32 [N, L]``. A listed file that is missing or
    unreadable raises :class:`FaceSpaceError` naming it (every stimulus must have its latent).
    """
    from offline._train_images import list_images, load_images

    if not isinstance(space, FaceSpace):
        space = load_facespace(space)
    root = Path(images_dir)
    if names is None:
        files = list_images(root, recursive=True)
        names = [f.relative_to(root).as_posix() for f in files]
    else:
        files = [root / n for n in names]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise FaceSpaceError(f"{len(missing)} listed image(s) missing, first: {missing[0]}")
    loaded = load_images(files, space.image_size, crop=crop)
    bad = [(f, err) for f, (img, err) in zip(files, loaded) if img is None]
    if bad:
        raise FaceSpaceError(f"{len(bad)} image(s) cannot be read, first: {bad[0][0]} ({bad[0][1]})")
    images = np.stack([img for img, _ in loaded])
    return list(names), space.encode(images)
