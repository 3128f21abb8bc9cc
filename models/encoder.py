"""The VAE-GAN encoder: image -> (z_mu, log_sigma)."""

from __future__ import annotations

import torch
from torch import nn

from models.config import EncoderConfig

__all__ = ["Encoder"]


class Encoder(nn.Module):
    """Stride-2 3x3 conv -> batch norm -> ELU blocks, flatten, two linear heads.

    ``z_mu = tanh(linear(h))`` and ``log_sigma = 0.5 * tanh(linear(h))`` as in VanRullen & Reddy (2019), so the
    latents used for decoding (``z_mu``) lie in [-1, 1].
    """

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        blocks: list[nn.Module] = []
        c_in = 3
        for c_out in cfg.channels:
            blocks += [
                nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c_out, eps=cfg.bn_eps, momentum=cfg.bn_momentum),
                nn.ELU(),
            ]
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        flat = c_in * cfg.base_size * cfg.base_size
        self.fc_mu = nn.Linear(flat, cfg.latent_size)
        self.fc_log_sigma = nn.Linear(flat, cfg.latent_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z_mu, log_sigma)``, each ``[N, L]``, of images ``[N, 3, S, S]`` in [0, 1] (tanh-bounded heads)."""
        # x: [N, 3, S, S] in [0, 1]
        h = self.features(x)  # [N, C_last, S / 2**n, S / 2**n]
        h = h.flatten(1)  # [N, C_last * base * base]
        z_mu = torch.tanh(self.fc_mu(h))  # [N, L] in [-1, 1]
        log_sigma = 0.5 * torch.tanh(self.fc_log_sigma(h))  # [N, L] in [-0.5, 0.5]
        return z_mu, log_sigma


class EncoderMu(nn.Module):
    """The encoder's ``z_mu`` alone: the function exported to ONNX (image -> latent)."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)[0]  # [N, L]
