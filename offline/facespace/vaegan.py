"""The VAE-GAN face space: the encoder's z_mu, the decoder's images, the discriminator's features."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from offline.facespace.base import FACESPACE_FILE, FaceSpace, as_float_images, read_meta

__all__ = ["VAEGANFaceSpace", "write_vaegan_meta"]


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
        meta = read_meta(folder)
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
        """The encoder's ``z_mu`` ``float32 [N, L]`` of faces, in eval mode and in batches."""
        x = as_float_images(images, self.image_size).transpose(0, 3, 1, 2).copy()  # [N, 3, S, S]
        return self._batches(x, lambda t: self.model.encoder(t)[0]).reshape(len(x), self.latent_size)

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """The decoder's faces ``float32 [N, S, S, 3]`` in [0, 1] of latents, in eval mode and in batches."""
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
        """Write ``checkpoint.pt`` (weights and network config), ``facespace.json`` and the attributes."""
        from models.checkpoint import save_checkpoint

        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        save_checkpoint(folder / "checkpoint.pt", self.model)
        write_vaegan_meta(folder, self.model.cfg, self.framing)
        self._save_attributes(folder)
        return folder


def write_vaegan_meta(
    folder: Path, net_cfg: Any, framing: str | None, checkpoint: str = "checkpoint.pt", quality: dict | None = None
) -> None:
    """``facespace.json`` of a VAE-GAN face space (``train-vaegan``'s output and :meth:`VAEGANFaceSpace.save`):
    the network preset (``net_cfg``: name, latent and image size), its checkpoint file, the framing of its
    training images (left out when unknown) and, from training, its ``quality`` (held-out reconstruction
    correlation, each attribute's linear readout from the true latents, and their history)."""
    meta = {
        "kind": "vaegan",
        "checkpoint": checkpoint,
        "network": net_cfg.name,
        "latent_size": net_cfg.latent_size,
        "image_size": net_cfg.image_size,
        **({"framing": framing} if framing else {}),
        **({"quality": quality} if quality else {}),
    }
    (Path(folder) / FACESPACE_FILE).write_text(json.dumps(meta, indent=2) + "\n")
