"""The VAE-GAN networks: shapes, ranges and the paper-128 parameter count."""

from __future__ import annotations

import pytest
import torch

from models.config import DecoderConfig, EncoderConfig, VAEGANConfig, preset
from models.vaegan import VAEGAN

torch.set_num_threads(1)


@pytest.mark.parametrize("name, size", [("small-64", 64), ("paper-128", 128)])
def test_output_shapes_and_ranges(name: str, size: int) -> None:
    torch.manual_seed(0)
    model = VAEGAN(preset(name)).eval()
    x = torch.rand(3, 3, size, size)
    with torch.no_grad():
        z_mu, log_sigma = model.encoder(x)
        img = model.decoder(z_mu)
        logit, feat = model.discriminator(img)
    assert z_mu.shape == log_sigma.shape == (3, 1024)
    assert img.shape == (3, 3, size, size)
    assert logit.shape == (3,)
    assert feat.ndim == 4 and feat.shape[0] == 3
    assert z_mu.abs().max() <= 1.0
    assert log_sigma.abs().max() <= 0.5
    # Divided by the per-image maximum, then clipped to [0, 1] in eval mode.
    assert img.min() >= 0.0 and img.max() <= 1.0
    torch.testing.assert_close(img.amax(dim=(1, 2, 3)), torch.ones(3))
    assert model.discriminator.features(img).shape == feat.shape


def test_paper_decoder_parameter_count_within_one_percent() -> None:
    counts = VAEGAN(preset("paper-128")).parameter_counts()
    assert abs(counts["decoder"] - 24.6e6) / 24.6e6 < 0.01
    cfg = preset("paper-128")
    assert cfg.encoder.channels == (192, 256, 384, 512, 768)
    assert cfg.decoder.channels == (512, 384, 256, 192, 3)
    assert cfg.latent_size == 1024 and cfg.image_size == 128


def test_batch_norm_matches_the_paper() -> None:
    model = VAEGAN(preset("paper-128"))
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns and all(m.eps == 1e-6 and m.momentum == pytest.approx(0.1) for m in bns)
    # The decoder's RGB block keeps its batch norm and ELU.
    last = list(model.decoder.blocks)[-3:]
    assert isinstance(last[0], torch.nn.ConvTranspose2d) and last[0].out_channels == 3
    assert isinstance(last[1], torch.nn.BatchNorm2d) and isinstance(last[2], torch.nn.ELU)


def test_training_mode_does_not_clip() -> None:
    torch.manual_seed(1)
    model = VAEGAN(preset("small-64", latent_size=16)).train()
    img = model.decoder(torch.randn(4, 16))
    assert img.min() < 0.0  # ELU output below zero survives, so the losses keep their gradients
    torch.testing.assert_close(img.amax(dim=(1, 2, 3)), torch.ones(4))


def test_small_latent_size_is_configurable_and_config_round_trips() -> None:
    cfg = preset("small-64", latent_size=32)
    assert cfg.encoder.latent_size == cfg.decoder.latent_size == 32
    assert VAEGANConfig.from_dict(cfg.to_dict()) == cfg


def test_invalid_configs_are_rejected() -> None:
    with pytest.raises(ValueError, match="divisible"):
        EncoderConfig(image_size=100, channels=(8, 8, 8))
    with pytest.raises(ValueError, match="RGB"):
        DecoderConfig(channels=(8, 4))
    with pytest.raises(ValueError, match="image size"):
        VAEGANConfig(encoder=EncoderConfig(image_size=64, channels=(8, 8, 8, 8)))
    with pytest.raises(ValueError, match="unknown network preset"):
        preset("huge-256")
