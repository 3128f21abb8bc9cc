"""The VAE-GAN: encoder, decoder and discriminator built from one :class:`~models.config.VAEGANConfig`."""

from __future__ import annotations

import torch
from torch import nn

from models.config import VAEGANConfig
from models.decoder import Decoder
from models.discriminator import Discriminator
from models.encoder import Encoder

__all__ = ["VAEGAN"]


class VAEGAN(nn.Module):
    """The three networks of Larsen et al.'s VAE-GAN; the training losses live in :mod:`offline.training.vaegan`."""

    def __init__(self, cfg: VAEGANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg.encoder)
        self.decoder = Decoder(cfg.decoder)
        self.discriminator = Discriminator(cfg.discriminator)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``z_mu`` of images ``[N, 3, S, S]`` in [0, 1] (networks in eval mode)."""
        return self.encoder(x)[0]

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images ``[N, 3, S, S]`` in [0, 1] of latents ``[N, L]`` (clipped when the decoder is in eval mode)."""
        return self.decoder(z)

    def parameter_counts(self) -> dict[str, int]:
        """Number of parameters of each network."""
        return {
            name: sum(p.numel() for p in getattr(self, name).parameters())
            for name in ("encoder", "decoder", "discriminator")
        }
