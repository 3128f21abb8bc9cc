"""The VAE-GAN decoder: latent -> image in [0, 1]."""

from __future__ import annotations

import torch
from torch import nn

from models.config import DecoderConfig

__all__ = ["Decoder"]


class Decoder(nn.Module):
    """Linear + ELU to a ``fc_channels x base x base`` map, then stride-2 3x3 transposed conv -> batch norm -> ELU
    blocks; the last block outputs RGB and keeps its batch norm and ELU (as the authors' network does).

    The output is divided by its per-image maximum; in eval mode (inference, export) it is also clipped to
    [0, 1]. In training mode only values below -1 are clamped (see ``forward``), so the losses keep their
    gradients.
    """

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.fc = nn.Linear(cfg.latent_size, cfg.fc_channels * cfg.base_size * cfg.base_size)
        self.fc_act = nn.ELU()
        blocks: list[nn.Module] = []
        c_in = cfg.fc_channels
        for c_out in cfg.channels:
            blocks += [
                nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1, bias=False),
                nn.BatchNorm2d(c_out, eps=cfg.bn_eps, momentum=cfg.bn_momentum),
                nn.ELU(),
            ]
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Images ``[N, 3, S, S]`` of latents ``[N, L]``, divided by their maximum (in eval mode, clipped to [0, 1])."""
        # z: [N, L]
        b = self.cfg.base_size
        h = self.fc_act(self.fc(z))  # [N, C0 * b * b]
        h = h.view(-1, self.cfg.fc_channels, b, b)  # [N, C0, b, b]
        x = self.blocks(h)  # [N, 3, S, S], ELU output in (-1, inf)
        peak = x.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)  # [N, 1, 1, 1]
        x = x / peak  # per-image maximum is 1
        if not self.training:
            return x.clamp(0.0, 1.0)
        # An image whose maximum is tiny (early prior samples) would reach -1e6 here and wreck the batch
        # statistics of the discriminator it is fed to; below -1 nothing is meaningful for a [0, 1] target.
        return x.clamp(min=-1.0)
