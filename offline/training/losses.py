"""One VAE-GAN training step (Larsen et al. 2016): losses, the three optimisers and the equilibrium rule."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class LossWeights:
    """Weights of the VAE-GAN losses (see :class:`offline.training.vaegan.TrainConfig` for their meaning)."""

    kl: float = 1.0
    feature: float = 1.0
    pixel: float = 0.0
    gan: float = 1.0
    gamma: float = 0.75
    equilibrium: float = 0.68
    margin: float = 0.35


def kl_divergence(z_mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) summed over latent dimensions, averaged over the batch."""
    kl = 0.5 * (z_mu.pow(2) + torch.exp(2 * log_sigma) - 1.0 - 2 * log_sigma)  # [N, L]
    return kl.sum(1).mean()


def train_step(
    encoder: nn.Module,
    decoder: nn.Module,
    discriminator: nn.Module,
    optimizers: dict[str, torch.optim.Optimizer],
    x: torch.Tensor,
    weights: LossWeights,
    generator: torch.Generator,
    distributed: bool = False,
) -> dict[str, float]:
    """One update of the three networks on the batch ``x [N, 3, S, S]``; returns the losses as floats.

    Encoder loss: ``kl * KL / D + feature * L_feat + pixel * L_pix`` (``D`` = pixels x channels, so the KL is on
    the scale of the per-element reconstruction losses). Decoder loss: ``gamma * feature * L_feat + pixel *
    L_pix + gan * L_gan_dec`` where ``L_gan_dec`` is the non-saturating form of minus the GAN loss
    (reconstructions and prior samples labelled real). Discriminator loss: binary cross-entropy with real
    images labelled 1, reconstructions and prior samples 0. Equilibrium rule (Larsen's reference code): the
    discriminator is not updated when its loss on real or on fake images is below ``equilibrium - margin``
    (it is winning), the decoder is not updated when either is above ``equilibrium + margin`` (it is winning);
    if both would be skipped, both are updated. Under ``distributed`` the loss values that drive the rule are
    averaged over ranks first, so every rank takes the same decision.
    """
    n = x.shape[0]
    latent = decoder.module.cfg.latent_size if hasattr(decoder, "module") else decoder.cfg.latent_size
    # Random draws come from the run's own generator (CPU), so a resumed run draws the same numbers.
    eps = torch.randn(n, latent, generator=generator).to(x.device)
    z_prior = torch.randn(n, latent, generator=generator).to(x.device)

    z_mu, log_sigma = encoder(x)  # [N, L] each
    z = z_mu + eps * torch.exp(log_sigma)  # [N, L]
    fakes = decoder(torch.cat([z, z_prior]))  # [2N, 3, S, S]: reconstructions, then prior samples
    x_tilde = fakes[:n]
    logits, feats = discriminator(torch.cat([x, fakes]))  # [3N], [3N, C, s, s]
    logit_real, logit_rec, logit_prior = logits[:n], logits[n : 2 * n], logits[2 * n :]
    feat_real, feat_rec = feats[:n].detach(), feats[n : 2 * n]

    kl = kl_divergence(z_mu, log_sigma)
    l_feat = F.mse_loss(feat_rec, feat_real)
    l_pix = F.mse_loss(x_tilde, x)
    ones, zeros = torch.ones_like(logit_real), torch.zeros_like(logit_real)
    bce_real = F.binary_cross_entropy_with_logits(logit_real, ones)
    bce_rec = F.binary_cross_entropy_with_logits(logit_rec, zeros)
    bce_prior = F.binary_cross_entropy_with_logits(logit_prior, zeros)
    l_dis = bce_real + bce_rec + bce_prior
    l_gan_dec = F.binary_cross_entropy_with_logits(logit_rec, ones) + F.binary_cross_entropy_with_logits(
        logit_prior, ones
    )
    dims = x[0].numel()
    l_enc = weights.kl * kl / dims + weights.feature * l_feat + weights.pixel * l_pix
    l_dec = weights.gamma * weights.feature * l_feat + weights.pixel * l_pix + weights.gan * l_gan_dec

    stats = torch.stack([bce_real.detach(), 0.5 * (bce_rec + bce_prior).detach()])
    if distributed:
        torch.distributed.all_reduce(stats)
        stats /= torch.distributed.get_world_size()
    d_real, d_fake = float(stats[0]), float(stats[1])
    train_dis = train_dec = True
    if d_real < weights.equilibrium - weights.margin or d_fake < weights.equilibrium - weights.margin:
        train_dis = False
    if d_real > weights.equilibrium + weights.margin or d_fake > weights.equilibrium + weights.margin:
        train_dec = False
    if not (train_dis or train_dec):
        train_dis = train_dec = True

    for opt in optimizers.values():
        opt.zero_grad(set_to_none=True)
    # Each loss reaches its own network only (inputs=...). Under DDP every backward runs on every step so the
    # gradient all-reduce stays in step across ranks; single-process runs skip the ones the rule discards.
    plan = (
        ("encoder", l_enc, encoder, True),
        ("decoder", l_dec, decoder, train_dec),
        ("discriminator", l_dis, discriminator, train_dis),
    )
    for i, (name, loss, net, update) in enumerate(plan):
        if update or distributed:
            params = [p for p in net.parameters() if p.requires_grad]
            loss.backward(inputs=params, retain_graph=i < len(plan) - 1)
        if update:
            optimizers[name].step()

    return {
        "kl": float(kl.detach()),
        "feature": float(l_feat.detach()),
        "pixel": float(l_pix.detach()),
        "gan_dec": float(l_gan_dec.detach()),
        "dis": float(l_dis.detach()),
        "d_real": d_real,
        "d_fake": d_fake,
        "train_dec": int(train_dec),
        "train_dis": int(train_dis),
    }


@torch.no_grad()
def recalibrate_batch_norm(
    encoder: nn.Module, decoder: nn.Module, discriminator: nn.Module, batches: list[torch.Tensor], seed: int = 0
) -> None:
    """Replace every batch-norm layer's moving averages by the exact statistics of ``batches``.

    Training normalises with batch moments and keeps moving averages (decay 0.9) for inference; while the
    weights still change quickly (a short CPU run) those averages lag behind and eval-mode outputs drift.
    This recomputes them, with the current weights, on images of the training distribution, feeding each
    network what it sees in training (the decoder: sampled posterior latents and prior latents). Weights are
    untouched and the training generator is not used, so losses of later steps are unchanged.
    """
    nets = (encoder, decoder, discriminator)
    bns = [m for net in nets for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in bns]
    modes = [net.training for net in nets]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calls below
    gen = torch.Generator().manual_seed(seed)
    try:
        for net in nets:
            net.train()
        for x in batches:
            z_mu, log_sigma = encoder(x)
            eps = torch.randn(z_mu.shape, generator=gen).to(x.device)
            prior = torch.randn(z_mu.shape, generator=gen).to(x.device)
            fakes = decoder(torch.cat([z_mu + eps * torch.exp(log_sigma), prior]))
            discriminator(torch.cat([x, fakes]))
    finally:
        for bn, m in zip(bns, momenta):
            bn.momentum = m
        for net, mode in zip(nets, modes):
            net.train(mode)
