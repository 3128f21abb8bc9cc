"""The VAE-GAN discriminator: image -> (probability real, hidden features)."""

from __future__ import annotations

import torch
from torch import nn

from models.config import DiscriminatorConfig

__all__ = ["Discriminator"]


class Discriminator(nn.Module):
    """Larsen et al.'s discriminator: conv blocks (batch norm except on the first), FC + BN, FC + sigmoid.

    Activations are leaky ReLUs (slope 0.2, as in DCGAN) rather than Larsen's ReLUs: with plain ReLUs the
    first block (no batch norm) can die early in a short CPU run, and the hidden layer that carries the
    feature-wise reconstruction loss then goes silent.

    ``forward`` returns the logit of "real" and the output of conv block ``feature_layer``, the hidden layer on
    which the VAE-GAN measures reconstruction error.
    """

    def __init__(self, cfg: DiscriminatorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        pad = cfg.kernel_size // 2
        self.blocks = nn.ModuleList()
        c_in = 3
        for i, (c_out, stride) in enumerate(zip(cfg.channels, cfg.strides)):
            layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, cfg.kernel_size, stride=stride, padding=pad, bias=i == 0)]
            if i > 0:
                layers.append(nn.BatchNorm2d(c_out, eps=cfg.bn_eps, momentum=cfg.bn_momentum))
            layers.append(nn.LeakyReLU(0.2))
            self.blocks.append(nn.Sequential(*layers))
            c_in = c_out
        flat = c_in * cfg.final_size * cfg.final_size
        self.fc = nn.Sequential(
            nn.Linear(flat, cfg.fc_size, bias=False),
            nn.BatchNorm1d(cfg.fc_size, eps=cfg.bn_eps, momentum=cfg.bn_momentum),
            nn.LeakyReLU(0.2),
        )
        self.out = nn.Linear(cfg.fc_size, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The real-vs-generated logit ``[N]`` of images ``[N, 3, S, S]`` and block ``feature_layer``'s feature map."""
        # x: [N, 3, S, S] in [0, 1]
        h = x
        feature = h
        for i, block in enumerate(self.blocks):
            h = block(h)  # [N, C_i, S_i, S_i]
            if i == self.cfg.feature_layer:
                feature = h
        logit = self.out(self.fc(h.flatten(1)))  # [N, 1]
        return logit.squeeze(1), feature  # [N], [N, C_f, S_f, S_f]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The hidden feature map only (stops after block ``feature_layer``)."""
        h = x
        for block in self.blocks[: self.cfg.feature_layer + 1]:
            h = block(h)
        return h  # [N, C_f, S_f, S_f]
