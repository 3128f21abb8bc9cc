"""Network configurations of the VAE-GAN and its two presets, ``paper-128`` and ``small-64``.

Each network has a frozen dataclass; :class:`VAEGANConfig` groups the three. ``paper-128`` is the architecture of
VanRullen & Reddy (2019) exactly (docs/paper.md); ``small-64`` keeps its structure at 64x64 with fewer channels, sized
so that the decoder runs in a few milliseconds on a CPU at batch 1 and the demo trains in minutes on two cores.

Examples
--------
>>> cfg = preset("small-64")
>>> cfg.encoder.image_size, cfg.decoder.latent_size
(64, 1024)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EncoderConfig", "DecoderConfig", "DiscriminatorConfig", "VAEGANConfig", "PRESETS", "preset"]


def _check_size(image_size: int, n_blocks: int, what: str) -> int:
    """The side of the smallest feature map after ``n_blocks`` stride-2 blocks, or ValueError."""
    base = image_size >> n_blocks
    if n_blocks < 1 or base < 1 or base << n_blocks != image_size:
        raise ValueError(f"{what}: image_size {image_size} is not divisible by 2**{n_blocks} (one per block)")
    return base


@dataclass(frozen=True)
class EncoderConfig:
    """Image ``[N, 3, S, S]`` -> ``(z_mu, log_sigma)`` ``[N, L]``: stride-2 3x3 conv blocks, then two linear heads."""

    image_size: int = 128
    channels: tuple[int, ...] = (192, 256, 384, 512, 768)
    latent_size: int = 1024
    bn_eps: float = 1e-6
    bn_momentum: float = 0.1  # torch's momentum = 1 - decay; the paper's decay is 0.9

    def __post_init__(self) -> None:
        _check_size(self.image_size, len(self.channels), "encoder")
        if self.latent_size < 1:
            raise ValueError(f"encoder: latent_size must be positive, got {self.latent_size}")

    @property
    def base_size(self) -> int:
        """Side of the last conv block's feature map (``image_size / 2**len(channels)``)."""
        return _check_size(self.image_size, len(self.channels), "encoder")


@dataclass(frozen=True)
class DecoderConfig:
    """Latent ``[N, L]`` -> image ``[N, 3, S, S]``: linear to ``fc_channels x base x base``, stride-2 transposed
    3x3 conv blocks (the last one outputs RGB and keeps its batch norm and ELU), then division by the per-image
    maximum (clipped to [0, 1] at inference)."""

    image_size: int = 128
    latent_size: int = 1024
    fc_channels: int = 1024
    channels: tuple[int, ...] = (512, 384, 256, 192, 3)
    bn_eps: float = 1e-6
    bn_momentum: float = 0.1

    def __post_init__(self) -> None:
        _check_size(self.image_size, len(self.channels), "decoder")
        if self.channels[-1] != 3:
            raise ValueError(f"decoder: the last block must output 3 (RGB) channels, got {self.channels[-1]}")

    @property
    def base_size(self) -> int:
        """Side of the map the linear layer is reshaped to (``image_size / 2**len(channels)``)."""
        return _check_size(self.image_size, len(self.channels), "decoder")


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Image -> (probability of being real, hidden feature map used for the reconstruction loss).

    Larsen et al.'s design: conv blocks (the first one without batch norm), a fully connected layer and a
    sigmoid output. ``feature_layer`` indexes the conv block whose output is the "hidden layer" of the
    feature-wise reconstruction loss and of :func:`offline.facespace.perceptual_features`.
    """

    image_size: int = 128
    channels: tuple[int, ...] = (32, 128, 256, 256)
    strides: tuple[int, ...] = (2, 2, 2, 2)
    kernel_size: int = 5
    fc_size: int = 512
    feature_layer: int = 3
    bn_eps: float = 1e-6
    bn_momentum: float = 0.1

    def __post_init__(self) -> None:
        if len(self.strides) != len(self.channels):
            raise ValueError("discriminator: strides and channels must have the same length")
        if not 0 <= self.feature_layer < len(self.channels):
            raise ValueError(f"discriminator: feature_layer {self.feature_layer} is not a conv block index")
        if self.kernel_size % 2 != 1:
            raise ValueError("discriminator: kernel_size must be odd")
        side = self.image_size
        for s in self.strides:
            if side % s:
                raise ValueError(f"discriminator: image_size {self.image_size} does not divide by its strides")
            side //= s

    @property
    def final_size(self) -> int:
        """Side of the last conv block's feature map (``image_size`` divided by every stride)."""
        side = self.image_size
        for s in self.strides:
            side //= s
        return side


@dataclass(frozen=True)
class VAEGANConfig:
    """The three networks of one VAE-GAN; ``name`` is the preset it came from (or ``"custom"``)."""

    name: str = "paper-128"
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)

    def __post_init__(self) -> None:
        sizes = {self.encoder.image_size, self.decoder.image_size, self.discriminator.image_size}
        if len(sizes) != 1:
            raise ValueError(f"the three networks disagree on the image size: {sorted(sizes)}")
        if self.encoder.latent_size != self.decoder.latent_size:
            raise ValueError(
                f"encoder latent_size {self.encoder.latent_size} != decoder latent_size {self.decoder.latent_size}"
            )

    @property
    def image_size(self) -> int:
        """Side of the square images, the same for all three networks."""
        return self.encoder.image_size

    @property
    def latent_size(self) -> int:
        """Length of the latent vector, shared by the encoder and the decoder."""
        return self.encoder.latent_size

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (tuples become lists); :meth:`from_dict` inverts it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VAEGANConfig:
        """Rebuild from :meth:`to_dict` output (lists become tuples); unknown keys raise ``ValueError``."""

        def build(kind: type, values: dict[str, Any]) -> Any:
            names = {f.name for f in dataclasses.fields(kind)}
            unknown = sorted(set(values) - names)
            if unknown:
                raise ValueError(f"unknown {kind.__name__} keys {unknown}")
            return kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

        return cls(
            name=str(d.get("name", "custom")),
            encoder=build(EncoderConfig, d["encoder"]),
            decoder=build(DecoderConfig, d["decoder"]),
            discriminator=build(DiscriminatorConfig, d["discriminator"]),
        )

    def with_latent_size(self, latent_size: int) -> VAEGANConfig:
        """The same networks with another latent size."""
        return dataclasses.replace(
            self,
            encoder=dataclasses.replace(self.encoder, latent_size=latent_size),
            decoder=dataclasses.replace(self.decoder, latent_size=latent_size),
        )


def _paper_128() -> VAEGANConfig:
    return VAEGANConfig(name="paper-128")


def _small_64() -> VAEGANConfig:
    return VAEGANConfig(
        name="small-64",
        encoder=EncoderConfig(image_size=64, channels=(32, 64, 128, 256), latent_size=1024),
        decoder=DecoderConfig(image_size=64, latent_size=1024, fc_channels=256, channels=(128, 64, 32, 3)),
        discriminator=DiscriminatorConfig(
            image_size=64, channels=(16, 32, 64, 64), strides=(2, 2, 2, 2), kernel_size=3, fc_size=256, feature_layer=2
        ),
    )


#: Preset name -> factory of its configuration.
PRESETS = {"paper-128": _paper_128, "small-64": _small_64}


def preset(name: str, latent_size: int | None = None) -> VAEGANConfig:
    """The configuration of a named preset (``paper-128`` or ``small-64``), optionally with another latent size."""
    if name not in PRESETS:
        raise ValueError(f"unknown network preset {name!r}; known presets: {', '.join(PRESETS)}")
    cfg = PRESETS[name]()
    return cfg if latent_size is None or latent_size == cfg.latent_size else cfg.with_latent_size(latent_size)
